//! The batching writer. Every ingest path hands its readings over and waits; one task commits the readings of
//! many requests in a single transaction and then answers all of them. A request is answered only after its
//! readings are committed, so an acknowledged reading is durable; a failed commit fails every request in it and
//! stores none of their readings.

use std::sync::Arc;

use tessera_core::Reading;
use tessera_store::{Store, StoreError};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("the server is shutting down")]
    ShuttingDown,
    #[error("the readings could not be committed")]
    Commit(#[source] Arc<StoreError>),
}

enum Message {
    Write {
        readings: Vec<Reading>,
        done: oneshot::Sender<Result<(), WriteError>>,
    },
    /// Sent once at shutdown, after the last request: everything queued before it is committed first.
    Stop,
}

/// A handle to the writer task; cheap to clone.
#[derive(Debug, Clone)]
pub struct ReadingWriter {
    sender: mpsc::Sender<Message>,
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
    /// bounds the readings in one transaction.
    pub fn start(store: Arc<dyn Store>, queue: usize, max_batch: usize) -> (ReadingWriter, JoinHandle<()>) {
        let (sender, receiver) = mpsc::channel(queue.max(1));
        let task = tokio::spawn(run(store, receiver, max_batch.max(1)));
        (ReadingWriter { sender }, task)
    }

    /// Commits `readings` together with other requests' readings, returning once they are durable.
    pub async fn write(&self, readings: Vec<Reading>) -> Result<(), WriteError> {
        if readings.is_empty() {
            return Ok(());
        }
        let (done, answer) = oneshot::channel();
        self.sender.send(Message::Write { readings, done }).await.map_err(|_| WriteError::ShuttingDown)?;
        answer.await.map_err(|_| WriteError::ShuttingDown)?
    }

    /// Asks the task to stop once everything queued so far is committed. Await the task's handle afterwards.
    pub async fn stop(&self) {
        // If the task is already gone there is nothing left to flush.
        let _ = self.sender.send(Message::Stop).await;
    }
}

async fn run(store: Arc<dyn Store>, mut receiver: mpsc::Receiver<Message>, max_batch: usize) {
    let mut batch: Vec<Reading> = Vec::new();
    let mut waiting: Vec<oneshot::Sender<Result<(), WriteError>>> = Vec::new();
    let mut stopping = false;
    while !stopping {
        let Some(first) = receiver.recv().await else { break };
        let mut next = Some(first);
        // Take what is already queued, without waiting: under load the queue fills while a commit runs, and the
        // next commit takes all of it; when idle a lone request is committed at once.
        while let Some(message) = next.take() {
            match message {
                Message::Write { readings, done } => {
                    batch.extend(readings);
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
        let outcome = store.insert_readings(&batch).await;
        if let Err(error) = &outcome {
            tracing::error!(error = ?error, readings = batch.len(), requests = waiting.len(), "commit of readings failed");
        }
        let shared = outcome.map_err(Arc::new);
        for done in waiting.drain(..) {
            // A requester that went away (client disconnected) no longer needs the answer; its readings are stored.
            let _ = done.send(shared.clone().map_err(WriteError::Commit));
        }
        batch.clear();
    }
    tracing::debug!("reading writer stopped");
}
