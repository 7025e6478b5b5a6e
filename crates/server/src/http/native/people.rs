//! The native API for people: login (`/v1/login`, `/v1/token/refresh`, `/v1/logout`), the caller's own account
//! (`/v1/me`, its second factor), and user administration (`/v1/users`).

use std::net::SocketAddr;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::IntoResponse;
use serde_json::Value as Json_;
use tessera_core::{Action, Id, Target, UserId};
use tessera_store::User;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::wire::{
    CodeRequest, IdText, LoginAnswer, LoginRequest, RecoveryCodes, RefreshRequest, SecondFactorChallenge, SessionView,
    TotpEnrollment, UserList, UserView,
};
use super::{BODY_LIMIT, Bearer, NativeResult, Problem};
use crate::app::{App, AppError};
use crate::http::{body_bytes, parse_json};
use crate::people::{LoginError, LoginStep, NewUser};

pub fn routes() -> OpenApiRouter<App> {
    OpenApiRouter::new()
        .routes(routes!(login))
        .routes(routes!(refresh))
        .routes(routes!(logout))
        .routes(routes!(me))
        .routes(routes!(start_totp, disable_totp))
        .routes(routes!(confirm_totp))
        .routes(routes!(list_users, create_user))
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

/// Logs in: `{"email", "password"}`, then, for a user with a second factor, `{"challenge", "user_id", "code"}`.
#[utoipa::path(
    post, path = "/login", tag = "sessions", operation_id = "login",
    request_body = LoginRequest,
    responses(
        (status = 200, description = "A session, or a second-factor challenge to answer with a code.",
         body = LoginAnswer),
        (status = 400, description = "The body is not JSON, a field is missing, or the credentials are not valid."),
        (status = 413, description = "The body is over 1 MiB."),
        (status = 429, description = "Too many failed attempts for this address or user; wait."),
    ),
)]
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
        return Ok(Json(LoginAnswer::Session(SessionView::of(&session, expires_in))).into_response());
    }
    let email = text(&document, "email")?;
    let password = text(&document, "password")?;
    match app.people.login_with_password(email, password, &client_id, peer.ip()).await? {
        LoginStep::Session(session) => {
            Ok(Json(LoginAnswer::Session(SessionView::of(&session, expires_in))).into_response())
        }
        LoginStep::Challenge { challenge, user } => Ok(Json(LoginAnswer::Challenge(SecondFactorChallenge {
            mfa_required: true,
            challenge: IdText(challenge.to_string()),
            user_id: IdText(user.to_string()),
        }))
        .into_response()),
    }
}

/// Renews a session: a new access and refresh token; the refresh token presented stops working.
#[utoipa::path(
    post, path = "/token/refresh", tag = "sessions", operation_id = "refresh_session",
    request_body = RefreshRequest,
    responses(
        (status = 200, description = "The renewed session.", body = SessionView),
        (status = 400, description = "The body is not JSON, or the refresh token is missing or not valid."),
        (status = 413, description = "The body is over 1 MiB."),
        (status = 429, description = "Too many failed attempts from this address; wait."),
    ),
)]
async fn refresh(
    State(app): State<App>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    body: Result<Bytes, BytesRejection>,
) -> NativeResult {
    let document = json_document(body)?;
    let presented = text(&document, "refresh_token")?;
    let client_id = document.get("client_id").and_then(Json_::as_str).unwrap_or("native").to_owned();
    let session = app.people.refresh(presented, &client_id, peer.ip()).await?;
    Ok(Json(SessionView::of(&session, app.people.access_ttl().as_secs())).into_response())
}

/// Ends the session of the access token presented (a user's session only).
#[utoipa::path(
    post, path = "/logout", tag = "sessions", operation_id = "logout",
    security(("bearer" = [])),
    responses(
        (status = 204, description = "The session's access and refresh tokens are revoked."),
        (status = 403, description = "The credential is not a user's session."),
    ),
)]
async fn logout(State(app): State<App>, Bearer(caller): Bearer) -> NativeResult {
    caller.authorize(Action::ManageOwnLogin, &Target::account(caller.account())).map_err(AppError::from)?;
    app.people.logout(&caller).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// The user of the session presented: a user's own login, never a token acting for them.
async fn session_user(app: &App, caller: &crate::tokens::Caller) -> Result<User, Problem> {
    caller.authorize(Action::ManageOwnLogin, &Target::account(caller.account())).map_err(AppError::from)?;
    Ok(app.people.user_of(caller).await?)
}

/// The user whose session this is.
#[utoipa::path(
    get, path = "/me", tag = "me", operation_id = "me",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The user.", body = UserView),
        (status = 403, description = "The credential is not a user's session."),
    ),
)]
async fn me(State(app): State<App>, Bearer(caller): Bearer) -> NativeResult {
    let user = session_user(&app, &caller).await?;
    Ok(Json(UserView::from(&user)).into_response())
}

