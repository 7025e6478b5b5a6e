//! Property tests of the server's parsers of outside input: timestamps, Ubidots and Horde bodies, AllThingsTalk
//! states, MQTT topics and packets, query strings and credential headers. Arbitrary input never panics them, and
//! where a format has a writer, what it writes reads back as itself. The coverage-guided counterparts are the
//! targets in `fuzz/` at the repository root.

use std::collections::BTreeMap;

use axum::http::{HeaderMap, HeaderValue, header};
use base64::Engine;
use bytes::BytesMut;
use proptest::prelude::*;
use rmqtt_codec::types::Publish;
use rmqtt_codec::version::{ProtocolVersion, VersionCodec};
use rmqtt_codec::{MqttCodec, MqttPacket, v3, v5};
use serde_json::{Map, Value as Json, json};
use tessera_core::Value;
use tessera_server::http::ubidots::payload;
use tessera_server::http::{self, allthingstalk, horde};
use tessera_server::mqtt::{self, topics};
use tessera_server::time;
use tokio_util::codec::{Decoder, Encoder};

const NOW_MS: i64 = 1_700_000_000_000;
/// 9999-12-31T23:59:59.999Z, the last instant a four-digit year can write.
const LAST_FOUR_DIGIT_MS: i64 = 253_402_300_799_999;

#[path = "../../core/tests/support/json_strategy.rs"]
mod json_strategy;

/// The field names and words this suite's parsers look for.
const WORDS: &[&str] = &["value", "timestamp", "context", "at", "tags", "port", "payload"];

fn json_document() -> impl Strategy<Value = Json> {
    json_strategy::json_document(WORDS)
}

/// Decodes bytes as a connection does: the version from the CONNECT, then packets with the session's codec, MQTT 5
/// ones translated to 3.1.1. Answers the packets decoded before the first error or incomplete packet.
fn decode_connection(bytes: &[u8]) -> Vec<v3::Packet> {
    let mut buffer = BytesMut::from(bytes);
    let version = match MqttCodec::Version(VersionCodec).decode(&mut buffer) {
        Ok(Some((MqttPacket::Version(version), _))) => version,
        _ => return Vec::new(),
    };
    let mut codec = mqtt::session_codec(version);
    let mut unsubscribed = 0;
    let mut packets = Vec::new();
    while let Ok(Some((packet, _))) = codec.decode(&mut buffer) {
        let packet = match packet {
            MqttPacket::V3(packet) => packet,
            MqttPacket::V5(v5::Packet::Connect(connect)) => v3::Packet::Connect(mqtt::v5::connect(*connect)),
            MqttPacket::V5(packet) => match mqtt::v5::incoming(packet, &mut unsubscribed) {
                Ok(packet) => packet,
                Err(_) => continue,
            },
            MqttPacket::Version(_) => break,
        };
        packets.push(packet);
    }
    packets
}

/// An MQTT 3.1.1 CONNECT without credentials, for the client id given.
fn connect_packet(client_id: &str) -> Vec<u8> {
    let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 60];
    body.extend((client_id.len() as u16).to_be_bytes());
    body.extend(client_id.as_bytes());
    let mut packet = vec![0x10, body.len() as u8];
    packet.extend(body);
    packet
}

/// A topic of one to five levels, without wildcards (levels may be empty; the topic may not, MQTT 3.1.1 §4.7.3).
fn topic() -> impl Strategy<Value = String> {
    prop::collection::vec("[a-z0-9$ .é-]{0,4}", 1..5)
        .prop_map(|levels| levels.join("/"))
        .prop_filter("a topic has at least one character", |topic| !topic.is_empty())
}

