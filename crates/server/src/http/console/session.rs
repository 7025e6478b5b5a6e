//! Who is at the console, and whether a form post is theirs. One layer runs before every console handler:
//!
//! - The session is the access token in the `tessera_session` cookie (a user's login session only: no other
//!   token is taken from a cookie). When it has expired, the refresh token in `tessera_refresh` renews both,
//!   once: concurrent requests of one browser (a page, its event stream, a chart's data) would otherwise
//!   present the same refresh token twice, which `PeopleService` rightly treats as theft and answers by
//!   revoking the whole session. So renewals are made one at a time, and a refresh token renewed in the last
//!   30 s is answered with the pair it was renewed into.
//! - Every request that is not GET or HEAD must carry the form token: bound to the login session for a
//!   signed-in visitor (an HMAC of the session's family id under the server key, so it survives renewals and
//!   needs no storage), or equal to the `tessera_login` cookie before sign-in (a double submit, so a foreign
//!   site cannot sign a visitor into an account of its choosing). No handler can forget the check: a post that
//!   fails it never reaches one.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tessera_core::{Denial, Presentation};

use super::{Failure, PREFIX};
use crate::app::{App, AppError};
use crate::people::LoginError;
use crate::tokens::{Caller, VerifyError};

const SESSION_COOKIE: &str = "tessera_session";
const REFRESH_COOKIE: &str = "tessera_refresh";
/// Before sign-in: the double-submit value of the sign-in forms.
const LOGIN_COOKIE: &str = "tessera_login";
/// Between the password and the second factor: which challenge the code answers.
pub(super) const CHALLENGE_COOKIE: &str = "tessera_challenge";
/// The form field (or, for a script's request, the header) that carries the form token.
pub(super) const FORM_TOKEN_FIELD: &str = "csrf";
const FORM_TOKEN_HEADER: &str = "x-csrf-token";
/// The client id of console sessions, shown in token listings ("session (console)").
pub(super) const CLIENT_ID: &str = "console";
/// Largest form a console page posts (a team's tags, a token's name: small).
const FORM_LIMIT: usize = 64 * 1024;
/// The longest a form may take to arrive whole (a person's form is a few hundred bytes; the listener's own
/// timeout is between bytes, which a trickle never trips).
const FORM_READ_TIME: Duration = Duration::from_secs(10);
/// How long a renewed refresh token is answered with the pair it was renewed into.
const RENEWAL_REMEMBERED: Duration = Duration::from_secs(30);

/// The console's own state beside the `App`: the renewals of the last seconds and the open live streams.
#[derive(Debug, Clone)]
pub(super) struct Console {
    app: App,
    renewals: Arc<Renewals>,
    streams: Arc<Mutex<HashMap<tessera_core::Creator, usize>>>,
}

/// Live streams one person may hold open at once: a few tabs' worth. Without a bound one read-only member held
/// every one of the server's connections with streams nobody read.
pub(super) const STREAMS_PER_PERSON: usize = 16;

/// One open live stream, counted against its holder until dropped.
#[derive(Debug)]
pub(super) struct StreamSlot {
    streams: Arc<Mutex<HashMap<tessera_core::Creator, usize>>>,
    holder: tessera_core::Creator,
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut streams = self.streams.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(count) = streams.get_mut(&self.holder) {
            *count -= 1;
            if *count == 0 {
                streams.remove(&self.holder);
            }
        }
    }
}

#[derive(Debug, Default)]
struct Renewals {
    /// One lock per refresh token being renewed (keyed by its digest), so two requests cannot renew the same one
    /// and requests with other tokens do not wait for it; dropped when nobody waits on it.
    in_progress: Mutex<HashMap<[u8; 32], Arc<tokio::sync::Mutex<()>>>>,
    /// Keyed by the renewed refresh token's digest (never the secret itself).
    recent: Mutex<HashMap<[u8; 32], Renewed>>,
}

