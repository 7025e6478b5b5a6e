//! The native API under `/v1`: JSON in and out, `Authorization: Bearer <secret>`, and errors as RFC 9457
//! `application/problem+json`.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::rejection::PathRejection;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value as Json_;
use tessera_core::{Action, CollectionId, Rights, Scope, Target, TeamId, TokenKind};
use tessera_store::Page;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::{App, AppError};
use crate::http::{QueryParams, body_bytes, parse_json};
use crate::time::now_ms;
use crate::tokens::{Caller, NewToken};

/// Largest native request body.
pub(crate) const BODY_LIMIT: usize = 1024 * 1024;

mod device_tokens;
mod events;
pub(crate) mod lifecycle;
pub mod openapi;
mod people;
pub mod wire;

use wire::{CollectionList, CollectionView, DownlinkList, DownlinkView, IdText, TokenList, TokenView, TokenWithSecret};

/// The native routes, relative to `/v1`, each registered with its description (`openapi.rs` builds the server's
/// router and the OpenAPI document from this one list).
pub(crate) fn api() -> OpenApiRouter<App> {
    OpenApiRouter::new()
        .merge(people::routes())
        .merge(device_tokens::routes())
        .merge(events::routes())
        .merge(lifecycle::routes())
        .routes(routes!(list_collections, create_collection))
        .routes(routes!(get_collection, delete_collection))
        .routes(routes!(list_tokens, create_token))
        .routes(routes!(get_token, revoke_token))
        .routes(routes!(list_downlinks))
        .routes(routes!(openapi::openapi_document))
        .layer(axum::extract::DefaultBodyLimit::max(BODY_LIMIT))
}

/// An RFC 9457 problem document.
#[derive(Debug)]
pub struct Problem {
    status: StatusCode,
    detail: String,
    /// Seconds for `Retry-After`, on 429.
    retry_after: Option<u64>,
}

impl Problem {
    fn new(status: StatusCode, detail: impl Into<String>) -> Problem {
        Problem { status, detail: detail.into(), retry_after: None }
    }
}

impl From<AppError> for Problem {
    fn from(error: AppError) -> Problem {
        let status = error.status();
        let detail = match &error {
            // Server-side failures say nothing of internals; the cause chain goes to the log.
            AppError::Internal(_) | AppError::Unavailable(_) => {
                tracing::error!(error = ?error, "native request failed");
                if status == StatusCode::SERVICE_UNAVAILABLE {
                    "the service is temporarily unavailable; retry later".to_owned()
                } else {
                    "an internal error occurred".to_owned()
                }
            }
            other => other.to_string(),
        };
        Problem { status, detail, retry_after: None }
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let body = wire::ProblemDocument {
            kind: "about:blank",
            title: self.status.canonical_reason().unwrap_or("Error"),
            status: self.status.as_u16(),
            detail: self.detail,
        };
        let body = serde_json::to_string(&body).unwrap_or_default();
        let mut response = (self.status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
        if let Some(seconds) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"tessera\""));
        }
        response
    }
}

type NativeResult = Result<Response, Problem>;

/// The caller of a native route, from `Authorization: Bearer <secret>`.
#[derive(Debug)]
pub struct Bearer(pub Caller);

impl FromRequestParts<App> for Bearer {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Bearer, Problem> {
        if !parts.headers.contains_key(header::AUTHORIZATION) {
            return Err(Problem::new(StatusCode::UNAUTHORIZED, "send a token as 'Authorization: Bearer <token>'"));
        }
        let secret = crate::http::bearer_secret(&parts.headers).ok_or_else(|| {
            Problem::new(StatusCode::UNAUTHORIZED, "the Authorization header must be 'Bearer <token>'")
        })?;
        let caller = app.tokens.verify(secret, crate::http::peer_address(parts)).await.map_err(AppError::from)?;
        Ok(Bearer(caller))
    }
}

/// axum's `Path`, refused as a problem document: a segment that is not UTF-8 once decoded names nothing (404),
/// where axum's own rejection would answer a plain-text 400 that the OpenAPI document does not describe.
#[derive(Debug)]
pub(crate) struct Path<T>(pub T);

impl<T, S> FromRequestParts<S> for Path<T>
where
    T: serde::de::DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Path<T>, Problem> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(Path(value)),
            Err(PathRejection::FailedToDeserializePathParams(_)) => {
                Err(Problem::new(StatusCode::NOT_FOUND, "not found: a segment of the path is not UTF-8 text"))
            }
            Err(other) => Err(AppError::Internal(Box::new(other)).into()),
        }
    }
}

