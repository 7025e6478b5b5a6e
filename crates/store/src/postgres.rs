//! The PostgreSQL store, for several `tessera serve` nodes sharing one database. The SQL is the SQLite store's
//! (see `sqlite.rs` for why it is included text); what differs is here: row locks where SQLite's serial writers
//! need none, an exclusive bootstrap, and the event channel between nodes (LISTEN/NOTIFY).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::Transaction;

use crate::{Invalidation, StoreError, StoreResult};
use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions, PgRow};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// The PostgreSQL implementation of [`Store`].
#[derive(Debug, Clone)]
pub struct PostgresStore {
    pool: PgPool,
}

type Backend = PostgresStore;
type Db = sqlx::Postgres;
type DbRow = PgRow;
type DbConnection = sqlx::PgConnection;

/// The whole database's size, for `StoreFigures` (a scratch schema's share is not told apart).
const DATABASE_BYTES: &str = "SELECT pg_database_size(current_database())";

/// Locks the rows a check-then-write transaction read, so a concurrent transaction cannot change what was
/// checked before this one commits (READ COMMITTED would let it).
macro_rules! for_update {
    () => {
        " FOR UPDATE"
    };
}

async fn begin_write(store: &PostgresStore) -> StoreResult<Transaction<'static, Db>> {
    Ok(store.pool.begin().await?)
}

/// Where a write that is one statement runs: any connection of the pool.
fn single_writes(store: &PostgresStore) -> &PgPool {
    &store.pool
}

/// Tells every node of what a change invalidates, inside the change's transaction: delivered when it commits,
/// never without it (see `invalidation.rs`). Framed as an inline event (`i…`, as `PostgresEvents::publish` frames
/// one): a listener takes an unframed notification for one it cannot read, and empties every cache instead of
/// dropping the entries named.
async fn tell_in(transaction: &mut DbConnection, invalidations: &[Invalidation]) -> StoreResult<()> {
    for invalidation in invalidations {
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(CHANNEL)
            .bind(format!("i{}", invalidation.payload()))
            .execute(&mut *transaction)
            .await?;
    }
    Ok(())
}

fn pool_figures(store: &PostgresStore) -> Vec<crate::PoolFigures> {
    vec![crate::PoolFigures::of("main", &store.pool)]
}

async fn close_pools(store: &PostgresStore) {
    store.pool.close().await;
}

/// A transaction that holds the accounts table exclusively, so nodes bootstrapping at once create one account.
async fn begin_exclusive(store: &PostgresStore) -> StoreResult<Transaction<'static, Db>> {
    let mut transaction = store.pool.begin().await?;
    sqlx::query("LOCK TABLE accounts IN EXCLUSIVE MODE").execute(&mut *transaction).await?;
    Ok(transaction)
}

impl PostgresStore {
    /// Connects to `url` (`postgres://user@host/db`) and brings the schema up to date. Migrations hold an
    /// advisory lock, so several nodes starting at once apply each one exactly once.
    pub async fn connect(url: &str) -> StoreResult<PostgresStore> {
        let options: PgConnectOptions = url.parse()?;
        PostgresStore::connect_with(options).await
    }

    pub async fn connect_with(options: PgConnectOptions) -> StoreResult<PostgresStore> {
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .min_connections(1)
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(options)
            .await?;
        MIGRATOR.run(&pool).await.map_err(|error| match error {
            sqlx::migrate::MigrateError::Execute(error) => StoreError::from(error),
            other => StoreError::Internal(Box::new(other)),
        })?;
        Ok(PostgresStore { pool })
    }

    /// The channel this store's nodes tell each other about changes on.
    pub fn events(&self) -> PostgresEvents {
        PostgresEvents { pool: self.pool.clone(), own_references: Arc::default() }
    }
}

/// The SQL both backends share, compiled once per backend as a real module against this one's `Db`, `DbRow`,
/// `DbConnection`, `Backend` and write helpers (`sql/store.rs` names what it takes from here).
#[path = "sql/store.rs"]
#[allow(clippy::duplicate_mod, reason = "compiled once per backend on purpose: that is how the SQL is shared")]
mod shared_sql;

/// The NOTIFY channel all nodes of one database listen on.
const CHANNEL: &str = "tessera_events";
/// NOTIFY payloads must stay under 8000 bytes; larger events go by reference through the `events` table.
const INLINE_LIMIT: usize = 7900;
/// How long an event stored by reference is kept for listeners to fetch.
const EVENT_RETENTION_MS: i64 = 3_600_000;

/// Publishing side of the event channel between nodes: payloads are opaque text (the server decides what they
/// mean); each reaches every listening node, in the order they were published by one connection, except that a
/// handle's own listener skips the handle's events stored by reference (see `own_references`).
#[derive(Debug, Clone)]
pub struct PostgresEvents {
    pool: PgPool,
    /// Ids of the events this handle stored by reference whose notification its listener has not heard yet. The
    /// listener skips those without fetching them: a node has no use for its own events (the server drops them by
    /// origin), and these are the large ones (a commit of thousands of readings is a megabyte to read back and
    /// parse). Kept beside the wire format rather than in it, so nodes of different versions understand each other.
    own_references: Arc<OwnReferences>,
}

