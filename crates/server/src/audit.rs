//! The audit trail: what happened to tokens and logins, by whom, from where, and whether it worked.
//!
//! Two ways in. A change (a token minted, rotated, revoked; a second factor turned on) hands its entries to the
//! store with the change itself, so the record and what it records commit together or not at all: the service
//! making the change builds them with [`entry`]. Events that change nothing (a refused credential, a failed
//! login) cost an attacker nothing to send by the thousand, so they are gathered here in memory, one entry per
//! kind of refusal, actor and address (IPv6 by its /64) with a count, written once it has gathered repeats for
//! [`REFUSAL_HOLD`], at most [`MAX_ITEMISED_PER_MINUTE`] distinct ones a minute (the rest counted into one entry
//! per account and minute): a flood of bad tokens is a few rows a minute, not a row per request.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Map, Value};
use tessera_core::{AccountId, TokenId, TokenKind};
use tessera_store::{Actor, AuditEntry, AuditQuery, Outcome, Store, StoreError};

use crate::entropy::new_id;
use crate::time::now_ms;
use crate::tokens::Caller;

/// What an audit entry records. The name is what the API shows and filters by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AuditEvent {
    TokenMinted,
    TokenChanged,
    TokenRotated,
    TokenDisabled,
    TokenEnabled,
    TokenRevoked,
    /// A bulk revocation: one entry for the call, with the count (each token also gets `TokenRevoked`).
    TokensBulkRevoked,
    /// A secret reported as leaked, revoked on the report.
    TokenLeakRevoked,
    TokenExpired,
    PolicyChanged,
    LoginSucceeded,
    LoginFailed,
    Logout,
    SecondFactorEnrollmentStarted,
    SecondFactorEnabled,
    SecondFactorDisabled,
    /// The operator removed a user's second factor from the command line (a lost phone).
    SecondFactorReset,
    PasswordChanged,
    /// A refresh token presented again after it was used: the session is revoked as stolen.
    RefreshTokenReused,
    CredentialRefused,
    CollectionDeleted,
}

impl AuditEvent {
    pub const ALL: [AuditEvent; 21] = [
        AuditEvent::TokenMinted,
        AuditEvent::TokenChanged,
        AuditEvent::TokenRotated,
        AuditEvent::TokenDisabled,
        AuditEvent::TokenEnabled,
        AuditEvent::TokenRevoked,
        AuditEvent::TokensBulkRevoked,
        AuditEvent::TokenLeakRevoked,
        AuditEvent::TokenExpired,
        AuditEvent::PolicyChanged,
        AuditEvent::LoginSucceeded,
        AuditEvent::LoginFailed,
        AuditEvent::Logout,
        AuditEvent::SecondFactorEnrollmentStarted,
        AuditEvent::SecondFactorEnabled,
        AuditEvent::SecondFactorDisabled,
        AuditEvent::SecondFactorReset,
        AuditEvent::PasswordChanged,
        AuditEvent::RefreshTokenReused,
        AuditEvent::CredentialRefused,
        AuditEvent::CollectionDeleted,
    ];

    pub fn name(self) -> &'static str {
        match self {
            AuditEvent::TokenMinted => "token.minted",
            AuditEvent::TokenChanged => "token.changed",
            AuditEvent::TokenRotated => "token.rotated",
            AuditEvent::TokenDisabled => "token.disabled",
            AuditEvent::TokenEnabled => "token.enabled",
            AuditEvent::TokenRevoked => "token.revoked",
            AuditEvent::TokensBulkRevoked => "tokens.bulk_revoked",
            AuditEvent::TokenLeakRevoked => "token.leak_revoked",
            AuditEvent::TokenExpired => "token.expired",
            AuditEvent::PolicyChanged => "token_policy.changed",
            AuditEvent::LoginSucceeded => "login.succeeded",
            AuditEvent::LoginFailed => "login.failed",
            AuditEvent::Logout => "logout",
            AuditEvent::SecondFactorEnrollmentStarted => "second_factor.enrollment_started",
            AuditEvent::SecondFactorEnabled => "second_factor.enabled",
            AuditEvent::SecondFactorDisabled => "second_factor.disabled",
            AuditEvent::SecondFactorReset => "second_factor.reset",
            AuditEvent::PasswordChanged => "password.changed",
            AuditEvent::RefreshTokenReused => "refresh_token.reused",
            AuditEvent::CredentialRefused => "credential.refused",
            AuditEvent::CollectionDeleted => "collection.deleted",
        }
    }

    pub fn from_name(text: &str) -> Option<AuditEvent> {
        AuditEvent::ALL.into_iter().find(|event| event.name() == text)
    }
}

