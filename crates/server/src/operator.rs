//! What the operator does from the command line (`tessera token …`, `tessera user list|reset-second-factor`,
//! `tessera device …`, `tessera variable values`, `tessera readings export`, `tessera status`), on the authority of
//! being able to open the data directory or the database: no credential of the API is presented, and every change
//! is recorded in the audit trail as `Actor::Operator`, in the change's own transaction.
//!
//! Beside a running server on SQLite: reads are safe (WAL readers in another process). A token revocation is
//! refused ([`OperatorError::HeldByServer`]): the server keeps a verified token in its cache for up to 10 minutes,
//! and nothing tells it that another process changed the file, so a revocation made here would not be honoured
//! there. While such a write runs, the command holds the data directory's lock, so no server starts in between. A
//! second factor's reset is allowed beside a server: no server caches users, each sign-in reads the user anew. On
//! PostgreSQL every change's invalidations go out in its transaction (`NOTIFY`), so the running nodes hear a
//! revocation made here at once, as they hear each other's.

use std::path::PathBuf;
use std::sync::Arc;

use tessera_core::{AccountId, DeviceId, Label, Reading, TokenId, UserId, VariableId};
use tessera_store::{
    Account, Actor, AuditEntry, Collection, Device, DeviceFilter, Page, Store, StoreError, StoreFigures, TimeRange,
    TokenRecord, TokenSelection, User, Variable,
};

use crate::audit::{self, AuditEvent, EntryExt};
use crate::bootstrap::{OpenError, open_store};
use crate::config::{Config, Database};
use crate::data_lock::{DataDirLock, LockError, held_by_server, lock_data_dir};
use crate::time::now_ms;

/// Tokens (and devices) read or revoked per store call: what one page or one transaction holds.
pub const BATCH: u32 = 1_000;

/// Why an operator's command did not do what it was asked. Each has its exit code.
#[derive(Debug, thiserror::Error)]
pub enum OperatorError {
    /// An id, email or label names nothing in the account.
    #[error("{0}")]
    NotFound(String),
    /// A running server holds the SQLite data directory, and the change would not reach it.
    #[error("{message}")]
    HeldByServer { message: String, pid: Option<u32> },
    /// No store at the configured place, or the database does not answer.
    #[error("{0}")]
    Unreachable(String),
    /// Anything else: the store failed, the data directory is not what the command needs.
    #[error("{0}")]
    Failed(String),
}

impl OperatorError {
    /// Exit codes scripts rely on (documented in `tessera --help` and the README): 3 not found, 4 refused
    /// because a running server holds the data directory, 5 store unreachable, 1 any other failure. (0 is done and
    /// 2 a usage error, clap's own.)
    pub fn exit_code(&self) -> u8 {
        match self {
            OperatorError::NotFound(_) => 3,
            OperatorError::HeldByServer { .. } => 4,
            OperatorError::Unreachable(_) => 5,
            OperatorError::Failed(_) => 1,
        }
    }
}

impl From<StoreError> for OperatorError {
    fn from(error: StoreError) -> OperatorError {
        match error {
            StoreError::Unavailable(source) => {
                OperatorError::Unreachable(format!("the store stopped answering: {}", error_chain(source.as_ref())))
            }
            other => OperatorError::Failed(format!("the store failed: {}", error_chain(&other))),
        }
    }
}

fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// What a command is about to do with the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Beside a running server: reads, and changes a server reads afresh each time (a user's second factor).
    Shared,
    /// Alone: changes a running server on SQLite would not hear of (a token's revocation), refused while one runs;
    /// the data directory's lock is held for the command's length.
    Exclusive,
}

/// Whether a server runs on the store, as far as this process can tell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerPresence {
    /// A server holds the SQLite data directory (its process id, when it could be read).
    Running {
        pid: Option<u32>,
    },
    NotRunning,
    /// PostgreSQL: nodes share the database and take no lock, so a command cannot tell.
    Unknown,
}

/// The store opened for the operator, in the one account a command works on.
#[derive(Debug)]
pub struct Operator {
    store: Arc<dyn Store>,
    pub account: Account,
    /// The SQLite data directory, if the store is one.
    data_dir: Option<PathBuf>,
    /// Held through a change a running server would not hear of.
    _lock: Option<DataDirLock>,
}

