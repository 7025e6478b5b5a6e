//! Several nodes on one database: what a node must tell the others so that nothing a user sees depends on which
//! node answers. Each node keeps caches (tokens, creators' reach, devices and variables by label) and live
//! consumers (MQTT, WebSockets, SSE); a change made on one node reaches the others as a [`Change`] over the
//! database's event channel (PostgreSQL LISTEN/NOTIFY), and each node applies it as if it had made it.
//!
//! Invariants:
//! - A change is told only after the store committed it, so a node that drops a cache entry on hearing it reads
//!   the new state when it goes back to the store.
//! - A node ignores its own changes (it applied them before telling).
//! - When the event connection drops, the node cannot know what it missed: it empties every cache when the
//!   connection is lost and again when it is back, and `/readyz` answers 503 in between.
//! - On SQLite there is one node, and [`Peers::none`] tells nobody.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tessera_core::{AccountId, CollectionId, DeviceId, Label, SecretDigest, TokenId, UserId, VariableId};
use tessera_store::{Creator, ListenEvent, PostgresEvents, PostgresListener};
use tokio::sync::{mpsc, watch};

use crate::data::DataService;
use crate::hub::{Hub, LiveCommand};
pub use crate::peers::{Change, Peers, WireCommand, WireCreator, WireReading};
use crate::peers::{Envelope, LIVE_QUEUE, Link, unhex};
use crate::time::now_ms;
use crate::tokens::TokenService;

/// Live data (readings, commands) is given up after this many failed attempts: consumers can read it from the
/// store. Cache invalidations are never given up while the node runs, since a node that misses one would keep
/// trusting a revoked token.
const LIVE_DATA_ATTEMPTS: u32 = 20;
const PUBLISH_RETRY: Duration = Duration::from_millis(250);
const SHUTDOWN_PUBLISH_LIMIT: Duration = Duration::from_secs(10);

/// Connects a node to the others: starts listening (before the node serves, so no change made after it starts
/// serving is missed) and returns the peers handle with the task that publishes what the node tells.
pub async fn join(events: PostgresEvents) -> Result<(Peers, Joined), tessera_store::StoreError> {
    let listener = events.listen().await?;
    let (live, live_queue) = mpsc::channel(LIVE_QUEUE);
    let origin = u64::from_le_bytes(crate::entropy::random_bytes::<8>());
    let link = Arc::new(Link {
        origin,
        live,
        live_dropped: AtomicU64::new(0),
        listening: AtomicBool::new(true),
        figures: Default::default(),
    });
    let queues = Queues { live: live_queue };
    Ok((Peers { link: Some(link.clone()) }, Joined { link, listener, events, queues }))
}

/// A node connected to the others, waiting for the parts that apply what it hears.
#[derive(Debug)]
pub struct Joined {
    link: Arc<Link>,
    listener: PostgresListener,
    events: PostgresEvents,
    queues: Queues,
}

/// The receiving ends of a node's two outgoing queues.
#[derive(Debug)]
struct Queues {
    live: mpsc::Receiver<Change>,
}

/// The parts of a node that hear changes.
#[derive(Debug, Clone)]
pub struct Hearers {
    pub tokens: Arc<TokenService>,
    pub data: Arc<DataService>,
    pub hub: Arc<Hub>,
}

impl Joined {
    /// Publishes what this node tells and applies what the others tell, until `stop`; then publishes what is
    /// still queued and returns. Stop it after the last change was told (the writer's last commit).
    pub async fn run(self, hearers: Hearers, mut stop: watch::Receiver<bool>) {
        let Joined { link, mut listener, events, queues } = self;
        let publisher = tokio::spawn(publish(events, link.clone(), queues, stop.clone()));
        loop {
            let event = tokio::select! {
                event = listener.next() => event,
                _ = stop.changed() => break,
            };
            match event {
                ListenEvent::Payload(payload) => match serde_json::from_str::<Envelope>(&payload) {
                    Ok(envelope) if envelope.origin == link.origin => {}
                    Ok(envelope) => {
                        link.figures.heard.inc();
                        apply(&hearers, envelope.change)
                    }
                    Err(error) => {
                        tracing::warn!(%error, "an event this version does not understand; reloading caches");
                        forget_everything(&hearers);
                    }
                },
                ListenEvent::Unreachable => {
                    if link.listening.swap(false, Ordering::SeqCst) {
                        link.figures.disconnections.inc();
                        link.figures.missed.inc();
                        tracing::warn!("lost touch with the other nodes; caches emptied until the database is back");
                        forget_everything(&hearers);
                    }
                }
                ListenEvent::Reconnected => {
                    tracing::info!("back in touch with the other nodes; reloading caches");
                    forget_everything(&hearers);
                    link.listening.store(true, Ordering::SeqCst);
                }
                ListenEvent::Missed => {
                    link.figures.missed.inc();
                    forget_everything(&hearers)
                }
            }
        }
        // The queue is closed; what is in it goes out, unless the database is gone: then give up after a while
        // rather than hold the shutdown (the other nodes lose their connection too and empty their caches).
        let mut publisher = publisher;
        if tokio::time::timeout(SHUTDOWN_PUBLISH_LIMIT, &mut publisher).await.is_err() {
            publisher.abort();
            tracing::warn!("stopped before telling the other nodes every change: the database does not answer");
        }
    }
}

