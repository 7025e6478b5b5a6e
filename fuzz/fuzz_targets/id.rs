//! Ids in paths and bodies: parsing never panics, only the canonical spelling is accepted, and the typed ids agree
//! with the untyped one.
#![no_main]

use tessera_core::{CollectionId, DeviceId, Id, TeamId, TokenId, UserId};

libfuzzer_sys::fuzz_target!(|text: &str| {
    let parsed = text.parse::<Id>();
    if let Ok(id) = parsed {
        assert_eq!(id.to_string(), text);
        assert!(id.as_i64() >= 0);
    }
    assert_eq!(text.parse::<DeviceId>().map(|id| id.0), parsed.clone());
    assert_eq!(text.parse::<CollectionId>().map(|id| id.0), parsed.clone());
    assert_eq!(text.parse::<TeamId>().map(|id| id.0), parsed.clone());
    assert_eq!(text.parse::<TokenId>().map(|id| id.0), parsed.clone());
    assert_eq!(text.parse::<UserId>().map(|id| id.0), parsed);
});