#[derive(Clone)]
struct Renewed {
    at: Instant,
    /// Who renewed it: the pair is handed again only to the same address, so whoever else holds the used refresh
    /// token gets nothing in those 30 s (and after them, `PeopleService` takes its reuse for theft).
    source: IpAddr,
    access: String,
    refresh: String,
}

impl std::fmt::Debug for Renewed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Renewed").field("at", &self.at).finish_non_exhaustive()
    }
}

impl Console {
    pub(super) fn new(app: App) -> Console {
        Console { app, renewals: Arc::default(), streams: Arc::default() }
    }

    /// A slot for one more live stream of `caller`'s person, or `None` when they hold the most already.
    pub(super) fn open_stream(&self, caller: &Caller) -> Option<StreamSlot> {
        let holder = caller.record.creator;
        let mut streams = self.streams.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let count = streams.entry(holder).or_default();
        if *count >= STREAMS_PER_PERSON {
            return None;
        }
        *count += 1;
        Some(StreamSlot { streams: self.streams.clone(), holder })
    }

    async fn renew(&self, presented: &str, source: IpAddr) -> Result<Renewed, LoginError> {
        let key = self.app.people.digest_code(presented).0;
        let remembered = |renewals: &Renewals| {
            let recent = renewals.recent.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            recent
                .get(&key)
                .filter(|renewed| renewed.at.elapsed() < RENEWAL_REMEMBERED && renewed.source == source)
                .cloned()
        };
        if let Some(renewed) = remembered(&self.renewals) {
            return Ok(renewed);
        }
        let lock = {
            let mut in_progress = self.renewals.in_progress.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            in_progress.entry(key).or_default().clone()
        };
        let outcome = async {
            let _turn = lock.lock().await;
            if let Some(renewed) = remembered(&self.renewals) {
                return Ok(renewed);
            }
            let session = self.app.people.refresh(presented, CLIENT_ID, source).await?;
            let renewed = Renewed {
                at: Instant::now(),
                source,
                access: session.access_token.expose().to_owned(),
                refresh: session.refresh_token.expose().to_owned(),
            };
            let mut recent = self.renewals.recent.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            recent.retain(|_, earlier| earlier.at.elapsed() < RENEWAL_REMEMBERED);
            recent.insert(key, renewed.clone());
            Ok(renewed)
        }
        .await;
        let mut in_progress = self.renewals.in_progress.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        // The map's own reference and ours: nobody else waits for this token's renewal.
        if Arc::strong_count(&lock) <= 2 {
            in_progress.remove(&key);
        }
        outcome
    }
}

/// A signed-in visitor: their session's caller and the form token of that session.
#[derive(Debug, Clone)]
pub(super) struct SignedIn {
    pub caller: Caller,
    pub form_token: String,
}

/// Extracts the signed-in visitor; anyone else is sent to the sign-in page.
#[derive(Debug, Clone)]
pub(super) struct Signed(pub SignedIn);

impl<S: Send + Sync> FromRequestParts<S> for Signed {
    type Rejection = Failure;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Signed, Failure> {
        parts.extensions.get::<SignedIn>().cloned().map(Signed).ok_or(Failure::SignIn)
    }
}

/// What every console request knows of its visitor, signed in or not.
#[derive(Debug, Clone)]
pub(super) struct Visitor {
    pub source: IpAddr,
    /// Cookies get `Secure` when the visitor reached us over HTTPS: Tessera's own, or a proxy's in front that
    /// says so.
    pub secure: bool,
    pub login_nonce: Option<String>,
    pub challenge: Option<String>,
    pub signed_in: bool,
}

impl<S: Send + Sync> FromRequestParts<S> for Visitor {
    type Rejection = Failure;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Visitor, Failure> {
        parts
            .extensions
            .get::<Visitor>()
            .cloned()
            .ok_or_else(|| Failure::App(AppError::Internal("the console's session layer did not run".into())))
    }
}

