//! Ubidots credentials: the API key → token exchange, and organization tokens (seed 000).

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{OriginalUri, Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde_json::{Value as Json, json};
use tessera_core::{Action, CollectionId, Rights, Scope, Target, TokenId, TokenKind};
use tessera_store::{TokenFilter, TokenRecord};

use super::{ApiKey, UbidotsError, UbidotsResult, json_body, page_of, paginated};
use crate::app::{App, AppError};
use crate::http::{BaseUrl, QueryParams};
use crate::time::now_ms;
use crate::tokens::NewToken;

/// `POST auth/token`: a new token with the account's full reach.
pub async fn exchange_api_key(State(app): State<App>, ApiKey(caller): ApiKey) -> UbidotsResult {
    let permit = caller.authorize(Action::ManageTokens, &Target::account(caller.account())).map_err(AppError::from)?;
    let expires_at_ms = Some(now_ms() + app.config.exchange_token_ttl.as_millis() as i64);
    let new = NewToken {
        kind: TokenKind::Account,
        scope: Scope::Account,
        rights: Rights::ReadWrite,
        name: "auth/token".into(),
        expires_at_ms,
    };
    let (_, secret) = app.tokens.mint(&caller, &permit, new).await.map_err(AppError::from)?;
    Ok((StatusCode::CREATED, axum::Json(json!({ "token": secret.expose() }))).into_response())
}

/// The organization named in the path, which must be a collection of the caller's account.
async fn organization(app: &App, account: tessera_core::AccountId, org_id: &str) -> Result<CollectionId, AppError> {
    let id: CollectionId = org_id.parse().map_err(|_| AppError::NotFound("organization"))?;
    app.store.collection(account, id).await.map_err(|error| AppError::from_store("organization", error))?;
    Ok(id)
}

fn listed_token(token: &TokenRecord) -> Json {
    // A listing shows the token's public id, never its secret.
    json!({"name": token.name, "token": token.id.to_string(), "id": token.id.to_string()})
}

/// `POST auth/tokens/organizations/<org_id>/` with `{"name"}`.
pub async fn create_organization_token(
    State(app): State<App>,
    ApiKey(caller): ApiKey,
    Path(org_id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> UbidotsResult {
    let organization = organization(&app, caller.account(), &org_id).await?;
    let permit = caller
        .authorize(Action::ManageTokens, &Target::collection(caller.account(), organization))
        .map_err(AppError::from)?;
    let body = json_body(body)?;
    let name = match body.get("name") {
        Some(Json::String(name)) if !name.trim().is_empty() && name.chars().count() <= 200 => name.trim().to_owned(),
        Some(Json::String(_)) => return Err(UbidotsError::bad_request("\"name\" must be 1 to 200 characters.")),
        Some(_) => return Err(UbidotsError::bad_request("\"name\" must be a string.")),
        None => return Err(UbidotsError::bad_request("\"name\" is required.")),
    };
    let new = NewToken {
        kind: TokenKind::Collection,
        scope: Scope::Collection(organization),
        rights: Rights::ReadWrite,
        name,
        expires_at_ms: None,
    };
    let (record, secret) = app.tokens.mint(&caller, &permit, new).await.map_err(AppError::from)?;
    let body = json!({"name": record.name, "token": secret.expose(), "id": record.id.to_string()});
    Ok((StatusCode::CREATED, axum::Json(body)).into_response())
}

/// `GET auth/tokens/organizations/<org_id>/`, paginated.
pub async fn list_organization_tokens(
    State(app): State<App>,
    ApiKey(caller): ApiKey,
    Path(org_id): Path<String>,
    OriginalUri(uri): OriginalUri,
    base: BaseUrl,
    query: QueryParams,
) -> UbidotsResult {
    let organization = organization(&app, caller.account(), &org_id).await?;
    let permit = caller
        .authorize(Action::ManageTokens, &Target::collection(caller.account(), organization))
        .map_err(AppError::from)?;
    let page = page_of(&query)?;
    let tokens = app
        .tokens
        .list(&permit, TokenFilter { scope: Some(Scope::Collection(organization)), creator: None }, page)
        .await
        .map_err(AppError::from)?;
    let results = tokens.items.iter().map(listed_token).collect();
    Ok(axum::Json(paginated(&base, uri.path(), &query, page, tokens.total, results)).into_response())
}

/// `DELETE auth/tokens/organizations/<org_id>/<token_id>/`: Tessera's addition, revoking one organization token.
pub async fn revoke_organization_token(
    State(app): State<App>,
    ApiKey(caller): ApiKey,
    Path((org_id, token_id)): Path<(String, String)>,
) -> UbidotsResult {
    let organization = organization(&app, caller.account(), &org_id).await?;
    let permit = caller
        .authorize(Action::ManageTokens, &Target::collection(caller.account(), organization))
        .map_err(AppError::from)?;
    let token_id: TokenId = token_id.parse().map_err(|_| AppError::NotFound("token"))?;
    let token =
        app.tokens.find(caller.account(), token_id).await.map_err(|error| AppError::from_store("token", error))?;
    if token.scope != Scope::Collection(organization) {
        return Err(AppError::NotFound("token").into());
    }
    app.tokens.revoke(&permit, &token).await.map_err(AppError::from)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
