//! The `RateLimit-Policy` and `RateLimit` header fields on every answer to a token with a quota, in every dialect,
//! successes and refusals alike, and `Retry-After` on a refusal for the quota (429).
//!
//! The fields are those of draft-ietf-httpapi-ratelimit-headers-10 (September 2025), in its Structured Field form:
//! `RateLimit-Policy: "default";q=20;w=5` (the quota: `q` requests per window of `w` seconds) and
//! `RateLimit: "default";r=19;t=5` (`r` requests left in the window, which closes in `t` seconds, rounded up). The
//! policy is named "default" as the draft's examples name a server's one policy.
//!
//! How the charge gets here: this layer opens a task-local slot around the request (`quota::REQUEST_CHARGE`) and
//! `TokenService::verify`, which each dialect's credential extractor calls, notes the token's charge in it. No
//! dialect has to pass anything on, and a dialect added later gets the fields by verifying its credential the way
//! every other does.

use std::cell::Cell;

use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue, header};
use axum::middleware::Next;
use axum::response::Response;

use crate::quota::{Charge, REQUEST_CHARGE};

static RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
static RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");

/// Serves the request with a slot for its token's charge, and writes the fields from it on the answer.
pub(crate) async fn fields(request: Request, next: Next) -> Response {
    let (charge, mut response) = REQUEST_CHARGE
        .scope(Cell::new(None), async move {
            let response = next.run(request).await;
            (REQUEST_CHARGE.with(Cell::get), response)
        })
        .await;
    if let Some(Charge::Counted { quota, standing }) = charge {
        let reset = standing.resets_in_seconds();
        let headers = response.headers_mut();
        let policy = format!("\"default\";q={};w={}", quota.requests, quota.window_seconds);
        let limit = format!("\"default\";r={};t={reset}", standing.remaining);
        if let (Ok(policy), Ok(limit)) = (HeaderValue::try_from(policy), HeaderValue::try_from(limit)) {
            headers.insert(RATELIMIT_POLICY.clone(), policy);
            headers.insert(RATELIMIT.clone(), limit);
        }
        // The draft: a Retry-After beside the fields should not name an earlier time than their reset.
        if !standing.allowed && !headers.contains_key(header::RETRY_AFTER) {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(reset));
        }
    }
    response
}
