//! Tessera's storage boundary: the records the server keeps, the `Store` traits split by capability, and the
//! implementations (SQLite, the embedded default, and PostgreSQL for several nodes). Database errors never cross this boundary: "not found" and unique-constraint
//! violations become [`StoreError`] variants here, and anything else becomes an opaque internal error that keeps
//! its cause chain for the log.

mod codec;
mod invalidation;
mod postgres;
mod records;
mod sqlite;
pub mod sqlite_backup;

pub use invalidation::Invalidation;
pub use postgres::{ListenEvent, PostgresEvents, PostgresListener, PostgresStore, ScratchSchema};
pub use records::*;
pub use sqlite::SqliteStore;

use async_trait::async_trait;
use tessera_core::{
    AccountId, CollectionId, DeviceId, Id, Label, Reading, Role, SecretDigest, TeamId, TokenId, UserId, VariableId,
};

/// Errors the store reports. Callers match on the first four; `Internal` is for the log.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    #[error("conflict: {0}")]
    Conflict(String),
    /// A value the database cannot hold (PostgreSQL refuses the NUL character in text, which SQLite keeps).
    #[error("invalid value: {0}")]
    Invalid(String),
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
    /// Every account, oldest first.
    async fn accounts(&self) -> StoreResult<Vec<Account>>;
    /// The secret stored under `name`, storing `proposed` first if there is none yet: every process that asks
    /// gets the same bytes, whoever asked first. (On PostgreSQL the server key lives here, so that every node
    /// verifies every token.)
    async fn shared_secret(&self, name: &str, proposed: &[u8]) -> StoreResult<Vec<u8>>;
    /// How much the store holds, with tokens counted live at `now_ms`. Counts every reading: seconds on a store
    /// of hundreds of millions, which is why only the operator's `tessera status` asks.
    async fn figures(&self, now_ms: i64) -> StoreResult<StoreFigures>;
}

