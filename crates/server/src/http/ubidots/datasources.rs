//! The older id-based API used by the public Python client `ubidots` 1.6: datasources (devices), variables,
//! their values, and `collections/values`.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{OriginalUri, Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde_json::{Value as Json, json};
use tessera_core::{Action, DeviceId, Label, Permit, VariableId};
use tessera_store::{Device, DeviceFilter, TimeRange, Variable};

use super::devices::store_dots;
use super::{
    AuthToken, UbidotsError, UbidotsResult, created_statuses, default_timestamp, json_body, page_of, paginated,
    payload, values_page,
};
use crate::app::{App, AppError, parse_label};
use crate::data::visible_devices;
use crate::http::{BaseUrl, QueryParams};
use crate::time::rfc3339;
use crate::tokens::Caller;

fn datasource_json(base: &BaseUrl, device: &Device) -> Json {
    let url = format!("{}/api/v1.6/datasources/{}", base.0, device.id);
    json!({
        "id": device.id.to_string(),
        "name": device.name,
        "label": device.label.as_str(),
        "description": "",
        "organization": device.collection.to_string(),
        "url": url,
        "variables_url": format!("{url}/variables"),
        "values_url": format!("{}/api/v1.6/devices/{}", base.0, device.label),
        "created_at": rfc3339(device.created_at_ms),
    })
}

fn variable_json(base: &BaseUrl, variable: &Variable) -> Json {
    let url = format!("{}/api/v1.6/variables/{}", base.0, variable.id);
    json!({
        "id": variable.id.to_string(),
        "name": variable.name,
        "label": variable.label.as_str(),
        "unit": variable.unit,
        "description": "",
        "datasource": {
            "id": variable.device.to_string(),
            "url": format!("{}/api/v1.6/datasources/{}", base.0, variable.device),
        },
        "url": url,
        "values_url": format!("{url}/values"),
        "created_at": rfc3339(variable.created_at_ms),
    })
}

/// A string field of a body, required or optional, with a length limit.
fn text_field(body: &Json, name: &str, required: bool) -> Result<Option<String>, UbidotsError> {
    match body.get(name) {
        None | Some(Json::Null) if required => Err(UbidotsError::bad_request(format!("\"{name}\" is required."))),
        None | Some(Json::Null) => Ok(None),
        Some(Json::String(text)) if text.chars().count() <= 200 => Ok(Some(text.trim().to_owned())),
        Some(Json::String(_)) => Err(UbidotsError::bad_request(format!("\"{name}\" is longer than 200 characters."))),
        Some(_) => Err(UbidotsError::bad_request(format!("\"{name}\" must be a string."))),
    }
}

/// The label a new datasource or variable gets: the one given, or one made from its name.
fn label_for(body: &Json, name: &str) -> Result<Label, UbidotsError> {
    match text_field(body, "label", false)? {
        Some(label) => Ok(parse_label("", &label).map_err(|error| UbidotsError::bad_request(error.to_string()))?),
        None => Label::from_name(name).map_err(|_| {
            UbidotsError::bad_request(format!("No label can be made from the name '{name}'; send a \"label\"."))
        }),
    }
}

async fn device_by_id(app: &App, caller: &Caller, action: Action, id: &str) -> Result<(Device, Permit), AppError> {
    let id: DeviceId = id.parse().map_err(|_| AppError::NotFound("datasource"))?;
    app.data.device_by_id(caller, action, id).await.map_err(|error| match error {
        AppError::NotFound("device") => AppError::NotFound("datasource"),
        other => other,
    })
}

async fn variable_by_id(
    app: &App,
    caller: &Caller,
    action: Action,
    id: &str,
) -> Result<(Arc<Variable>, Permit), AppError> {
    let id: VariableId = id.parse().map_err(|_| AppError::NotFound("variable"))?;
    let (variable, permit) = app.data.variable_by_id(caller, action, id).await?;
    Ok((Arc::new(variable), permit))
}

/// `GET datasources`: the devices the caller may read, paginated.
pub async fn list_datasources(
    State(app): State<App>,
    AuthToken(caller): AuthToken,
    OriginalUri(uri): OriginalUri,
    base: BaseUrl,
    query: QueryParams,
) -> UbidotsResult {
    let page = page_of(&query)?;
    let (total, results) = match visible_devices(&caller).map_err(AppError::from)? {
        None => (0, Vec::new()),
        Some(filter) => {
            let devices = app.data.list_devices(&caller, &filter, page).await?;
            let results = devices.items.iter().map(|device| datasource_json(&base, device)).collect();
            (devices.total, results)
        }
    };
    Ok(axum::Json(paginated(&base, uri.path(), &query, page, total, results)).into_response())
}