/// Opens the configured store for the operator. A SQLite database must exist already (a typo in `--data-dir`
/// must not create an empty one); `account` names the account when the store holds several.
pub async fn open(config: &Config, account: Option<AccountId>, access: Access) -> Result<Operator, OperatorError> {
    let (data_dir, lock) = match config.database().map_err(OperatorError::Failed)? {
        Database::Sqlite(path) => {
            if !path.is_file() {
                return Err(OperatorError::Unreachable(format!(
                    "no Tessera database at {}: name the data directory with --data-dir (or run `tessera init`)",
                    path.display()
                )));
            }
            let dir = match path.parent() {
                Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
                _ => PathBuf::from("."),
            };
            // Opening would create a missing key, and every token stored is checked under the lost one.
            if !dir.join(crate::bootstrap::SERVER_KEY_FILE).is_file() {
                return Err(OperatorError::Failed(format!(
                    "{} has a database but no {}: every stored token is checked under that key; restore it (or \
                     the whole store from a backup) first. Nothing was changed",
                    dir.display(),
                    crate::bootstrap::SERVER_KEY_FILE
                )));
            }
            let lock = match access {
                Access::Shared => None,
                Access::Exclusive => Some(lock_data_dir(&dir).map_err(held_error)?),
            };
            (Some(dir), lock)
        }
        Database::Postgres(_) => (None, None),
    };
    let opened = open_store(config).await.map_err(|error| match error {
        OpenError::Postgres(source) => {
            OperatorError::Unreachable(format!("cannot reach PostgreSQL: {}", error_chain(&source)))
        }
        OpenError::Store { path, source } => {
            OperatorError::Unreachable(format!("cannot open the store at {path}: {}", error_chain(&source)))
        }
        other => OperatorError::Failed(error_chain(&other)),
    })?;
    let store = opened.store;
    let accounts = match store.accounts().await {
        Ok(accounts) => accounts,
        Err(error) => {
            store.close().await;
            return Err(error.into());
        }
    };
    let chosen = match (account, accounts.as_slice()) {
        (Some(id), _) => accounts
            .iter()
            .find(|candidate| candidate.id == id)
            .cloned()
            .ok_or_else(|| OperatorError::NotFound(format!("no account {id} in the store (--account)"))),
        (None, [only]) => Ok(only.clone()),
        (None, []) => Err(OperatorError::Failed("the store has no account yet; run `tessera init`".into())),
        (None, _) => Err(OperatorError::Failed(format!(
            "the store holds {} accounts; name one with --account ({})",
            accounts.len(),
            accounts.iter().map(|account| account.id.to_string()).collect::<Vec<_>>().join(", ")
        ))),
    };
    match chosen {
        Ok(account) => Ok(Operator { store, account, data_dir, _lock: lock }),
        Err(error) => {
            store.close().await;
            Err(error)
        }
    }
}

fn held_error(error: LockError) -> OperatorError {
    match error {
        LockError::Held { pid, .. } => {
            let who = match pid {
                Some(pid) => format!("process {pid}"),
                None => "a process whose id could not be read".to_owned(),
            };
            OperatorError::HeldByServer {
                message: format!(
                    "{error}; it caches verified tokens for up to 10 minutes and would not hear of a change made \
                     here, so nothing was changed. Revoke through the running server instead (POST \
                     /v1/tokens/revoke, DELETE /v1/tokens/{{id}}), or stop it ({who}) and run this again"
                ),
                pid,
            }
        }
        LockError::Io { .. } => OperatorError::Failed(error_chain(&error)),
    }
}

impl Operator {
    /// Closes the store (the SQLite WAL is checkpointed by its connections' close).
    pub async fn close(self) {
        self.store.close().await;
    }

    fn id(&self) -> AccountId {
        self.account.id
    }

    /// Whether a server runs on this store.
    pub fn server(&self) -> ServerPresence {
        match &self.data_dir {
            None => ServerPresence::Unknown,
            Some(dir) => match held_by_server(dir) {
                Ok(()) => ServerPresence::NotRunning,
                Err(LockError::Held { pid, .. }) => ServerPresence::Running { pid },
                // A lock file that cannot be opened says nothing either way.
                Err(LockError::Io { .. }) => ServerPresence::Unknown,
            },
        }
    }

    pub async fn figures(&self) -> Result<StoreFigures, OperatorError> {
        Ok(self.store.figures(now_ms()).await?)
    }