/// Tokens: only digests are stored, never secrets.
#[async_trait]
pub trait TokenStore {
    /// Inserts a token and, in the same transaction, what the audit trail says of it.
    async fn insert_token(&self, token: &TokenRecord, audit: &[AuditEntry]) -> StoreResult<()>;
    /// Inserts many tokens in one transaction with `audit`: all of them, or none (a login's pair, a fleet).
    async fn insert_tokens(&self, tokens: &[TokenRecord], audit: &[AuditEntry]) -> StoreResult<()>;
    /// The token whose secret, or whose secret before its last rotation, has this digest, revoked or not;
    /// `NotFound` if none. (Whether a replaced secret still works is the caller's to judge.)
    async fn token_by_digest(&self, digest: &SecretDigest) -> StoreResult<TokenRecord>;
    async fn token(&self, account: AccountId, token: TokenId) -> StoreResult<TokenRecord>;
    /// Tokens of the account live at `now_ms` (neither revoked nor expired) that pass `filter`, oldest first.
    async fn list_tokens(
        &self,
        account: AccountId,
        filter: TokenFilter,
        now_ms: i64,
        page: Page,
    ) -> StoreResult<Paged<TokenRecord>>;
    /// Stores a live token's scope, rights, name, tags, resource and quota, with `audit`.
    /// Answers the token as it is now.
    async fn update_token(&self, token: &TokenRecord, audit: &[AuditEntry]) -> StoreResult<TokenRecord>;
    /// Gives a live token a new secret (its digest `digest`), keeping the current one working until
    /// `previous_valid_until_ms` (a secret replaced earlier stops at once), with `audit`; answers the token as
    /// it is now. `NotFound` if it does not exist or is revoked.
    async fn rotate_secret(
        &self,
        account: AccountId,
        token: TokenId,
        digest: &SecretDigest,
        previous_valid_until_ms: i64,
        at_ms: i64,
        audit: &[AuditEntry],
    ) -> StoreResult<TokenRecord>;
    /// Disables a live token (`Some(at)`) or enables it (`None`), with `audit`; answers the token as it is now.
    async fn set_token_disabled(
        &self,
        account: AccountId,
        token: TokenId,
        disabled_at_ms: Option<i64>,
        audit: &[AuditEntry],
    ) -> StoreResult<TokenRecord>;
    /// The account's tokens live at `now_ms` (neither revoked nor expired) that `selection` takes, oldest
    /// first, at most `limit`.
    async fn select_tokens(
        &self,
        account: AccountId,
        selection: TokenSelection,
        now_ms: i64,
        limit: u32,
    ) -> StoreResult<Vec<TokenRecord>>;
    /// Revokes the live tokens among `tokens` (and the rest of a login session any of them belongs to) in one
    /// transaction with the entries `audit` makes of what it revoked, and returns those.
    async fn revoke_tokens(
        &self,
        account: AccountId,
        tokens: &[TokenId],
        at_ms: i64,
        audit: &(dyn for<'t> Fn(&'t [TokenRecord]) -> Vec<AuditEntry> + Send + Sync),
    ) -> StoreResult<Vec<TokenRecord>>;
    /// Up to `limit` tokens that expired at or before `now_ms` and whose expiry the audit trail does not yet
    /// record, marked recorded in one transaction with the entry `entry` makes for each (whichever node sweeps
    /// first records it; the other finds nothing). Login sessions are not swept: they expire by design.
    async fn record_expiries(
        &self,
        now_ms: i64,
        limit: u32,
        entry: &(dyn for<'t> Fn(&'t TokenRecord) -> AuditEntry + Send + Sync),
    ) -> StoreResult<Vec<TokenRecord>>;
    /// Marks a live token used up (revoked), atomically: exactly one caller gets `true` for a refresh token.
    async fn consume_token(&self, token: TokenId, at_ms: i64) -> StoreResult<bool>;
    /// Consumes the live token `consumed` and inserts `tokens` in one transaction; inserts nothing and answers
    /// `false` if `consumed` was used already. Refresh rotation: the new pair exists exactly when the old refresh
    /// token was this request's to use, so a concurrent reuse that revokes the family afterwards revokes it too.
    async fn rotate_tokens(&self, consumed: TokenId, tokens: &[TokenRecord], at_ms: i64) -> StoreResult<bool>;
    /// Revokes every live token of a login session and returns them, with `audit`.
    async fn revoke_family(&self, family: Id, at_ms: i64, audit: &[AuditEntry]) -> StoreResult<Vec<TokenRecord>>;
    /// Revokes every live token made by `creator` and returns them, with `audit`.
    async fn revoke_tokens_of(
        &self,
        account: AccountId,
        creator: Creator,
        at_ms: i64,
        audit: &[AuditEntry],
    ) -> StoreResult<Vec<TokenRecord>>;
    /// Marks a live token revoked and returns it, with `audit`; `NotFound` if it does not exist or is already
    /// revoked (and then nothing of `audit` is kept).
    async fn revoke_token(
        &self,
        account: AccountId,
        token: TokenId,
        at_ms: i64,
        audit: &[AuditEntry],
    ) -> StoreResult<TokenRecord>;
    /// Adds use and throttled counts and advances last-used times and addresses, for usage gathered in memory off
    /// the request path.
    async fn record_token_usage(&self, usage: &[TokenUsage]) -> StoreResult<()>;
}