/// Own event ids remembered at most: more are waiting only if the listener lost notifications (which it reports
/// as `Reconnected` anyway) or publishes failed after the id was taken; the oldest are forgotten, and an event
/// whose id was forgotten is merely fetched.
const OWN_REFERENCES_KEPT: usize = 1024;

/// What a listener hears.
#[derive(Debug, PartialEq)]
pub enum ListenEvent {
    /// An event another node published, or this one when it travelled inline (the node's own events stored by
    /// reference are skipped without being fetched).
    Payload(String),
    /// The connection was lost and is back: events published meanwhile were missed, so whatever was derived
    /// from them (caches) must be reloaded.
    Reconnected,
    /// The database cannot be reached now; the listener keeps retrying.
    Unreachable,
    /// An event was heard but could not be read: whatever was derived from events must be reloaded.
    Missed,
}

impl PostgresEvents {
    /// Publishes one event. Small payloads travel in the notification itself; larger ones are stored and the
    /// notification carries their row id (`r<id>`).
    pub async fn publish(&self, payload: &str, now_ms: i64) -> StoreResult<()> {
        if payload.len() <= INLINE_LIMIT {
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(CHANNEL)
                .bind(format!("i{payload}"))
                .execute(&self.pool)
                .await?;
            return Ok(());
        }
        let mut transaction = self.pool.begin().await?;
        let id: i64 = sqlx::query_scalar("INSERT INTO events (created_at, payload) VALUES ($1, $2) RETURNING id")
            .bind(now_ms)
            .bind(payload)
            .fetch_one(&mut *transaction)
            .await?;
        // Remembered before the commit sends the notification, so the listener cannot hear it first; forgotten
        // again if the event may not have gone out (it is then fetched if it did, which is only wasted work).
        self.own_references.remember(id);
        let sent: StoreResult<()> = async move {
            // NOTIFY inside the transaction is delivered at commit, when the row is visible to the listeners.
            let notification = format!("r{id}");
            sqlx::query("SELECT pg_notify($1, $2)").bind(CHANNEL).bind(notification).execute(&mut *transaction).await?;
            sqlx::query("DELETE FROM events WHERE created_at < $1")
                .bind(now_ms - EVENT_RETENTION_MS)
                .execute(&mut *transaction)
                .await?;
            transaction.commit().await?;
            Ok(())
        }
        .await;
        if sent.is_err() {
            self.own_references.take(id);
        }
        sent
    }

    /// Starts listening; events published from now on are heard.
    pub async fn listen(&self) -> StoreResult<PostgresListener> {
        Ok(PostgresListener {
            listener: subscribe(&self.pool).await?,
            pool: self.pool.clone(),
            own_references: self.own_references.clone(),
            lost: false,
        })
    }
}

/// The ids of a handle's events stored by reference that its listener has not heard yet.
#[derive(Debug, Default)]
struct OwnReferences(Mutex<VecDeque<i64>>);

impl OwnReferences {
    fn ids(&self) -> std::sync::MutexGuard<'_, VecDeque<i64>> {
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn remember(&self, id: i64) {
        let mut ids = self.ids();
        if ids.len() == OWN_REFERENCES_KEPT {
            ids.pop_front();
        }
        ids.push_back(id);
    }

    /// Whether `id` is one of them (forgetting it: each is heard once).
    fn take(&self, id: i64) -> bool {
        let mut ids = self.ids();
        let at = ids.iter().position(|&own_id| own_id == id);
        at.map(|at| ids.remove(at)).is_some()
    }
}

/// A listener on its own connection, subscribed to the channel.
async fn subscribe(pool: &PgPool) -> StoreResult<PgListener> {
    let mut listener = PgListener::connect_with(pool).await?;
    // Report a lost connection at once instead of first waiting (up to the pool's acquire timeout) for a new
    // one: the node must stop trusting its caches as soon as it may be missing events.
    listener.eager_reconnect(false);
    listener.listen(CHANNEL).await?;
    Ok(listener)
}

/// How long a listener waits in silence before it checks that its connection still answers: a connection cut
/// without a FIN or RST (a partition) would otherwise wait for events forever.
const HEARTBEAT: Duration = Duration::from_secs(15);
const HEARTBEAT_ANSWER: Duration = Duration::from_secs(5);

/// The receiving side: one dedicated connection, replaced when it fails.
#[derive(Debug)]
pub struct PostgresListener {
    listener: PgListener,
    pool: PgPool,
    /// Shared with the `PostgresEvents` it was made from: its events stored by reference, not to be fetched.
    own_references: Arc<OwnReferences>,
    /// The connection failed and has not been replaced yet.
    lost: bool,
}

