//! MQTT load: publishers send QoS 0 messages as fast as the broker takes them while one subscriber receives them;
//! the figure is what reaches the subscriber. The same tool drives Tessera (where every publish is authorized and
//! stored, and every delivery authorized) and the machine's Mosquitto.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use bytestring::ByteString;
use futures_util::{SinkExt, StreamExt};
use rmqtt_codec::types::Publish;
use rmqtt_codec::v3::{self, ConnectAckReason, Packet, QoS};
use tokio::net::TcpStream;
use tokio_util::codec::Framed;

pub(super) type Client = Framed<TcpStream, v3::Codec>;

/// Connects with a clean session, `username` as the credential (a Tessera token), and waits for the CONNACK.
pub(super) async fn connect(address: SocketAddr, client_id: &str, username: Option<&str>) -> anyhow::Result<Client> {
    let stream = TcpStream::connect(address).await.with_context(|| format!("connecting to MQTT at {address}"))?;
    stream.set_nodelay(true)?;
    handshake(stream, client_id, username, username.map(|_| "bench"), 60).await
}

/// CONNECT on `stream` as `client_id` (a clean session), answered by an accepting CONNACK. The one MQTT client of
/// the benchmark, so every broker it drives meets the same packets.
pub(super) async fn handshake(
    stream: TcpStream,
    client_id: &str,
    username: Option<&str>,
    password: Option<&str>,
    keep_alive_seconds: u16,
) -> anyhow::Result<Client> {
    let mut client = Framed::new(stream, v3::Codec::new(1 << 20));
    let connect = v3::Connect {
        protocol: Default::default(),
        clean_session: true,
        keep_alive: keep_alive_seconds,
        last_will: None,
        client_id: ByteString::from(client_id.to_owned()),
        username: username.map(|name| ByteString::from(name.to_owned())),
        password: password.map(|password| Bytes::from(password.to_owned())),
        cert: None,
    };
    client.send(Packet::Connect(Box::new(connect))).await?;
    match client.next().await {
        Some(Ok((Packet::ConnectAck(ack), _))) if ack.return_code == ConnectAckReason::ConnectionAccepted => Ok(client),
        other => bail!("MQTT connection refused: {other:?}"),
    }
}

/// What one MQTT run measured.
#[derive(Debug, Clone, Copy)]
pub struct MqttOutcome {
    pub published: u64,
    pub delivered: u64,
    pub seconds: f64,
}

impl MqttOutcome {
    pub fn delivered_per_second(&self) -> f64 {
        self.delivered as f64 / self.seconds.max(f64::EPSILON)
    }
}

/// `publishers` connections, publisher `n` using `credentials[n % len]` (a username, or none) and topic
/// `topic(n)`, send `payload` for `duration`; one subscriber on `filter` counts what arrives.
pub async fn run(
    address: SocketAddr,
    credentials: &[Option<String>],
    subscriber_credentials: Option<&str>,
    filter: &str,
    topic: impl Fn(usize) -> String,
    publishers: usize,
    duration: Duration,
) -> anyhow::Result<MqttOutcome> {
    let mut subscriber = connect(address, "bench-subscriber", subscriber_credentials).await?;
    let packet_id = std::num::NonZeroU16::new(1).unwrap();
    let topic_filters = vec![(ByteString::from(filter.to_owned()), QoS::AtMostOnce)];
    subscriber.send(Packet::Subscribe { packet_id, topic_filters }).await?;
    loop {
        match subscriber.next().await {
            Some(Ok((Packet::SubscribeAck { .. }, _))) => break,
            Some(Ok(_)) => continue,
            other => bail!("no SUBACK: {other:?}"),
        }
    }
    let delivered = Arc::new(AtomicU64::new(0));
    let counting = delivered.clone();
    let receiver = tokio::spawn(async move {
        while let Some(Ok((packet, _))) = subscriber.next().await {
            if matches!(packet, Packet::Publish(_)) {
                counting.fetch_add(1, Ordering::Relaxed);
            }
        }
    });

    let started = Instant::now();
    let deadline = started + duration;
    let mut senders = tokio::task::JoinSet::new();
    for publisher in 0..publishers {
        let username = credentials[publisher % credentials.len()].clone();
        let mut client = connect(address, &format!("bench-publisher-{publisher}"), username.as_deref()).await?;
        let topic = ByteString::from(topic(publisher));
        senders.spawn(async move {
            let mut sent = 0u64;
            while Instant::now() < deadline {
                let publish = Publish {
                    dup: false,
                    retain: false,
                    qos: QoS::AtMostOnce,
                    topic: topic.clone(),
                    packet_id: None,
                    payload: Bytes::from(format!(r#"{{"temperature": {}}}"#, sent % 1000)),
                    properties: None,
                };
                // A broker that stops reading leaves the send waiting; the window ends all the same.
                tokio::select! {
                    result = client.send(Packet::Publish(Box::new(publish))) => if result.is_err() { break },
                    _ = tokio::time::sleep_until(deadline.into()) => break,
                }
                sent += 1;
            }
            sent
        });
    }
    // What arrives after the window is not counted: the rate is what reached the subscriber within it.
    tokio::time::sleep_until(deadline.into()).await;
    let delivered_in_time = delivered.load(Ordering::Relaxed);
    let seconds = started.elapsed().as_secs_f64();
    let mut published = 0;
    while let Some(sent) = senders.join_next().await {
        published += sent?;
    }
    receiver.abort();
    Ok(MqttOutcome { published, delivered: delivered_in_time, seconds })
}
