//! The records the store keeps, in core types. No wire names here: each dialect converts by hand.

use std::collections::BTreeMap;
use std::net::IpAddr;

use tessera_core::{
    AccountId, CollectionId, DeviceId, Grant, Id, Label, QuotaSetting, Reach, Rights, Role, Scope, SecretDigest,
    TeamId, TokenId, TokenKind, UserId, VariableId,
};

/// A page of a listing, 1-based.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    pub number: u64,
    pub size: u64,
}

impl Page {
    pub const ALL: Page = Page { number: 1, size: i64::MAX as u64 };

    pub fn offset(self) -> u64 {
        self.number.saturating_sub(1).saturating_mul(self.size)
    }
}

/// One page of a listing and the total number of items across all pages.
#[derive(Debug, Clone, PartialEq)]
pub struct Paged<T> {
    pub total: u64,
    pub items: Vec<T>,
}

/// An inclusive range of timestamps in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeRange {
    pub start_ms: i64,
    pub end_ms: i64,
}

impl TimeRange {
    pub const ALL: TimeRange = TimeRange { start_ms: i64::MIN, end_ms: i64::MAX };
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub id: AccountId,
    pub name: String,
    pub created_at_ms: i64,
}

/// A person who logs in. The password is kept only as an argon2id PHC string (parameters included).
#[derive(Clone, PartialEq, Eq)]
pub struct User {
    pub id: UserId,
    pub account: AccountId,
    /// Lower-cased; unique within the account.
    pub email: String,
    pub password_hash: String,
    pub display_name: String,
    pub phone: String,
    /// An administrator of the account reaches all of it.
    pub is_admin: bool,
    /// The second factor, once enrollment has started.
    pub totp: Option<UserTotp>,
    pub created_at_ms: i64,
}

/// A user's TOTP second factor.
#[derive(Clone, PartialEq, Eq)]
pub struct UserTotp {
    pub secret: Vec<u8>,
    /// False while an enrollment waits for its first code.
    pub enabled: bool,
    /// The last accepted time step; codes at or below it are refused.
    pub last_step: Option<i64>,
}

impl std::fmt::Debug for UserTotp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserTotp").field("enabled", &self.enabled).field("last_step", &self.last_step).finish()
    }
}

impl std::fmt::Debug for User {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("User")
            .field("id", &self.id)
            .field("account", &self.account)
            .field("email", &self.email)
            .field("is_admin", &self.is_admin)
            .finish_non_exhaustive()
    }
}

/// What the first start creates, all at once.
#[derive(Debug, Clone)]
pub struct Bootstrap {
    pub account: Account,
    pub default_collection: Collection,
    pub api_key: TokenRecord,
    pub admin: User,
    pub admin_team: Team,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Collection {
    pub id: CollectionId,
    pub account: AccountId,
    pub name: String,
    /// Where devices created with an account-wide credential land; it cannot be deleted.
    pub is_default: bool,
    /// The team that owns it; `None` for collections of the account itself, which account admins reach.
    pub team: Option<TeamId>,
    pub tags: BTreeMap<String, String>,
    pub created_at_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    pub id: DeviceId,
    pub account: AccountId,
    pub collection: CollectionId,
    /// Unique within the account; claimed by the collection that created the device.
    pub label: Label,
    pub name: String,
    /// The SIM's IMSI and the modem's IMEI (Horde), each unique in the account when set.
    pub imsi: Option<String>,
    pub imei: Option<String>,
    pub tags: BTreeMap<String, String>,
    pub created_at_ms: i64,
    /// When the server last committed a reading of the device (the server's clock, not the reading's timestamp);
    /// `None` until it has. Gathered in memory and flushed about every second (`record_device_activity`), so a
    /// fresh read may lag the last commit by that much, and a copy kept in a cache is older still: whatever shows
    /// it (the console's listing) reads it from the store.
    pub last_seen_at_ms: Option<i64>,
}

/// What a console listing of a collection's devices shows (`DeviceStore::device_overview`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceQuery {
    /// Only devices whose label contains this text, case-insensitively; `%` and `_` are taken literally.
    pub label_contains: Option<String>,
    /// Only devices never seen, or last seen before this instant (ms): the ones that went quiet.
    pub not_seen_since_ms: Option<i64>,
    pub order: DeviceOrder,
}

