//! The live hub: every committed reading, in commit order, to every live consumer (Horde WebSockets today; MQTT
//! and Server-Sent Events later). A consumer that falls behind loses its oldest messages and learns how many; it
//! never slows ingest, and the hub's memory is bounded by its capacity.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::broadcast;

use crate::peers::{Change, Peers};

pub use crate::live::{LiveCommand, LiveReading};

#[derive(Debug)]
pub struct Hub {
    sender: broadcast::Sender<Arc<LiveReading>>,
    commands: broadcast::Sender<Arc<LiveCommand>>,
    /// Messages consumers missed because they fell behind.
    dropped: AtomicU64,
    /// Readings handed to this node's consumers (while any listened), and how many consumers took each: one
    /// relaxed add each per reading, the count being what the broadcast's send answers.
    published: AtomicU64,
    deliveries: AtomicU64,
    /// Commands passed on to this node's listeners.
    commands_published: AtomicU64,
    /// Other nodes' consumers hear what is published here, and this hub what is published there.
    peers: Peers,
}

impl Hub {
    pub fn new(capacity: usize, peers: Peers) -> Hub {
        let (sender, _) = broadcast::channel(capacity.max(1));
        let (commands, _) = broadcast::channel(capacity.max(1));
        Hub {
            sender,
            commands,
            dropped: AtomicU64::new(0),
            published: AtomicU64::new(0),
            deliveries: AtomicU64::new(0),
            commands_published: AtomicU64::new(0),
            peers,
        }
    }

    /// Publishes committed readings to the consumers of every node; with no consumer and no other node this
    /// costs next to nothing.
    pub fn publish(&self, readings: impl IntoIterator<Item = LiveReading>) {
        if self.peers.is_alone() {
            self.publish_here(readings);
            return;
        }
        let readings: Vec<LiveReading> = readings.into_iter().collect();
        self.peers.tell(Change::readings(&readings));
        self.publish_here(readings);
    }

    /// Publishes readings to this node's consumers only (they were published on another node).
    pub fn publish_here(&self, readings: impl IntoIterator<Item = LiveReading>) {
        if self.sender.receiver_count() == 0 {
            return;
        }
        for reading in readings {
            // An error only means every consumer left in the meantime.
            if let Ok(consumers) = self.sender.send(Arc::new(reading)) {
                self.published.fetch_add(1, Ordering::Relaxed);
                self.deliveries.fetch_add(consumers as u64, Ordering::Relaxed);
            }
        }
    }

    /// Passes a command on to whoever listens now (each listener decides whether it may see it).
    pub fn command(&self, command: LiveCommand) {
        self.peers.tell(Change::command(&command));
        self.command_here(command);
    }

    /// Passes on a command sent on another node.
    pub fn command_here(&self, command: LiveCommand) {
        // An error only means nobody listens.
        if self.commands.send(Arc::new(command)).is_ok() {
            self.commands_published.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn subscribe_commands(&self) -> broadcast::Receiver<Arc<LiveCommand>> {
        self.commands.subscribe()
    }

    pub fn subscribe(self: &Arc<Hub>) -> Subscription {
        Subscription { receiver: self.sender.subscribe(), hub: self.clone() }
    }

    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Readings published to this node's consumers, and deliveries (a reading times the consumers that took it).
    pub fn published_and_delivered(&self) -> (u64, u64) {
        (self.published.load(Ordering::Relaxed), self.deliveries.load(Ordering::Relaxed))
    }

    pub fn commands_published(&self) -> u64 {
        self.commands_published.load(Ordering::Relaxed)
    }

    /// Live consumers of readings now (MQTT connections that subscribed, kept sessions, streams).
    pub fn consumers(&self) -> usize {
        self.sender.receiver_count()
    }
}

/// One consumer's view of the hub.
#[derive(Debug)]
pub struct Subscription {
    receiver: broadcast::Receiver<Arc<LiveReading>>,
    hub: Arc<Hub>,
}

impl Subscription {
    /// The next reading if one is waiting now, without waiting; readings missed by falling behind are counted and
    /// skipped as in [`Subscription::next`].
    pub fn try_next(&mut self) -> Option<Arc<LiveReading>> {
        loop {
            match self.receiver.try_recv() {
                Ok(reading) => return Some(reading),
                Err(broadcast::error::TryRecvError::Lagged(missed)) => {
                    self.hub.dropped.fetch_add(missed, Ordering::Relaxed);
                }
                Err(_) => return None,
            }
        }
    }

    /// The next reading; `None` once the hub is gone. Readings missed by falling behind are counted and skipped.
    pub async fn next(&mut self) -> Option<Arc<LiveReading>> {
        loop {
            match self.receiver.recv().await {
                Ok(reading) => return Some(reading),
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    self.hub.dropped.fetch_add(missed, Ordering::Relaxed);
                    tracing::debug!(missed, "a live consumer fell behind and lost its oldest messages");
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use tessera_core::{Id, Value, VariableId};

    use super::*;
    use tessera_core::{AccountId, CollectionId, DeviceId, Reading};

    fn live(timestamp_ms: i64) -> LiveReading {
        LiveReading {
            account: AccountId(Id::from_i64(1)),
            collection: CollectionId(Id::from_i64(2)),
            device: DeviceId(Id::from_i64(3)),
            reading: Reading {
                variable: VariableId(Id::from_i64(4)),
                timestamp_ms,
                value: Value::Number(1.0),
                context: Default::default(),
                received_at_ms: 0,
            },
        }
    }

    #[tokio::test]
    async fn consumers_get_readings_in_order_and_a_slow_one_loses_the_oldest() {
        let hub = Arc::new(Hub::new(4, Peers::none()));
        let mut subscription = hub.subscribe();
        hub.publish((0..10).map(live));
        let mut seen = Vec::new();
        while seen.len() < 4 {
            seen.push(subscription.next().await.unwrap().reading.timestamp_ms);
        }
        assert_eq!(seen, [6, 7, 8, 9], "the newest four, in order");
        assert_eq!(hub.dropped(), 6);
        assert_eq!(hub.published_and_delivered(), (10, 10), "ten readings, each taken by the one consumer");
        let _second = hub.subscribe();
        hub.publish((10..12).map(live));
        assert_eq!(hub.published_and_delivered(), (12, 14), "two more, each taken by two");
    }
}