/// A token's `name` as the native routes take it: a string of at most 200 characters.
pub(crate) fn token_name(value: &Json_) -> Result<&str, AppError> {
    match value {
        Json_::String(name) if name.chars().count() <= 200 => Ok(name),
        _ => Err(AppError::BadRequest("'name' must be a string of at most 200 characters".into())),
    }
}

pub(crate) fn parse_id<T: std::str::FromStr>(what: &'static str, text: &str) -> Result<T, AppError> {
    text.parse().map_err(|_| AppError::NotFound(what))
}

/// The collections the caller may read.
#[utoipa::path(
    get, path = "/collections", tag = "collections", operation_id = "list_collections",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The collections, oldest first.", body = CollectionList),
        (status = 403, description = "The credential reaches no collections."),
    ),
)]
async fn list_collections(State(app): State<App>, Bearer(caller): Bearer) -> NativeResult {
    let collections = app.readable_collections(&caller).await?.iter().map(CollectionView::from).collect();
    Ok(Json(CollectionList { collections }).into_response())
}

/// Makes a collection.
///
/// The owner is the team named, or else the user's private team in a user's session, or else the account.
#[utoipa::path(
    post, path = "/collections", tag = "collections", operation_id = "create_collection",
    security(("bearer" = [])),
    request_body = wire::NewCollection,
    responses(
        (status = 201, description = "Made; `Location` names it.", body = CollectionView,
         headers(("Location" = String, description = "The collection's URL."))),
        (status = 400, description = "The body is not JSON, or a field is missing or wrong."),
        (status = 403, description = "The credential may not make collections there."),
        (status = 404, description = "No such team."),
        (status = 413, description = "The body is over 1 MiB."),
    ),
)]
async fn create_collection(
    State(app): State<App>,
    Bearer(caller): Bearer,
    body: Result<Bytes, BytesRejection>,
) -> NativeResult {
    let body = body_bytes(body, BODY_LIMIT).map_err(|(status, detail)| Problem::new(status, detail))?;
    let document = parse_json(&body)?;
    // The owner: the team named, or the user's own private team in a user's session, or the account itself.
    let team = match document.get("team") {
        Some(Json_::String(team)) => Some(parse_id::<TeamId>("team", team)?),
        Some(_) => return Err(AppError::BadRequest("'team' must be a team id".into()).into()),
        None if caller.record.kind == TokenKind::UserAccess => Some(app.people.private_team(&caller).await?),
        None => None,
    };
    let owner = match team {
        Some(team) => Target::team(caller.account(), team),
        None => Target::account(caller.account()),
    };
    let permit = caller.authorize(Action::Write, &owner).map_err(AppError::from)?;
    let name = match document.get("name") {
        Some(Json_::String(name)) if !name.trim().is_empty() && name.chars().count() <= 200 => name.trim().to_owned(),
        Some(Json_::String(_)) => {
            return Err(AppError::BadRequest("'name' must be 1 to 200 characters".into()).into());
        }
        Some(_) => return Err(AppError::BadRequest("'name' must be a string".into()).into()),
        None => return Err(AppError::BadRequest("'name' is required".into()).into()),
    };
    let collection = app.create_collection(&permit, name, team, Default::default()).await?;
    let mut response = (StatusCode::CREATED, Json(CollectionView::from(&collection))).into_response();
    if let Ok(location) = HeaderValue::from_str(&format!("/v1/collections/{}", collection.id)) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(response)
}

/// A collection.
#[utoipa::path(
    get, path = "/collections/{id}", tag = "collections", operation_id = "get_collection",
    security(("bearer" = [])),
    params(("id" = IdText, Path, description = "The collection's id.")),
    responses(
        (status = 200, description = "The collection.", body = CollectionView),
        (status = 403, description = "The credential may not read it."),
        (status = 404, description = "No such collection."),
    ),
)]
async fn get_collection(State(app): State<App>, Bearer(caller): Bearer, Path(id): Path<String>) -> NativeResult {
    let id: CollectionId = parse_id("collection", &id)?;
    let (collection, _) = app.data.collection(&caller, Action::Read, id).await?;
    Ok(Json(CollectionView::from(&collection)).into_response())
}

