//! `/tokens`: tokens scoped to a resource path with a write flag (seed 001). Only a user's session manages them;
//! a request that carries a token gets 401. Another user's token does not exist as far as this user can tell.

use std::collections::BTreeMap;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde_json::{Value as Json_, json};
use tessera_core::{Permit, Presentation, Rights, Secret, TokenId, TokenKind, check_presentation};
use tessera_store::{Page, TokenRecord};

use super::{HordeCaller, HordeError, HordeResult, document, merge_tags};
use crate::app::{App, AppError};
use crate::http::listed::ListedRouter;
use crate::tokens::{Caller, NewToken, VerifyError};

pub fn routes() -> ListedRouter<App> {
    ListedRouter::new()
        .get("/tokens", "List tokens", list_tokens)
        .post("/tokens", "Make a token", create_token)
        .get("/tokens/{token}", "A token", get_token)
        .patch("/tokens/{token}", "Change a token", update_token)
        .delete("/tokens/{token}", "Revoke a token", delete_token)
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

/// The caller of `/tokens`: only a logged-in user's session; a token (even a user's own resource token, even the
/// API key) is refused with 401 (`tessera_core::Presentation::UserSessionOnly`).
struct Session(Caller);

impl axum::extract::FromRequestParts<App> for Session {
    type Rejection = HordeError;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, app: &App) -> Result<Session, HordeError> {
        let not_taken = |denial| AppError::Unauthenticated(VerifyError::NotTakenHere(denial));
        // A session travels as `Authorization: Bearer`; whatever comes in `X-API-Token` is a token, even a
        // session's secret pasted there.
        if parts.headers.contains_key("x-api-token") {
            return Err(not_taken(tessera_core::Denial::UserSessionOnly).into());
        }
        let HordeCaller(caller) = HordeCaller::from_request_parts(parts, app).await?;
        check_presentation(&caller.grant, Presentation::UserSessionOnly).map_err(not_taken)?;
        Ok(Session(caller))
    }
}

/// The `write` flag, required.
fn write_flag(document: &Json_) -> Result<Option<bool>, AppError> {
    match document.get("write") {
        None | Some(Json_::Null) => Ok(None),
        Some(Json_::Bool(write)) => Ok(Some(*write)),
        Some(_) => Err(AppError::BadRequest("'write' must be true or false".into())),
    }
}

fn rights_of(write: bool) -> Rights {
    if write { Rights::ReadWrite } else { Rights::Read }
}

async fn list_tokens(State(app): State<App>, Session(caller): Session) -> HordeResult {
    let tokens = app.tokens.list(&caller, None, Default::default(), Page::ALL).await.map_err(AppError::from)?;
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
    Session(caller): Session,
    body: Result<Bytes, BytesRejection>,
) -> HordeResult {
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
    let resource = app.tokens.existing_resource(caller.account(), text).await?;
    let name = tags.get("name").cloned().unwrap_or_default();
    let new = NewToken {
        tags,
        resource: Some(resource.to_string()),
        ..NewToken::new(TokenKind::Resource, resource.scope(), rights_of(write), name, None)
    };
    let (record, secret) = app.tokens.mint(&caller, new).await.map_err(AppError::from)?;
    Ok((StatusCode::CREATED, Json(token_json(&record, secret.expose()))).into_response())
}

/// A live resource token named by its id or its secret that the caller manages, with the permit to change it;
/// any other is "not found".
async fn managed_token(app: &App, caller: &Caller, named: &str) -> Result<(TokenRecord, Permit), AppError> {
    let managed = match Secret::parse(named) {
        Ok(secret) => app.tokens.managed_by_secret(caller, &secret).await,
        Err(_) => match named.parse::<TokenId>() {
            Ok(id) => app.tokens.managed(caller, id).await,
            Err(_) => return Err(AppError::NotFound("token")),
        },
    };
    match managed.map_err(AppError::from)? {
        (token, permit) if token.kind == TokenKind::Resource => Ok((token, permit)),
        _ => Err(AppError::NotFound("token")),
    }
}

async fn get_token(State(app): State<App>, Session(caller): Session, Path(named): Path<String>) -> HordeResult {
    let (token, _) = managed_token(&app, &caller, &named).await?;
    Ok(Json(token_json(&token, &token.id.to_string())).into_response())
}

/// `PATCH /tokens/{token}`: tags merged (names lower-cased, `""` removes); `resource` and `write` may change, as
/// far as the caller could mint what the token becomes.
async fn update_token(
    State(app): State<App>,
    Session(caller): Session,
    Path(named): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> HordeResult {
    let document = document(body)?;
    let (original, permit) = managed_token(&app, &caller, &named).await?;
    let mut token = original.clone();
    if let Some(text) = document.get("resource").filter(|resource| !resource.is_null()) {
        let Some(text) = text.as_str() else {
            return Err(AppError::BadRequest("'resource' must be a path".into()).into());
        };
        let resource = app.tokens.existing_resource(caller.account(), text).await?;
        token.scope = resource.scope();
        token.resource = Some(resource.to_string());
    }
    if let Some(write) = write_flag(&document)? {
        token.rights = rights_of(write);
    }
    if let Some(update) = document.get("tags").filter(|tags| !tags.is_null()) {
        merge_tags(&mut token.tags, update)?;
    }
    app.tokens.change(&caller, &permit, &original, &token).await.map_err(AppError::from)?;
    Ok(Json(token_json(&token, &token.id.to_string())).into_response())
}

/// `DELETE /tokens/{token}`: one's own token can always be revoked, even once it reaches nothing (its owner left
/// the team, its device was deleted).
async fn delete_token(State(app): State<App>, Session(caller): Session, Path(named): Path<String>) -> HordeResult {
    let (token, permit) = managed_token(&app, &caller, &named).await?;
    app.tokens.revoke(&caller, &permit, &token).await.map_err(AppError::from)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
