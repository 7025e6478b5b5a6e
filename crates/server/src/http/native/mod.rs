//! The native API under `/v1`: JSON in and out, `Authorization: Bearer <secret>`, and errors as RFC 9457
//! `application/problem+json`.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use axum::{Json, Router};
use serde_json::{Value as Json_, json};
use tessera_core::{Action, CollectionId, Rights, Scope, Target, TeamId, TokenKind};
use tessera_store::{Collection, Creator, Page, TokenRecord};

use crate::app::{App, AppError};
use crate::http::{QueryParams, body_bytes, parse_json};
use crate::time::{now_ms, rfc3339};
use crate::tokens::{Caller, NewToken};

/// Largest native request body.
pub(crate) const BODY_LIMIT: usize = 1024 * 1024;

mod device_tokens;
mod events;
pub(crate) mod lifecycle;
mod people;

pub fn routes() -> Router<App> {
    Router::new()
        .merge(people::routes())
        .merge(device_tokens::routes())
        .merge(events::routes())
        .merge(lifecycle::routes())
        .route("/collections", get(list_collections).post(create_collection))
        .route("/collections/{id}", get(get_collection).delete(delete_collection))
        .route("/tokens", get(list_tokens).post(create_token))
        .route("/tokens/{id}", delete(revoke_token).get(get_token))
        .route("/devices/{id}/downlinks", get(list_downlinks))
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
        let body = json!({
            "type": "about:blank",
            "title": self.status.canonical_reason().unwrap_or("Error"),
            "status": self.status.as_u16(),
            "detail": self.detail,
        });
        let mut response = (self.status, body.to_string()).into_response();
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

fn collection_json(collection: &Collection) -> Json_ {
    json!({
        "id": collection.id.to_string(),
        "name": collection.name,
        "is_default": collection.is_default,
        "team": collection.team.map(|team| team.to_string()),
        "created_at": rfc3339(collection.created_at_ms),
    })
}

async fn list_collections(State(app): State<App>, Bearer(caller): Bearer) -> NativeResult {
    let visible: Vec<Json_> = app.readable_collections(&caller).await?.iter().map(collection_json).collect();
    Ok(Json(json!({ "collections": visible })).into_response())
}

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
    let mut response = (StatusCode::CREATED, Json(collection_json(&collection))).into_response();
    if let Ok(location) = HeaderValue::from_str(&format!("/v1/collections/{}", collection.id)) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(response)
}

async fn get_collection(State(app): State<App>, Bearer(caller): Bearer, Path(id): Path<String>) -> NativeResult {
    let id: CollectionId = parse_id("collection", &id)?;
    let (collection, _) = app.data.collection(&caller, Action::Read, id).await?;
    Ok(Json(collection_json(&collection)).into_response())
}

async fn delete_collection(State(app): State<App>, Bearer(caller): Bearer, Path(id): Path<String>) -> NativeResult {
    let id: CollectionId = parse_id("collection", &id)?;
    let permit = caller.authorize(Action::Write, &Target::collection(caller.account(), id)).map_err(AppError::from)?;
    app.delete_collection(&caller, &permit, id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Which authority issued a token.
fn issuer_json(creator: Creator) -> Json_ {
    match creator {
        Creator::System => json!({"kind": "system"}),
        Creator::Token(token) => json!({"kind": "token", "id": token.to_string()}),
        Creator::User(user) => json!({"kind": "user", "id": user.to_string()}),
    }
}

fn scope_json(scope: Scope) -> Json_ {
    match scope {
        Scope::Account => json!({"kind": "account"}),
        Scope::Team(id) => json!({"kind": "team", "id": id.to_string()}),
        Scope::Collection(id) => json!({"kind": "collection", "id": id.to_string()}),
        Scope::Device(id) => json!({"kind": "device", "id": id.to_string()}),
        Scope::AllTeams => json!({"kind": "all_teams"}),
        Scope::AllCollections => json!({"kind": "all_collections"}),
    }
}

fn rights_text(rights: Rights) -> &'static str {
    match rights {
        Rights::Read => "read",
        Rights::ReadWrite => "read_write",
    }
}

pub(crate) fn token_json(token: &TokenRecord) -> Json_ {
    json!({
        "id": token.id.to_string(),
        "kind": token.kind.as_str(),
        "name": token.name,
        "scope": scope_json(token.scope),
        "rights": rights_text(token.rights),
        "created_at": rfc3339(token.created_at_ms),
        "expires_at": token.expires_at_ms.map(rfc3339),
        "last_used_at": token.last_used_at_ms.map(rfc3339),
        "last_used_from": token.last_used_from.map(|address| address.to_string()),
        "uses": token.uses,
        "throttled": token.throttled,
        "enabled": token.disabled_at_ms.is_none(),
        "disabled_at": token.disabled_at_ms.map(rfc3339),
        "rotated_at": token.rotated_at_ms.map(rfc3339),
        "replaced_secret_valid_until": token
            .previous_valid_until_ms
            .filter(|until| *until > now_ms())
            .map(rfc3339),
        "quota": lifecycle::quota_json(token.quota),
        "issued_by": issuer_json(token.creator),
    })
}

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
    let listed: Vec<Json_> = tokens.items.iter().map(token_json).collect();
    Ok(Json(json!({ "tokens": listed })).into_response())
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
    let mut body = token_json(&record);
    body["secret"] = Json_::String(secret.expose().to_owned());
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

async fn get_token(State(app): State<App>, Bearer(caller): Bearer, Path(id): Path<String>) -> NativeResult {
    let (token, _) = app.tokens.managed(&caller, parse_id("token", &id)?).await.map_err(AppError::from)?;
    Ok(Json(token_json(&token)).into_response())
}

async fn revoke_token(State(app): State<App>, Bearer(caller): Bearer, Path(id): Path<String>) -> NativeResult {
    let (token, permit) = app.tokens.managed(&caller, parse_id("token", &id)?).await.map_err(AppError::from)?;
    if token.id == caller.record.id {
        return Err(AppError::Conflict("a credential cannot revoke itself".into()).into());
    }
    app.tokens.revoke(&caller, &permit, &token).await.map_err(AppError::from)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `GET /v1/devices/{id}/downlinks`: the messages queued for a device, oldest first.
async fn list_downlinks(State(app): State<App>, Bearer(caller): Bearer, Path(id): Path<String>) -> NativeResult {
    let id: tessera_core::DeviceId = parse_id("device", &id)?;
    let (device, permit) = app.data.device_by_id(&caller, Action::Read, id).await?;
    let downlinks = app.data.downlinks(&permit, &device).await?;
    let listed: Vec<Json_> = downlinks
        .iter()
        .map(|downlink| {
            json!({
                "id": downlink.id.to_string(),
                "port": downlink.port,
                "payload": base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &downlink.payload),
                "created_at": rfc3339(downlink.created_at_ms),
                "delivered_at": downlink.delivered_at_ms.map(rfc3339),
            })
        })
        .collect();
    Ok(Json(json!({ "downlinks": listed })).into_response())
}
