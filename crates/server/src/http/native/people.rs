//! The native API for people: login (`/v1/login`, `/v1/token/refresh`, `/v1/logout`), the caller's own account
//! (`/v1/me`, its second factor), and user administration (`/v1/users`).

use std::net::SocketAddr;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value as Json_, json};
use tessera_core::{Action, Id, Target, UserId};
use tessera_store::User;

use super::{BODY_LIMIT, Bearer, NativeResult, Problem};
use crate::app::{App, AppError};
use crate::http::{body_bytes, parse_json};
use crate::people::{LoginError, LoginStep, NewUser, Session};
use crate::time::rfc3339;

pub fn routes() -> Router<App> {
    Router::new()
        .route("/login", post(login))
        .route("/token/refresh", post(refresh))
        .route("/logout", post(logout))
        .route("/me", get(me))
        .route("/me/totp", post(start_totp).delete(disable_totp))
        .route("/me/totp/confirm", post(confirm_totp))
        .route("/users", get(list_users).post(create_user))
}

fn json_document(body: Result<Bytes, BytesRejection>) -> Result<Json_, Problem> {
    let body = body_bytes(body, BODY_LIMIT).map_err(|(status, detail)| Problem::new(status, detail))?;
    Ok(parse_json(&body)?)
}

/// A required string field.
fn text<'a>(document: &'a Json_, name: &str) -> Result<&'a str, Problem> {
    match document.get(name) {
        Some(Json_::String(text)) => Ok(text),
        Some(_) => Err(AppError::BadRequest(format!("'{name}' must be a string")).into()),
        None => Err(AppError::BadRequest(format!("'{name}' is required")).into()),
    }
}

impl From<LoginError> for Problem {
    fn from(error: LoginError) -> Problem {
        match error {
            LoginError::InvalidGrant => Problem::new(StatusCode::BAD_REQUEST, "the credentials are not valid"),
            LoginError::Throttled(wait) => Problem::throttled(wait),
            LoginError::Failed(error) => error.into(),
        }
    }
}

fn session_json(session: &Session, expires_in: u64) -> Json_ {
    json!({
        "access_token": session.access_token.expose(),
        "token_type": "bearer",
        "expires_in": expires_in,
        "refresh_token": session.refresh_token.expose(),
        "expires_at": rfc3339(session.expires_at_ms),
    })
}

/// `POST /v1/login`: `{"email", "password"}`, then, for a user with a second factor, `{"challenge", "user_id",
/// "code"}`.
async fn login(
    State(app): State<App>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    body: Result<Bytes, BytesRejection>,
) -> NativeResult {
    let document = json_document(body)?;
    let client_id = document.get("client_id").and_then(Json_::as_str).unwrap_or("native").to_owned();
    let expires_in = app.people.access_ttl().as_secs();
    if document.get("challenge").is_some() {
        let challenge: Id =
            text(&document, "challenge")?.parse().map_err(|_| Problem::from(LoginError::InvalidGrant))?;
        let user: UserId = text(&document, "user_id")?.parse().map_err(|_| Problem::from(LoginError::InvalidGrant))?;
        let code = text(&document, "code")?;
        let session = app.people.login_with_code(challenge, user, code, &client_id, peer.ip()).await?;
        return Ok(Json(session_json(&session, expires_in)).into_response());
    }
    let email = text(&document, "email")?;
    let password = text(&document, "password")?;
    match app.people.login_with_password(email, password, &client_id, peer.ip()).await? {
        LoginStep::Session(session) => Ok(Json(session_json(&session, expires_in)).into_response()),
        LoginStep::Challenge { challenge, user } => Ok(Json(json!({
            "mfa_required": true,
            "challenge": challenge.to_string(),
            "user_id": user.to_string(),
        }))
        .into_response()),
    }
}

/// `POST /v1/token/refresh`: `{"refresh_token"}` for a new pair; the old refresh token stops working.
async fn refresh(
    State(app): State<App>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    body: Result<Bytes, BytesRejection>,
) -> NativeResult {
    let document = json_document(body)?;
    let presented = text(&document, "refresh_token")?;
    let client_id = document.get("client_id").and_then(Json_::as_str).unwrap_or("native").to_owned();
    let session = app.people.refresh(presented, &client_id, peer.ip()).await?;
    Ok(Json(session_json(&session, app.people.access_ttl().as_secs())).into_response())
}

