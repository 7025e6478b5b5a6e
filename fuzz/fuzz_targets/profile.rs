//! AllThingsTalk asset profiles: any JSON document is parsed as a profile, and, when the document is a pair
//! `[profile, value]`, the value is checked against the profile. Neither may panic.
#![no_main]

use tessera_core::profile::Profile;

libfuzzer_sys::fuzz_target!(|bytes: &[u8]| {
    let Ok(document) = serde_json::from_slice::<serde_json::Value>(bytes) else { return };
    if let Ok(profile) = Profile::parse(&document) {
        let _ = profile.check(&document);
    }
    if let Some([profile, value]) = document.as_array().map(Vec::as_slice)
        && let Ok(profile) = Profile::parse(profile)
    {
        let _ = profile.check(value);
    }
});
