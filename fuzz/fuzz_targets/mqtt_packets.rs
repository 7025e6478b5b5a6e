//! The bytes a client sends on an MQTT connection, decoded as a connection decodes them: the protocol version from
//! the CONNECT, then packets with the session's codec (`tessera_server::mqtt::session_codec`), MQTT 5 ones
//! translated to 3.1.1 (`mqtt::v5`), and each PUBLISH's topic read as the session reads it.
#![no_main]

use bytes::BytesMut;
use rmqtt_codec::version::{ProtocolVersion, VersionCodec};
use rmqtt_codec::{MqttCodec, MqttPacket, v3, v5};
use tessera_server::mqtt::{self, topics};
use tokio_util::codec::Decoder;

libfuzzer_sys::fuzz_target!(|bytes: &[u8]| {
    let mut buffer = BytesMut::from(bytes);
    let mut codec = MqttCodec::Version(VersionCodec);
    let version = match codec.decode(&mut buffer) {
        Ok(Some((MqttPacket::Version(version), _))) => version,
        _ => return,
    };
    let mut codec = mqtt::session_codec(version);
    let mut unsubscribed = 0;
    while let Ok(Some((packet, _))) = codec.decode(&mut buffer) {
        let packet = match (packet, version) {
            (MqttPacket::V3(packet), ProtocolVersion::MQTT3) => packet,
            (MqttPacket::V5(v5::Packet::Connect(connect)), ProtocolVersion::MQTT5) => {
                v3::Packet::Connect(mqtt::v5::connect(*connect))
            }
            (MqttPacket::V5(packet), ProtocolVersion::MQTT5) => match mqtt::v5::incoming(packet, &mut unsubscribed) {
                Ok(packet) => packet,
                Err(_) => continue,
            },
            // The session codecs decode only their own version's packets; a connection refuses anything else.
            _ => return,
        };
        if let v3::Packet::Publish(publish) = &packet {
            let _ = topics::inbound(&publish.topic);
            let _ = serde_json::from_slice::<serde_json::Value>(&publish.payload);
        }
    }
});
