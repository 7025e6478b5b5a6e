//! The HTTP edge: one router made of the dialects' routers, the health probes, and the helpers every dialect
//! uses to read requests (absolute URLs, bodies, query strings). Each dialect lives in its own module and owns its
//! wire shapes and error bodies; adding a route touches only its dialect's module.

pub mod allthingstalk;
pub mod console;
pub mod horde;
pub(crate) mod listed;
pub(crate) mod listener;
pub mod metrics;
pub mod native;
mod rate_limit;
pub mod ubidots;

use std::collections::HashMap;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::app::{App, AppError};

/// All of Tessera's HTTP routes.
pub fn router(app: App) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics::scrape_on_main_listener))
        .merge(native::openapi::native_router().layer(answer_panics_as(Dialect::Native)))
        .nest(UBIDOTS_PREFIX, ubidots::routes().router.layer(answer_panics_as(Dialect::Ubidots)))
        .merge(allthingstalk::routes().router.layer(answer_panics_as(Dialect::AllThingsTalk)))
        .merge(horde::routes().router.layer(answer_panics_as(Dialect::Horde)))
        .nest(console::PREFIX, console::routes(app.clone()).layer(answer_panics_as(Dialect::Console)))
        .fallback(no_such_route)
        .layer(axum::middleware::from_fn(console::send_browsers_to_console))
        .layer(axum::middleware::map_response(retry_after_on_unavailable))
        .layer(axum::middleware::from_fn(rate_limit::fields))
        // Applied to each route (axum's layers are), so it knows the route matched: the template for the request
        // counts, which `counted` reads around the router.
        .layer((metrics::NoteRouteLayer, answer_panics_as(Dialect::Horde)))
        .with_state(app)
}

/// Where Ubidots' routes are.
const UBIDOTS_PREFIX: &str = "/api/v1.6";

/// The vendor dialects' routes, for the OpenAPI document: the lists their routers were built with.
pub(crate) fn dialect_routes() -> Vec<listed::DialectListing> {
    let mut ubidots = ubidots::routes().routes;
    for route in &mut ubidots {
        route.path = format!("{UBIDOTS_PREFIX}{}", route.path);
    }
    vec![
        listed::DialectListing {
            tag: "ubidots",
            title: "Ubidots API v1.6",
            docs: "https://docs.ubidots.com/reference/welcome",
            routes: ubidots,
        },
        listed::DialectListing {
            tag: "horde",
            title: "Telenor Horde (IoT Gateway) API",
            docs: "https://github.com/lab5e/spanapi",
            routes: horde::routes().routes,
        },
        listed::DialectListing {
            tag: "allthingstalk",
            title: "AllThingsTalk Maker API",
            docs: "https://docs.allthingstalk.com/developers/api/",
            routes: allthingstalk::routes().routes,
        },
    ]
}

/// `router` with every request counted for `/metrics` by dialect, route template and status code.
pub fn counted(router: Router, metrics: std::sync::Arc<crate::metrics::Metrics>) -> metrics::CountRequests<Router> {
    tower::Layer::layer(&metrics::CountRequestsLayer(metrics), router)
}

/// Whose wire shape an answer takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dialect {
    Native,
    Ubidots,
    AllThingsTalk,
    Horde,
    /// Not a dialect: the web console's pages answer in HTML.
    Console,
}

impl Dialect {
    /// The dialect whose part of the URL space `path` is in (the root, outside the other dialects' prefixes, is
    /// Horde's: `/collections`, `/teams`, `/tokens`).
    fn of_path(path: &str) -> Dialect {
        match path.trim_start_matches('/').split('/').next().unwrap_or_default() {
            "v1" => Dialect::Native,
            "api" => Dialect::Ubidots,
            "device" | "login" => Dialect::AllThingsTalk,
            "console" => Dialect::Console,
            _ => Dialect::Horde,
        }
    }

    fn answer(self, error: AppError) -> Response {
        match self {
            Dialect::Native => native::Problem::from(error).into_response(),
            Dialect::Ubidots => ubidots::UbidotsError::from(error).into_response(),
            Dialect::AllThingsTalk => allthingstalk::assets::AttError::from(error).into_response(),
            Dialect::Horde => horde::HordeError::from(error).into_response(),
            Dialect::Console => console::error_page(error),
        }
    }
}

/// A handler that panics answers a clean 500 in its dialect's shape (the cause goes to the log), never a
/// text/plain "Service panicked" nor a dropped connection.
fn answer_panics_as(
    dialect: Dialect,
) -> tower_http::catch_panic::CatchPanicLayer<impl Fn(Box<dyn std::any::Any + Send>) -> Response + Clone> {
    tower_http::catch_panic::CatchPanicLayer::custom(move |panic: Box<dyn std::any::Any + Send>| {
        let message = panic
            .downcast_ref::<&str>()
            .map(|text| (*text).to_owned())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic without a message".to_owned());
        dialect.answer(AppError::Internal(format!("a request handler panicked: {message}").into()))
    })
}