async fn publish(events: PostgresEvents, link: Arc<Link>, mut queues: Queues, mut stop: watch::Receiver<bool>) {
    let origin = link.origin;
    let mut stopping = false;
    loop {
        let change = tokio::select! {
            biased;
            Some(change) = queues.live.recv() => change,
            // Take nothing new, send what is queued, then end (`recv` answers `None` once a queue is empty).
            _ = stop.changed(), if !stopping => {
                stopping = true;
                queues.live.close();
                continue;
            }
            else => break,
        };
        let give_up_after = match change {
            Change::Readings { .. } | Change::Command { .. } => Some(LIVE_DATA_ATTEMPTS),
            _ => None,
        };
        let payload = match serde_json::to_string(&Envelope { origin, change }) {
            Ok(payload) => payload,
            Err(error) => {
                tracing::error!(%error, "a change could not be encoded");
                continue;
            }
        };
        let mut attempt = 1;
        loop {
            let Err(error) = events.publish(&payload, now_ms()).await else {
                link.figures.sent.inc();
                break;
            };
            if give_up_after == Some(attempt) {
                tracing::error!(?error, "could not pass live data on to the other nodes; giving up on it");
                link.figures.given_up.inc();
                break;
            }
            if attempt == 1 {
                tracing::warn!(?error, "cannot tell the other nodes of a change yet; retrying");
            }
            attempt += 1;
            tokio::time::sleep(PUBLISH_RETRY).await;
        }
    }
}

/// The node missed changes it cannot name: everything cached may be stale.
fn forget_everything(hearers: &Hearers) {
    hearers.tokens.forget_everything();
    hearers.data.forget_everything();
}

fn apply(hearers: &Hearers, change: Change) {
    match change {
        Change::Token { id, digest } => match unhex(&digest) {
            Some(digest) => hearers.tokens.forget_here(TokenId::from_i64(id), &SecretDigest(digest)),
            None => hearers.tokens.forget_everything(),
        },
        Change::Reach { creator } => hearers.tokens.reach_changed_here(match creator {
            WireCreator::System => Creator::System,
            WireCreator::Token(id) => Creator::Token(TokenId::from_i64(id)),
            WireCreator::User(id) => Creator::User(UserId::from_i64(id)),
        }),
        Change::Device { account, id, label } => match Label::parse(&label) {
            Ok(label) => {
                hearers.data.device_changed_here(AccountId::from_i64(account), id.map(DeviceId::from_i64), label)
            }
            Err(_) => hearers.data.forget_everything(),
        },
        Change::Variable { device, id, label } => match Label::parse(&label) {
            Ok(label) => {
                hearers.data.variable_changed_here(DeviceId::from_i64(device), id.map(VariableId::from_i64), label)
            }
            Err(_) => hearers.data.forget_everything(),
        },
        Change::Readings { readings } => {
            hearers.hub.publish_here(readings.into_iter().filter_map(WireReading::into_live));
        }
        Change::Command { command } => hearers.hub.command_here(LiveCommand {
            account: AccountId::from_i64(command.account),
            collection: CollectionId::from_i64(command.collection),
            device: DeviceId::from_i64(command.device),
            variable: VariableId::from_i64(command.variable),
            value: command.value,
            at_ms: command.at,
        }),
    }
}

#[cfg(test)]
mod tests {
    use tessera_core::Id;

