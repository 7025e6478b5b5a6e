//! The Ubidots dialect (API v1.6) under `/api/v1.6`: its credentials (`X-Ubidots-ApiKey`, `X-Auth-Token`), its
//! error bodies (`{"detail": ...}`), its paginated listings, and its routes. Paths are matched with or without a
//! trailing slash (the router trims it before routing).

mod datasources;
pub mod devices;
pub mod payload;
mod tokens;

use axum::body::Bytes;
use axum::extract::FromRequestParts;
use axum::extract::rejection::BytesRejection;
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value as Json, json};
use tessera_core::{Action, Presentation};
use tessera_store::{Page, TimeRange};

use crate::app::{App, AppError};
use crate::http::listed::ListedRouter;
use crate::http::{BaseUrl, QueryParams, body_bytes, parse_json, percent_encode};
use crate::tokens::{Caller, VerifyError};

/// Ubidots refuses bodies over 10 kB; so does Tessera on this dialect.
pub const BODY_LIMIT: usize = 10_000;
const DEFAULT_PAGE_SIZE: u64 = 100;
const MAX_PAGE_SIZE: i64 = 1_000;

/// Ubidots' routes, relative to `/api/v1.6`, each listed for the OpenAPI document.
pub fn routes() -> ListedRouter<App> {
    ListedRouter::new()
        .post("/auth/token", "Exchange the API key for an account token", tokens::exchange_api_key)
        .post("/auth/tokens/organizations/{org_id}", "Make an organization token", tokens::create_organization_token)
        .get("/auth/tokens/organizations/{org_id}", "List an organization's tokens", tokens::list_organization_tokens)
        .delete(
            "/auth/tokens/organizations/{org_id}/{token_id}",
            "Revoke an organization token",
            tokens::revoke_organization_token,
        )
        .post("/devices/{device}", "Send readings of several variables", devices::send_to_device)
        .get("/devices/{device}", "A device's last values", devices::device_last_values)
        .post("/devices/{device}/{variable}/values", "Send readings of one variable", devices::send_to_variable)
        .get("/devices/{device}/{variable}/values", "A variable's values", devices::variable_values)
        .get("/devices/{device}/{variable}/lv", "A variable's last value", devices::last_value)
        .get("/datasources", "List devices", datasources::list_datasources)
        .post("/datasources", "Make a device", datasources::create_datasource)
        .get("/datasources/{id}", "A device", datasources::get_datasource)
        .delete("/datasources/{id}", "Delete a device", datasources::delete_datasource)
        .get("/datasources/{id}/variables", "A device's variables", datasources::list_datasource_variables)
        .post("/datasources/{id}/variables", "Make a variable", datasources::create_variable)
        .get("/variables", "List variables", datasources::list_variables)
        .get("/variables/{id}", "A variable", datasources::get_variable)
        .delete("/variables/{id}", "Delete a variable", datasources::delete_variable)
        .get("/variables/{id}/values", "A variable's values", datasources::variable_values)
        .post("/variables/{id}/values", "Send readings of a variable", datasources::send_to_variable)
        .delete(
            "/variables/{id}/values/{start}/{end}",
            "Delete a variable's values in a range",
            datasources::delete_values,
        )
        .post("/collections/values", "Send readings of several variables", datasources::send_collection)
        .map_router(|router| router.layer(axum::extract::DefaultBodyLimit::max(BODY_LIMIT)))
}

/// An error in Ubidots' shape: `{"detail": "..."}`.
#[derive(Debug)]
pub struct UbidotsError {
    status: StatusCode,
    detail: String,
}

const PERMISSION_DENIED: &str = "You do not have permission to perform this action.";

impl UbidotsError {
    fn new(status: StatusCode, detail: impl Into<String>) -> UbidotsError {
        UbidotsError { status, detail: detail.into() }
    }

    fn bad_request(detail: impl Into<String>) -> UbidotsError {
        UbidotsError::new(StatusCode::BAD_REQUEST, detail)
    }
}