/// The fields of a posted form (already read, and its form token checked, by the layer).
#[derive(Debug, Clone, Default)]
pub(super) struct Form(HashMap<String, String>);

impl Form {
    /// A field's text, empty when absent.
    pub fn text(&self, name: &str) -> &str {
        self.0.get(name).map(String::as_str).unwrap_or("")
    }

    /// A field's text, trimmed.
    pub fn trimmed(&self, name: &str) -> &str {
        self.text(name).trim()
    }

    #[cfg(test)]
    pub fn from_fields(fields: HashMap<String, String>) -> Form {
        Form(fields)
    }

    pub fn checked(&self, name: &str) -> bool {
        matches!(self.text(name), "on" | "true" | "1" | "yes")
    }
}

impl<S: Send + Sync> FromRequest<S> for Form {
    type Rejection = Failure;

    async fn from_request(request: Request, _state: &S) -> Result<Form, Failure> {
        let bytes = axum::body::to_bytes(request.into_body(), FORM_LIMIT)
            .await
            .map_err(|_| Failure::Page(StatusCode::PAYLOAD_TOO_LARGE, "The form is too large.".into()))?;
        Ok(parse_form(&bytes))
    }
}

fn parse_form(bytes: &[u8]) -> Form {
    Form(crate::http::form_urlencoded_pairs(&String::from_utf8_lossy(bytes)).into_iter().collect())
}

/// The value of cookie `name` in the request's `Cookie` headers.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|line| line.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value.trim())
        .filter(|value| !value.is_empty())
}

/// A console cookie: only for the console's paths, never readable by a script, never sent from another site.
pub(super) fn set_cookie(name: &str, value: &str, max_age: Duration, secure: bool) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    let text =
        format!("{name}={value}; Path={PREFIX}; Max-Age={}; HttpOnly; SameSite=Strict{secure}", max_age.as_secs());
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static("tessera_invalid=1; Max-Age=0"))
}

pub(super) fn clear_cookie(name: &str, secure: bool) -> HeaderValue {
    set_cookie(name, "", Duration::ZERO, secure)
}

/// The cookies of a new or renewed session.
pub(super) fn session_cookies(app: &App, access: &str, refresh: &str, secure: bool) -> [HeaderValue; 2] {
    [
        set_cookie(SESSION_COOKIE, access, app.config.access_token_ttl, secure),
        set_cookie(REFRESH_COOKIE, refresh, app.config.refresh_token_ttl, secure),
    ]
}

pub(super) fn signed_out_cookies(secure: bool) -> [HeaderValue; 2] {
    [clear_cookie(SESSION_COOKIE, secure), clear_cookie(REFRESH_COOKIE, secure)]
}

/// The form token of a login session.
pub(super) fn form_token(app: &App, caller: &Caller) -> String {
    let bound_to = match caller.record.family {
        Some(family) => format!("family:{}", family.as_i64()),
        None => format!("token:{}", caller.record.id),
    };
    let digest = app.people.digest_code(&format!("console-form:{bound_to}"));
    crate::peers::hex(&digest.0[..16])
}

/// A new random value for the sign-in forms' double submit.
pub(super) fn new_login_nonce() -> String {
    crate::peers::hex(&crate::entropy::random_bytes::<16>())
}

