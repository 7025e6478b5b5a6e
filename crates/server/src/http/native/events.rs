//! `GET /v1/collections/{id}/events`: Server-Sent Events, one `reading` event per new reading of the collection
//! that the caller may read, fed by the live hub; a comment line every 15 s keeps proxies from closing it. The
//! token is checked again at a change to it or its creator's reach and at its expiry, so a revoked one ends the
//! stream.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::response::IntoResponse;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::stream::{self, Stream};
use serde_json::json;
use tessera_core::{Action, CollectionId, Target};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::wire::IdText;
use super::{Bearer, NativeResult, Path, parse_id};
use crate::app::App;
use crate::time::rfc3339;
use crate::tokens::Caller;

pub fn routes() -> OpenApiRouter<App> {
    OpenApiRouter::new().routes(routes!(events))
}

/// New readings of a collection, as they arrive.
///
/// Server-Sent Events: one `reading` event per new reading the caller may read (its data a JSON object with
/// `collection`, `device`, `variable`, `timestamp` in milliseconds, `at`, `value` and `context`), and a comment
/// line every 15 s. The stream ends when the token stops working (checked again at every change and at its expiry).
#[utoipa::path(
    get, path = "/collections/{id}/events", tag = "events", operation_id = "collection_events",
    security(("bearer" = [])),
    params(("id" = IdText, Path, description = "The collection's id.")),
    responses(
        (status = 200, description = "The event stream; it does not end by itself.", content_type = "text/event-stream",
         body = String),
        (status = 403, description = "The credential may not read the collection."),
        (status = 404, description = "No such collection."),
    ),
)]
async fn events(State(app): State<App>, Bearer(caller): Bearer, Path(id): Path<String>) -> NativeResult {
    let collection: CollectionId = parse_id("collection", &id)?;
    app.data.collection(&caller, Action::Read, collection).await?;
    Ok(Sse::new(reading_events(app, caller, collection))
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response())
}

struct Follow {
    app: App,
    caller: Caller,
    collection: CollectionId,
    subscription: crate::hub::Subscription,
    recheck: crate::tokens::RecheckSchedule,
}

fn reading_events(app: App, caller: Caller, collection: CollectionId) -> impl Stream<Item = Result<Event, Infallible>> {
    let subscription = app.hub.subscribe(crate::hub::Consumer::Events);
    let recheck = app.tokens.recheck_schedule(&caller);
    let follow = Follow { app, caller, collection, subscription, recheck };
    stream::unfold(follow, |mut follow| async move {
        loop {
            tokio::select! {
                live = follow.subscription.next() => {
                    let live = live?;
                    if live.account != follow.caller.account() || live.collection != follow.collection {
                        continue;
                    }
                    let target = Target::device(live.account, live.collection, live.device);
                    if follow.caller.authorize(Action::Read, &target).is_err() {
                        continue;
                    }
                    let reading = &live.reading;
                    let data = json!({
                        "collection": live.collection.to_string(),
                        "device": live.device.to_string(),
                        "variable": reading.variable.to_string(),
                        "timestamp": reading.timestamp_ms,
                        "at": rfc3339(reading.timestamp_ms),
                        "value": reading.value.to_json(),
                        "context": reading.context,
                    });
                    let event = Event::default().event("reading").data(data.to_string());
                    return Some((Ok(event), follow));
                }
                _ = follow.recheck.due(&follow.caller) => {
                    // The caller's grant is judged again: revoked, expired, or its creator's reach changed.
                    let presented = follow.caller.record.id;
                    let still_live = follow.app.tokens.reverify(&follow.caller).await;
                    match still_live {
                        Some(fresh) => follow.caller = fresh,
                        None => {
                            tracing::debug!(token = %presented, "event stream closed: the token no longer works");
                            return None;
                        }
                    }
                }
            }
        }
    })
}
