//! A device's page: its variables with their last values (live), a chart of a variable over a chosen range, a
//! CSV export of a range, its device tokens, and deleting it. The chart's data is aggregated by the store into at
//! most `CHART_BUCKETS` buckets (min, max and mean each), so a week of one reading a second is 600 points to
//! draw, not 604 800.

use askama::Template;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use futures_util::stream;
use serde_json::json;
use tessera_core::{Action, DeviceId, Rights, Scope, TokenKind, Value, VariableId};
use tessera_store::{Page, TimeRange, TokenSelection};

use super::collections::data_failure;
use super::format::{self, Chrome, FormState, TokenRow};
use super::session::{Form, Signed, SignedIn};
use super::tokens::{Shown, expiry_from_form, mint_and_show, token_notice, token_rows};
use super::{Failure, PREFIX, PageResult, render_with, see_other};
use crate::app::{App, AppError};
use crate::http::QueryParams;
use crate::time::now_ms;
use crate::tokens::NewToken;

/// How many buckets a chart asks the store for, whatever its range: about one per two pixels of a wide chart.
const CHART_BUCKETS: i64 = 600;
/// The longest range a chart or an export covers.
const MAX_RANGE_MS: i64 = 400 * 86_400_000;
/// Readings read from the store per query of an export.
const EXPORT_CHUNK: u64 = 10_000;

#[derive(Debug, Clone)]
struct VariableRow {
    id: String,
    label: String,
    name: String,
    unit: String,
    kind: String,
    last_value: String,
    last_at: String,
    last_at_machine: String,
    numeric: bool,
}

#[derive(Debug, Template)]
#[template(path = "console/device.html")]
struct DevicePage {
    chrome: Chrome,
    id: String,
    label: String,
    name: String,
    collection_id: String,
    collection_name: String,
    created: String,
    last_seen: String,
    last_seen_machine: String,
    can_write: bool,
    variables: Vec<VariableRow>,
    tokens: Vec<TokenRow>,
    tokens_note: String,
    back: String,
    notice: String,
    form: FormState,
}

fn device_id(text: &str) -> Result<DeviceId, Failure> {
    text.parse().map_err(|_| Failure::App(AppError::NotFound("device")))
}

async fn device_page(app: &App, signed: &SignedIn, id: DeviceId, notice: String, form: FormState) -> PageResult {
    let caller = &signed.caller;
    let (device, _) = app.data.device_as_of_now(caller, id).await?;
    let user = app.people.user_of(&signed.caller).await?;
    let chrome = Chrome::for_user(&user, signed, "collections");
    let collection_name = match app.data.collection(caller, Action::Read, device.collection).await {
        Ok((collection, _)) => collection.name,
        Err(_) => device.collection.to_string(),
    };
    let variables = app
        .data
        .variables_with_last(caller, &[id])
        .await?
        .into_iter()
        .map(|(variable, last)| VariableRow {
            id: variable.id.to_string(),
            label: variable.label.to_string(),
            name: variable.name.clone(),
            unit: variable.unit.clone(),
            kind: variable.kind.clone(),
            last_value: last.as_ref().map(|reading| format::value_text(&reading.value)).unwrap_or_else(|| "–".into()),
            last_at: last.as_ref().map(|reading| format::when(reading.timestamp_ms)).unwrap_or_default(),
            last_at_machine: last
                .as_ref()
                .map(|reading| format::machine_time(reading.timestamp_ms))
                .unwrap_or_default(),
            // A variable with no reading yet may still get numbers: offer its chart.
            numeric: last.as_ref().is_none_or(|reading| matches!(reading.value, Value::Number(_))),
        })
        .collect();
    let names = format::names_for(app, signed, &user).await;
    let (tokens, tokens_note) = match token_rows(app, signed, Some(Scope::Device(id)), Default::default(), &names).await
    {
        Ok(table) => table,
        Err(error) => (Vec::new(), super::explain(&error)),
    };
    let status = form.status();
    render_with(
        status,
        DevicePage {
            chrome,
            id: id.to_string(),
            label: device.label.to_string(),
            name: device.name.clone(),
            collection_id: device.collection.to_string(),
            collection_name,
            created: format::when(device.created_at_ms),
            last_seen: device.last_seen_at_ms.map(format::when).unwrap_or_else(|| "never".into()),
            last_seen_machine: device.last_seen_at_ms.map(format::machine_time).unwrap_or_default(),
            can_write: caller.authorize(Action::Write, &crate::data::device_target(&device)).is_ok(),
            variables,
            tokens,
            tokens_note,
            back: format!("{PREFIX}/devices/{id}"),
            notice,
            form,
        },
    )
}

pub(super) async fn page(
    State(app): State<App>,
    Signed(signed): Signed,
    Path(id): Path<String>,
    query: QueryParams,
) -> PageResult {
    device_page(&app, &signed, device_id(&id)?, token_notice(&query), FormState::default()).await
}

