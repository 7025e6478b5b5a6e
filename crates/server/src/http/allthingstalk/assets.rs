//! AllThingsTalk devices and assets over HTTP: `/device/{id}`, its assets, and each asset's state. An asset is a
//! variable of the one model, so a state written here is a reading every dialect sees, and the other way round.

use crate::data::Wait;
use crate::http::listed::ListedRouter;
use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequestParts, Path, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use serde_json::{Value as Json_, json};
use tessera_core::profile::Profile;
use tessera_core::{Action, DeviceId, Label, Permit, Value};
use tessera_store::{Device, DeviceFilter, Page, Variable};

use crate::app::{App, AppError};
use crate::data::{Dot, variable_target};
use crate::http::{body_bytes, parse_json};
use crate::time::{now_ms, parse_iso8601, rfc3339};
use crate::tokens::{Caller, VerifyError};

const BODY_LIMIT: usize = 64 * 1024;
const ASSET_KINDS: [&str; 4] = ["sensor", "actuator", "config", "virtual"];

pub fn routes() -> ListedRouter<App> {
    ListedRouter::new()
        .get("/device/{device}", "A device", get_device)
        .get("/device/{device}/assets", "A device's assets", list_assets)
        .post("/device/{device}/assets", "Make an asset", create_asset)
        .get("/device/{device}/asset/{asset}/state", "An asset's state", get_state)
        .put("/device/{device}/asset/{asset}/state", "Send an asset's state", put_state)
        .put("/device/{device}/asset/{asset}/command", "Send an actuator a command", send_command)
        .post("/device/{device}/asset/{asset}/command", "Send an actuator a command", send_command)
        .map_router(|router| router.layer(axum::extract::DefaultBodyLimit::max(BODY_LIMIT)))
}

/// An error as AllThingsTalk's API gives it: `{"message"}`.
#[derive(Debug)]
pub struct AttError {
    status: StatusCode,
    message: String,
}

impl From<AppError> for AttError {
    fn from(error: AppError) -> AttError {
        let status = error.status();
        let message = match &error {
            AppError::Internal(_) | AppError::Unavailable(_) => {
                tracing::error!(error = ?error, "allthingstalk request failed");
                if status == StatusCode::SERVICE_UNAVAILABLE {
                    "service temporarily unavailable, retry later".to_owned()
                } else {
                    "internal error".to_owned()
                }
            }
            other => other.to_string(),
        };
        AttError { status, message }
    }
}

impl IntoResponse for AttError {
    fn into_response(self) -> Response {
        (self.status, Json(json!({ "message": self.message }))).into_response()
    }
}

type AttResult = Result<Response, AttError>;

/// The caller, from `Authorization: Bearer <token>` (a device, ground or user token).
pub struct AttCaller(pub Caller);

impl std::fmt::Debug for AttCaller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("AttCaller").field(&self.0.record.id).finish()
    }
}

impl FromRequestParts<App> for AttCaller {
    type Rejection = AttError;

    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<AttCaller, AttError> {
        let secret =
            crate::http::bearer_secret(&parts.headers).ok_or(AppError::Unauthenticated(VerifyError::Missing))?;
        Ok(AttCaller(app.tokens.verify(secret, crate::http::peer_address(parts)).await.map_err(AppError::from)?))
    }
}

fn document(body: Result<Bytes, BytesRejection>) -> Result<Json_, AttError> {
    let bytes = body_bytes(body, BODY_LIMIT).map_err(|(status, message)| AttError { status, message })?;
    Ok(parse_json(&bytes)?)
}

async fn device_for(app: &App, caller: &Caller, action: Action, id: &str) -> Result<(Device, Permit), AppError> {
    let id: DeviceId = id.parse().map_err(|_| AppError::NotFound("device"))?;
    app.data.device_by_id(caller, action, id).await
}

/// AllThingsTalk calls a variable an asset.
fn asset_not_found(error: AppError) -> AppError {
    match error {
        AppError::NotFound("variable") => AppError::NotFound("asset"),
        other => other,
    }
}

fn asset_json(variable: &Variable) -> Json_ {
    json!({
        "id": variable.id.to_string(),
        "name": variable.label.as_str(),
        "title": if variable.title.is_empty() { variable.name.clone() } else { variable.title.clone() },
        "description": variable.description,
        "is": variable.kind,
        "profile": variable.profile.clone().unwrap_or_else(|| json!({})),
        "deviceId": variable.device.to_string(),
    })
}

