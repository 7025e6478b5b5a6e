//! Request quotas of tokens: how many requests a token may make in a window of time, and the arithmetic of one
//! token's count. Pure: the server keeps the counts and passes the time in (milliseconds on any clock that only
//! moves forward; a clock that moved back starts a new window).
//!
//! The count is a fixed window that opens at the first request after the last window closed: `requests` are
//! allowed in it, and every further one is refused until it closes. Two windows back to back can let through
//! `2 × requests` within a moment across their boundary; the rate over any longer span is bounded by `requests`
//! per `window_seconds`. Chosen over a sliding window or GCRA because what it counts is exactly what the
//! `RateLimit` header fields say (the units left in the window and the seconds until it closes), it is one
//! integer and one instant per token, and a client reads it without knowing the algorithm.

/// At most `requests` requests in every window of `window_seconds` seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Quota {
    pub requests: u32,
    pub window_seconds: u32,
}

impl Quota {
    /// The quota, unless it would make a token that never works (no requests) or a window of no time.
    pub fn new(requests: u32, window_seconds: u32) -> Option<Quota> {
        (requests > 0 && window_seconds > 0).then_some(Quota { requests, window_seconds })
    }

    /// The window's length in milliseconds (at least a second, whatever was stored).
    pub fn window_ms(self) -> i64 {
        i64::from(self.window_seconds.max(1)) * 1000
    }
}

impl std::fmt::Display for Quota {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} requests per {} s", self.requests, self.window_seconds)
    }
}

/// What a token's quota is, as stored with it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum QuotaSetting {
    /// The default of its kind, as the server is configured now.
    #[default]
    KindDefault,
    /// No limit.
    Unlimited,
    Limited(Quota),
}

impl QuotaSetting {
    /// The quota that applies, given the kind's default (`None`: unlimited).
    pub fn effective(self, kind_default: Option<Quota>) -> Option<Quota> {
        match self {
            QuotaSetting::KindDefault => kind_default,
            QuotaSetting::Unlimited => None,
            QuotaSetting::Limited(quota) => Some(quota),
        }
    }
}

/// One token's count in its current window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    started_at_ms: i64,
    used: u32,
    /// The window length it was last counted under, so that a window can be judged closed (and forgotten)
    /// without its quota.
    window_seconds: u32,
}

/// Where a token stands after a request was counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Standing {
    /// Whether the request is within the quota (it took a unit); `false`: refused, nothing taken.
    pub allowed: bool,
    /// Units left in the window after this request.
    pub remaining: u32,
    /// Milliseconds until the window closes and the full quota is available again (always above zero).
    pub resets_in_ms: i64,
}

impl Standing {
    /// The seconds until the window closes, rounded up (as `Retry-After` and the `RateLimit` field's `t` say
    /// them: a client that waits that long finds the window closed).
    pub fn resets_in_seconds(&self) -> u64 {
        u64::try_from(self.resets_in_ms).unwrap_or(0).div_ceil(1000).max(1)
    }
}

impl Window {
    /// A window no request was counted in: the first request opens one.
    pub const UNUSED: Window = Window { started_at_ms: i64::MIN, used: 0, window_seconds: 0 };

    /// Counts one request at `now_ms` under `quota`: opens a new window if the last one closed (or the clock
    /// moved back), then takes a unit if one is left. A refused request takes nothing, so a client that keeps
    /// trying does not push its window's end away. A quota changed in the middle of a window applies at once:
    /// its count to what was used already, its length from the window's start.
    pub fn take(&mut self, quota: Quota, now_ms: i64) -> Standing {
        let length = quota.window_ms();
        let closes_at = self.started_at_ms.saturating_add(length);
        if now_ms >= closes_at || now_ms < self.started_at_ms {
            *self = Window { started_at_ms: now_ms, used: 0, window_seconds: quota.window_seconds };
        }
        self.window_seconds = quota.window_seconds;
        let allowed = self.used < quota.requests;
        if allowed {
            self.used += 1;
        }
        Standing {
            allowed,
            remaining: quota.requests.saturating_sub(self.used),
            resets_in_ms: self.started_at_ms.saturating_add(length) - now_ms,
        }
    }

