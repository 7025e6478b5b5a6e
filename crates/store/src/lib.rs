//! Tessera's storage boundary: the records the server keeps, the `Store` traits split by capability, and the
//! implementations (SQLite today). Database errors never cross this boundary: "not found" and unique-constraint
//! violations become [`StoreError`] variants here, and anything else becomes an opaque internal error that keeps
//! its cause chain for the log.

mod codec;
mod records;
mod sqlite;

pub use records::*;
pub use sqlite::SqliteStore;

use async_trait::async_trait;
use tessera_core::{AccountId, CollectionId, DeviceId, Label, Reading, Scope, SecretDigest, TokenId, VariableId};

/// Errors the store reports. Callers match on the first three; `Internal` is for the log.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("the store is unavailable")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("internal store error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

pub type StoreResult<T> = Result<T, StoreError>;

/// Accounts and the first start.
#[async_trait]
pub trait AccountStore {
    /// Creates the bootstrap account with its default collection, API key and admin user, in one transaction, if
    /// the store holds no account yet. Returns whether it created them.
    async fn bootstrap(&self, bootstrap: &Bootstrap) -> StoreResult<bool>;
    async fn account(&self, account: AccountId) -> StoreResult<Account>;
}

/// Tokens: only digests are stored, never secrets.
#[async_trait]
pub trait TokenStore {
    async fn insert_token(&self, token: &TokenRecord) -> StoreResult<()>;
    /// The token with this digest, revoked or not; `NotFound` if none.
    async fn token_by_digest(&self, digest: &SecretDigest) -> StoreResult<TokenRecord>;
    async fn token(&self, account: AccountId, token: TokenId) -> StoreResult<TokenRecord>;
    /// Tokens of the account live at `now_ms` (neither revoked nor expired), oldest first, optionally only those
    /// with exactly this scope.
    async fn list_tokens(
        &self,
        account: AccountId,
        scope: Option<Scope>,
        now_ms: i64,
        page: Page,
    ) -> StoreResult<Paged<TokenRecord>>;
    /// Marks a live token revoked and returns it; `NotFound` if it does not exist or is already revoked.
    async fn revoke_token(&self, account: AccountId, token: TokenId, at_ms: i64) -> StoreResult<TokenRecord>;
    /// Adds use counts and advances last-used times, for usage gathered in memory off the request path.
    async fn record_token_usage(&self, usage: &[TokenUsage]) -> StoreResult<()>;
}

/// Collections (Ubidots organizations, Horde collections, AllThingsTalk grounds).
#[async_trait]
pub trait CollectionStore {
    async fn insert_collection(&self, collection: &Collection) -> StoreResult<()>;
    async fn collection(&self, account: AccountId, collection: CollectionId) -> StoreResult<Collection>;
    async fn default_collection(&self, account: AccountId) -> StoreResult<Collection>;
    async fn list_collections(&self, account: AccountId) -> StoreResult<Vec<Collection>>;
    /// Deletes an empty collection and revokes the tokens scoped to it, in one transaction; returns those tokens.
    /// `Conflict` if it still holds devices or is the account's default collection.
    async fn delete_collection(
        &self,
        account: AccountId,
        collection: CollectionId,
        at_ms: i64,
    ) -> StoreResult<Vec<TokenRecord>>;
}

/// Devices and their variables.
#[async_trait]
pub trait DeviceStore {
    async fn device(&self, account: AccountId, device: DeviceId) -> StoreResult<Device>;
    async fn device_by_label(&self, account: AccountId, label: &Label) -> StoreResult<Device>;
    /// Inserts the device unless its label is already taken in the account, and returns whichever device holds
    /// the label afterwards: the new one, or the one that claimed it first (possibly in another collection).
    async fn insert_device_if_absent(&self, device: &Device) -> StoreResult<Device>;
    async fn list_devices(&self, account: AccountId, filter: DeviceFilter, page: Page) -> StoreResult<Paged<Device>>;
    /// Deletes a device with its variables and their readings.
    async fn delete_device(&self, account: AccountId, device: DeviceId) -> StoreResult<()>;

    async fn variable(&self, account: AccountId, variable: VariableId) -> StoreResult<Variable>;
    async fn variable_by_label(&self, device: DeviceId, label: &Label) -> StoreResult<Variable>;
    /// As `insert_device_if_absent`, for a variable label within its device.
    async fn insert_variable_if_absent(&self, variable: &Variable) -> StoreResult<Variable>;
    async fn list_variables(
        &self,
        account: AccountId,
        filter: DeviceFilter,
        page: Page,
    ) -> StoreResult<Paged<Variable>>;
    /// Deletes a variable with its readings.
    async fn delete_variable(&self, account: AccountId, variable: VariableId) -> StoreResult<()>;
}

/// Time series.
#[async_trait]
pub trait ReadingStore {
    /// Commits all readings in one transaction, replacing any reading with the same variable and timestamp.
    /// Readings of a variable that no longer exists are dropped.
    async fn insert_readings(&self, readings: &[Reading]) -> StoreResult<()>;
    /// Readings of a variable within `range` (inclusive), newest first.
    async fn readings(&self, variable: VariableId, range: TimeRange, page: Page) -> StoreResult<Paged<Reading>>;
    async fn last_reading(&self, variable: VariableId) -> StoreResult<Option<Reading>>;
    /// Deletes the readings of a variable within `range` (inclusive) and returns how many there were.
    async fn delete_readings(&self, variable: VariableId, range: TimeRange) -> StoreResult<u64>;
}

/// Everything Tessera keeps. One implementation per database; all pass the same conformance suite.
#[async_trait]
pub trait Store:
    AccountStore + TokenStore + CollectionStore + DeviceStore + ReadingStore + std::fmt::Debug + Send + Sync
{
    /// Whether the database answers, for `/readyz`.
    async fn ping(&self) -> StoreResult<()>;
    /// Flushes and closes connections; called once at shutdown after the last write.
    async fn close(&self);
}