/// `POST /v1/logout`: ends the session of the access token presented.
async fn logout(State(app): State<App>, Bearer(caller): Bearer) -> NativeResult {
    caller.authorize(Action::ManageOwnLogin, &Target::account(caller.account())).map_err(AppError::from)?;
    app.people.logout(&caller).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

fn user_json(user: &User) -> Json_ {
    json!({
        "id": user.id.to_string(),
        "email": user.email,
        "display_name": user.display_name,
        "phone": user.phone,
        "is_admin": user.is_admin,
        "totp_enabled": user.totp.as_ref().is_some_and(|totp| totp.enabled),
        "created_at": rfc3339(user.created_at_ms),
    })
}

/// The user of the session presented: a user's own login, never a token acting for them.
async fn session_user(app: &App, caller: &crate::tokens::Caller) -> Result<User, Problem> {
    caller.authorize(Action::ManageOwnLogin, &Target::account(caller.account())).map_err(AppError::from)?;
    Ok(app.people.user_of(caller).await?)
}

async fn me(State(app): State<App>, Bearer(caller): Bearer) -> NativeResult {
    let user = session_user(&app, &caller).await?;
    Ok(Json(user_json(&user)).into_response())
}

/// `POST /v1/me/totp`: a new secret with its `otpauth://` URI and a QR code (SVG); not in force until confirmed.
async fn start_totp(State(app): State<App>, Bearer(caller): Bearer) -> NativeResult {
    let user = session_user(&app, &caller).await?;
    let enrollment = app.people.start_totp(&caller, &user).await?;
    Ok(Json(json!({
        "secret": enrollment.secret.to_base32(),
        "otpauth_uri": enrollment.uri,
        "qr_svg": enrollment.qr_svg,
    }))
    .into_response())
}

/// `POST /v1/me/totp/confirm` with `{"code"}`: turns the second factor on; answers the recovery codes, once.
async fn confirm_totp(
    State(app): State<App>,
    Bearer(caller): Bearer,
    body: Result<Bytes, BytesRejection>,
) -> NativeResult {
    let document = json_document(body)?;
    let user = session_user(&app, &caller).await?;
    let codes = app.people.confirm_totp(&caller, &user, text(&document, "code")?).await?;
    Ok(Json(json!({ "recovery_codes": codes })).into_response())
}

/// `DELETE /v1/me/totp` with `{"code"}`: turns the second factor off.
async fn disable_totp(
    State(app): State<App>,
    Bearer(caller): Bearer,
    body: Result<Bytes, BytesRejection>,
) -> NativeResult {
    let document = json_document(body)?;
    let user = session_user(&app, &caller).await?;
    app.people.disable_totp(&caller, &user, text(&document, "code")?).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn list_users(State(app): State<App>, Bearer(caller): Bearer) -> NativeResult {
    let permit = caller.authorize(Action::ManageUsers, &Target::account(caller.account())).map_err(AppError::from)?;
    let users = app.people.list_users(&permit).await?;
    Ok(Json(json!({ "users": users.iter().map(user_json).collect::<Vec<_>>() })).into_response())
}

/// `POST /v1/users` with `{"email", "password", "display_name"?, "phone"?, "is_admin"?}` (account admins only).
async fn create_user(
    State(app): State<App>,
    Bearer(caller): Bearer,
    body: Result<Bytes, BytesRejection>,
) -> NativeResult {
    let permit = caller.authorize(Action::ManageUsers, &Target::account(caller.account())).map_err(AppError::from)?;
    let document = json_document(body)?;
    let optional = |name: &str| document.get(name).and_then(Json_::as_str).unwrap_or_default().to_owned();
    let new = NewUser {
        email: text(&document, "email")?.to_owned(),
        password: text(&document, "password")?.to_owned(),
        display_name: optional("display_name"),
        phone: optional("phone"),
        is_admin: match document.get("is_admin") {
            None => false,
            Some(Json_::Bool(is_admin)) => *is_admin,
            Some(_) => return Err(AppError::BadRequest("'is_admin' must be true or false".into()).into()),
        },
    };
    let user = app.people.create_user(&permit, new).await?;
    let mut response = (StatusCode::CREATED, Json(user_json(&user))).into_response();
    if let Ok(location) = HeaderValue::from_str(&format!("/v1/users/{}", user.id)) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(response)
}

impl Problem {
    /// 429 with `Retry-After` in whole seconds (at least one).
    pub fn throttled(wait: std::time::Duration) -> Problem {
        Problem {
            status: StatusCode::TOO_MANY_REQUESTS,
            detail: "too many failed attempts; wait before trying again".into(),
            retry_after: Some(wait.as_secs_f64().ceil().max(1.0) as u64),
        }
    }
}
