//! Arbitrary JSON for the property tests of the core and the server (the server's suite includes this file with
//! `#[path]`): a few levels deep, with the field names and words a parser looks for among random ones.

use proptest::prelude::*;
use serde_json::Value as Json;

/// JSON documents whose keys and strings are drawn from `words` as often as from random text.
pub fn json_document(words: &'static [&'static str]) -> impl Strategy<Value = Json> {
    let word = prop_oneof![prop::sample::select(words).prop_map(str::to_owned), "[a-zA-Z_-]{1,8}", "\\PC{0,6}",];
    let leaf = prop_oneof![
        Just(Json::Null),
        any::<bool>().prop_map(Json::from),
        any::<i64>().prop_map(Json::from),
        any::<u64>().prop_map(Json::from),
        any::<f64>().prop_map(Json::from),
        word.clone().prop_map(Json::from),
    ];
    leaf.prop_recursive(3, 32, 4, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Json::Array),
            prop::collection::vec((word.clone(), inner), 0..4)
                .prop_map(|fields| Json::Object(fields.into_iter().collect())),
        ]
    })
}