    /// The live tokens `selection` takes, oldest first, a page of [`BATCH`] at a time handed to `each`.
    pub async fn each_token(
        &self,
        selection: TokenSelection,
        mut each: impl FnMut(&TokenRecord) -> Result<(), OperatorError>,
    ) -> Result<(), OperatorError> {
        let mut after = None;
        loop {
            let page =
                self.store.select_tokens(self.id(), TokenSelection { after, ..selection }, now_ms(), BATCH).await?;
            for token in &page {
                each(token)?;
            }
            match page.last() {
                Some(last) if page.len() == BATCH as usize => after = Some(last.id),
                _ => return Ok(()),
            }
        }
    }

    /// A token of the account, live or not.
    pub async fn token(&self, id: TokenId) -> Result<TokenRecord, OperatorError> {
        self.store.token(self.id(), id).await.map_err(|error| match error {
            StoreError::NotFound => OperatorError::NotFound(format!("no token {id} in the account")),
            other => other.into(),
        })
    }

    /// Revokes one token (a login session's other half with it); answers what was revoked, nothing if the token
    /// was no longer live.
    pub async fn revoke_token(&self, id: TokenId) -> Result<Vec<TokenRecord>, OperatorError> {
        self.token(id).await?;
        let entries = |gone: &[TokenRecord]| -> Vec<AuditEntry> {
            gone.iter()
                .map(|token| crate::tokens::describe(self.entry(AuditEvent::TokenRevoked).about(token.id), token))
                .collect()
        };
        Ok(self.store.revoke_tokens(self.id(), &[id], now_ms(), &entries).await?)
    }

    /// Revokes every live token `selection` takes, [`BATCH`] a transaction, each with its entry and one entry per
    /// transaction for the call (as the API's bulk revocation records); answers how many were asked for and
    /// revoked (a session's other half is revoked with it, not counted).
    pub async fn revoke_selection(&self, selection: TokenSelection) -> Result<u64, OperatorError> {
        let mut revoked = 0;
        let mut after = None;
        loop {
            let batch = TokenSelection { after, ..selection };
            let candidates = self.store.select_tokens(self.id(), batch, now_ms(), BATCH).await?;
            let Some(last) = candidates.last() else { return Ok(revoked) };
            after = Some(last.id);
            let full = candidates.len() == BATCH as usize;
            let ids: Vec<TokenId> = candidates.iter().map(|token| token.id).collect();
            let asked = |token: &TokenRecord| ids.contains(&token.id);
            let entries = |gone: &[TokenRecord]| -> Vec<AuditEntry> {
                let mut entries: Vec<AuditEntry> = gone
                    .iter()
                    .map(|token| {
                        crate::tokens::describe(self.entry(AuditEvent::TokenRevoked).about(token.id), token)
                            .with("bulk", true)
                    })
                    .collect();
                entries.push(
                    crate::tokens::describe_selection(self.entry(AuditEvent::TokensBulkRevoked), &selection)
                        .with("count", gone.iter().filter(|token| asked(token)).count()),
                );
                entries
            };
            let gone = self.store.revoke_tokens(self.id(), &ids, now_ms(), &entries).await?;
            revoked += gone.iter().filter(|token| asked(token)).count() as u64;
            if !full {
                return Ok(revoked);
            }
        }
    }

    fn entry(&self, event: AuditEvent) -> AuditEntry {
        audit::entry(self.id(), Actor::Operator, event).with("via", "command line")
    }

    pub async fn users(&self) -> Result<Vec<User>, OperatorError> {
        Ok(self.store.list_users(self.id()).await?)
    }

    /// A user of the account by email (any case) or id.
    pub async fn user(&self, email_or_id: &str) -> Result<User, OperatorError> {
        let not_found = || OperatorError::NotFound(format!("no user '{email_or_id}' in the account"));
        if let Ok(id) = email_or_id.parse::<UserId>() {
            match self.store.user(self.id(), id).await {
                Ok(user) => return Ok(user),
                Err(StoreError::NotFound) => {}
                Err(other) => return Err(other.into()),
            }
        }
        let users = self.store.users_by_email(&email_or_id.trim().to_lowercase()).await?;
        users.into_iter().find(|user| user.account == self.id()).ok_or_else(not_found)
    }

