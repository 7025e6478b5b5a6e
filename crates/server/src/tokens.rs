//! Token lifecycle at the server: verifying presented secrets (with a cache, so a known token costs no store round
//! trip), minting, revoking, computing a creator's current reach, and counting use off the request path.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::cache::RecordCache;
use crate::error::AppError;
use tessera_core::{
    AccountId, Action, Denial, Grant, Id, ListedTokens, ManagedToken, Permit, Presentation, Reach, Rights, Scope,
    Secret, SecretDigest, SecretError, ServerKey, Target, TokenId, TokenKind, authorize, authorize_mint,
    authorize_token_change, authorize_token_listing, authorize_token_management, check_live, check_presentation,
};
use tessera_store::{Creator, Page, Paged, Store, StoreError, TokenFilter, TokenRecord, TokenUsage};

use crate::entropy::{new_id, new_secret};
use crate::time::now_ms;

/// Why a presented credential is not a credential. Every variant is a 401.
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
}

/// A verified credential: the token's record and its grant, with its creator's reach as of now.
#[derive(Debug, Clone)]
pub struct Caller {
    pub record: Arc<TokenRecord>,
    pub grant: Grant,
    /// When the record and the reach were last read (from the cache or the store) and found live.
    confirmed_at: Instant,
}

/// How long a long-lived connection (MQTT, a stream) is kept while its token cannot be checked again because the
/// store fails. Refusing at the first failed check would drop every such client on one database hiccup, and their
/// reconnections would then fail too; trusting the last answer for ever would keep a token revoked meanwhile (on
/// another node) working. Expiry is still checked every time, and a token this node heard within this time was
/// revoked or changed (or whose creator's reach changed) gets no grace.
pub const RECHECK_GRACE: Duration = Duration::from_secs(30);

/// How often long-lived callers are judged again.
pub const RECHECK_EVERY: Duration = Duration::from_secs(1);

/// A check of a long-lived caller that takes longer counts as a failed one: a silent partition could otherwise
/// hold the check (and the grace's end) for as long as the operating system keeps the connection.
const RECHECK_TIMEOUT: Duration = Duration::from_secs(5);

/// After the store failed a check, checks that would need it fail at once for this long: every connection would
/// otherwise wait out its own timeout each second, delivering nothing meanwhile, and add a query to the failing
/// store.
const STORE_FAILING_PAUSE: Duration = Duration::from_secs(5);

/// At most one warning about failing checks per this long, with the counts since the last one.
const RECHECK_WARNING_EVERY: Duration = Duration::from_secs(10);

/// The ticker for [`TokenService::reverify`]: every [`RECHECK_EVERY`]; after a slow check the next comes a period
/// later, not the missed ones back to back.
pub fn recheck_ticker() -> tokio::time::Interval {
    let mut ticker = tokio::time::interval(RECHECK_EVERY);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker
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
}

impl NewToken {
    /// A token without tags or a Horde resource text.
    pub fn new(kind: TokenKind, scope: Scope, rights: Rights, name: String, expires_at_ms: Option<i64>) -> NewToken {
        NewToken { kind, scope, rights, name, expires_at_ms, tags: Default::default(), resource: None }
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
}

impl std::fmt::Debug for TokenService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenService").field("cached", &self.by_digest.entry_count()).finish_non_exhaustive()
    }
}

/// What a token made by Tessera itself reaches: the account's data.
const SYSTEM_REACH: Reach = Reach::AccountData(Rights::ReadWrite);

impl TokenService {
    pub fn new(store: Arc<dyn Store>, key: ServerKey, cache_capacity: u64) -> TokenService {
        TokenService {
            store,
            key,
            // Revocations invalidate entries at once; the time to live bounds staleness should the store be changed
            // behind this service's back.
            by_digest: RecordCache::new(cache_capacity, Duration::from_secs(600)),
            creator_reach: RecordCache::new(10_000, Duration::from_secs(60)),
            usage: Mutex::new(HashMap::new()),
            rechecks: Mutex::default(),
        }
    }