/// Deletes a collection with its devices and their readings.
#[utoipa::path(
    delete, path = "/collections/{id}", tag = "collections", operation_id = "delete_collection",
    security(("bearer" = [])),
    params(("id" = IdText, Path, description = "The collection's id.")),
    responses(
        (status = 204, description = "Deleted."),
        (status = 403, description = "The credential may not delete it."),
        (status = 404, description = "No such collection."),
        (status = 409, description = "It is the account's default collection, which stays."),
    ),
)]
async fn delete_collection(State(app): State<App>, Bearer(caller): Bearer, Path(id): Path<String>) -> NativeResult {
    let id: CollectionId = parse_id("collection", &id)?;
    let permit = caller.authorize(Action::Write, &Target::collection(caller.account(), id)).map_err(AppError::from)?;
    app.delete_collection(&caller, &permit, id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// The tokens the caller manages.
#[utoipa::path(
    get, path = "/tokens", tag = "tokens", operation_id = "list_tokens",
    security(("bearer" = [])),
    params(
        ("collection" = Option<IdText>, Query, description = "Only the tokens reaching this collection."),
        ("expiring_within_days" = Option<i64>, Query, minimum = 0, maximum = 36500,
         description = "Only the tokens expiring within this many days."),
        ("unused_for_days" = Option<i64>, Query, minimum = 0, maximum = 36500,
         description = "Only the tokens unused for at least this many days."),
    ),
    responses(
        (status = 200, description = "The tokens.", body = TokenList),
        (status = 400, description = "A query parameter is not a whole number in its range."),
        (status = 403, description = "The credential may not list tokens."),
        (status = 404, description = "No such collection."),
    ),
)]
async fn list_tokens(State(app): State<App>, Bearer(caller): Bearer, query: QueryParams) -> NativeResult {
    let scope = match query.text("collection") {
        Some(text) => Some(Scope::Collection(parse_id("collection", text)?)),
        None => None,
    };
    let days_ago = |name| -> Result<Option<i64>, AppError> {
        Ok(query.integer_in(name, 0, 36_500)?.map(|days| now_ms() - days * 86_400_000))
    };
    let narrowing = crate::tokens::Narrowing {
        expiring_before_ms: query
            .integer_in("expiring_within_days", 0, 36_500)?
            .map(|days| now_ms() + days * 86_400_000),
        unused_since_ms: days_ago("unused_for_days")?,
    };
    let tokens = app.tokens.list(&caller, scope, narrowing, Page::ALL).await.map_err(AppError::from)?;
    let tokens = tokens.items.iter().map(TokenView::from).collect();
    Ok(Json(TokenList { tokens }).into_response())
}

/// The kinds of token this route mints; device and ground tokens have routes of their own on their devices.
fn kind_and_scope(document: &Json_) -> Result<(TokenKind, Scope), AppError> {
    match document.get("kind").and_then(Json_::as_str) {
        Some("account") => Ok((TokenKind::Account, Scope::Account)),
        Some("collection") => {
            let collection = document
                .get("collection")
                .and_then(Json_::as_str)
                .ok_or_else(|| AppError::BadRequest("a collection token needs 'collection', a collection id".into()))?;
            Ok((TokenKind::Collection, Scope::Collection(parse_id("collection", collection)?)))
        }
        Some(other) => Err(AppError::BadRequest(format!("'kind' must be 'account' or 'collection', not '{other}'"))),
        None => Err(AppError::BadRequest("'kind' is required: 'account' or 'collection'".into())),
    }
}

