//! Request quotas of tokens: how many requests a token may make in a window of time. Pure: the counting is
//! done by the server, with the clock it passes in.

/// At most `requests` requests in every window of `window_seconds` seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Quota {
    pub requests: u32,
    pub window_seconds: u32,
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