async fn assets_of(app: &App, caller: &Caller, device: &Device) -> Result<Vec<Json_>, AppError> {
    let variables = app.data.list_variables(caller, &DeviceFilter::device(device.id), Page::ALL).await?;
    Ok(variables.items.iter().map(asset_json).collect())
}

async fn get_device(State(app): State<App>, AttCaller(caller): AttCaller, Path(device): Path<String>) -> AttResult {
    let (device, _) = device_for(&app, &caller, Action::Read, &device).await?;
    Ok(Json(json!({
        "id": device.id.to_string(),
        "name": if device.name.is_empty() { device.label.to_string() } else { device.name.clone() },
        "description": "",
        "assets": assets_of(&app, &caller, &device).await?,
    }))
    .into_response())
}

async fn list_assets(State(app): State<App>, AttCaller(caller): AttCaller, Path(device): Path<String>) -> AttResult {
    let (device, _) = device_for(&app, &caller, Action::Read, &device).await?;
    Ok(Json(Json_::Array(assets_of(&app, &caller, &device).await?)).into_response())
}

/// A string field of an asset definition, under its capitalised name (the SDK's) or lower-case.
fn field<'a>(document: &'a Json_, name: &str) -> Result<Option<&'a str>, AppError> {
    let lower = name.to_lowercase();
    match document.get(name).or_else(|| document.get(&lower)) {
        None | Some(Json_::Null) => Ok(None),
        Some(Json_::String(text)) if text.chars().count() <= 200 => Ok(Some(text)),
        Some(_) => Err(AppError::BadRequest(format!("'{name}' must be a string of at most 200 characters"))),
    }
}

