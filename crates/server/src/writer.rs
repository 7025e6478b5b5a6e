//! The batching writer. Every ingest path hands its readings over and waits; one task commits the readings of
//! many requests in a single transaction and then answers all of them. A request is answered only after its
//! readings are committed, so an acknowledged reading is durable; a failed commit fails every request in it and
//! stores none of their readings.
//!
//! The writer also notes when each device last had a reading committed ([`DeviceActivity`]), in memory: ingest
//! pays one map entry per device and batch for it, and the store sees it only when the server flushes it, on the
//! token usage's ticker and at shutdown.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tessera_core::{AccountId, CollectionId, DeviceId, Reading};
use tessera_store::{Store, StoreError};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::hub::{Hub, LiveReading};
use crate::last_readings::LastReadings;
use crate::time::now_ms;

#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("the server is shutting down")]
    ShuttingDown,
    #[error("the readings could not be committed")]
    Commit(#[source] Arc<StoreError>),
}

/// Where a reading belongs, carried beside it so the hub can tell consumers after the commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Origin {
    pub account: AccountId,
    pub collection: CollectionId,
    pub device: DeviceId,
}

enum Message {
    Write {
        readings: Vec<Reading>,
        origins: Vec<Origin>,
        /// `None` when nobody waits for the commit (MQTT QoS 0); a failure is then only logged.
        done: Option<oneshot::Sender<Result<(), WriteError>>>,
    },
    /// Sent once at shutdown, after the last request: everything queued before it is committed first.
    Stop,
}

/// A handle to the writer task; cheap to clone.
#[derive(Debug, Clone)]
pub struct ReadingWriter {
    sender: mpsc::Sender<Message>,
    stats: Arc<WriterStats>,
    activity: Arc<DeviceActivity>,
    last_readings: Arc<LastReadings>,
    store: Arc<dyn Store>,
}

/// When each device last had readings committed (the server's clock), since the last flush. Kept here rather than
/// written with the readings: a device's row updated in every commit would cost ingest a write per batch and
/// contend on the device rows (on PostgreSQL, between nodes too).
#[derive(Debug, Default)]
struct DeviceActivity {
    seen: Mutex<HashMap<DeviceId, i64>>,
}

impl DeviceActivity {
    fn seen(&self) -> std::sync::MutexGuard<'_, HashMap<DeviceId, i64>> {
        self.seen.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Notes the devices of readings committed at `at_ms`. A request's readings of one device lie together, so
    /// the map is touched once per run of one device's readings, not once per reading.
    fn committed(&self, origins: &[Origin], at_ms: i64) {
        let mut seen = self.seen();
        let mut previous = None;
        for origin in origins {
            if previous == Some(origin.device) {
                continue;
            }
            previous = Some(origin.device);
            let latest = seen.entry(origin.device).or_insert(at_ms);
            *latest = (*latest).max(at_ms);
        }
    }

    /// Writes what was gathered since the last flush. Entries stay readable (`latest`) until the store has them:
    /// a flush copies the map and takes out afterwards only what it wrote and nothing newer overtook, so a reader
    /// never finds a device in neither place; on failure everything stays for the next one.
    async fn flush(&self, store: &dyn Store) -> Result<(), StoreError> {
        let pending: Vec<(DeviceId, i64)> = self.seen().iter().map(|(device, at_ms)| (*device, *at_ms)).collect();
        if pending.is_empty() {
            return Ok(());
        }
        let outcome = store.record_device_activity(&pending).await;
        if outcome.is_ok() {
            let mut seen = self.seen();
            for (device, at_ms) in pending {
                if seen.get(&device) == Some(&at_ms) {
                    seen.remove(&device);
                }
            }
        }
        outcome
    }

    /// When this node last committed a reading of `device`, if the store may not know it yet.
    fn latest(&self, device: DeviceId) -> Option<i64> {
        self.seen().get(&device).copied()
    }
}

