//! Request quotas at the server: one counter per token on this node, shared by HTTP and MQTT, so a token's
//! requests over either (or both, mixed) count against one quota. The arithmetic of a window is the core's
//! (`tessera_core::quota`); this module keeps the counters, works out which quota applies (the token's own
//! setting, else its kind's default from [`RateLimits`]), and carries a request's standing to the HTTP layer that
//! writes the `RateLimit` header fields.
//!
//! Counters are per node: behind a load balancer over N nodes a token gets up to N times its quota. Only a
//! verified, live token with a limited quota gets an entry (a made-up secret never reaches the map), and an entry
//! whose window has closed is forgotten by [`Quotas::sweep`] on the usage-flush ticker, so the map holds at most the
//! tokens that made a request within their window.

use std::cell::Cell;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use tessera_core::quota::{Standing, Window};
use tessera_core::{Quota, TokenId, TokenKind};
use tessera_store::TokenRecord;

/// The default quota of each kind of token (`None`: unlimited). A token's own setting, when it has one, wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimits {
    /// A device token speaks for one device.
    pub device: Option<Quota>,
    /// A ground token speaks for every device of a collection (a gateway).
    pub ground: Option<Quota>,
    /// A Ubidots organization token: an application's, or a network server's for many devices.
    pub collection: Option<Quota>,
    /// A Ubidots `auth/token` token, the account's data.
    pub account: Option<Quota>,
    /// A Horde token for a resource path.
    pub resource: Option<Quota>,
    /// The account's master key; it only manages tokens.
    pub api_key: Option<Quota>,
    /// A person's login (the console, `/v1/me`, Horde's `/tokens`); also their refresh token.
    pub user_session: Option<Quota>,
}

impl Default for RateLimits {
    /// Tessera's defaults; the README's "Rate limits" says why each is what it is.
    fn default() -> RateLimits {
        let per_five_seconds = |requests| Some(Quota { requests, window_seconds: 5 });
        RateLimits {
            // Ubidots' 4 requests a second per device token, counted over 5 s so that a device sending each of a
            // few variables in its own request, or catching up after a lost connection, is not refused.
            device: per_five_seconds(20),
            // 100 a second: a gateway or an integration speaking for many devices. One token cannot take the whole
            // node's ingest (tens of thousands a second); a larger fleet behind one token gets its own quota.
            ground: per_five_seconds(500),
            collection: per_five_seconds(500),
            account: per_five_seconds(500),
            resource: per_five_seconds(500),
            // Unlimited: limiting the master key could keep its owner from revoking a leaked token when it matters.
            api_key: None,
            // Unlimited: a console page is several requests (the page, its event stream, its chart), a session lives
            // an hour and belongs to a person who signed in (sign-in is throttled on its own).
            user_session: None,
        }
    }
}

impl RateLimits {
    /// No default limits at all (tokens given a quota of their own are still limited).
    pub const UNLIMITED: RateLimits = RateLimits {
        device: None,
        ground: None,
        collection: None,
        account: None,
        resource: None,
        api_key: None,
        user_session: None,
    };

    /// The default quota of `kind`.
    pub fn for_kind(&self, kind: TokenKind) -> Option<Quota> {
        match kind {
            TokenKind::Device => self.device,
            TokenKind::Ground => self.ground,
            TokenKind::Collection => self.collection,
            TokenKind::Account => self.account,
            TokenKind::Resource => self.resource,
            TokenKind::ApiKey => self.api_key,
            TokenKind::UserAccess | TokenKind::Refresh => self.user_session,
        }
    }
}

/// What counting one request did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Charge {
    /// The token has no quota: nothing was counted.
    Unlimited,
    /// Counted under `quota`; `standing.allowed` says whether the request is within it.
    Counted { quota: Quota, standing: Standing },
}

impl Charge {
    /// Whether the request goes ahead.
    pub fn allowed(&self) -> bool {
        match self {
            Charge::Unlimited => true,
            Charge::Counted { standing, .. } => standing.allowed,
        }
    }
}

/// A request refused for its token's quota: what a client is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the token's quota of {quota} is used up; try again in {retry_after_seconds} s")]
pub struct OverQuota {
    pub quota: Quota,
    /// Until the window closes, rounded up.
    pub retry_after_seconds: u64,
}

/// Shards of the counter map: requests of different tokens rarely wait for one another's lock.
const SHARDS: usize = 64;

/// The counters of this node, one per token with a limited quota that made a request within its window.
#[derive(Debug)]
pub struct Quotas {
    limits: RateLimits,
    shards: Box<[Mutex<HashMap<TokenId, Window>>]>,
    /// The clock windows are counted on: monotonic, so a change of the wall clock neither opens nor stretches one.
    epoch: Instant,
}

