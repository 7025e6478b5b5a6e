//! Token lifecycle at the server: verifying presented secrets (with a cache, so a known token costs no store round
//! trip), minting, revoking, computing a creator's current reach, and counting use off the request path.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::audit::{self, Audit, AuditEvent, EntryExt};
use crate::cache::RecordCache;
use crate::error::AppError;
use tessera_core::{
    AccountId, Action, Denial, Grant, Id, ListedTokens, ManagedToken, Permit, Presentation, Reach, Rights, Scope,
    Secret, SecretDigest, SecretError, ServerKey, Target, TokenId, TokenKind, authorize, authorize_mint,
    authorize_token_change, authorize_token_listing, authorize_token_management, authorize_token_rotation, check_live,
    check_presentation,
};
use tessera_store::{
    Actor, AuditEntry, Creator, Page, Paged, Store, StoreError, TokenFilter, TokenPolicy, TokenRecord, TokenSelection,
    TokenUsage,
};

use crate::entropy::{new_id, new_secret};
use crate::time::now_ms;

/// Why a presented credential is not a credential. Every variant but `OverQuota` (a 429) and `Store` (a 503) is a
/// 401.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("no credential was presented")]
    Missing,
    #[error(transparent)]
    Malformed(#[from] SecretError),
    #[error("the token is unknown")]
    Unknown,
    #[error(transparent)]
    Dead(Denial),
    /// A credential presented where it is not taken (a writing token in a URL, a token where only a user's
    /// session is), decided by `tessera_core::check_presentation`.
    #[error(transparent)]
    NotTakenHere(Denial),
    #[error(transparent)]
    Store(StoreError),
    /// A live token whose quota for this window is used up: not a 401 but a 429, with when to come back.
    #[error(transparent)]
    OverQuota(crate::quota::OverQuota),
}

/// A verified credential: the token's record and its grant, with its creator's reach as of now.
#[derive(Debug, Clone)]
pub struct Caller {
    pub record: Arc<TokenRecord>,
    pub grant: Grant,
    /// Where the credential was presented from (the peer's IP address), when it came over the network.
    pub address: Option<IpAddr>,
    /// The digest of the secret presented: the token's own, or the one a rotation replaced while it still works.
    presented: SecretDigest,
    /// When the record and the reach were last read (from the cache or the store) and found live.
    confirmed_at: Instant,
}

/// The longest a replaced secret may go on working after a rotation.
pub const MAX_ROTATION_OVERLAP: Duration = Duration::from_secs(30 * 24 * 60 * 60);

/// Tokens one bulk revocation reads and revokes at a time (each batch is one transaction).
const BULK_BATCH: u32 = 1_000;

/// Whether the secret whose digest is `presented` opens `record` at `now_ms`: it is the token's secret, or the one
/// its last rotation replaced, until the overlap ends.
fn check_secret(record: &TokenRecord, presented: &SecretDigest, now_ms: i64) -> Result<(), VerifyError> {
    if record.digest == *presented {
        return Ok(());
    }
    if record.previous_digest.as_ref() != Some(presented) {
        return Err(VerifyError::Unknown);
    }
    match record.previous_valid_until_ms {
        Some(until) if now_ms < until => Ok(()),
        _ => Err(VerifyError::Dead(Denial::SecretReplaced)),
    }
}

/// How long a long-lived connection (MQTT, a stream) is kept while its token cannot be checked again because the
/// store fails. Refusing at the first failed check would drop every such client on one database hiccup, and their
/// reconnections would then fail too; trusting the last answer for ever would keep a token revoked meanwhile (on
/// another node) working. Expiry is still checked every time, and a token this node heard within this time was
/// revoked or changed (or whose creator's reach changed) gets no grace.
pub const RECHECK_GRACE: Duration = Duration::from_secs(30);

/// How often a long-lived caller whose last check could not confirm it (the store failing) is judged again.
pub const RECHECK_EVERY: Duration = Duration::from_secs(1);

/// A long-lived caller no change event and no deadline woke is judged again after this long all the same: the
/// bound on staleness should the store be changed behind the server's back (as the caches' time to live is).
/// 10 000 idle connections wake 33 times a second for it, where a check every second woke them 10 000 times.
pub const RECHECK_BACKSTOP: Duration = Duration::from_secs(300);

/// A check of a long-lived caller that takes longer counts as a failed one: a silent partition could otherwise
/// hold the check (and the grace's end) for as long as the operating system keeps the connection.
const RECHECK_TIMEOUT: Duration = Duration::from_secs(5);

/// After the store failed a check, checks that would need it fail at once for this long: every connection would
/// otherwise wait out its own timeout each second, delivering nothing meanwhile, and add a query to the failing
/// store.
const STORE_FAILING_PAUSE: Duration = Duration::from_secs(5);

/// At most one warning about failing checks per this long, with the counts since the last one.
const RECHECK_WARNING_EVERY: Duration = Duration::from_secs(10);

/// When a long-lived caller (an MQTT connection, a kept session, a stream) is judged again with
/// [`TokenService::reverify`]: at once when it starts (a change may have come between its verification and
/// this schedule), whenever this node hears of a change to its own token or to its creator's reach (the change
/// events: revoked, disabled, changed, reach changed), when the caches are emptied after missed events, when the
/// caller's own time runs out (its expiry, the end of the overlap of the replaced secret it presented), every
/// [`RECHECK_EVERY`] while the last check could not confirm it (the store failing), and after
/// [`RECHECK_BACKSTOP`] otherwise. An idle connection costs no CPU between these: there is no ticker, and a
/// change to someone else's token wakes nobody else (a client that can log out or refresh at will must not be
/// able to wake every connection of the node with each request).
#[derive(Debug)]
pub struct RecheckSchedule {
    /// Bumped when the caches are emptied after missed events: every caller is judged again.
    everything: watch::Receiver<u64>,
    /// Bumped at a change to the caller's token (`Creator::Token` of its id) and to its creator's reach.
    own: Vec<(Creator, watch::Receiver<u64>)>,
    waiters: Arc<Mutex<HashMap<Creator, watch::Sender<u64>>>>,
    /// When [`RecheckSchedule::due`] last answered: a caller not confirmed since was kept on its last answer.
    woke_at: Instant,
    /// The deadline of the next check, set once after each wake rather than at every poll of `due`: a session
    /// polls it at every packet it handles, and a fresh timer (and a clock read) per packet was paid by every
    /// message of every connection.
    timer: std::pin::Pin<Box<tokio::time::Sleep>>,
    armed: bool,
}

impl Drop for RecheckSchedule {
    fn drop(&mut self) {
        let mut waiters = self.waiters.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        for (key, _) in &self.own {
            // This schedule's own receiver is the last one: nobody waits on the key any more.
            if waiters.get(key).is_some_and(|sender| sender.receiver_count() <= 1) {
                waiters.remove(key);
            }
        }
    }
}

