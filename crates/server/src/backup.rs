//! Backups of a SQLite store, and their restore: `tessera backup` and `tessera restore`.
//!
//! A backup is one SQLite file: an online snapshot of the store (`VACUUM INTO`, taken beside a running server
//! without stopping its ingest) with the server key written into its `shared_secrets` table, under the name the
//! PostgreSQL store keeps its key by. Without its key a database is useless: every token digest is an HMAC under
//! it. So the file holds everything a token needs, is mode 0600, and appears under its name only when whole
//! (written beside it, synced, renamed, the directory synced).
//!
//! A restore examines the file before it touches anything (SQLite, whole, Tessera's, no migration this Tessera
//! does not know, a key of the right length), then takes the data directory's lock for its whole length (a
//! server cannot start midway, nor is one running), keeps an existing store aside only when asked to replace it
//! (`--force`: moved whole into `replaced-<time>/`, a data directory of its own), writes the key back into
//! `server.key` (0600) and the database without it beside their final names, and renames them into place. At
//! rest in a data directory the key lives only in `server.key`, as for a store that was never backed up.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tessera_core::ServerKey;
use tessera_store::StoreError;
use tessera_store::sqlite_backup::{self, NotRestorable};

use crate::bootstrap::{SERVER_KEY_FILE, SHARED_SERVER_KEY, create_private_dir, read_server_key};
use crate::config::{Config, Database};
use crate::data_lock::{LOCK_FILE, LockError, lock_data_dir};

/// What went wrong, each in words that say what to do; `tessera` maps each to an exit code.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("{0}")]
    Configuration(String),
    #[error(
        "the store is PostgreSQL: back it up with pg_dump (pg_dump -Fc -f FILE URL; the server key is in the database \
         and comes along), as the README's \"Backups\" section shows"
    )]
    PostgresBackup,
    #[error(
        "the store is PostgreSQL: restore a pg_dump archive with pg_restore into an empty database and point the \
         nodes at it, as the README's \"Backups\" section shows"
    )]
    PostgresRestore,
    #[error("there is no store at {} to back up", .0.display())]
    NoStore(PathBuf),
    #[error("there is no backup file {}", .0.display())]
    NoBackupFile(PathBuf),
    #[error("the server key {} cannot be read, and a backup without it could check no token", path.display())]
    NoKey { path: PathBuf, source: io::Error },
    #[error("--to {} names a file of the store itself; write the backup elsewhere", .0.display())]
    OntoTheStore(PathBuf),
    #[error("--to {} is a directory; name the backup file", .0.display())]
    ToADirectory(PathBuf),
    #[error("the backup file {} exists already; give --force to replace it", .0.display())]
    BackupExists(PathBuf),
    #[error(transparent)]
    Locked(#[from] LockError),
    #[error("{} cannot be restored: {reason}; nothing was changed", path.display())]
    NotRestorable { path: PathBuf, reason: NotRestorable },
    #[error(
        "{} holds no server key, so it is not a file `tessera backup` made (a copy of the database alone would turn \
         every token into garbage); nothing was changed",
        .0.display()
    )]
    NoKeyInBackup(PathBuf),
    #[error("the server key in {} has {found} bytes, not {}; nothing was changed", path.display(), ServerKey::LEN)]
    KeyLength { path: PathBuf, found: usize },
    #[error(
        "{} already holds a store ({}); give --force to replace it (the old one is then kept aside in {}/replaced-TIME)",
        dir.display(), found.join(", "), dir.display()
    )]
    StoreExists { dir: PathBuf, found: Vec<String> },
    #[error("{doing}")]
    Io { doing: String, source: io::Error },
    #[error("{doing}")]
    Store { doing: String, source: StoreError },
    #[error("{} changed while it was being restored; nothing was changed", .0.display())]
    ChangedDuringRestore(PathBuf),
    #[error("the copy failed its own check ({0}); the backup was not written")]
    CopyUnsound(String),
}

