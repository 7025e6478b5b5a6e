//! A SQLite store's file copied whole, for backups: an online snapshot of a live database, the examination of a
//! copy before it is restored (is it SQLite, undamaged, Tessera's, of a schema this Tessera knows), and the named
//! secrets a copy carries with it. Nothing here knows what a secret means (the server key is the server's); what
//! it knows is the file, the schema's migrations and the `shared_secrets` table.
//!
//! Each function opens a connection of its own to the file it is given and closes it before answering: none of
//! this goes through a [`crate::SqliteStore`], whose opening would migrate the file and start its checkpoints.

use std::io::Read;
use std::path::Path;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};
use sqlx::{Connection, Row};

use crate::{StoreError, StoreResult};

/// What every SQLite database file begins with.
const SQLITE_HEADER: &[u8; 16] = b"SQLite format 3\0";

/// Copies the live database at `database` into `into` (which must not exist or be empty) as one consistent
/// snapshot, then writes `secrets` into the copy's `shared_secrets` table, so the copy is a database of its own
/// in rollback-journal mode (one file, no `-wal` beside it).
///
/// The snapshot is SQLite's `VACUUM INTO`: one read transaction on the source, which in WAL mode neither waits for
/// the writer nor holds it up. What it does hold back is the WAL's checkpoint: pages committed during the copy
/// stay in the WAL until it ends (see ARCHITECTURE.md, "Backups").
pub async fn snapshot(database: &Path, into: &Path, secrets: &[(&str, &[u8])]) -> StoreResult<()> {
    // Absolute, so that neither path can be read as a URI: `VACUUM INTO 'file:x/b'` (URI filenames are on) wrote
    // the copy to `x/b`, not to the file this function was given and checks afterwards.
    let absolute = |path: &Path| {
        std::path::absolute(path)
            .map_err(|error| StoreError::Invalid(format!("{} has no absolute form: {error}", path.display())))
    };
    let (database, into) = (absolute(database)?, absolute(into)?);
    let (database, into) = (database.as_path(), into.as_path());
    let source = SqliteConnectOptions::new()
        .filename(database)
        .create_if_missing(false)
        .foreign_keys(false)
        // Opening a WAL database may wait for a lock a moment (a checkpoint, the server's own start).
        .busy_timeout(Duration::from_secs(30));
    let mut connection = SqliteConnection::connect_with(&source).await?;
    let copied = sqlx::query("VACUUM INTO $1")
        .bind(into.to_str().ok_or_else(|| StoreError::Invalid(format!("{} is not UTF-8", into.display())))?)
        .execute(&mut connection)
        .await;
    connection.close().await?;
    copied?;

    let copy = SqliteConnectOptions::new().filename(into).create_if_missing(false).foreign_keys(false);
    let mut connection = SqliteConnection::connect_with(&copy).await?;
    let sealed = async {
        // One file: a backup must not need a -wal beside it to be whole. FULL syncs the file at the commit.
        sqlx::query("PRAGMA journal_mode = DELETE").execute(&mut connection).await?;
        sqlx::query("PRAGMA synchronous = FULL").execute(&mut connection).await?;
        let mut transaction = connection.begin().await?;
        for (name, value) in secrets {
            sqlx::query("INSERT INTO shared_secrets (name, value) VALUES ($1, $2) ON CONFLICT (name) DO UPDATE SET value = excluded.value")
                .bind(*name)
                .bind(*value)
                .execute(&mut *transaction)
                .await?;
        }
        transaction.commit().await?;
        Ok::<(), sqlx::Error>(())
    }
    .await;
    connection.close().await?;
    Ok(sealed?)
}

/// Why a file cannot be restored, each reason in words an operator can act on.
#[derive(Debug, thiserror::Error)]
pub enum NotRestorable {
    #[error("it is not a SQLite database")]
    NotSqlite,
    #[error("it is damaged (SQLite's integrity check: {0})")]
    Damaged(String),
    #[error("it is a SQLite database but not Tessera's (it has no table of Tessera's migrations)")]
    NotTessera,
    #[error("its schema's migration {version} did not finish")]
    Unfinished { version: i64 },
    #[error(
        "it was made by a newer Tessera (its migration {version}, \"{description}\", is unknown to this one, which \
         knows up to {known}); restore it with that version or a later one"
    )]
    Newer { version: i64, description: String, known: i64 },
    #[error(
        "its migration {version} differs from this Tessera's (the schema was changed by hand or by another program)"
    )]
    Altered { version: i64 },
    #[error(
        "it holds {0}, which Tessera's schema has none of (a trigger would run inside the restored store, and could \
         copy its key out of the table it is removed from)"
    )]
    Foreign(String),
    #[error("it cannot be read")]
    Unreadable(#[source] StoreError),
}

/// What a restorable copy holds, as far as restoring it cares.
#[derive(Debug)]
pub struct Examined {
    /// The newest migration applied to its schema.
    pub schema_version: i64,
    /// The value of the secret asked for, if the copy holds one.
    pub secret: Option<Vec<u8>>,
}

