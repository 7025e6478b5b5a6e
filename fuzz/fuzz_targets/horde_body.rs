//! Horde bodies: tags merged into a tag set, and a downlink message's `{"port", "payload"}`.
#![no_main]

use std::collections::BTreeMap;

use tessera_server::http::horde;

libfuzzer_sys::fuzz_target!(|bytes: &[u8]| {
    let Ok(document) = tessera_server::http::parse_json(bytes) else { return };
    let mut tags = BTreeMap::new();
    let _ = horde::merge_tags(&mut tags, &document);
    if let Some(update) = document.get("tags") {
        let _ = horde::merge_tags(&mut tags, update);
    }
    let _ = horde::downlink_body(&document);
});