/// The device's page shown again after one of its forms failed.
pub(super) async fn form_again(app: &App, signed: &SignedIn, id: DeviceId, form: FormState) -> PageResult {
    device_page(app, signed, id, String::new(), form).await
}

/// `POST /console/devices/{id}/tokens/revoke`: every token of the device that the visitor manages, revoked at
/// once (`TokenService::revoke_selection` judges each); the page says how many.
pub(super) async fn revoke_tokens(
    State(app): State<App>,
    Signed(signed): Signed,
    Path(id): Path<String>,
) -> PageResult {
    let id = device_id(&id)?;
    app.data.device_by_id(&signed.caller, Action::Read, id).await?;
    let selection = TokenSelection { device: Some(id), ..TokenSelection::default() };
    match app.tokens.revoke_selection(&signed.caller, selection).await.map_err(AppError::from) {
        Ok(count) => Ok(see_other(format!("{PREFIX}/devices/{id}?done=tokens-revoked&count={count}"))),
        Err(error @ (AppError::Denied(_) | AppError::BadRequest(_) | AppError::NotFound(_))) => {
            form_again(&app, &signed, id, FormState::failed("revoke", "tokens", super::explain(&error))).await
        }
        Err(other) => Err(other.into()),
    }
}

pub(super) async fn delete(State(app): State<App>, Signed(signed): Signed, Path(id): Path<String>) -> PageResult {
    let (device, permit) = app.data.device_by_id(&signed.caller, Action::Write, device_id(&id)?).await?;
    app.data.delete_device(&permit, &device).await?;
    Ok(see_other(format!("{PREFIX}/collections/{}?done=device-deleted", device.collection)))
}

pub(super) async fn create_token(
    State(app): State<App>,
    Signed(signed): Signed,
    Path(id): Path<String>,
    form: Form,
) -> PageResult {
    let id = device_id(&id)?;
    let (device, _) = app.data.device_by_id(&signed.caller, Action::Read, id).await?;
    let name = form.trimmed("name");
    let failed = |field, message: String| {
        FormState::failed("token", field, message).keep("name", name).keep("expires_days", form.trimmed("expires_days"))
    };
    if name.chars().count() > 200 {
        return device_page(
            &app,
            &signed,
            id,
            String::new(),
            failed("name", "A name has at most 200 characters.".into()),
        )
        .await;
    }
    let expires_at_ms = match expiry_from_form(&form) {
        Ok(expiry) => expiry,
        Err(message) => return device_page(&app, &signed, id, String::new(), failed("expires_days", message)).await,
    };
    let new = NewToken::new(TokenKind::Device, Scope::Device(id), Rights::ReadWrite, name.to_owned(), expires_at_ms);
    let shown = Shown {
        section: "collections",
        scope: format!("device {}", device.label),
        back: format!("{PREFIX}/devices/{id}"),
        back_label: format!("Back to {}", device.label),
    };
    match mint_and_show(&app, &signed, new, shown).await? {
        Ok(page) => Ok(page),
        Err(refusal) => device_page(&app, &signed, id, String::new(), failed("name", refusal)).await,
    }
}

/// The range a chart or an export asks for: `from` and `to` in ms since the epoch (a day up to now by default).
fn range_of(query: &QueryParams) -> Result<TimeRange, AppError> {
    let now = now_ms();
    let lowest = tessera_core::time::EARLIEST_MS;
    let highest = tessera_core::time::LATEST_MS;
    let end_ms = query.integer_in("to", lowest, highest)?.unwrap_or(now);
    let start_ms = query.integer_in("from", lowest, highest)?.unwrap_or((end_ms - 86_400_000).max(lowest));
    if start_ms >= end_ms {
        return Err(AppError::BadRequest("'from' must be before 'to'".into()));
    }
    // What a request may make the store scan is bounded: a chart or an export of up to this long.
    if end_ms - start_ms > MAX_RANGE_MS {
        return Err(AppError::BadRequest(format!("a range covers at most {} days", MAX_RANGE_MS / 86_400_000)));
    }
    Ok(TimeRange { start_ms, end_ms })
}

fn variable_id(text: &str) -> Result<VariableId, AppError> {
    text.parse().map_err(|_| AppError::NotFound("variable"))
}

/// `GET /console/variables/{id}/series?from&to`: the chart's points, `[start, min, max, mean, count]` per bucket.
pub(super) async fn series(
    State(app): State<App>,
    Signed(signed): Signed,
    Path(id): Path<String>,
    query: QueryParams,
) -> Response {
    let answer = async {
        let range = range_of(&query)?;
        let (variable, permit) = app.data.variable_by_id(&signed.caller, Action::Read, variable_id(&id)?).await?;
        let span = range.end_ms - range.start_ms;
        let bucket_ms = (span + CHART_BUCKETS - 1) / CHART_BUCKETS;
        let buckets = app.data.reading_buckets(&permit, &variable, range, bucket_ms.max(1)).await?;
        let points: Vec<serde_json::Value> = buckets
            .iter()
            .map(|bucket| json!([bucket.start_ms, bucket.min, bucket.max, bucket.mean, bucket.count]))
            .collect();
        Ok::<_, AppError>(json!({
            "variable": variable.label.to_string(),
            "unit": variable.unit,
            "from": range.start_ms,
            "to": range.end_ms,
            "bucket_ms": bucket_ms.max(1),
            "points": points,
        }))
    };
    match answer.await {
        Ok(body) => axum::Json(body).into_response(),
        Err(error) => data_failure(error),
    }
}