fn same_text(a: &str, b: &str) -> bool {
    // Constant time in the length of what was presented, so a guess learns nothing from the answer's timing.
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Over Tessera's own HTTPS, or over HTTPS to a proxy in front that says so.
fn reached_over_https(request: &Request) -> bool {
    request.extensions().get::<crate::http::listener::ReachedOverTls>().is_some() || forwarded_https(request.headers())
}

fn forwarded_https(headers: &HeaderMap) -> bool {
    let forwarded_proto = headers.get("x-forwarded-proto").and_then(|value| value.to_str().ok());
    let forwarded = headers.get(header::FORWARDED).and_then(|value| value.to_str().ok());
    forwarded_proto.is_some_and(|proto| proto.trim().eq_ignore_ascii_case("https"))
        || forwarded
            .is_some_and(|text| text.split([';', ',']).any(|part| part.trim().eq_ignore_ascii_case("proto=https")))
}

/// The layer in front of every console handler (see the module's comment).
pub(super) async fn layer(State(console): State<Console>, request: Request, next: Next) -> Response {
    let headers = request.headers();
    let source = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(address)| address.ip())
        .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    let secure = reached_over_https(&request);
    let mut cookies_out = Vec::new();
    let signed = match sign_in_from_cookies(&console, headers, source, secure, &mut cookies_out).await {
        Ok(signed) => signed,
        Err(failure) => return failure.into_response(),
    };
    let visitor = Visitor {
        source,
        secure,
        login_nonce: cookie(headers, LOGIN_COOKIE).map(str::to_owned),
        challenge: cookie(headers, CHALLENGE_COOKIE).map(str::to_owned),
        signed_in: signed.is_some(),
    };
    let mut request = request;
    if !matches!(*request.method(), Method::GET | Method::HEAD) {
        let expected = match (&signed, &visitor.login_nonce) {
            (Some(signed), _) => Some(signed.form_token.as_str()),
            (None, nonce) => nonce.as_deref(),
        };
        request = match checked_form(request, expected).await {
            Ok(request) => request,
            Err(failure) => return failure.into_response(),
        };
    }
    if let Some(signed) = signed {
        request.extensions_mut().insert(signed);
    }
    request.extensions_mut().insert(visitor);
    request.extensions_mut().insert(console.clone());
    let mut response = next.run(request).await;
    for cookie in cookies_out {
        response.headers_mut().append(header::SET_COOKIE, cookie);
    }
    response
}

/// The visitor's session from their cookies, renewed when it has expired; stale cookies are cleared.
async fn sign_in_from_cookies(
    console: &Console,
    headers: &HeaderMap,
    source: IpAddr,
    secure: bool,
    cookies_out: &mut Vec<HeaderValue>,
) -> Result<Option<SignedIn>, Failure> {
    let app = &console.app;
    let access = cookie(headers, SESSION_COOKIE);
    if let Some(access) = access {
        match app.tokens.verify_presented(access, Presentation::UserSessionOnly, Some(source)).await {
            Ok(caller) => return Ok(Some(SignedIn { form_token: form_token(app, &caller), caller })),
            Err(error @ VerifyError::Store(_)) => return Err(Failure::App(AppError::from(error))),
            // Only a session that ran out is renewed (or a cookie that names none, as after a restart of the
            // browser with a stale value); a revoked one is over, whatever its refresh cookie says.
            Err(VerifyError::Dead(Denial::Expired) | VerifyError::Unknown | VerifyError::Malformed(_)) => {}
            Err(_) => {
                cookies_out.extend(signed_out_cookies(secure));
                return Ok(None);
            }
        }
    }
    let refresh = cookie(headers, REFRESH_COOKIE);
    if let Some(refresh) = refresh {
        match console.renew(refresh, source).await {
            Ok(renewed) => {
                match app.tokens.verify_presented(&renewed.access, Presentation::UserSessionOnly, Some(source)).await {
                    Ok(caller) => {
                        cookies_out.extend(session_cookies(app, &renewed.access, &renewed.refresh, secure));
                        return Ok(Some(SignedIn { form_token: form_token(app, &caller), caller }));
                    }
                    Err(error @ VerifyError::Store(_)) => return Err(Failure::App(AppError::from(error))),
                    Err(_) => {}
                }
            }
            Err(LoginError::Throttled(wait)) => {
                return Err(Failure::Page(
                    StatusCode::TOO_MANY_REQUESTS,
                    format!("Too many attempts from your address. Try again in {} s.", wait.as_secs().max(1)),
                ));
            }
            Err(LoginError::Failed(error)) if !error.is_unauthenticated() => return Err(Failure::App(error)),
            Err(_) => {}
        }
    }
    if access.is_some() || refresh.is_some() {
        cookies_out.extend(signed_out_cookies(secure));
    }
    Ok(None)
}

