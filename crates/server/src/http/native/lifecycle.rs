//! What happens to tokens after they are made, on the native API: rotating a secret with an overlap, disabling
//! and enabling, changing a name or a quota, revoking in bulk, the leaked-credential report anyone may send, the
//! account's expiry policy, and the audit trail. Every decision is `TokenService`'s (and the core's token rule);
//! this module parses and shapes.

use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequestParts, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::IntoResponse;
use serde_json::{Map, Value as Json_};
use tessera_core::{Action, Id, Quota, QuotaSetting, Target, TokenId, TokenKind, UserId};
use tessera_store::{Actor, AuditQuery, Creator, TokenPolicy, TokenSelection};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::wire::{
    AuditEntryView, AuditPage, BulkRevocation, IdText, LeakReport, OverTheMaximum, PolicyChange, PolicyList,
    PolicyView, ReportAccepted, RevokedCount, Rotation, TokenChange, TokenView, TokenWithSecret,
};
use super::{BODY_LIMIT, Bearer, NativeResult, Path, Problem, parse_id, with_secret};
use crate::app::{App, AppError};
use crate::audit::AuditEvent;
use crate::http::{QueryParams, body_bytes, parse_json};
use crate::time::parse_iso8601;
use crate::tokens::{MAX_LEAKED_PER_REPORT, MAX_ROTATION_OVERLAP, ReportRefused};

pub fn routes() -> OpenApiRouter<App> {
    OpenApiRouter::new()
        .routes(routes!(revoke_in_bulk))
        .routes(routes!(rotate))
        .routes(routes!(change))
        .routes(routes!(report_leaked))
        .routes(routes!(list_policies))
        .routes(routes!(set_policy))
        .routes(routes!(audit_trail))
}

/// A JSON object body (the empty object for an empty body) of at most `limit` bytes, holding no field but
/// `allowed`.
fn object_body(
    body: Result<Bytes, BytesRejection>,
    limit: usize,
    allowed: &[&str],
) -> Result<Map<String, Json_>, Problem> {
    let document = json_object(body, limit)?;
    only_fields(&document, allowed)?;
    Ok(document)
}

fn json_object(body: Result<Bytes, BytesRejection>, limit: usize) -> Result<Map<String, Json_>, Problem> {
    let body = body_bytes(body, limit).map_err(|(status, detail)| Problem::new(status, detail))?;
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    match parse_json(&body)? {
        Json_::Object(object) => Ok(object),
        _ => Err(AppError::BadRequest("the body must be a JSON object".into()).into()),
    }
}

/// Refuses fields a route does not take, naming them: a typo (`"overlap"` for `"overlap_seconds"`) must not be
/// silently ignored.
fn only_fields(document: &Map<String, Json_>, allowed: &[&str]) -> Result<(), Problem> {
    match document.keys().find(|key| !allowed.contains(&key.as_str())) {
        Some(unknown) => Err(AppError::BadRequest(format!(
            "unknown field '{unknown}'; this takes {}",
            allowed.iter().map(|field| format!("'{field}'")).collect::<Vec<_>>().join(", ")
        ))
        .into()),
        None => Ok(()),
    }
}

/// A whole number of seconds from `0..=max`, or `None` for null / absent.
fn seconds_field(document: &Map<String, Json_>, name: &str, max: u64) -> Result<Option<u64>, Problem> {
    match document.get(name) {
        None | Some(Json_::Null) => Ok(None),
        Some(value) => match value.as_u64() {
            Some(seconds) if seconds <= max => Ok(Some(seconds)),
            _ => {
                Err(AppError::BadRequest(format!("'{name}' must be a whole number of seconds from 0 to {max}")).into())
            }
        },
    }
}

/// A token's quota as the API writes it: `"default"` (its kind's), `"unlimited"`, or
/// `{"requests": N, "window_seconds": S}`.
pub(crate) fn quota_from_json(value: &Json_) -> Result<QuotaSetting, AppError> {
    let refused = || {
        AppError::BadRequest(
            "'quota' must be \"default\", \"unlimited\" or {\"requests\": 1..1000000, \"window_seconds\": 1..86400}"
                .into(),
        )
    };
    match value {
        Json_::Null => Ok(QuotaSetting::KindDefault),
        Json_::String(text) if text == "default" => Ok(QuotaSetting::KindDefault),
        Json_::String(text) if text == "unlimited" => Ok(QuotaSetting::Unlimited),
        Json_::Object(object) => {
            if object.keys().any(|key| key != "requests" && key != "window_seconds") {
                return Err(refused());
            }
            let number = |name, max| {
                object.get(name).and_then(Json_::as_u64).filter(|n| (1..=max).contains(n)).ok_or_else(refused)
            };
            let requests = u32::try_from(number("requests", 1_000_000)?).map_err(|_| refused())?;
            let window_seconds = u32::try_from(number("window_seconds", 86_400)?).map_err(|_| refused())?;
            Ok(QuotaSetting::Limited(Quota { requests, window_seconds }))
        }
        _ => Err(refused()),
    }
}