/// A CSV field: quoted when it holds a separator, a quote or a line break.
fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) { format!("\"{}\"", text.replace('"', "\"\"")) } else { text.to_owned() }
}

fn csv_line(reading: &tessera_core::Reading) -> String {
    let value = match &reading.value {
        Value::Number(number) => number.to_string(),
        Value::Json(json) => json.to_string(),
        Value::Bytes(bytes) => base64::Engine::encode(&base64::engine::general_purpose::STANDARD, bytes),
    };
    let context = if reading.context.is_empty() {
        String::new()
    } else {
        serde_json::Value::Object(reading.context.clone()).to_string()
    };
    format!(
        "{},{},{},{}\n",
        crate::time::rfc3339(reading.timestamp_ms),
        reading.timestamp_ms,
        csv_field(&value),
        csv_field(&context)
    )
}

/// `GET /console/variables/{id}/export.csv?from&to`: every reading of the range, newest first, streamed a chunk
/// at a time (each chunk ends where the last one stopped, so memory stays bounded whatever the range).
pub(super) async fn export(
    State(app): State<App>,
    Signed(signed): Signed,
    Path(id): Path<String>,
    query: QueryParams,
) -> PageResult {
    let range = range_of(&query)?;
    let (variable, permit) = app.data.variable_by_id(&signed.caller, Action::Read, variable_id(&id)?).await?;
    let device_label = match app.data.device_by_id(&signed.caller, Action::Read, variable.device).await {
        Ok((device, _)) => device.label.to_string(),
        Err(_) => variable.device.to_string(),
    };
    let filename = format!("{device_label}-{}-{}-{}.csv", variable.label, range.start_ms, range.end_ms);
    struct Cursor {
        app: App,
        permit: tessera_core::Permit,
        variable: tessera_store::Variable,
        range: Option<TimeRange>,
        header: bool,
    }
    let cursor = Cursor { app, permit, variable, range: Some(range), header: true };
    let body = stream::unfold(cursor, |mut cursor| async move {
        if cursor.header {
            cursor.header = false;
            return Some((Ok::<_, std::io::Error>("time,timestamp_ms,value,context\n".to_owned()), cursor));
        }
        let range = cursor.range?;
        let page = Page { number: 1, size: EXPORT_CHUNK };
        match cursor.app.data.readings(&cursor.permit, &cursor.variable, range, page).await {
            Ok(chunk) => {
                let oldest = chunk.items.last().map(|reading| reading.timestamp_ms);
                cursor.range = match oldest {
                    Some(oldest) if chunk.items.len() as u64 == EXPORT_CHUNK && oldest > range.start_ms => {
                        Some(TimeRange { start_ms: range.start_ms, end_ms: oldest - 1 })
                    }
                    _ => None,
                };
                let text: String = chunk.items.iter().map(csv_line).collect();
                Some((Ok(text), cursor))
            }
            Err(error) => {
                tracing::warn!(error = ?error, "a console export stopped: the readings could not be read");
                Some((Err(std::io::Error::other("the readings could not be read")), Cursor { range: None, ..cursor }))
            }
        }
    });
    let mut response = Body::from_stream(body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/csv; charset=utf-8"));
    if let Ok(disposition) = HeaderValue::from_str(&format!("attachment; filename=\"{filename}\"")) {
        headers.insert(header::CONTENT_DISPOSITION, disposition);
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_are_quoted_only_when_needed() {
        assert_eq!(csv_field("21.5"), "21.5");
        assert_eq!(csv_field("{\"a\":1,\"b\":2}"), "\"{\"\"a\"\":1,\"\"b\"\":2}\"");
        assert_eq!(csv_field("two\nlines"), "\"two\nlines\"");
    }

    #[test]
    fn a_range_is_read_checked() {
        let query = |pairs: &[(&str, &str)]| {
            QueryParams(pairs.iter().map(|(name, value)| ((*name).into(), (*value).into())).collect())
        };
        let range = range_of(&query(&[("from", "1000"), ("to", "2000")])).unwrap();
        assert_eq!((range.start_ms, range.end_ms), (1000, 2000));
        assert!(range_of(&query(&[("from", "2000"), ("to", "1000")])).is_err());
        assert!(range_of(&query(&[("from", "x")])).is_err());
        assert!(range_of(&query(&[("to", "-5")])).is_err(), "before 1970 is outside the kept range");
        assert!(range_of(&query(&[("from", "0"), ("to", "253402300799999")])).is_err(), "at most 400 days");
        let default = range_of(&query(&[])).unwrap();
        assert_eq!(default.end_ms - default.start_ms, 86_400_000);
    }
}