/// A new entry: `event` by `actor` in `account`, now, with no token, address or detail yet.
pub fn entry(account: AccountId, actor: Actor, event: AuditEvent) -> AuditEntry {
    AuditEntry {
        id: new_id(),
        account,
        at_ms: now_ms(),
        event: event.name().to_owned(),
        actor,
        token: None,
        address: None,
        outcome: Outcome::Ok,
        detail: Map::new(),
        count: 1,
    }
}

/// A new entry for what `caller` did: the actor is the person for a user's session, else the token; the address
/// is where the caller's request came from.
pub fn by(caller: &Caller, event: AuditEvent) -> AuditEntry {
    let mut entry = entry(caller.account(), actor_of(caller), event);
    entry.address = caller.address;
    entry
}

/// Who a caller is, for the trail.
pub fn actor_of(caller: &Caller) -> Actor {
    match (caller.record.kind, caller.record.creator) {
        (TokenKind::UserAccess, tessera_core::Creator::User(user)) => Actor::User(user),
        _ => Actor::Token(caller.record.id),
    }
}

/// The builder methods every maker of an entry uses.
pub trait EntryExt {
    fn about(self, token: TokenId) -> Self;
    fn coming_from(self, address: Option<IpAddr>) -> Self;
    fn refused(self) -> Self;
    fn with(self, key: &str, value: impl Into<Value>) -> Self;
}

impl EntryExt for AuditEntry {
    fn about(mut self, token: TokenId) -> AuditEntry {
        self.token = Some(token);
        self
    }

    fn coming_from(mut self, address: Option<IpAddr>) -> AuditEntry {
        self.address = address;
        self
    }

    fn refused(mut self) -> AuditEntry {
        self.outcome = Outcome::Refused;
        self
    }

    fn with(mut self, key: &str, value: impl Into<Value>) -> AuditEntry {
        self.detail.insert(key.to_owned(), value.into());
        self
    }
}

/// Distinct refusals itemised per minute and account (anonymous ones apart); more are counted into one entry per account and minute
/// that says how many were not itemised. A probe of issue 15 sent bad tokens from 1 500 addresses and got a row a
/// second for each (86 million a day, kept 90 days); now a flood costs at most this many rows a minute.
pub const MAX_ITEMISED_PER_MINUTE: usize = 300;

/// How long a refusal's entry gathers repeats before it is written: a device retrying a bad token every second
/// makes six rows a minute, not sixty.
pub const REFUSAL_HOLD: Duration = Duration::from_secs(10);

/// Entries deleted per statement when the trail is pruned, so the write lock is held for a moment at a time.
const PRUNE_PER_STATEMENT: u32 = 1_000;

/// What identifies one line of gathered refusals.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct RefusalKey {
    account: AccountId,
    event: AuditEvent,
    actor: Actor,
    token: Option<TokenId>,
    address: Option<IpAddr>,
    reason: String,
}

#[derive(Debug, Default)]
struct Refusals {
    /// First time seen, and how many, per key.
    pending: HashMap<RefusalKey, (i64, u64)>,
    /// The minute (Unix ms / 60 000) `itemised` counts in, and how many distinct entries were started in it, per
    /// account and whether they name no token (unknown secrets, charged to the home account): a flood of made-up
    /// secrets cannot spend the budget another account's (or the home account's own tokens') refusals need.
    minute: i64,
    itemised: HashMap<(AccountId, bool), usize>,
    /// Refusals beyond the minute's budget, per account: the minute they fell in, and how many.
    overflow: HashMap<AccountId, (i64, u64)>,
}

/// The audit trail's service: gathers refusals, writes them, answers listings, prunes by age.
#[derive(Debug)]
pub struct Audit {
    store: Arc<dyn Store>,
    /// The account refusals of credentials that name no token are recorded in (the first account: the server's
    /// operators are its administrators).
    home: AccountId,
    retention: Duration,
    refusals: Mutex<Refusals>,
}