/// Gives a token a new secret; the old one works for the overlap (0 when not given: it stops now).
///
/// Answers the token with its new secret, shown this once. A login session is renewed, not rotated.
#[utoipa::path(
    post, path = "/tokens/{id}/rotate", tag = "tokens", operation_id = "rotate_token",
    security(("bearer" = [])),
    params(("id" = IdText, Path, description = "The token's id.")),
    request_body(content = Rotation, description = "An empty body is taken as `{}`."),
    responses(
        (status = 200, description = "Rotated; the new secret is shown this once.", body = TokenWithSecret),
        (status = 400, description = "The body is not a JSON object, a field is unknown or out of range, or the \
                                      token is a login session."),
        (status = 403, description = "The credential may not rotate it (only its maker or an account manager may)."),
        (status = 404, description = "No such token among those the caller manages."),
        (status = 413, description = "The body is over 1 MiB."),
    ),
)]
async fn rotate(
    State(app): State<App>,
    Bearer(caller): Bearer,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> NativeResult {
    let document = object_body(body, BODY_LIMIT, &["overlap_seconds"])?;
    let overlap = seconds_field(&document, "overlap_seconds", MAX_ROTATION_OVERLAP.as_secs())?.unwrap_or(0);
    let (token, permit) = app.tokens.managed(&caller, parse_id("token", &id)?).await.map_err(AppError::from)?;
    let (rotated, secret) =
        app.tokens.rotate(&caller, &permit, &token, Duration::from_secs(overlap)).await.map_err(AppError::from)?;
    Ok(Json(with_secret(&rotated, &secret)).into_response())
}

/// Changes a token: enables or disables it, renames it, sets its quota; all or nothing.
#[utoipa::path(
    patch, path = "/tokens/{id}", tag = "tokens", operation_id = "change_token",
    security(("bearer" = [])),
    params(("id" = IdText, Path, description = "The token's id.")),
    request_body = TokenChange,
    responses(
        (status = 200, description = "The token as changed.", body = TokenView),
        (status = 400, description = "The body is not a JSON object, names nothing to change, or a field is \
                                      unknown or wrong (a credential cannot disable itself)."),
        (status = 403, description = "The credential may not change it."),
        (status = 404, description = "No such token among those the caller manages."),
        (status = 413, description = "The body is over 1 MiB."),
    ),
)]
async fn change(
    State(app): State<App>,
    Bearer(caller): Bearer,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> NativeResult {
    let document = object_body(body, BODY_LIMIT, &["enabled", "name", "quota"])?;
    if document.is_empty() {
        return Err(AppError::BadRequest("nothing to change: send 'enabled', 'name' or 'quota'".into()).into());
    }
    let enabled = match document.get("enabled") {
        None => None,
        Some(Json_::Bool(enabled)) => Some(*enabled),
        Some(_) => return Err(AppError::BadRequest("'enabled' must be true or false".into()).into()),
    };
    let name = match document.get("name") {
        None => None,
        Some(value) => Some(super::token_name(value)?.trim().to_owned()),
    };
    let quota = document.get("quota").map(quota_from_json).transpose()?;
    let (mut token, permit) = app.tokens.managed(&caller, parse_id("token", &id)?).await.map_err(AppError::from)?;
    // What `set_enabled` would refuse is refused before the name or quota is stored: a change is all or nothing.
    if let Some(enabled) = enabled {
        crate::tokens::check_enabling(&caller, &token, enabled).map_err(AppError::from)?;
    }
    if name.is_some() || quota.is_some() {
        let mut changed = token.clone();
        changed.name = name.unwrap_or(changed.name);
        changed.quota = quota.unwrap_or(changed.quota);
        app.tokens.change(&caller, &permit, &token, &changed).await.map_err(AppError::from)?;
        token = changed;
    }
    if let Some(enabled) = enabled
        && enabled != token.disabled_at_ms.is_none()
    {
        token = app.tokens.set_enabled(&caller, &permit, &token, enabled).await.map_err(AppError::from)?;
    }
    Ok(Json(TokenView::from(&token)).into_response())
}

/// Revokes every live token that the fields name together and the caller manages.
#[utoipa::path(
    post, path = "/tokens/revoke", tag = "tokens", operation_id = "revoke_tokens_in_bulk",
    security(("bearer" = [])),
    request_body = BulkRevocation,
    responses(
        (status = 200, description = "How many were revoked.", body = RevokedCount),
        (status = 400, description = "The body is not a JSON object, names nothing, or a field is unknown or wrong."),
        (status = 403, description = "The credential may not manage tokens."),
        (status = 404, description = "No such user, collection or device."),
        (status = 413, description = "The body is over 1 MiB."),
    ),
)]
async fn revoke_in_bulk(
    State(app): State<App>,
    Bearer(caller): Bearer,
    body: Result<Bytes, BytesRejection>,
) -> NativeResult {
    let document = object_body(body, BODY_LIMIT, &["user", "collection", "device", "kind"])?;
    let id_field = |name: &'static str| -> Result<Option<&str>, Problem> {
        match document.get(name) {
            None | Some(Json_::Null) => Ok(None),
            Some(Json_::String(text)) => Ok(Some(text.as_str())),
            Some(_) => Err(AppError::BadRequest(format!("'{name}' must be an id (a string)")).into()),
        }
    };
    let mut selection = TokenSelection::default();
    if let Some(user) = id_field("user")? {
        selection.creator = Some(Creator::User(parse_id::<UserId>("user", user)?));
    }
    if let Some(collection) = id_field("collection")? {
        selection.collection = Some(parse_id("collection", collection)?);
    }
    if let Some(device) = id_field("device")? {
        selection.device = Some(parse_id("device", device)?);
    }
    if let Some(kind) = id_field("kind")? {
        selection.kind =
            Some(TokenKind::from_name(kind).ok_or_else(|| {
                AppError::BadRequest(format!("unknown token kind '{kind}'; kinds are {}", kind_names()))
            })?);
    }
    let revoked = app.tokens.revoke_selection(&caller, selection).await.map_err(AppError::from)?;
    Ok(Json(RevokedCount { revoked }).into_response())
}

