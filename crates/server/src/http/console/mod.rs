//! The web console under `/console`: server-rendered HTML on the same services as every other front end, so it
//! can never allow what the API refuses. A session is a user login (the access and refresh tokens of
//! `PeopleService`) kept in `HttpOnly`, `SameSite=Strict` cookies; every state change is a form post carrying a
//! token bound to the session, checked in one place (`session.rs`) before any handler runs. Pages are askama
//! templates (`templates/console/`, checked when the crate compiles); the stylesheet and the one script are
//! embedded (`assets.rs`). No inline script or style anywhere, so the Content-Security-Policy can forbid them.

mod account;
mod api;
mod assets;
mod audit;
mod auth;
mod collections;
mod devices;
mod format;
mod profile;
mod session;
mod teams;
mod tokens;
mod users;

use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};

use crate::app::{App, AppError};

/// Where the console lives; every page, asset and cookie is under it.
pub const PREFIX: &str = "/console";

/// The console's routes, with the session layer (cookies, refresh, form tokens) and the security headers.
pub fn routes(app: App) -> Router<App> {
    let sessions = session::Console::new(app);
    Router::new()
        .route("/", get(home))
        .route("/assets/{name}", get(assets::serve))
        .route("/login", get(auth::login_page).post(auth::login))
        .route("/login/code", get(auth::code_page).post(auth::code))
        .route("/logout", post(auth::logout))
        .route("/profile", get(profile::page))
        .route("/profile/password", post(profile::change_password))
        .route("/profile/totp", post(profile::start_totp))
        .route("/profile/totp/confirm", post(profile::confirm_totp))
        .route("/profile/totp/disable", post(profile::disable_totp))
        .route("/collections", get(collections::list).post(collections::create))
        .route("/collections/{id}", get(collections::page))
        .route("/collections/{id}/delete", post(collections::delete))
        .route("/collections/{id}/devices", post(collections::create_device))
        .route("/collections/{id}/tokens", post(collections::create_token))
        .route("/collections/{id}/tokens/revoke", post(collections::revoke_tokens))
        .route("/collections/{id}/live", get(collections::live))
        .route("/devices/{id}", get(devices::page))
        .route("/devices/{id}/delete", post(devices::delete))
        .route("/devices/{id}/tokens", post(devices::create_token))
        .route("/devices/{id}/tokens/revoke", post(devices::revoke_tokens))
        .route("/variables/{id}/series", get(devices::series))
        .route("/variables/{id}/export.csv", get(devices::export))
        .route("/tokens", get(tokens::list).post(tokens::create_resource_token))
        .route("/tokens/{id}/delete", post(tokens::delete))
        .route("/tokens/{id}/rotate", post(tokens::rotate))
        .route("/tokens/{id}/disable", post(tokens::disable))
        .route("/tokens/{id}/enable", post(tokens::enable))
        .route("/account", get(account::page).post(account::create_account_token))
        .route("/account/tokens/revoke", post(account::revoke_kind))
        .route("/account/policies/{kind}", post(account::set_policy))
        .route("/audit", get(audit::page))
        .route("/api", get(api::page))
        .route("/teams", get(teams::list).post(teams::create))
        .route("/teams/accept", post(teams::accept))
        .route("/teams/{id}", get(teams::page))
        .route("/teams/{id}/delete", post(teams::delete))
        .route("/teams/{id}/members/{user}", post(teams::set_role))
        .route("/teams/{id}/members/{user}/remove", post(teams::remove_member))
        .route("/teams/{id}/invites", post(teams::invite))
        .route("/teams/{id}/invites/withdraw", post(teams::withdraw_invite))
        .route("/users", get(users::list).post(users::create))
        .route("/users/{id}/admin", post(users::set_admin))
        .route("/users/{id}/tokens/revoke", post(users::revoke_tokens))
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(sessions, session::layer))
        .layer(axum::middleware::map_response(security_headers))
}