impl Audit {
    pub fn new(store: Arc<dyn Store>, home: AccountId, retention: Duration) -> Audit {
        Audit { store, home, retention, refusals: Mutex::default() }
    }

    /// The account that unattributable refusals belong to.
    pub fn home_account(&self) -> AccountId {
        self.home
    }

    /// Notes a refusal (a credential refused, a login failed) to be written at the next flush, gathered with
    /// others of the same kind, actor, token and address. `account` `None` is the home account.
    pub fn refused(
        &self,
        account: Option<AccountId>,
        event: AuditEvent,
        actor: Actor,
        token: Option<TokenId>,
        address: Option<IpAddr>,
        reason: &str,
    ) {
        let account = account.unwrap_or(self.home);
        // An IPv6 host usually holds a /64: counted as one address, it cannot spread a flood over 2^64 keys.
        let address = address.map(crate::tokens::address_block);
        let key = RefusalKey { account, event, actor, token, address, reason: reason.to_owned() };
        let now = now_ms();
        let minute = now.div_euclid(60_000);
        let mut refusals = self.refusals.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if refusals.minute != minute {
            refusals.minute = minute;
            refusals.itemised.clear();
        }
        let budget = (account, key.token.is_none() && key.actor == Actor::Anonymous);
        if let Some((_, count)) = refusals.pending.get_mut(&key) {
            *count += 1;
        } else if refusals.itemised.get(&budget).copied().unwrap_or(0) < MAX_ITEMISED_PER_MINUTE {
            *refusals.itemised.entry(budget).or_insert(0) += 1;
            refusals.pending.insert(key, (now, 1));
        } else {
            let (_, count) = refusals.overflow.entry(account).or_insert((minute, 0));
            *count += 1;
        }
    }

    /// Writes the refusals that have gathered repeats for [`REFUSAL_HOLD`], and the counts beyond a minute's
    /// budget once that minute is over (`everything`: all of them, at shutdown). On failure they are dropped with
    /// a warning: holding them would let an outage of the store grow memory without bound.
    pub async fn flush_refusals(&self, everything: bool) -> Result<(), StoreError> {
        let now = now_ms();
        let hold = i64::try_from(REFUSAL_HOLD.as_millis()).unwrap_or(i64::MAX);
        let minute = now.div_euclid(60_000);
        let (due, overflow) = {
            let mut refusals = self.refusals.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            let mut due = Vec::new();
            refusals.pending.retain(|key, (first_ms, count)| {
                let ripe = everything || now - *first_ms >= hold;
                if ripe {
                    due.push((key.clone(), *first_ms, *count));
                }
                !ripe
            });
            let mut overflow = Vec::new();
            refusals.overflow.retain(|account, (at_minute, count)| {
                let over = everything || *at_minute < minute;
                if over {
                    overflow.push((*account, *at_minute, *count));
                }
                !over
            });
            (due, overflow)
        };
        if due.is_empty() && overflow.is_empty() {
            return Ok(());
        }
        let mut entries: Vec<AuditEntry> = due
            .into_iter()
            .map(|(key, first_ms, count)| {
                let mut entry = entry(key.account, key.actor, key.event).refused().with("reason", key.reason);
                entry.token = key.token;
                entry.address = key.address;
                entry.at_ms = first_ms;
                entry.count = count;
                entry
            })
            .collect();
        for (account, at_minute, count) in overflow {
            let mut entry = entry(account, Actor::Anonymous, AuditEvent::CredentialRefused)
                .refused()
                .with("reason", format!("more distinct refusals than the {MAX_ITEMISED_PER_MINUTE} itemised a minute"));
            entry.at_ms = at_minute * 60_000;
            entry.count = count;
            entries.push(entry);
        }
        entries.sort_by_key(|entry| entry.at_ms);
        self.store.insert_audit(&entries).await
    }

    /// The account's entries that `query` takes, newest first.
    pub async fn entries(&self, account: AccountId, query: &AuditQuery) -> Result<Vec<AuditEntry>, StoreError> {
        self.store.audit_entries(account, query).await
    }

    /// Deletes entries older than the retention; answers how many.
    pub async fn prune(&self) -> Result<u64, StoreError> {
        let before = now_ms().saturating_sub(i64::try_from(self.retention.as_millis()).unwrap_or(i64::MAX));
        let mut deleted = 0;
        loop {
            let batch = self.store.prune_audit(before, PRUNE_PER_STATEMENT).await?;
            deleted += batch;
            if batch < u64::from(PRUNE_PER_STATEMENT) {
                return Ok(deleted);
            }
        }
    }