    /// Checks a presented secret: its shape and checksum first (no lookup for a typo), then the cache, then the
    /// store. A revoked or expired token is refused here, and `authorize` checks both again on every use.
    pub async fn verify(&self, presented: &str) -> Result<Caller, VerifyError> {
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
        let reach = self.reach_of(record.account, record.creator).await.map_err(VerifyError::Store)?;
        let grant = record.grant(reach);
        check_live(&grant, now_ms()).map_err(VerifyError::Dead)?;
        self.count_use(record.id);
        Ok(Caller { record, grant, confirmed_at: Instant::now() })
    }

    /// As [`TokenService::verify`], for a credential presented as `presentation` says.
    pub async fn verify_presented(&self, presented: &str, presentation: Presentation) -> Result<Caller, VerifyError> {
        let caller = self.verify(presented).await?;
        check_presentation(&caller.grant, presentation).map_err(VerifyError::NotTakenHere)?;
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
            Creator::Token(minter) => match self.store.token(account, minter).await {
                Ok(minter) if minter.revoked_at_ms.is_none() && minter.kind == TokenKind::ApiKey => {
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
    pub async fn mint(&self, caller: &Caller, new: NewToken) -> Result<(TokenRecord, Secret), TokenError> {
        let target = self.management_target(caller.account(), new.scope).await?;
        authorize_mint(&caller.grant, now_ms(), &target, new.rights)?;
        let creator = match caller.record.kind {
            TokenKind::UserAccess => caller.record.creator,
            _ => Creator::Token(caller.record.id),
        };
        Ok(self.issue(caller.account(), creator, new, None).await?)
    }

    /// Stores a new token and returns it with its secret. Callers have authorized it: `mint` by a permit, a login
    /// by a verified password and second factor.
    pub(crate) async fn issue(
        &self,
        account: AccountId,
        creator: Creator,
        new: NewToken,
        family: Option<Id>,
    ) -> Result<(TokenRecord, Secret), StoreError> {
        let (record, secret) = self.prepare(account, creator, new, family);
        self.store.insert_token(&record).await?;
        Ok((record, secret))
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
        let record = TokenRecord {
            id: TokenId(new_id()),
            account,
            kind: new.kind,
            digest: self.key.digest(&secret),
            scope: new.scope,
            rights: new.rights,
            creator,
            name: new.name,
            tags: new.tags,
            created_at_ms: now_ms(),
            expires_at_ms: new.expires_at_ms,
            revoked_at_ms: None,
            last_used_at_ms: None,
            uses: 0,
            family,
            resource: new.resource,
        };
        (record, secret)
    }

    /// The live tokens scoped at `at` (every scope when `None`) that `caller` may see: everyone's to the API key,
    /// an account administrator and an admin of the node; the caller's own otherwise
    /// (`tessera_core::authorize_token_listing`). What the store answers is exactly that set, so no listed token
    /// needs judging again.
    pub async fn list(&self, caller: &Caller, at: Option<Scope>, page: Page) -> Result<Paged<TokenRecord>, TokenError> {
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
        Ok(self.store.list_tokens(caller.account(), TokenFilter { scope: at, creator }, now_ms(), page).await?)
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
        self.store.update_token(changed).await?;
        self.changed(changed);
        Ok(())
    }

    /// Revokes a token under `permit`, the permit [`TokenService::managed`] gave for it. The token is refused from
    /// the very next request: it leaves the cache here (and on the other nodes), and tokens it minted lose their
    /// reach.
    pub async fn revoke(&self, permit: &Permit, token: &TokenRecord) -> Result<(), TokenError> {
        if !permits_managing(permit, token) {
            return Err(TokenError::PermitMismatch);
        }
        // A login session is its access and refresh tokens together: revoking either alone would leave the other
        // to renew the session (a deleted session came back at its next request).
        let revoked = match token.family {
            Some(family) if matches!(token.kind, TokenKind::UserAccess | TokenKind::Refresh) => {
                self.store.revoke_family(family, now_ms()).await?
            }
            _ => vec![self.store.revoke_token(token.account, token.id, now_ms()).await?],
        };
        self.forget(&revoked);
        Ok(())
    }

    /// Drops a token whose scope, rights or tags changed from the cache, so the next request sees the change. The
    /// other nodes were told by the store, in the change's own transaction (`tessera_store::Invalidation`).
    pub fn changed(&self, token: &TokenRecord) {
        self.by_digest.invalidate(&token.digest);
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
    }

    fn rechecks(&self) -> std::sync::MutexGuard<'_, Rechecks> {
        self.rechecks.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Empties the caches, after changes were missed that cannot be named.
    pub fn forget_everything(&self) {
        self.by_digest.invalidate_all();
        self.creator_reach.invalidate_all();
    }

    /// Judges a long-lived caller again (a stream, a connection): its token as the store has it now and its
    /// creator's current reach. `None` once it is revoked, expired or gone. When the store cannot answer (or takes
    /// longer than `RECHECK_TIMEOUT`), the last answer stands until [`RECHECK_GRACE`] has passed since the caller
    /// was last confirmed, unless this node heard within that time that the token or its creator's reach changed.
    pub async fn reverify(&self, caller: &Caller) -> Option<Caller> {
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
            && caller.confirmed_at.elapsed() < RECHECK_GRACE
            && !rechecks.invalidated_lately(caller);
        if kept {
            rechecks.kept += 1;
        } else {
            rechecks.ended += 1;
        }
        // During an outage every connection fails its check every second: one warning now and then says it all.
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
        let record = match self.by_digest.get(&caller.record.digest) {
            Some(record) => record,
            None => {
                let started = self.by_digest.read_started();
                let record =
                    match self.recheck_from_store(self.store.token(caller.record.account, caller.record.id)).await {
                        Ok(record) => Arc::new(record),
                        Err(StoreError::NotFound) => return Ok(None),
                        Err(error) => return Err(error),
                    };
                self.by_digest.insert_read(record.digest, record.clone(), started);
                record
            }
        };
        let reach = match self.cached_reach(record.creator) {
            Some(reach) => reach,
            None => self.recheck_from_store(self.reach_of(record.account, record.creator)).await?,
        };
        let grant = record.grant(reach);
        if check_live(&grant, now_ms()).is_err() {
            return Ok(None);
        }
        Ok(Some(Caller { record, grant, confirmed_at: Instant::now() }))
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

    fn count_use(&self, token: TokenId) {
        let now = now_ms();
        let mut usage = self.usage.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let entry = usage.entry(token).or_insert(TokenUsage { token, last_used_at_ms: now, uses: 0 });
        entry.uses += 1;
        entry.last_used_at_ms = entry.last_used_at_ms.max(now);
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
                let merged = usage.entry(entry.token).or_insert(TokenUsage { uses: 0, ..entry });
                merged.uses += entry.uses;
                merged.last_used_at_ms = merged.last_used_at_ms.max(entry.last_used_at_ms);
            }
        }
        outcome
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
        let tokens = TokenService::new(store.clone(), key, 100);
        let api_key = tokens.verify(credentials.api_key.expose()).await.unwrap();
        let new = NewToken::new(TokenKind::Account, Scope::Account, Rights::ReadWrite, "long-lived".into(), None);
        let (_, secret) = tokens.mint(&api_key, new).await.unwrap();
        let caller = tokens.verify(secret.expose()).await.unwrap();
        assert_eq!(caller.record.creator, Creator::Token(api_key.record.id));
        (store, tokens, caller)
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

    #[tokio::test]
    async fn a_revoked_token_ends_the_caller_at_once() {
        let (store, tokens, caller) = service_and_caller().await;
        let revoked = store.revoke_token(caller.account(), caller.record.id, now_ms()).await.unwrap();
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
