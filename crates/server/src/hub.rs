//! The live hub: every committed reading, in commit order, to every live consumer (MQTT sessions, Horde `/from`
//! WebSockets, Server-Sent Events, the console's live pages). A consumer that falls behind loses its oldest
//! messages; the loss is counted per kind of consumer and said at warn, at most once a minute per consumer. It
//! never slows ingest, and the hub's memory is bounded by its capacity.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::broadcast;
use tokio::time::Instant;

use crate::peers::{Change, Peers};

pub use crate::live::{LiveCommand, LiveReading};

/// The kinds of live consumer, as `/metrics` counts their losses (`consumer` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Consumer {
    /// An MQTT connection that subscribed, or a kept persistent session collecting for its absent client.
    Mqtt,
    /// A Horde `/from` WebSocket.
    HordeStream,
    /// A native `GET /v1/collections/{id}/events` stream.
    Events,
    /// A console page's live stream.
    Console,
}

impl Consumer {
    pub const ALL: [Consumer; 4] = [Consumer::Mqtt, Consumer::HordeStream, Consumer::Events, Consumer::Console];

    /// The `consumer` label.
    pub fn as_str(self) -> &'static str {
        match self {
            Consumer::Mqtt => "mqtt",
            Consumer::HordeStream => "horde_stream",
            Consumer::Events => "sse",
            Consumer::Console => "console",
        }
    }
}

/// How often one consumer says in the log that it lost messages, at most.
pub const DROPS_LOGGED_EVERY: Duration = Duration::from_secs(60);

/// Messages one consumer lost since it last said so in the log: the first loss is logged at once, later ones at
/// most once every [`DROPS_LOGGED_EVERY`] with their count, and what is left unsaid when the consumer ends.
#[derive(Debug)]
pub struct DropReport {
    consumer: Consumer,
    /// What the queue was: the hub's, or the consumer's own (an MQTT session's).
    queue: &'static str,
    since_logged: u64,
    logged_at: Option<Instant>,
}

impl DropReport {
    pub fn new(consumer: Consumer, queue: &'static str) -> DropReport {
        DropReport { consumer, queue, since_logged: 0, logged_at: None }
    }

    pub fn note(&mut self, lost: u64) {
        self.since_logged += lost;
        let now = Instant::now();
        if self.logged_at.is_none_or(|at| now.duration_since(at) >= DROPS_LOGGED_EVERY) {
            self.log();
            self.logged_at = Some(now);
        }
    }

    fn log(&mut self) {
        tracing::warn!(
            consumer = self.consumer.as_str(),
            queue = self.queue,
            lost = self.since_logged,
            "a live consumer fell behind and lost its oldest messages"
        );
        self.since_logged = 0;
    }
}

impl Drop for DropReport {
    fn drop(&mut self) {
        if self.since_logged > 0 {
            self.log();
        }
    }
}

#[derive(Debug)]
pub struct Hub {
    sender: broadcast::Sender<Arc<LiveReading>>,
    commands: broadcast::Sender<Arc<LiveCommand>>,
    /// Messages consumers missed because they fell behind, by kind of consumer (`Consumer as usize`).
    dropped: [AtomicU64; 4],
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
            dropped: Default::default(),
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

    pub fn subscribe(self: &Arc<Hub>, consumer: Consumer) -> Subscription {
        Subscription {
            receiver: self.sender.subscribe(),
            hub: self.clone(),
            consumer,
            report: DropReport::new(consumer, "hub"),
        }
    }

