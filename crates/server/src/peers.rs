//! What a node tells the other nodes, and the handle its parts tell through: [`Change`] and its wire form, and
//! [`Peers`], whose `tell` queues a committed change (live data, label invalidations) for `cluster.rs` to
//! publish. The services hold a `Peers`; `cluster.rs` holds the services (to apply what it hears), so this
//! module is the one both depend on and that depends on neither. Token and reach invalidations are not told here:
//! the store sends them inside the change's own transaction (`tessera_store::Invalidation`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::{Deserialize, Serialize};
use tessera_core::{AccountId, CollectionId, DeviceId, Reading, SecretDigest, TokenId, Value, VariableId};
use tessera_store::Creator;
use tokio::sync::mpsc;

use crate::live::{LiveCommand, LiveReading};

/// Batches of live data waiting to be told, at most (each at most one commit of the writer).
pub(crate) const LIVE_QUEUE: usize = 64;

/// A committed change other nodes must hear of.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "change", rename_all = "snake_case")]
pub enum Change {
    /// A token was revoked or its scope, rights or tags changed.
    Token { id: i64, digest: String },
    /// What a token creator reaches changed (membership, role).
    Reach { creator: WireCreator },
    /// A device was changed or deleted (its label may now name another device). `id` is absent from what an
    /// older version tells: then every live description goes.
    Device {
        account: i64,
        #[serde(default)]
        id: Option<i64>,
        label: String,
    },
    /// A variable was changed or deleted; `id` as for a device.
    Variable {
        device: i64,
        #[serde(default)]
        id: Option<i64>,
        label: String,
    },
    /// Readings committed on the telling node, for live consumers.
    Readings { readings: Vec<WireReading> },
    /// A command for an actuator, for live consumers.
    Command { command: WireCommand },
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "id", rename_all = "snake_case")]
pub enum WireCreator {
    System,
    Token(i64),
    User(i64),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WireReading {
    account: i64,
    collection: i64,
    device: i64,
    variable: i64,
    ts: i64,
    received_at: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    number: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    json: Option<serde_json::Value>,
    /// Base64.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    bytes: Option<String>,
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    context: serde_json::Map<String, serde_json::Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WireCommand {
    pub(crate) account: i64,
    pub(crate) collection: i64,
    pub(crate) device: i64,
    pub(crate) variable: i64,
    pub(crate) value: serde_json::Value,
    pub(crate) at: i64,
}

/// What travels: the change and the node it comes from.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Envelope {
    pub(crate) origin: u64,
    #[serde(flatten)]
    pub(crate) change: Change,
}

impl Change {
    pub fn token(id: TokenId, digest: &SecretDigest) -> Change {
        Change::Token { id: id.as_i64(), digest: hex(&digest.0) }
    }

    pub fn reach(creator: Creator) -> Change {
        Change::Reach {
            creator: match creator {
                Creator::System => WireCreator::System,
                Creator::Token(token) => WireCreator::Token(token.as_i64()),
                Creator::User(user) => WireCreator::User(user.as_i64()),
            },
        }
    }

    pub fn readings(readings: &[LiveReading]) -> Change {
        Change::Readings { readings: readings.iter().map(WireReading::from).collect() }
    }