/// Reads a posted body (bounded) and checks its form token against `expected`; the request goes on with the
/// body it had.
async fn checked_form(request: Request, expected: Option<&str>) -> Result<Request, Failure> {
    let refused = || {
        Failure::Page(
            StatusCode::FORBIDDEN,
            "This form has expired or did not come from this console. Go back, reload the page and try again.".into(),
        )
    };
    // Nothing can match without a session or a sign-in cookie: refused before a byte of the body is read, so
    // strangers cannot hold connections by trickling bodies at us.
    let Some(expected) = expected else { return Err(refused()) };
    let (parts, body) = request.into_parts();
    let read = tokio::time::timeout(FORM_READ_TIME, axum::body::to_bytes(body, FORM_LIMIT)).await;
    let bytes = match read {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(_)) => return Err(Failure::Page(StatusCode::PAYLOAD_TOO_LARGE, "The form is too large.".into())),
        Err(_) => return Err(Failure::Page(StatusCode::REQUEST_TIMEOUT, "The form took too long to arrive.".into())),
    };
    let presented = match parts.headers.get(FORM_TOKEN_HEADER).and_then(|value| value.to_str().ok()) {
        Some(header_value) => Some(header_value.to_owned()),
        None => parse_form(&bytes).0.remove(FORM_TOKEN_FIELD),
    };
    match presented {
        Some(presented) if same_text(&presented, expected) => Ok(Request::from_parts(parts, Body::from(bytes))),
        _ => Err(refused()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_are_found_by_exact_name_across_headers() {
        let mut headers = HeaderMap::new();
        headers.append(header::COOKIE, HeaderValue::from_static("a=1; tessera_session_x=no"));
        headers.append(header::COOKIE, HeaderValue::from_static("tessera_session=yes; b=2"));
        assert_eq!(cookie(&headers, SESSION_COOKIE), Some("yes"));
        assert_eq!(cookie(&headers, "b"), Some("2"));
        assert_eq!(cookie(&headers, "missing"), None);
        headers.insert(header::COOKIE, HeaderValue::from_static("tessera_session="));
        assert_eq!(cookie(&headers, SESSION_COOKIE), None, "an emptied cookie is no cookie");
    }

    #[test]
    fn session_cookies_are_http_only_strict_and_secure_over_https() {
        let plain = set_cookie(SESSION_COOKIE, "v", Duration::from_secs(60), false);
        assert_eq!(plain, "tessera_session=v; Path=/console; Max-Age=60; HttpOnly; SameSite=Strict");
        let secure = set_cookie(SESSION_COOKIE, "v", Duration::from_secs(60), true);
        assert!(secure.to_str().unwrap().ends_with("; Secure"));
    }

    #[test]
    fn https_is_read_from_either_proxy_header_or_tesseras_own_tls() {
        let mut headers = HeaderMap::new();
        assert!(!forwarded_https(&headers));
        headers.insert("x-forwarded-proto", HeaderValue::from_static("HTTPS"));
        assert!(forwarded_https(&headers));
        let mut headers = HeaderMap::new();
        headers.insert(header::FORWARDED, HeaderValue::from_static("for=1.2.3.4;proto=https;host=a"));
        assert!(forwarded_https(&headers));

        let mut request = Request::new(axum::body::Body::empty());
        assert!(!reached_over_https(&request));
        request.extensions_mut().insert(crate::http::listener::ReachedOverTls);
        assert!(reached_over_https(&request), "a TLS connection of Tessera's own is HTTPS without any header");
    }

    #[test]
    fn form_tokens_compare_whole() {
        assert!(same_text("abc", "abc"));
        assert!(!same_text("abc", "abd"));
        assert!(!same_text("ab", "abc"));
        assert!(!same_text("", "abc"));
    }
}