    use super::*;
    use crate::hub::LiveReading;
    use crate::peers::hex;
    use tessera_core::{Reading, Value};

    #[test]
    fn live_data_waiting_for_the_other_nodes_is_bounded_and_invalidations_are_never_queued() {
        let (live, mut live_queue) = mpsc::channel(LIVE_QUEUE);
        let link = Link {
            origin: 1,
            live,
            live_dropped: AtomicU64::new(0),
            listening: AtomicBool::new(true),
            figures: Default::default(),
        };
        let peers = Peers { link: Some(Arc::new(link)) };
        for _ in 0..LIVE_QUEUE + 10 {
            peers.tell(Change::readings(&[]));
            peers.tell(Change::token(TokenId(Id::from_i64(7)), &SecretDigest([0; 32])));
        }
        let link = peers.link.as_ref().unwrap();
        assert_eq!(link.live_dropped.load(Ordering::Relaxed), 10);
        let mut waiting = Vec::new();
        while let Ok(change) = live_queue.try_recv() {
            waiting.push(change);
        }
        assert_eq!(waiting.len(), LIVE_QUEUE);
        assert!(waiting.iter().all(|change| matches!(change, Change::Readings { .. })), "only live data queued");
    }

    #[test]
    fn changes_survive_the_wire() {
        let live = LiveReading {
            account: AccountId(Id::from_i64(1)),
            collection: CollectionId(Id::from_i64(2)),
            device: DeviceId(Id::from_i64(3)),
            reading: Reading {
                variable: VariableId(Id::from_i64(4)),
                timestamp_ms: 5,
                value: Value::Bytes(vec![0, 255]),
                context: serde_json::from_str(r#"{"a":1}"#).unwrap(),
                received_at_ms: 6,
            },
        };
        let changes = [
            Change::readings(std::slice::from_ref(&live)),
            Change::token(TokenId(Id::from_i64(7)), &SecretDigest([0xab; 32])),
            Change::reach(Creator::User(UserId(Id::from_i64(8)))),
        ];
        for change in changes {
            let text = serde_json::to_string(&Envelope { origin: 9, change: change.clone() }).unwrap();
            let back: Envelope = serde_json::from_str(&text).unwrap();
            assert_eq!((back.origin, &back.change), (9, &change));
        }
        let Change::Readings { readings } = Change::readings(std::slice::from_ref(&live)) else { unreachable!() };
        assert_eq!(readings.into_iter().next().unwrap().into_live(), Some(live));
        assert_eq!(unhex(&hex(&[0x0f; 32])), Some([0x0f; 32]));
        assert_eq!(unhex("zz"), None);
    }

    /// The store writes the invalidations it sends inside transactions (`tessera_store::Invalidation`); every node
    /// must read them as the changes they are.
    #[test]
    fn the_stores_invalidations_read_as_changes() {
        use tessera_store::Invalidation;
        let label = Label::parse("meter").unwrap();
        let cases = [
            (
                Invalidation::Token { id: TokenId(Id::from_i64(7)), digest: SecretDigest([0xab; 32]) },
                Change::token(TokenId(Id::from_i64(7)), &SecretDigest([0xab; 32])),
            ),
            (
                Invalidation::Reach(Creator::User(UserId(Id::from_i64(8)))),
                Change::reach(Creator::User(UserId(Id::from_i64(8)))),
            ),
            (
                Invalidation::Device {
                    account: AccountId(Id::from_i64(1)),
                    id: DeviceId(Id::from_i64(2)),
                    label: label.clone(),
                },
                Change::Device { account: 1, id: Some(2), label: "meter".into() },
            ),
            (
                Invalidation::Variable { device: DeviceId(Id::from_i64(3)), id: VariableId(Id::from_i64(4)), label },
                Change::Variable { device: 3, id: Some(4), label: "meter".into() },
            ),
        ];
        for (invalidation, change) in cases {
            let envelope: Envelope = serde_json::from_str(&invalidation.payload()).unwrap();
            assert_eq!((envelope.origin, envelope.change), (0, change), "{invalidation:?}");
        }
        // An older node names no id: the change still reads, and every live description goes.
        let older: Envelope =
            serde_json::from_str(r#"{"origin":0,"change":"device","account":1,"label":"meter"}"#).unwrap();
        assert_eq!(older.change, Change::Device { account: 1, id: None, label: "meter".into() });
    }
}