fn kind_names() -> String {
    TokenKind::ALL.iter().map(|kind| kind.as_str()).collect::<Vec<_>>().join(", ")
}

/// The address a request came from, for routes that take no credential.
pub struct PeerAddress(Option<std::net::IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for PeerAddress {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<PeerAddress, Self::Rejection> {
        Ok(PeerAddress(crate::http::peer_address(parts)))
    }
}

/// Largest leak report body: 100 secrets of 51 characters with their JSON punctuation fit many times over.
const LEAK_REPORT_LIMIT: usize = 64 * 1024;

/// Reports secrets seen in public; each that is a live Tessera token is revoked. Takes no credential.
///
/// In the manner of GitHub's credential-revocation API: a secret scanner or a finder reports what it saw. The answer
/// is the same 202 whether any existed (the work is done after the answer, so its time says nothing either);
/// reports are limited per address.
#[utoipa::path(
    post, path = "/credentials/revoke", tag = "tokens", operation_id = "report_leaked_credentials",
    request_body = LeakReport,
    responses(
        (status = 202, description = "Accepted, whatever the secrets were.", body = ReportAccepted),
        (status = 400, description = "The body is not a JSON object, or 'credentials' is not a list of 1 to 100 \
                                      strings of at most 200 characters."),
        (status = 413, description = "The body is over 64 KiB."),
        (status = 429, description = "Too many reports from this address, or the queue is full; wait."),
    ),
)]
async fn report_leaked(
    State(app): State<App>,
    PeerAddress(from): PeerAddress,
    body: Result<Bytes, BytesRejection>,
) -> NativeResult {
    let document = object_body(body, LEAK_REPORT_LIMIT, &["credentials"])?;
    let credentials = match document.get("credentials") {
        Some(Json_::Array(items)) if !items.is_empty() && items.len() <= MAX_LEAKED_PER_REPORT => items,
        _ => {
            return Err(AppError::BadRequest(format!(
                "'credentials' must be a list of 1 to {MAX_LEAKED_PER_REPORT} secrets"
            ))
            .into());
        }
    };
    let secrets = credentials
        .iter()
        .map(|item| match item {
            Json_::String(text) if text.chars().count() <= 200 => Ok(text.clone()),
            _ => Err(AppError::BadRequest("each credential must be a string of at most 200 characters".into())),
        })
        .collect::<Result<Vec<_>, _>>()?;
    app.tokens.report_leaked(secrets, from).map_err(|refused| {
        let (ReportRefused::TooMany(wait) | ReportRefused::Busy(wait)) = refused;
        let mut problem = Problem::throttled(wait);
        problem.detail = refused.to_string();
        problem
    })?;
    let answer = ReportAccepted {
        message: "thank you: every credential that is a live Tessera token is being revoked".to_owned(),
    };
    Ok((StatusCode::ACCEPTED, Json(answer)).into_response())
}