/// Collections (Ubidots organizations, Horde collections, AllThingsTalk grounds).
#[async_trait]
pub trait CollectionStore {
    async fn insert_collection(&self, collection: &Collection) -> StoreResult<()>;
    async fn collection(&self, account: AccountId, collection: CollectionId) -> StoreResult<Collection>;
    async fn default_collection(&self, account: AccountId) -> StoreResult<Collection>;
    /// Stores a collection's name and tags.
    async fn update_collection(&self, collection: &Collection) -> StoreResult<()>;
    async fn list_collections(&self, account: AccountId) -> StoreResult<Vec<Collection>>;
    /// Deletes an empty collection and revokes the tokens scoped to it, in one transaction; returns those tokens.
    /// `Conflict` if it still holds devices or is the account's default collection.
    async fn delete_collection(
        &self,
        account: AccountId,
        collection: CollectionId,
        at_ms: i64,
        audit: &(dyn for<'t> Fn(&'t [TokenRecord]) -> Vec<AuditEntry> + Send + Sync),
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
    /// Inserts many devices in one transaction, skipping those whose label is already taken in their account;
    /// answers how many were inserted (provisioning a fleet).
    async fn insert_devices(&self, devices: &[Device]) -> StoreResult<u64>;
    async fn list_devices(&self, account: AccountId, filter: &DeviceFilter, page: Page) -> StoreResult<Paged<Device>>;
    /// Stores a device's name, IMSI, IMEI and tags; `Conflict` if the IMSI or IMEI belongs to another device.
    async fn update_device(&self, device: &Device) -> StoreResult<()>;
    /// Queues a message for a device.
    async fn insert_downlink(&self, downlink: &Downlink) -> StoreResult<()>;
    /// The messages queued for a device, oldest first.
    async fn downlinks(&self, account: AccountId, device: DeviceId) -> StoreResult<Vec<Downlink>>;
    /// Deletes a device with its variables and their readings.
    async fn delete_device(&self, account: AccountId, device: DeviceId) -> StoreResult<()>;
    /// Advances each device's last-seen time to the one given, unless a later one is stored already: each node
    /// flushes what it gathered in memory, and the latest time wins whichever node flushes last. Devices that no
    /// longer exist are skipped.
    async fn record_device_activity(&self, activity: &[(DeviceId, i64)]) -> StoreResult<()>;
    /// The devices of a collection that `query` selects, in its order; `total` counts all that it selects.
    async fn device_overview(
        &self,
        account: AccountId,
        collection: CollectionId,
        query: &DeviceQuery,
        page: Page,
    ) -> StoreResult<Paged<Device>>;

    async fn variable(&self, account: AccountId, variable: VariableId) -> StoreResult<Variable>;
    async fn variable_by_label(&self, device: DeviceId, label: &Label) -> StoreResult<Variable>;
    /// As `insert_device_if_absent`, for a variable label within its device.
    async fn insert_variable_if_absent(&self, variable: &Variable) -> StoreResult<Variable>;
    async fn list_variables(
        &self,
        account: AccountId,
        filter: &DeviceFilter,
        page: Page,
    ) -> StoreResult<Paged<Variable>>;
    /// Stores a variable's name, unit, title, description, kind and profile.
    async fn update_variable(&self, variable: &Variable) -> StoreResult<()>;
    /// Deletes a variable with its readings.
    async fn delete_variable(&self, account: AccountId, variable: VariableId) -> StoreResult<()>;
    /// Every variable of these devices with its last reading (`None` if it has none), grouped by device in the
    /// order `devices` names them, each device's variables by label. Devices of other accounts are skipped.
    async fn variables_with_last(
        &self,
        account: AccountId,
        devices: &[DeviceId],
    ) -> StoreResult<Vec<(Variable, Option<Reading>)>>;
}

/// Time series.
#[async_trait]
pub trait ReadingStore {
    /// Commits all readings in one transaction, replacing any reading with the same variable and timestamp.
    /// Readings of a variable that no longer exists are dropped.
    async fn insert_readings(&self, readings: &[Reading]) -> StoreResult<()>;
    /// Readings of a variable within `range` (inclusive), newest first.
    async fn readings(&self, variable: VariableId, range: TimeRange, page: Page) -> StoreResult<Paged<Reading>>;
    /// At most `limit` readings of a variable within `range` (inclusive), newest first, without counting them:
    /// an export pages through a range of any size by moving `range.end_ms` below the last reading it got (a
    /// variable has one reading per millisecond), each page one descent of the primary key.
    async fn readings_newest(&self, variable: VariableId, range: TimeRange, limit: u32) -> StoreResult<Vec<Reading>>;
    async fn last_reading(&self, variable: VariableId) -> StoreResult<Option<Reading>>;
    /// Readings of every variable of the devices `filter` selects, within `range`, newest first, at most `limit`.
    async fn device_readings(
        &self,
        account: AccountId,
        filter: &DeviceFilter,
        range: TimeRange,
        limit: u64,
    ) -> StoreResult<Vec<(DeviceId, Reading)>>;
    /// Deletes the readings of a variable within `range` (inclusive) and returns how many there were.
    async fn delete_readings(&self, variable: VariableId, range: TimeRange) -> StoreResult<u64>;
    /// The numeric readings of a variable within `range` (inclusive), aggregated per interval of `bucket_ms`
    /// counted from `range.start_ms`, oldest first; intervals without a numeric reading are left out, and JSON
    /// and byte readings are not counted. `Invalid` if `bucket_ms` is not positive or the range is wider than
    /// an `i64` of milliseconds.
    async fn reading_buckets(
        &self,
        variable: VariableId,
        range: TimeRange,
        bucket_ms: i64,
    ) -> StoreResult<Vec<ReadingBucket>>;
}

