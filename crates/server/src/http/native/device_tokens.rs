//! Device tokens (`/v1/devices/{id}/tokens`) and ground tokens (`/v1/collections/{id}/ground-tokens`): several
//! per device or collection, each with a name and an optional expiry, reaching device data only. They are made,
//! listed (never with their secrets) and deleted by whoever may manage the device's or collection's tokens.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{delete, get};
use axum::{Json, Router};
use serde_json::{Value as Json_, json};
use tessera_core::{CollectionId, DeviceId, Rights, Scope, TokenId, TokenKind};
use tessera_store::Page;

use super::{BODY_LIMIT, Bearer, NativeResult, Problem, parse_id, token_json};
use crate::app::{App, AppError};
use crate::http::{body_bytes, parse_json};
use crate::time::now_ms;
use crate::tokens::{Caller, NewToken};

pub fn routes() -> Router<App> {
    Router::new()
        .route("/devices/{id}/tokens", get(list_device_tokens).post(create_device_token))
        .route("/devices/{id}/tokens/{token}", delete(delete_device_token))
        .route("/collections/{id}/ground-tokens", get(list_ground_tokens).post(create_ground_token))
        .route("/collections/{id}/ground-tokens/{token}", delete(delete_ground_token))
}

/// `{"name", "expires_in"?}` of a new device or ground token.
fn new_token(body: Result<Bytes, BytesRejection>, kind: TokenKind, scope: Scope) -> Result<NewToken, Problem> {
    let body = body_bytes(body, BODY_LIMIT).map_err(|(status, detail)| Problem::new(status, detail))?;
    let document = if body.iter().all(u8::is_ascii_whitespace) { json!({}) } else { parse_json(&body)? };
    let name = match document.get("name") {
        None | Some(Json_::Null) => String::new(),
        Some(value) => super::token_name(value)?.trim().to_owned(),
    };
    let expires_at_ms = match document.get("expires_in") {
        None | Some(Json_::Null) => None,
        Some(value) => match value.as_i64() {
            Some(seconds) if seconds > 0 && seconds <= 100 * 365 * 86_400 => Some(now_ms() + seconds * 1000),
            _ => return Err(AppError::BadRequest("'expires_in' must be a positive number of seconds".into()).into()),
        },
    };
    let mut new = NewToken::new(kind, scope, Rights::ReadWrite, name, expires_at_ms);
    if let Some(quota) = document.get("quota") {
        new.quota = super::lifecycle::quota_from_json(quota)?;
    }
    Ok(new)
}

async fn mint(app: &App, caller: &Caller, new: NewToken) -> NativeResult {
    let (record, secret) = app.tokens.mint(caller, new).await.map_err(AppError::from)?;
    let mut body = token_json(&record);
    body["secret"] = Json_::String(secret.expose().to_owned());
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

async fn list(app: &App, caller: &Caller, kind: TokenKind, scope: Scope) -> NativeResult {
    let tokens = app.tokens.list(caller, Some(scope), Default::default(), Page::ALL).await.map_err(AppError::from)?;
    let listed: Vec<Json_> = tokens.items.iter().filter(|token| token.kind == kind).map(token_json).collect();
    Ok(Json(json!({ "tokens": listed })).into_response())
}

async fn remove(app: &App, caller: &Caller, kind: TokenKind, scope: Scope, token: &str) -> NativeResult {
    let id: TokenId = parse_id("token", token)?;
    let (token, permit) = app.tokens.managed(caller, id).await.map_err(AppError::from)?;
    if token.kind != kind || token.scope != scope {
        return Err(AppError::NotFound("token").into());
    }
    app.tokens.revoke(caller, &permit, &token).await.map_err(AppError::from)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

fn device_scope(id: &str) -> Result<Scope, Problem> {
    Ok(Scope::Device(parse_id::<DeviceId>("device", id)?))
}

fn ground_scope(id: &str) -> Result<Scope, Problem> {
    Ok(Scope::Collection(parse_id::<CollectionId>("collection", id)?))
}

async fn create_device_token(
    State(app): State<App>,
    Bearer(caller): Bearer,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> NativeResult {
    let new = new_token(body, TokenKind::Device, device_scope(&id)?)?;
    mint(&app, &caller, new).await
}

async fn list_device_tokens(State(app): State<App>, Bearer(caller): Bearer, Path(id): Path<String>) -> NativeResult {
    list(&app, &caller, TokenKind::Device, device_scope(&id)?).await
}

async fn delete_device_token(
    State(app): State<App>,
    Bearer(caller): Bearer,
    Path((id, token)): Path<(String, String)>,
) -> NativeResult {
    remove(&app, &caller, TokenKind::Device, device_scope(&id)?, &token).await
}

async fn create_ground_token(
    State(app): State<App>,
    Bearer(caller): Bearer,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> NativeResult {
    let new = new_token(body, TokenKind::Ground, ground_scope(&id)?)?;
    mint(&app, &caller, new).await
}

async fn list_ground_tokens(State(app): State<App>, Bearer(caller): Bearer, Path(id): Path<String>) -> NativeResult {
    list(&app, &caller, TokenKind::Ground, ground_scope(&id)?).await
}

async fn delete_ground_token(
    State(app): State<App>,
    Bearer(caller): Bearer,
    Path((id, token)): Path<(String, String)>,
) -> NativeResult {
    remove(&app, &caller, TokenKind::Ground, ground_scope(&id)?, &token).await
}