impl BackupError {
    fn io(doing: impl Into<String>) -> impl FnOnce(io::Error) -> BackupError {
        let doing = doing.into();
        move |source| BackupError::Io { doing, source }
    }

    fn store(doing: impl Into<String>) -> impl FnOnce(StoreError) -> BackupError {
        let doing = doing.into();
        move |source| BackupError::Store { doing, source }
    }
}

/// A backup written.
#[derive(Debug)]
pub struct BackedUp {
    /// The database that was copied.
    pub database: PathBuf,
    pub bytes: u64,
    /// From the start of the snapshot to the file's rename into place (the copy's check included).
    pub took: Duration,
    /// Of which the snapshot itself (the read transaction on the live store).
    pub snapshot_took: Duration,
}

/// The SQLite database file `config` names, or why there is none.
fn sqlite_database(config: &Config, postgres: BackupError) -> Result<PathBuf, BackupError> {
    match config.database().map_err(BackupError::Configuration)? {
        Database::Sqlite(path) => Ok(path),
        Database::Postgres(_) => Err(postgres),
    }
}

/// The directory a database file lives in (its key and lock beside it), as `bootstrap::open_store` reads it.
fn directory_of(database: &Path) -> PathBuf {
    match database.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// `name` with `suffix` appended (`tessera.db` → `tessera.db-wal`), as SQLite names a database's companions.
fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// A file being written under a temporary name, removed unless it was renamed into place.
struct Partial {
    path: PathBuf,
    placed: bool,
}

impl Partial {
    /// Creates `path` empty, mode 0600, refusing one that exists.
    fn create(path: PathBuf) -> Result<(Partial, File), BackupError> {
        let mut options = OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let file = options.open(&path).map_err(BackupError::io(format!("cannot create {}", path.display())))?;
        Ok((Partial { path, placed: false }, file))
    }

    /// Syncs the file and renames it to `to`, then syncs the directory, so the name appears only with the whole file.
    fn place(mut self, to: &Path) -> Result<(), BackupError> {
        File::open(&self.path)
            .and_then(|file| file.sync_all())
            .map_err(BackupError::io(format!("cannot sync {}", self.path.display())))?;
        std::fs::rename(&self.path, to).map_err(BackupError::io(format!(
            "cannot rename {} to {}",
            self.path.display(),
            to.display()
        )))?;
        self.placed = true;
        sync_directory(&directory_of(to))
    }
}

impl Drop for Partial {
    fn drop(&mut self) {
        if !self.placed {
            let _ = std::fs::remove_file(&self.path);
            let _ = std::fs::remove_file(with_suffix(&self.path, "-journal"));
        }
    }
}

fn sync_directory(dir: &Path) -> Result<(), BackupError> {
    File::open(dir).and_then(|dir| dir.sync_all()).map_err(BackupError::io(format!("cannot sync {}", dir.display())))
}

/// A temporary name beside `path`, hidden and unique to this process and call.
fn partial_name(path: &Path, what: &str) -> PathBuf {
    let name = path.file_name().map(|name| name.to_string_lossy().into_owned()).unwrap_or_default();
    path.with_file_name(format!(".{name}.{what}-{}-{}", std::process::id(), crate::entropy::new_id()))
}

/// Whether `candidate` and `file` are the same path once their directories are resolved (`file` need not exist).
fn same_place(candidate: &Path, file: &Path) -> bool {
    let resolve = |path: &Path| -> Option<PathBuf> {
        let dir = std::fs::canonicalize(directory_of(path)).ok()?;
        Some(dir.join(path.file_name()?))
    };
    matches!((resolve(candidate), resolve(file)), (Some(a), Some(b)) if a == b)
}

/// Writes a backup of the store `config` names to `to`: a consistent snapshot of the live database with its
/// server key inside, mode 0600. An existing `to` is replaced only with `force` (and then atomically: the old
/// file stays whole until the new one takes its name).
pub async fn backup(config: &Config, to: &Path, force: bool) -> Result<BackedUp, BackupError> {
    let database = sqlite_database(config, BackupError::PostgresBackup)?;
    if !database.is_file() {
        return Err(BackupError::NoStore(database));
    }
    let dir = directory_of(&database);
    let key_path = dir.join(SERVER_KEY_FILE);
    let key = read_server_key(&key_path).map_err(|source| BackupError::NoKey { path: key_path.clone(), source })?;
    let own_files = [
        database.clone(),
        with_suffix(&database, "-wal"),
        with_suffix(&database, "-shm"),
        with_suffix(&database, "-journal"),
        key_path,
        dir.join(LOCK_FILE),
    ];
    if own_files.iter().any(|own| same_place(to, own)) {
        return Err(BackupError::OntoTheStore(to.to_path_buf()));
    }
    match std::fs::symlink_metadata(to) {
        Ok(metadata) if metadata.is_dir() => return Err(BackupError::ToADirectory(to.to_path_buf())),
        Ok(_) if !force => return Err(BackupError::BackupExists(to.to_path_buf())),
        _ => {}
    }

    let started = Instant::now();
    let (partial, file) = Partial::create(partial_name(to, "partial"))?;
    drop(file);
    sqlite_backup::snapshot(&database, &partial.path, &[(SHARED_SERVER_KEY, &key[..])])
        .await
        .map_err(BackupError::store(format!("cannot copy {}", database.display())))?;
    let snapshot_took = started.elapsed();
    // The copy is checked as a restore would check it, so a backup that could not be restored is never written.
    let examined = sqlite_backup::examine(&partial.path, SHARED_SERVER_KEY)
        .await
        .map_err(|reason| BackupError::CopyUnsound(reason.to_string()))?;
    if examined.secret.as_deref() != Some(&key[..]) {
        return Err(BackupError::CopyUnsound("the server key did not come along".into()));
    }
    let bytes = std::fs::metadata(&partial.path).map(|metadata| metadata.len()).unwrap_or(0);
    partial.place(to)?;
    Ok(BackedUp { database, bytes, took: started.elapsed(), snapshot_took })
}

/// A restore done.
#[derive(Debug)]
pub struct Restored {
    pub data_dir: PathBuf,
    pub database: PathBuf,
    /// Where the store that was replaced now is (a data directory of its own), if there was one.
    pub kept_aside: Option<PathBuf>,
    /// The newest migration of the restored schema (a server brings it up to date at start).
    pub schema_version: i64,
}

/// Restores the backup `from` into the store `config` names. Refuses, changing nothing, a file that is not a
/// Tessera backup, a data directory a running server holds, and an existing store unless `force` (which keeps
/// it aside).
pub async fn restore(config: &Config, from: &Path, force: bool) -> Result<Restored, BackupError> {
    let database = sqlite_database(config, BackupError::PostgresRestore)?;
    if !from.exists() {
        return Err(BackupError::NoBackupFile(from.to_path_buf()));
    }
    // Everything about the file is checked before anything is touched.
    let examined = sqlite_backup::examine(from, SHARED_SERVER_KEY)
        .await
        .map_err(|reason| BackupError::NotRestorable { path: from.to_path_buf(), reason })?;
    let key_bytes = examined.secret.ok_or_else(|| BackupError::NoKeyInBackup(from.to_path_buf()))?;
    if key_bytes.len() != ServerKey::LEN {
        return Err(BackupError::KeyLength { path: from.to_path_buf(), found: key_bytes.len() });
    }

    let dir = directory_of(&database);
    create_private_dir(&dir).map_err(BackupError::io(format!("cannot create the data directory {}", dir.display())))?;
    // Held to the end: no server runs on the directory now, and none can start until the store is whole.
    let _lock = lock_data_dir(&dir)?;
    let key_path = dir.join(SERVER_KEY_FILE);
    let companions = [with_suffix(&database, "-wal"), with_suffix(&database, "-journal")];
    let existing: Vec<PathBuf> = [database.clone(), key_path.clone()]
        .into_iter()
        .chain(companions.iter().cloned())
        .filter(|path| path.symlink_metadata().is_ok())
        .collect();
    if !existing.is_empty() && !force {
        let found = existing
            .iter()
            .map(|path| path.file_name().map(|name| name.to_string_lossy().into_owned()).unwrap_or_default())
            .collect();
        return Err(BackupError::StoreExists { dir, found });
    }

    // The new files beside their final names, whole and synced, before anything of the old store moves.
    let (restored, mut file) = Partial::create(partial_name(&database, "restoring"))?;
    let mut source = File::open(from).map_err(BackupError::io(format!("cannot read {}", from.display())))?;
    io::copy(&mut source, &mut file).map_err(BackupError::io(format!("cannot copy {}", from.display())))?;
    drop(file);
    // What is put in place is what was checked: the copy is examined again, in case the file changed meanwhile
    // (a backup still being copied in by another program, say).
    let copied = sqlite_backup::examine(&restored.path, SHARED_SERVER_KEY)
        .await
        .map_err(|reason| BackupError::NotRestorable { path: from.to_path_buf(), reason })?;
    if copied.secret.as_deref() != Some(key_bytes.as_slice()) {
        return Err(BackupError::ChangedDuringRestore(from.to_path_buf()));
    }
    sqlite_backup::remove_secret(&restored.path, SHARED_SERVER_KEY)
        .await
        .map_err(BackupError::store("cannot take the server key out of the restored database"))?;
    let (key_partial, mut key_file) = Partial::create(partial_name(&key_path, "restoring"))?;
    key_file.write_all(&key_bytes).map_err(BackupError::io(format!("cannot write {}", key_partial.path.display())))?;
    drop(key_file);

    let kept_aside = if existing.is_empty() { None } else { Some(keep_aside(&dir, &existing)?) };
    // A -shm holds the index of a WAL that is gone; SQLite would trust it for the new file.
    let shared_memory = with_suffix(&database, "-shm");
    match std::fs::remove_file(&shared_memory) {
        Ok(()) => {}
        Err(error) if error.kind() == io::ErrorKind::NotFound => {}
        Err(error) => return Err(BackupError::io(format!("cannot remove {}", shared_memory.display()))(error)),
    }
    // The key first: a restore cut short between the two renames leaves a key and no database, which the next
    // restore (with --force) replaces; the other order would leave a database whose next start makes a new key.
    key_partial.place(&key_path)?;
    restored.place(&database)?;
    Ok(Restored { data_dir: dir, database, kept_aside, schema_version: examined.schema_version })
}

/// Moves the files of a store that is being replaced into a new `replaced-<UTC time>` directory beside them,
/// under their own names, so that directory is a data directory of its own (its WAL still beside its database).
fn keep_aside(dir: &Path, existing: &[PathBuf]) -> Result<PathBuf, BackupError> {
    let stamp: String = tessera_core::time::rfc3339(crate::time::now_ms())
        .chars()
        .take_while(|character| *character != '.')
        .filter(|character| character.is_ascii_digit() || *character == 'T')
        .collect();
    let mut aside = dir.join(format!("replaced-{stamp}Z"));
    let mut attempt = 1;
    loop {
        let mut builder = std::fs::DirBuilder::new();
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        match builder.create(&aside) {
            Ok(()) => break,
            Err(error) if error.kind() == io::ErrorKind::AlreadyExists => {
                attempt += 1;
                aside = dir.join(format!("replaced-{stamp}Z-{attempt}"));
            }
            Err(error) => return Err(BackupError::io(format!("cannot create {}", aside.display()))(error)),
        }
    }
    for path in existing {
        let Some(name) = path.file_name() else { continue };
        let moved = aside.join(name);
        std::fs::rename(path, &moved).map_err(BackupError::io(format!(
            "cannot move {} to {}",
            path.display(),
            moved.display()
        )))?;
    }
    sync_directory(&aside)?;
    sync_directory(dir)?;
    Ok(aside)
}