/// A path no route has, answered as a 404 in the shape of the dialect whose part of the URL space it is in.
async fn no_such_route(uri: axum::http::Uri) -> Response {
    Dialect::of_path(uri.path()).answer(AppError::NotFound("route"))
}

/// How long a client told 503 is asked to wait before it tries again.
const RETRY_UNAVAILABLE_AFTER_SECONDS: u32 = 5;

/// Every 503, in every dialect, says when to come back (RFC 9110 `Retry-After`), so a device backs off instead of
/// concluding that its credential or its request is bad.
async fn retry_after_on_unavailable(mut response: Response) -> Response {
    if response.status() == StatusCode::SERVICE_UNAVAILABLE && !response.headers().contains_key(header::RETRY_AFTER) {
        response.headers_mut().insert(header::RETRY_AFTER, RETRY_UNAVAILABLE_AFTER_SECONDS.into());
    }
    response
}

/// The process is up and serving HTTP.
async fn healthz() -> Response {
    axum::Json(serde_json::json!({"status": "ok"})).into_response()
}

/// The process can do its work: the store answers, and on a shared database this node hears the others' changes
/// (without them its caches could hold revoked tokens).
async fn readyz(State(app): State<App>) -> Response {
    if !app.peers.in_touch() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(serde_json::json!({"status": "out of touch with the database"})),
        )
            .into_response();
    }
    // A database that is gone may leave the ping waiting for a connection; a probe wants an answer now.
    let ping = tokio::time::timeout(std::time::Duration::from_secs(1), app.data.store_answers()).await;
    match ping.unwrap_or_else(|_| Err(tessera_store::StoreError::Unavailable("no answer within 1 s".into()))) {
        Ok(()) => axum::Json(serde_json::json!({"status": "ready"})).into_response(),
        Err(error) => {
            tracing::warn!(error = ?error, "readiness check failed");
            (StatusCode::SERVICE_UNAVAILABLE, axum::Json(serde_json::json!({"status": "store unavailable"})))
                .into_response()
        }
    }
}

/// `scheme://host` of the request as the client addressed it, for the absolute URLs some dialects return.
#[derive(Debug, Clone)]
pub struct BaseUrl(pub String);

impl<S: Send + Sync> FromRequestParts<S> for BaseUrl {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<BaseUrl, Self::Rejection> {
        let header_text = |name| parts.headers.get(name).and_then(|value| value.to_str().ok());
        let over_tls = parts.extensions.get::<listener::ReachedOverTls>().is_some();
        let scheme = match header_text("x-forwarded-proto") {
            _ if over_tls => "https",
            Some("https") => "https",
            _ => "http",
        };
        let host = header_text(header::HOST.as_str())
            .filter(|host| host.bytes().all(|b| b.is_ascii_graphic()) && !host.contains(['/', '@', '?', '#']))
            .map(str::to_owned)
            .or_else(|| parts.uri.authority().map(|authority| authority.to_string()))
            .unwrap_or_else(|| "localhost".to_owned());
        Ok(BaseUrl(format!("{scheme}://{host}")))
    }
}

/// The address a request came from: the peer of its connection (a proxy's, behind one; Tessera does not read
/// `X-Forwarded-For`, which any client can write). `None` only for requests that came over no connection (tests
/// calling the router directly).
pub fn peer_address(parts: &axum::http::request::Parts) -> Option<std::net::IpAddr> {
    parts.extensions.get::<axum::extract::ConnectInfo<std::net::SocketAddr>>().map(|info| info.0.ip())
}

/// The secret in `Authorization: Bearer <secret>` (scheme case-insensitive), if the header holds one.
pub fn bearer_secret(headers: &axum::http::HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, secret) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| secret.trim())
}

/// A Horde token: `X-API-Token`, or else `Authorization: Bearer`.
pub fn api_token_or_bearer(headers: &axum::http::HeaderMap) -> Option<&str> {
    match headers.get("x-api-token") {
        Some(value) => value.to_str().ok().map(str::trim),
        None => bearer_secret(headers),
    }
}

