//! Token secrets as presented: parsing never panics, and an accepted secret is exactly the text presented.
#![no_main]

use tessera_core::Secret;

libfuzzer_sys::fuzz_target!(|text: &str| {
    if let Ok(secret) = Secret::parse(text) {
        assert_eq!(secret.expose(), text);
        assert!(text.starts_with(secret.kind().prefix()));
    }
});