/// Starts enrolling a second factor: a new secret, its `otpauth://` URI and a QR code; not in force until confirmed.
#[utoipa::path(
    post, path = "/me/totp", tag = "me", operation_id = "start_totp",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The enrollment.", body = TotpEnrollment),
        (status = 403, description = "The credential is not a user's session."),
        (status = 409, description = "The user already has a second factor in force."),
    ),
)]
async fn start_totp(State(app): State<App>, Bearer(caller): Bearer) -> NativeResult {
    let user = session_user(&app, &caller).await?;
    let enrollment = app.people.start_totp(&caller, &user).await?;
    Ok(Json(TotpEnrollment {
        secret: enrollment.secret.to_base32(),
        otpauth_uri: enrollment.uri,
        qr_svg: enrollment.qr_svg,
    })
    .into_response())
}

/// Turns the second factor on with a code of it; answers the recovery codes, this once.
#[utoipa::path(
    post, path = "/me/totp/confirm", tag = "me", operation_id = "confirm_totp",
    security(("bearer" = [])),
    request_body = CodeRequest,
    responses(
        (status = 200, description = "The second factor is in force.", body = RecoveryCodes),
        (status = 400, description = "The body is not JSON, or the code is missing or wrong."),
        (status = 403, description = "The credential is not a user's session."),
        (status = 409, description = "No enrollment was started, or it is already confirmed."),
        (status = 413, description = "The body is over 1 MiB."),
        (status = 429, description = "Too many wrong codes; wait."),
    ),
)]
async fn confirm_totp(
    State(app): State<App>,
    Bearer(caller): Bearer,
    body: Result<Bytes, BytesRejection>,
) -> NativeResult {
    let document = json_document(body)?;
    let user = session_user(&app, &caller).await?;
    let codes = app.people.confirm_totp(&caller, &user, text(&document, "code")?).await?;
    Ok(Json(RecoveryCodes { recovery_codes: codes }).into_response())
}

/// Turns the second factor off, with a code of it.
#[utoipa::path(
    delete, path = "/me/totp", tag = "me", operation_id = "disable_totp",
    security(("bearer" = [])),
    request_body = CodeRequest,
    responses(
        (status = 204, description = "The second factor is off."),
        (status = 400, description = "The body is not JSON, or the code is missing or wrong."),
        (status = 403, description = "The credential is not a user's session."),
        (status = 409, description = "The user has no second factor in force."),
        (status = 413, description = "The body is over 1 MiB."),
        (status = 429, description = "Too many wrong codes; wait."),
    ),
)]
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

/// The account's users.
#[utoipa::path(
    get, path = "/users", tag = "users", operation_id = "list_users",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The users.", body = UserList),
        (status = 403, description = "The credential is not an account administrator's session."),
    ),
)]
async fn list_users(State(app): State<App>, Bearer(caller): Bearer) -> NativeResult {
    let permit = caller.authorize(Action::ManageUsers, &Target::account(caller.account())).map_err(AppError::from)?;
    let users = app.people.list_users(&permit).await?;
    Ok(Json(UserList { users: users.iter().map(UserView::from).collect() }).into_response())
}

/// Makes a user (account administrators only).
#[utoipa::path(
    post, path = "/users", tag = "users", operation_id = "create_user",
    security(("bearer" = [])),
    request_body = super::wire::NewUser,
    responses(
        (status = 201, description = "Made; `Location` names the user.", body = UserView,
         headers(("Location" = String, description = "The user's URL."))),
        (status = 400, description = "The body is not JSON, or a field is missing or wrong (a weak password)."),
        (status = 403, description = "The credential is not an account administrator's session."),
        (status = 409, description = "A user has that email."),
        (status = 413, description = "The body is over 1 MiB."),
    ),
)]
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
    let mut response = (StatusCode::CREATED, Json(UserView::from(&user))).into_response();
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