/// A request body read up to the router's limit, with a message fit for a client when it could not be read.
pub fn body_bytes(body: Result<Bytes, BytesRejection>, limit: usize) -> Result<Bytes, (StatusCode, String)> {
    let too_large = || (StatusCode::PAYLOAD_TOO_LARGE, format!("the body is larger than the {limit} bytes allowed"));
    let bytes = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            too_large()
        } else {
            (StatusCode::BAD_REQUEST, format!("the body could not be read: {rejection}"))
        }
    })?;
    // A route's limit may be below the router's (which the body was read under).
    if bytes.len() > limit {
        return Err(too_large());
    }
    Ok(bytes)
}

/// Parses a body as JSON, naming the line and column of the first error.
pub fn parse_json(bytes: &[u8]) -> Result<serde_json::Value, AppError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(AppError::BadRequest("the body is empty; a JSON document was expected".into()));
    }
    serde_json::from_slice(bytes).map_err(|error| AppError::BadRequest(format!("the body is not valid JSON: {error}")))
}

/// Query parameters as text, parsed by each route into what it needs.
#[derive(Debug, Clone, Default)]
pub struct QueryParams(pub HashMap<String, String>);

impl<S: Send + Sync> FromRequestParts<S> for QueryParams {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<QueryParams, Self::Rejection> {
        let query = parts.uri.query().unwrap_or("");
        let pairs = form_urlencoded_pairs(query);
        Ok(QueryParams(pairs.into_iter().collect()))
    }
}

impl QueryParams {
    pub fn text(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    /// An optional integer parameter, refused with its name when it is not one.
    pub fn integer(&self, name: &str) -> Result<Option<i64>, AppError> {
        self.text(name)
            .map(|text| {
                text.trim().parse::<i64>().map_err(|_| {
                    AppError::BadRequest(format!("query parameter '{name}' must be an integer, got '{text}'"))
                })
            })
            .transpose()
    }

    /// An optional integer parameter within `min..=max`.
    pub fn integer_in(&self, name: &str, min: i64, max: i64) -> Result<Option<i64>, AppError> {
        match self.integer(name)? {
            Some(value) if value < min || value > max => Err(AppError::BadRequest(format!(
                "query parameter '{name}' must be between {min} and {max}, got {value}"
            ))),
            other => Ok(other),
        }
    }
}

/// Splits `a=1&b=x%20y` into decoded pairs. Malformed escapes are kept as they are. Public for the fuzz targets
/// and property tests; routes read query strings through `QueryParams`.
pub fn form_urlencoded_pairs(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(name), percent_decode(value))
        })
        .collect()
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        match bytes[index] {
            b'+' => out.push(b' '),
            b'%' if index + 2 < bytes.len() => {
                // Hex digits checked here, not left to `from_str_radix`, which also reads a sign: `%+4` is no escape.
                match std::str::from_utf8(&bytes[index + 1..index + 3])
                    .ok()
                    .filter(|hex| hex.bytes().all(|b| b.is_ascii_hexdigit()))
                    .and_then(|hex| u8::from_str_radix(hex, 16).ok())
                {
                    Some(byte) => {
                        out.push(byte);
                        index += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            other => out.push(other),
        }
        index += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Encodes a query parameter value.
pub fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_strings_decode() {
        assert_eq!(
            form_urlencoded_pairs("a=1&b=x%20y+z&&c&d=%zz&e=%4&f=%+4"),
            vec![
                ("a".into(), "1".into()),
                ("b".into(), "x y z".into()),
                ("c".into(), "".into()),
                ("d".into(), "%zz".into()),
                ("e".into(), "%4".into()),
                ("f".into(), "% 4".into()),
            ]
        );
        assert_eq!(percent_encode("a b/ü"), "a%20b%2F%C3%BC");
    }
}

#[cfg(test)]
mod panic_tests {
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    use super::*;

    async fn panicking() -> Response {
        panic!("a bug in a handler")
    }

    #[tokio::test]
    async fn a_panicking_handler_answers_500_in_its_dialects_shape() {
        for (dialect, field) in [
            (Dialect::Native, "detail"),
            (Dialect::Ubidots, "detail"),
            (Dialect::AllThingsTalk, "message"),
            (Dialect::Horde, "message"),
        ] {
            let router: Router = Router::new().route("/boom", get(panicking)).layer(answer_panics_as(dialect));
            let response = router.oneshot(Request::get("/boom").body(Body::empty()).unwrap()).await.unwrap();
            assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR, "{dialect:?}");
            let body = axum::body::to_bytes(response.into_body(), 1 << 16).await.unwrap();
            let body: serde_json::Value = serde_json::from_slice(&body).unwrap_or_else(|_| panic!("{dialect:?}: JSON"));
            let said = body[field].as_str().unwrap_or_default();
            assert!(!said.is_empty() && !said.contains("a bug in a handler"), "{dialect:?}: {body}");
        }
    }
}