/// The order of a device overview.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum DeviceOrder {
    /// By label, ascending.
    #[default]
    Label,
    /// Most recently seen first; devices never seen last; ties by id (creation order).
    LastActivity,
}

/// Numeric readings of one variable aggregated over one interval of a chart (`ReadingStore::reading_buckets`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ReadingBucket {
    /// The interval's first instant: the range's start plus a whole number of buckets.
    pub start_ms: i64,
    /// Numeric readings in the interval (never 0: intervals without one are not answered).
    pub count: u64,
    pub min: f64,
    pub max: f64,
    pub mean: f64,
    /// The timestamps of the interval's first and last numeric readings.
    pub first_ms: i64,
    pub last_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Variable {
    pub id: VariableId,
    pub account: AccountId,
    pub device: DeviceId,
    /// The collection of the variable's device, read with it so access can be checked without another lookup.
    pub collection: CollectionId,
    /// Unique within the device.
    pub label: Label,
    pub name: String,
    pub unit: String,
    /// AllThingsTalk's asset fields: a title, a description, what it is (sensor, actuator, config, virtual) and
    /// the profile (JSON schema subset) its states must satisfy.
    pub title: String,
    pub description: String,
    pub kind: String,
    pub profile: Option<serde_json::Value>,
    pub created_at_ms: i64,
}

/// Narrows a device or variable listing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceFilter {
    /// Only devices in one of these collections.
    pub collections: Option<Vec<CollectionId>>,
    pub device: Option<DeviceId>,
}

impl DeviceFilter {
    pub fn collection(collection: CollectionId) -> DeviceFilter {
        DeviceFilter { collections: Some(vec![collection]), device: None }
    }

    pub fn device(device: DeviceId) -> DeviceFilter {
        DeviceFilter { collections: None, device: Some(device) }
    }
}

/// Who made a token (the core's type: the token-management rule is decided on it).
pub use tessera_core::Creator;

/// One token, whichever dialect made it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRecord {
    pub id: TokenId,
    pub account: AccountId,
    pub kind: TokenKind,
    pub digest: SecretDigest,
    pub scope: Scope,
    pub rights: Rights,
    pub creator: Creator,
    pub name: String,
    pub tags: BTreeMap<String, String>,
    pub created_at_ms: i64,
    pub expires_at_ms: Option<i64>,
    pub revoked_at_ms: Option<i64>,
    pub last_used_at_ms: Option<i64>,
    pub uses: u64,
    /// The login session a user's access and refresh tokens belong to; revoked together.
    pub family: Option<Id>,
    /// The normalised resource path of a Horde token.
    pub resource: Option<String>,
    /// A disabled token is refused until it is enabled again.
    pub disabled_at_ms: Option<i64>,
    /// The address the token was last presented from (flushed with `uses`).
    pub last_used_from: Option<IpAddr>,
    /// After a rotation: the secret it replaced, which works until `previous_valid_until_ms`.
    pub previous_digest: Option<SecretDigest>,
    pub previous_valid_until_ms: Option<i64>,
    pub rotated_at_ms: Option<i64>,
    pub quota: QuotaSetting,
    /// Requests refused for being over the quota (flushed with `uses`).
    pub throttled: u64,
}

