//! Signing in (password, then the second factor when the user has one, or a recovery code) and out. The steps
//! are `PeopleService`'s, with its throttle: the console is one more client of the same login.

use std::time::Duration;

use askama::Template;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::assets::Urls;
use super::session::{self, CHALLENGE_COOKIE, CLIENT_ID, Form, Signed, Visitor};
use super::{Failure, PREFIX, PageResult, render_with, see_other};
use crate::app::App;
use crate::people::{LoginError, LoginStep};

/// How long the password step's challenge waits for its code (the store's challenge lives as long).
const CHALLENGE_COOKIE_LIFE: Duration = Duration::from_secs(5 * 60);
const LOGIN_COOKIE_LIFE: Duration = Duration::from_secs(60 * 60);

#[derive(Debug, Template)]
#[template(path = "console/login.html")]
struct LoginPage {
    assets: Urls,
    csrf: String,
    email: String,
    error: String,
}

#[derive(Debug, Template)]
#[template(path = "console/login_code.html")]
struct CodePage {
    assets: Urls,
    csrf: String,
    error: String,
}

/// The sign-in form's double-submit value: the visitor's, or a new one set with the page.
fn login_nonce(visitor: &Visitor) -> (String, Option<axum::http::HeaderValue>) {
    match &visitor.login_nonce {
        Some(nonce) => (nonce.clone(), None),
        None => {
            let nonce = session::new_login_nonce();
            let cookie = session::set_cookie("tessera_login", &nonce, LOGIN_COOKIE_LIFE, visitor.secure);
            (nonce, Some(cookie))
        }
    }
}

fn with_cookie(mut response: Response, cookie: Option<axum::http::HeaderValue>) -> Response {
    if let Some(cookie) = cookie {
        response.headers_mut().append(header::SET_COOKIE, cookie);
    }
    response
}

/// Into the console, with the new session's cookies.
fn signed_in(app: &App, session: &crate::people::Session, visitor: &Visitor) -> Response {
    let mut response = see_other(format!("{PREFIX}/"));
    let access = session.access_token.expose();
    for cookie in session::session_cookies(app, access, session.refresh_token.expose(), visitor.secure) {
        response.headers_mut().append(header::SET_COOKIE, cookie);
    }
    response
}

fn login_form(visitor: &Visitor, status: StatusCode, email: &str, error: &str) -> PageResult {
    let (csrf, cookie) = login_nonce(visitor);
    let page = LoginPage { assets: Urls::get(), csrf, email: email.to_owned(), error: error.to_owned() };
    Ok(with_cookie(render_with(status, page)?, cookie))
}

pub(super) async fn login_page(visitor: Visitor) -> PageResult {
    if visitor.signed_in {
        return Ok(see_other(format!("{PREFIX}/")));
    }
    login_form(&visitor, StatusCode::OK, "", "")
}

fn refusal_text(error: &LoginError) -> Option<(StatusCode, String)> {
    match error {
        LoginError::InvalidGrant => None,
        LoginError::Throttled(wait) => Some((
            StatusCode::TOO_MANY_REQUESTS,
            format!("Too many failed attempts. Try again in {} s.", wait.as_secs().max(1)),
        )),
        LoginError::Failed(error) => Some((error.status(), super::explain(error))),
    }
}

pub(super) async fn login(
    axum::extract::State(app): axum::extract::State<App>,
    visitor: Visitor,
    form: Form,
) -> PageResult {
    let email = form.trimmed("email");
    let step = app.people.login_with_password(email, form.text("password"), CLIENT_ID, visitor.source).await;
    match step {
        Ok(LoginStep::Session(session)) => Ok(signed_in(&app, &session, &visitor)),
        Ok(LoginStep::Challenge { challenge, user }) => {
            let mut response = see_other(format!("{PREFIX}/login/code"));
            let value = format!("{challenge}.{user}");
            let cookie = session::set_cookie(CHALLENGE_COOKIE, &value, CHALLENGE_COOKIE_LIFE, visitor.secure);
            response.headers_mut().append(header::SET_COOKIE, cookie);
            Ok(response)
        }
        Err(error) => match refusal_text(&error) {
            None => login_form(&visitor, StatusCode::UNAUTHORIZED, email, "The email or the password is wrong."),
            Some((status, text)) => login_form(&visitor, status, email, &text),
        },
    }
}

fn code_form(visitor: &Visitor, status: StatusCode, error: &str) -> PageResult {
    let (csrf, cookie) = login_nonce(visitor);
    Ok(with_cookie(render_with(status, CodePage { assets: Urls::get(), csrf, error: error.to_owned() })?, cookie))
}

/// The challenge the second-factor form answers, from its cookie.
fn challenge_of(visitor: &Visitor) -> Option<(tessera_core::Id, tessera_core::UserId)> {
    let (challenge, user) = visitor.challenge.as_deref()?.split_once('.')?;
    Some((challenge.parse().ok()?, user.parse().ok()?))
}

pub(super) async fn code_page(visitor: Visitor) -> PageResult {
    if challenge_of(&visitor).is_none() {
        return Ok(see_other(format!("{PREFIX}/login")));
    }
    code_form(&visitor, StatusCode::OK, "")
}

pub(super) async fn code(
    axum::extract::State(app): axum::extract::State<App>,
    visitor: Visitor,
    form: Form,
) -> PageResult {
    let Some((challenge, user)) = challenge_of(&visitor) else {
        return Ok(see_other(format!("{PREFIX}/login")));
    };
    match app.people.login_with_code(challenge, user, form.trimmed("code"), CLIENT_ID, visitor.source).await {
        Ok(session) => {
            let mut response = signed_in(&app, &session, &visitor);
            response.headers_mut().append(header::SET_COOKIE, session::clear_cookie(CHALLENGE_COOKIE, visitor.secure));
            Ok(response)
        }
        Err(error) => match refusal_text(&error) {
            None => code_form(
                &visitor,
                StatusCode::UNAUTHORIZED,
                "That code was not accepted. Codes change every 30 seconds, and each works once.",
            ),
            Some((status, text)) => code_form(&visitor, status, &text),
        },
    }
}

pub(super) async fn logout(
    axum::extract::State(app): axum::extract::State<App>,
    visitor: Visitor,
    Signed(signed): Signed,
) -> Result<Response, Failure> {
    app.people.logout(&signed.caller).await?;
    let mut response = see_other(format!("{PREFIX}/login"));
    for cookie in session::signed_out_cookies(visitor.secure) {
        response.headers_mut().append(header::SET_COOKIE, cookie);
    }
    Ok(response.into_response())
}
