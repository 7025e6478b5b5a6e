//! The clock at the edge. The core never reads a clock; the server passes `now_ms()` in. Dates as text are
//! parsed and formatted by the core (`tessera_core::time`), re-exported here for the dialects.

use std::time::{SystemTime, UNIX_EPOCH};

pub use tessera_core::time::{http_date, parse_iso8601, rfc3339};

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|elapsed| elapsed.as_millis() as i64).unwrap_or(0)
}