/// Users, their second factor, teams, invites and login challenges.
#[async_trait]
pub trait PeopleStore {
    /// Inserts a user with their private team (of which they are admin), in one transaction. `Conflict` if the
    /// email is taken in the account.
    async fn insert_user(&self, user: &User, private_team: &Team) -> StoreResult<()>;
    async fn user(&self, account: AccountId, user: UserId) -> StoreResult<User>;
    /// A user by id alone, for a login step that names only the user.
    async fn user_by_id(&self, user: UserId) -> StoreResult<User>;
    /// Users with this (lower-cased) email, in any account.
    async fn users_by_email(&self, email: &str) -> StoreResult<Vec<User>>;
    async fn list_users(&self, account: AccountId) -> StoreResult<Vec<User>>;
    /// Replaces the user's password hash and, in the same transaction, revokes every live login session of
    /// theirs (user access and refresh tokens) except those of the family `keep_session`; answers the revoked
    /// tokens. A session stolen before the change stops working with it. `NotFound` if the user does not exist.
    async fn set_password_hash(
        &self,
        user: UserId,
        password_hash: &str,
        keep_session: Option<Id>,
        at_ms: i64,
        audit: &[AuditEntry],
    ) -> StoreResult<Vec<TokenRecord>>;
    /// Makes the user an administrator of their account or not, telling every node that the user's reach
    /// changed, in the same transaction. `NotFound` if the account has no such user; `Conflict` if that would
    /// leave the account without an administrator (checked atomically).
    async fn set_user_admin(&self, account: AccountId, user: UserId, is_admin: bool) -> StoreResult<()>;
    /// Replaces the user's second factor (`None` removes it) and their recovery codes, if the factor is still
    /// `current` (the secret and enabled flag the caller read); `Conflict` if another change came first, so two
    /// changes racing cannot undo each other (a late enrollment start turning a just-confirmed factor off).
    async fn set_totp(
        &self,
        user: UserId,
        current: Option<&UserTotp>,
        totp: Option<&UserTotp>,
        recovery_codes: &[SecretDigest],
        audit: &[AuditEntry],
    ) -> StoreResult<()>;
    /// Records `step` as the last accepted TOTP step unless one at or after it was accepted already; atomic, so
    /// a code is accepted once even when presented twice at the same moment.
    async fn accept_totp_step(&self, user: UserId, step: i64) -> StoreResult<bool>;
    /// Uses up a recovery code; `false` if it is unknown or used.
    async fn use_recovery_code(&self, user: UserId, code: &SecretDigest, at_ms: i64) -> StoreResult<bool>;
    /// What the user reaches now through the account and their teams.
    async fn user_reach(&self, user: UserId) -> StoreResult<UserReach>;

    /// Inserts a team with `creator` as its admin.
    async fn insert_team(&self, team: &Team, creator: UserId) -> StoreResult<()>;
    async fn team(&self, account: AccountId, team: TeamId) -> StoreResult<Team>;
    /// The teams the user belongs to, with the user's role in each.
    async fn teams_of(&self, user: UserId) -> StoreResult<Vec<(Team, Role)>>;
    async fn set_team_tags(&self, team: TeamId, tags: &std::collections::BTreeMap<String, String>) -> StoreResult<()>;
    /// Deletes a shared team; `Conflict` if it is a private team or still owns collections.
    async fn delete_team(&self, account: AccountId, team: TeamId) -> StoreResult<()>;
    async fn members(&self, team: TeamId) -> StoreResult<Vec<(Membership, User)>>;
    /// Changes a member's role; `Conflict` if that would leave the team without an admin (checked atomically).
    async fn set_member_role(&self, team: TeamId, user: UserId, role: Role) -> StoreResult<()>;
    /// Removes a member; `Conflict` if that would leave the team without an admin (checked atomically).
    async fn remove_member(&self, team: TeamId, user: UserId) -> StoreResult<()>;