/// The next change of any of `own` (the caller's token, and its creator when that is another key), or never if
/// their senders are gone. Without allocation: it is polled at every packet of a session.
async fn any_changed(own: &mut [(Creator, watch::Receiver<u64>)]) {
    async fn changed(receiver: &mut watch::Receiver<u64>) {
        if receiver.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
    match own {
        [(_, only)] => changed(only).await,
        [(_, first), (_, second), ..] => tokio::select! {
            _ = changed(first) => {}
            _ = changed(second) => {}
        },
        [] => std::future::pending().await,
    }
}

impl RecheckSchedule {
    /// Waits until `caller` is to be judged again. Cancel-safe: a change heard while it was not polled is not lost.
    /// The deadline is worked out from `caller` at the first poll after a wake (the caller is judged again, and
    /// replaced, only after a wake).
    pub async fn due(&mut self, caller: &Caller) {
        if !self.armed {
            let unconfirmed = caller.confirmed_at < self.woke_at;
            let mut deadline = self.woke_at + if unconfirmed { RECHECK_EVERY } else { RECHECK_BACKSTOP };
            if let Some(runs_out) = caller.time_runs_out() {
                deadline = deadline.min(runs_out);
            }
            self.timer.as_mut().reset(tokio::time::Instant::from_std(deadline));
            self.armed = true;
        }
        tokio::select! {
            changed = self.everything.changed() => {
                if changed.is_err() {
                    // The token service is gone (the server stops): only the deadline is left.
                    self.timer.as_mut().await;
                }
            }
            _ = any_changed(&mut self.own) => {}
            _ = self.timer.as_mut() => {}
        }
        self.woke_at = Instant::now();
        self.armed = false;
    }
}

/// What the checks of long-lived callers remember between calls.
#[derive(Debug, Default)]
struct Rechecks {
    /// When this node last heard that a token was revoked or changed (`Creator::Token`), or that a creator's
    /// reach changed; entries older than `RECHECK_GRACE` are pruned now and then.
    invalidated: HashMap<Creator, Instant>,
    pruned_at: Option<Instant>,
    /// Until when checks that need the store fail without asking it.
    store_failing_until: Option<Instant>,
    /// Failed checks since the last warning: callers kept on their last answer, and callers ended.
    kept: u64,
    ended: u64,
    warned_at: Option<Instant>,
}

impl Rechecks {
    fn remember_invalidation(&mut self, creator: Creator, now: Instant) {
        if self.pruned_at.is_none_or(|at| now.duration_since(at) >= Duration::from_secs(1)) {
            self.invalidated.retain(|_, at| now.duration_since(*at) < RECHECK_GRACE);
            self.pruned_at = Some(now);
        }
        self.invalidated.insert(creator, now);
    }

    /// Whether this node heard of a change to the caller's token or to its creator's reach within the grace
    /// period. Not "since the caller was confirmed": a check that read the store just before a revocation
    /// committed elsewhere can confirm the caller after this node heard of the revocation.
    fn invalidated_lately(&self, caller: &Caller) -> bool {
        [Creator::Token(caller.record.id), caller.record.creator]
            .iter()
            .any(|key| self.invalidated.get(key).is_some_and(|at| at.elapsed() < RECHECK_GRACE))
    }
}

impl Caller {
    pub fn account(&self) -> AccountId {
        self.record.account
    }

    /// When this caller stops working by time alone, if it does: its token's expiry, or the end of the overlap of
    /// the replaced secret it presented. A moment after the instant, so the check then finds it past.
    fn time_runs_out(&self) -> Option<Instant> {
        let overlap_ends = (self.record.previous_digest.as_ref() == Some(&self.presented)
            && self.record.digest != self.presented)
            .then_some(self.record.previous_valid_until_ms)
            .flatten();
        let at_ms = match (self.grant.expires_at_ms, overlap_ends) {
            (Some(expires), Some(ends)) => expires.min(ends),
            (at, None) | (None, at) => at?,
        };
        let from_now = u64::try_from(at_ms.saturating_sub(now_ms())).unwrap_or(0);
        // Capped (an expiry in the year 9999 would overflow the clock); the backstop wakes the caller sooner anyway.
        Some(Instant::now() + Duration::from_millis(from_now.saturating_add(1)).min(RECHECK_BACKSTOP))
    }

    /// Which scope this caller may list (each listed item is still authorized with [`Caller::authorize`]).
    pub fn authorize_listing(&self) -> Result<Scope, Denial> {
        tessera_core::authorize_listing(&self.grant, now_ms())
    }

    /// Whether this caller could take `action` anywhere, for a request that names no target.
    pub fn authorize_untargeted(&self, action: Action) -> Result<(), Denial> {
        tessera_core::authorize_untargeted(&self.grant, now_ms(), action)
    }

    /// Whether this caller may list a whole branch (the root, or every team).
    pub fn authorize_listing_of(&self, listing: tessera_core::Listing) -> Result<Scope, Denial> {
        tessera_core::authorize_listing_of(&self.grant, now_ms(), listing)
    }

    /// The one authorization path, at the current time.
    pub fn authorize(&self, action: Action, target: &Target) -> Result<Permit, Denial> {
        authorize(&self.grant, now_ms(), action, target)
    }
}

/// What a token listing may be narrowed to, beyond its node.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Narrowing {
    /// Only tokens expiring before this instant (the console warns of these).
    pub expiring_before_ms: Option<i64>,
    /// Only tokens not used since this instant.
    pub unused_since_ms: Option<i64>,
}

/// What a new token should be.
#[derive(Debug, Clone)]
pub struct NewToken {
    pub kind: TokenKind,
    pub scope: Scope,
    pub rights: Rights,
    pub name: String,
    pub expires_at_ms: Option<i64>,
    /// Horde's tags.
    pub tags: std::collections::BTreeMap<String, String>,
    /// The Horde resource path the scope was parsed from, as shown back.
    pub resource: Option<String>,
    pub quota: tessera_core::QuotaSetting,
}

