//! The MQTT server: CONNECT with each dialect's credentials, publishing through the one authorization path, and
//! subscriptions that deliver only what the grant reaches.

use std::time::Duration;

use bytes::Bytes;
use bytestring::ByteString;
use futures_util::{SinkExt, StreamExt};
use reqwest::{Method, StatusCode};
use rmqtt_codec::types::Publish;
use rmqtt_codec::v3::{self, ConnectAckReason, Packet, QoS, SubscribeReturnCode};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_util::codec::Framed;

use crate::helpers::TestServer;

/// A byte stream a client speaks over: TCP, or TLS over TCP (MQTTS).
pub(crate) trait Duplex: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}

impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Duplex for T {}

/// A small MQTT 3.1.1 client on the same codec the server uses.
pub(crate) struct Client {
    framed: Framed<Box<dyn Duplex>, v3::Codec>,
    next_id: u16,
}

impl Client {
    pub(crate) async fn connect(
        tessera: &TestServer,
        username: &str,
        password: &str,
    ) -> Result<Client, ConnectAckReason> {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let client_id = format!("test-{}", NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
        Client::connect_as(tessera, username, password, &client_id, true).await.map(|(client, _)| client)
    }

    /// Connects with a client id and session choice; answers the client and whether a session was resumed.
    async fn connect_as(
        tessera: &TestServer,
        username: &str,
        password: &str,
        client_id: &str,
        clean_session: bool,
    ) -> Result<(Client, bool), ConnectAckReason> {
        let address = tessera.server.as_ref().unwrap().mqtt_addr().expect("MQTT listens");
        let stream = TcpStream::connect(address).await.unwrap();
        Client::connect_over(Box::new(stream), username, password, client_id, clean_session).await
    }

    /// Connects over `stream` (opened by the caller: TCP, or TLS to MQTTS).
    pub(crate) async fn connect_over(
        stream: Box<dyn Duplex>,
        username: &str,
        password: &str,
        client_id: &str,
        clean_session: bool,
    ) -> Result<(Client, bool), ConnectAckReason> {
        let mut framed = Framed::new(stream, v3::Codec::new(1 << 20));
        let connect = v3::Connect {
            protocol: Default::default(),
            clean_session,
            keep_alive: 30,
            last_will: None,
            client_id: ByteString::from(client_id.to_owned()),
            username: Some(ByteString::from(username.to_owned())),
            password: Some(Bytes::from(password.to_owned())),
            cert: None,
        };
        framed.send(Packet::Connect(Box::new(connect))).await.unwrap();
        match framed.next().await {
            Some(Ok((Packet::ConnectAck(ack), _))) if ack.return_code == ConnectAckReason::ConnectionAccepted => {
                Ok((Client { framed, next_id: 1 }, ack.session_present))
            }
            Some(Ok((Packet::ConnectAck(ack), _))) => Err(ack.return_code),
            other => panic!("no CONNACK: {other:?}"),
        }
    }

    fn packet_id(&mut self) -> std::num::NonZeroU16 {
        self.next_id += 1;
        std::num::NonZeroU16::new(self.next_id).unwrap()
    }

    pub(crate) async fn subscribe(&mut self, filter: &str) -> SubscribeReturnCode {
        self.subscribe_at(filter, QoS::AtMostOnce).await
    }

    async fn subscribe_at(&mut self, filter: &str, qos: QoS) -> SubscribeReturnCode {
        let packet_id = self.packet_id();
        let topic_filters = vec![(ByteString::from(filter.to_owned()), qos)];
        self.framed.send(Packet::Subscribe { packet_id, topic_filters }).await.unwrap();
        match self.next().await {
            Some(Packet::SubscribeAck { status, .. }) => status[0],
            other => panic!("no SUBACK: {other:?}"),
        }
    }

    /// Publishes at QoS 1 and waits for the PUBACK; `false` if the server closed the connection instead.
    pub(crate) async fn publish(&mut self, topic: &str, payload: Value) -> bool {
        let packet_id = self.packet_id();
        let publish = Publish {
            dup: false,
            retain: false,
            qos: QoS::AtLeastOnce,
            topic: ByteString::from(topic.to_owned()),
            packet_id: Some(packet_id),
            payload: Bytes::from(payload.to_string()),
            properties: None,
        };
        self.framed.send(Packet::Publish(Box::new(publish))).await.unwrap();
        loop {
            match self.next().await {
                Some(Packet::PublishAck { .. }) => return true,
                // Messages to this client (retained states, feeds) may come first.
                Some(Packet::Publish(_)) => continue,
                _ => return false,
            }
        }
    }

    /// Publishes at QoS 0: nothing comes back.
    async fn publish_at_most_once(&mut self, topic: &str, payload: Value) {
        let publish = Publish {
            dup: false,
            retain: false,
            qos: QoS::AtMostOnce,
            topic: ByteString::from(topic.to_owned()),
            packet_id: None,
            payload: Bytes::from(payload.to_string()),
            properties: None,
        };
        self.framed.send(Packet::Publish(Box::new(publish))).await.unwrap();
    }

    async fn next(&mut self) -> Option<Packet> {
        match tokio::time::timeout(Duration::from_secs(10), self.framed.next()).await {
            Ok(Some(Ok((packet, _)))) => Some(packet),
            Ok(_) => None,
            Err(_) => panic!("nothing from the server in 10 s"),
        }
    }

    /// The next PUBLISH, as (topic, payload).
    pub(crate) async fn message(&mut self) -> (String, Value) {
        loop {
            match self.next().await {
                Some(Packet::Publish(publish)) => {
                    return (publish.topic.to_string(), serde_json::from_slice(&publish.payload).unwrap());
                }
                Some(_) => continue,
                None => panic!("the connection closed"),
            }
        }
    }
}

#[tokio::test]
async fn ubidots_devices_publish_and_subscribers_get_last_values() {
    let tessera = TestServer::start().await;
    let org = tessera.organization("Mqtt").await;
    let token = tessera.organization_token(&org, "mqtt").await["token"].as_str().unwrap().to_owned();
    let mut subscriber = Client::connect(&tessera, &token, "").await.unwrap();
    assert_eq!(
        subscriber.subscribe("/v1.6/devices/+/temperature/lv").await,
        SubscribeReturnCode::Success(QoS::AtMostOnce)
    );
    let mut device = Client::connect(&tessera, &token, "ignored").await.unwrap();
    assert!(device.publish("/v1.6/devices/mqtt-dev", json!({"temperature": 21.5, "humidity": 40})).await);

    let (topic, value) = subscriber.message().await;
    assert_eq!(topic, "/v1.6/devices/mqtt-dev/temperature/lv");
    assert_eq!(value, json!(21.5));
    let (status, last) = tessera.ubidots(Method::GET, "/devices/mqtt-dev/humidity/lv", &token, None).await;
    assert_eq!((status, last), (StatusCode::OK, json!(40.0)), "an MQTT reading is an HTTP reading");

    // A new subscriber to one device gets the last state at once, flagged retained.
    let mut late = Client::connect(&tessera, &token, "").await.unwrap();
    late.subscribe("/v1.6/devices/mqtt-dev/humidity/lv").await;
    match late.next().await {
        Some(Packet::Publish(publish)) => {
            assert!(publish.retain);
            assert_eq!(&*publish.topic, "/v1.6/devices/mqtt-dev/humidity/lv");
            assert_eq!(&publish.payload[..], b"40.0");
        }
        other => panic!("no retained state: {other:?}"),
    }

    // A label claimed by another organization cannot be written over MQTT either: the connection ends.
    let account_token = tessera.account_token().await;
    tessera.ubidots(Method::POST, "/devices/claimed", &account_token, Some(json!({"t": 1}))).await;
    assert!(!device.publish("/v1.6/devices/claimed", json!({"t": 2})).await);
    let (_, values) = tessera.ubidots(Method::GET, "/devices/claimed/t/values", &account_token, None).await;
    assert_eq!(values["count"], 1);
}

#[tokio::test]
async fn credentials_are_checked_at_connect() {
    let tessera = TestServer::start().await;
    assert_eq!(
        Client::connect(&tessera, "nobody", "nothing").await.err(),
        Some(ConnectAckReason::BadUserNameOrPassword)
    );
    let token = tessera.account_token().await;
    let mut flipped = token.clone().into_bytes();
    let last = flipped.len() - 1;
    flipped[last] = if flipped[last] == b'a' { b'b' } else { b'a' };
    let flipped = String::from_utf8(flipped).unwrap();
    assert_eq!(Client::connect(&tessera, &flipped, "").await.err(), Some(ConnectAckReason::BadUserNameOrPassword));
    assert!(Client::connect(&tessera, &format!("maker:{token}"), "x").await.is_ok(), "AllThingsTalk's maker: form");
    assert!(Client::connect(&tessera, "some-collection-id", &token).await.is_ok(), "Horde's password form");
}

#[tokio::test]
async fn a_ground_token_subscribed_with_wildcards_gets_its_ground_and_no_other() {
    let tessera = TestServer::start().await;
    let ground = tessera.organization("Ground").await;
    let provisioner = tessera.organization_token(&ground, "p").await["token"].as_str().unwrap().to_owned();
    let account_token = tessera.account_token().await;
    tessera.ubidots(Method::POST, "/devices/inside", &provisioner, Some(json!({"temp": 1}))).await;
    tessera.ubidots(Method::POST, "/devices/outside", &account_token, Some(json!({"temp": 1}))).await;
    let (_, minted) = tessera
        .native(Method::POST, &format!("/collections/{ground}/ground-tokens"), &tessera.api_key, Some(json!({})))
        .await;
    let ground_token = minted["secret"].as_str().unwrap().to_owned();

    let mut subscriber = Client::connect(&tessera, &ground_token, &ground_token).await.unwrap();
    assert_eq!(subscriber.subscribe("device/+/asset/temp/feed").await, SubscribeReturnCode::Success(QoS::AtMostOnce));
    tessera
        .ubidots(Method::POST, "/devices/outside", &account_token, Some(json!({"temp": {"value": 99, "timestamp": 5}})))
        .await;
    tessera
        .ubidots(Method::POST, "/devices/inside", &provisioner, Some(json!({"temp": {"value": 7, "timestamp": 6}})))
        .await;
    // First the ground's current state, retained (the other ground's device is not there), then the new one.
    let (topic, retained) = subscriber.message().await;
    assert!(topic.starts_with("device/") && topic.ends_with("/asset/temp/feed"), "{topic}");
    assert_eq!(retained["value"], 1.0, "the inside device's last state: {retained}");
    let (_, state) = subscriber.message().await;
    assert_eq!(state["value"], 7.0, "only the ground's device: {state}");

    // A device token may not subscribe to another device's topic, and a revoked token is cut off.
    let (_, sources) = tessera.ubidots(Method::GET, "/datasources", &account_token, None).await;
    let id_of = |label: &str| {
        sources["results"].as_array().unwrap().iter().find(|d| d["label"] == label).unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let (inside, outside) = (id_of("inside"), id_of("outside"));
    let (_, device_token) =
        tessera.native(Method::POST, &format!("/devices/{inside}/tokens"), &tessera.api_key, Some(json!({}))).await;
    let device_secret = device_token["secret"].as_str().unwrap().to_owned();
    let mut device = Client::connect(&tessera, &device_secret, &device_secret).await.unwrap();
    assert_eq!(device.subscribe(&format!("device/{outside}/asset/+/feed")).await, SubscribeReturnCode::Failure);
    assert_eq!(
        device.subscribe(&format!("device/{inside}/asset/+/feed")).await,
        SubscribeReturnCode::Success(QoS::AtMostOnce)
    );
    assert!(device.publish(&format!("device/{inside}/asset/temp/state"), json!({"value": 8})).await);
    let (status, state) = tessera
        .call(
            Method::GET,
            &format!("/device/{inside}/asset/temp/state"),
            &[("authorization", &format!("Bearer {device_secret}"))],
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(state["state"]["value"], 8.0);

    let id = device_token["id"].as_str().unwrap();
    tessera.native(Method::DELETE, &format!("/devices/{inside}/tokens/{id}"), &tessera.api_key, None).await;
    let started = std::time::Instant::now();
    loop {
        match tokio::time::timeout(Duration::from_secs(5), device.framed.next()).await {
            Ok(None) | Ok(Some(Err(_))) => break,
            Ok(Some(Ok(_))) => continue,
            Err(_) => panic!("the connection of a revoked token stayed open"),
        }
    }
    assert!(started.elapsed() < Duration::from_millis(2500), "closed within about a second: {:?}", started.elapsed());
}

/// The Debian `mosquitto_pub` and `mosquitto_sub` clients, unchanged, against Tessera's MQTT server, in MQTT 3.1.1
/// and in MQTT 5.
#[tokio::test]
async fn mosquitto_clients_publish_and_subscribe() {
    let available = std::process::Command::new("mosquitto_pub").arg("--help").output().is_ok();
    if !available {
        assert!(std::env::var_os("CI").is_none(), "CI must install mosquitto-clients");
        eprintln!("skipped: mosquitto_pub/mosquitto_sub are not installed (apt-get install mosquitto-clients)");
        return;
    }
    let tessera = TestServer::start().await;
    let token = tessera.account_token().await;
    let port = tessera.server.as_ref().unwrap().mqtt_addr().unwrap().port().to_string();
    for version in ["mqttv311", "mqttv5"] {
        let device = format!("cli-{version}");
        let subscriber = tokio::process::Command::new("mosquitto_sub")
            .args(["-V", version, "-h", "127.0.0.1", "-p", &port, "-u", &token, "-C", "1", "-W", "10", "-v"])
            .args(["-t", &format!("/v1.6/devices/{device}/temperature/lv")])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // mosquitto_sub gives no sign once subscribed: publish until it has received one message.
        let publisher = async {
            for attempt in 0..50 {
                let status = tokio::process::Command::new("mosquitto_pub")
                    .args(["-V", version, "-h", "127.0.0.1", "-p", &port, "-u", &token, "-q", "1"])
                    .args(["-t", &format!("/v1.6/devices/{device}")])
                    .args(["-m", &json!({"temperature": {"value": 19.5, "timestamp": 1000 + attempt}}).to_string()])
                    .status()
                    .await
                    .unwrap();
                assert!(status.success(), "{version}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        };
        let output = tokio::select! {
            output = subscriber.wait_with_output() => output.unwrap(),
            _ = publisher => panic!("mosquitto_sub ({version}) received nothing"),
        };
        assert_eq!(
            String::from_utf8_lossy(&output.stdout).trim(),
            format!("/v1.6/devices/{device}/temperature/lv 19.5")
        );
        let refused = tokio::process::Command::new("mosquitto_pub")
            .args([
                "-V",
                version,
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-u",
                "not-a-token",
                "-t",
                "/v1.6/devices/x",
                "-m",
                "{}",
            ])
            .output()
            .await
            .unwrap();
        assert!(!refused.status.success(), "bad credentials are refused ({version})");
    }
}

#[tokio::test]
async fn subscriptions_are_bounded_and_the_api_key_does_not_connect() {
    let tessera = TestServer::start().await;
    assert_eq!(
        Client::connect(&tessera, &tessera.api_key, "").await.err(),
        Some(ConnectAckReason::NotAuthorized),
        "an API key carries no data"
    );
    let token = tessera.account_token().await;
    let mut client = Client::connect(&tessera, &token, "").await.unwrap();
    let packet_id = client.packet_id();
    let topic_filters: Vec<_> = (0..300).map(|n| (ByteString::from(format!("z{n}/#")), QoS::AtMostOnce)).collect();
    client.framed.send(Packet::Subscribe { packet_id, topic_filters }).await.unwrap();
    match client.next().await {
        Some(Packet::SubscribeAck { status, .. }) => {
            let granted = status.iter().filter(|code| matches!(code, SubscribeReturnCode::Success(_))).count();
            assert_eq!(granted, 256, "at most 256 filters per connection");
        }
        other => panic!("no SUBACK: {other:?}"),
    }
    // QoS 2 is refused rather than stored without its handshake.
    let publish = Publish {
        dup: false,
        retain: false,
        qos: QoS::ExactlyOnce,
        topic: ByteString::from("/v1.6/devices/q2"),
        packet_id: Some(client.packet_id()),
        payload: Bytes::from(json!({"t": 1}).to_string()),
        properties: None,
    };
    client.framed.send(Packet::Publish(Box::new(publish))).await.unwrap();
    assert!(client.next().await.is_none(), "the connection ends");
    let (status, _) = tessera.ubidots(Method::GET, "/devices/q2", &token, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "nothing was stored");
}

#[tokio::test]
async fn a_persistent_session_keeps_its_subscriptions_across_reconnects() {
    let tessera = TestServer::start().await;
    let token = tessera.account_token().await;
    let (mut first, resumed) = Client::connect_as(&tessera, &token, "", "keeper", false).await.unwrap();
    assert!(!resumed);
    first.subscribe("/v1.6/devices/+/t/lv").await;
    first.framed.send(Packet::Disconnect).await.unwrap();
    // The server keeps the session before it closes the connection: wait for the close.
    while first.framed.next().await.is_some() {}

    // Client ids belong to a credential: another token with the same id neither resumes nor takes over.
    let stranger = tessera.account_token().await;
    let (mut other, resumed) = Client::connect_as(&tessera, &stranger, "", "keeper", false).await.unwrap();
    assert!(!resumed, "another token's session is not this one's");
    let (mut again, resumed) = Client::connect_as(&tessera, &token, "", "keeper", false).await.unwrap();
    assert!(resumed, "the session was resumed");
    assert_eq!(other.subscribe("/v1.6/devices/+/u/lv").await, SubscribeReturnCode::Success(QoS::AtMostOnce));
    let mut device = Client::connect(&tessera, &token, "").await.unwrap();
    assert!(device.publish("/v1.6/devices/p", json!({"t": 5})).await);
    let (topic, value) = again.message().await;
    assert_eq!((topic.as_str(), value), ("/v1.6/devices/p/t/lv", json!(5.0)), "delivered without subscribing again");

    let (_, resumed) = Client::connect_as(&tessera, &token, "", "keeper", true).await.unwrap();
    assert!(!resumed, "a clean session starts afresh");
}

#[tokio::test]
async fn horde_consumers_follow_a_collection_and_every_dialect_sees_an_mqtt_reading() {
    let tessera = TestServer::start().await;
    let org = tessera.organization("Horde").await;
    let token = tessera.organization_token(&org, "consumer").await["token"].as_str().unwrap().to_owned();
    let mut consumer = Client::connect(&tessera, &org, &token).await.unwrap();
    assert_eq!(consumer.subscribe(&format!("{org}/#")).await, SubscribeReturnCode::Success(QoS::AtMostOnce));
    let other = tessera.organization("Other").await;
    assert_eq!(consumer.subscribe(&format!("{other}/#")).await, SubscribeReturnCode::Failure);

    let mut events = tessera
        .client
        .get(tessera.url(&format!("/v1/collections/{org}/events")))
        .header("authorization", format!("Bearer {token}"))
        .send()
        .await
        .unwrap();
    let mut device = Client::connect(&tessera, &token, "").await.unwrap();
    assert!(device.publish("/v1.6/devices/meter", json!({"flow": {"value": 3.5, "timestamp": 2000}})).await);

    let (topic, message) = consumer.message().await;
    assert!(topic.starts_with(&format!("{org}/")), "{topic}");
    assert_eq!(message["type"], "data");
    assert_eq!(message["payload"], "My41", "base64 of 3.5");

    // The same reading through Ubidots, Horde, AllThingsTalk and the event stream.
    let (_, last) = tessera.ubidots(Method::GET, "/devices/meter/flow/lv", &token, None).await;
    assert_eq!(last, json!(3.5));
    let device_id = message["device"]["deviceId"].as_str().unwrap();
    let (_, data) =
        tessera.call(Method::GET, &format!("/collections/{org}/data"), &[("x-api-token", token.as_str())], None).await;
    assert_eq!(data["messages"][0]["payload"], "My41");
    let (_, state) = tessera
        .call(
            Method::GET,
            &format!("/device/{device_id}/asset/flow/state"),
            &[("authorization", &format!("Bearer {token}"))],
            None,
        )
        .await;
    assert_eq!(state["state"]["value"], 3.5);
    let chunk = tokio::time::timeout(Duration::from_secs(10), events.chunk()).await.unwrap().unwrap().unwrap();
    assert!(std::str::from_utf8(&chunk).unwrap().contains("\"value\":3.5"));
}

#[tokio::test]
async fn qos_1_subscriptions_get_qos_1_deliveries() {
    let tessera = TestServer::start().await;
    let token = tessera.account_token().await;
    let mut subscriber = Client::connect(&tessera, &token, "").await.unwrap();
    assert_eq!(
        subscriber.subscribe_at("/v1.6/devices/+/t", QoS::AtLeastOnce).await,
        SubscribeReturnCode::Success(QoS::AtLeastOnce)
    );
    assert_eq!(
        subscriber.subscribe_at("/v1.6/devices/+/t/lv", QoS::ExactlyOnce).await,
        SubscribeReturnCode::Success(QoS::AtLeastOnce),
        "QoS 2 is granted as 1"
    );
    let mut device = Client::connect(&tessera, &token, "").await.unwrap();
    assert!(device.publish("/v1.6/devices/q", json!({"t": 1})).await);
    for _ in 0..2 {
        match subscriber.next().await {
            Some(Packet::Publish(publish)) => {
                assert_eq!(publish.qos, QoS::AtLeastOnce);
                assert!(publish.packet_id.is_some());
                let packet_id = publish.packet_id.unwrap();
                subscriber.framed.send(Packet::PublishAck { packet_id }).await.unwrap();
            }
            other => panic!("no delivery: {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_persistent_session_receives_what_came_while_it_was_away() {
    let tessera = TestServer::start().await;
    let token = tessera.account_token().await;
    let (mut away, _) = Client::connect_as(&tessera, &token, "", "sleeper", false).await.unwrap();
    assert_eq!(
        away.subscribe_at("/v1.6/devices/+/level/lv", QoS::AtLeastOnce).await,
        SubscribeReturnCode::Success(QoS::AtLeastOnce)
    );
    away.framed.send(Packet::Disconnect).await.unwrap();
    // The server keeps the session before it closes the connection: wait for the close.
    while away.framed.next().await.is_some() {}

    // Readings keep coming while the client is away.
    let mut device = Client::connect(&tessera, &token, "").await.unwrap();
    for level in 1..=20 {
        assert!(device.publish("/v1.6/devices/tank", json!({"level": {"value": level, "timestamp": level}})).await);
    }
    let (mut back, resumed) = Client::connect_as(&tessera, &token, "", "sleeper", false).await.unwrap();
    assert!(resumed);
    let mut received = Vec::new();
    while received.last() != Some(&json!(20.0)) {
        match back.next().await {
            Some(Packet::Publish(publish)) => {
                assert_eq!(publish.qos, QoS::AtLeastOnce);
                received.push(serde_json::from_slice::<Value>(&publish.payload).unwrap());
            }
            other => panic!("expected the queued messages, got {other:?} after {received:?}"),
        }
    }
    let expected: Vec<Value> = (1..=20).map(|level| json!(f64::from(level))).collect();
    assert_eq!(received, expected, "every message that came while away, in order");
}

#[tokio::test]
async fn a_client_connecting_again_with_its_id_takes_the_old_connection_over() {
    let tessera = TestServer::start().await;
    let token = tessera.account_token().await;
    let (mut first, _) = Client::connect_as(&tessera, &token, "", "twin", false).await.unwrap();
    first.subscribe("/v1.6/devices/+/x/lv").await;
    let (mut second, resumed) = Client::connect_as(&tessera, &token, "", "twin", false).await.unwrap();
    assert!(resumed, "the new connection takes the old one's session");
    assert!(first.framed.next().await.is_none(), "the old connection is closed");
    let mut device = Client::connect(&tessera, &token, "").await.unwrap();
    assert!(device.publish("/v1.6/devices/d", json!({"x": 1})).await);
    let (topic, _) = second.message().await;
    assert_eq!(topic, "/v1.6/devices/d/x/lv");
    // Clients without an id never take each other over.
    let mut anonymous = Client::connect_as(&tessera, &token, "", "", true).await.unwrap().0;
    let _other = Client::connect_as(&tessera, &token, "", "", true).await.unwrap();
    assert_eq!(anonymous.subscribe("/v1.6/devices/+/x/lv").await, SubscribeReturnCode::Success(QoS::AtMostOnce));
}

#[tokio::test]
async fn qos_0_publishes_are_stored_and_delivered_in_the_order_sent() {
    let tessera = TestServer::start().await;
    let org = tessera.organization("Stream").await;
    let token = tessera.organization_token(&org, "stream").await["token"].as_str().unwrap().to_owned();
    let mut subscriber = Client::connect(&tessera, &token, "").await.unwrap();
    subscriber.subscribe("/v1.6/devices/stream/n/lv").await;
    let mut device = Client::connect(&tessera, &token, "").await.unwrap();
    // QoS 0 is not acknowledged, so the device sends them back to back without waiting for any commit.
    for n in 0..200 {
        device.publish_at_most_once("/v1.6/devices/stream", json!({"n": {"value": n, "timestamp": 1000 + n}})).await;
    }
    for n in 0..200 {
        let (_, value) = subscriber.message().await;
        assert_eq!(value, json!(f64::from(n)), "in the order sent");
    }
    let (_, values) = tessera.ubidots(Method::GET, "/devices/stream/n/values?page_size=1000", &token, None).await;
    assert_eq!(values["count"], 200, "every one stored");
}

/// A scrape's samples (the server was started with the metrics token).
async fn figures(tessera: &TestServer) -> std::collections::HashMap<String, f64> {
    crate::metrics::samples(&crate::metrics::scrape(tessera).await)
}

fn figure(figures: &std::collections::HashMap<String, f64>, series: &str) -> f64 {
    *figures.get(series).unwrap_or_else(|| panic!("{series} is not in the scrape: {figures:?}"))
}

/// Issue 19: whether a subscriber may read a reading is decided from the ids it carries before anything is read
/// for it, and devices and variables are described from one cache every connection shares.
#[tokio::test]
async fn subscribers_share_one_read_per_device_and_variable_and_unreadable_readings_cost_none() {
    let tessera =
        TestServer::start_with(|config| config.metrics_token = Some(crate::metrics::METRICS_TOKEN.into())).await;
    let inside = tessera.organization("Inside").await;
    let inside_token = tessera.organization_token(&inside, "inside").await["token"].as_str().unwrap().to_owned();
    let outside = tessera.organization("Outside").await;
    let outside_token = tessera.organization_token(&outside, "outside").await["token"].as_str().unwrap().to_owned();
    let reads = |figures: &std::collections::HashMap<String, f64>| {
        (
            figure(figures, "tessera_cache_misses_total{cache=\"live_devices\"}"),
            figure(figures, "tessera_cache_misses_total{cache=\"live_variables\"}"),
        )
    };

    // A subscriber of the other collection follows every device, and may read none of the inside ones.
    let mut outsider = Client::connect(&tessera, &outside_token, "").await.unwrap();
    assert_eq!(outsider.subscribe("/v1.6/devices/+/t/lv").await, SubscribeReturnCode::Success(QoS::AtMostOnce));
    let before = reads(&figures(&tessera).await);
    for device in ["a", "b", "c"] {
        let (status, _) =
            tessera.ubidots(Method::POST, &format!("/devices/{device}"), &inside_token, Some(json!({"t": 1}))).await;
        assert_eq!(status, StatusCode::OK);
    }
    // The hub delivers in commit order: once the outsider has its own device's reading, it has passed the others.
    tessera.ubidots(Method::POST, "/devices/own", &outside_token, Some(json!({"t": 2}))).await;
    assert_eq!(outsider.message().await, ("/v1.6/devices/own/t/lv".to_owned(), json!(2.0)));
    let after = reads(&figures(&tessera).await);
    assert_eq!(
        (after.0 - before.0, after.1 - before.1),
        (1.0, 1.0),
        "only the reading it may read was described: its device and its variable, once each"
    );

    // Five subscribers following the same three devices: one read per device and variable, not five.
    let mut followers = Vec::new();
    for _ in 0..5 {
        let mut follower = Client::connect(&tessera, &inside_token, "").await.unwrap();
        follower.subscribe("/v1.6/devices/+/t/lv").await;
        // The retained last states of the three devices (read by listing, not through the live cache).
        for _ in 0..3 {
            follower.message().await;
        }
        followers.push(follower);
    }
    let before = reads(&figures(&tessera).await);
    for device in ["a", "b", "c"] {
        tessera.ubidots(Method::POST, &format!("/devices/{device}"), &inside_token, Some(json!({"t": 3}))).await;
    }
    for follower in &mut followers {
        for _ in 0..3 {
            let (topic, value) = follower.message().await;
            assert!(topic.ends_with("/t/lv") && value == json!(3.0), "{topic} {value}");
        }
    }
    let after = reads(&figures(&tessera).await);
    assert!(
        after.0 - before.0 <= 3.0 && after.1 - before.1 <= 3.0,
        "at most one read per device and variable for the five: {before:?} → {after:?}"
    );
}

/// Issue 19: a changed device is described anew in the next live message, on every connection that follows it.
#[tokio::test]
async fn a_changed_device_is_described_as_it_is_now_in_the_next_live_message() {
    let tessera = TestServer::start().await;
    let org = tessera.organization("Renamed").await;
    let token = tessera.organization_token(&org, "consumer").await["token"].as_str().unwrap().to_owned();
    let mut consumer = Client::connect(&tessera, &org, &token).await.unwrap();
    assert_eq!(consumer.subscribe(&format!("{org}/#")).await, SubscribeReturnCode::Success(QoS::AtMostOnce));
    tessera.ubidots(Method::POST, "/devices/meter", &token, Some(json!({"flow": 1}))).await;
    let (_, message) = consumer.message().await;
    assert!(message["device"].get("tags").is_none(), "no tags yet: {message}");
    let device = message["device"]["deviceId"].as_str().unwrap().to_owned();

    let (status, _) = tessera
        .call(
            Method::PATCH,
            &format!("/collections/{org}/devices/{device}"),
            &[("x-api-token", token.as_str())],
            Some(json!({"tags": {"name": "pump 7"}})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    tessera.ubidots(Method::POST, "/devices/meter", &token, Some(json!({"flow": 2}))).await;
    let (_, message) = consumer.message().await;
    assert_eq!(message["device"]["tags"]["name"], "pump 7", "the device as it is now: {message}");
}

/// Publishes `batches` MQTT messages of 100 readings of `flood`'s variable `t` from `first` on, each carrying 2 KB
/// of context: more than the kernel's socket buffers hold (up to 4 MiB a side), so a client that stops reading
/// really stops taking them.
async fn flood(publisher: &mut Client, batches: i64, first: i64) {
    let ballast = "x".repeat(2_000);
    for batch in 0..batches {
        let dots: Vec<Value> = (0..100)
            .map(|n| json!({"value": n, "timestamp": first + batch * 100 + n, "context": {"ballast": ballast}}))
            .collect();
        assert!(publisher.publish("/v1.6/devices/flood", json!({ "t": dots })).await, "batch {batch} stored");
    }
}

/// A TCP connection to MQTT whose receive buffer is as small as the kernel allows, for a client that stops reading.
async fn small_buffered_stream(tessera: &TestServer) -> TcpStream {
    let address = tessera.server.as_ref().unwrap().mqtt_addr().expect("MQTT listens");
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(1024).unwrap();
    socket.connect(address).await.unwrap()
}

/// Issue 19: a subscriber that stops reading loses its own oldest messages, counted in `/metrics`, without
/// falling behind the hub; a second subscriber that reads gets every message.
#[tokio::test]
async fn a_subscriber_that_does_not_read_loses_only_its_own_messages_counted_and_a_reader_gets_all() {
    const READINGS: i64 = 6_000;
    let tessera = TestServer::start_with(|config| {
        config.metrics_token = Some(crate::metrics::METRICS_TOKEN.into());
        config.hub_capacity = 1_024;
    })
    .await;
    let token = tessera.account_token().await;
    let stream = small_buffered_stream(&tessera).await;
    let (mut stalled, _) = Client::connect_over(Box::new(stream), &token, "", "stalled", true).await.unwrap();
    stalled.subscribe_at("/v1.6/devices/flood/t", QoS::AtLeastOnce).await;
    let mut reader = Client::connect(&tessera, &token, "").await.unwrap();
    reader.subscribe_at("/v1.6/devices/flood/t", QoS::AtLeastOnce).await;
    let reading = tokio::spawn(async move {
        let mut timestamps = Vec::new();
        while timestamps.len() < READINGS as usize {
            let (_, dot) = reader.message().await;
            timestamps.push(dot["timestamp"].as_i64().unwrap());
        }
        timestamps
    });
    let before = figures(&tessera).await;
    let mut publisher = Client::connect(&tessera, &token, "").await.unwrap();
    flood(&mut publisher, READINGS / 100, 1_000_000).await;
    let timestamps = tokio::time::timeout(Duration::from_secs(60), reading).await.expect("all arrive").unwrap();
    assert_eq!(timestamps, (0..READINGS).map(|n| 1_000_000 + n).collect::<Vec<_>>(), "every one, in order");
    let after = figures(&tessera).await;
    let moved = |series: &str| figure(&after, series) - before.get(series).copied().unwrap_or(0.0);
    let lost = moved("tessera_mqtt_messages_dropped_total{reason=\"session_queue_full\"}");
    assert!(lost > 0.0, "the stalled subscriber lost messages of its own queue, counted");
    assert_eq!(moved("tessera_hub_dropped_total{consumer=\"mqtt\"}"), 0.0, "and kept up with the hub");
    drop(stalled);
}

/// Issue 19: a live stream that stops reading falls behind the hub; what it loses is counted for its kind.
#[tokio::test]
async fn an_event_stream_that_does_not_read_has_its_losses_counted_for_its_kind() {
    let tessera = TestServer::start_with(|config| {
        config.metrics_token = Some(crate::metrics::METRICS_TOKEN.into());
        config.hub_capacity = 256;
    })
    .await;
    let org = tessera.organization("Events").await;
    let token = tessera.organization_token(&org, "events").await["token"].as_str().unwrap().to_owned();
    let address = tessera.url("/").trim_start_matches("http://").trim_end_matches('/').to_owned();
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(1024).unwrap();
    let mut stream = socket.connect(address.parse().unwrap()).await.unwrap();
    let request = format!(
        "GET /v1/collections/{org}/events HTTP/1.1\r\nhost: {address}\r\nauthorization: Bearer {token}\r\n\r\n"
    );
    tokio::io::AsyncWriteExt::write_all(&mut stream, request.as_bytes()).await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while figure(&figures(&tessera).await, "tessera_hub_consumers") < 1.0 {
        assert!(std::time::Instant::now() < deadline, "the stream never subscribed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut publisher = Client::connect(&tessera, &token, "").await.unwrap();
    flood(&mut publisher, 40, 1_000).await;
    // The client reads again: the stream takes up where it is, and finds what the hub no longer has for it.
    let draining = tokio::spawn(async move {
        let mut buffer = vec![0; 64 * 1024];
        while tokio::io::AsyncReadExt::read(&mut stream, &mut buffer).await.is_ok_and(|read| read > 0) {}
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let now = figures(&tessera).await;
        if figure(&now, "tessera_hub_dropped_total{consumer=\"sse\"}") > 0.0 {
            assert_eq!(figure(&now, "tessera_hub_dropped_total{consumer=\"mqtt\"}"), 0.0);
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no loss counted for the stream: {now:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    draining.abort();
}

/// Issue 19: connections are judged again on change events and their own deadlines, not on a ticker, and an
/// expired token still ends its connection as its expiry passes.
#[tokio::test]
async fn an_idle_connection_is_not_rechecked_every_second_and_an_expiring_one_ends_at_its_expiry() {
    let tessera =
        TestServer::start_with(|config| config.metrics_token = Some(crate::metrics::METRICS_TOKEN.into())).await;
    let org = tessera.organization("Idle").await;
    let (_, minted) = tessera
        .native(Method::POST, &format!("/collections/{org}/ground-tokens"), &tessera.api_key, Some(json!({})))
        .await;
    let lasting = minted["secret"].as_str().unwrap().to_owned();
    let mut idle = Client::connect(&tessera, &lasting, &lasting).await.unwrap();
    idle.subscribe("device/+/asset/+/feed").await;
    let rechecks = |figures: &std::collections::HashMap<String, f64>| figure(figures, "tessera_token_rechecks_total");
    // The connection's first check comes at once; then nothing happens for it.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = rechecks(&figures(&tessera).await);
    tokio::time::sleep(Duration::from_millis(3_000)).await;
    // On PostgreSQL the suites' servers share one NOTIFY channel (a known gap), so the invalidations of tests
    // running beside this one wake its connection too: only SQLite's server hears nothing but its own.
    if crate::STORE == crate::helpers::StoreKind::Sqlite {
        let after = rechecks(&figures(&tessera).await);
        assert_eq!(after, before, "three idle seconds, no check (a ticker made three)");
        // Someone else's token revoked (a logout, say, which anyone can repeat at will) wakes nobody else.
        let (_, other) = tessera
            .native(Method::POST, &format!("/collections/{org}/ground-tokens"), &tessera.api_key, Some(json!({})))
            .await;
        let other = other["id"].as_str().unwrap();
        let (status, _) = tessera.native(Method::DELETE, &format!("/tokens/{other}"), &tessera.api_key, None).await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(rechecks(&figures(&tessera).await), after, "another token's revocation woke no connection");
    }

    let (_, minted) = tessera
        .native(
            Method::POST,
            &format!("/collections/{org}/ground-tokens"),
            &tessera.api_key,
            Some(json!({"expires_in": 2})),
        )
        .await;
    let expiring = minted["secret"].as_str().unwrap().to_owned();
    let expires_at = tessera_core::time::parse_iso8601(minted["expires_at"].as_str().unwrap()).unwrap();
    let mut connected = Client::connect(&tessera, &expiring, &expiring).await.unwrap();
    connected.subscribe("device/+/asset/+/feed").await;
    loop {
        match tokio::time::timeout(Duration::from_secs(5), connected.framed.next()).await {
            Ok(None) | Ok(Some(Err(_))) => break,
            Ok(Some(Ok(_))) => continue,
            Err(_) => panic!("the connection of an expired token stayed open"),
        }
    }
    let now = tessera_server::time::now_ms();
    assert!(now >= expires_at - 50, "not before its expiry: {now} against {expires_at}");
    assert!(now < expires_at + 1_500, "within about a second of its expiry: {now} against {expires_at}");
    // The lasting token's connection is still there.
    assert_eq!(idle.subscribe("device/+/asset/x/feed").await, SubscribeReturnCode::Success(QoS::AtMostOnce));
}

/// MQTT 3.1.1 §3.1.2.10: a client silent for one and a half keep-alive periods is let go, while one that sends a
/// packet now and then (each moving its deadline on) stays connected past that time.
#[tokio::test]
async fn a_client_silent_past_its_keep_alive_is_let_go_and_a_talking_one_is_not() {
    let tessera = TestServer::start().await;
    let token = tessera.account_token().await;
    let address = tessera.server.as_ref().unwrap().mqtt_addr().expect("MQTT listens");
    let connect = async |client_id: &str| {
        let mut framed = Framed::new(TcpStream::connect(address).await.unwrap(), v3::Codec::new(1 << 20));
        let connect = v3::Connect {
            protocol: Default::default(),
            clean_session: true,
            keep_alive: 1,
            last_will: None,
            client_id: ByteString::from(client_id.to_owned()),
            username: Some(ByteString::from(token.clone())),
            password: Some(Bytes::new()),
            cert: None,
        };
        framed.send(Packet::Connect(Box::new(connect))).await.unwrap();
        assert!(matches!(framed.next().await, Some(Ok((Packet::ConnectAck(_), _)))));
        framed
    };
    let mut silent = connect("silent").await;
    let mut talking = connect("talking").await;
    let started = std::time::Instant::now();
    // The talking client pings every 400 ms for 2.5 s, past the 1.5 s allowance; each ping is answered.
    while started.elapsed() < Duration::from_millis(2_500) {
        talking.send(Packet::PingRequest).await.unwrap();
        let answer = tokio::time::timeout(Duration::from_secs(2), talking.next()).await.expect("answered");
        assert!(matches!(answer, Some(Ok((Packet::PingResponse, _)))), "{answer:?}");
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    // The silent one was closed, after its allowance and not long after.
    let closed = tokio::time::timeout(Duration::from_secs(5), silent.next()).await.expect("closed within 5 s");
    assert!(closed.is_none() || matches!(closed, Some(Err(_))), "{closed:?}");
}
