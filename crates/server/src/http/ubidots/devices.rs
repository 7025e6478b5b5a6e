//! Sending and reading data by device and variable label: `devices/<device_label>/...`.

use crate::data::Wait;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{OriginalUri, Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde_json::{Map, Value as Json};
use tessera_core::{Action, Reading};
use tessera_store::{DeviceFilter, Page, Variable};

use super::{
    AuthToken, UbidotsError, UbidotsResult, created_statuses, default_timestamp, dot_json, json_body, payload,
    values_page,
};
use crate::app::{App, AppError, parse_label};
use crate::data::{Dot, variable_target};
use crate::http::{BaseUrl, QueryParams};
use crate::time::now_ms;
use crate::tokens::Caller;

/// `POST devices/<device_label>/`: dots for several variables, the device and variables created on first use.
pub async fn send_to_device(
    State(app): State<App>,
    AuthToken(caller): AuthToken,
    Path(device): Path<String>,
    query: QueryParams,
    body: Result<Bytes, BytesRejection>,
) -> UbidotsResult {
    let label = parse_label("device", &device)?;
    let body = json_body(body)?;
    let series = device_series(&body, default_timestamp(&query)?)?;
    let stored = app.data.write_device_series(&caller, &label, series, Wait::Committed).await?;
    let answer: Map<String, Json> =
        stored.into_iter().map(|(variable, dots)| (variable, created_statuses(dots))).collect();
    Ok(axum::Json(Json::Object(answer)).into_response())
}

/// Parses a Ubidots device body (`{"<variable>": <dot or dots>, ...}`) for the data service, whichever transport
/// carried it (HTTP or MQTT); a malformed body is refused whole.
pub fn device_series(body: &Json, default_timestamp_ms: i64) -> Result<Vec<(tessera_core::Label, Vec<Dot>)>, AppError> {
    let variables = payload::parse_device_body(body, default_timestamp_ms).map_err(AppError::BadRequest)?;
    Ok(variables.into_iter().map(|entry| (entry.label, entry.dots)).collect())
}

/// Stores dots in one variable and answers as Ubidots does: the stored dot for a single dot, one status per dot
/// for a list.
pub async fn store_dots(
    app: &App,
    permit: &tessera_core::Permit,
    variable: Arc<Variable>,
    body: &Json,
    default_timestamp_ms: i64,
) -> UbidotsResult {
    let dots = payload::parse_dots(body, default_timestamp_ms).map_err(UbidotsError::bad_request)?;
    // A single dot is answered with itself, as stored.
    let echo = (!body.is_array()).then(|| {
        let dot: &Dot = &dots[0];
        (variable.id, dot.timestamp_ms, dot.value.clone(), dot.context.clone())
    });
    let stored = app.data.write(&[permit], vec![(variable, dots)]).await?;
    if let Some((variable, timestamp_ms, value, context)) = echo {
        let reading = Reading { variable, timestamp_ms, value, context, received_at_ms: now_ms() };
        return Ok((StatusCode::CREATED, axum::Json(dot_json(&reading))).into_response());
    }
    Ok(axum::Json(created_statuses(stored.iter().map(|(_, dots)| dots).sum())).into_response())
}

/// `POST devices/<device_label>/<variable_label>/values`: one dot or a list, creating device and variable.
pub async fn send_to_variable(
    State(app): State<App>,
    AuthToken(caller): AuthToken,
    Path((device, variable)): Path<(String, String)>,
    query: QueryParams,
    body: Result<Bytes, BytesRejection>,
) -> UbidotsResult {
    let device_label = parse_label("device", &device)?;
    let variable_label = parse_label("variable", &variable)?;
    let body = json_body(body)?;
    let default_timestamp_ms = default_timestamp(&query)?;
    payload::parse_dots(&body, default_timestamp_ms).map_err(UbidotsError::bad_request)?;
    let (device, permit) = app.data.device_for_write(&caller, &device_label).await?;
    let variable = app.data.variable_for_write(&permit, &device, &variable_label, variable_label.as_str(), "").await?;
    store_dots(&app, &permit, variable, &body, default_timestamp_ms).await
}

/// The variable `<device_label>/<variable_label>`, authorized for reading.
async fn readable_variable(
    app: &App,
    caller: &Caller,
    device: &str,
    variable: &str,
) -> Result<(Arc<Variable>, tessera_core::Permit), AppError> {
    let device_label = parse_label("device", device)?;
    let variable_label = parse_label("variable", variable)?;
    let (device, _) = app.data.device_for(caller, Action::Read, &device_label).await?;
    let variable = app.data.variable_by_label(&device, &variable_label).await?;
    let permit = caller.authorize(Action::Read, &variable_target(&variable))?;
    Ok((variable, permit))
}

/// `GET devices/<device_label>/<variable_label>/values`: newest first, paginated, `start`/`end` inclusive.
pub async fn variable_values(
    State(app): State<App>,
    AuthToken(caller): AuthToken,
    Path((device, variable)): Path<(String, String)>,
    OriginalUri(uri): OriginalUri,
    base: BaseUrl,
    query: QueryParams,
) -> UbidotsResult {
    let (variable, permit) = readable_variable(&app, &caller, &device, &variable).await?;
    values_page(&app, &permit, &variable, &base, uri.path(), &query).await
}

/// `GET devices/<device_label>/<variable_label>/lv`: the last value as a bare number.
pub async fn last_value(
    State(app): State<App>,
    AuthToken(caller): AuthToken,
    Path((device, variable)): Path<(String, String)>,
) -> UbidotsResult {
    let (variable, permit) = readable_variable(&app, &caller, &device, &variable).await?;
    match app.data.last_reading(&permit, &variable).await? {
        Some(reading) => Ok(axum::Json(reading.value.to_json()).into_response()),
        None => Err(UbidotsError::new(StatusCode::NOT_FOUND, "Not found: the variable has no values yet.")),
    }
}

/// `GET devices/<device_label>/`: each variable of the device with its last dot (null before the first).
pub async fn device_last_values(
    State(app): State<App>,
    AuthToken(caller): AuthToken,
    Path(device): Path<String>,
) -> UbidotsResult {
    let label = parse_label("device", &device)?;
    let (device, _) = app.data.device_for(&caller, Action::Read, &label).await?;
    let filter = DeviceFilter::device(device.id);
    let variables = app.data.list_variables(&caller, &filter, Page::ALL).await?;
    let mut answer = Map::new();
    for variable in variables.items {
        let permit = caller.authorize(Action::Read, &variable_target(&variable)).map_err(AppError::from)?;
        let last = app.data.last_reading(&permit, &variable).await?;
        answer.insert(variable.label.to_string(), last.as_ref().map_or(Json::Null, dot_json));
    }
    Ok(axum::Json(Json::Object(answer)).into_response())
}