    /// Whether the window has closed at `now_ms`: the count is back to nothing, and the entry may be forgotten.
    pub fn closed(&self, now_ms: i64) -> bool {
        let length = i64::from(self.window_seconds.max(1)) * 1000;
        now_ms >= self.started_at_ms.saturating_add(length) || now_ms < self.started_at_ms
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIVE_PER_MINUTE: Quota = Quota { requests: 5, window_seconds: 60 };

    #[test]
    fn a_window_allows_its_quota_then_refuses_until_it_closes() {
        let mut window = Window::UNUSED;
        let mut remaining = Vec::new();
        for at in [1_000, 1_010, 20_000, 30_000, 59_000] {
            let standing = window.take(FIVE_PER_MINUTE, at);
            assert!(standing.allowed, "request at {at}");
            remaining.push(standing.remaining);
        }
        assert_eq!(remaining, [4, 3, 2, 1, 0]);
        // Opened at 1 000 by the first request: closes at 61 000.
        let refused = window.take(FIVE_PER_MINUTE, 60_999);
        assert_eq!(refused, Standing { allowed: false, remaining: 0, resets_in_ms: 1 });
        assert_eq!(refused.resets_in_seconds(), 1);
        assert!(!window.closed(60_999));
        assert!(window.closed(61_000));
        let reopened = window.take(FIVE_PER_MINUTE, 61_000);
        assert_eq!(reopened, Standing { allowed: true, remaining: 4, resets_in_ms: 60_000 });
        assert_eq!(reopened.resets_in_seconds(), 60);
    }

    #[test]
    fn refused_requests_take_nothing_and_do_not_move_the_window() {
        let quota = Quota { requests: 1, window_seconds: 1 };
        let mut window = Window::UNUSED;
        assert!(window.take(quota, 0).allowed);
        for at in (1..1_000).step_by(50) {
            let standing = window.take(quota, at);
            assert!(!standing.allowed);
            assert_eq!(standing.resets_in_ms, 1_000 - at);
        }
        assert!(window.take(quota, 1_000).allowed, "the window closed a second after it opened");
    }

    #[test]
    fn seconds_until_the_reset_are_rounded_up() {
        let standing = |resets_in_ms| Standing { allowed: false, remaining: 0, resets_in_ms };
        assert_eq!(standing(1).resets_in_seconds(), 1);
        assert_eq!(standing(999).resets_in_seconds(), 1);
        assert_eq!(standing(1_000).resets_in_seconds(), 1);
        assert_eq!(standing(1_001).resets_in_seconds(), 2);
        assert_eq!(standing(0).resets_in_seconds(), 1, "never 0: a client told 0 would retry at once");
    }

    #[test]
    fn a_clock_that_moved_back_opens_a_new_window() {
        let mut window = Window::UNUSED;
        for _ in 0..5 {
            window.take(FIVE_PER_MINUTE, 100_000);
        }
        assert!(!window.take(FIVE_PER_MINUTE, 100_001).allowed);
        assert!(window.closed(99_999));
        let standing = window.take(FIVE_PER_MINUTE, 99_999);
        assert_eq!(standing, Standing { allowed: true, remaining: 4, resets_in_ms: 60_000 });
    }

    #[test]
    fn a_changed_quota_applies_at_once() {
        let mut window = Window::UNUSED;
        let generous = Quota { requests: 100, window_seconds: 3_600 };
        for at in 0..10 {
            assert!(window.take(generous, at).allowed);
        }
        // Lowered below what was used: refused until the window closes, which is now a minute after it opened.
        let refused = window.take(FIVE_PER_MINUTE, 10);
        assert_eq!(refused, Standing { allowed: false, remaining: 0, resets_in_ms: 59_990 });
        assert!(window.closed(60_000), "judged by the length it was last counted under");
        // Raised: the units used so far still count.
        assert_eq!(window.take(generous, 20).remaining, 89);
    }

    #[test]
    fn an_unused_window_is_closed_and_the_first_request_opens_one() {
        assert!(Window::UNUSED.closed(0));
        let mut window = Window::UNUSED;
        let first = window.take(Quota { requests: 4, window_seconds: 1 }, i64::MIN);
        assert_eq!(first, Standing { allowed: true, remaining: 3, resets_in_ms: 1_000 });
    }

    #[test]
    fn quotas_that_would_never_work_are_not_made_and_settings_resolve() {
        assert_eq!(Quota::new(0, 60), None);
        assert_eq!(Quota::new(5, 0), None);
        assert_eq!(Quota::new(5, 60), Some(FIVE_PER_MINUTE));
        assert_eq!(FIVE_PER_MINUTE.to_string(), "5 requests per 60 s");
        let default = Some(Quota { requests: 20, window_seconds: 5 });
        assert_eq!(QuotaSetting::KindDefault.effective(default), default);
        assert_eq!(QuotaSetting::KindDefault.effective(None), None);
        assert_eq!(QuotaSetting::Unlimited.effective(default), None);
        assert_eq!(QuotaSetting::Limited(FIVE_PER_MINUTE).effective(default), Some(FIVE_PER_MINUTE));
    }
}
