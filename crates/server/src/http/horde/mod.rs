//! The Horde dialect (Telenor NB-IoT). So far: teams, their members and invites (`/teams`). Credentials are a
//! token in `X-API-Token` or a user session in `Authorization: Bearer`; errors are `{"status", "message"}`.

mod collections;
pub use collections::{downlink_body, message_json};
mod stream;
mod teams;
mod tokens;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::app::{App, AppError};
use crate::http::listed::ListedRouter;
use crate::tokens::{Caller, VerifyError};

/// Largest Horde request body.
const BODY_LIMIT: usize = 64 * 1024;

/// Horde's routes, each listed for the OpenAPI document.
pub fn routes() -> ListedRouter<App> {
    ListedRouter::new()
        .get("/", "The API's root", root)
        .merge(teams::routes())
        .merge(collections::routes())
        .merge(tokens::routes())
        .merge(stream::routes())
        .map_router(|router| {
            router
                .method_not_allowed_fallback(method_not_allowed)
                .layer(axum::extract::DefaultBodyLimit::max(BODY_LIMIT))
        })
}

/// A method a Horde route does not have, answered in Horde's shape after the token is checked: a read-only token
/// is refused every write as on any other route (403), anyone else is told the method is not supported (405).
async fn method_not_allowed(HordeCaller(caller): HordeCaller, method: axum::http::Method) -> HordeError {
    if let Err(denial) = caller.authorize_untargeted(tessera_core::Action::for_http_method(method.as_str())) {
        return AppError::Denied(denial).into();
    }
    HordeError::new(StatusCode::METHOD_NOT_ALLOWED, format!("{method} is not supported here"))
}

/// `GET /`: clients use it as a ping. Only a token whose resource is `/` may read the root; others get 403.
async fn root(HordeCaller(caller): HordeCaller) -> HordeResult {
    match caller.authorize_listing_of(tessera_core::Listing::Root) {
        Ok(_) => Ok(axum::Json(json!({"status": "ok"})).into_response()),
        Err(denial) if denial.is_unauthenticated() => Err(AppError::Denied(denial).into()),
        Err(_) => Err(HordeError::new(StatusCode::FORBIDDEN, "The token does not reach /")),
    }
}

/// A JSON body (an empty body reads as `{}`).
fn document(
    body: Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<serde_json::Value, HordeError> {
    let bytes =
        crate::http::body_bytes(body, BODY_LIMIT).map_err(|(status, message)| HordeError::new(status, message))?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(json!({}));
    }
    Ok(crate::http::parse_json(&bytes)?)
}

/// An error in Horde's shape.
#[derive(Debug)]
pub struct HordeError {
    status: StatusCode,
    message: String,
}

impl HordeError {
    fn new(status: StatusCode, message: impl Into<String>) -> HordeError {
        HordeError { status, message: message.into() }
    }
}

impl From<AppError> for HordeError {
    fn from(error: AppError) -> HordeError {
        if error.is_unauthenticated() {
            let message = match &error {
                AppError::Unauthenticated(VerifyError::Missing) => "Missing API Token".to_owned(),
                AppError::Unauthenticated(VerifyError::NotTakenHere(denial)) => format!("Not accepted here: {denial}"),
                _ => "Invalid API token".to_owned(),
            };
            return HordeError::new(StatusCode::UNAUTHORIZED, message);
        }
        match error {
            AppError::Denied(reason) => HordeError::new(StatusCode::FORBIDDEN, format!("Access denied: {reason}")),
            AppError::NotFound(what) => HordeError::new(StatusCode::NOT_FOUND, format!("Unknown {what}")),
            AppError::Conflict(message) => HordeError::new(StatusCode::CONFLICT, message),
            AppError::BadRequest(message) => HordeError::new(StatusCode::BAD_REQUEST, message),
            AppError::OverQuota(over) => {
                HordeError::new(StatusCode::TOO_MANY_REQUESTS, format!("Too many requests: {over}"))
            }
            other => {
                tracing::error!(error = ?other, "horde request failed");
                if matches!(other, AppError::Unavailable(_)) {
                    HordeError::new(StatusCode::SERVICE_UNAVAILABLE, "Service temporarily unavailable, retry later")
                } else {
                    HordeError::new(StatusCode::INTERNAL_SERVER_ERROR, "Internal error")
                }
            }
        }
    }
}

impl IntoResponse for HordeError {
    fn into_response(self) -> Response {
        (self.status, axum::Json(json!({"status": self.status.as_u16(), "message": self.message}))).into_response()
    }
}

type HordeResult = Result<Response, HordeError>;

/// The caller of a Horde route: a token in `X-API-Token`, or a user session in `Authorization: Bearer`.
#[derive(Debug)]
pub struct HordeCaller(pub Caller);

impl FromRequestParts<App> for HordeCaller {
    type Rejection = HordeError;

    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<HordeCaller, HordeError> {
        if !parts.headers.contains_key("x-api-token") && !parts.headers.contains_key(header::AUTHORIZATION) {
            return Err(AppError::Unauthenticated(VerifyError::Missing).into());
        }
        let presented =
            crate::http::api_token_or_bearer(&parts.headers).ok_or(AppError::Unauthenticated(VerifyError::Unknown))?;
        Ok(HordeCaller(app.tokens.verify(presented, crate::http::peer_address(parts)).await.map_err(AppError::from)?))
    }
}

/// Horde's tags: names lower-cased; a tag set to `""` is removed when merged. Public for the fuzz targets and
/// property tests.
pub fn merge_tags(
    tags: &mut std::collections::BTreeMap<String, String>,
    update: &serde_json::Value,
) -> Result<(), AppError> {
    let Some(update) = update.as_object() else {
        return Err(AppError::BadRequest("'tags' must be an object of strings".into()));
    };
    for (name, value) in update {
        let Some(value) = value.as_str() else {
            return Err(AppError::BadRequest(format!("tag '{name}' must be a string")));
        };
        let name = name.trim().to_lowercase();
        if name.is_empty() {
            return Err(AppError::BadRequest("tag names cannot be empty".into()));
        }
        if value.is_empty() {
            tags.remove(&name);
        } else {
            tags.insert(name, value.to_owned());
        }
    }
    Ok(())
}
