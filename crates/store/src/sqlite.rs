//! The embedded store: one SQLite file in WAL mode with `synchronous = FULL`, so a committed transaction survives
//! a crash of the process or the machine. Write transactions begin IMMEDIATE: they take the write lock first, so
//! one that reads before it writes never fails with SQLITE_BUSY when another writer commits in between.
//!
//! The SQL itself lives in `sql/`, shared with the PostgreSQL store and included into both modules. Why text
//! inclusion and not generics: the statements are the same for both databases, but code generic over
//! `sqlx::Database` needs a where-clause for every value type it binds or reads on every function (bounds on
//! associated types are not implied), which would bury the SQL. Included twice, the one copy of the SQL compiles
//! against each backend's concrete types. Each backend supplies the few things that differ, below.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::Transaction;

use crate::{Invalidation, StoreError, StoreResult};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// The schema's migrations this Tessera knows, as (version, checksum): what a restored copy may have applied.
pub(crate) fn known_migrations() -> Vec<(i64, &'static [u8])> {
    MIGRATOR
        .iter()
        .filter(|migration| !migration.migration_type.is_down_migration())
        .map(|migration| (migration.version, &*migration.checksum))
        .collect()
}

/// The SQLite implementation of [`Store`].
#[derive(Debug, Clone)]
pub struct SqliteStore {
    /// Reads.
    pool: SqlitePool,
    /// Write transactions, on one connection: they queue here, without delay, for the one write lock SQLite has,
    /// instead of in SQLite's busy handler, which sleeps 1, 2, 5, 10, 15… ms between tries (a reading waiting
    /// behind the token-usage flush took 30 ms that way: the p99 of paced ingest).
    writes: SqlitePool,
}

type Backend = SqliteStore;
type Db = sqlx::Sqlite;
type DbRow = SqliteRow;
type DbConnection = sqlx::SqliteConnection;

/// The database file's size, for `StoreFigures` (the WAL, checkpointed every second, is left out).
const DATABASE_BYTES: &str = "SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()";

/// Row locks are PostgreSQL's; SQLite's IMMEDIATE transactions are serial, which is stronger.
macro_rules! for_update {
    () => {
        ""
    };
}

async fn begin_write(store: &SqliteStore) -> StoreResult<Transaction<'static, Db>> {
    Ok(store.writes.begin_with("BEGIN IMMEDIATE").await?)
}

/// Where a write that is one statement runs: on the write connection, queued behind the write transactions,
/// rather than on a read connection, where it would meet the held write lock in SQLite's busy handler and sleep
/// 1, 2, 5, 10… ms between tries (the first reading of a new device waited up to 300 ms that way).
fn single_writes(store: &SqliteStore) -> &SqlitePool {
    &store.writes
}

/// One node on SQLite: nobody else holds a cache to invalidate.
async fn tell_in(_transaction: &mut DbConnection, _invalidations: &[Invalidation]) -> StoreResult<()> {
    Ok(())
}

fn pool_figures(store: &SqliteStore) -> Vec<crate::PoolFigures> {
    vec![crate::PoolFigures::of("reads", &store.pool), crate::PoolFigures::of("writes", &store.writes)]
}

async fn close_pools(store: &SqliteStore) {
    store.writes.close().await;
    store.pool.close().await;
}

/// How often the WAL is copied back into the database file.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);

/// Copies committed pages from the WAL into the database file every second, until the store is closed, in three
/// PASSIVE steps: the bulk on a read connection, which neither waits for readers nor holds up the writer; again
/// there, for what was committed during the bulk's fsync (~10 ms); then the last few frames on the write
/// connection, queued between two commits like any write.
///
/// The last step is what lets the WAL start over from its beginning: SQLite rewinds it only when a write
/// transaction begins on a fully copied WAL and no reader still uses an older snapshot. Under steady ingest a
/// commit follows the last one within microseconds, so a checkpoint beside the writer always finished a few
/// frames behind it and the WAL grew without end (600 MB after 20 s of ingest). Done right after the bulk, that
/// step held the writer up 13–18 ms (its fsync queued behind the bulk's writes); after the second pass it takes
/// under 3 ms. A long read holds both back (PASSIVE copies only what every reader has moved past): the WAL then
/// starts over a second or more later, and the write-connection step copies whatever the first two could not.
async fn checkpoint_in_background(reads: SqlitePool, writes: SqlitePool) {
    let mut ticker = tokio::time::interval(CHECKPOINT_EVERY);
    loop {
        ticker.tick().await;
        for pool in [&reads, &reads, &writes] {
            if pool.is_closed() {
                return;
            }
            if let Err(error) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)").execute(pool).await {
                if pool.is_closed() {
                    return;
                }
                tracing::warn!(%error, "WAL checkpoint failed; will retry");
            }
        }
    }
}

/// A transaction no other writer runs beside: IMMEDIATE is that already.
async fn begin_exclusive(store: &SqliteStore) -> StoreResult<Transaction<'static, Db>> {
    begin_write(store).await
}

impl SqliteStore {
    /// Opens (creating if needed) the database file at `path` and brings its schema up to date.
    pub async fn open(path: &Path) -> StoreResult<SqliteStore> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10))
            .pragma("cache_size", "-16000")
            // 1 KB pages (for a new database; an existing one keeps its own): a reading of each of many variables
            // lands on its own leaf of the readings table, and every commit writes each leaf it touched to the WAL
            // whole, then the checkpoint copies it again: ~8 KB of disk writes per reading with 4 KB pages, ~2 KB
            // with 1 KB. The price: a reading whose value and context take more than ~190 bytes (readings are a
            // WITHOUT ROWID table, kept like an index, ~230 bytes per row before it spills) needs an overflow page.
            .page_size(1024)
            // Checkpoints run in the background (`checkpoint_in_background`), not in the commit that happens to
            // cross the threshold: that commit and every reading waiting behind it paid for copying the WAL.
            .pragma("wal_autocheckpoint", "0")
            .pragma("journal_size_limit", "67108864");
        // No ping when a connection is taken from the pool (sqlx's default): a connection to a local file does
        // not go stale, and the ping is a round trip to the connection's thread.
        let pool = SqlitePoolOptions::new()
            .test_before_acquire(false)
            .max_connections(4)
            .min_connections(1)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options.clone())
            .await?;
        MIGRATOR.run(&pool).await.map_err(|error| StoreError::Internal(Box::new(error)))?;
        let writes = SqlitePoolOptions::new()
            .test_before_acquire(false)
            .max_connections(1)
            .min_connections(1)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(options)
            .await?;
        tokio::spawn(checkpoint_in_background(pool.clone(), writes.clone()));
        Ok(SqliteStore { pool, writes })
    }

    /// Opens an in-memory database, for tests of the store itself.
    pub async fn open_in_memory() -> StoreResult<SqliteStore> {
        let options = SqliteConnectOptions::from_str("sqlite::memory:")?.foreign_keys(true);
        // One connection: every connection to ":memory:" would be a database of its own.
        let pool = SqlitePoolOptions::new().max_connections(1).connect_with(options).await?;
        MIGRATOR.run(&pool).await.map_err(|error| StoreError::Internal(Box::new(error)))?;
        Ok(SqliteStore { writes: pool.clone(), pool })
    }
}

/// The SQL both backends share, compiled once per backend as a real module against this one's `Db`, `DbRow`,
/// `DbConnection`, `Backend` and write helpers (`sql/store.rs` names what it takes from here).
#[path = "sql/store.rs"]
#[allow(clippy::duplicate_mod, reason = "compiled once per backend on purpose: that is how the SQL is shared")]
mod shared_sql;
