//! AllThingsTalk state and command bodies (HTTP and MQTT): `{"value", "at"?}` or a bare value. The `at` text is the
//! timestamp target's.
#![no_main]

libfuzzer_sys::fuzz_target!(|bytes: &[u8]| {
    let Ok(document) = tessera_server::http::parse_json(bytes) else { return };
    let (value, at) = tessera_server::http::allthingstalk::assets::state_value(&document);
    if !matches!(&document, serde_json::Value::Object(fields) if fields.contains_key("value")) {
        assert_eq!(value, document);
        assert!(at.is_none());
    }
});
