//! MQTT topics of the dialects, and topic-filter matching. Pure: every rule about topics is here and tested here.
//!
//! Published by clients:
//! - `/v1.6/devices/{device_label}` — a Ubidots device body;
//! - `device/{deviceId}/asset/{assetName}/state` — an AllThingsTalk state.
//!
//! Delivered to subscribers, for each new reading:
//! - `/v1.6/devices/{device_label}/{variable_label}/lv` — the bare value (Ubidots);
//! - `/v1.6/devices/{device_label}/{variable_label}` — the dot as JSON (Ubidots);
//! - `device/{deviceId}/asset/{assetName}/feed` — `{"value", "at"}` (AllThingsTalk);
//! - `{collectionId}/{deviceId}` — the Horde message (for Horde consumers subscribing to `{collectionId}/#`).

/// What a client's PUBLISH asks to store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inbound<'a> {
    UbidotsDevice { label: &'a str },
    AssetState { device: &'a str, asset: &'a str },
}

/// Reads the topic of a client's PUBLISH; `None` for topics no dialect defines.
pub fn inbound(topic: &str) -> Option<Inbound<'_>> {
    let levels: Vec<&str> = topic.split('/').collect();
    match levels.as_slice() {
        ["", "v1.6", "devices", label] | ["v1.6", "devices", label] if !label.is_empty() => {
            Some(Inbound::UbidotsDevice { label })
        }
        ["device", device, "asset", asset, "state"] if !device.is_empty() && !asset.is_empty() => {
            Some(Inbound::AssetState { device, asset })
        }
        _ => None,
    }
}

/// Whether a topic filter is well formed: `#` only as the last level, `+` and `#` only as whole levels.
pub fn valid_filter(filter: &str) -> bool {
    if filter.is_empty() {
        return false;
    }
    let levels: Vec<&str> = filter.split('/').collect();
    levels.iter().enumerate().all(|(index, level)| match *level {
        "#" => index == levels.len() - 1,
        "+" => true,
        other => !other.contains(['+', '#']),
    })
}

/// Whether `topic` matches `filter` (MQTT 3.1.1 §4.7; wildcards do not match topics starting with `$`).
pub fn matches(filter: &str, topic: &str) -> bool {
    if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false;
    }
    let mut topic_levels = topic.split('/');
    for level in filter.split('/') {
        match level {
            "#" => return true,
            "+" => {
                if topic_levels.next().is_none() {
                    return false;
                }
            }
            exact => {
                if topic_levels.next() != Some(exact) {
                    return false;
                }
            }
        }
    }
    topic_levels.next().is_none()
}

/// The topics a new reading is delivered on, with what each carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outbound {
    UbidotsLastValue,
    UbidotsDot,
    AssetFeed,
    HordeMessage,
}

pub fn outbound_topics(
    collection: &str,
    device_id: &str,
    device_label: &str,
    variable_label: &str,
) -> [(String, Outbound); 4] {
    [
        (format!("/v1.6/devices/{device_label}/{variable_label}/lv"), Outbound::UbidotsLastValue),
        (format!("/v1.6/devices/{device_label}/{variable_label}"), Outbound::UbidotsDot),
        (format!("device/{device_id}/asset/{variable_label}/feed"), Outbound::AssetFeed),
        (format!("{collection}/{device_id}"), Outbound::HordeMessage),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inbound_topics_of_the_dialects() {
        assert_eq!(inbound("/v1.6/devices/weather"), Some(Inbound::UbidotsDevice { label: "weather" }));
        assert_eq!(inbound("v1.6/devices/weather"), Some(Inbound::UbidotsDevice { label: "weather" }));
        assert_eq!(inbound("device/abc/asset/temp/state"), Some(Inbound::AssetState { device: "abc", asset: "temp" }));
        for other in ["", "/v1.6/devices/", "/v1.6/devices/a/b", "device/abc/asset/temp/feed", "device//asset/x/state"]
        {
            assert_eq!(inbound(other), None, "{other}");
        }
    }

    #[test]
    fn filters_match_as_mqtt_says() {
        assert!(matches("device/+/asset/temp/feed", "device/d1/asset/temp/feed"));
        assert!(!matches("device/+/asset/temp/feed", "device/d1/asset/hum/feed"));
        assert!(matches("c1/#", "c1/d1"));
        assert!(matches("#", "c1/d1"));
        assert!(!matches("c1/#", "c10/d1"), "levels, not prefixes");
        assert!(!matches("c1", "c1/d1"));
        assert!(matches("/v1.6/devices/+/+/lv", "/v1.6/devices/a/t/lv"));
        assert!(!matches("+/x", "$SYS/x"));
        assert!(valid_filter("a/+/#"));
        for bad in ["", "a/#/b", "a+", "a/b#"] {
            assert!(!valid_filter(bad), "{bad}");
        }
    }
}