/// Examines the file at `file` without changing it (nor writing anything beside it): a SQLite database, whole by
/// its integrity check, with Tessera's migrations table, every migration applied known to this Tessera with the
/// same checksum; and answers the secret named `secret_name` it holds, if any.
pub async fn examine(file: &Path, secret_name: &str) -> Result<Examined, NotRestorable> {
    let mut header = [0u8; 16];
    let read = std::fs::File::open(file).and_then(|mut opened| opened.read_exact(&mut header));
    match read {
        Ok(()) if &header == SQLITE_HEADER => {}
        Ok(()) => return Err(NotRestorable::NotSqlite),
        Err(error) if error.kind() == std::io::ErrorKind::UnexpectedEof => return Err(NotRestorable::NotSqlite),
        Err(error) => return Err(NotRestorable::Unreadable(StoreError::Unavailable(Box::new(error)))),
    }
    // Immutable: SQLite takes no lock and makes no -wal or -shm beside a file that may sit in a read-only place.
    // Absolute, so that a name beginning `file:` is not read as a URI naming another file.
    let file = std::path::absolute(file)
        .map_err(|error| NotRestorable::Unreadable(StoreError::Unavailable(Box::new(error))))?;
    let options = SqliteConnectOptions::new().filename(&file).read_only(true).immutable(true).foreign_keys(false);
    let mut connection = SqliteConnection::connect_with(&options)
        .await
        .map_err(|error| NotRestorable::Unreadable(StoreError::from(error)))?;
    let examined = examine_on(&mut connection, secret_name).await;
    let _ = connection.close().await;
    examined
}

async fn examine_on(connection: &mut SqliteConnection, secret_name: &str) -> Result<Examined, NotRestorable> {
    let unreadable = |error: sqlx::Error| match &error {
        // SQLITE_NOTADB (26) and SQLITE_CORRUPT (11): a file with SQLite's header but not a database inside.
        sqlx::Error::Database(database) if matches!(database.code().as_deref(), Some("26" | "11")) => {
            NotRestorable::Damaged(database.message().to_owned())
        }
        _ => NotRestorable::Unreadable(StoreError::from(error)),
    };
    // At most ten problems: the first few say what is wrong; a damaged file of a million rows could list them all.
    let problems: Vec<String> =
        sqlx::query_scalar("PRAGMA integrity_check(10)").fetch_all(&mut *connection).await.map_err(unreadable)?;
    if problems != ["ok"] {
        return Err(NotRestorable::Damaged(problems.join("; ")));
    }
    let has_migrations: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = '_sqlx_migrations')",
    )
    .fetch_one(&mut *connection)
    .await
    .map_err(unreadable)?;
    if !has_migrations {
        return Err(NotRestorable::NotTessera);
    }
    // Tessera's migrations make tables and indexes only: a trigger or a view was added by someone else.
    let foreign: Vec<String> =
        sqlx::query_scalar("SELECT type || ' ' || name FROM sqlite_schema WHERE type IN ('trigger', 'view') LIMIT 5")
            .fetch_all(&mut *connection)
            .await
            .map_err(unreadable)?;
    if !foreign.is_empty() {
        return Err(NotRestorable::Foreign(foreign.join(", ")));
    }
    let applied = sqlx::query("SELECT version, description, success, checksum FROM _sqlx_migrations ORDER BY version")
        .fetch_all(&mut *connection)
        .await
        .map_err(unreadable)?;
    let known = crate::sqlite::known_migrations();
    let newest_known = known.iter().map(|(version, _)| *version).max().unwrap_or(0);
    let mut schema_version = 0;
    for row in &applied {
        let version: i64 = row.try_get("version").map_err(unreadable)?;
        let description: String = row.try_get("description").map_err(unreadable)?;
        let success: bool = row.try_get("success").map_err(unreadable)?;
        let checksum: Vec<u8> = row.try_get("checksum").map_err(unreadable)?;
        if !success {
            return Err(NotRestorable::Unfinished { version });
        }
        match known.iter().find(|(known_version, _)| *known_version == version) {
            None => return Err(NotRestorable::Newer { version, description, known: newest_known }),
            Some((_, known_checksum)) if *known_checksum != checksum.as_slice() => {
                return Err(NotRestorable::Altered { version });
            }
            Some(_) => schema_version = schema_version.max(version),
        }
    }
    if applied.is_empty() {
        return Err(NotRestorable::NotTessera);
    }
    let has_secrets: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = 'shared_secrets')",
    )
    .fetch_one(&mut *connection)
    .await
    .map_err(unreadable)?;
    let secret = if has_secrets {
        sqlx::query_scalar("SELECT value FROM shared_secrets WHERE name = $1")
            .bind(secret_name)
            .fetch_optional(&mut *connection)
            .await
            .map_err(unreadable)?
    } else {
        None
    };
    Ok(Examined { schema_version, secret })
}

/// Deletes the secret named `name` from the database at `file` (a copy being restored), its bytes overwritten
/// rather than left in a free page (`secure_delete`), and syncs the file.
pub async fn remove_secret(file: &Path, name: &str) -> StoreResult<()> {
    let options = SqliteConnectOptions::new().filename(file).create_if_missing(false).foreign_keys(false);
    let mut connection = SqliteConnection::connect_with(&options).await?;
    let removed = async {
        sqlx::query("PRAGMA secure_delete = ON").execute(&mut connection).await?;
        sqlx::query("PRAGMA synchronous = FULL").execute(&mut connection).await?;
        sqlx::query("DELETE FROM shared_secrets WHERE name = $1").bind(name).execute(&mut connection).await?;
        Ok::<(), sqlx::Error>(())
    }
    .await;
    connection.close().await?;
    Ok(removed?)
}