impl TokenRecord {
    /// A token just made: read-write, unnamed, untagged, never used, revoked, disabled or rotated, with its kind's
    /// quota; callers set what differs (`TokenRecord { name, ..TokenRecord::new(…) }`).
    pub fn new(
        id: TokenId,
        account: AccountId,
        kind: TokenKind,
        digest: SecretDigest,
        scope: Scope,
        creator: Creator,
        created_at_ms: i64,
    ) -> TokenRecord {
        TokenRecord {
            id,
            account,
            kind,
            digest,
            scope,
            rights: Rights::ReadWrite,
            creator,
            name: String::new(),
            tags: BTreeMap::new(),
            created_at_ms,
            expires_at_ms: None,
            revoked_at_ms: None,
            last_used_at_ms: None,
            uses: 0,
            family: None,
            resource: None,
            disabled_at_ms: None,
            last_used_from: None,
            previous_digest: None,
            previous_valid_until_ms: None,
            rotated_at_ms: None,
            quota: QuotaSetting::KindDefault,
            throttled: 0,
        }
    }

    /// The token's access fields, with its creator's current reach, as `authorize` takes them.
    pub fn grant(&self, creator_reach: Reach) -> Grant {
        Grant {
            account: self.account,
            token: self.id,
            kind: self.kind,
            scope: self.scope,
            rights: self.rights,
            expires_at_ms: self.expires_at_ms,
            revoked: self.revoked_at_ms.is_some(),
            disabled: self.disabled_at_ms.is_some(),
            creator: self.creator,
            creator_reach,
        }
    }
}

/// Usage of one token gathered in memory since the last flush.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenUsage {
    pub token: TokenId,
    pub last_used_at_ms: i64,
    /// Where the last use came from, when it came over the network.
    pub last_used_from: Option<IpAddr>,
    pub uses: u64,
    /// Requests refused for being over the token's quota.
    pub throttled: u64,
}

/// Which tokens a bulk revocation or an expiry listing takes (every field that is set must match).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TokenSelection {
    /// Made by this creator (a user's tokens and sessions, or what an API key minted).
    pub creator: Option<Creator>,
    /// Scoped to this collection, or to a device in it.
    pub collection: Option<CollectionId>,
    /// Scoped to this device.
    pub device: Option<DeviceId>,
    pub kind: Option<TokenKind>,
    /// Expiring before this instant (and not yet expired at the listing's `now`).
    pub expires_before_ms: Option<i64>,
    /// Not used since this instant (never used counts as not used).
    pub unused_since_ms: Option<i64>,
    /// Only tokens after this one in id order (the next batch of a long selection).
    pub after: Option<TokenId>,
}

/// Who did what an audit entry records. Never a secret: a token is named by its id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Actor {
    /// A person, in a session of theirs (or signing in).
    User(UserId),
    /// A token other than a user's session (the API key, a device token, ...).
    Token(TokenId),
    /// Tessera itself (the expiry sweep, the bootstrap).
    System,
    /// The operator, on the command line (`tessera token revoke`, `tessera user reset-second-factor`): whoever
    /// can open the data directory or the database runs the server, and no credential of the API was presented.
    Operator,
    /// Someone not identified (an unknown credential, a leaked secret reported).
    Anonymous,
}

/// What the store holds, across every account (`tessera status`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreFigures {
    pub accounts: u64,
    pub users: u64,
    pub collections: u64,
    pub devices: u64,
    pub variables: u64,
    /// Counted, not estimated: a scan of the readings' primary key.
    pub readings: u64,
    /// Tokens neither revoked nor expired at the time asked, per kind (kinds with none are left out), by kind name.
    pub live_tokens: Vec<(TokenKind, u64)>,
    /// The database's size on disk: SQLite's pages (the WAL not included), PostgreSQL's whole database.
    pub database_bytes: u64,
}

/// Whether what an audit entry records happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    Ok,
    Refused,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Refused => "refused",
        }
    }

    pub fn from_name(text: &str) -> Option<Outcome> {
        match text {
            "ok" => Some(Outcome::Ok),
            "refused" => Some(Outcome::Refused),
            _ => None,
        }
    }
}

