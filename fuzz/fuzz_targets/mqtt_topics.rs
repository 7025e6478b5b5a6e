//! MQTT topics and filters: the input is a filter and a topic separated by the first newline. Reading a topic,
//! checking a filter and matching never panic; a topic without wildcards, used as a filter, matches itself.
#![no_main]

use tessera_server::mqtt::topics;

libfuzzer_sys::fuzz_target!(|text: &str| {
    let (filter, topic) = text.split_once('\n').unwrap_or((text, text));
    let _ = topics::inbound(topic);
    let _ = topics::valid_filter(filter);
    let _ = topics::matches(filter, topic);
    if !topic.is_empty() && !topic.contains(['+', '#']) {
        assert!(topics::valid_filter(topic), "{topic:?}");
        assert!(topics::matches(topic, topic), "{topic:?}");
    }
});