impl PostgresListener {
    /// Waits for the next event. After the connection is lost it answers `Unreachable` about every half second
    /// (or every acquire timeout) until a new connection listens, then `Reconnected` once.
    pub async fn next(&mut self) -> ListenEvent {
        if self.lost {
            tokio::time::sleep(Duration::from_millis(500)).await;
            // A new listener rather than sqlx's reconnect: after some errors (a reset connection) sqlx keeps the
            // dead connection and would never connect again.
            return match subscribe(&self.pool).await {
                Ok(listener) => {
                    self.listener = listener;
                    self.lost = false;
                    tracing::info!("event listener reconnected to PostgreSQL");
                    ListenEvent::Reconnected
                }
                Err(_) => ListenEvent::Unreachable,
            };
        }
        loop {
            let received = match tokio::time::timeout(HEARTBEAT, self.listener.try_recv()).await {
                Ok(received) => received,
                Err(_) => {
                    let probe = sqlx::query("SELECT 1").execute(&mut self.listener);
                    if matches!(tokio::time::timeout(HEARTBEAT_ANSWER, probe).await, Ok(Ok(_))) {
                        continue;
                    }
                    tracing::warn!("event listener's connection stopped answering; reconnecting");
                    self.lost = true;
                    return ListenEvent::Unreachable;
                }
            };
            match received {
                Ok(Some(notification)) => match self.resolve(notification.payload()).await {
                    Some(event) => return event,
                    None => continue,
                },
                Ok(None) => {
                    tracing::warn!("event listener lost its PostgreSQL connection; reconnecting");
                    self.lost = true;
                    return ListenEvent::Unreachable;
                }
                Err(error) => {
                    tracing::warn!(%error, "event listener lost PostgreSQL; reconnecting");
                    self.lost = true;
                    return ListenEvent::Unreachable;
                }
            }
        }
    }

    /// The event a notification carries, fetching it if it went by reference; `None` for this node's own event
    /// stored by reference. An event that cannot be read (or that this version does not understand) was missed.
    async fn resolve(&self, notification: &str) -> Option<ListenEvent> {
        if let Some(inline) = notification.strip_prefix('i') {
            return Some(ListenEvent::Payload(inline.to_owned()));
        }
        let Some(id) = notification.strip_prefix('r').and_then(|id| id.parse::<i64>().ok()) else {
            tracing::warn!(notification, "a notification this version does not understand");
            return Some(ListenEvent::Missed);
        };
        if self.own_references.take(id) {
            return None;
        }
        Some(
            match sqlx::query_scalar("SELECT payload FROM events WHERE id = $1").bind(id).fetch_one(&self.pool).await {
                Ok(payload) => ListenEvent::Payload(payload),
                Err(error) => {
                    tracing::warn!(%error, id, "an event stored by reference could not be read");
                    ListenEvent::Missed
                }
            },
        )
    }
}

/// A schema of its own in a PostgreSQL database, for a test or a benchmark that must leave the rest of the
/// database alone. Its name is `{prefix}_{unix seconds}_{pid}_{serial}`; creating one also drops schemas of the
/// same prefix older than an hour (left behind by a run that failed or was killed), so runs clean up after
/// each other.
#[derive(Debug)]
pub struct ScratchSchema {
    base: String,
    name: String,
    url: String,
}

impl ScratchSchema {
    pub async fn create(base_url: &str, prefix: &str) -> StoreResult<ScratchSchema> {
        use sqlx::Connection;
        static SERIAL: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_secs();
        let serial = SERIAL.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = format!("{prefix}_{now}_{}_{serial}", std::process::id());
        let mut connection = sqlx::PgConnection::connect(base_url).await?;
        let existing: Vec<String> = sqlx::query_scalar("SELECT nspname::text FROM pg_namespace WHERE nspname LIKE $1")
            .bind(format!("{prefix}\\_%"))
            .fetch_all(&mut connection)
            .await?;
        for stale in existing {
            let created = stale.strip_prefix(prefix).and_then(|rest| rest.split('_').nth(1)?.parse::<u64>().ok());
            if created.is_some_and(|secs| secs + 3600 < now) {
                let drop = format!("DROP SCHEMA IF EXISTS \"{stale}\" CASCADE");
                sqlx::raw_sql(sqlx::AssertSqlSafe(drop)).execute(&mut connection).await?;
            }
        }
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE SCHEMA \"{name}\""))).execute(&mut connection).await?;
        let separator = if base_url.contains('?') { '&' } else { '?' };
        let url = format!("{base_url}{separator}options=-c%20search_path%3D{name}");
        Ok(ScratchSchema { base: base_url.to_owned(), name, url })
    }

    /// A database URL whose connections work in this schema.
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub async fn drop(self) -> StoreResult<()> {
        use sqlx::Connection;
        let mut connection = sqlx::PgConnection::connect(&self.base).await?;
        let drop = format!("DROP SCHEMA IF EXISTS \"{}\" CASCADE", self.name);
        sqlx::raw_sql(sqlx::AssertSqlSafe(drop)).execute(&mut connection).await?;
        Ok(())
    }
}