/// One entry of an account's audit trail.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditEntry {
    /// Time-ordered (`Id`), so the id is the listing's cursor.
    pub id: Id,
    pub account: AccountId,
    pub at_ms: i64,
    /// What happened, as a dotted name (`token.minted`, `login.failed`, ...; `AuditEvent` in the server).
    pub event: String,
    pub actor: Actor,
    /// The token the event is about.
    pub token: Option<TokenId>,
    pub address: Option<IpAddr>,
    pub outcome: Outcome,
    /// What changed or why it was refused: a JSON object.
    pub detail: serde_json::Map<String, serde_json::Value>,
    /// Entries gathered into this one (refused credentials of one kind from one address, within a flush).
    pub count: u64,
}

/// Which entries of an audit trail a listing shows, newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditQuery {
    pub actor: Option<Actor>,
    pub token: Option<TokenId>,
    /// Event names; an entry matches one of them.
    pub events: Vec<String>,
    pub since_ms: Option<i64>,
    pub until_ms: Option<i64>,
    /// Only entries older than this one (the previous page's last id).
    pub before: Option<Id>,
    pub limit: u32,
}

/// An account's rule for new tokens of one kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenPolicy {
    pub kind: TokenKind,
    /// The longest lifetime a new token may have; a longer one asked for is cut to it.
    pub max_lifetime_seconds: Option<u64>,
    /// The lifetime of a new token that asks for none.
    pub default_lifetime_seconds: Option<u64>,
}

/// Which tokens a listing shows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TokenFilter {
    /// Only tokens with exactly this scope.
    pub scope: Option<Scope>,
    /// Only tokens made by this creator.
    pub creator: Option<Creator>,
    /// Only tokens expiring before this instant.
    pub expires_before_ms: Option<i64>,
    /// Only tokens not used since this instant (never used counts as not used).
    pub unused_since_ms: Option<i64>,
}

/// A group of users that owns collections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Team {
    pub id: TeamId,
    pub account: AccountId,
    pub tags: BTreeMap<String, String>,
    /// The user whose private team this is.
    pub private_of: Option<UserId>,
    pub created_at_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Membership {
    pub team: TeamId,
    pub user: UserId,
    pub role: Role,
    pub created_at_ms: i64,
}

/// An invitation to join a team; the code is kept only as a digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invite {
    /// The code is derived from this id with the server key, so a listing can show it without the store
    /// holding it.
    pub id: Id,
    pub digest: SecretDigest,
    pub team: TeamId,
    pub created_by: UserId,
    pub created_at_ms: i64,
    pub expires_at_ms: i64,
    pub accepted_by: Option<UserId>,
    pub accepted_at_ms: Option<i64>,
}

/// A second-factor challenge issued after a correct password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginChallenge {
    pub id: Id,
    pub user: UserId,
    pub client_id: String,
    pub created_at_ms: i64,
    pub expires_at_ms: i64,
}

/// What a user reaches through the account and their teams, as stored now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserReach {
    pub is_admin: bool,
    pub teams: Vec<(TeamId, Role)>,
    /// Collections owned by the user's teams, with the owning team.
    pub collections: Vec<(CollectionId, TeamId)>,
}

impl UserReach {
    /// The core's view: account admins reach everything; others what their teams own, by role.
    pub fn to_reach(&self) -> Reach {
        if self.is_admin {
            return Reach::Account(Rights::ReadWrite);
        }
        let teams: BTreeMap<TeamId, Rights> = self.teams.iter().map(|(team, role)| (*team, role.rights())).collect();
        let collections = self
            .collections
            .iter()
            .filter_map(|(collection, team)| teams.get(team).map(|rights| (*collection, *rights)))
            .collect();
        Reach::Limited { teams, collections }
    }
}

/// A message queued for a device (Horde `/to`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Downlink {
    pub id: Id,
    pub account: AccountId,
    pub device: DeviceId,
    pub port: u16,
    pub payload: Vec<u8>,
    pub created_at_ms: i64,
    pub delivered_at_ms: Option<i64>,
}
