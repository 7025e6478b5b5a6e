//! Timestamps (`at` of an AllThingsTalk state): ISO 8601 text into Unix milliseconds. The body stays one call so
//! that it can be pointed at whichever function parses timestamps.
#![no_main]

libfuzzer_sys::fuzz_target!(|text: &str| {
    let _ = tessera_server::time::parse_iso8601(text);
});