impl NewToken {
    /// A token without tags or a Horde resource text, with its kind's quota.
    pub fn new(kind: TokenKind, scope: Scope, rights: Rights, name: String, expires_at_ms: Option<i64>) -> NewToken {
        NewToken {
            kind,
            scope,
            rights,
            name,
            expires_at_ms,
            tags: Default::default(),
            resource: None,
            quota: Default::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error(transparent)]
    Denied(#[from] Denial),
    #[error("the permit does not cover this token operation")]
    PermitMismatch,
    /// The node a token's scope names does not exist.
    #[error("no such {0}")]
    NoSuch(&'static str),
    /// The request asks for something no token can be (named in the text).
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

pub struct TokenService {
    store: Arc<dyn Store>,
    key: ServerKey,
    by_digest: RecordCache<SecretDigest, Arc<TokenRecord>>,
    creator_reach: RecordCache<Creator, Reach>,
    usage: Mutex<HashMap<TokenId, TokenUsage>>,
    rechecks: Mutex<Rechecks>,
    /// What each [`RecheckSchedule`] waits on: a signal per token or creator some long-lived caller depends on
    /// (removed with the last schedule that waits on it), and one for every caller.
    recheck_waiters: Arc<Mutex<HashMap<Creator, watch::Sender<u64>>>>,
    recheck_everything: watch::Sender<u64>,
    audit: Arc<Audit>,
    quotas: crate::quota::Quotas,
    /// Leaked secrets reported and waiting to be revoked (see [`TokenService::report_leaked`]).
    leak_reports: std::sync::OnceLock<tokio::sync::mpsc::Sender<LeakReport>>,
    /// Leak reports per source address in the current minute.
    leak_reporters: Mutex<HashMap<IpAddr, (i64, u32)>>,
    /// Refused credentials and throttled requests, for `/metrics`.
    figures: crate::metrics::CredentialFigures,
}

/// Secrets someone reported as leaked, from where.
type LeakReport = (Vec<String>, Option<IpAddr>);

/// Reports a source address may make per minute, each of at most [`MAX_LEAKED_PER_REPORT`] secrets.
pub const LEAK_REPORTS_PER_MINUTE: u32 = 10;
pub const MAX_LEAKED_PER_REPORT: usize = 100;
/// Reports waiting to be worked through; a report beyond them is refused with 429.
const LEAK_QUEUE: usize = 64;
/// Addresses whose report counts are kept; beyond it, the minute's counts start over (an attacker spreading over
/// more addresses than this gains at most a fresh budget, never unbounded memory).
const LEAK_REPORTERS_KEPT: usize = 10_000;

/// Why a leak report was not taken.
#[derive(Debug, thiserror::Error)]
pub enum ReportRefused {
    #[error("too many reports from this address; retry after {0:?}")]
    TooMany(Duration),
    #[error("too many reports are waiting; retry after {0:?}")]
    Busy(Duration),
}

impl std::fmt::Debug for TokenService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenService").field("cached", &self.by_digest.entry_count()).finish_non_exhaustive()
    }
}

/// What a token made by Tessera itself reaches: the account's data.
const SYSTEM_REACH: Reach = Reach::AccountData(Rights::ReadWrite);

impl TokenService {
    pub fn new(store: Arc<dyn Store>, key: ServerKey, cache_capacity: u64, audit: Arc<Audit>) -> TokenService {
        TokenService {
            store,
            key,
            // Revocations invalidate entries at once; the time to live bounds staleness should the store be changed
            // behind this service's back.
            by_digest: RecordCache::new(cache_capacity, Duration::from_secs(600)),
            creator_reach: RecordCache::new(10_000, Duration::from_secs(60)),
            usage: Mutex::new(HashMap::new()),
            rechecks: Mutex::default(),
            recheck_waiters: Arc::default(),
            recheck_everything: watch::Sender::new(0),
            audit,
            leak_reports: std::sync::OnceLock::new(),
            leak_reporters: Mutex::default(),
            quotas: crate::quota::Quotas::new(crate::quota::RateLimits::default()),
            figures: crate::metrics::CredentialFigures::default(),
        }
    }

    /// Refused credentials by reason and throttled requests by kind, since start.
    pub fn figures(&self) -> &crate::metrics::CredentialFigures {
        &self.figures
    }

    /// The token and creator-reach caches' figures.
    pub fn cache_figures(&self) -> [crate::metrics::CacheFigures; 2] {
        [self.by_digest.figures("tokens"), self.creator_reach.figures("creator_reach")]
    }

    /// This service with `limits` as the kinds' default quotas (Tessera's own defaults otherwise).
    pub fn with_rate_limits(mut self, limits: crate::quota::RateLimits) -> TokenService {
        self.quotas = crate::quota::Quotas::new(limits);
        self
    }

    /// The request counters of this node.
    pub fn quotas(&self) -> &crate::quota::Quotas {
        &self.quotas
    }

    /// Takes a report of leaked secrets from `from` (anyone may send one: a secret scanner, a finder) and revokes
    /// them in the background, so that how long the answer takes says nothing of whether a secret existed.
    /// Limited per source address (IPv6 by its /64) and by a bounded queue.
    pub fn report_leaked(self: &Arc<Self>, secrets: Vec<String>, from: Option<IpAddr>) -> Result<(), ReportRefused> {
        let minute = now_ms() / 60_000;
        // The report's place in its address's budget is taken under one lock (concurrent reports cannot all pass
        // the check), and given back below if the queue turns the report away.
        if let Some(address) = from.map(address_block) {
            let mut reporters = self.leak_reporters.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            if reporters.len() >= LEAK_REPORTERS_KEPT {
                reporters.retain(|_, (at, _)| *at == minute);
                if reporters.len() >= LEAK_REPORTERS_KEPT {
                    reporters.clear();
                }
            }
            let (at, count) = reporters.entry(address).or_insert((minute, 0));
            if *at != minute {
                (*at, *count) = (minute, 0);
            }
            if *count >= LEAK_REPORTS_PER_MINUTE {
                let wait = 60_000 - now_ms().rem_euclid(60_000);
                return Err(ReportRefused::TooMany(Duration::from_millis(wait as u64)));
            }
            *count += 1;
        }
        let queue = self.leak_reports.get_or_init(|| {
            let (queue, mut reports) = tokio::sync::mpsc::channel::<LeakReport>(LEAK_QUEUE);
            // Weak: the service owns the queue's sender, so the task ends (its queue closed) when the service goes.
            let tokens = Arc::downgrade(self);
            tokio::spawn(async move {
                while let Some((secrets, from)) = reports.recv().await {
                    let Some(tokens) = tokens.upgrade() else { return };
                    match tokens.revoke_leaked(&secrets, from).await {
                        Ok(0) => {}
                        Ok(revoked) => tracing::warn!(revoked, ?from, "tokens revoked on a report that they leaked"),
                        Err(error) => tracing::error!(?error, "a leak report could not be worked through"),
                    }
                }
            });
            queue
        });
        if queue.try_send((secrets, from)).is_err() {
            // Turned away because the queue is full: the report does not use up its sender's budget.
            if let Some(address) = from.map(address_block) {
                let mut reporters = self.leak_reporters.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                if let Some((at, count)) = reporters.get_mut(&address)
                    && *at == minute
                {
                    *count = count.saturating_sub(1);
                }
            }
            return Err(ReportRefused::Busy(Duration::from_secs(5)));
        }
        Ok(())
    }

    /// The audit trail this service records in.
    pub fn audit(&self) -> &Arc<Audit> {
        &self.audit
    }

    /// Checks a secret presented from `from`: its shape and checksum first (no lookup for a typo), then the cache,
    /// then the store. A revoked, expired or disabled token (or a secret its rotation replaced, once the overlap is
    /// over) is refused here, and `authorize` checks the first three again on every use. A refusal is noted for
    /// the audit trail (gathered, see `audit.rs`).
    ///
    /// Each call is one request of the token against its quota (`quota.rs`): every HTTP request verifies its
    /// credential once, through here. A token over its quota is refused with `VerifyError::OverQuota` (counted as
    /// throttled, not as a use, and not a refusal for the audit trail: it is the token's owner's traffic). The
    /// charge is also noted for the answer's `RateLimit` header fields when an HTTP request is being served.
    pub async fn verify(&self, presented: &str, from: Option<IpAddr>) -> Result<Caller, VerifyError> {
        let caller = match self.verify_secret(presented, from).await {
            Ok(caller) => caller,
            Err(error) => {
                self.count_refusal(&error);
                self.note_refusal(&error, None, from);
                return Err(error);
            }
        };
        let charge = self.quotas.take(&caller.record);
        crate::quota::note_for_request(charge);
        match charge {
            crate::quota::Charge::Counted { quota, standing } if !standing.allowed => {
                self.count_throttled(&caller.record, from);
                Err(VerifyError::OverQuota(crate::quota::OverQuota {
                    quota,
                    retry_after_seconds: standing.resets_in_seconds(),
                }))
            }
            _ => {
                self.count_use(caller.record.id, from);
                Ok(caller)
            }
        }
    }

    /// As [`TokenService::verify`], for a connection that stays open (MQTT): the connection is one use, and takes
    /// nothing from the quota; each message it then sends does ([`TokenService::charge`]).
    pub async fn verify_connection(&self, presented: &str, from: Option<IpAddr>) -> Result<Caller, VerifyError> {
        match self.verify_secret(presented, from).await {
            Ok(caller) => {
                self.count_use(caller.record.id, from);
                Ok(caller)
            }
            Err(error) => {
                self.count_refusal(&error);
                self.note_refusal(&error, None, from);
                Err(error)
            }
        }
    }

    /// Counts one message of a long-lived caller (an MQTT PUBLISH) against its token's quota, on the same counter
    /// as its HTTP requests; one over the quota is counted as throttled.
    pub fn charge(&self, caller: &Caller) -> crate::quota::Charge {
        let charge = self.quotas.take(&caller.record);
        if !charge.allowed() {
            self.count_throttled(&caller.record, caller.address);
        }
        charge
    }

    /// Counts a refused credential for `/metrics`, once per presentation, by reason.
    fn count_refusal(&self, error: &VerifyError) {
        let reason = match error {
            VerifyError::Missing => return,
            VerifyError::OverQuota(_) => return,
            VerifyError::Malformed(_) => "malformed",
            VerifyError::Unknown => "unknown",
            VerifyError::Dead(Denial::Revoked) => "revoked",
            VerifyError::Dead(Denial::Expired) => "expired",
            VerifyError::Dead(Denial::Disabled) => "disabled",
            VerifyError::Dead(Denial::SecretReplaced) => "secret_replaced",
            VerifyError::Dead(_) => "other",
            VerifyError::NotTakenHere(_) => "not_taken_here",
            VerifyError::Store(_) => "store_unavailable",
        };
        self.figures.refused(reason);
    }

    /// Notes a refused credential for the trail; `record` is the token when it is known.
    fn note_refusal(&self, error: &VerifyError, record: Option<&TokenRecord>, from: Option<IpAddr>) {
        let (account, actor, token) = match (error, record) {
            (VerifyError::Missing | VerifyError::Store(_), _) => return,
            // A session's access token runs out every hour, and its client renews it: routine, not a refusal.
            (VerifyError::Dead(Denial::Expired), Some(record)) if record.kind == TokenKind::UserAccess => return,
            (_, Some(record)) => (Some(record.account), Actor::Token(record.id), Some(record.id)),
            (VerifyError::Dead(_), None) | (VerifyError::NotTakenHere(_), None) => return,
            (_, None) => (None, Actor::Anonymous, None),
        };
        let reason = match error {
            VerifyError::Malformed(_) => "malformed".to_owned(),
            VerifyError::Unknown => "unknown token".to_owned(),
            other => other.to_string(),
        };
        self.audit.refused(account, AuditEvent::CredentialRefused, actor, token, from, &reason);
    }

    async fn verify_secret(&self, presented: &str, from: Option<IpAddr>) -> Result<Caller, VerifyError> {
        let secret = Secret::parse(presented)?;
        let digest = self.key.digest(&secret);
        let record = match self.by_digest.get(&digest) {
            Some(record) => record,
            None => {
                let started = self.by_digest.read_started();
                let record = match self.store.token_by_digest(&digest).await {
                    Ok(record) => Arc::new(record),
                    Err(StoreError::NotFound) => return Err(VerifyError::Unknown),
                    Err(error) => return Err(VerifyError::Store(error)),
                };
                self.by_digest.insert_read(digest, record.clone(), started);
                record
            }
        };
        if record.kind != secret.kind() {
            return Err(VerifyError::Unknown);
        }
        let now = now_ms();
        let known = |error: VerifyError| {
            self.note_refusal(&error, Some(&record), from);
            error
        };
        check_secret(&record, &digest, now).map_err(known)?;
        let reach = self.reach_of(record.account, record.creator).await.map_err(VerifyError::Store)?;
        let grant = record.grant(reach);
        check_live(&grant, now).map_err(|denial| known(VerifyError::Dead(denial)))?;
        Ok(Caller { record, grant, address: from, presented: digest, confirmed_at: Instant::now() })
    }

    /// As [`TokenService::verify`], for a credential presented as `presentation` says.
    pub async fn verify_presented(
        &self,
        presented: &str,
        presentation: Presentation,
        from: Option<IpAddr>,
    ) -> Result<Caller, VerifyError> {
        let caller = self.verify(presented, from).await?;
        check_presentation(&caller.grant, presentation).map_err(|denial| {
            let error = VerifyError::NotTakenHere(denial);
            self.count_refusal(&error);
            self.note_refusal(&error, Some(&caller.record), from);
            error
        })?;
        Ok(caller)
    }

    /// What `creator` reaches, if known without the store.
    fn cached_reach(&self, creator: Creator) -> Option<Reach> {
        // What Tessera made itself (the bootstrap API key) reaches a fixed set, known without a lookup.
        if creator == Creator::System {
            return Some(SYSTEM_REACH);
        }
        self.creator_reach.get(&creator)
    }

    /// What a token's creator reaches now.
    async fn reach_of(&self, account: AccountId, creator: Creator) -> Result<Reach, StoreError> {
        if let Some(reach) = self.cached_reach(creator) {
            return Ok(reach);
        }
        let started = self.creator_reach.read_started();
        let reach = match creator {
            Creator::System => SYSTEM_REACH,
            // A token minted with an API key reaches what the key reaches: the account's data while the key lives.
            // A disabled key's tokens stop with it, and work again when it is enabled.
            Creator::Token(minter) => match self.store.token(account, minter).await {
                Ok(minter)
                    if minter.revoked_at_ms.is_none()
                        && minter.disabled_at_ms.is_none()
                        && minter.kind == TokenKind::ApiKey =>
                {
                    Reach::AccountData(Rights::ReadWrite)
                }
                Ok(_) | Err(StoreError::NotFound) => Reach::Nothing,
                Err(error) => return Err(error),
            },
            // Users reach the account if they administer it, and otherwise what their teams own.
            Creator::User(user) => match self.store.user_reach(user).await {
                Ok(reach) => reach.to_reach(),
                Err(StoreError::NotFound) => Reach::Nothing,
                Err(error) => return Err(error),
            },
        };
        self.creator_reach.insert_read(creator, reach.clone(), started);
        Ok(reach)
    }

    /// Mints `new` for `caller` if the token rule lets them (`tessera_core::authorize_mint`: minting is a change,
    /// and a token never gets more rights than its maker) and returns its record and its secret, which is shown
    /// once and never stored. The node its scope names must exist. A token minted with an API key has the key as
    /// its creator; one minted in a user's session has the user, so it outlives the session and reaches what the
    /// user reaches.
    ///
    /// The account's expiry policy for the kind applies (`TokenService::policies`): a token asking for no expiry
    /// gets the default lifetime, and one asking to live longer than the maximum is cut to it (not refused, so
    /// the vendors' clients, which never ask for an expiry, keep working); the audit entry says so.
    pub async fn mint(&self, caller: &Caller, mut new: NewToken) -> Result<(TokenRecord, Secret), TokenError> {
        let target = self.management_target(caller.account(), new.scope).await?;
        authorize_mint(&caller.grant, now_ms(), &target, new.rights)?;
        let creator = match caller.record.kind {
            TokenKind::UserAccess => caller.record.creator,
            _ => Creator::Token(caller.record.id),
        };
        let asked = new.expires_at_ms;
        let policy = self.policy_for(caller.account(), new.kind).await?;
        new.expires_at_ms = policy_expiry(policy.as_ref(), asked, now_ms());
        let (record, secret) = self.prepare(caller.account(), creator, new, None);
        let mut entry = audit::by(caller, AuditEvent::TokenMinted).about(record.id);
        entry = describe(entry, &record);
        if new_expiry_differs(asked, record.expires_at_ms) {
            entry = entry.with("expiry_set_by_policy", true).with("expiry_asked", asked.map(crate::time::rfc3339));
        }
        self.store.insert_token(&record, &[entry]).await?;
        Ok((record, secret))
    }

    /// The account's policy for new tokens of `kind`, if it has one. Login sessions have none: their lifetimes
    /// are the server's.
    async fn policy_for(&self, account: AccountId, kind: TokenKind) -> Result<Option<TokenPolicy>, StoreError> {
        if matches!(kind, TokenKind::UserAccess | TokenKind::Refresh) {
            return Ok(None);
        }
        Ok(self.store.token_policies(account).await?.into_iter().find(|policy| policy.kind == kind))
    }

    /// A new token's record and secret, not yet stored.
    pub(crate) fn prepare(
        &self,
        account: AccountId,
        creator: Creator,
        new: NewToken,
        family: Option<Id>,
    ) -> (TokenRecord, Secret) {
        let secret = new_secret(new.kind);
        let digest = self.key.digest(&secret);
        let record = TokenRecord {
            rights: new.rights,
            name: new.name,
            tags: new.tags,
            expires_at_ms: new.expires_at_ms,
            family,
            resource: new.resource,
            quota: new.quota,
            ..TokenRecord::new(TokenId(new_id()), account, new.kind, digest, new.scope, creator, now_ms())
        };
        (record, secret)
    }

    /// The live tokens scoped at `at` (every scope when `None`) that `caller` may see: everyone's to the API key,
    /// an account administrator and an admin of the node; the caller's own otherwise
    /// (`tessera_core::authorize_token_listing`). What the store answers is exactly that set, so no listed token
    /// needs judging again.
    pub async fn list(
        &self,
        caller: &Caller,
        at: Option<Scope>,
        narrowing: Narrowing,
        page: Page,
    ) -> Result<Paged<TokenRecord>, TokenError> {
        let target = match at {
            Some(scope) => self.management_target(caller.account(), scope).await?,
            None => Target::account(caller.account()),
        };
        let (_, listed) = authorize_token_listing(&caller.grant, now_ms(), &target)?;
        let creator = match listed {
            ListedTokens::Everyones => None,
            // A node the caller cannot even read is, to them, a node that does not exist: answering an empty
            // listing there would confirm that it does.
            ListedTokens::MadeBy(_)
                if !target.path().is_empty() && caller.authorize(Action::Read, &target).is_err() =>
            {
                return Err(TokenError::NoSuch(node_kind(&target)));
            }
            ListedTokens::MadeBy(creator) => Some(creator),
        };
        let filter = TokenFilter {
            scope: at,
            creator,
            expires_before_ms: narrowing.expiring_before_ms,
            unused_since_ms: narrowing.unused_since_ms,
        };
        Ok(self.store.list_tokens(caller.account(), filter, now_ms(), page).await?)
    }

    /// The live token `id` if `caller` manages it (`tessera_core::authorize_token_management`), with the permit
    /// to change or revoke it. A token the caller does not manage is refused as one that does not exist.
    pub async fn managed(&self, caller: &Caller, id: TokenId) -> Result<(TokenRecord, Permit), TokenError> {
        let record = match self.store.token(caller.account(), id).await {
            Ok(record) if record.revoked_at_ms.is_none() => record,
            Ok(_) | Err(StoreError::NotFound) => return Err(TokenError::Denied(Denial::NotYourToken)),
            Err(error) => return Err(error.into()),
        };
        self.judge_management(caller, record).await
    }

    /// As [`TokenService::managed`], for a token named by its secret (Horde's routes take either).
    pub async fn managed_by_secret(
        &self,
        caller: &Caller,
        secret: &Secret,
    ) -> Result<(TokenRecord, Permit), TokenError> {
        let record = match self.store.token_by_digest(&self.digest(secret)).await {
            Ok(record) if record.revoked_at_ms.is_none() && record.account == caller.account() => record,
            Ok(_) | Err(StoreError::NotFound) => return Err(TokenError::Denied(Denial::NotYourToken)),
            Err(error) => return Err(error.into()),
        };
        self.judge_management(caller, record).await
    }

    async fn judge_management(
        &self,
        caller: &Caller,
        record: TokenRecord,
    ) -> Result<(TokenRecord, Permit), TokenError> {
        // A token whose node is gone (its device deleted) is judged at the account's root: its maker and the
        // account's managers can still see and revoke it.
        let scope_target = match self.management_target(record.account, record.scope).await {
            Ok(target) => target,
            Err(TokenError::NoSuch(_)) => Target::account(record.account),
            Err(error) => return Err(error),
        };
        let token = ManagedToken { account: record.account, creator: record.creator, scope_target };
        let permit = authorize_token_management(&caller.grant, now_ms(), &token)?;
        Ok((record, permit))
    }

    /// Stores a changed token (Horde: its resource, write flag, tags) under `permit`, the permit
    /// [`TokenService::managed`] gave for it. What the token becomes is judged as a new token would be: the
    /// caller must be allowed to mint it.
    pub async fn change(
        &self,
        caller: &Caller,
        permit: &Permit,
        original: &TokenRecord,
        changed: &TokenRecord,
    ) -> Result<(), TokenError> {
        if !permits_managing(permit, original) || changed.id != original.id || changed.account != original.account {
            return Err(TokenError::PermitMismatch);
        }
        // Tags and names change nothing a token reaches: its manager may change them whatever they reach now.
        if (changed.scope, changed.rights) != (original.scope, original.rights) {
            let before = ManagedToken {
                account: original.account,
                creator: original.creator,
                scope_target: permit.target().clone(),
            };
            let after = ManagedToken {
                account: changed.account,
                creator: original.creator,
                scope_target: self.management_target(changed.account, changed.scope).await?,
            };
            authorize_token_change(&caller.grant, now_ms(), &before, &after, changed.rights)?;
        }
        let mut entry = audit::by(caller, AuditEvent::TokenChanged).about(changed.id);
        entry = describe(entry, changed);
        let stored = self.store.update_token(changed, &[entry]).await?;
        self.changed(changed);
        self.changed(&stored);
        Ok(())
    }

    /// Revokes a token under `permit`, the permit [`TokenService::managed`] gave for it. The token is refused from
    /// the very next request: it leaves the cache here (and on the other nodes), and tokens it minted lose their
    /// reach.
    pub async fn revoke(&self, caller: &Caller, permit: &Permit, token: &TokenRecord) -> Result<(), TokenError> {
        if !permits_managing(permit, token) {
            return Err(TokenError::PermitMismatch);
        }
        let entry = describe(audit::by(caller, AuditEvent::TokenRevoked).about(token.id), token);
        self.revoke_with(token, entry).await?;
        Ok(())
    }

    /// Revokes `token` with its audit entry. A login session is its access and refresh tokens together: revoking
    /// either alone would leave the other to renew the session (a deleted session came back at its next request).
    async fn revoke_with(&self, token: &TokenRecord, entry: AuditEntry) -> Result<Vec<TokenRecord>, StoreError> {
        let revoked = match token.family {
            Some(family) if matches!(token.kind, TokenKind::UserAccess | TokenKind::Refresh) => {
                self.store.revoke_family(family, now_ms(), &[entry]).await?
            }
            _ => vec![self.store.revoke_token(token.account, token.id, now_ms(), &[entry]).await?],
        };
        self.forget(&revoked);
        Ok(revoked)
    }

    /// Gives `token` a new secret under `permit` (from [`TokenService::managed`]), keeping its id, name, scope and
    /// rights; the old secret goes on working for `overlap`, on every node (each judges the time itself), and is
    /// refused after it. A token whose creator no longer grants it is not renewed
    /// (`tessera_core::authorize_token_rotation`), nor a login session (its refresh token renews it).
    pub async fn rotate(
        &self,
        caller: &Caller,
        permit: &Permit,
        token: &TokenRecord,
        overlap: Duration,
    ) -> Result<(TokenRecord, Secret), TokenError> {
        if !permits_managing(permit, token) {
            return Err(TokenError::PermitMismatch);
        }
        if matches!(token.kind, TokenKind::UserAccess | TokenKind::Refresh) {
            return Err(TokenError::Invalid(
                "a login session is renewed with its refresh token, not rotated".to_owned(),
            ));
        }
        if overlap > MAX_ROTATION_OVERLAP {
            return Err(TokenError::Invalid(format!(
                "the overlap may be at most {} seconds (30 days)",
                MAX_ROTATION_OVERLAP.as_secs()
            )));
        }
        let reach = self.reach_of(token.account, token.creator).await?;
        let managed =
            ManagedToken { account: token.account, creator: token.creator, scope_target: permit.target().clone() };
        authorize_token_rotation(&caller.grant, now_ms(), &managed, token.rights, &reach)?;
        let secret = crate::entropy::new_secret(token.kind);
        let now = now_ms();
        let until = now.saturating_add(i64::try_from(overlap.as_millis()).unwrap_or(i64::MAX));
        let entry = describe(audit::by(caller, AuditEvent::TokenRotated).about(token.id), token)
            .with("overlap_seconds", overlap.as_secs())
            .with("old_secret_until", crate::time::rfc3339(until));
        let rotated =
            self.store.rotate_secret(token.account, token.id, &self.key.digest(&secret), until, now, &[entry]).await?;
        // Both: what this call read, and what the store replaced (another rotation may have come in between, and
        // its secret, cached by now, must stop as the store says).
        self.forget(&[token.clone(), rotated.clone()]);
        Ok((rotated, secret))
    }

    /// Disables (`enabled` false) or enables `token` under `permit` (from [`TokenService::managed`]). A disabled
    /// token is refused everywhere from the next request (its connections end within a second), and so are the
    /// tokens a disabled API key minted; enabling it brings them back. Login sessions are ended, not disabled.
    pub async fn set_enabled(
        &self,
        caller: &Caller,
        permit: &Permit,
        token: &TokenRecord,
        enabled: bool,
    ) -> Result<TokenRecord, TokenError> {
        if !permits_managing(permit, token) {
            return Err(TokenError::PermitMismatch);
        }
        check_enabling(caller, token, enabled)?;
        let event = if enabled { AuditEvent::TokenEnabled } else { AuditEvent::TokenDisabled };
        let entry = describe(audit::by(caller, event).about(token.id), token);
        let at = (!enabled).then(|| token.disabled_at_ms.unwrap_or_else(now_ms));
        let changed = self.store.set_token_disabled(token.account, token.id, at, &[entry]).await?;
        self.forget(std::slice::from_ref(&changed));
        Ok(changed)
    }

    /// Revokes every live token `selection` takes that `caller` manages (the token rule, token by token, for
    /// anyone who does not manage the whole account), a batch per transaction, and answers how many. The trail
    /// gets an entry per token and one for each batch of the call.
    pub async fn revoke_selection(&self, caller: &Caller, selection: TokenSelection) -> Result<u64, TokenError> {
        let nothing_named = TokenSelection { after: None, ..selection } == TokenSelection::default();
        if nothing_named {
            return Err(TokenError::Invalid(
                "name the tokens to revoke: a user, a collection, a device or a kind".to_owned(),
            ));
        }
        let (_, listed) = authorize_token_listing(&caller.grant, now_ms(), &Target::account(caller.account()))?;
        // Someone who administers no team manages only what they made: the store can narrow to that at once,
        // instead of the rule judging every token of the account one by one.
        let mut selection = selection;
        if let ListedTokens::MadeBy(own) = listed
            && caller.grant.creator_reach.writes_somewhere() != Some(true)
        {
            match selection.creator {
                Some(creator) if creator != own => return Ok(0),
                _ => selection.creator = Some(own),
            }
        }
        let mut revoked = 0;
        let mut after = None;
        loop {
            let batch = TokenSelection { after, ..selection };
            let candidates = self.store.select_tokens(caller.account(), batch, now_ms(), BULK_BATCH).await?;
            let Some(last) = candidates.last() else {
                return Ok(revoked);
            };
            after = Some(last.id);
            let full = candidates.len() == BULK_BATCH as usize;
            let mut managed = Vec::with_capacity(candidates.len());
            for candidate in candidates {
                let manages = match listed {
                    ListedTokens::Everyones => true,
                    ListedTokens::MadeBy(_) => self.judge_management(caller, candidate.clone()).await.is_ok(),
                };
                if manages {
                    managed.push(candidate);
                }
            }
            if !managed.is_empty() {
                let ids: Vec<TokenId> = managed.iter().map(|token| token.id).collect();
                // What the store revoked (not what was asked: another may have revoked one meanwhile), each
                // named, and the call's count; a session's other half is revoked with it but not counted.
                let asked = |token: &TokenRecord| ids.contains(&token.id);
                let entries = |gone: &[TokenRecord]| {
                    let mut entries: Vec<AuditEntry> = gone
                        .iter()
                        .map(|token| {
                            describe(audit::by(caller, AuditEvent::TokenRevoked).about(token.id), token)
                                .with("bulk", true)
                        })
                        .collect();
                    entries.push(
                        describe_selection(audit::by(caller, AuditEvent::TokensBulkRevoked), &selection)
                            .with("count", gone.iter().filter(|token| asked(token)).count()),
                    );
                    entries
                };
                let gone = self.store.revoke_tokens(caller.account(), &ids, now_ms(), &entries).await?;
                revoked += gone.iter().filter(|token| asked(token)).count() as u64;
                self.forget(&gone);
            }
            if !full {
                return Ok(revoked);
            }
        }
    }

    /// Revokes the tokens whose secrets are in `secrets`, reported as leaked by anyone from `from`. Malformed and
    /// unknown secrets, and a replaced secret past its overlap (it works no more), are passed over; the caller
    /// never learns which was which. Answers how many were revoked, for the log and the tests only.
    pub async fn revoke_leaked(&self, secrets: &[String], from: Option<IpAddr>) -> Result<u64, StoreError> {
        let mut revoked = 0;
        for text in secrets {
            let Ok(secret) = Secret::parse(text.trim()) else { continue };
            let digest = self.key.digest(&secret);
            let record = match self.store.token_by_digest(&digest).await {
                Ok(record) if record.revoked_at_ms.is_none() && record.kind == secret.kind() => record,
                Ok(_) | Err(StoreError::NotFound) => continue,
                Err(error) => return Err(error),
            };
            if check_secret(&record, &digest, now_ms()).is_err() {
                continue;
            }
            let entry = audit::entry(record.account, Actor::Anonymous, AuditEvent::TokenLeakRevoked)
                .about(record.id)
                .coming_from(from)
                .with("kind", record.kind.as_str())
                .with("name", record.name.clone())
                .with("replaced_secret", record.digest != digest);
            match self.revoke_with(&record, entry).await {
                Ok(_) => revoked += 1,
                // Revoked meanwhile by someone else: nothing left to do.
                Err(StoreError::NotFound) => {}
                Err(error) => return Err(error),
            }
        }
        Ok(revoked)
    }

    /// The account's expiry policies, for anyone who manages tokens there (they bound what they may mint).
    pub async fn policies(&self, caller: &Caller) -> Result<Vec<TokenPolicy>, TokenError> {
        authorize_token_listing(&caller.grant, now_ms(), &Target::account(caller.account()))?;
        Ok(self.store.token_policies(caller.account()).await?)
    }

    /// Sets the account's policy for one kind of token, under an account administrator's permit
    /// (`Action::ManageUsers` on the account). Tokens that exist keep their expiry; the policy bounds new ones.
    pub async fn set_policy(&self, caller: &Caller, permit: &Permit, policy: TokenPolicy) -> Result<(), TokenError> {
        if permit.action() != Action::ManageUsers
            || permit.account() != caller.account()
            || !permit.target().path().is_empty()
        {
            return Err(TokenError::PermitMismatch);
        }
        if matches!(policy.kind, TokenKind::UserAccess | TokenKind::Refresh) {
            return Err(TokenError::Invalid(
                "login sessions live as long as the server's session settings say; they take no policy".to_owned(),
            ));
        }
        if let (Some(max), Some(default)) = (policy.max_lifetime_seconds, policy.default_lifetime_seconds)
            && default > max
        {
            return Err(TokenError::Invalid(format!(
                "the default lifetime ({default} s) is longer than the maximum ({max} s)"
            )));
        }
        if policy.max_lifetime_seconds == Some(0) || policy.default_lifetime_seconds == Some(0) {
            return Err(TokenError::Invalid("a lifetime of 0 seconds would make tokens that never work".to_owned()));
        }
        let entry = audit::by(caller, AuditEvent::PolicyChanged)
            .with("kind", policy.kind.as_str())
            .with("max_lifetime_seconds", policy.max_lifetime_seconds)
            .with("default_lifetime_seconds", policy.default_lifetime_seconds);
        self.store.set_token_policy(caller.account(), &policy, &[entry]).await?;
        Ok(())
    }

    /// Drops a token whose scope, rights or tags changed from the cache, so the next request sees the change. The
    /// other nodes were told by the store, in the change's own transaction (`tessera_store::Invalidation`).
    pub fn changed(&self, token: &TokenRecord) {
        self.by_digest.invalidate(&token.digest);
        if let Some(previous) = &token.previous_digest {
            self.by_digest.invalidate(previous);
        }
        self.remember_invalidation(Creator::Token(token.id));
    }

    /// Forgets what a creator was known to reach, after a change of their memberships or role, so the next
    /// request of every token they made is judged on what they reach now. The other nodes were told by the
    /// store, in the change's own transaction.
    pub fn reach_changed(&self, creator: Creator) {
        self.reach_changed_here(creator);
    }

    /// As [`TokenService::reach_changed`], for a change another node made and told.
    pub fn reach_changed_here(&self, creator: Creator) {
        self.creator_reach.invalidate(&creator);
        self.remember_invalidation(creator);
    }

    /// Drops tokens the store has just revoked from the caches, so the next request with them is refused. The
    /// other nodes were told by the store, in the revocation's own transaction.
    pub fn forget(&self, revoked: &[TokenRecord]) {
        for token in revoked {
            self.forget_here(token.id, &token.digest);
            if let Some(previous) = &token.previous_digest {
                self.forget_here(token.id, previous);
            }
        }
    }

    /// As [`TokenService::forget`], for a token another node revoked or changed.
    pub fn forget_here(&self, token: TokenId, digest: &SecretDigest) {
        self.by_digest.invalidate(digest);
        self.creator_reach.invalidate(&Creator::Token(token));
        self.remember_invalidation(Creator::Token(token));
    }

    fn remember_invalidation(&self, creator: Creator) {
        self.rechecks().remember_invalidation(creator, Instant::now());
        // Wakes the long-lived callers of this token, or of this creator, to judge themselves again. Signals that
        // come faster than they are taken count once.
        if let Some(waiting) = self.recheck_waiters().get(&creator) {
            waiting.send_modify(|generation| *generation = generation.wrapping_add(1));
        }
    }

    fn recheck_waiters(&self) -> std::sync::MutexGuard<'_, HashMap<Creator, watch::Sender<u64>>> {
        self.recheck_waiters.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The schedule on which a long-lived caller (an MQTT connection, a kept session, a stream) is judged again;
    /// its first [`RecheckSchedule::due`] answers at once.
    pub fn recheck_schedule(&self, caller: &Caller) -> RecheckSchedule {
        let mut keys = vec![Creator::Token(caller.record.id), caller.record.creator];
        keys.dedup();
        let mut waiters = self.recheck_waiters();
        let own = keys
            .into_iter()
            .map(|key| {
                let receiver = waiters.entry(key).or_insert_with(|| watch::Sender::new(0)).subscribe();
                (key, receiver)
            })
            .collect();
        drop(waiters);
        let mut everything = self.recheck_everything.subscribe();
        everything.mark_changed();
        RecheckSchedule {
            everything,
            own,
            waiters: self.recheck_waiters.clone(),
            woke_at: Instant::now(),
            timer: Box::pin(tokio::time::sleep(RECHECK_BACKSTOP)),
            armed: false,
        }
    }

    fn rechecks(&self) -> std::sync::MutexGuard<'_, Rechecks> {
        self.rechecks.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Empties the caches, after changes were missed that cannot be named.
    pub fn forget_everything(&self) {
        self.by_digest.invalidate_all();
        self.creator_reach.invalidate_all();
        self.recheck_everything.send_modify(|generation| *generation = generation.wrapping_add(1));
    }

    /// Judges a long-lived caller again (a stream, a connection): its token as the store has it now and its
    /// creator's current reach. `None` once it is revoked, expired or gone. When the store cannot answer (or takes
    /// longer than `RECHECK_TIMEOUT`), the last answer stands until [`RECHECK_GRACE`] has passed since the caller
    /// was last confirmed, unless this node heard within that time that the token or its creator's reach changed.
    pub async fn reverify(&self, caller: &Caller) -> Option<Caller> {
        self.figures.rechecks.inc();
        let judged = tokio::time::timeout(RECHECK_TIMEOUT, self.judge_again(caller)).await.unwrap_or_else(|_| {
            self.store_failed();
            Err(StoreError::Unavailable(format!("no answer within {} s", RECHECK_TIMEOUT.as_secs()).into()))
        });
        let error = match judged {
            Ok(judged) => return judged,
            Err(error) => error,
        };
        let mut rechecks = self.rechecks();
        let kept = check_live(&caller.grant, now_ms()).is_ok()
            && check_secret(&caller.record, &caller.presented, now_ms()).is_ok()
            && caller.confirmed_at.elapsed() < RECHECK_GRACE
            && !rechecks.invalidated_lately(caller);
        if kept {
            rechecks.kept += 1;
        } else {
            rechecks.ended += 1;
        }
        // During an outage every unconfirmed connection fails its check every second: one warning now and then says it all.
        let now = Instant::now();
        if rechecks.warned_at.is_none_or(|at| now.duration_since(at) >= RECHECK_WARNING_EVERY) {
            tracing::warn!(
                ?error,
                kept_on_their_last_answer = rechecks.kept,
                ended = rechecks.ended,
                grace_s = RECHECK_GRACE.as_secs(),
                "tokens of connected clients could not be checked again"
            );
            (rechecks.kept, rechecks.ended, rechecks.warned_at) = (0, 0, Some(now));
        }
        kept.then(|| caller.clone())
    }

    /// `Ok(None)` when the token is revoked, expired or gone; `Err` when the store could not say.
    async fn judge_again(&self, caller: &Caller) -> Result<Option<Caller>, StoreError> {
        let record = match self.by_digest.get(&caller.presented) {
            Some(record) => record,
            None => {
                let started = self.by_digest.read_started();
                let record =
                    match self.recheck_from_store(self.store.token(caller.record.account, caller.record.id)).await {
                        Ok(record) => Arc::new(record),
                        Err(StoreError::NotFound) => return Ok(None),
                        Err(error) => return Err(error),
                    };
                self.by_digest.insert_read(caller.presented, record.clone(), started);
                record
            }
        };
        // The secret it connected with may be one a rotation replaced, whose overlap has ended since.
        if record.id != caller.record.id || check_secret(&record, &caller.presented, now_ms()).is_err() {
            return Ok(None);
        }
        let reach = match self.cached_reach(record.creator) {
            Some(reach) => reach,
            None => self.recheck_from_store(self.reach_of(record.account, record.creator)).await?,
        };
        let grant = record.grant(reach);
        // A caller whose creator reaches nothing any more (a disabled or revoked API key, a user in no team) can
        // do nothing: its connection ends rather than stay open receiving nothing.
        if check_live(&grant, now_ms()).is_err() || grant.creator_reach == Reach::Nothing {
            return Ok(None);
        }
        Ok(Some(Caller {
            record,
            grant,
            address: caller.address,
            presented: caller.presented,
            confirmed_at: Instant::now(),
        }))
    }

    /// A check's store read: refused at once while the store is known to be failing, and a failure (not a
    /// "not found") starts that pause (see `STORE_FAILING_PAUSE`).
    async fn recheck_from_store<T>(&self, read: impl Future<Output = Result<T, StoreError>>) -> Result<T, StoreError> {
        if self.rechecks().store_failing_until.is_some_and(|until| Instant::now() < until) {
            return Err(StoreError::Unavailable("the store failed a check moments ago".into()));
        }
        read.await.inspect_err(|error| {
            if !matches!(error, StoreError::NotFound) {
                self.store_failed();
            }
        })
    }

    fn store_failed(&self) {
        self.rechecks().store_failing_until = Some(Instant::now() + STORE_FAILING_PAUSE);
    }

    /// The digest the store keeps of `secret`.
    pub fn digest(&self, secret: &Secret) -> SecretDigest {
        self.key.digest(secret)
    }

    /// The node a token with `scope` is managed under, from the store's parent chain (never from the text of a
    /// URL): the account itself for scopes at the root. `TokenError::NoSuch` when the node does not exist.
    pub async fn management_target(&self, account: AccountId, scope: Scope) -> Result<Target, TokenError> {
        let missing = |what| {
            move |error| match error {
                StoreError::NotFound => TokenError::NoSuch(what),
                other => TokenError::Store(other),
            }
        };
        Ok(match scope {
            Scope::Account | Scope::AllTeams | Scope::AllCollections => Target::account(account),
            Scope::Team(team) => {
                self.store.team(account, team).await.map_err(missing("team"))?;
                Target::team(account, team)
            }
            Scope::Collection(collection) => {
                self.store.collection(account, collection).await.map_err(missing("collection"))?;
                Target::collection(account, collection)
            }
            Scope::Device(device) => {
                let device = self.store.device(account, device).await.map_err(missing("device"))?;
                Target::device(account, device.collection, device.id)
            }
        })
    }

    /// A Horde resource path as a token would be made for it: parsed (refused naming the problem) and naming
    /// nodes that exist (refused naming the missing one). Both refusals are the request's fault.
    pub async fn existing_resource(&self, account: AccountId, text: &str) -> Result<tessera_core::Resource, AppError> {
        let resource = tessera_core::Resource::parse(text).map_err(|error| AppError::BadRequest(error.to_string()))?;
        match self.resource_target(account, &resource).await {
            Ok(_) => Ok(resource),
            Err(TokenError::NoSuch(what)) => {
                Err(AppError::BadRequest(format!("the resource names no existing {what}")))
            }
            Err(error) => Err(error.into()),
        }
    }

    /// The node a Horde resource names, checked against the store: every node exists, and a device lies in the
    /// collection its path names.
    pub async fn resource_target(
        &self,
        account: AccountId,
        resource: &tessera_core::Resource,
    ) -> Result<Target, TokenError> {
        let target = self.management_target(account, resource.scope()).await?;
        if let tessera_core::Resource::Device(collection, _) = resource
            && target.collection_id() != Some(*collection)
        {
            return Err(TokenError::NoSuch("device in that collection"));
        }
        Ok(target)
    }

    fn count_use(&self, token: TokenId, from: Option<IpAddr>) {
        self.count(token, from, |entry| entry.uses += 1);
    }

    /// A request refused for the token's quota: not a use, but the token was presented.
    fn count_throttled(&self, token: &TokenRecord, from: Option<IpAddr>) {
        self.figures.throttled(token.kind);
        self.count(token.id, from, |entry| entry.throttled += 1);
    }

    fn count(&self, token: TokenId, from: Option<IpAddr>, add: impl FnOnce(&mut TokenUsage)) {
        let now = now_ms();
        let mut usage = self.usage.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let entry = usage.entry(token).or_insert(TokenUsage {
            token,
            last_used_at_ms: now,
            last_used_from: from,
            uses: 0,
            throttled: 0,
        });
        add(entry);
        if now >= entry.last_used_at_ms {
            entry.last_used_at_ms = now;
            entry.last_used_from = from.or(entry.last_used_from);
        }
    }

    /// Writes the usage counted since the last flush to the store. On failure the counts are put back.
    pub async fn flush_usage(&self) -> Result<(), StoreError> {
        let pending: Vec<TokenUsage> = {
            let mut usage = self.usage.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            usage.drain().map(|(_, entry)| entry).collect()
        };
        if pending.is_empty() {
            return Ok(());
        }
        let outcome = self.store.record_token_usage(&pending).await;
        if outcome.is_err() {
            let mut usage = self.usage.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            for entry in pending {
                let merged = usage.entry(entry.token).or_insert(TokenUsage { uses: 0, throttled: 0, ..entry });
                merged.uses += entry.uses;
                merged.throttled += entry.throttled;
                if entry.last_used_at_ms > merged.last_used_at_ms {
                    merged.last_used_at_ms = entry.last_used_at_ms;
                    merged.last_used_from = entry.last_used_from.or(merged.last_used_from);
                }
            }
        }
        outcome
    }
}

/// The block an address's limits count under: itself for IPv4, its /64 for IPv6 (one host's usual share).
pub(crate) fn address_block(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V4(_) => address,
        IpAddr::V6(v6) => IpAddr::V6(std::net::Ipv6Addr::from(u128::from(v6) & !((1u128 << 64) - 1))),
    }
}

/// Why `caller` may not set `token` enabled or disabled, whoever manages it: a login session is ended, not
/// disabled, and a credential does not disable itself. Public so that a change of several fields (the native
/// PATCH) can refuse before it stores any of them.
pub fn check_enabling(caller: &Caller, token: &TokenRecord, enabled: bool) -> Result<(), TokenError> {
    if matches!(token.kind, TokenKind::UserAccess | TokenKind::Refresh) {
        return Err(TokenError::Invalid("a login session is ended (revoked), not disabled".to_owned()));
    }
    if token.id == caller.record.id && !enabled {
        return Err(TokenError::Invalid("a credential cannot disable itself".to_owned()));
    }
    Ok(())
}

/// The expiry a new token gets under `policy` when `asked` was asked for, at `now`: the default lifetime when none
/// was asked, and at most the maximum lifetime.
fn policy_expiry(policy: Option<&TokenPolicy>, asked: Option<i64>, now: i64) -> Option<i64> {
    let Some(policy) = policy else { return asked };
    let after = |seconds: u64| now.saturating_add(i64::try_from(seconds).unwrap_or(i64::MAX).saturating_mul(1000));
    let latest = policy.max_lifetime_seconds.map(after);
    let wanted = asked.or(policy.default_lifetime_seconds.map(after));
    match (wanted, latest) {
        (Some(wanted), Some(latest)) => Some(wanted.min(latest)),
        (None, latest) => latest,
        (wanted, None) => wanted,
    }
}

fn new_expiry_differs(asked: Option<i64>, given: Option<i64>) -> bool {
    asked != given
}

/// The token's kind, name, scope and rights in an audit entry.
pub(crate) fn describe(entry: AuditEntry, token: &TokenRecord) -> AuditEntry {
    let (scope_kind, scope_id) = scope_parts(token.scope);
    let entry = entry
        .with("kind", token.kind.as_str())
        .with("name", token.name.clone())
        .with("scope", scope_kind)
        .with("rights", if token.rights.can_write() { "read_write" } else { "read" })
        .with("expires_at", token.expires_at_ms.map(crate::time::rfc3339));
    match scope_id {
        Some(id) => entry.with("scope_id", id),
        None => entry,
    }
}

/// What a bulk revocation asked for, in its audit entry.
pub(crate) fn describe_selection(mut entry: AuditEntry, selection: &TokenSelection) -> AuditEntry {
    match selection.creator {
        Some(Creator::User(user)) => entry = entry.with("user", user.to_string()),
        Some(Creator::Token(token)) => entry = entry.with("made_by_token", token.to_string()),
        Some(Creator::System) => entry = entry.with("made_by", "system"),
        None => {}
    }
    if let Some(collection) = selection.collection {
        entry = entry.with("collection", collection.to_string());
    }
    if let Some(device) = selection.device {
        entry = entry.with("device", device.to_string());
    }
    if let Some(kind) = selection.kind {
        entry = entry.with("token_kind", kind.as_str());
    }
    entry
}

/// A scope as its kind's name and its node's id.
pub fn scope_parts(scope: Scope) -> (&'static str, Option<String>) {
    match scope {
        Scope::Account => ("account", None),
        Scope::AllTeams => ("all_teams", None),
        Scope::AllCollections => ("all_collections", None),
        Scope::Team(team) => ("team", Some(team.to_string())),
        Scope::Collection(collection) => ("collection", Some(collection.to_string())),
        Scope::Device(device) => ("device", Some(device.to_string())),
    }
}

/// What a node is called in a "no such …" answer.
fn node_kind(target: &Target) -> &'static str {
    match target.path().last() {
        Some(tessera_core::Node::Team(_)) => "team",
        Some(tessera_core::Node::Collection(_)) => "collection",
        Some(tessera_core::Node::Device(_)) => "device",
        Some(tessera_core::Node::Variable(_)) => "variable",
        None => "account",
    }
}