    pub fn command(command: &LiveCommand) -> Change {
        Change::Command {
            command: WireCommand {
                account: command.account.as_i64(),
                collection: command.collection.as_i64(),
                device: command.device.as_i64(),
                variable: command.variable.as_i64(),
                value: command.value.clone(),
                at: command.at_ms,
            },
        }
    }
}

impl From<&LiveReading> for WireReading {
    fn from(live: &LiveReading) -> WireReading {
        let (number, json, bytes) = match &live.reading.value {
            Value::Number(number) => (Some(*number), None, None),
            Value::Json(json) => (None, Some(json.clone()), None),
            Value::Bytes(bytes) => (None, None, Some(BASE64.encode(bytes))),
        };
        WireReading {
            account: live.account.as_i64(),
            collection: live.collection.as_i64(),
            device: live.device.as_i64(),
            variable: live.reading.variable.as_i64(),
            ts: live.reading.timestamp_ms,
            received_at: live.reading.received_at_ms,
            number,
            json,
            bytes,
            context: live.reading.context.clone(),
        }
    }
}

impl WireReading {
    pub(crate) fn into_live(self) -> Option<LiveReading> {
        let value = match (self.number, self.json, self.bytes) {
            (Some(number), None, None) => Value::Number(number),
            (None, Some(json), None) => Value::Json(json),
            (None, None, Some(bytes)) => Value::Bytes(BASE64.decode(bytes).ok()?),
            _ => return None,
        };
        Some(LiveReading {
            account: AccountId::from_i64(self.account),
            collection: CollectionId::from_i64(self.collection),
            device: DeviceId::from_i64(self.device),
            reading: Reading {
                variable: VariableId::from_i64(self.variable),
                timestamp_ms: self.ts,
                value,
                context: self.context,
                received_at_ms: self.received_at,
            },
        })
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

pub(crate) fn unhex(text: &str) -> Option<[u8; 32]> {
    let bytes: Vec<u8> = (0..text.len())
        .step_by(2)
        .map(|at| text.get(at..at + 2).and_then(|pair| u8::from_str_radix(pair, 16).ok()))
        .collect::<Option<_>>()?;
    bytes.try_into().ok()
}

/// The other nodes, as the parts of one node see them: they tell changes here, and ask whether the node is
/// in touch with the others.
#[derive(Debug, Clone)]
pub struct Peers {
    pub(crate) link: Option<Arc<Link>>,
}

#[derive(Debug)]
pub(crate) struct Link {
    pub(crate) origin: u64,
    /// Live data: readings and commands, in order, at most `LIVE_QUEUE` batches; beyond it they are dropped (and
    /// counted), so a node that commits faster than the database takes notifications holds bounded memory.
    pub(crate) live: mpsc::Sender<Change>,
    /// Live data dropped because the queue was full.
    pub(crate) live_dropped: AtomicU64,
    /// The event connection is up: changes by other nodes are being heard.
    pub(crate) listening: AtomicBool,
    /// What crossed the event connection, for `/metrics`.
    pub(crate) figures: ClusterFigures,
}

/// Events this node sent and heard on the shared database since start.
#[derive(Debug, Default)]
pub struct ClusterFigures {
    /// Events this node published (`NOTIFY`).
    pub sent: crate::metrics::Counter,
    /// Live data given up after its attempts failed (the database did not take it).
    pub given_up: crate::metrics::Counter,
    /// Events from other nodes heard and applied (this node's own echoes are not counted).
    pub heard: crate::metrics::Counter,
    /// Times the listener said events were missed, or the event connection was lost: each empties the caches.
    pub missed: crate::metrics::Counter,
    /// Times the event connection was lost.
    pub disconnections: crate::metrics::Counter,
}

impl Peers {
    /// A node alone on its store.
    pub fn none() -> Peers {
        Peers { link: None }
    }

    /// Tells every other node of committed live data (readings, commands). Never waits: batches leave in order
    /// from a bounded queue.
    pub fn tell(&self, change: Change) {
        if let Some(link) = &self.link {
            // An error means the publisher stopped: the node is shutting down.
            match change {
                Change::Readings { .. } | Change::Command { .. } => {
                    if let Err(mpsc::error::TrySendError::Full(_)) = link.live.try_send(change) {
                        // Other nodes' live consumers miss this batch; it is stored, and readable there.
                        let dropped = link.live_dropped.fetch_add(1, Ordering::Relaxed) + 1;
                        if dropped.is_power_of_two() {
                            tracing::warn!(dropped, "live data for the other nodes dropped: they do not keep up");
                        }
                    }
                }
                // Cache invalidations are told by the store, inside the transaction of their change; a node never
                // queues one (it could die before the queue is sent).
                _ => tracing::error!(?change, "a cache invalidation was handed to the live-data queue; not sent"),
            }
        }
    }

    /// Whether this node hears the other nodes' changes now (always, when it is alone).
    pub fn in_touch(&self) -> bool {
        self.link.as_ref().is_none_or(|link| link.listening.load(Ordering::SeqCst))
    }

    pub fn is_alone(&self) -> bool {
        self.link.is_none()
    }

    /// The event connection's figures and the live data dropped for a full queue; `None` when alone.
    pub fn figures(&self) -> Option<(&ClusterFigures, u64)> {
        self.link.as_ref().map(|link| (&link.figures, link.live_dropped.load(Ordering::Relaxed)))
    }
}
