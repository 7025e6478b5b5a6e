//! Device and variable labels: parsing never panics, and a parsed label reads back as itself.
#![no_main]

use tessera_core::Label;

libfuzzer_sys::fuzz_target!(|text: &str| {
    if let Ok(label) = Label::parse(text) {
        assert_eq!(label.as_str(), text.to_ascii_lowercase());
        assert_eq!(Label::parse(label.as_str()).as_ref(), Ok(&label));
    }
    if let Ok(label) = Label::from_name(text) {
        assert_eq!(Label::parse(label.as_str()), Ok(label));
    }
});