/// `GET /` from a browser (it asks for HTML and presents no API credential) goes to the console; every API
/// client keeps Horde's answer at the root.
pub async fn send_browsers_to_console(request: Request, next: Next) -> Response {
    let headers = request.headers();
    let wants_html = headers
        .get(header::ACCEPT)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|accept| accept.split(',').any(|kind| kind.trim().starts_with("text/html")));
    let presents_credential = headers.contains_key(header::AUTHORIZATION) || headers.contains_key("x-api-token");
    if request.uri().path() == "/" && request.method() == Method::GET && wants_html && !presents_credential {
        return Redirect::to(&format!("{PREFIX}/")).into_response();
    }
    next.run(request).await
}

async fn home(session::Signed(_signed): session::Signed) -> Response {
    Redirect::to(&format!("{PREFIX}/collections")).into_response()
}

async fn not_found() -> Response {
    Failure::Page(StatusCode::NOT_FOUND, "There is no such page in the console.".into()).into_response()
}

/// The strict policy every console answer carries: scripts, styles and everything else from the console itself
/// only, no inline script or style, no framing, forms posting only here.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
     connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

async fn security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    // Pages hold an account's data (and once, a secret): no cache keeps them. Assets set their own.
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

/// A rendered page.
fn render(template: impl askama::Template) -> Result<Response, Failure> {
    render_with(StatusCode::OK, template)
}

fn render_with(status: StatusCode, template: impl askama::Template) -> Result<Response, Failure> {
    match template.render() {
        Ok(html) => Ok((status, Html(html)).into_response()),
        Err(error) => Err(Failure::App(AppError::Internal(Box::new(error)))),
    }
}

/// After a successful form post: go to the page that shows the result (so a reload does not post again).
fn see_other(path: String) -> Response {
    Redirect::to(&path).into_response()
}

/// What a console request can end in instead of its page.
#[derive(Debug)]
pub(super) enum Failure {
    /// Not signed in (or no longer): to the sign-in page.
    SignIn,
    /// An error page with this status and message.
    Page(StatusCode, String),
    App(AppError),
}

impl From<AppError> for Failure {
    fn from(error: AppError) -> Failure {
        Failure::App(error)
    }
}

impl From<tessera_core::Denial> for Failure {
    fn from(denial: tessera_core::Denial) -> Failure {
        Failure::App(AppError::Denied(denial))
    }
}

impl From<crate::tokens::TokenError> for Failure {
    fn from(error: crate::tokens::TokenError) -> Failure {
        Failure::App(AppError::from(error))
    }
}

/// What a person is told about an error: the service's own words for their mistakes, nothing of internals.
pub(super) fn explain(error: &AppError) -> String {
    match error {
        AppError::Internal(_) => {
            tracing::error!(error = ?error, "console request failed");
            "Something went wrong on the server. The details are in its log.".to_owned()
        }
        AppError::Unavailable(_) => {
            tracing::warn!(error = ?error, "console request failed: the store is unavailable");
            "The database is not answering right now. Try again in a few seconds.".to_owned()
        }
        AppError::Denied(denial) if denial.hides_existence() => "No such token among those you manage.".to_owned(),
        AppError::Denied(denial) => format!("You may not do this: {denial}."),
        AppError::NotFound(what) => format!("No such {what}, or it is not yours to see."),
        other => capitalize(&other.to_string()),
    }
}

fn capitalize(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let (status, message) = match self {
            Failure::SignIn => return Redirect::to(&format!("{PREFIX}/login")).into_response(),
            Failure::App(error) if error.is_unauthenticated() => {
                return Redirect::to(&format!("{PREFIX}/login")).into_response();
            }
            Failure::Page(status, message) => (status, message),
            Failure::App(error) => (error.status(), explain(&error)),
        };
        let page = format::ErrorPage { assets: assets::Urls::get(), status: status.as_u16(), message };
        match askama::Template::render(&page) {
            Ok(html) => (status, Html(html)).into_response(),
            Err(_) => (status, page.message).into_response(),
        }
    }
}

type PageResult = Result<Response, Failure>;

/// An error answered as a console page (a panic caught below the console, a route missing under it).
pub(crate) fn error_page(error: AppError) -> Response {
    Failure::App(error).into_response()
}