    /// Removes the user's second factor and recovery codes, recorded as the operator's; answers whether there was
    /// one (nothing is changed or recorded otherwise). Their sessions go on: the next sign-in asks for the password
    /// alone, and the user can enrol again.
    pub async fn reset_second_factor(&self, user: &User) -> Result<bool, OperatorError> {
        let mut current = user.clone();
        // A change racing this one (the user confirming an enrollment) makes the compare-and-set fail: read again.
        for _ in 0..3 {
            let Some(totp) = &current.totp else { return Ok(false) };
            let entry = self
                .entry(AuditEvent::SecondFactorReset)
                .with("user", current.id.to_string())
                .with("email", current.email.clone())
                .with("was_enabled", totp.enabled);
            match self.store.set_totp(current.id, Some(totp), None, &[], &[entry]).await {
                Ok(()) => return Ok(true),
                Err(StoreError::Conflict(_)) => current = self.store.user(self.id(), current.id).await?,
                Err(other) => return Err(other.into()),
            }
        }
        Err(OperatorError::Failed("the second factor kept changing while it was being reset; try again".into()))
    }

    /// A collection of the account by id.
    pub async fn collection(&self, id: tessera_core::CollectionId) -> Result<Collection, OperatorError> {
        self.store.collection(self.id(), id).await.map_err(|error| match error {
            StoreError::NotFound => OperatorError::NotFound(format!("no collection {id} in the account")),
            other => other.into(),
        })
    }

    pub async fn collections(&self) -> Result<Vec<Collection>, OperatorError> {
        Ok(self.store.list_collections(self.id()).await?)
    }

    /// The devices `filter` takes, a page of [`BATCH`] at a time handed to `each`.
    pub async fn each_device(
        &self,
        filter: &DeviceFilter,
        mut each: impl FnMut(&Device) -> Result<(), OperatorError>,
    ) -> Result<(), OperatorError> {
        for number in 1.. {
            let page = self.store.list_devices(self.id(), filter, Page { number, size: u64::from(BATCH) }).await?;
            for device in &page.items {
                each(device)?;
            }
            if page.items.len() < BATCH as usize {
                break;
            }
        }
        Ok(())
    }

    /// A device of the account by id or label.
    pub async fn device(&self, id_or_label: &str) -> Result<Device, OperatorError> {
        let not_found = || OperatorError::NotFound(format!("no device '{id_or_label}' in the account"));
        if let Ok(id) = id_or_label.parse::<DeviceId>() {
            match self.store.device(self.id(), id).await {
                Ok(device) => return Ok(device),
                Err(StoreError::NotFound) => {}
                Err(other) => return Err(other.into()),
            }
        }
        let Ok(label) = Label::parse(id_or_label) else { return Err(not_found()) };
        self.store.device_by_label(self.id(), &label).await.map_err(|error| match error {
            StoreError::NotFound => not_found(),
            other => other.into(),
        })
    }

    /// The device's variables with each one's last reading, by label.
    pub async fn variables(&self, device: &Device) -> Result<Vec<(Variable, Option<Reading>)>, OperatorError> {
        Ok(self.store.variables_with_last(self.id(), &[device.id]).await?)
    }

    /// A variable of the device by label (or id).
    pub async fn variable(&self, device: &Device, label_or_id: &str) -> Result<Variable, OperatorError> {
        let not_found =
            || OperatorError::NotFound(format!("no variable '{label_or_id}' on device {}", device.label.as_str()));
        if let Ok(id) = label_or_id.parse::<VariableId>() {
            match self.store.variable(self.id(), id).await {
                Ok(variable) if variable.device == device.id => return Ok(variable),
                Ok(_) | Err(StoreError::NotFound) => {}
                Err(other) => return Err(other.into()),
            }
        }
        let Ok(label) = Label::parse(label_or_id) else { return Err(not_found()) };
        self.store.variable_by_label(device.id, &label).await.map_err(|error| match error {
            StoreError::NotFound => not_found(),
            other => other.into(),
        })
    }

    /// The variable's readings within `range`, newest first, a page of [`BATCH`] at a time handed to `each`, which
    /// answers whether to go on. Memory stays one page however large the range: each page is asked for below the
    /// last timestamp the previous one ended at (one reading per variable and millisecond), not by an offset.
    pub async fn each_reading(
        &self,
        variable: VariableId,
        range: TimeRange,
        mut each: impl FnMut(&Reading) -> Result<bool, OperatorError>,
    ) -> Result<(), OperatorError> {
        let mut range = range;
        while range.start_ms <= range.end_ms {
            let page = self.store.readings_newest(variable, range, BATCH).await?;
            for reading in &page {
                if !each(reading)? {
                    return Ok(());
                }
            }
            match page.last() {
                Some(last) if page.len() == BATCH as usize && last.timestamp_ms > i64::MIN => {
                    range.end_ms = last.timestamp_ms - 1
                }
                _ => return Ok(()),
            }
        }
        Ok(())
    }
}