/// `POST datasources/` with `{"name", "label"?}`: a new device in the caller's home collection.
pub async fn create_datasource(
    State(app): State<App>,
    AuthToken(caller): AuthToken,
    base: BaseUrl,
    body: Result<Bytes, BytesRejection>,
) -> UbidotsResult {
    let body = json_body(body)?;
    let name = text_field(&body, "name", true)?.unwrap_or_default();
    let label = label_for(&body, &name)?;
    let home = app.data.home_collection(&caller).await?;
    let permit = caller
        .authorize(Action::Write, &tessera_core::Target::collection(caller.account(), home))
        .map_err(AppError::from)?;
    match app.data.device_by_label(caller.account(), &label).await {
        Err(AppError::NotFound(_)) => {}
        Ok(_) => return Err(UbidotsError::bad_request(format!("A device with the label '{label}' already exists."))),
        Err(error) => return Err(error.into()),
    }
    let device = app.data.create_device(&permit, label.clone(), name).await?;
    if device.collection != home {
        return Err(UbidotsError::bad_request(format!("A device with the label '{label}' already exists.")));
    }
    Ok((StatusCode::CREATED, axum::Json(datasource_json(&base, &device))).into_response())
}

pub async fn get_datasource(
    State(app): State<App>,
    AuthToken(caller): AuthToken,
    Path(id): Path<String>,
    base: BaseUrl,
) -> UbidotsResult {
    let (device, _) = device_by_id(&app, &caller, Action::Read, &id).await?;
    Ok(axum::Json(datasource_json(&base, &device)).into_response())
}

