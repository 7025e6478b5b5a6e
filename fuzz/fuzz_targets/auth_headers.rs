//! Credentials in headers: `Authorization: Bearer …` and Horde's `X-API-Token`, as arbitrary header bytes, and the
//! token found there parsed as the token service parses it.
#![no_main]

use axum::http::{HeaderMap, HeaderValue, header};
use tessera_core::Secret;
use tessera_server::http::{api_token_or_bearer, bearer_secret};

libfuzzer_sys::fuzz_target!(|bytes: &[u8]| {
    let Ok(value) = HeaderValue::from_bytes(bytes) else { return };
    let mut headers = HeaderMap::new();
    headers.insert(header::AUTHORIZATION, value.clone());
    if let Some(secret) = bearer_secret(&headers) {
        let _ = Secret::parse(secret);
    }
    let _ = api_token_or_bearer(&headers);
    headers.insert("x-api-token", value);
    if let Some(secret) = api_token_or_bearer(&headers) {
        let _ = Secret::parse(secret);
    }
});
