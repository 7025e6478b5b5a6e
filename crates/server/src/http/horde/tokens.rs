//! `/tokens`: tokens scoped to a resource path with a write flag (seed 001). Only a user's session manages them;
//! a request that carries a token gets 401. Another user's token does not exist as far as this user can tell.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value as Json_, json};
use tessera_core::{Action, Resource, Rights, Secret, TokenId, TokenKind};
use tessera_store::{Page, TokenFilter, TokenRecord};

use super::{HordeCaller, HordeError, HordeResult, document, merge_tags};
use crate::app::{App, AppError};
use crate::tokens::{Caller, NewToken};

pub fn routes() -> Router<App> {
    Router::new()
        .route("/tokens", get(list_tokens).post(create_token))
        .route("/tokens/{token}", get(get_token).patch(update_token).delete(delete_token))
}

fn token_json(token: &TokenRecord, shown: &str) -> Json_ {
    let mut body = json!({
        "resource": token.resource.clone().unwrap_or_else(|| "/".into()),
        "write": token.rights == Rights::ReadWrite,
        "token": shown,
    });
    if !token.tags.is_empty() {
        body["tags"] = json!(token.tags);
    }
    body
}

/// Token management needs a logged-in user; a token (even a user's own resource token) is refused with 401.
fn session(caller: &Caller) -> Result<(), HordeError> {
    if caller.record.kind != TokenKind::UserAccess {
        return Err(HordeError::new(StatusCode::UNAUTHORIZED, "Tokens are managed only in a user session"));
    }
    Ok(())
}

/// Parses and checks a resource: its shape (400 naming the problem) and that what it names exists.
async fn resource(app: &App, caller: &Caller, text: &str) -> Result<Resource, AppError> {
    let resource = Resource::parse(text).map_err(|error| AppError::BadRequest(error.to_string()))?;
    let account = caller.account();
    let missing = |what: &str| AppError::BadRequest(format!("the resource names no existing {what}"));
    match resource {
        Resource::Team(team) => {
            app.store.team(account, team).await.map_err(|_| missing("team"))?;
        }
        Resource::Collection(collection) => {
            app.store.collection(account, collection).await.map_err(|_| missing("collection"))?;
        }
        Resource::Device(collection, device) => {
            let device = app.store.device(account, device).await.map_err(|_| missing("device"))?;
            if device.collection != collection {
                return Err(AppError::BadRequest(format!("device {} is not in collection {collection}", device.id)));
            }
        }
        Resource::Root | Resource::Teams | Resource::Collections => {}
    }
    Ok(resource)
}

/// The `write` flag, required.
fn write_flag(document: &Json_) -> Result<Option<bool>, AppError> {
    match document.get("write") {
        None | Some(Json_::Null) => Ok(None),
        Some(Json_::Bool(write)) => Ok(Some(*write)),
        Some(_) => Err(AppError::BadRequest("'write' must be true or false".into())),
    }
}

async fn list_tokens(State(app): State<App>, HordeCaller(caller): HordeCaller) -> HordeResult {
    session(&caller)?;
    let permit = caller
        .authorize(Action::ManageTokens, &tessera_core::Target::account(caller.account()))
        .map_err(AppError::from)?;
    let filter = TokenFilter { scope: None, creator: Some(caller.record.creator) };
    let tokens = app.tokens.list(&permit, filter, Page::ALL).await.map_err(AppError::from)?;
    let tokens: Vec<Json_> = tokens
        .items
        .iter()
        .filter(|token| token.kind == TokenKind::Resource)
        .map(|token| token_json(token, &token.id.to_string()))
        .collect();
    Ok(Json(json!({ "tokens": tokens })).into_response())
}