/// Whether `permit` is one to manage `token`: a token-management permit of its account for its scope's node.
fn permits_managing(permit: &Permit, token: &TokenRecord) -> bool {
    permit.action() == Action::ManageTokens
        && permit.account() == token.account
        && scope_within(token.scope, permit.target())
}

/// Whether a token with `scope` lies inside what `target` names: the scope's own node is the target or below it.
fn scope_within(scope: Scope, target: &Target) -> bool {
    match scope {
        Scope::Account | Scope::AllTeams | Scope::AllCollections => target.path().is_empty(),
        Scope::Collection(collection) => {
            target.path().is_empty() || target.path() == [tessera_core::Node::Collection(collection)]
        }
        Scope::Team(team) => target.path().is_empty() || target.path() == [tessera_core::Node::Team(team)],
        Scope::Device(device) => {
            target.path().is_empty() || target.path().contains(&tessera_core::Node::Device(device))
        }
    }
}

#[cfg(test)]
mod tests {
    use tessera_store::SqliteStore;

    use super::*;

    /// A service over an in-memory store, and a caller verified with an account token the API key minted (so its
    /// reach depends on another token, looked up in the store).
    async fn service_and_caller() -> (Arc<dyn Store>, TokenService, Caller) {
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open_in_memory().await.unwrap());
        let key = ServerKey::new(&[0; ServerKey::LEN]);
        let credentials = crate::bootstrap::bootstrap(store.as_ref(), &key).await.unwrap().unwrap();
        let tokens = TokenService::new(store.clone(), key, 100, crate::audit::for_tests(&store).await);
        let api_key = tokens.verify(credentials.api_key.expose(), None).await.unwrap();
        let new = NewToken::new(TokenKind::Account, Scope::Account, Rights::ReadWrite, "long-lived".into(), None);
        let (_, secret) = tokens.mint(&api_key, new).await.unwrap();
        let caller = tokens.verify(secret.expose(), None).await.unwrap();
        assert_eq!(caller.record.creator, Creator::Token(api_key.record.id));
        (store, tokens, caller)
    }

    #[test]
    fn the_expiry_policy_defaults_and_caps_but_never_lengthens() {
        let now = 1_000_000;
        let policy = TokenPolicy {
            kind: TokenKind::Device,
            max_lifetime_seconds: Some(100),
            default_lifetime_seconds: Some(10),
        };
        assert_eq!(policy_expiry(None, None, now), None, "no policy, no expiry");
        assert_eq!(policy_expiry(None, Some(now + 5), now), Some(now + 5));
        assert_eq!(policy_expiry(Some(&policy), None, now), Some(now + 10_000), "the default");
        assert_eq!(policy_expiry(Some(&policy), Some(now + 500_000), now), Some(now + 100_000), "capped");
        assert_eq!(policy_expiry(Some(&policy), Some(now + 5), now), Some(now + 5), "a shorter one is kept");
        let max_only = TokenPolicy { default_lifetime_seconds: None, ..policy };
        assert_eq!(policy_expiry(Some(&max_only), None, now), Some(now + 100_000), "the maximum when none asked");
        let default_only = TokenPolicy { max_lifetime_seconds: None, ..policy };
        assert_eq!(policy_expiry(Some(&default_only), Some(now + 500_000), now), Some(now + 500_000));
        let huge = TokenPolicy { max_lifetime_seconds: Some(u64::MAX), ..policy };
        assert_eq!(policy_expiry(Some(&huge), None, now), Some(now + 10_000), "no overflow");
    }

    #[tokio::test]
    async fn a_failing_store_ends_a_long_lived_caller_only_after_the_grace_period() {
        let (store, tokens, caller) = service_and_caller().await;
        assert!(tokens.reverify(&caller).await.is_some(), "a live token passes while the store answers");
        // Nothing cached and the store closed: the check cannot be answered.
        tokens.forget_everything();
        store.close().await;
        let kept = tokens.reverify(&caller).await.expect("kept within the grace period");
        assert_eq!(kept.confirmed_at, caller.confirmed_at, "a failed check confirms nothing");

        let long_ago = Instant::now().checked_sub(RECHECK_GRACE + Duration::from_secs(1)).expect("a clock that old");
        let unconfirmed_too_long = Caller { confirmed_at: long_ago, ..caller.clone() };
        assert!(tokens.reverify(&unconfirmed_too_long).await.is_none(), "ended once the grace period is over");

        let mut expired = caller.clone();
        expired.grant.expires_at_ms = Some(now_ms() - 1);
        assert!(tokens.reverify(&expired).await.is_none(), "expiry needs no store and is never overlooked");
    }

    /// Only a verified, live token with a quota gets a counter: made-up and revoked secrets never reach the map, so
    /// no client can grow it; a connection takes nothing, its messages do.
    #[tokio::test]
    async fn only_verified_limited_tokens_are_counted_and_a_connection_takes_nothing() {
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open_in_memory().await.unwrap());
        let key = ServerKey::new(&[0; ServerKey::LEN]);
        let credentials = crate::bootstrap::bootstrap(store.as_ref(), &key).await.unwrap().unwrap();
        let limits = crate::quota::RateLimits {
            account: Some(tessera_core::Quota { requests: 2, window_seconds: 60 }),
            ..crate::quota::RateLimits::UNLIMITED
        };
        let tokens =
            TokenService::new(store.clone(), key, 100, crate::audit::for_tests(&store).await).with_rate_limits(limits);
        let api_key = tokens.verify(credentials.api_key.expose(), None).await.unwrap();
        let new = NewToken::new(TokenKind::Account, Scope::Account, Rights::ReadWrite, "limited".into(), None);
        let (_, secret) = tokens.mint(&api_key, new).await.unwrap();

        let made_up = crate::entropy::new_secret(TokenKind::Account);
        for _ in 0..100 {
            assert!(matches!(tokens.verify(made_up.expose(), None).await, Err(VerifyError::Unknown)));
        }
        assert_eq!(tokens.quotas().counted(), 0, "unknown secrets and the unlimited API key get no counter");

        let caller = tokens.verify_connection(secret.expose(), None).await.unwrap();
        assert_eq!(tokens.quotas().counted(), 0, "connecting takes nothing");
        assert!(tokens.charge(&caller).allowed());
        assert!(tokens.verify(secret.expose(), None).await.is_ok(), "the same counter over HTTP");
        assert!(!tokens.charge(&caller).allowed(), "the third request of two allowed");
        assert!(matches!(tokens.verify(secret.expose(), None).await, Err(VerifyError::OverQuota(_))));
        assert_eq!(tokens.quotas().counted(), 1);
        let usage = tokens.usage.lock().unwrap().get(&caller.record.id).map(|usage| (usage.uses, usage.throttled));
        assert_eq!(usage, Some((2, 2)), "the connection and one request used it; two were throttled");
    }

    /// Issue 19: a long-lived caller is woken by a change to its own token or creator, or by the caches being
    /// emptied, and not by anyone else's; its deadline is its expiry; the keys go with the last schedule.
    #[tokio::test]
    async fn a_recheck_schedule_wakes_for_its_own_changes_and_its_expiry_only() {
        let (_store, tokens, caller) = service_and_caller().await;
        let mut schedule = tokens.recheck_schedule(&caller);
        async fn soon(schedule: &mut RecheckSchedule, caller: &Caller) -> bool {
            tokio::time::timeout(Duration::from_millis(100), schedule.due(caller)).await.is_ok()
        }
        assert!(soon(&mut schedule, &caller).await, "at once when it starts");
        assert!(!soon(&mut schedule, &caller).await, "then not by itself");
        tokens.forget_here(TokenId::from_i64(caller.record.id.as_i64() + 1), &SecretDigest([0; 32]));
        tokens.reach_changed_here(Creator::User(tessera_core::UserId::from_i64(424_242)));
        assert!(!soon(&mut schedule, &caller).await, "not by someone else's token or creator");
        tokens.changed(&caller.record);
        assert!(soon(&mut schedule, &caller).await, "by a change to its token");
        tokens.reach_changed_here(caller.record.creator);
        assert!(soon(&mut schedule, &caller).await, "by a change to its creator's reach");
        tokens.forget_everything();
        assert!(soon(&mut schedule, &caller).await, "by the caches emptied");

        let mut expiring = caller.clone();
        expiring.grant.expires_at_ms = Some(now_ms() + 50);
        assert!(soon(&mut schedule, &expiring).await, "at its expiry");

        assert_eq!(tokens.recheck_waiters().len(), 2, "its token and its creator");
        drop(schedule);
        assert!(tokens.recheck_waiters().is_empty(), "gone with the last schedule waiting on them");
    }

    #[tokio::test]
    async fn a_revoked_token_ends_the_caller_at_once() {
        let (store, tokens, caller) = service_and_caller().await;
        let revoked = store.revoke_token(caller.account(), caller.record.id, now_ms(), &[]).await.unwrap();
        tokens.forget(&[revoked]);
        assert!(tokens.reverify(&caller).await.is_none());
    }

    /// A revocation this node heard of (here, or told by another node) is not outlived by the grace period when
    /// the store then fails to confirm it.
    #[tokio::test]
    async fn no_grace_for_a_token_this_node_heard_was_revoked() {
        let (store, tokens, caller) = service_and_caller().await;
        tokens.forget_here(caller.record.id, &caller.record.digest);
        store.close().await;
        assert!(tokens.reverify(&caller).await.is_none(), "revoked since it was confirmed");

        // A check that read the store just before the revocation committed elsewhere, and finished after this node
        // heard of it, confirmed the caller after the revocation: still no grace.
        let (store, tokens, caller) = service_and_caller().await;
        tokens.forget_here(caller.record.id, &caller.record.digest);
        let confirmed_after = Caller { confirmed_at: Instant::now(), ..caller.clone() };
        store.close().await;
        assert!(tokens.reverify(&confirmed_after).await.is_none(), "revoked just before it was confirmed");

        let (store, tokens, caller) = service_and_caller().await;
        tokens.changed(&caller.record);
        store.close().await;
        assert!(tokens.reverify(&caller).await.is_none(), "changed on this node since it was confirmed");

        let (store, tokens, caller) = service_and_caller().await;
        tokens.reach_changed_here(caller.record.creator);
        store.close().await;
        assert!(tokens.reverify(&caller).await.is_none(), "its creator's reach changed since it was confirmed");

        let (store, tokens, caller) = service_and_caller().await;
        tokens.forget_everything();
        tokens.forget_here(TokenId::from_i64(caller.record.id.as_i64() + 1), &SecretDigest([0; 32]));
        store.close().await;
        assert!(tokens.reverify(&caller).await.is_some(), "another token's revocation does not end this one");
    }
}