pub async fn delete_datasource(
    State(app): State<App>,
    AuthToken(caller): AuthToken,
    Path(id): Path<String>,
) -> UbidotsResult {
    let (device, permit) = device_by_id(&app, &caller, Action::Write, &id).await?;
    app.data.delete_device(&permit, &device).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Lists variables, each authorized for reading, as a paginated Ubidots answer.
async fn variables_page(
    app: &App,
    caller: &Caller,
    filter: Option<DeviceFilter>,
    base: &BaseUrl,
    path: &str,
    query: &QueryParams,
) -> UbidotsResult {
    let page = page_of(query)?;
    let Some(filter) = filter else {
        return Ok(axum::Json(paginated(base, path, query, page, 0, Vec::new())).into_response());
    };
    let variables = app.data.list_variables(caller, &filter, page).await?;
    let results = variables.items.iter().map(|variable| variable_json(base, variable)).collect();
    Ok(axum::Json(paginated(base, path, query, page, variables.total, results)).into_response())
}

/// `GET datasources/<id>/variables`.
pub async fn list_datasource_variables(
    State(app): State<App>,
    AuthToken(caller): AuthToken,
    Path(id): Path<String>,
    OriginalUri(uri): OriginalUri,
    base: BaseUrl,
    query: QueryParams,
) -> UbidotsResult {
    let (device, _) = device_by_id(&app, &caller, Action::Read, &id).await?;
    let filter = DeviceFilter::device(device.id);
    variables_page(&app, &caller, Some(filter), &base, uri.path(), &query).await
}

/// `POST datasources/<id>/variables` with `{"name", "unit", "label"?}`.
pub async fn create_variable(
    State(app): State<App>,
    AuthToken(caller): AuthToken,
    Path(id): Path<String>,
    base: BaseUrl,
    body: Result<Bytes, BytesRejection>,
) -> UbidotsResult {
    let body = json_body(body)?;
    let (device, permit) = device_by_id(&app, &caller, Action::Write, &id).await?;
    let name = text_field(&body, "name", true)?.unwrap_or_default();
    let unit = text_field(&body, "unit", false)?.unwrap_or_default();
    let label = label_for(&body, &name)?;
    match app.data.variable_by_label(&device, &label).await {
        Err(AppError::NotFound(_)) => {}
        Ok(_) => {
            return Err(UbidotsError::bad_request(format!(
                "A variable with the label '{label}' already exists in this datasource."
            )));
        }
        Err(error) => return Err(error.into()),
    }
    let variable = app.data.variable_for_write(&permit, &device, &label, &name, &unit).await?;
    Ok((StatusCode::CREATED, axum::Json(variable_json(&base, &variable))).into_response())
}

/// `GET variables`: every variable the caller may read, paginated.
pub async fn list_variables(
    State(app): State<App>,
    AuthToken(caller): AuthToken,
    OriginalUri(uri): OriginalUri,
    base: BaseUrl,
    query: QueryParams,
) -> UbidotsResult {
    let filter = visible_devices(&caller).map_err(AppError::from)?;
    variables_page(&app, &caller, filter, &base, uri.path(), &query).await
}

pub async fn get_variable(
    State(app): State<App>,
    AuthToken(caller): AuthToken,
    Path(id): Path<String>,
    base: BaseUrl,
) -> UbidotsResult {
    let (variable, _) = variable_by_id(&app, &caller, Action::Read, &id).await?;
    Ok(axum::Json(variable_json(&base, &variable)).into_response())
}

pub async fn delete_variable(
    State(app): State<App>,
    AuthToken(caller): AuthToken,
    Path(id): Path<String>,
) -> UbidotsResult {
    let (variable, permit) = variable_by_id(&app, &caller, Action::Write, &id).await?;
    app.data.delete_variable(&permit, &variable).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `GET variables/<id>/values`: newest first, paginated, `start`/`end` inclusive.
pub async fn variable_values(
    State(app): State<App>,
    AuthToken(caller): AuthToken,
    Path(id): Path<String>,
    OriginalUri(uri): OriginalUri,
    base: BaseUrl,
    query: QueryParams,
) -> UbidotsResult {
    let (variable, permit) = variable_by_id(&app, &caller, Action::Read, &id).await?;
    values_page(&app, &permit, &variable, &base, uri.path(), &query).await
}

/// `POST variables/<id>/values`: one dot (201, the stored dot) or a list (one status per dot).
pub async fn send_to_variable(
    State(app): State<App>,
    AuthToken(caller): AuthToken,
    Path(id): Path<String>,
    query: QueryParams,
    body: Result<Bytes, BytesRejection>,
) -> UbidotsResult {
    let body = json_body(body)?;
    let default_timestamp_ms = default_timestamp(&query)?;
    payload::parse_dots(&body, default_timestamp_ms).map_err(UbidotsError::bad_request)?;
    let (variable, permit) = variable_by_id(&app, &caller, Action::Write, &id).await?;
    store_dots(&app, &permit, variable, &body, default_timestamp_ms).await
}

/// `DELETE variables/<id>/values/<start_ms>/<end_ms>`: removes the dots in the inclusive range.
pub async fn delete_values(
    State(app): State<App>,
    AuthToken(caller): AuthToken,
    Path((id, start, end)): Path<(String, String, String)>,
) -> UbidotsResult {
    let bound = |name: &str, text: &str| {
        text.parse::<i64>().map_err(|_| {
            UbidotsError::bad_request(format!("The {name} of the range must be milliseconds, not '{text}'."))
        })
    };
    let range = TimeRange { start_ms: bound("start", &start)?, end_ms: bound("end", &end)? };
    if range.start_ms > range.end_ms {
        return Err(UbidotsError::bad_request("The start of the range is after its end."));
    }
    let (variable, permit) = variable_by_id(&app, &caller, Action::Write, &id).await?;
    let deleted = app.data.delete_readings(&permit, &variable, range).await?;
    Ok(axum::Json(json!({ "deleted": deleted })).into_response())
}

/// `POST collections/values` with `[{"variable": <id>, "value", "timestamp"?, "context"?}, ...]`: every item is
/// checked first; then all are stored together, or none.
pub async fn send_collection(
    State(app): State<App>,
    AuthToken(caller): AuthToken,
    query: QueryParams,
    body: Result<Bytes, BytesRejection>,
) -> UbidotsResult {
    let body = json_body(body)?;
    let default_timestamp_ms = default_timestamp(&query)?;
    let Json::Array(items) = &body else {
        return Err(UbidotsError::bad_request("The body must be a list of {\"variable\", \"value\"} objects."));
    };
    if items.is_empty() {
        return Err(UbidotsError::bad_request("The list is empty."));
    }
    let mut parsed = Vec::with_capacity(items.len());
    for (index, item) in items.iter().enumerate() {
        let id = match item.get("variable") {
            Some(Json::String(id)) => id.clone(),
            Some(Json::Number(number)) => number.to_string(),
            _ => {
                return Err(UbidotsError::bad_request(format!(
                    "Item {index}: \"variable\" (a variable id) is required."
                )));
            }
        };
        let dot = payload::parse_dot(item, default_timestamp_ms)
            .map_err(|error| UbidotsError::bad_request(format!("Item {index}: {error}")))?;
        parsed.push((id, dot));
    }
    let mut permits = Vec::new();
    let mut series: Vec<(Arc<Variable>, Vec<crate::data::Dot>)> = Vec::new();
    for (id, dot) in parsed {
        match series.iter_mut().find(|(variable, _)| variable.id.to_string() == id) {
            Some((_, dots)) => dots.push(dot),
            None => {
                let (variable, permit) = variable_by_id(&app, &caller, Action::Write, &id).await?;
                permits.push(permit);
                series.push((variable, vec![dot]));
            }
        }
    }
    let permit_refs: Vec<&Permit> = permits.iter().collect();
    app.data.write(&permit_refs, series).await?;
    Ok(axum::Json(created_statuses(items.len())).into_response())
}
