//! `/collections`: collections, their devices, their data, and messages to devices.

use std::collections::{BTreeMap, HashMap};

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::{Value as Json_, json};
use tessera_core::{Action, CollectionId, DeviceId, Label, Permit, Reading, Target, TeamId, Value};
use tessera_store::{Collection, Creator, Device, DeviceFilter, Downlink, Page, TimeRange};

use super::{HordeCaller, HordeResult, document, merge_tags};
use crate::app::{App, AppError};
use crate::data::device_target;
use crate::entropy::new_id;
use crate::http::QueryParams;
use crate::http::listed::ListedRouter;
use crate::time::now_ms;
use crate::tokens::Caller;

/// The number of messages `/data` answers when `limit` is 0 or absent, and the most it answers.
const DEFAULT_DATA_LIMIT: i64 = 256;
const MAX_DATA_LIMIT: i64 = 10_000;

pub fn routes() -> ListedRouter<App> {
    ListedRouter::new()
        .get("/collections", "List collections", list_collections)
        .post("/collections", "Make a collection", create_collection)
        .get("/collections/{collection}", "A collection", get_collection)
        .patch("/collections/{collection}", "Change a collection", update_collection)
        .delete("/collections/{collection}", "Delete a collection", delete_collection)
        .delete("/collections/{collection}/tags/{name}", "Delete a collection's tag", delete_collection_tag)
        .get("/collections/{collection}/devices", "A collection's devices", list_devices)
        .post("/collections/{collection}/devices", "Make a device", create_device)
        .get("/collections/{collection}/devices/{device}", "A device", get_device)
        .patch("/collections/{collection}/devices/{device}", "Change a device", update_device)
        .delete("/collections/{collection}/devices/{device}", "Delete a device", delete_device)
        .delete("/collections/{collection}/devices/{device}/tags/{name}", "Delete a device's tag", delete_device_tag)
        .get("/collections/{collection}/data", "A collection's messages", collection_data)
        .get("/collections/{collection}/devices/{device}/data", "A device's messages", device_data)
        .post("/collections/{collection}/to", "Send a message to every device", broadcast)
        .post("/collections/{collection}/devices/{device}/to", "Send a message to a device", send_to_device)
}

pub fn collection_json(collection: &Collection) -> Json_ {
    let mut body = json!({
        "collectionId": collection.id.to_string(),
        "teamId": collection.team.map(|team| team.to_string()),
        "fieldMask": Json_::Null,
    });
    if !collection.tags.is_empty() {
        body["tags"] = json!(collection.tags);
    }
    body
}

pub fn device_json(device: &Device) -> Json_ {
    let mut body = json!({
        "deviceId": device.id.to_string(),
        "collectionId": device.collection.to_string(),
        "imsi": device.imsi.clone().unwrap_or_default(),
        "imei": device.imei.clone().unwrap_or_default(),
    });
    if !device.tags.is_empty() {
        body["tags"] = json!(device.tags);
    }
    body
}

/// A reading as a Horde message: its value as JSON text (or its bytes), base64-encoded.
pub fn message_json(device: &Device, reading: &Reading) -> Json_ {
    let payload = match &reading.value {
        Value::Bytes(bytes) => BASE64.encode(bytes),
        other => BASE64.encode(other.to_json().to_string()),
    };
    json!({"device": device_json(device), "payload": payload, "received": reading.timestamp_ms, "type": "data"})
}

fn collection_id(text: &str) -> Result<CollectionId, AppError> {
    text.parse().map_err(|_| AppError::NotFound("collection"))
}

/// The collection, authorized for `action`.
async fn collection_for(
    app: &App,
    caller: &Caller,
    action: Action,
    id: &str,
) -> Result<(Collection, Permit), AppError> {
    app.data.collection(caller, action, collection_id(id)?).await
}

/// The device of the collection named in the path, authorized for `action`.
pub async fn device_for(
    app: &App,
    caller: &Caller,
    action: Action,
    collection: &str,
    device: &str,
) -> Result<(Device, Permit), AppError> {
    let collection = collection_id(collection)?;
    let device: DeviceId = device.parse().map_err(|_| AppError::NotFound("device"))?;
    let (device, permit) = app.data.device_by_id(caller, action, device).await?;
    if device.collection != collection {
        return Err(AppError::NotFound("device"));
    }
    Ok((device, permit))
}