proptest! {
    // Timestamps: the core's parser (chrono underneath), re-exported by the server.

    #[test]
    fn rfc3339_parses_back(ms in 0..=LAST_FOUR_DIGIT_MS) {
        prop_assert_eq!(time::parse_iso8601(&time::rfc3339(ms)), Ok(ms));
    }

    #[test]
    fn offsets_are_subtracted(ms in 86_400_000..=LAST_FOUR_DIGIT_MS - 86_400_000, offset_minutes in -720..=840i64) {
        let local = time::rfc3339(ms + offset_minutes * 60_000);
        let sign = if offset_minutes < 0 { '-' } else { '+' };
        let (hours, minutes) = (offset_minutes.abs() / 60, offset_minutes.abs() % 60);
        let text = format!("{}{sign}{hours:02}:{minutes:02}", local.trim_end_matches('Z'));
        prop_assert_eq!(time::parse_iso8601(&text), Ok(ms), "{}", text);
    }

    #[test]
    fn arbitrary_text_is_not_a_timestamp_or_is_one(text in any::<String>()) {
        let _ = time::parse_iso8601(&text);
    }

    /// Text shaped like a date (the shape that made the old parser panic or overflow): an answer, never a panic,
    /// and any instant it accepts lies in the kept range.
    #[test]
    fn date_shaped_text_is_refused_or_kept_in_range(text in "[0-9]{1,12}-[0-9]{1,3}-[0-9]{1,3}[Tt ][0-9:.é+-]{0,24}[Zz]?") {
        if let Ok(ms) = time::parse_iso8601(&text) {
            prop_assert!((tessera_core::time::EARLIEST_MS..=tessera_core::time::LATEST_MS).contains(&ms), "{}", text);
        }
    }

    // Ubidots bodies.

    #[test]
    fn ubidots_bodies_never_panic(document in json_document()) {
        let _ = payload::parse_device_body(&document, NOW_MS);
        let _ = payload::parse_dots(&document, NOW_MS);
        let _ = payload::timestamp_ms(&document);
    }

    #[test]
    fn ubidots_numbers_are_read_as_sent(
        variables in prop::collection::btree_map("[a-z][a-z0-9_-]{0,10}", -1.0e12..1.0e12f64, 1..5),
        timestamp_ms in 0..=tessera_core::time::LATEST_MS,
    ) {
        let body: Map<String, Json> = variables
            .iter()
            .map(|(label, value)| (label.clone(), json!({"value": value, "timestamp": timestamp_ms})))
            .collect();
        let parsed = payload::parse_device_body(&Json::Object(body), NOW_MS).unwrap();
        prop_assert_eq!(parsed.len(), variables.len());
        for entry in parsed {
            let dots: Vec<(i64, Value)> = entry.dots.into_iter().map(|dot| (dot.timestamp_ms, dot.value)).collect();
            prop_assert_eq!(dots, vec![(timestamp_ms, Value::Number(variables[entry.label.as_str()]))]);
        }
    }

    #[test]
    fn ubidots_timestamps_are_integers_in_the_kept_range(ms in any::<i64>()) {
        let kept = (tessera_core::time::EARLIEST_MS..=tessera_core::time::LATEST_MS).contains(&ms);
        prop_assert_eq!(payload::timestamp_ms(&json!(ms)).ok(), kept.then_some(ms));
    }

    #[test]
    fn json_bodies_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
        if let Ok(document) = http::parse_json(&bytes) {
            let _ = payload::parse_device_body(&document, NOW_MS);
        }
    }

    // AllThingsTalk states and Horde bodies.

    #[test]
    fn allthingstalk_states_split_as_documented(document in json_document()) {
        let (value, at) = allthingstalk::assets::state_value(&document);
        match document.as_object().filter(|fields| fields.contains_key("value")) {
            Some(fields) => {
                prop_assert_eq!(&value, &fields["value"]);
                prop_assert_eq!(at, fields.get("at"));
            }
            None => {
                prop_assert_eq!(&value, &document);
                prop_assert_eq!(at, None);
            }
        }
    }

    #[test]
    fn horde_bodies_never_panic(document in json_document()) {
        let _ = horde::merge_tags(&mut BTreeMap::new(), &document);
        let _ = horde::downlink_body(&document);
    }

    #[test]
    fn horde_tags_merge_lower_cased_and_empty_removes(
        existing in prop::collection::btree_map("[a-z]{1,4}", "[a-z]{1,4}", 0..4),
        update in prop::collection::btree_map("[a-zA-Z ]{1,4}", "[a-z]{0,3}", 0..4),
    ) {
        let mut tags = existing.clone();
        let document = Json::Object(update.iter().map(|(name, value)| (name.clone(), json!(value))).collect());
        match horde::merge_tags(&mut tags, &document) {
            Ok(()) => {
                let mut expected = existing;
                for (name, value) in &update {
                    let name = name.trim().to_lowercase();
                    if value.is_empty() { expected.remove(&name); } else { expected.insert(name, value.clone()); }
                }
                prop_assert_eq!(tags, expected);
            }
            Err(_) => prop_assert!(update.keys().any(|name| name.trim().is_empty())),
        }
    }

    #[test]
    fn horde_downlinks_read_back(port in 0..=65_535u64, payload in prop::collection::vec(any::<u8>(), 0..32)) {
        let encoded = base64::engine::general_purpose::STANDARD.encode(&payload);
        prop_assert_eq!(
            horde::downlink_body(&json!({"port": port, "payload": encoded})).ok(),
            Some((port as u16, payload))
        );
        let too_high = json!({"port": port + 65_536});
        prop_assert!(horde::downlink_body(&too_high).is_err());
    }

    // MQTT topics.

    #[test]
    fn topics_never_panic(filter in "\\PC{0,24}", topic in "\\PC{0,24}") {
        let _ = topics::inbound(&topic);
        let _ = topics::valid_filter(&filter);
        let _ = topics::matches(&filter, &topic);
    }

    #[test]
    fn a_topic_is_a_filter_that_matches_itself(topic in topic()) {
        prop_assert!(topics::valid_filter(&topic));
        prop_assert!(topics::matches(&topic, &topic));
        prop_assert_eq!(topics::matches("#", &topic), !topic.starts_with('$'));
    }

    #[test]
    fn a_plus_stands_for_any_one_level(topic in topic(), index in any::<prop::sample::Index>()) {
        let mut levels: Vec<&str> = topic.split('/').collect();
        let replaced = index.index(levels.len());
        levels[replaced] = "+";
        let filter = levels.join("/");
        prop_assert!(topics::valid_filter(&filter));
        prop_assert_eq!(topics::matches(&filter, &topic), !(replaced == 0 && topic.starts_with('$')));
        let deeper = format!("{filter}/#");
        prop_assert!(topics::valid_filter(&deeper));
        prop_assert_eq!(topics::matches(&deeper, &format!("{topic}/x")), !(replaced == 0 && topic.starts_with('$')));
    }

    #[test]
    fn ubidots_device_topics_are_read(label in "[a-zA-Z0-9_.-]{1,20}", slash in any::<bool>()) {
        let topic = format!("{}v1.6/devices/{label}", if slash { "/" } else { "" });
        prop_assert_eq!(topics::inbound(&topic), Some(topics::Inbound::UbidotsDevice { label: &label }));
    }

    // MQTT packets.

    #[test]
    fn arbitrary_connection_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..128)) {
        decode_connection(&bytes);
    }

    #[test]
    fn bytes_after_a_connect_never_panic(
        client_id in "[a-z0-9]{0,8}",
        rest in prop::collection::vec(any::<u8>(), 0..128),
    ) {
        let mut bytes = connect_packet(&client_id);
        bytes.extend(rest);
        let packets = decode_connection(&bytes);
        prop_assert!(matches!(packets.first(), Some(v3::Packet::Connect(connect)) if connect.client_id == client_id));
    }

    #[test]
    fn publishes_decode_as_encoded(
        topic in "[a-z0-9/]{1,40}",
        payload in prop::collection::vec(any::<u8>(), 0..300),
        packet_id in 1..=u16::MAX,
        at_least_once in any::<bool>(),
    ) {
        let publish = Publish {
            dup: false,
            retain: false,
            qos: if at_least_once { v3::QoS::AtLeastOnce } else { v3::QoS::AtMostOnce },
            topic: topic.clone().into(),
            packet_id: at_least_once.then(|| std::num::NonZeroU16::new(packet_id).unwrap()),
            payload: payload.clone().into(),
            properties: None,
        };
        let mut bytes = BytesMut::from(&connect_packet("c")[..]);
        mqtt::session_codec(ProtocolVersion::MQTT3)
            .encode(MqttPacket::V3(v3::Packet::Publish(Box::new(publish))), &mut bytes)
            .unwrap();
        let packets = decode_connection(&bytes);
        let Some(v3::Packet::Publish(decoded)) = packets.get(1) else {
            return Err(TestCaseError::fail(format!("no publish in {packets:?}")));
        };
        prop_assert_eq!(&*decoded.topic, topic.as_str());
        prop_assert_eq!(&decoded.payload[..], &payload[..]);
    }

    // Query strings and headers.

    #[test]
    fn query_strings_never_panic(text in "\\PC{0,40}") {
        let _ = http::form_urlencoded_pairs(&text);
    }

    #[test]
    fn encoded_query_strings_decode_back(pairs in prop::collection::vec(("\\PC{0,8}", "\\PC{0,8}"), 0..5)) {
        let text: Vec<String> = pairs
            .iter()
            .map(|(name, value)| format!("{}={}", http::percent_encode(name), http::percent_encode(value)))
            .collect();
        prop_assert_eq!(http::form_urlencoded_pairs(&text.join("&")), pairs);
    }

    #[test]
    fn malformed_escapes_are_kept_as_they_are(
        before in "[a-z]{0,3}",
        escape in "%[g-zG-Z+ .~-][0-9a-zA-Z+-]|%[0-9a-fA-F][g-zG-Z+ .~-]",
    ) {
        let text = format!("{before}{escape}");
        let expected = text.replace('+', " ");
        prop_assert_eq!(http::form_urlencoded_pairs(&text), vec![(expected, String::new())]);
    }

    #[test]
    fn bearer_headers_give_their_token(scheme in "(?i)bearer", token in "[!-~]{1,60}", spaces in " {1,3}") {
        let mut headers = HeaderMap::new();
        let value = format!("{scheme} {token}{spaces}");
        headers.insert(header::AUTHORIZATION, HeaderValue::from_str(&value).unwrap());
        prop_assert_eq!(http::bearer_secret(&headers), Some(token.as_str()));
        prop_assert_eq!(http::api_token_or_bearer(&headers), Some(token.as_str()));
    }

    #[test]
    fn arbitrary_header_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
        if let Ok(value) = HeaderValue::from_bytes(&bytes) {
            let mut headers = HeaderMap::new();
            headers.insert(header::AUTHORIZATION, value.clone());
            let _ = http::bearer_secret(&headers);
            headers.insert("x-api-token", value);
            let _ = http::api_token_or_bearer(&headers);
        }
    }
}