/// `POST /device/{id}/assets` with `{"Name", "Title", "Description", "Is", "Profile"}`: defines the asset (or
/// updates the one of that name).
async fn create_asset(
    State(app): State<App>,
    AttCaller(caller): AttCaller,
    Path(device): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> AttResult {
    let document = document(body)?;
    let name = field(&document, "Name")?.ok_or_else(|| AppError::BadRequest("'Name' is required".into()))?;
    let label = Label::parse(name).map_err(|error| AppError::bad_label("asset", error))?;
    let kind = field(&document, "Is")?.unwrap_or("sensor").to_lowercase();
    if !ASSET_KINDS.contains(&kind.as_str()) {
        return Err(
            AppError::BadRequest(format!("'Is' must be sensor, actuator, config or virtual, not '{kind}'")).into()
        );
    }
    let profile =
        document.get("Profile").or_else(|| document.get("profile")).cloned().filter(|profile| !profile.is_null());
    if let Some(profile) = &profile {
        Profile::parse(profile).map_err(AppError::BadRequest)?;
    }
    let (device, permit) = device_for(&app, &caller, Action::Write, &device).await?;
    let definition = Variable {
        id: tessera_core::VariableId(crate::entropy::new_id()),
        account: device.account,
        device: device.id,
        collection: device.collection,
        label: label.clone(),
        name: label.to_string(),
        unit: String::new(),
        title: field(&document, "Title")?.unwrap_or(name).to_owned(),
        description: field(&document, "Description")?.unwrap_or_default().to_owned(),
        kind,
        profile,
        created_at_ms: now_ms(),
    };
    let asset = app.data.define_variable(&permit, &device, definition).await?;
    Ok((StatusCode::CREATED, Json(asset_json(&asset))).into_response())
}

fn state_json(value: Json_, at_ms: i64) -> Json_ {
    json!({"state": {"value": value, "at": rfc3339(at_ms)}})
}

async fn asset_for(
    app: &App,
    caller: &Caller,
    action: Action,
    device: &str,
    asset: &str,
) -> Result<(Device, std::sync::Arc<Variable>, Permit), AppError> {
    let (device, _) = device_for(app, caller, action, device).await?;
    let label = Label::parse(asset).map_err(|_| AppError::NotFound("asset"))?;
    let variable = app.data.variable_by_label(&device, &label).await.map_err(|error| match error {
        AppError::NotFound(_) => AppError::NotFound("asset"),
        other => other,
    })?;
    let permit = caller.authorize(action, &variable_target(&variable))?;
    Ok((device, variable, permit))
}

/// `GET /device/{id}/asset/{name}/state`: the last state; 404 before the first.
async fn get_state(
    State(app): State<App>,
    AttCaller(caller): AttCaller,
    Path((device, asset)): Path<(String, String)>,
) -> AttResult {
    let (_, variable, permit) = asset_for(&app, &caller, Action::Read, &device, &asset).await?;
    match app.data.last_reading(&permit, &variable).await? {
        Some(reading) => Ok(Json(state_json(reading.value.to_json(), reading.timestamp_ms)).into_response()),
        None => Err(AppError::NotFound("state").into()),
    }
}

/// `PUT /device/{id}/asset/{name}/state` with `{"value", "at"?}`: stored like any reading, if the profile allows.
async fn put_state(
    State(app): State<App>,
    AttCaller(caller): AttCaller,
    Path((device, asset)): Path<(String, String)>,
    body: Result<Bytes, BytesRejection>,
) -> AttResult {
    let document = document(body)?;
    let (value, dot) = state_dot(&document)?;
    let (device, asset) = state_path(&device, &asset)?;
    let timestamp_ms = dot.timestamp_ms;
    app.data.write_state(&caller, device, &asset, dot, Wait::Committed).await.map_err(asset_not_found)?;
    Ok(Json(state_json(value, timestamp_ms)).into_response())
}

/// The value and optional `at` of a state or command body: `{"value", "at"?}`, or a bare JSON value. Public for
/// the fuzz targets and property tests.
pub fn state_value(document: &Json_) -> (Json_, Option<&Json_>) {
    match document {
        Json_::Object(fields) if fields.contains_key("value") => (fields["value"].clone(), fields.get("at")),
        other => (other.clone(), None),
    }
}

/// Parses a state body (`{"value", "at"?}` or a bare JSON value), whichever transport carried it (HTTP or MQTT),
/// into the value as given and the dot to store; without `at`, the time is now.
pub fn state_dot(document: &Json_) -> Result<(Json_, Dot), AppError> {
    let (value, at) = state_value(document);
    let timestamp_ms = match at {
        None | Some(Json_::Null) => now_ms(),
        Some(Json_::String(text)) => {
            parse_iso8601(text).map_err(|error| AppError::BadRequest(format!("'at': {error}")))?
        }
        Some(_) => return Err(AppError::BadRequest("'at' must be an ISO 8601 date and time as a string".into())),
    };
    // The asset's profile is checked by the data service, for every dialect alike.
    let stored = match &value {
        Json_::Number(number) => Value::Number(number.as_f64().unwrap_or_default()),
        other => Value::Json(other.clone()),
    };
    Ok((value, Dot { timestamp_ms, value: stored, context: Default::default() }))
}

/// The device id and asset label of a state's path; ones that cannot exist are not found.
pub fn state_path(device: &str, asset: &str) -> Result<(DeviceId, Label), AppError> {
    let device = device.parse().map_err(|_| AppError::NotFound("device"))?;
    let asset = Label::parse(asset).map_err(|_| AppError::NotFound("asset"))?;
    Ok((device, asset))
}

/// `PUT /device/{id}/asset/{name}/command` with `{"value"}`: a command for an actuator, passed on at once to the
/// device's live subscribers (`device/{id}/asset/{name}/command` over MQTT). Commands are not stored.
async fn send_command(
    State(app): State<App>,
    AttCaller(caller): AttCaller,
    Path((device, asset)): Path<(String, String)>,
    body: Result<Bytes, BytesRejection>,
) -> AttResult {
    let document = document(body)?;
    let (value, _) = state_value(&document);
    let (device, variable, _) = asset_for(&app, &caller, Action::Write, &device, &asset).await?;
    if variable.kind != "actuator" {
        return Err(AppError::BadRequest(format!(
            "'{}' is a {}; commands go to actuators",
            variable.label, variable.kind
        ))
        .into());
    }
    if let Some(profile) = &variable.profile {
        let profile = Profile::parse(profile).map_err(|error| AppError::Internal(error.into()))?;
        profile.check(&value).map_err(AppError::BadRequest)?;
    }
    let at_ms = now_ms();
    app.hub.command(crate::hub::LiveCommand {
        account: device.account,
        collection: device.collection,
        device: device.id,
        variable: variable.id,
        value: value.clone(),
        at_ms,
    });
    Ok((StatusCode::ACCEPTED, Json(json!({"command": {"value": value, "at": rfc3339(at_ms)}}))).into_response())
}
