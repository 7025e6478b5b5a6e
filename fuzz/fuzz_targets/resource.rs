//! Horde resource paths: parsing never panics, and a path's normal form parses to the same resource.
#![no_main]

use tessera_core::Resource;

libfuzzer_sys::fuzz_target!(|text: &str| {
    if let Ok(resource) = Resource::parse(text) {
        assert_eq!(Resource::parse(&resource.to_string()), Ok(resource), "{text:?}");
        let _ = resource.scope();
    }
});