/// Makes an account or collection token (device and ground tokens are made on their devices and collections).
#[utoipa::path(
    post, path = "/tokens", tag = "tokens", operation_id = "create_token",
    security(("bearer" = [])),
    request_body = wire::NewToken,
    responses(
        (status = 201, description = "Made; its secret is shown this once.", body = TokenWithSecret),
        (status = 400, description = "The body is not JSON, or a field is missing or wrong."),
        (status = 403, description = "The credential may not make this token (more reach or rights than its own)."),
        (status = 404, description = "No such collection."),
        (status = 413, description = "The body is over 1 MiB."),
    ),
)]
async fn create_token(
    State(app): State<App>,
    Bearer(caller): Bearer,
    body: Result<Bytes, BytesRejection>,
) -> NativeResult {
    let body = body_bytes(body, BODY_LIMIT).map_err(|(status, detail)| Problem::new(status, detail))?;
    let document = parse_json(&body)?;
    let (kind, scope) = kind_and_scope(&document)?;
    let rights = match document.get("rights").map(|value| value.as_str()) {
        None | Some(Some("read_write")) => Rights::ReadWrite,
        Some(Some("read")) => Rights::Read,
        _ => return Err(AppError::BadRequest("'rights' must be 'read' or 'read_write'".into()).into()),
    };
    let name = match document.get("name") {
        None => String::new(),
        Some(value) => token_name(value)?.to_owned(),
    };
    let expires_at_ms = match document.get("expires_in") {
        None | Some(Json_::Null) => None,
        Some(value) => match value.as_i64() {
            Some(seconds) if seconds > 0 && seconds <= 100 * 365 * 86_400 => Some(now_ms() + seconds * 1000),
            _ => {
                return Err(AppError::BadRequest("'expires_in' must be a positive number of seconds".into()).into());
            }
        },
    };
    let mut new = NewToken::new(kind, scope, rights, name, expires_at_ms);
    if let Some(quota) = document.get("quota") {
        new.quota = lifecycle::quota_from_json(quota)?;
    }
    let (record, secret) = app.tokens.mint(&caller, new).await.map_err(AppError::from)?;
    Ok((StatusCode::CREATED, Json(with_secret(&record, &secret))).into_response())
}

/// A token just made or rotated, with its secret.
pub(crate) fn with_secret(token: &tessera_store::TokenRecord, secret: &tessera_core::Secret) -> TokenWithSecret {
    TokenWithSecret { token: TokenView::from(token), secret: secret.expose().to_owned() }
}

/// A token the caller manages.
#[utoipa::path(
    get, path = "/tokens/{id}", tag = "tokens", operation_id = "get_token",
    security(("bearer" = [])),
    params(("id" = IdText, Path, description = "The token's id.")),
    responses(
        (status = 200, description = "The token.", body = TokenView),
        (status = 403, description = "The credential may not manage tokens."),
        (status = 404, description = "No such token among those the caller manages."),
    ),
)]
async fn get_token(State(app): State<App>, Bearer(caller): Bearer, Path(id): Path<String>) -> NativeResult {
    let (token, _) = app.tokens.managed(&caller, parse_id("token", &id)?).await.map_err(AppError::from)?;
    Ok(Json(TokenView::from(&token)).into_response())
}

/// Revokes a token: its secret stops working at once, everywhere.
#[utoipa::path(
    delete, path = "/tokens/{id}", tag = "tokens", operation_id = "revoke_token",
    security(("bearer" = [])),
    params(("id" = IdText, Path, description = "The token's id.")),
    responses(
        (status = 204, description = "Revoked."),
        (status = 403, description = "The credential may not revoke it."),
        (status = 404, description = "No such token among those the caller manages."),
        (status = 409, description = "It is the credential presented: a credential cannot revoke itself."),
    ),
)]
async fn revoke_token(State(app): State<App>, Bearer(caller): Bearer, Path(id): Path<String>) -> NativeResult {
    let (token, permit) = app.tokens.managed(&caller, parse_id("token", &id)?).await.map_err(AppError::from)?;
    if token.id == caller.record.id {
        return Err(AppError::Conflict("a credential cannot revoke itself".into()).into());
    }
    app.tokens.revoke(&caller, &permit, &token).await.map_err(AppError::from)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// The messages queued for a device, oldest first.
#[utoipa::path(
    get, path = "/devices/{id}/downlinks", tag = "devices", operation_id = "list_downlinks",
    security(("bearer" = [])),
    params(("id" = IdText, Path, description = "The device's id.")),
    responses(
        (status = 200, description = "The downlinks.", body = DownlinkList),
        (status = 403, description = "The credential may not read the device."),
        (status = 404, description = "No such device."),
    ),
)]
async fn list_downlinks(State(app): State<App>, Bearer(caller): Bearer, Path(id): Path<String>) -> NativeResult {
    let id: tessera_core::DeviceId = parse_id("device", &id)?;
    let (device, permit) = app.data.device_by_id(&caller, Action::Read, id).await?;
    let downlinks = app.data.downlinks(&permit, &device).await?;
    let downlinks = downlinks.iter().map(DownlinkView::from).collect();
    Ok(Json(DownlinkList { downlinks }).into_response())
}
