//! The AllThingsTalk dialect: devices, assets and their state (`assets.rs`), and user login, `POST /login`, an OAuth2 password grant (form-encoded) with a
//! TOTP second factor and rotating refresh tokens, answering in AllThingsTalk's token shape.

use std::collections::HashMap;
use std::net::SocketAddr;

use axum::extract::rejection::FormRejection;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Form, Json};
use serde_json::json;
use tessera_core::{Id, UserId};

use crate::app::App;
use crate::http::listed::ListedRouter;
use crate::people::{LoginError, LoginStep, Session};
use crate::time::http_date;

/// The OAuth2 clients AllThingsTalk knows.
const CLIENT_IDS: [&str; 3] = ["web", "mobile", "postman"];

pub mod assets;

/// AllThingsTalk's routes, each listed for the OpenAPI document.
pub fn routes() -> ListedRouter<App> {
    ListedRouter::new().post("/login", "Log in (OAuth2 password grant)", login).merge(assets::routes())
}

/// An OAuth2 error answer: `{"error", "error_description"}`.
struct OAuthError {
    status: StatusCode,
    error: &'static str,
    description: String,
    retry_after: Option<u64>,
}

impl OAuthError {
    fn new(error: &'static str, description: impl Into<String>) -> OAuthError {
        OAuthError { status: StatusCode::BAD_REQUEST, error, description: description.into(), retry_after: None }
    }
}

impl From<LoginError> for OAuthError {
    fn from(error: LoginError) -> OAuthError {
        match error {
            LoginError::InvalidGrant => OAuthError::new("invalid_grant", "The credentials are not valid."),
            LoginError::Throttled(wait) => OAuthError {
                status: StatusCode::TOO_MANY_REQUESTS,
                error: "too_many_attempts",
                description: "Too many failed attempts; wait before trying again.".into(),
                retry_after: Some(wait.as_secs_f64().ceil().max(1.0) as u64),
            },
            LoginError::Failed(error) => {
                tracing::error!(error = ?error, "login failed");
                OAuthError {
                    status: StatusCode::SERVICE_UNAVAILABLE,
                    error: "temporarily_unavailable",
                    description: "The service is temporarily unavailable.".into(),
                    retry_after: None,
                }
            }
        }
    }
}

impl IntoResponse for OAuthError {
    fn into_response(self) -> Response {
        let mut response =
            (self.status, Json(json!({"error": self.error, "error_description": self.description}))).into_response();
        if let Some(seconds) = self.retry_after {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

fn token_answer(session: &Session) -> Response {
    let expires_in = ((session.expires_at_ms - session.issued_at_ms) / 1000).max(0);
    Json(json!({
        "access_token": session.access_token.expose(),
        "token_type": "bearer",
        "expires_in": expires_in,
        "refresh_token": session.refresh_token.expose(),
        "as:client_id": session.client_id,
        "userName": session.email,
        ".issued": http_date(session.issued_at_ms),
        ".expires": http_date(session.expires_at_ms),
    }))
    .into_response()
}

/// `POST /login`: `grant_type` = `password`, `mfa` or `refresh_token`.
async fn login(
    State(app): State<App>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    form: Result<Form<HashMap<String, String>>, FormRejection>,
) -> Result<Response, OAuthError> {
    let Form(form) = form
        .map_err(|rejection| OAuthError::new("invalid_request", format!("The form could not be read: {rejection}")))?;
    let field = |name: &str| {
        form.get(name)
            .map(String::as_str)
            .ok_or_else(|| OAuthError::new("invalid_request", format!("The field '{name}' is required.")))
    };
    let client_id = field("client_id")?;
    if !CLIENT_IDS.contains(&client_id) {
        return Err(OAuthError::new("invalid_client", format!("The client '{client_id}' is unknown.")));
    }
    let source = peer.ip();
    match field("grant_type")? {
        "password" => {
            match app.people.login_with_password(field("username")?, field("password")?, client_id, source).await? {
                LoginStep::Session(session) => Ok(token_answer(&session)),
                LoginStep::Challenge { challenge, user } => {
                    Ok(Json(json!({"MfaUid": challenge.to_string(), "UserId": user.to_string()})).into_response())
                }
            }
        }
        "mfa" => {
            let challenge: Id = field("mfa_uid")?.parse().map_err(|_| OAuthError::from(LoginError::InvalidGrant))?;
            let user: UserId = field("user_id")?.parse().map_err(|_| OAuthError::from(LoginError::InvalidGrant))?;
            let session = app.people.login_with_code(challenge, user, field("code")?, client_id, source).await?;
            Ok(token_answer(&session))
        }
        "refresh_token" => {
            let session = app.people.refresh(field("refresh_token")?, client_id, source).await?;
            Ok(token_answer(&session))
        }
        other => Err(OAuthError::new("unsupported_grant_type", format!("The grant type '{other}' is not supported."))),
    }
}