    /// Messages consumers of `consumer`'s kind lost by falling behind the hub.
    pub fn dropped(&self, consumer: Consumer) -> u64 {
        self.dropped[consumer as usize].load(Ordering::Relaxed)
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

impl Drop for Subscription {
    /// A consumer that ends while behind (a stream whose client stopped reading, then left) still has its loss
    /// counted: the first look at a lagging receiver says how much it missed.
    fn drop(&mut self) {
        if let Err(broadcast::error::TryRecvError::Lagged(missed)) = self.receiver.try_recv() {
            self.lost(missed);
        }
    }
}

/// One consumer's view of the hub.
#[derive(Debug)]
pub struct Subscription {
    receiver: broadcast::Receiver<Arc<LiveReading>>,
    hub: Arc<Hub>,
    consumer: Consumer,
    report: DropReport,
}

impl Subscription {
    fn lost(&mut self, missed: u64) {
        self.hub.dropped[self.consumer as usize].fetch_add(missed, Ordering::Relaxed);
        self.report.note(missed);
    }

    /// The next reading if one is waiting now, without waiting; readings missed by falling behind are counted and
    /// skipped as in [`Subscription::next`].
    pub fn try_next(&mut self) -> Option<Arc<LiveReading>> {
        loop {
            match self.receiver.try_recv() {
                Ok(reading) => return Some(reading),
                Err(broadcast::error::TryRecvError::Lagged(missed)) => self.lost(missed),
                Err(_) => return None,
            }
        }
    }

    /// The next reading; `None` once the hub is gone. Readings missed by falling behind are counted and skipped.
    pub async fn next(&mut self) -> Option<Arc<LiveReading>> {
        loop {
            match self.receiver.recv().await {
                Ok(reading) => return Some(reading),
                Err(broadcast::error::RecvError::Lagged(missed)) => self.lost(missed),
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
        let mut subscription = hub.subscribe(Consumer::Events);
        hub.publish((0..10).map(live));
        let mut seen = Vec::new();
        while seen.len() < 4 {
            seen.push(subscription.next().await.unwrap().reading.timestamp_ms);
        }
        assert_eq!(seen, [6, 7, 8, 9], "the newest four, in order");
        assert_eq!(hub.dropped(Consumer::Events), 6);
        assert_eq!(hub.dropped(Consumer::Mqtt), 0, "counted for its kind of consumer only");
        assert_eq!(hub.published_and_delivered(), (10, 10), "ten readings, each taken by the one consumer");
        let _second = hub.subscribe(Consumer::Mqtt);
        hub.publish((10..12).map(live));
        assert_eq!(hub.published_and_delivered(), (12, 14), "two more, each taken by two");
    }

    /// A log that keeps what `tracing` writes, for the test below.
    #[derive(Clone, Default)]
    struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
        type Writer = Captured;
        fn make_writer(&'a self) -> Captured {
            self.clone()
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_consumer_that_falls_behind_says_so_at_warn_once_a_minute_with_the_count() {
        let captured = Captured::default();
        let subscriber = tracing_subscriber::fmt().with_writer(captured.clone()).with_ansi(false).finish();
        let _logging = tracing::subscriber::set_default(subscriber);
        let lines = || {
            let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
            text.lines().filter(|line| line.contains("lost its oldest messages")).map(str::to_owned).collect::<Vec<_>>()
        };
        let hub = Arc::new(Hub::new(4, Peers::none()));
        let mut subscription = hub.subscribe(Consumer::HordeStream);
        // Ten rounds of losses within the minute: one line, at once, with the first round's count.
        for round in 0..10 {
            hub.publish((0..10).map(|at| live(round * 10 + at)));
            while subscription.try_next().is_some() {}
        }
        assert_eq!(hub.dropped(Consumer::HordeStream), 60);
        let logged = lines();
        assert_eq!(logged.len(), 1, "one line, not one per loss: {logged:?}");
        assert!(logged[0].contains("WARN") && logged[0].contains("lost=6"), "{}", logged[0]);
        assert!(logged[0].contains("consumer=\"horde_stream\""), "{}", logged[0]);
        // A minute later the next loss says what was lost since, and the end says the rest.
        subscription.report.logged_at = Instant::now().checked_sub(DROPS_LOGGED_EVERY);
        hub.publish((0..10).map(live));
        while subscription.try_next().is_some() {}
        assert_eq!(lines().len(), 2);
        assert!(lines()[1].contains("lost=60"), "the 54 unsaid and these 6: {}", lines()[1]);
        hub.publish((0..10).map(live));
        while subscription.try_next().is_some() {}
        drop(subscription);
        assert_eq!(lines().len(), 3);
        assert!(lines()[2].contains("lost=6"), "{}", lines()[2]);
    }
}