async fn list_collections(State(app): State<App>, HordeCaller(caller): HordeCaller) -> HordeResult {
    let visible: Vec<Json_> = app.readable_collections(&caller).await?.iter().map(collection_json).collect();
    Ok(Json(json!({ "collections": visible })).into_response())
}

/// `POST /collections`: owned by `teamId` if given, else by the user's private team (or, for a credential of the
/// account's API key, by the account).
async fn create_collection(
    State(app): State<App>,
    HordeCaller(caller): HordeCaller,
    body: Result<Bytes, BytesRejection>,
) -> HordeResult {
    let document = document(body)?;
    let team = match document.get("teamId") {
        Some(Json_::String(team)) => Some(team.parse::<TeamId>().map_err(|_| AppError::NotFound("team"))?),
        Some(Json_::Null) | None => match caller.record.creator {
            Creator::User(_) => Some(private_team_of(&app, &caller).await?),
            _ => None,
        },
        Some(_) => return Err(AppError::BadRequest("'teamId' must be a team id".into()).into()),
    };
    let mut tags = BTreeMap::new();
    if let Some(update) = document.get("tags").filter(|tags| !tags.is_null()) {
        merge_tags(&mut tags, update)?;
    }
    let owner = match team {
        Some(team) => Target::team(caller.account(), team),
        None => Target::account(caller.account()),
    };
    let permit = caller.authorize(Action::Write, &owner).map_err(AppError::from)?;
    let name = tags.get("name").cloned().unwrap_or_default();
    let collection = app.create_collection(&permit, name, team, tags).await?;
    Ok((StatusCode::CREATED, Json(collection_json(&collection))).into_response())
}

/// The private team of the user behind `caller` (their session, or a token they made).
async fn private_team_of(app: &App, caller: &Caller) -> Result<TeamId, AppError> {
    let Creator::User(_) = caller.record.creator else {
        return Err(AppError::BadRequest("give a 'teamId'".into()));
    };
    app.people.private_team(caller).await
}

async fn get_collection(
    State(app): State<App>,
    HordeCaller(caller): HordeCaller,
    Path(collection): Path<String>,
) -> HordeResult {
    let (collection, _) = collection_for(&app, &caller, Action::Read, &collection).await?;
    Ok(Json(collection_json(&collection)).into_response())
}

