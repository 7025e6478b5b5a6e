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
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// The SQLite implementation of [`Store`].
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
}

type Backend = SqliteStore;
type Db = sqlx::Sqlite;
type DbRow = SqliteRow;
type DbConnection = sqlx::SqliteConnection;

/// Row locks are PostgreSQL's; SQLite's IMMEDIATE transactions are serial, which is stronger.
macro_rules! for_update {
    () => {
        ""
    };
}

async fn begin_write(pool: &SqlitePool) -> StoreResult<Transaction<'static, Db>> {
    Ok(pool.begin_with("BEGIN IMMEDIATE").await?)
}

/// A transaction no other writer runs beside: IMMEDIATE is that already.
async fn begin_exclusive(pool: &SqlitePool) -> StoreResult<Transaction<'static, Db>> {
    begin_write(pool).await
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
            .pragma("cache_size", "-16000");
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .min_connections(1)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await?;
        MIGRATOR.run(&pool).await.map_err(|error| StoreError::Internal(Box::new(error)))?;
        Ok(SqliteStore { pool })
    }

    /// Opens an in-memory database, for tests of the store itself.
    pub async fn open_in_memory() -> StoreResult<SqliteStore> {
        let options = SqliteConnectOptions::from_str("sqlite::memory:")?.foreign_keys(true);
        // One connection: every connection to ":memory:" would be a database of its own.
        let pool = SqlitePoolOptions::new().max_connections(1).connect_with(options).await?;
        MIGRATOR.run(&pool).await.map_err(|error| StoreError::Internal(Box::new(error)))?;
        Ok(SqliteStore { pool })
    }
}

include!("sql/store.rs");
include!("sql/people.rs");