    /// Records, once each, the tokens whose lifetime ended since the last sweep.
    pub async fn record_expiries(&self) -> Result<u64, StoreError> {
        let make = |token: &tessera_store::TokenRecord| {
            let mut entry = entry(token.account, Actor::System, AuditEvent::TokenExpired)
                .about(token.id)
                .with("kind", token.kind.as_str())
                .with("name", token.name.clone());
            entry.at_ms = token.expires_at_ms.unwrap_or(entry.at_ms);
            entry
        };
        let mut recorded = 0;
        loop {
            let batch = self.store.record_expiries(now_ms(), PRUNE_PER_STATEMENT, &make).await?;
            recorded += batch.len() as u64;
            if batch.len() < PRUNE_PER_STATEMENT as usize {
                return Ok(recorded);
            }
        }
    }
}

/// An audit trail for a bootstrapped store's first account, for the services' unit tests.
#[cfg(test)]
pub(crate) async fn for_tests(store: &Arc<dyn Store>) -> Arc<Audit> {
    let home = store.accounts().await.expect("accounts")[0].id;
    Arc::new(Audit::new(store.clone(), home, Duration::from_secs(3600)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_names_round_trip_and_are_distinct() {
        let mut names = std::collections::HashSet::new();
        for event in AuditEvent::ALL {
            assert_eq!(AuditEvent::from_name(event.name()), Some(event));
            assert!(names.insert(event.name()), "{} twice", event.name());
        }
        assert_eq!(AuditEvent::from_name("token.exploded"), None);
    }

    #[tokio::test]
    async fn a_flood_of_refusals_is_a_bounded_number_of_entries() {
        let store: Arc<dyn Store> = Arc::new(tessera_store::SqliteStore::open_in_memory().await.unwrap());
        let key = tessera_core::ServerKey::new(&[0; tessera_core::ServerKey::LEN]);
        crate::bootstrap::bootstrap(store.as_ref(), &key).await.unwrap();
        let home = store.accounts().await.unwrap()[0].id;
        let audit = Audit::new(store.clone(), home, Duration::from_secs(3600));
        let one_address: IpAddr = "192.0.2.1".parse().unwrap();
        for _ in 0..10_000 {
            audit.refused(None, AuditEvent::CredentialRefused, Actor::Anonymous, None, Some(one_address), "unknown");
        }
        // The addresses of one IPv6 /64 are one key.
        for n in 0..100u128 {
            let address = IpAddr::from(std::net::Ipv6Addr::from(0x2001_0db8_0000_0001_0000_0000_0000_0000 + n));
            audit.refused(None, AuditEvent::CredentialRefused, Actor::Anonymous, None, Some(address), "unknown");
        }
        let many = MAX_ITEMISED_PER_MINUTE as u32 + 500;
        for n in 0..many {
            let address = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + n));
            audit.refused(None, AuditEvent::CredentialRefused, Actor::Anonymous, None, Some(address), "unknown");
        }
        audit.flush_refusals(false).await.unwrap();
        let query = AuditQuery { limit: 5_000, ..AuditQuery::default() };
        assert!(
            audit.entries(home, &query).await.unwrap().is_empty(),
            "entries gather repeats before they are written"
        );
        audit.flush_refusals(true).await.unwrap();
        let entries = audit.entries(home, &query).await.unwrap();
        assert_eq!(entries.len(), MAX_ITEMISED_PER_MINUTE + 1, "itemised up to the minute's budget, then one summary");
        let from_one = entries.iter().find(|entry| entry.address == Some(one_address)).unwrap();
        assert_eq!((from_one.count, from_one.outcome), (10_000, Outcome::Refused));
        let block: IpAddr = "2001:db8:0:1::".parse().unwrap();
        assert_eq!(entries.iter().find(|entry| entry.address == Some(block)).map(|entry| entry.count), Some(100));
        let total: u64 = entries.iter().map(|entry| entry.count).sum();
        assert_eq!(total, 10_000 + 100 + u64::from(many), "every refusal is counted");
        audit.flush_refusals(true).await.unwrap();
        assert_eq!(audit.entries(home, &query).await.unwrap().len(), entries.len(), "a flush takes them out");
    }
}
