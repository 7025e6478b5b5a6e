//! Ubidots bodies (HTTP and MQTT): bytes read as the routes read them, then parsed as a device body and as one
//! variable's dots.
#![no_main]

use tessera_server::http::ubidots::payload;

const NOW_MS: i64 = 1_700_000_000_000;

libfuzzer_sys::fuzz_target!(|bytes: &[u8]| {
    let Ok(document) = tessera_server::http::parse_json(bytes) else { return };
    let _ = payload::parse_device_body(&document, NOW_MS);
    let _ = payload::parse_dots(&document, NOW_MS);
    let _ = payload::timestamp_ms(&document);
});
