//! Device tokens (`/v1/devices/{id}/tokens`) and ground tokens (`/v1/collections/{id}/ground-tokens`): several
//! per device or collection, each with a name and an optional expiry, reaching device data only. They are made,
//! listed (never with their secrets) and deleted by whoever may manage the device's or collection's tokens.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde_json::{Value as Json_, json};
use tessera_core::{CollectionId, DeviceId, Rights, Scope, TokenId, TokenKind};
use tessera_store::Page;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::wire::{IdText, NewDeviceToken, TokenList, TokenView, TokenWithSecret};
use super::{BODY_LIMIT, Bearer, NativeResult, Path, Problem, parse_id, with_secret};
use crate::app::{App, AppError};
use crate::http::{body_bytes, parse_json};
use crate::time::now_ms;
use crate::tokens::{Caller, NewToken};

pub fn routes() -> OpenApiRouter<App> {
    OpenApiRouter::new()
        .routes(routes!(list_device_tokens, create_device_token))
        .routes(routes!(delete_device_token))
        .routes(routes!(list_ground_tokens, create_ground_token))
        .routes(routes!(delete_ground_token))
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
    Ok((StatusCode::CREATED, Json(with_secret(&record, &secret))).into_response())
}

async fn list(app: &App, caller: &Caller, kind: TokenKind, scope: Scope) -> NativeResult {
    let tokens = app.tokens.list(caller, Some(scope), Default::default(), Page::ALL).await.map_err(AppError::from)?;
    let tokens = tokens.items.iter().filter(|token| token.kind == kind).map(TokenView::from).collect();
    Ok(Json(TokenList { tokens }).into_response())
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

/// Makes a token for one device: it reaches that device's data only.
#[utoipa::path(
    post, path = "/devices/{id}/tokens", tag = "device tokens", operation_id = "create_device_token",
    security(("bearer" = [])),
    params(("id" = IdText, Path, description = "The device's id.")),
    request_body(content = NewDeviceToken, description = "An empty body is taken as `{}`."),
    responses(
        (status = 201, description = "Made; its secret is shown this once.", body = TokenWithSecret),
        (status = 400, description = "The body is not JSON, or a field is wrong."),
        (status = 403, description = "The credential may not manage the device's tokens."),
        (status = 404, description = "No such device."),
        (status = 413, description = "The body is over 1 MiB."),
    ),
)]
async fn create_device_token(
    State(app): State<App>,
    Bearer(caller): Bearer,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> NativeResult {
    let new = new_token(body, TokenKind::Device, device_scope(&id)?)?;
    mint(&app, &caller, new).await
}

/// A device's tokens (never their secrets).
#[utoipa::path(
    get, path = "/devices/{id}/tokens", tag = "device tokens", operation_id = "list_device_tokens",
    security(("bearer" = [])),
    params(("id" = IdText, Path, description = "The device's id.")),
    responses(
        (status = 200, description = "The device's tokens.", body = TokenList),
        (status = 403, description = "The credential may not list the device's tokens."),
        (status = 404, description = "No such device."),
    ),
)]
async fn list_device_tokens(State(app): State<App>, Bearer(caller): Bearer, Path(id): Path<String>) -> NativeResult {
    list(&app, &caller, TokenKind::Device, device_scope(&id)?).await
}

/// Revokes one of a device's tokens.
#[utoipa::path(
    delete, path = "/devices/{id}/tokens/{token}", tag = "device tokens", operation_id = "delete_device_token",
    security(("bearer" = [])),
    params(
        ("id" = IdText, Path, description = "The device's id."),
        ("token" = IdText, Path, description = "The token's id."),
    ),
    responses(
        (status = 204, description = "Revoked."),
        (status = 403, description = "The credential may not manage the device's tokens."),
        (status = 404, description = "No such device, or no such token of it."),
    ),
)]
async fn delete_device_token(
    State(app): State<App>,
    Bearer(caller): Bearer,
    Path((id, token)): Path<(String, String)>,
) -> NativeResult {
    remove(&app, &caller, TokenKind::Device, device_scope(&id)?, &token).await
}

/// Makes a ground token for a collection: a gateway's, reaching the data of every device in it.
#[utoipa::path(
    post, path = "/collections/{id}/ground-tokens", tag = "device tokens", operation_id = "create_ground_token",
    security(("bearer" = [])),
    params(("id" = IdText, Path, description = "The collection's id.")),
    request_body(content = NewDeviceToken, description = "An empty body is taken as `{}`."),
    responses(
        (status = 201, description = "Made; its secret is shown this once.", body = TokenWithSecret),
        (status = 400, description = "The body is not JSON, or a field is wrong."),
        (status = 403, description = "The credential may not manage the collection's tokens."),
        (status = 404, description = "No such collection."),
        (status = 413, description = "The body is over 1 MiB."),
    ),
)]
async fn create_ground_token(
    State(app): State<App>,
    Bearer(caller): Bearer,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> NativeResult {
    let new = new_token(body, TokenKind::Ground, ground_scope(&id)?)?;
    mint(&app, &caller, new).await
}

/// A collection's ground tokens (never their secrets).
#[utoipa::path(
    get, path = "/collections/{id}/ground-tokens", tag = "device tokens", operation_id = "list_ground_tokens",
    security(("bearer" = [])),
    params(("id" = IdText, Path, description = "The collection's id.")),
    responses(
        (status = 200, description = "The collection's ground tokens.", body = TokenList),
        (status = 403, description = "The credential may not list the collection's tokens."),
        (status = 404, description = "No such collection."),
    ),
)]
async fn list_ground_tokens(State(app): State<App>, Bearer(caller): Bearer, Path(id): Path<String>) -> NativeResult {
    list(&app, &caller, TokenKind::Ground, ground_scope(&id)?).await
}

/// Revokes one of a collection's ground tokens.
#[utoipa::path(
    delete, path = "/collections/{id}/ground-tokens/{token}", tag = "device tokens",
    operation_id = "delete_ground_token",
    security(("bearer" = [])),
    params(
        ("id" = IdText, Path, description = "The collection's id."),
        ("token" = IdText, Path, description = "The token's id."),
    ),
    responses(
        (status = 204, description = "Revoked."),
        (status = 403, description = "The credential may not manage the collection's tokens."),
        (status = 404, description = "No such collection, or no such ground token of it."),
    ),
)]
async fn delete_ground_token(
    State(app): State<App>,
    Bearer(caller): Bearer,
    Path((id, token)): Path<(String, String)>,
) -> NativeResult {
    remove(&app, &caller, TokenKind::Ground, ground_scope(&id)?, &token).await
}
