//! MQTT 5 at the edge: its packets translated to and from the 3.1.1 packets the session speaks. Properties are
//! not used (user properties, topic aliases and the like are dropped); reason codes map to their 3.1.1 meanings,
//! except the one answer 3.1.1 has no form for, a publish refused for the token's quota ([`quota_exceeded`]).

use rmqtt_codec::v3::{self, ConnectAckReason, Packet, QoS, SubscribeReturnCode};
use rmqtt_codec::v5;

/// A CONNECT's fields as the session reads them.
pub fn connect(connect: v5::Connect) -> Box<v3::Connect> {
    Box::new(v3::Connect {
        protocol: Default::default(),
        clean_session: connect.clean_start,
        keep_alive: connect.keep_alive,
        last_will: None,
        client_id: connect.client_id,
        username: connect.username,
        password: connect.password,
        cert: None,
    })
}

/// A packet from an MQTT 5 client as its 3.1.1 equivalent.
pub fn incoming(packet: v5::Packet, unsubscribed: &mut usize) -> Result<Packet, String> {
    Ok(match packet {
        v5::Packet::Publish(publish) => Packet::Publish(publish),
        v5::Packet::PublishAck(ack) => Packet::PublishAck { packet_id: ack.packet_id },
        v5::Packet::Subscribe(subscribe) => Packet::Subscribe {
            packet_id: subscribe.packet_id,
            topic_filters: subscribe.topic_filters.into_iter().map(|(filter, options)| (filter, options.qos)).collect(),
        },
        v5::Packet::Unsubscribe(unsubscribe) => {
            *unsubscribed = unsubscribe.topic_filters.len();
            Packet::Unsubscribe { packet_id: unsubscribe.packet_id, topic_filters: unsubscribe.topic_filters }
        }
        v5::Packet::PingRequest => Packet::PingRequest,
        v5::Packet::Disconnect(_) => Packet::Disconnect,
        other => return Err(format!("unexpected MQTT 5 packet {}", other.packet_type())),
    })
}

/// The PUBACK of a QoS 1 publish dropped because its token's quota is used up: reason code 0x97 (Quota exceeded).
pub fn quota_exceeded(packet_id: std::num::NonZeroU16) -> v5::Packet {
    v5::Packet::PublishAck(v5::PublishAck {
        packet_id,
        reason_code: v5::PublishAckReason::QuotaExceeded,
        properties: Default::default(),
        reason_string: None,
    })
}

/// A packet for an MQTT 5 client from its 3.1.1 form.
pub fn outgoing(packet: Packet, unsubscribed: usize) -> v5::Packet {
    match packet {
        Packet::ConnectAck(ack) => v5::Packet::ConnectAck(Box::new(v5::ConnectAck {
            session_present: ack.session_present,
            reason_code: match ack.return_code {
                ConnectAckReason::ConnectionAccepted => v5::ConnectAckReason::Success,
                ConnectAckReason::BadUserNameOrPassword => v5::ConnectAckReason::BadUserNameOrPassword,
                ConnectAckReason::UnacceptableProtocolVersion => v5::ConnectAckReason::UnsupportedProtocolVersion,
                _ => v5::ConnectAckReason::NotAuthorized,
            },
            max_qos: QoS::AtLeastOnce,
            // The last state of each asset is retained, and sent on SUBSCRIBE.
            retain_available: true,
            shared_subscription_available: false,
            subscription_identifiers_available: false,
            ..Default::default()
        })),
        Packet::Publish(publish) => v5::Packet::Publish(publish),
        Packet::PublishAck { packet_id } => v5::Packet::PublishAck(v5::PublishAck {
            packet_id,
            reason_code: v5::PublishAckReason::Success,
            properties: Default::default(),
            reason_string: None,
        }),
        Packet::SubscribeAck { packet_id, status } => v5::Packet::SubscribeAck(v5::SubscribeAck {
            packet_id,
            properties: Default::default(),
            reason_string: None,
            status: status
                .into_iter()
                .map(|code| match code {
                    SubscribeReturnCode::Success(QoS::AtMostOnce) => v5::SubscribeAckReason::GrantedQos0,
                    SubscribeReturnCode::Success(_) => v5::SubscribeAckReason::GrantedQos1,
                    SubscribeReturnCode::Failure => v5::SubscribeAckReason::NotAuthorized,
                })
                .collect(),
        }),
        Packet::UnsubscribeAck { packet_id } => v5::Packet::UnsubscribeAck(v5::UnsubscribeAck {
            packet_id,
            properties: Default::default(),
            reason_string: None,
            status: vec![v5::UnsubscribeAckReason::Success; unsubscribed],
        }),
        Packet::PingResponse => v5::Packet::PingResponse,
        // The session sends nothing else; a disconnect is the safe reading of anything unforeseen.
        _ => v5::Packet::Disconnect(v5::Disconnect {
            reason_code: v5::DisconnectReasonCode::ImplementationSpecificError,
            session_expiry_interval_secs: None,
            server_reference: None,
            reason_string: None,
            user_properties: Default::default(),
        }),
    }
}
