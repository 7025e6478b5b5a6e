//! First start: the data directory, the server key, and the bootstrap account.

use crate::people::hash_password;
use std::fmt;
use std::io::{self, Read, Write};
use std::path::Path;

use std::sync::Arc;
use std::time::Duration;
use tessera_core::{AccountId, CollectionId, Scope, Secret, ServerKey, TeamId, TokenId, TokenKind, UserId};

use tessera_store::{
    Account, AccountStore, Bootstrap, Collection, Creator, PostgresEvents, PostgresStore, SqliteStore, Store,
    StoreError, Team, TokenRecord, User,
};

use crate::config::{Config, Database};
use crate::data_lock::{DataDirLock, lock_data_dir};
use crate::entropy::{new_id, new_secret, random_bytes};
use crate::time::now_ms;

/// The server key's file in a SQLite data directory.
pub(crate) const SERVER_KEY_FILE: &str = "server.key";
/// The name the server key is kept under in a shared database (and in a SQLite backup, `backup.rs`).
pub(crate) const SHARED_SERVER_KEY: &str = "server_key";
const ADMIN_EMAIL: &str = "admin@tessera.local";

/// What the first start reveals, once: shown to the operator and never stored in the clear.
#[derive(Clone)]
pub struct Credentials {
    pub account_id: AccountId,
    pub api_key: Secret,
    pub admin_email: String,
    pub admin_password: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("account_id", &self.account_id)
            .field("api_key", &self.api_key)
            .field("admin_email", &self.admin_email)
            .field("admin_password", &"<redacted>")
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("cannot create or read the data directory {path}")]
    DataDir { path: String, source: io::Error },
    #[error("the server key {path} is unreadable or damaged")]
    ServerKey { path: String, source: io::Error },
    #[error("cannot open the store at {path}")]
    Store { path: String, source: StoreError },
    #[error("{0}")]
    DatabaseUrl(String),
    #[error("cannot connect to PostgreSQL or bring its schema up to date")]
    Postgres(#[source] StoreError),
    #[error("cannot read or store the server key in the database")]
    SharedKey(#[source] StoreError),
    #[error("cannot create the bootstrap account")]
    Bootstrap(#[source] StoreError),
    #[error(transparent)]
    Locked(#[from] crate::data_lock::LockError),
}

/// An open store with the key its token digests are made under.
#[derive(Debug)]
pub struct Opened {
    pub store: Arc<dyn Store>,
    pub key: ServerKey,
    /// The channel to the other nodes, when the store is shared.
    pub events: Option<PostgresEvents>,
    /// The data directory's lock, when a server opened a SQLite store ([`open_store_to_serve`]).
    pub lock: Option<DataDirLock>,
}

/// Opens the configured store, bringing its schema up to date, and its server key, creating both as needed.
/// SQLite: the database file's directory (the data directory unless `database_url` names another file; 0700 when
/// Tessera creates it) holds the key file (0600) beside the database, so a key always goes with its database.
/// PostgreSQL: the database holds both, so that nodes need no local state; the first node to start chooses the key.
pub async fn open_store(config: &Config) -> Result<Opened, OpenError> {
    open(config, false).await
}

/// [`open_store`] for a server: a SQLite data directory is locked first (`data_lock.rs`), so that a second server
/// or a restore is turned away while this one runs.
pub async fn open_store_to_serve(config: &Config) -> Result<Opened, OpenError> {
    open(config, true).await
}

async fn open(config: &Config, to_serve: bool) -> Result<Opened, OpenError> {
    match config.database().map_err(OpenError::DatabaseUrl)? {
        Database::Sqlite(database) => {
            let data_dir = match database.parent() {
                Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
                _ => Path::new(".").to_path_buf(),
            };
            let data_dir = &data_dir;
            create_private_dir(data_dir)
                .map_err(|source| OpenError::DataDir { path: data_dir.display().to_string(), source })?;
            let lock = if to_serve { Some(lock_data_dir(data_dir)?) } else { None };
            let key_path = data_dir.join(SERVER_KEY_FILE);
            let key = load_or_create_server_key(&key_path)
                .map_err(|source| OpenError::ServerKey { path: key_path.display().to_string(), source })?;
            let store = SqliteStore::open(&database)
                .await
                .map_err(|source| OpenError::Store { path: database.display().to_string(), source })?;
            Ok(Opened { store: Arc::new(store), key, events: None, lock })
        }
        Database::Postgres(url) => {
            let store = PostgresStore::connect(&url).await.map_err(OpenError::Postgres)?;
            let proposed = random_bytes::<{ ServerKey::LEN }>();
            let stored = store.shared_secret(SHARED_SERVER_KEY, &proposed).await.map_err(OpenError::SharedKey)?;
            let key: [u8; ServerKey::LEN] = stored.try_into().map_err(|bytes: Vec<u8>| {
                OpenError::SharedKey(StoreError::Internal(
                    format!("the stored server key has {} bytes, not {}", bytes.len(), ServerKey::LEN).into(),
                ))
            })?;
            let events = store.events();
            Ok(Opened { store: Arc::new(store), key: ServerKey::new(&key), events: Some(events), lock: None })
        }
    }
}

pub(crate) fn create_private_dir(path: &Path) -> io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(path)
}

/// Reads the 32-byte server key, or creates it with mode 0600. `create_new` makes two processes starting at once
/// agree on one key: the loser of the race reads the winner's file.
fn load_or_create_server_key(path: &Path) -> io::Result<ServerKey> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.open(path) {
        Ok(mut file) => {
            let key = random_bytes::<{ ServerKey::LEN }>();
            file.write_all(&key)?;
            file.sync_all()?;
            Ok(ServerKey::new(&key))
        }
        Err(error) if error.kind() == io::ErrorKind::AlreadyExists => Ok(ServerKey::new(&read_server_key(path)?)),
        Err(error) => Err(error),
    }
}

/// The 32 bytes of an existing server key file.
pub(crate) fn read_server_key(path: &Path) -> io::Result<[u8; ServerKey::LEN]> {
    let mut bytes = Vec::with_capacity(ServerKey::LEN);
    // At most one byte more than a key: enough to tell a longer file, never a whole large one in memory.
    std::fs::File::open(path)?.take(ServerKey::LEN as u64 + 1).read_to_end(&mut bytes)?;
    bytes.try_into().map_err(|bytes: Vec<u8>| {
        let found = if bytes.len() > ServerKey::LEN { "more".to_owned() } else { bytes.len().to_string() };
        io::Error::new(io::ErrorKind::InvalidData, format!("expected {} bytes, found {found}", ServerKey::LEN))
    })
}

/// Adds a user to the data directory's account on the operator's authority (the command line).
pub async fn add_user_as_operator(config: &Config, new: crate::people::NewUser) -> Result<User, OperatorError> {
    let Opened { store, key, .. } = open_store(config).await?;
    let accounts = store.accounts().await.map_err(OpenError::Bootstrap)?;
    let account = match accounts.as_slice() {
        [only] => only.id,
        [] => return Err(OperatorError::Refused("the data directory has no account yet; run `tessera init`".into())),
        _ => return Err(OperatorError::Refused("the data directory holds several accounts".into())),
    };
    let audit = Arc::new(crate::audit::Audit::new(store.clone(), account, Duration::from_secs(90 * 24 * 60 * 60)));
    let tokens = Arc::new(crate::tokens::TokenService::new(store.clone(), key.clone(), 16, audit));
    let defaults = Config::new(config.data_dir.clone());
    let people = crate::people::PeopleService::new(
        store.clone(),
        tokens,
        key,
        defaults.access_token_ttl,
        defaults.refresh_token_ttl,
    );
    let created = people.create_user_as_operator(account, new).await;
    store.close().await;
    created.map_err(|error| OperatorError::Refused(error.to_string()))
}

#[derive(Debug, thiserror::Error)]
pub enum OperatorError {
    #[error(transparent)]
    Open(#[from] OpenError),
    #[error("{0}")]
    Refused(String),
}

/// Creates the bootstrap account if the store has none. Returns the credentials only when it created them.
pub async fn bootstrap(store: &dyn Store, key: &ServerKey) -> Result<Option<Credentials>, OpenError> {
    let now = now_ms();
    let account = AccountId(new_id());
    let admin = UserId(new_id());
    let api_key = new_secret(TokenKind::ApiKey);
    let admin_password = new_secret(TokenKind::ApiKey).expose()[4..28].to_owned();
    let records = Bootstrap {
        account: Account { id: account, name: "Tessera".into(), created_at_ms: now },
        default_collection: Collection {
            id: CollectionId(new_id()),
            account,
            name: "Default".into(),
            is_default: true,
            team: None,
            created_at_ms: now,
            tags: Default::default(),
        },
        api_key: TokenRecord {
            name: "API key".into(),
            ..TokenRecord::new(
                TokenId(new_id()),
                account,
                TokenKind::ApiKey,
                key.digest(&api_key),
                Scope::Account,
                Creator::System,
                now,
            )
        },
        admin: User {
            id: admin,
            account,
            email: ADMIN_EMAIL.into(),
            password_hash: hash_password(&admin_password),
            display_name: "Administrator".into(),
            phone: String::new(),
            is_admin: true,
            totp: None,
            created_at_ms: now,
        },
        admin_team: Team {
            id: TeamId(new_id()),
            account,
            tags: Default::default(),
            private_of: Some(admin),
            created_at_ms: now,
        },
    };
    let created = store.bootstrap(&records).await.map_err(OpenError::Bootstrap)?;
    Ok(created.then(|| Credentials { account_id: account, api_key, admin_email: ADMIN_EMAIL.into(), admin_password }))
}
