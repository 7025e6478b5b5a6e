//! Property tests of the core's parsers of outside input (labels, ids, token secrets, resource paths, asset
//! profiles): arbitrary text never panics them, and what they accept reads back as itself. The coverage-guided
//! counterparts are the targets in `fuzz/` at the repository root.

use proptest::prelude::*;
use serde_json::{Value as Json, json};
use tessera_core::profile::Profile;
use tessera_core::{CollectionId, DeviceId, Id, Label, Resource, SECRET_RANDOM_BYTES, Secret, TeamId, TokenKind};

#[path = "support/json_strategy.rs"]
mod json_strategy;

/// The field names and words this suite's parsers look for.
const WORDS: &[&str] = &["type", "minimum", "maximum", "value", "number", "integer", "boolean", "string", "object"];

fn json_document() -> impl Strategy<Value = Json> {
    json_strategy::json_document(WORDS)
}

fn token_kind() -> impl Strategy<Value = TokenKind> {
    prop::sample::select(TokenKind::ALL.to_vec())
}

/// Text shaped like a resource path: segments that matter to the parser (names, ids, dots, escapes) and noise.
fn path_like() -> impl Strategy<Value = String> {
    let segment = prop_oneof![
        Just(String::new()),
        Just(".".to_owned()),
        Just("..".to_owned()),
        Just("%2e".to_owned()),
        Just("%2E%2e".to_owned()),
        Just("%2F".to_owned()),
        Just("teams".to_owned()),
        Just("collections".to_owned()),
        Just("%63ollections".to_owned()),
        Just("devices".to_owned()),
        any::<i64>().prop_map(|value| Id::from_i64(value & i64::MAX).to_string()),
        "[a-z0-9%.]{0,4}",
    ];
    prop::collection::vec(segment, 0..7).prop_map(|segments| format!("/{}", segments.join("/")))
}

fn resource() -> impl Strategy<Value = Resource> {
    let id = || (0..=i64::MAX).prop_map(Id::from_i64);
    prop_oneof![
        Just(Resource::Root),
        Just(Resource::Teams),
        id().prop_map(|id| Resource::Team(TeamId(id))),
        Just(Resource::Collections),
        id().prop_map(|id| Resource::Collection(CollectionId(id))),
        (id(), id()).prop_map(|(collection, device)| Resource::Device(CollectionId(collection), DeviceId(device))),
    ]
}

proptest! {
    #[test]
    fn labels_never_panic_and_accepted_ones_read_back(text in prop_oneof!["\\PC{0,70}", "[A-Za-z0-9_-]{0,70}"]) {
        match Label::parse(&text) {
            Ok(label) => {
                prop_assert_eq!(label.as_str(), text.to_ascii_lowercase());
                prop_assert_eq!(Label::parse(label.as_str()), Ok(label.clone()));
                prop_assert_eq!(Label::parse(&label.to_string()), Ok(label));
            }
            Err(_) => prop_assert!(
                text.is_empty()
                    || text.chars().count() > 64
                    || text.chars().any(|c| !(c.is_ascii_alphanumeric() || c == '-' || c == '_'))
            ),
        }
        if let Ok(label) = Label::from_name(&text) {
            prop_assert_eq!(Label::parse(label.as_str()), Ok(label));
        }
    }

    #[test]
    fn ids_round_trip_through_their_text(value in 0..=i64::MAX) {
        let id = Id::from_i64(value);
        let text = id.to_string();
        prop_assert_eq!(text.len(), 13);
        prop_assert_eq!(text.parse::<Id>(), Ok(id));
        prop_assert_eq!(text.parse::<DeviceId>(), Ok(DeviceId(id)));
    }

    #[test]
    fn only_canonical_id_text_is_accepted(
        text in prop_oneof!["\\PC{0,16}", "[0-9a-zA-Z]{13}", "[0-9a-hjkmnp-tv-z]{13}"]
    ) {
        if let Ok(id) = text.parse::<Id>() {
            prop_assert_eq!(id.to_string(), text);
        }
    }

    #[test]
    fn generated_secrets_parse_back(kind in token_kind(), random in any::<[u8; SECRET_RANDOM_BYTES]>()) {
        let secret = Secret::generate(kind, &random);
        prop_assert_eq!(Secret::parse(secret.expose()), Ok(secret.clone()));
        prop_assert_eq!(Secret::parse(secret.expose()).map(|parsed| parsed.kind()), Ok(kind));
    }

    #[test]
    fn secrets_never_panic_and_accept_only_what_was_presented(
        text in prop_oneof!["\\PC{0,60}", "ts[a-z]_[0-9a-z]{47}", "ts[a-z]_[0-9a-zé]{45,47}"]
    ) {
        if let Ok(secret) = Secret::parse(&text) {
            prop_assert_eq!(secret.expose(), text.as_str());
        }
    }

    #[test]
    fn resource_paths_normalised_twice_equal_once(text in prop_oneof![path_like(), "\\PC{0,40}"]) {
        if let Ok(resource) = Resource::parse(&text) {
            let normal = resource.to_string();
            prop_assert_eq!(Resource::parse(&normal), Ok(resource));
            prop_assert_eq!(Resource::parse(&normal).map(|again| again.to_string()), Ok(normal));
        }
    }

    #[test]
    fn malformed_escapes_in_resource_paths_are_refused_as_such(
        escape in "%[g-zG-Z+ .~-][0-9a-fA-F]|%[0-9a-fA-F][g-zG-Z+ .~-]|%[0-9a-fA-F]?",
    ) {
        let error = Resource::parse(&format!("/teams/{escape}")).unwrap_err();
        prop_assert!(error.reason.contains("two hex digits"), "{}", error);
    }

    #[test]
    fn resources_print_and_parse_back(resource in resource()) {
        prop_assert_eq!(Resource::parse(&resource.to_string()), Ok(resource));
    }

    #[test]
    fn profiles_never_panic(profile in json_document(), value in json_document()) {
        if let Ok(parsed) = Profile::parse(&profile) {
            let _ = parsed.check(&value);
            let _ = parsed.check(&profile);
        }
    }

    #[test]
    fn number_profiles_accept_exactly_their_range(
        bounds in (-1.0e9..1.0e9f64, -1.0e9..1.0e9f64),
        value in -2.0e9..2.0e9f64,
    ) {
        let (minimum, maximum) = if bounds.0 <= bounds.1 { bounds } else { (bounds.1, bounds.0) };
        let profile = Profile::parse(&json!({"type": "number", "minimum": minimum, "maximum": maximum})).unwrap();
        prop_assert_eq!(profile.check(&json!(value)).is_ok(), minimum <= value && value <= maximum);
    }
}