/// The account's expiry policy per kind of token, for anyone who manages tokens.
#[utoipa::path(
    get, path = "/token-policies", tag = "policies", operation_id = "list_token_policies",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The policies set.", body = PolicyList),
        (status = 403, description = "The credential may not manage tokens."),
    ),
)]
async fn list_policies(State(app): State<App>, Bearer(caller): Bearer) -> NativeResult {
    let policies = app.tokens.policies(&caller).await.map_err(AppError::from)?;
    let policies = policies.iter().map(|policy| (policy.kind.as_str().to_owned(), PolicyView::from(policy))).collect();
    Ok(Json(PolicyList { policies, over_the_maximum: OverTheMaximum::Capped }).into_response())
}

/// The longest lifetime a policy may name (the API and the console take the same bound).
pub(crate) const MAX_POLICY_LIFETIME_SECONDS: u64 = 100 * 365 * 86_400;

/// Sets the expiry policy of a kind of token (null or absent for none; both none removes it).
#[utoipa::path(
    put, path = "/token-policies/{kind}", tag = "policies", operation_id = "set_token_policy",
    security(("bearer" = [])),
    params(("kind" = super::wire::TokenKindName, Path, description = "The kind of token.")),
    request_body(content = PolicyChange, description = "An empty body is taken as `{}`."),
    responses(
        (status = 200, description = "The policy as set.", body = PolicyView),
        (status = 400, description = "The body is not a JSON object, or a field is unknown or out of range."),
        (status = 403, description = "The credential is not an account administrator's session."),
        (status = 404, description = "No such kind of token."),
        (status = 413, description = "The body is over 1 MiB."),
    ),
)]
async fn set_policy(
    State(app): State<App>,
    Bearer(caller): Bearer,
    Path(kind): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> NativeResult {
    let kind = TokenKind::from_name(&kind).ok_or_else(|| AppError::NotFound("token kind")).map_err(Problem::from)?;
    let document = object_body(body, BODY_LIMIT, &["max_lifetime_seconds", "default_lifetime_seconds"])?;
    let policy = TokenPolicy {
        kind,
        max_lifetime_seconds: seconds_field(&document, "max_lifetime_seconds", MAX_POLICY_LIFETIME_SECONDS)?,
        default_lifetime_seconds: seconds_field(&document, "default_lifetime_seconds", MAX_POLICY_LIFETIME_SECONDS)?,
    };
    let permit = caller.authorize(Action::ManageUsers, &Target::account(caller.account())).map_err(AppError::from)?;
    app.tokens.set_policy(&caller, &permit, policy).await.map_err(AppError::from)?;
    Ok(Json(PolicyView::from(&policy)).into_response())
}

/// Most audit entries one page answers.
const AUDIT_PAGE_MAX: i64 = 1_000;

/// The account's audit trail, newest first (account administrators only).
#[utoipa::path(
    get, path = "/audit", tag = "audit", operation_id = "audit_trail",
    security(("bearer" = [])),
    params(
        ("actor" = Option<String>, Query, description = "Who acted: `user:<id>`, `token:<id>`, `system`, `operator` (the command line) or `anonymous`.",
         pattern = "^(user:[0-9a-hjkmnp-tv-z]{13}|token:[0-9a-hjkmnp-tv-z]{13}|system|operator|anonymous)$"),
        ("token" = Option<IdText>, Query, description = "The token an entry is about."),
        ("event" = Option<String>, Query, description = "Event names, comma-separated (see `AuditEvent`)."),
        ("since" = Option<String>, Query, format = DateTime, description = "Entries at or after this time."),
        ("until" = Option<String>, Query, format = DateTime, description = "Entries before this time."),
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 1000, description = "Entries per page (100)."),
        ("cursor" = Option<IdText>, Query, description = "The previous page's `next`."),
    ),
    responses(
        (status = 200, description = "A page of entries.", body = AuditPage),
        (status = 400, description = "A query parameter is wrong (an unknown event, a time that is not RFC 3339)."),
        (status = 403, description = "The credential is not an account administrator's session."),
    ),
)]
async fn audit_trail(State(app): State<App>, Bearer(caller): Bearer, query: QueryParams) -> NativeResult {
    caller.authorize(Action::ManageUsers, &Target::account(caller.account())).map_err(AppError::from)?;
    let audit_query = audit_query(&query)?;
    let entries = app.tokens.audit().entries(caller.account(), &audit_query).await.map_err(AppError::from)?;
    let next = (entries.len() == audit_query.limit as usize)
        .then(|| entries.last().map(|entry| IdText(entry.id.to_string())))
        .flatten();
    let entries = entries.iter().map(AuditEntryView::from).collect();
    Ok(Json(AuditPage { entries, next }).into_response())
}