/// Counters of the writer's work since start.
#[derive(Debug, Default)]
pub struct WriterStats {
    /// Transactions committed (or attempted).
    pub commits: AtomicU64,
    /// Readings in those transactions.
    pub readings: AtomicU64,
    /// Requests answered.
    pub requests: AtomicU64,
    /// Transactions that failed, and the readings in them (their requests were answered with the error).
    pub failed_commits: AtomicU64,
    pub failed_readings: AtomicU64,
    /// How long each transaction took, from the store call to its answer.
    pub commit_latency: crate::metrics::Histogram,
}

impl std::fmt::Debug for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Message::Write { readings, .. } => write!(f, "Write({} readings)", readings.len()),
            Message::Stop => f.write_str("Stop"),
        }
    }
}

impl ReadingWriter {
    /// Starts the writer task. `queue` bounds how many requests may wait (backpressure beyond it); `max_batch`
    /// bounds the readings in one transaction. `last_readings` is kept current with every commit.
    pub fn start(
        store: Arc<dyn Store>,
        hub: Arc<Hub>,
        last_readings: LastReadings,
        queue: usize,
        max_batch: usize,
    ) -> (ReadingWriter, JoinHandle<()>) {
        let (sender, receiver) = mpsc::channel(queue.max(1));
        let stats = Arc::new(WriterStats::default());
        let activity = Arc::new(DeviceActivity::default());
        let last_readings = Arc::new(last_readings);
        let committed = Committed { activity: activity.clone(), last_readings: last_readings.clone() };
        let task = tokio::spawn(run(store.clone(), hub, receiver, max_batch.max(1), stats.clone(), committed));
        (ReadingWriter { sender, stats, activity, last_readings, store }, task)
    }

    /// The reading of `variable` with the latest timestamp (from memory when this node is the only writer).
    pub async fn last_reading(&self, variable: tessera_core::VariableId) -> Result<Option<Reading>, StoreError> {
        self.last_readings.get(self.store.as_ref(), variable).await
    }

    /// Tells the last readings that readings of `variable` were deleted from the store.
    pub fn readings_deleted(&self, variable: tessera_core::VariableId) {
        self.last_readings.deleted(variable);
    }

    /// The last readings' cache figures, for `/metrics` (none when every read goes to the store).
    pub fn last_readings_figures(&self) -> Option<crate::metrics::CacheFigures> {
        self.last_readings.figures()
    }

    pub fn stats(&self) -> &WriterStats {
        &self.stats
    }

    /// Requests waiting for the writer now, and how many may wait before senders wait for room.
    pub fn queue_depth(&self) -> (usize, usize) {
        let capacity = self.sender.max_capacity();
        (capacity - self.sender.capacity(), capacity)
    }

    /// Records in the store when each device last had readings committed, as gathered since the last flush
    /// (kept for the next flush if the store fails). Each node flushes its own; the store keeps the latest.
    pub async fn flush_activity(&self) -> Result<(), StoreError> {
        self.activity.flush(self.store.as_ref()).await
    }

    /// The device's last-seen time as this node knows it, newer than the store's until the next flush writes it.
    pub fn unflushed_activity(&self, device: DeviceId) -> Option<i64> {
        self.activity.latest(device)
    }

    /// Commits `readings` (each with its origin, in the same order) together with other requests' readings,
    /// returning once they are durable; the hub hears of them right after the commit, in commit order.
    pub async fn write(&self, readings: Vec<Reading>, origins: Vec<Origin>) -> Result<(), WriteError> {
        if readings.is_empty() {
            return Ok(());
        }
        debug_assert_eq!(readings.len(), origins.len());
        let (done, answer) = oneshot::channel();
        let message = Message::Write { readings, origins, done: Some(done) };
        self.sender.send(message).await.map_err(|_| WriteError::ShuttingDown)?;
        answer.await.map_err(|_| WriteError::ShuttingDown)?
    }

    /// Queues `readings` for the next commit and returns as soon as they are queued (waiting only while the queue
    /// is full), for a sender that is owed no acknowledgement (MQTT QoS 0). Queued in call order, so a sender's
    /// readings are committed, and reach live consumers, in the order it sent them.
    pub async fn enqueue(&self, readings: Vec<Reading>, origins: Vec<Origin>) -> Result<(), WriteError> {
        if readings.is_empty() {
            return Ok(());
        }
        let message = Message::Write { readings, origins, done: None };
        self.sender.send(message).await.map_err(|_| WriteError::ShuttingDown)
    }