impl From<AppError> for UbidotsError {
    fn from(error: AppError) -> UbidotsError {
        if error.is_unauthenticated() {
            let detail = match &error {
                AppError::Unauthenticated(VerifyError::Missing) => {
                    "Authentication credentials were not provided.".into()
                }
                AppError::Unauthenticated(reason) => format!("Incorrect authentication credentials: {reason}."),
                AppError::Denied(reason) => format!("Incorrect authentication credentials: {reason}."),
                _ => "Incorrect authentication credentials.".into(),
            };
            return UbidotsError::new(StatusCode::UNAUTHORIZED, detail);
        }
        match error {
            AppError::Denied(reason) => {
                tracing::debug!(%reason, "ubidots request denied");
                UbidotsError::new(StatusCode::FORBIDDEN, PERMISSION_DENIED)
            }
            AppError::NotFound(what) => UbidotsError::new(StatusCode::NOT_FOUND, format!("Not found: no such {what}.")),
            AppError::Conflict(message) | AppError::BadRequest(message) => UbidotsError::bad_request(message),
            // Ubidots answers as Django REST framework's throttling does.
            AppError::OverQuota(over) => UbidotsError::new(
                StatusCode::TOO_MANY_REQUESTS,
                format!("Request was throttled. Expected available in {} seconds.", over.retry_after_seconds),
            ),
            AppError::Unavailable(source) => {
                tracing::error!(error = ?source, "ubidots request failed: store unavailable");
                UbidotsError::new(StatusCode::SERVICE_UNAVAILABLE, "The service is temporarily unavailable.")
            }
            other => {
                tracing::error!(error = ?other, "ubidots request failed");
                UbidotsError::new(StatusCode::INTERNAL_SERVER_ERROR, "A server error occurred.")
            }
        }
    }
}

impl IntoResponse for UbidotsError {
    fn into_response(self) -> Response {
        let mut response = (self.status, axum::Json(json!({ "detail": self.detail }))).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Token"));
        }
        response
    }
}

type UbidotsResult = Result<Response, UbidotsError>;

/// A caller authenticated by `X-Auth-Token`. A `token` query parameter is accepted instead only on GET and only
/// for a read-only token: credentials in URLs end up in logs, so they must not be able to change anything.
#[derive(Debug)]
pub struct AuthToken(pub Caller);

impl FromRequestParts<App> for AuthToken {
    type Rejection = UbidotsError;

    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<AuthToken, UbidotsError> {
        if let Some(value) = parts.headers.get("x-auth-token") {
            let text = value.to_str().map_err(|_| AppError::Unauthenticated(VerifyError::Unknown))?;
            return Ok(AuthToken(
                app.tokens.verify(text.trim(), crate::http::peer_address(parts)).await.map_err(AppError::from)?,
            ));
        }
        let query = QueryParams::from_request_parts(parts, app).await.unwrap_or_default();
        let Some(text) = query.text("token") else {
            return Err(AppError::Unauthenticated(VerifyError::Missing).into());
        };
        let presentation = Presentation::InUrl(Action::for_http_method(parts.method.as_str()));
        Ok(AuthToken(
            app.tokens
                .verify_presented(text.trim(), presentation, crate::http::peer_address(parts))
                .await
                .map_err(AppError::from)?,
        ))
    }
}

/// A caller authenticated by the account API key in `X-Ubidots-ApiKey`.
#[derive(Debug)]
pub struct ApiKey(pub Caller);

impl FromRequestParts<App> for ApiKey {
    type Rejection = UbidotsError;

    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<ApiKey, UbidotsError> {
        let Some(value) = parts.headers.get("x-ubidots-apikey") else {
            return Err(AppError::Unauthenticated(VerifyError::Missing).into());
        };
        let text = value.to_str().map_err(|_| AppError::Unauthenticated(VerifyError::Unknown))?;
        Ok(ApiKey(
            app.tokens
                .verify_presented(text.trim(), Presentation::ApiKeyOnly, crate::http::peer_address(parts))
                .await
                .map_err(AppError::from)?,
        ))
    }
}

