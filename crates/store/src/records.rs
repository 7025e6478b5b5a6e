//! The records the store keeps, in core types. No wire names here: each dialect converts by hand.

use std::collections::BTreeMap;

use tessera_core::{
    AccountId, CollectionId, DeviceId, Grant, Label, Reach, Rights, Scope, SecretDigest, TokenId, TokenKind, UserId,
    VariableId,
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
    pub is_admin: bool,
    pub created_at_ms: i64,
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
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Collection {
    pub id: CollectionId,
    pub account: AccountId,
    pub name: String,
    /// Where devices created with an account-wide credential land; it cannot be deleted.
    pub is_default: bool,
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
    pub created_at_ms: i64,
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
    pub created_at_ms: i64,
}

/// Narrows a device or variable listing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeviceFilter {
    pub collection: Option<CollectionId>,
    pub device: Option<DeviceId>,
}

/// Who made a token; the token never reaches further than its creator does now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Creator {
    /// Made by Tessera itself (the bootstrap API key).
    System,
    /// Minted with another credential, an API key.
    Token(TokenId),
    User(UserId),
}

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
}

impl TokenRecord {
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
            creator_reach,
        }
    }
}

/// Usage of one token gathered in memory since the last flush.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenUsage {
    pub token: TokenId,
    pub last_used_at_ms: i64,
    pub uses: u64,
}
