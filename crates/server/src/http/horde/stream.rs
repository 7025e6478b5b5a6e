//! `/collections/{id}/from` and `/collections/{id}/devices/{id}/from`: WebSockets streaming each new reading of
//! the collection or device as a Horde message, and `{"type": "keepAlive"}` after 30 s without one. The token
//! comes in `X-API-Token` (or `Authorization: Bearer`), or in the `api_token` query parameter, which only a
//! read-only token may use. The caller is judged again at a change to its token or its creator's reach and at
//! its expiry (`RecheckSchedule`), so a revoked token is cut off. What the client sends is read only for its
//! control frames: a message or frame over `websocket_max_message_size` closes the socket (1008), so nothing a
//! client sends is buffered beyond that.

use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade, close_code};
use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::response::Response;
use serde_json::json;
use tessera_core::{Action, DeviceId};
use tokio::time::Instant;

use super::collections::{device_for, message_json};
use super::{HordeError, HordeResult};
use crate::app::{App, AppError};
use crate::http::QueryParams;
use crate::http::listed::ListedRouter;
use crate::tokens::{Caller, VerifyError};

const KEEP_ALIVE_AFTER: Duration = Duration::from_secs(30);
/// A socket's read buffer: what a client sends here is a ping or a close, a few bytes.
const READ_BUFFER: usize = 4 * 1024;

pub fn routes() -> ListedRouter<App> {
    ListedRouter::new()
        .get("/collections/{collection}/from", "A collection's messages as they arrive (WebSocket)", collection_stream)
        .get(
            "/collections/{collection}/devices/{device}/from",
            "A device's messages as they arrive (WebSocket)",
            device_stream,
        )
}

/// The stream's caller.
struct StreamCaller(Caller);

impl FromRequestParts<App> for StreamCaller {
    type Rejection = HordeError;

    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<StreamCaller, HordeError> {
        if let Some(secret) = crate::http::api_token_or_bearer(&parts.headers) {
            let caller = app.tokens.verify(secret, crate::http::peer_address(parts)).await.map_err(AppError::from)?;
            return Ok(StreamCaller(caller));
        }
        let query = QueryParams::from_request_parts(parts, app).await.unwrap_or_default();
        let Some(secret) = query.text("api_token").map(|secret| secret.trim().to_owned()) else {
            return Err(AppError::Unauthenticated(VerifyError::Missing).into());
        };
        let presentation = tessera_core::Presentation::InUrl(tessera_core::Action::Read);
        Ok(StreamCaller(
            app.tokens
                .verify_presented(&secret, presentation, crate::http::peer_address(parts))
                .await
                .map_err(AppError::from)?,
        ))
    }
}

/// Which readings a stream carries.
#[derive(Debug, Clone, Copy)]
enum Stream {
    Collection(tessera_core::CollectionId),
    Device(DeviceId),
}

async fn collection_stream(
    State(app): State<App>,
    StreamCaller(caller): StreamCaller,
    Path(collection): Path<String>,
    upgrade: WebSocketUpgrade,
) -> HordeResult {
    let collection = collection.parse().map_err(|_| AppError::NotFound("collection"))?;
    app.data.collection(&caller, Action::Read, collection).await?;
    Ok(start(upgrade, app, caller, Stream::Collection(collection)))
}

async fn device_stream(
    State(app): State<App>,
    StreamCaller(caller): StreamCaller,
    Path((collection, device)): Path<(String, String)>,
    upgrade: WebSocketUpgrade,
) -> HordeResult {
    let (device, _) = device_for(&app, &caller, Action::Read, &collection, &device).await?;
    Ok(start(upgrade, app, caller, Stream::Device(device.id)))
}

fn start(upgrade: WebSocketUpgrade, app: App, caller: Caller, stream: Stream) -> Response {
    // The stream reads nothing from the client but control frames; without a bound, the fragments of one
    // unfinished message were buffered up to 64 MiB (four of 15 MB grew the server by 122 MB).
    let largest = app.config.websocket_max_message_size;
    upgrade
        .max_message_size(largest)
        .max_frame_size(largest)
        // Allocated up front for every socket (128 KiB by default), and grown only for a larger frame.
        .read_buffer_size(largest.min(READ_BUFFER))
        .on_upgrade(move |socket| serve(socket, app, caller, stream))
}

async fn serve(mut socket: WebSocket, app: App, mut caller: Caller, stream: Stream) {
    let mut subscription = app.hub.subscribe(crate::hub::Consumer::HordeStream);
    let mut keep_alive_at = Instant::now() + KEEP_ALIVE_AFTER;
    let mut recheck = app.tokens.recheck_schedule(&caller);
    loop {
        tokio::select! {
            live = subscription.next() => {
                let Some(live) = live else { break };
                let wanted = match stream {
                    Stream::Collection(collection) => live.collection == collection,
                    Stream::Device(device) => live.device == device,
                };
                if !wanted || live.account != caller.account() {
                    continue;
                }
                // Readable or not is decided from the ids the reading carries, before its device is looked up.
                let target = tessera_core::Target::device(live.account, live.collection, live.device);
                if caller.authorize(Action::Read, &target).is_err() {
                    continue;
                }
                // From the node's shared descriptions, current as of the device's last change.
                let Some(device) = app.data.live_device(live.account, live.device).await else { continue };
                let text = message_json(&device, &live.reading).to_string();
                if socket.send(Message::Text(text.into())).await.is_err() {
                    break;
                }
                keep_alive_at = Instant::now() + KEEP_ALIVE_AFTER;
            }
            _ = tokio::time::sleep_until(keep_alive_at) => {
                let text = json!({"type": "keepAlive"}).to_string();
                if socket.send(Message::Text(text.into())).await.is_err() {
                    break;
                }
                keep_alive_at = Instant::now() + KEEP_ALIVE_AFTER;
            }
            _ = recheck.due(&caller) => {
                // Revoked, expired, or its creator's reach changed: judge the stream again.
                match app.tokens.reverify(&caller).await {
                    Some(fresh) => caller = fresh,
                    None => {
                        let _ = socket.send(Message::Close(None)).await;
                        break;
                    }
                }
            }
            incoming = socket.recv() => match incoming {
                None | Some(Ok(Message::Close(_))) => break,
                Some(Err(error)) => {
                    // Most often a message or frame over the limit (or not WebSocket at all): say so, and close.
                    tracing::debug!(%error, "closing a /from stream on what its client sent");
                    let refusal = CloseFrame { code: close_code::POLICY, reason: "only control frames are read here".into() };
                    let _ = socket.send(Message::Close(Some(refusal))).await;
                    break;
                }
                Some(Ok(_)) => {}
            },
        }
    }
}