    async fn insert_invite(&self, invite: &Invite) -> StoreResult<()>;
    async fn invites(&self, team: TeamId) -> StoreResult<Vec<Invite>>;
    async fn delete_invite(&self, team: TeamId, code: &SecretDigest) -> StoreResult<()>;
    /// Accepts a live invite: the user joins its team as a member (keeping a higher role they may have).
    /// `NotFound` if the code is unknown, expired or used.
    async fn accept_invite(&self, code: &SecretDigest, user: UserId, at_ms: i64) -> StoreResult<TeamId>;

    async fn insert_challenge(&self, challenge: &LoginChallenge) -> StoreResult<()>;
    /// The live challenge `id` of `user`; `NotFound` if unknown, expired or already used.
    async fn challenge(&self, id: Id, user: UserId, now_ms: i64) -> StoreResult<LoginChallenge>;
    /// Marks a challenge used; `false` if it was used already.
    async fn use_challenge(&self, id: Id, at_ms: i64) -> StoreResult<bool>;
}

/// The audit trail and the token policies it records changes of.
#[async_trait]
pub trait AuditStore {
    /// Entries that record no change of their own (a sign-in refused, credentials refused), in one statement.
    async fn insert_audit(&self, entries: &[AuditEntry]) -> StoreResult<()>;
    /// The account's entries that `query` takes, newest first.
    async fn audit_entries(&self, account: AccountId, query: &AuditQuery) -> StoreResult<Vec<AuditEntry>>;
    /// Deletes up to `limit` entries older than `before_ms`, oldest first; answers how many.
    async fn prune_audit(&self, before_ms: i64, limit: u32) -> StoreResult<u64>;
    /// The account's policies, one per kind that has one.
    async fn token_policies(&self, account: AccountId) -> StoreResult<Vec<TokenPolicy>>;
    /// Sets the account's policy for `policy.kind` (both fields `None` removes it), with `audit`.
    async fn set_token_policy(&self, account: AccountId, policy: &TokenPolicy, audit: &[AuditEntry])
    -> StoreResult<()>;
}

/// Everything Tessera keeps. One implementation per database; all pass the same conformance suite.
#[async_trait]
pub trait Store:
    AccountStore
    + TokenStore
    + CollectionStore
    + DeviceStore
    + ReadingStore
    + PeopleStore
    + AuditStore
    + std::fmt::Debug
    + Send
    + Sync
{
    /// Whether the database answers, for `/readyz`.
    async fn ping(&self) -> StoreResult<()>;
    /// Flushes and closes connections; called once at shutdown after the last write.
    async fn close(&self);
    /// The connection pools' sizes now, for `/metrics`. sqlx tells a pool's open and idle connections and its
    /// bound; it does not tell how long an acquire waited nor how many wait, so neither is claimed here.
    fn pools(&self) -> Vec<PoolFigures> {
        Vec::new()
    }
}

/// One connection pool's sizes, as sqlx tells them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolFigures {
    /// Which pool: `reads` and `writes` on SQLite, `main` on PostgreSQL.
    pub pool: &'static str,
    pub open: u32,
    pub idle: u32,
    pub max: u32,
}

impl PoolFigures {
    pub fn of<DB: sqlx::Database>(pool: &'static str, of: &sqlx::Pool<DB>) -> PoolFigures {
        PoolFigures {
            pool,
            open: of.size(),
            idle: u32::try_from(of.num_idle()).unwrap_or(u32::MAX),
            max: of.options().get_max_connections(),
        }
    }
}