    /// Asks the task to stop once everything queued so far is committed. Await the task's handle afterwards.
    pub async fn stop(&self) {
        // If the task is already gone there is nothing left to flush.
        let _ = self.sender.send(Message::Stop).await;
    }
}

/// What the writer tells of each commit before it answers the requests in it.
struct Committed {
    activity: Arc<DeviceActivity>,
    last_readings: Arc<LastReadings>,
}

async fn run(
    store: Arc<dyn Store>,
    hub: Arc<Hub>,
    mut receiver: mpsc::Receiver<Message>,
    max_batch: usize,
    stats: Arc<WriterStats>,
    tell: Committed,
) {
    let mut batch: Vec<Reading> = Vec::new();
    let mut batch_origins: Vec<Origin> = Vec::new();
    let mut waiting: Vec<Option<oneshot::Sender<Result<(), WriteError>>>> = Vec::new();
    let mut stopping = false;
    while !stopping {
        let Some(first) = receiver.recv().await else { break };
        let mut next = Some(first);
        // Take what is already queued, without waiting: under load the queue fills while a commit runs, and the
        // next commit takes all of it; when idle a lone request is committed at once.
        while let Some(message) = next.take() {
            match message {
                Message::Write { readings, origins, done } => {
                    batch.extend(readings);
                    batch_origins.extend(origins);
                    waiting.push(done);
                }
                Message::Stop => {
                    stopping = true;
                    break;
                }
            }
            if batch.len() >= max_batch {
                break;
            }
            next = receiver.try_recv().ok();
        }
        if waiting.is_empty() {
            continue;
        }
        let commit_started = std::time::Instant::now();
        let outcome = store.insert_readings(&batch).await;
        stats.commit_latency.observe(commit_started.elapsed());
        stats.commits.fetch_add(1, Ordering::Relaxed);
        stats.readings.fetch_add(batch.len() as u64, Ordering::Relaxed);
        stats.requests.fetch_add(waiting.len() as u64, Ordering::Relaxed);
        if let Err(error) = &outcome {
            stats.failed_commits.fetch_add(1, Ordering::Relaxed);
            stats.failed_readings.fetch_add(batch.len() as u64, Ordering::Relaxed);
            tracing::error!(error = ?error, readings = batch.len(), requests = waiting.len(), "commit of readings failed");
        }
        let committed = outcome.is_ok();
        if committed {
            // Noted before anyone is answered, so a client that reads its device or variable right after its
            // write sees it.
            tell.activity.committed(&batch_origins, now_ms());
            tell.last_readings.committed(&batch);
        }
        let shared = outcome.map_err(Arc::new);
        for done in waiting.drain(..).flatten() {
            // A requester that went away (client disconnected) no longer needs the answer; its readings are stored.
            let _ = done.send(shared.clone().map_err(WriteError::Commit));
        }
        if committed {
            hub.publish(batch.drain(..).zip(batch_origins.drain(..)).map(|(reading, origin)| LiveReading {
                account: origin.account,
                collection: origin.collection,
                device: origin.device,
                reading,
            }));
        }
        batch.clear();
        batch_origins.clear();
    }
    tracing::debug!("reading writer stopped");
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use tessera_core::{DeviceId, Label, ServerKey, Value, VariableId};
    use tessera_store::{CollectionStore, Device, DeviceStore, Page, SqliteStore, TimeRange, Variable};

    use super::*;
    use crate::entropy::new_id;

    /// A store with an account, a device and two variables; returns the variables' ids.
    async fn store_with_two_variables() -> (Arc<dyn Store>, [VariableId; 2]) {
        let store = SqliteStore::open_in_memory().await.unwrap();
        let credentials = crate::bootstrap::bootstrap(&store, &ServerKey::new(&[0; 32])).await.unwrap().unwrap();
        let account = credentials.account_id;
        let collection = store.default_collection(account).await.unwrap().id;
        let device = Device {
            id: DeviceId(new_id()),
            account,
            collection,
            label: Label::parse("d").unwrap(),
            name: "d".into(),
            created_at_ms: 0,
            imsi: None,
            imei: None,
            tags: Default::default(),
            last_seen_at_ms: None,
        };
        store.insert_device_if_absent(&device).await.unwrap();
        let mut ids = Vec::new();
        for label in ["a", "b"] {
            let variable = Variable {
                id: VariableId(new_id()),
                account,
                device: device.id,
                collection,
                label: Label::parse(label).unwrap(),
                name: label.into(),
                unit: String::new(),
                created_at_ms: 0,
                title: String::new(),
                description: String::new(),
                kind: "sensor".into(),
                profile: None,
            };
            ids.push(store.insert_variable_if_absent(&variable).await.unwrap().id);
        }
        (Arc::new(store), [ids[0], ids[1]])
    }

    /// A writer of `store` with a queue of 64 and batches of at most `max_batch` readings; `only_writer` as on
    /// SQLite (last readings held) or not (PostgreSQL).
    fn start_writer(store: &Arc<dyn Store>, only_writer: bool, max_batch: usize) -> (ReadingWriter, JoinHandle<()>) {
        let hub = Arc::new(Hub::new(16, crate::peers::Peers::none()));
        ReadingWriter::start(store.clone(), hub, LastReadings::new(only_writer, 1_000), 64, max_batch)
    }

    const ORIGIN: Origin = Origin {
        account: AccountId(tessera_core::Id::from_i64(1)),
        collection: CollectionId(tessera_core::Id::from_i64(1)),
        device: DeviceId(tessera_core::Id::from_i64(1)),
    };

    fn reading(variable: VariableId, timestamp_ms: i64) -> Reading {
        Reading {
            variable,
            timestamp_ms,
            value: Value::Number(timestamp_ms as f64),
            context: Default::default(),
            received_at_ms: 0,
        }
    }

    /// On a single-threaded runtime every request below is queued before the writer task first runs, so the
    /// writer must commit them all in one transaction, then answer each.
    #[tokio::test]
    async fn queued_requests_are_committed_together() {
        let (store, [a, b]) = store_with_two_variables().await;
        let (writer, task) = start_writer(&store, true, 10_000);
        let requests = (0..20).map(|n| writer.write(vec![reading(a, n), reading(b, n)], vec![ORIGIN; 2]));
        let outcomes = futures_join(requests).await;
        assert!(outcomes.iter().all(Result::is_ok));
        assert_eq!(writer.stats().commits.load(Ordering::Relaxed), 1);
        assert_eq!(writer.stats().requests.load(Ordering::Relaxed), 20);
        assert_eq!(writer.stats().readings.load(Ordering::Relaxed), 40);
        let stored = store.readings(b, TimeRange::ALL, Page::ALL).await.unwrap();
        assert_eq!(stored.total, 20);
        writer.stop().await;
        task.await.unwrap();
    }

    #[tokio::test]
    async fn batches_are_bounded_and_stop_commits_what_was_queued() {
        let (store, [a, _]) = store_with_two_variables().await;
        let (writer, task) = start_writer(&store, true, 5);
        let requests = (0..10)
            .map(|n| writer.write(vec![reading(a, n), reading(a, n + 100), reading(a, n + 200)], vec![ORIGIN; 3]));
        assert!(futures_join(requests).await.iter().all(Result::is_ok));
        assert_eq!(writer.stats().commits.load(Ordering::Relaxed), 5, "two requests (6 readings) per commit");
        writer.stop().await;
        task.await.unwrap();
        assert!(matches!(writer.write(vec![reading(a, 1)], vec![ORIGIN]).await, Err(WriteError::ShuttingDown)));
        let stored = store.readings(a, TimeRange::ALL, Page::ALL).await.unwrap();
        assert_eq!(stored.total, 30);
    }

    /// A commit notes its devices' activity in memory only (no store write on the ingest path); the flush writes it.
    #[tokio::test]
    async fn committed_readings_mark_their_device_seen_once_flushed() {
        let (store, [a, b]) = store_with_two_variables().await;
        let account = store.accounts().await.unwrap()[0].id;
        let variable = store.variable(account, a).await.unwrap();
        let origin = Origin { account, collection: variable.collection, device: variable.device };
        let (writer, task) = start_writer(&store, true, 10_000);
        let before = now_ms();
        writer.write(vec![reading(a, 1), reading(b, 1), reading(a, 2)], vec![origin; 3]).await.unwrap();
        assert_eq!(writer.activity.seen().len(), 1, "one entry for the device, whatever its readings");
        assert_eq!(store.device(account, origin.device).await.unwrap().last_seen_at_ms, None, "not written yet");
        writer.flush_activity().await.unwrap();
        assert!(writer.activity.seen().is_empty());
        let seen = store.device(account, origin.device).await.unwrap().last_seen_at_ms.expect("seen once flushed");
        assert!((before..=now_ms()).contains(&seen), "the server's clock at the commit, not the readings' time");
        writer.stop().await;
        task.await.unwrap();
    }

    /// Held last readings follow every commit (the newest timestamp wins, whatever the order of arrival), and a
    /// deletion sends the next read to the store again; a node that is not the only writer holds none.
    #[tokio::test]
    async fn last_readings_follow_commits_and_deletions() {
        let (store, [a, b]) = store_with_two_variables().await;
        let (writer, task) = start_writer(&store, true, 10_000);
        let last = async |variable| writer.last_reading(variable).await.unwrap().map(|last| last.timestamp_ms);
        assert_eq!(last(a).await, None, "read from the store: nothing yet, and held as nothing");
        writer.write(vec![reading(a, 20), reading(a, 10)], vec![ORIGIN; 2]).await.unwrap();
        assert_eq!(last(a).await, Some(20), "the newest timestamp of the batch, not the last one sent");
        writer.write(vec![reading(a, 5)], vec![ORIGIN]).await.unwrap();
        assert_eq!(last(a).await, Some(20), "an older reading sent later is not the last");
        writer.write(vec![reading(a, 30), reading(b, 7)], vec![ORIGIN; 2]).await.unwrap();
        assert_eq!((last(a).await, last(b).await), (Some(30), Some(7)));
        let figures = writer.last_readings_figures().expect("the only writer holds last readings");
        assert!(figures.hits >= 3, "answered from memory after the first read: {figures:?}");

        store.delete_readings(a, TimeRange { start_ms: 25, end_ms: 40 }).await.unwrap();
        writer.readings_deleted(a);
        assert_eq!(last(a).await, Some(20), "after a deletion, the store's answer");
        writer.stop().await;
        task.await.unwrap();

        // Not the only writer (a PostgreSQL cluster): another node's commit must be seen at once, so every read
        // goes to the store.
        let (writer, task) = start_writer(&store, false, 10_000);
        assert_eq!(writer.last_reading(a).await.unwrap().map(|last| last.timestamp_ms), Some(20));
        store.insert_readings(&[reading(a, 50)]).await.unwrap();
        assert_eq!(writer.last_reading(a).await.unwrap().map(|last| last.timestamp_ms), Some(50));
        assert!(writer.last_readings_figures().is_none());
        writer.stop().await;
        task.await.unwrap();
    }

    /// Polls all futures together on the current task (no extra dependency for `join_all`).
    async fn futures_join<F: std::future::Future>(futures: impl Iterator<Item = F>) -> Vec<F::Output> {
        let mut pinned: Vec<_> = futures.map(Box::pin).collect();
        let mut outputs: Vec<Option<F::Output>> = pinned.iter().map(|_| None).collect();
        std::future::poll_fn(|context| {
            let mut pending = false;
            for (index, future) in pinned.iter_mut().enumerate() {
                if outputs[index].is_none() {
                    match future.as_mut().poll(context) {
                        std::task::Poll::Ready(output) => outputs[index] = Some(output),
                        std::task::Poll::Pending => pending = true,
                    }
                }
            }
            if pending { std::task::Poll::Pending } else { std::task::Poll::Ready(()) }
        })
        .await;
        outputs.into_iter().map(|output| output.expect("completed")).collect()
    }
}