/// Reads a JSON body within the dialect's size limit.
fn json_body(body: Result<Bytes, BytesRejection>) -> Result<Json, UbidotsError> {
    let bytes = body_bytes(body, BODY_LIMIT).map_err(|(status, detail)| UbidotsError::new(status, detail))?;
    Ok(parse_json(&bytes)?)
}

/// `page` and `page_size` of a listing request.
fn page_of(query: &QueryParams) -> Result<Page, AppError> {
    let number = query.integer_in("page", 1, i64::MAX)?.unwrap_or(1) as u64;
    let size = query.integer_in("page_size", 1, MAX_PAGE_SIZE)?.map_or(DEFAULT_PAGE_SIZE, |size| size as u64);
    Ok(Page { number, size })
}

/// `start` and `end` (inclusive, ms) of a values request.
fn time_range_of(query: &QueryParams) -> Result<TimeRange, AppError> {
    Ok(TimeRange {
        start_ms: query.integer("start")?.unwrap_or(i64::MIN),
        end_ms: query.integer("end")?.unwrap_or(i64::MAX),
    })
}

/// The default timestamp of a send request: the `timestamp` query parameter, or now.
fn default_timestamp(query: &QueryParams) -> Result<i64, AppError> {
    match query.text("timestamp") {
        None => Ok(crate::time::now_ms()),
        // Parsed as JSON so that `1.7e12` reads as it would in a body; the error names the text as given.
        Some(text) => serde_json::from_str::<Json>(text)
            .map_err(|_| ())
            .and_then(|value| payload::timestamp_ms(&value).map_err(|_| ()))
            .map_err(|()| {
                AppError::BadRequest(format!(
                    "query parameter \"timestamp\" must be milliseconds since the Unix epoch, not {text:?}"
                ))
            }),
    }
}

/// A paginated listing: `{"count", "next", "previous", "results"}` with absolute URLs for the neighbours. The
/// URLs keep the request's other parameters except `token`, which is never echoed into a URL.
fn paginated(base: &BaseUrl, path: &str, query: &QueryParams, page: Page, total: u64, results: Vec<Json>) -> Json {
    let link = |number: u64| {
        let mut parameters: Vec<(&String, &String)> =
            query.0.iter().filter(|(name, _)| name.as_str() != "page" && name.as_str() != "token").collect();
        parameters.sort();
        let mut url = format!("{}{}?", base.0, path);
        for (name, value) in parameters {
            url.push_str(&format!("{}={}&", percent_encode(name), percent_encode(value)));
        }
        url.push_str(&format!("page={number}"));
        Json::String(url)
    };
    let has_next = page.number.saturating_mul(page.size) < total;
    json!({
        "count": total,
        "next": if has_next { link(page.number + 1) } else { Json::Null },
        "previous": if page.number > 1 { link(page.number - 1) } else { Json::Null },
        "results": results,
    })
}

/// The per-dot answer to a send: one `{"status_code": 201}` per stored dot.
fn created_statuses(count: usize) -> Json {
    Json::Array(vec![json!({"status_code": 201}); count])
}

/// A stored dot as Ubidots shows it.
fn dot_json(reading: &tessera_core::Reading) -> Json {
    json!({
        "timestamp": reading.timestamp_ms,
        "value": reading.value.to_json(),
        "context": reading.context,
        "created_at": reading.received_at_ms,
    })
}

/// One page of a variable's dots, newest first, within the request's `start`/`end`.
async fn values_page(
    app: &App,
    permit: &tessera_core::Permit,
    variable: &tessera_store::Variable,
    base: &BaseUrl,
    path: &str,
    query: &QueryParams,
) -> UbidotsResult {
    let page = page_of(query)?;
    let readings = app.data.readings(permit, variable, time_range_of(query)?, page).await?;
    let results = readings.items.iter().map(dot_json).collect();
    Ok(axum::Json(paginated(base, path, query, page, readings.total, results)).into_response())
}