impl Quotas {
    pub fn new(limits: RateLimits) -> Quotas {
        Quotas { limits, shards: (0..SHARDS).map(|_| Mutex::default()).collect(), epoch: Instant::now() }
    }

    /// The quota `token` is held to now: its own setting, else its kind's default.
    pub fn effective(&self, token: &TokenRecord) -> Option<Quota> {
        token.quota.effective(self.limits.for_kind(token.kind))
    }

    /// Counts one request of `token` (a verified, live token: nothing else may add an entry).
    pub fn take(&self, token: &TokenRecord) -> Charge {
        let Some(quota) = self.effective(token) else { return Charge::Unlimited };
        let now = self.now_ms();
        let mut windows = self.shard(token.id);
        let standing = windows.entry(token.id).or_insert(Window::UNUSED).take(quota, now);
        Charge::Counted { quota, standing }
    }

    /// Forgets the counters whose window has closed: a token that comes back starts a new window anyway.
    pub fn sweep(&self) {
        let now = self.now_ms();
        for shard in &self.shards {
            shard.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).retain(|_, window| !window.closed(now));
        }
    }

    /// How many tokens have a counter now.
    pub fn counted(&self) -> usize {
        self.shards.iter().map(|shard| shard.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).len()).sum()
    }

    fn shard(&self, token: TokenId) -> std::sync::MutexGuard<'_, HashMap<TokenId, Window>> {
        // The low bits of an id are random (see `tessera_core::id`), so they spread tokens evenly.
        let index = (token.as_i64() as u64 as usize) % SHARDS;
        self.shards[index].lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn now_ms(&self) -> i64 {
        i64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(i64::MAX)
    }
}

tokio::task_local! {
    /// The charge of the credential verified while serving the current HTTP request, for the layer that writes the
    /// `RateLimit` header fields on its answer (`http::rate_limit`). Set by `TokenService::verify`, which every
    /// dialect's credential extractor calls, so no dialect has to remember to pass it on. Outside an HTTP request
    /// (MQTT, tests calling the service) there is no scope and nothing is noted.
    pub(crate) static REQUEST_CHARGE: Cell<Option<Charge>>;
}

/// Notes `charge` for the answer to the current HTTP request, if there is one.
pub(crate) fn note_for_request(charge: Charge) {
    let _ = REQUEST_CHARGE.try_with(|noted| noted.set(Some(charge)));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(kind: TokenKind, quota: tessera_core::QuotaSetting) -> TokenRecord {
        let (id, account) = (TokenId(crate::entropy::new_id()), tessera_core::AccountId(crate::entropy::new_id()));
        let digest = tessera_core::SecretDigest([0; 32]);
        let new = TokenRecord::new(
            id,
            account,
            kind,
            digest,
            tessera_core::Scope::Account,
            tessera_store::Creator::System,
            0,
        );
        TokenRecord { quota, ..new }
    }

    #[test]
    fn kinds_get_their_defaults_and_a_tokens_own_setting_wins() {
        let quotas = Quotas::new(RateLimits::default());
        let five_a_minute = Quota { requests: 5, window_seconds: 60 };
        use tessera_core::QuotaSetting::*;
        assert_eq!(
            quotas.effective(&token(TokenKind::Device, KindDefault)),
            Some(Quota { requests: 20, window_seconds: 5 })
        );
        assert_eq!(quotas.effective(&token(TokenKind::ApiKey, KindDefault)), None);
        assert_eq!(quotas.effective(&token(TokenKind::UserAccess, KindDefault)), None);
        assert_eq!(quotas.effective(&token(TokenKind::Device, Unlimited)), None);
        assert_eq!(quotas.effective(&token(TokenKind::ApiKey, Limited(five_a_minute))), Some(five_a_minute));
    }

    #[test]
    fn one_counter_per_token_and_closed_windows_are_swept() {
        let quotas = Quotas::new(RateLimits::default());
        let limited =
            token(TokenKind::Device, tessera_core::QuotaSetting::Limited(Quota { requests: 2, window_seconds: 1 }));
        let unlimited = token(TokenKind::ApiKey, tessera_core::QuotaSetting::KindDefault);
        assert!(quotas.take(&limited).allowed());
        assert!(quotas.take(&limited).allowed());
        let refused = quotas.take(&limited);
        assert!(!refused.allowed(), "{refused:?}");
        assert_eq!(quotas.take(&unlimited), Charge::Unlimited);
        assert_eq!(quotas.counted(), 1, "an unlimited token gets no counter");
        quotas.sweep();
        assert_eq!(quotas.counted(), 1, "its window is still open");
    }
}