/// `POST /tokens` with `resource` and `write` (both required) and optional `tags`: the secret is shown this once.
async fn create_token(
    State(app): State<App>,
    HordeCaller(caller): HordeCaller,
    body: Result<Bytes, BytesRejection>,
) -> HordeResult {
    session(&caller)?;
    let document = document(body)?;
    let Some(text) = document.get("resource").and_then(Json_::as_str) else {
        return Err(AppError::BadRequest("'resource' is required: a path such as /collections/{id}".into()).into());
    };
    let write =
        write_flag(&document)?.ok_or_else(|| AppError::BadRequest("'write' is required: true or false".into()))?;
    let mut tags = BTreeMap::new();
    if let Some(update) = document.get("tags").filter(|tags| !tags.is_null()) {
        merge_tags(&mut tags, update)?;
    }
    let resource = resource(&app, &caller, text).await?;
    let scope = resource.scope();
    let target = app.tokens.management_target(caller.account(), scope).await.map_err(AppError::from)?;
    let permit = caller.authorize(Action::ManageTokens, &target).map_err(AppError::from)?;
    let rights = if write { Rights::ReadWrite } else { Rights::Read };
    let name = tags.get("name").cloned().unwrap_or_default();
    let new = NewToken { kind: TokenKind::Resource, scope, rights, name, expires_at_ms: None };
    let (mut record, secret) = app.tokens.mint(&caller, &permit, new).await.map_err(AppError::from)?;
    record.tags = tags;
    record.resource = Some(resource.to_string());
    app.store.update_token(&record).await.map_err(AppError::from)?;
    Ok((StatusCode::CREATED, Json(token_json(&record, secret.expose()))).into_response())
}

/// The caller's own live resource token named by its id or its secret; any other is "not found".
async fn own_token(app: &App, caller: &Caller, named: &str) -> Result<TokenRecord, AppError> {
    let found = match Secret::parse(named) {
        Ok(secret) => app.store.token_by_digest(&app.tokens.digest(&secret)).await,
        Err(_) => match named.parse::<TokenId>() {
            Ok(id) => app.store.token(caller.account(), id).await,
            Err(_) => return Err(AppError::NotFound("token")),
        },
    };
    match found {
        Ok(token)
            if token.account == caller.account()
                && token.creator == caller.record.creator
                && token.kind == TokenKind::Resource
                && token.revoked_at_ms.is_none() =>
        {
            Ok(token)
        }
        Ok(_) | Err(tessera_store::StoreError::NotFound) => Err(AppError::NotFound("token")),
        Err(error) => Err(AppError::from(error)),
    }
}

async fn get_token(State(app): State<App>, HordeCaller(caller): HordeCaller, Path(named): Path<String>) -> HordeResult {
    session(&caller)?;
    let token = own_token(&app, &caller, &named).await?;
    Ok(Json(token_json(&token, &token.id.to_string())).into_response())
}

/// `PATCH /tokens/{token}`: tags merged (names lower-cased, `""` removes); `resource` and `write` may change.
async fn update_token(
    State(app): State<App>,
    HordeCaller(caller): HordeCaller,
    Path(named): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> HordeResult {
    session(&caller)?;
    let document = document(body)?;
    let mut token = own_token(&app, &caller, &named).await?;
    if let Some(text) = document.get("resource").filter(|resource| !resource.is_null()) {
        let Some(text) = text.as_str() else {
            return Err(AppError::BadRequest("'resource' must be a path".into()).into());
        };
        let resource = resource(&app, &caller, text).await?;
        let target = app.tokens.management_target(caller.account(), resource.scope()).await.map_err(AppError::from)?;
        caller.authorize(Action::ManageTokens, &target).map_err(AppError::from)?;
        token.scope = resource.scope();
        token.resource = Some(resource.to_string());
    }
    if let Some(write) = write_flag(&document)? {
        token.rights = if write { Rights::ReadWrite } else { Rights::Read };
    }
    if let Some(update) = document.get("tags").filter(|tags| !tags.is_null()) {
        merge_tags(&mut token.tags, update)?;
    }
    app.store.update_token(&token).await.map_err(|error| AppError::from_store("token", error))?;
    app.tokens.changed(&token);
    Ok(Json(token_json(&token, &token.id.to_string())).into_response())
}

async fn delete_token(
    State(app): State<App>,
    HordeCaller(caller): HordeCaller,
    Path(named): Path<String>,
) -> HordeResult {
    session(&caller)?;
    let token = own_token(&app, &caller, &named).await?;
    // One's own token can always be revoked, even once it reaches nothing (its owner left the team, its device
    // was deleted): the permit is the owner's own, at the account's root.
    let permit = caller
        .authorize(Action::ManageTokens, &tessera_core::Target::account(caller.account()))
        .map_err(AppError::from)?;
    app.tokens.revoke(&permit, &token).await.map_err(AppError::from)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