/// The filters of an audit listing, as the API and the console take them.
pub(crate) fn audit_query(query: &QueryParams) -> Result<AuditQuery, AppError> {
    let time = |name: &str| -> Result<Option<i64>, AppError> {
        query
            .text(name)
            .filter(|text| !text.trim().is_empty())
            .map(|text| {
                parse_iso8601(text.trim())
                    .map_err(|error| AppError::BadRequest(format!("query parameter '{name}': {error}")))
            })
            .transpose()
    };
    let actor = match query.text("actor").map(str::trim).filter(|text| !text.is_empty()) {
        None => None,
        Some(text) => Some(actor_from_text(text)?),
    };
    let token = match query.text("token").map(str::trim).filter(|text| !text.is_empty()) {
        None => None,
        Some(text) => Some(
            text.parse::<TokenId>()
                .map_err(|_| AppError::BadRequest(format!("query parameter 'token' is not a token id: '{text}'")))?,
        ),
    };
    let mut events = Vec::new();
    for name in query.text("event").unwrap_or("").split(',').map(str::trim).filter(|name| !name.is_empty()) {
        let event = AuditEvent::from_name(name).ok_or_else(|| {
            let known: Vec<&str> = AuditEvent::ALL.iter().map(|event| event.name()).collect();
            AppError::BadRequest(format!("unknown event '{name}'; events are {}", known.join(", ")))
        })?;
        events.push(event.name().to_owned());
    }
    let before = match query.text("cursor").map(str::trim).filter(|text| !text.is_empty()) {
        None => None,
        Some(text) => {
            Some(text.parse::<Id>().map_err(|_| AppError::BadRequest(format!("'cursor' is not a cursor: '{text}'")))?)
        }
    };
    let limit = query.integer_in("limit", 1, AUDIT_PAGE_MAX)?.unwrap_or(100);
    Ok(AuditQuery {
        actor,
        token,
        events,
        since_ms: time("since")?,
        until_ms: time("until")?,
        before,
        limit: limit as u32,
    })
}

/// `user:<id>`, `token:<id>`, `system`, `operator` or `anonymous`.
fn actor_from_text(text: &str) -> Result<Actor, AppError> {
    let refused = || {
        AppError::BadRequest(format!(
            "'actor' must be user:<id>, token:<id>, system, operator or anonymous, not '{text}'"
        ))
    };
    match text.split_once(':') {
        None if text == "system" => Ok(Actor::System),
        None if text == "operator" => Ok(Actor::Operator),
        None if text == "anonymous" => Ok(Actor::Anonymous),
        Some(("user", id)) => Ok(Actor::User(id.parse().map_err(|_| refused())?)),
        Some(("token", id)) => Ok(Actor::Token(id.parse().map_err(|_| refused())?)),
        _ => Err(refused()),
    }
}

/// An actor as the API shows it.
pub(crate) fn actor_text(actor: Actor) -> String {
    match actor {
        Actor::User(user) => format!("user:{user}"),
        Actor::Token(token) => format!("token:{token}"),
        Actor::System => "system".to_owned(),
        Actor::Operator => "operator".to_owned(),
        Actor::Anonymous => "anonymous".to_owned(),
    }
}