async fn update_collection(
    State(app): State<App>,
    HordeCaller(caller): HordeCaller,
    Path(collection): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> HordeResult {
    let document = document(body)?;
    let (mut collection, permit) = collection_for(&app, &caller, Action::Write, &collection).await?;
    if let Some(update) = document.get("tags").filter(|tags| !tags.is_null()) {
        merge_tags(&mut collection.tags, update)?;
        if let Some(name) = collection.tags.get("name") {
            collection.name = name.clone();
        }
        app.data.update_collection(&permit, &collection).await?;
    }
    Ok(Json(collection_json(&collection)).into_response())
}

async fn delete_collection(
    State(app): State<App>,
    HordeCaller(caller): HordeCaller,
    Path(collection): Path<String>,
) -> HordeResult {
    let (collection, permit) = collection_for(&app, &caller, Action::Write, &collection).await?;
    app.delete_collection(&caller, &permit, collection.id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn delete_collection_tag(
    State(app): State<App>,
    HordeCaller(caller): HordeCaller,
    Path((collection, name)): Path<(String, String)>,
) -> HordeResult {
    let (mut collection, permit) = collection_for(&app, &caller, Action::Write, &collection).await?;
    collection.tags.remove(&name.to_lowercase());
    app.data.update_collection(&permit, &collection).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn list_devices(
    State(app): State<App>,
    HordeCaller(caller): HordeCaller,
    Path(collection): Path<String>,
) -> HordeResult {
    let (collection, _) = collection_for(&app, &caller, Action::Read, &collection).await?;
    let devices = app.data.list_devices(&caller, &DeviceFilter::collection(collection.id), Page::ALL).await?;
    let devices: Vec<Json_> = devices.items.iter().map(device_json).collect();
    Ok(Json(json!({"collectionId": collection.id.to_string(), "devices": devices})).into_response())
}

/// An IMSI or IMEI: a string of digits.
fn identity(document: &Json_, name: &str, required: bool) -> Result<Option<String>, AppError> {
    match document.get(name) {
        None | Some(Json_::Null) if required => Err(AppError::BadRequest(format!("'{name}' is required"))),
        None | Some(Json_::Null) => Ok(None),
        Some(Json_::String(text))
            if !text.is_empty() && text.len() <= 20 && text.bytes().all(|b| b.is_ascii_digit()) =>
        {
            Ok(Some(text.clone()))
        }
        Some(_) => Err(AppError::BadRequest(format!("'{name}' must be a string of up to 20 digits"))),
    }
}

fn clash(error: tessera_store::StoreError) -> AppError {
    match error {
        tessera_store::StoreError::Conflict(_) => {
            AppError::Conflict("another device already has this IMSI or IMEI".into())
        }
        other => AppError::from_store("collection", other),
    }
}

/// `POST /collections/{id}/devices` with `imsi` and `imei` (both required, each unique).
async fn create_device(
    State(app): State<App>,
    HordeCaller(caller): HordeCaller,
    Path(collection): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> HordeResult {
    let document = document(body)?;
    let imsi = identity(&document, "imsi", true)?;
    let imei = identity(&document, "imei", true)?;
    let mut tags = BTreeMap::new();
    if let Some(update) = document.get("tags").filter(|tags| !tags.is_null()) {
        merge_tags(&mut tags, update)?;
    }
    let (collection, permit) = collection_for(&app, &caller, Action::Write, &collection).await?;
    // A Horde device has no label of its own; its id serves, so the other dialects can address it too.
    let id = DeviceId(new_id());
    let label = Label::parse(&id.to_string()).map_err(|error| AppError::Internal(Box::new(error)))?;
    let device = Device {
        id,
        account: caller.account(),
        collection: collection.id,
        label,
        name: tags.get("name").cloned().unwrap_or_default(),
        imsi,
        imei,
        tags,
        created_at_ms: now_ms(),
        last_seen_at_ms: None,
    };
    let created = app.data.insert_device(&permit, &device).await.map_err(|error| match error {
        AppError::Conflict(_) => AppError::Conflict("another device already has this IMSI or IMEI".into()),
        other => other,
    })?;
    Ok((StatusCode::CREATED, Json(device_json(&created))).into_response())
}

async fn get_device(
    State(app): State<App>,
    HordeCaller(caller): HordeCaller,
    Path((collection, device)): Path<(String, String)>,
) -> HordeResult {
    let (device, _) = device_for(&app, &caller, Action::Read, &collection, &device).await?;
    Ok(Json(device_json(&device)).into_response())
}

async fn update_device(
    State(app): State<App>,
    HordeCaller(caller): HordeCaller,
    Path((collection, device)): Path<(String, String)>,
    body: Result<Bytes, BytesRejection>,
) -> HordeResult {
    let document = document(body)?;
    let (mut device, permit) = device_for(&app, &caller, Action::Write, &collection, &device).await?;
    if let Some(imsi) = identity(&document, "imsi", false)? {
        device.imsi = Some(imsi);
    }
    if let Some(imei) = identity(&document, "imei", false)? {
        device.imei = Some(imei);
    }
    if let Some(update) = document.get("tags").filter(|tags| !tags.is_null()) {
        merge_tags(&mut device.tags, update)?;
    }
    app.data.update_device(&permit, &device).await.map_err(clash)?;
    Ok(Json(device_json(&device)).into_response())
}

async fn delete_device(
    State(app): State<App>,
    HordeCaller(caller): HordeCaller,
    Path((collection, device)): Path<(String, String)>,
) -> HordeResult {
    let (device, permit) = device_for(&app, &caller, Action::Write, &collection, &device).await?;
    app.data.delete_device(&permit, &device).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn delete_device_tag(
    State(app): State<App>,
    HordeCaller(caller): HordeCaller,
    Path((collection, device, name)): Path<(String, String, String)>,
) -> HordeResult {
    let (mut device, permit) = device_for(&app, &caller, Action::Write, &collection, &device).await?;
    device.tags.remove(&name.to_lowercase());
    app.data.update_device(&permit, &device).await.map_err(clash)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `since`, `until` (ms; 0 or absent means open) and `limit` (0 or absent means the default).
fn data_window(query: &QueryParams) -> Result<(TimeRange, u64), AppError> {
    let since = query.integer_in("since", 0, i64::MAX)?.filter(|since| *since > 0).unwrap_or(i64::MIN);
    let until = query.integer_in("until", 0, i64::MAX)?.filter(|until| *until > 0).unwrap_or(i64::MAX);
    let limit = query.integer_in("limit", 0, MAX_DATA_LIMIT)?.filter(|limit| *limit > 0).unwrap_or(DEFAULT_DATA_LIMIT);
    Ok((TimeRange { start_ms: since, end_ms: until }, limit as u64))
}

/// The readings under a read permit for a collection or a device, as Horde's messages.
async fn messages(app: &App, permit: &Permit, devices: Vec<Device>, query: &QueryParams) -> HordeResult {
    let (range, limit) = data_window(query)?;
    let readings = app.data.readings_under(permit, range, limit).await?;
    let devices: HashMap<DeviceId, Device> = devices.into_iter().map(|device| (device.id, device)).collect();
    let messages: Vec<Json_> = readings
        .iter()
        .filter_map(|(device, reading)| devices.get(device).map(|device| message_json(device, reading)))
        .collect();
    Ok(Json(json!({ "messages": messages })).into_response())
}

async fn collection_data(
    State(app): State<App>,
    HordeCaller(caller): HordeCaller,
    Path(collection): Path<String>,
    query: QueryParams,
) -> HordeResult {
    let (collection, permit) = collection_for(&app, &caller, Action::Read, &collection).await?;
    let devices = app.data.list_devices(&caller, &DeviceFilter::collection(collection.id), Page::ALL).await?;
    messages(&app, &permit, devices.items, &query).await
}

async fn device_data(
    State(app): State<App>,
    HordeCaller(caller): HordeCaller,
    Path((collection, device)): Path<(String, String)>,
    query: QueryParams,
) -> HordeResult {
    let (device, permit) = device_for(&app, &caller, Action::Read, &collection, &device).await?;
    messages(&app, &permit, vec![device], &query).await
}

/// `{"port", "payload"}` of a message to a device. Public (re-exported by `horde`) for the fuzz targets and
/// property tests.
pub fn downlink_body(document: &Json_) -> Result<(u16, Vec<u8>), AppError> {
    let port = match document.get("port").and_then(Json_::as_u64) {
        Some(port) if port <= u64::from(u16::MAX) => port as u16,
        _ => return Err(AppError::BadRequest("'port' is required: a number from 0 to 65535".into())),
    };
    let payload = match document.get("payload") {
        Some(Json_::String(text)) => {
            BASE64.decode(text).map_err(|_| AppError::BadRequest("'payload' must be base64".into()))?
        }
        None | Some(Json_::Null) => Vec::new(),
        Some(_) => return Err(AppError::BadRequest("'payload' must be a base64 string".into())),
    };
    Ok((port, payload))
}

fn downlink(device: &Device, port: u16, payload: Vec<u8>) -> Downlink {
    Downlink {
        id: new_id(),
        account: device.account,
        device: device.id,
        port,
        payload,
        created_at_ms: now_ms(),
        delivered_at_ms: None,
    }
}

/// `POST /collections/{id}/devices/{id}/to`: queues a message for the device.
async fn send_to_device(
    State(app): State<App>,
    HordeCaller(caller): HordeCaller,
    Path((collection, device)): Path<(String, String)>,
    body: Result<Bytes, BytesRejection>,
) -> HordeResult {
    let (port, payload) = downlink_body(&document(body)?)?;
    let (device, permit) = device_for(&app, &caller, Action::Write, &collection, &device).await?;
    app.data.queue_downlink(&permit, &downlink(&device, port, payload)).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `POST /collections/{id}/to`: queues a message for every device of the collection.
async fn broadcast(
    State(app): State<App>,
    HordeCaller(caller): HordeCaller,
    Path(collection): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> HordeResult {
    let (port, payload) = downlink_body(&document(body)?)?;
    let (collection, _) = collection_for(&app, &caller, Action::Write, &collection).await?;
    let devices = app.data.list_devices(&caller, &DeviceFilter::collection(collection.id), Page::ALL).await?;
    let (mut sent, mut errors) = (0, Vec::new());
    for device in &devices.items {
        let outcome = match caller.authorize(Action::Write, &device_target(device)) {
            Ok(permit) => app.data.queue_downlink(&permit, &downlink(device, port, payload.clone())).await,
            Err(denial) => Err(AppError::Denied(denial)),
        };
        match outcome {
            Ok(()) => sent += 1,
            Err(error) => errors.push(json!({"deviceId": device.id.to_string(), "message": error.to_string()})),
        }
    }
    Ok(Json(json!({"sent": sent, "failed": errors.len(), "errors": errors})).into_response())
}
