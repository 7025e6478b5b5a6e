//! Ubidots credentials: the API key → token exchange, and organization tokens (seed 000). Who may mint, list
//! and revoke them is the token service's rule; this module only speaks the wire.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{OriginalUri, Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde_json::{Value as Json, json};
use tessera_core::{CollectionId, Rights, Scope, TokenId, TokenKind};
use tessera_store::TokenRecord;

use super::{ApiKey, UbidotsError, UbidotsResult, json_body, page_of, paginated};
use crate::app::{App, AppError};
use crate::http::{BaseUrl, QueryParams};
use crate::time::now_ms;
use crate::tokens::NewToken;

/// `POST auth/token`: a new token with the account's full reach.
pub async fn exchange_api_key(State(app): State<App>, ApiKey(caller): ApiKey) -> UbidotsResult {
    let expires_at_ms = Some(now_ms() + app.config.exchange_token_ttl.as_millis() as i64);
    let new = NewToken::new(TokenKind::Account, Scope::Account, Rights::ReadWrite, "auth/token".into(), expires_at_ms);
    let (_, secret) = app.tokens.mint(&caller, new).await.map_err(AppError::from)?;
    Ok((StatusCode::CREATED, axum::Json(json!({ "token": secret.expose() }))).into_response())
}

/// The organization named in the path (its existence is checked by the token service).
fn organization(org_id: &str) -> Result<Scope, AppError> {
    let id: CollectionId = org_id.parse().map_err(|_| AppError::NotFound("organization"))?;
    Ok(Scope::Collection(id))
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
    let scope = organization(&org_id)?;
    let body = json_body(body)?;
    let name = match body.get("name") {
        Some(Json::String(name)) if !name.trim().is_empty() && name.chars().count() <= 200 => name.trim().to_owned(),
        Some(Json::String(_)) => return Err(UbidotsError::bad_request("\"name\" must be 1 to 200 characters.")),
        Some(_) => return Err(UbidotsError::bad_request("\"name\" must be a string.")),
        None => return Err(UbidotsError::bad_request("\"name\" is required.")),
    };
    let new = NewToken::new(TokenKind::Collection, scope, Rights::ReadWrite, name, None);
    let (record, secret) = app.tokens.mint(&caller, new).await.map_err(AppError::from)?;
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
    let scope = organization(&org_id)?;
    let page = page_of(&query)?;
    let tokens = app.tokens.list(&caller, Some(scope), Default::default(), page).await.map_err(AppError::from)?;
    let results = tokens.items.iter().map(listed_token).collect();
    Ok(axum::Json(paginated(&base, uri.path(), &query, page, tokens.total, results)).into_response())
}

/// `DELETE auth/tokens/organizations/<org_id>/<token_id>/`: Tessera's addition, revoking one organization token.
pub async fn revoke_organization_token(
    State(app): State<App>,
    ApiKey(caller): ApiKey,
    Path((org_id, token_id)): Path<(String, String)>,
) -> UbidotsResult {
    let scope = organization(&org_id)?;
    let token_id: TokenId = token_id.parse().map_err(|_| AppError::NotFound("token"))?;
    let (token, permit) = app.tokens.managed(&caller, token_id).await.map_err(AppError::from)?;
    if token.scope != scope {
        return Err(AppError::NotFound("token").into());
    }
    app.tokens.revoke(&caller, &permit, &token).await.map_err(AppError::from)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
