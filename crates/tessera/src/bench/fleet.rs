//! `tessera bench --fleet`: the load shape of a real fleet (issue 19). Many devices, each connected at once with
//! its own device token and each slow (one reading every few seconds, phases spread evenly over the interval), and
//! a few applications, each following its share of the devices with a ground token. The same fleet runs over MQTT
//! against Tessera, over HTTP keep-alive against Tessera (its subscribers still on MQTT), and over MQTT against a
//! Mosquitto the bench starts with a password file and an ACL of the same devices: the same client code, the same
//! payloads, the same connection counts.
//!
//! Every payload carries the time it was sent (microseconds since the run's origin, `{"v": …}`), so a subscriber
//! measures publish → delivery latency on the one clock of this process.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::ops::Range;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use bytestring::ByteString;
use futures_util::{SinkExt, StreamExt};
use rmqtt_codec::types::Publish;
use rmqtt_codec::v3::{Packet, QoS, SubscribeReturnCode};
use serde_json::{Value, json};
use tessera_core::{Scope, Secret, TokenId, TokenKind};
use tessera_server::entropy::{new_id, new_secret};
use tessera_store::TokenRecord;
use tokio::net::{TcpSocket, TcpStream};
use tokio::task::JoinSet;

use super::load::{self, Connection};
use super::mosquitto::{self, Mosquitto};
use super::mqtt::{Client, handshake};
use super::process::{self, ChildServer};
use super::{Options, round, say, tempfile_dir};

/// The fleet's shape, from the command line.
#[derive(Debug, Clone)]
pub struct FleetShape {
    pub devices: usize,
    pub subscribers: usize,
    /// Each device sends one reading this often.
    pub interval: Duration,
    /// Publishing before the measured window (and the fleet connected and silent for as long before that).
    pub warmup: Duration,
    pub window: Duration,
    pub modes: Vec<FleetMode>,
}

/// One server and transport the fleet is run against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FleetMode {
    /// Tessera, the devices over MQTT.
    Mqtt,
    /// Tessera, each device one HTTP keep-alive connection (the subscribers over MQTT).
    Http,
    /// Mosquitto, started by the bench, with the same devices in its password file and ACL; each application
    /// subscribes to its devices' topics.
    Mosquitto,
    /// The same Mosquitto, each application subscribed to `/v1.6/devices/+` as on Tessera, so that Mosquitto
    /// checks every reading against every application's ACL (not in the default runs: see ARCHITECTURE.md).
    MosquittoWildcard,
}

impl FleetMode {
    fn name(self) -> &'static str {
        match self {
            FleetMode::Mqtt => "Tessera MQTT",
            FleetMode::Http => "Tessera HTTP",
            FleetMode::Mosquitto => "Mosquitto",
            FleetMode::MosquittoWildcard => "Mosquitto, wildcard",
        }
    }
}

/// The targets of issue 17 that the figures are printed beside.
const TARGET_P99_MS: f64 = 20.0;
const TARGET_KIB_PER_DEVICE: f64 = 16.0;
const TARGET_MEMORY_RATIO_TO_MOSQUITTO: f64 = 2.0;

/// Connects in flight at once while the fleet connects: enough to find the server's connect rate, few enough
/// that a listen backlog of 1 024 is never the limit.
const CONNECTS_IN_FLIGHT: usize = 64;
/// Local source addresses the connections are spread over (127.0.0.1 to 127.0.0.N), so that three runs of 10 000
/// connections, with the previous run's closed ones in TIME_WAIT, never run out of ephemeral ports.
const SOURCE_ADDRESSES: usize = 8;
/// How long after the window the subscribers may still receive its readings.
const GRACE: Duration = Duration::from_secs(5);
/// The keep-alive the clients announce; subscribers ping at half of it (devices publish far more often).
const KEEP_ALIVE_SECONDS: u16 = 120;
/// The variable every device's reading carries: subscribers to Tessera follow `/v1.6/devices/+/v/lv`.
pub(super) const VARIABLE: &str = "v";
/// The send time of a reading that is not measured (an HTTP device's first, as it connects).
const UNMEASURED: u64 = 0;

/// A device of the fleet: its label and its own device token.
#[derive(Debug, Clone)]
pub(super) struct FleetDevice {
    pub label: String,
    pub token: String,
}

/// An application: a ground token for a collection holding `devices` (indexes into the fleet's devices).
#[derive(Debug, Clone)]
pub(super) struct Application {
    pub token: String,
    pub devices: Range<usize>,
}

#[derive(Debug)]
pub(super) struct Fleet {
    pub devices: Vec<FleetDevice>,
    pub applications: Vec<Application>,
    pub provisioning: Duration,
}

/// Makes the fleet in a running Tessera: through the API, one collection per application and its ground token;
/// then straight into the store (as `population.rs` does, 10 000 rows a transaction), the devices of each
/// collection and a device token for each, the secrets kept here. Minting 10 000 tokens one request at a time
/// would take minutes of durable commits and measure nothing the fleet is about.
pub(super) async fn provision(
    tessera: &ChildServer,
    data_dir: &Path,
    devices: usize,
    subscribers: usize,
) -> anyhow::Result<Fleet> {
    let started = Instant::now();
    let address = tessera.http;
    let api_key = tessera.api_key.clone().context("Tessera printed no API key")?;
    let mut connection = Connection::open(address).await?;
    let exchange = load::request("POST", address, "/api/v1.6/auth/token", &[("x-ubidots-apikey", &api_key)], None);
    let account_token = field(&mut connection, &exchange, "token").await?;
    let bearer = format!("Bearer {account_token}");
    let api_bearer = format!("Bearer {api_key}");
    let mut grounds = Vec::with_capacity(subscribers);
    for application in 0..subscribers {
        let body = format!(r#"{{"name": "fleet application {application}"}}"#);
        let create = load::request("POST", address, "/v1/collections", &[("authorization", &bearer)], Some(&body));
        let collection = field(&mut connection, &create, "id").await?;
        let path = format!("/v1/collections/{collection}/ground-tokens");
        let body = format!(r#"{{"name": "application {application}"}}"#);
        // Tokens are minted only with the API key (never with another token).
        let mint = load::request("POST", address, &path, &[("authorization", &api_bearer)], Some(&body));
        grounds.push(field(&mut connection, &mint, "secret").await?);
    }

    let config = tessera_server::Config::new(data_dir.to_owned());
    let opened = tessera_server::bootstrap::open_store(&config).await?;
    let store = opened.store.clone();
    let now = tessera_server::time::now_ms();
    let mut fleet = Vec::with_capacity(devices);
    let mut applications = Vec::with_capacity(subscribers);
    let (mut rows, mut tokens) = (Vec::new(), Vec::new());
    for (index, ground) in grounds.into_iter().enumerate() {
        let secret = Secret::parse(&ground).map_err(|error| anyhow::anyhow!("a ground token: {error}"))?;
        let record = store.token_by_digest(&opened.key.digest(&secret)).await.context("the ground token's record")?;
        let Scope::Collection(collection) = record.scope else { bail!("a ground token not for a collection") };
        let share = devices * index / subscribers..devices * (index + 1) / subscribers;
        for n in share.clone() {
            let device = super::population::fleet_device(record.account, collection, n, now)?;
            let secret = new_secret(TokenKind::Device);
            tokens.push(TokenRecord {
                name: format!("fleet device {n}"),
                ..TokenRecord::new(
                    TokenId(new_id()),
                    record.account,
                    TokenKind::Device,
                    opened.key.digest(&secret),
                    Scope::Device(device.id),
                    record.creator,
                    now,
                )
            });
            fleet.push(FleetDevice { label: device.label.to_string(), token: secret.expose().to_owned() });
            rows.push(device);
        }
        applications.push(Application { token: ground, devices: share });
    }
    for (devices, tokens) in rows.chunks(10_000).zip(tokens.chunks(10_000)) {
        store.insert_devices(devices).await?;
        store.insert_tokens(tokens, &[]).await?;
    }
    store.close().await;
    Ok(Fleet { devices: fleet, applications, provisioning: started.elapsed() })
}

async fn field(connection: &mut Connection, request: &[u8], name: &str) -> anyhow::Result<String> {
    let (status, body) = connection.send(request).await?;
    if !(200..300).contains(&status) {
        bail!("setting up the fleet: answered {status}: {}", String::from_utf8_lossy(&body));
    }
    let document: Value = serde_json::from_slice(&body)?;
    document[name].as_str().map(str::to_owned).with_context(|| format!("no {name} in {document}"))
}

/// Raises this process's soft limit of open files to its hard limit (the servers it starts inherit it), and
/// answers the limit.
pub(super) fn raise_open_file_limit() -> anyhow::Result<u64> {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current != limit.maximum {
        limit.current = limit.maximum;
        setrlimit(Resource::Nofile, limit).context("raising the open-file limit")?;
    }
    Ok(getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX))
}

/// A connection from the `n`th local source address, so that the fleet's connections share their ephemeral ports
/// over several addresses.
pub(super) async fn connect_from(n: usize, address: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    if address.ip().is_loopback() {
        let source = Ipv4Addr::new(127, 0, 0, 1 + (n % SOURCE_ADDRESSES) as u8);
        socket.bind(SocketAddr::new(IpAddr::V4(source), 0))?;
    }
    let stream = socket.connect(address).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// One reading as it reached a subscriber.
#[derive(Debug, Clone, Copy)]
pub(super) struct Delivery {
    pub sent_us: u64,
    pub latency_us: u32,
}

/// What the fleet's clients saw, shared by all of them: every send and every delivery, with its time, so any
/// window can be counted afterwards (the soak drains it every interval).
#[derive(Debug, Default)]
pub(super) struct Record {
    pub sent_us: Mutex<Vec<u64>>,
    pub deliveries: Mutex<Vec<Delivery>>,
    pub sent_total: AtomicU64,
    pub delivered_total: AtomicU64,
    /// Deliveries of a device the subscriber does not follow (its ACL or grant let through what it should not).
    pub misrouted: AtomicU64,
    /// HTTP readings answered other than 2xx, or not answered.
    pub http_errors: AtomicU64,
    /// Device and subscriber connections the server closed while the fleet ran.
    pub connections_lost: AtomicU64,
    /// Deliveries of unmeasured readings (the HTTP devices' first, as they connect).
    pub unmeasured_delivered: AtomicU64,
    /// Readings sent and not yet acknowledged (PUBACK, or an HTTP answer): failures if still so at the end.
    pub unacknowledged: AtomicU64,
}

impl Record {
    fn sent(&self, sent_us: u64) {
        self.sent_us.lock().unwrap().push(sent_us);
        self.sent_total.fetch_add(1, Ordering::Relaxed);
        self.unacknowledged.fetch_add(1, Ordering::Relaxed);
    }

    fn acknowledged(&self) {
        self.unacknowledged.fetch_sub(1, Ordering::Relaxed);
    }

    /// Whether every reading sent so far was acknowledged and reached its subscriber.
    pub fn settled(&self) -> bool {
        self.unacknowledged.load(Ordering::Relaxed) == 0
            && self.delivered_total.load(Ordering::Relaxed) >= self.sent_total.load(Ordering::Relaxed)
    }

    fn delivered(&self, delivery: Delivery) {
        self.deliveries.lock().unwrap().push(delivery);
        self.delivered_total.fetch_add(1, Ordering::Relaxed);
    }
}

/// A server the fleet runs against: where its MQTT and (for the HTTP fleet) HTTP listeners are, its pid for
/// `/proc`, and the filter its subscribers use (Mosquitto delivers what was published; Tessera the last values).
#[derive(Debug, Clone, Copy)]
pub(super) struct Target {
    pub mode: FleetMode,
    pub pid: u32,
    pub mqtt: SocketAddr,
    pub http: Option<SocketAddr>,
}

impl Target {
    /// What an application subscribes to: on Tessera its devices' last values by one wildcard (its ground token
    /// decides which reach it); on Mosquitto, which delivers what was published, its devices' topics, or the
    /// wildcard that the ACL then filters.
    fn filters(&self, fleet: &Fleet, application: &Application) -> Vec<String> {
        match self.mode {
            FleetMode::Mqtt | FleetMode::Http => vec![format!("/v1.6/devices/+/{VARIABLE}/lv")],
            FleetMode::MosquittoWildcard => vec!["/v1.6/devices/+".to_owned()],
            FleetMode::Mosquitto => fleet.devices[application.devices.clone()]
                .iter()
                .map(|device| format!("/v1.6/devices/{}", device.label))
                .collect(),
        }
    }
}

/// The device index in a delivered topic: `/v1.6/devices/fleet-N` or `/v1.6/devices/fleet-N/v/lv`.
fn device_of(topic: &str) -> Option<usize> {
    let rest = topic.strip_prefix("/v1.6/devices/fleet-")?;
    rest.split('/').next()?.parse().ok()
}

/// The send time a payload carries: the first number in it (`{"v": 123}` as published, `123.0` as a last value).
fn sent_time_of(payload: &[u8]) -> Option<u64> {
    let start = payload.iter().position(u8::is_ascii_digit)?;
    let end = payload[start..]
        .iter()
        .position(|byte| !(byte.is_ascii_digit() || *byte == b'.'))
        .map_or(payload.len(), |n| start + n);
    let value: f64 = std::str::from_utf8(&payload[start..end]).ok()?.parse().ok()?;
    Some(value as u64)
}

/// Connects and subscribes every application, then spawns one task each that records what it receives.
pub(super) async fn start_subscribers(
    target: Target,
    fleet: &Fleet,
    record: &Arc<Record>,
    origin: Instant,
) -> anyhow::Result<JoinSet<()>> {
    let mut tasks = JoinSet::new();
    for (index, application) in fleet.applications.iter().enumerate() {
        let stream = connect_from(index, target.mqtt).await.context("connecting a subscriber")?;
        let token = application.token.as_str();
        let mut client = handshake(stream, &format!("fleet-app-{index}"), Some(token), Some(token), KEEP_ALIVE_SECONDS)
            .await
            .context("a subscriber's CONNECT")?;
        let packet_id = std::num::NonZeroU16::new(1).unwrap();
        let filters = target.filters(fleet, application);
        let topic_filters = filters.iter().map(|filter| (ByteString::from(filter.clone()), QoS::AtMostOnce)).collect();
        client.send(Packet::Subscribe { packet_id, topic_filters }).await?;
        loop {
            match client.next().await {
                Some(Ok((Packet::SubscribeAck { status, .. }, _))) => {
                    if status.len() != filters.len() || status.contains(&SubscribeReturnCode::Failure) {
                        bail!("{} refused an application's subscription to {filters:?}", target.mode.name());
                    }
                    break;
                }
                Some(Ok(_)) => continue,
                other => bail!("no SUBACK: {other:?}"),
            }
        }
        let record = record.clone();
        let follows = application.devices.clone();
        tasks.spawn(async move {
            let mut ping = tokio::time::interval(Duration::from_secs(u64::from(KEEP_ALIVE_SECONDS / 2)));
            ping.tick().await;
            loop {
                tokio::select! {
                    packet = client.next() => match packet {
                        // A retained message is a last value from before this run (a previous run's, on the same
                        // store), not a delivery of this one.
                        Some(Ok((Packet::Publish(publish), _))) if publish.retain => {}
                        Some(Ok((Packet::Publish(publish), _))) => {
                            let now_us = origin.elapsed().as_micros() as u64;
                            match (device_of(&publish.topic), sent_time_of(&publish.payload)) {
                                (_, Some(UNMEASURED)) => {
                                    record.unmeasured_delivered.fetch_add(1, Ordering::Relaxed);
                                }
                                (Some(device), Some(sent_us)) if follows.contains(&device) => {
                                    let latency_us = u32::try_from(now_us.saturating_sub(sent_us)).unwrap_or(u32::MAX);
                                    record.delivered(Delivery { sent_us, latency_us });
                                }
                                _ => {
                                    record.misrouted.fetch_add(1, Ordering::Relaxed);
                                }
                            }
                        }
                        Some(Ok(_)) => {}
                        _ => {
                            record.connections_lost.fetch_add(1, Ordering::Relaxed);
                            return;
                        }
                    },
                    _ = ping.tick() => if client.send(Packet::PingRequest).await.is_err() {
                        record.connections_lost.fetch_add(1, Ordering::Relaxed);
                        return;
                    },
                }
            }
        });
    }
    Ok(tasks)
}

/// A device's open connection.
#[derive(Debug)]
pub(super) enum Link {
    Mqtt(Box<Client>),
    Http(Connection),
}

/// Connects every device (MQTT CONNECT with its token, or a TCP connection for HTTP), `CONNECTS_IN_FLIGHT` at a
/// time. Answers each device's link (`None`: refused) and how many were refused.
pub(super) async fn connect_devices(target: Target, fleet: &Fleet) -> (Vec<Option<Link>>, u64) {
    let attempts = futures_util::stream::iter(fleet.devices.iter().enumerate())
        .map(|(index, device)| async move {
            let link = async {
                match target.mode {
                    FleetMode::Http => {
                        // A device connects to send: its first reading goes at once (a connection that sends
                        // nothing is closed after the header timeout, as it should be). It is not measured.
                        let address = target.http.context("no HTTP address")?;
                        let mut connection = Connection::over(connect_from(index, address).await?);
                        let path = format!("/api/v1.6/devices/{}", device.label);
                        let body = format!(r#"{{"{VARIABLE}": {UNMEASURED}}}"#);
                        let hello =
                            load::request("POST", address, &path, &[("x-auth-token", &device.token)], Some(&body));
                        let (status, _) = connection.send(&hello).await?;
                        anyhow::ensure!((200..300).contains(&status), "the first reading was answered {status}");
                        Ok(Link::Http(connection))
                    }
                    FleetMode::Mqtt | FleetMode::Mosquitto | FleetMode::MosquittoWildcard => {
                        let stream = connect_from(index, target.mqtt).await?;
                        let token = Some(device.token.as_str());
                        let client = handshake(stream, &device.label, token, token, KEEP_ALIVE_SECONDS).await?;
                        Ok::<_, anyhow::Error>(Link::Mqtt(Box::new(client)))
                    }
                }
            };
            (index, link.await.ok())
        })
        .buffer_unordered(CONNECTS_IN_FLIGHT);
    let mut links: Vec<Option<Link>> = (0..fleet.devices.len()).map(|_| None).collect();
    let mut refused = 0;
    let mut attempts = std::pin::pin!(attempts);
    while let Some((index, link)) = attempts.next().await {
        if link.is_none() {
            refused += 1;
        }
        links[index] = link;
    }
    (links, refused)
}

/// Starts every connected device publishing: device `n` first at `start + interval × n / devices`, then every
/// `interval`, until `stop`, then silent but connected until the tasks are aborted; MQTT at QoS 1 (a publish the
/// broker has not acknowledged when the run is counted is a failure), HTTP as a Ubidots POST answered 2xx.
#[allow(clippy::too_many_arguments)]
pub(super) fn start_publishing(
    target: Target,
    fleet: &Fleet,
    links: Vec<Option<Link>>,
    record: &Arc<Record>,
    origin: Instant,
    start: Instant,
    stop: Instant,
    interval: Duration,
) -> JoinSet<()> {
    let mut tasks = JoinSet::new();
    let count = fleet.devices.len();
    for (index, link) in links.into_iter().enumerate() {
        let Some(link) = link else { continue };
        let device = fleet.devices[index].clone();
        let record = record.clone();
        let first = start + interval.mul_f64(index as f64 / count as f64);
        let http = target.http;
        tasks.spawn(async move {
            match link {
                Link::Mqtt(client) => publish_mqtt(*client, &device, &record, origin, first, stop, interval).await,
                Link::Http(connection) => {
                    if let Some(address) = http {
                        post_http(connection, index, address, &device, &record, origin, first, stop, interval).await
                    }
                }
            }
        });
    }
    tasks
}

async fn publish_mqtt(
    mut client: Client,
    device: &FleetDevice,
    record: &Record,
    origin: Instant,
    first: Instant,
    stop: Instant,
    interval: Duration,
) {
    let topic = ByteString::from(format!("/v1.6/devices/{}", device.label));
    let mut due = first;
    let mut packet_id: u16 = 0;
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(due.into()), if due < stop => {
                packet_id = packet_id.checked_add(1).unwrap_or(1);
                let sent_us = origin.elapsed().as_micros() as u64;
                let publish = Publish {
                    dup: false,
                    retain: false,
                    qos: QoS::AtLeastOnce,
                    topic: topic.clone(),
                    packet_id: std::num::NonZeroU16::new(packet_id),
                    payload: Bytes::from(format!(r#"{{"{VARIABLE}": {sent_us}}}"#)),
                    properties: None,
                };
                record.sent(sent_us);
                if client.send(Packet::Publish(Box::new(publish))).await.is_err() {
                    record.connections_lost.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                due += interval;
            }
            packet = client.next() => match packet {
                Some(Ok((Packet::PublishAck { .. }, _))) => record.acknowledged(),
                Some(Ok(_)) => {}
                _ => {
                    record.connections_lost.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            },
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn post_http(
    mut connection: Connection,
    index: usize,
    address: SocketAddr,
    device: &FleetDevice,
    record: &Record,
    origin: Instant,
    first: Instant,
    stop: Instant,
    interval: Duration,
) {
    let path = format!("/api/v1.6/devices/{}", device.label);
    let mut due = first;
    while due < stop {
        tokio::time::sleep_until(due.into()).await;
        let sent_us = origin.elapsed().as_micros() as u64;
        let body = format!(r#"{{"{VARIABLE}": {sent_us}}}"#);
        let request = load::request("POST", address, &path, &[("x-auth-token", &device.token)], Some(&body));
        record.sent(sent_us);
        let answer = connection.send(&request).await;
        record.acknowledged();
        match answer {
            Ok((status, _)) if (200..300).contains(&status) => {}
            Ok(_) => {
                record.http_errors.fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => {
                record.http_errors.fetch_add(1, Ordering::Relaxed);
                record.connections_lost.fetch_add(1, Ordering::Relaxed);
                match connect_from(index, address).await {
                    Ok(stream) => connection = Connection::over(stream),
                    Err(_) => return,
                }
            }
        }
        due += interval;
    }
    std::future::pending::<()>().await;
}

/// Latency quantiles of deliveries (milliseconds).
pub(super) fn quantiles_ms(latencies_us: &mut [u32]) -> (f64, f64, f64) {
    if latencies_us.is_empty() {
        return (f64::NAN, f64::NAN, f64::NAN);
    }
    latencies_us.sort_unstable();
    let at = |q: f64| f64::from(latencies_us[((latencies_us.len() - 1) as f64 * q).round() as usize]) / 1000.0;
    (at(0.5), at(0.99), at(0.999))
}

/// What one server's run of the fleet measured.
#[derive(Debug, Clone)]
struct FleetFigures {
    mode: FleetMode,
    devices: usize,
    subscribers: usize,
    connected: usize,
    connect_seconds: f64,
    connect_cpu_seconds: f64,
    connects_refused: u64,
    published: u64,
    delivered: u64,
    latency_ms: (f64, f64, f64),
    rss_before_kib: f64,
    rss_idle_kib: f64,
    rss_publishing_kib: f64,
    silent_cpu_cores: f64,
    window_cpu_seconds: f64,
    window_seconds: f64,
    publishes_failed: u64,
    http_errors: u64,
    connections_lost: u64,
    misrouted: u64,
}

impl FleetFigures {
    fn connect_rate(&self) -> f64 {
        self.connected as f64 / self.connect_seconds.max(f64::EPSILON)
    }

    fn delivered_percent(&self) -> f64 {
        100.0 * self.delivered as f64 / self.published.max(1) as f64
    }

    fn kib_per_device(&self, rss_kib: f64) -> f64 {
        (rss_kib - self.rss_before_kib) / self.connected.max(1) as f64
    }

    fn cpu_us_per_delivered(&self) -> f64 {
        self.window_cpu_seconds * 1e6 / self.delivered.max(1) as f64
    }

    fn json(&self) -> Value {
        let (p50, p99, p999) = self.latency_ms;
        let number = |value: f64| if value.is_finite() { json!(round(value)) } else { Value::Null };
        json!({
            "server": self.mode.name(),
            "devices": self.devices,
            "subscribers": self.subscribers,
            "connected": self.connected,
            "connect_per_second": round(self.connect_rate()),
            "connect_seconds": round(self.connect_seconds),
            "connect_server_cpu_seconds": round(self.connect_cpu_seconds),
            "published_in_window": self.published,
            "delivered_in_window": self.delivered,
            "delivered_percent": round(self.delivered_percent()),
            "latency_ms": {"p50": number(p50), "p99": number(p99), "p999": number(p999)},
            "rss_kib_per_device": {
                "idle": round(self.kib_per_device(self.rss_idle_kib)),
                "publishing": round(self.kib_per_device(self.rss_publishing_kib)),
            },
            "rss_mib": {
                "before": round(self.rss_before_kib / 1024.0),
                "idle": round(self.rss_idle_kib / 1024.0),
                "publishing": round(self.rss_publishing_kib / 1024.0),
            },
            "server_cpu_us_per_delivered": round(self.cpu_us_per_delivered()),
            "server_cpu_cores_silent": round(self.silent_cpu_cores),
            "server_cpu_cores_publishing": round(self.window_cpu_seconds / self.window_seconds.max(f64::EPSILON)),
            "errors": {
                "connects_refused": self.connects_refused,
                "publishes_failed": self.publishes_failed,
                "http_non_2xx": self.http_errors,
                "connections_lost": self.connections_lost,
                "misrouted": self.misrouted,
            },
        })
    }
}

/// Runs the fleet against one server: subscribers, then the devices' connects (timed), then the fleet silent
/// (CPU and memory), then publishing: a warm-up, the measured window, and up to `GRACE` for the last deliveries.
async fn run_fleet(
    options: &Options,
    shape: &FleetShape,
    target: Target,
    fleet: &Fleet,
) -> anyhow::Result<FleetFigures> {
    let name = target.mode.name();
    let origin = Instant::now();
    let record = Arc::new(Record::default());
    let rss_before_kib = process::rss_kib(target.pid);
    let mut subscribers = start_subscribers(target, fleet, &record, origin).await?;

    say(options, &format!("{name}: connecting {} devices", fleet.devices.len()));
    let cpu_before = process::cpu_seconds(target.pid);
    let connecting = Instant::now();
    let (links, connects_refused) = connect_devices(target, fleet).await;
    let connect_seconds = connecting.elapsed().as_secs_f64();
    let connect_cpu_seconds = process::cpu_seconds(target.pid) - cpu_before;
    let connected = links.iter().filter(|link| link.is_some()).count();
    say(
        options,
        &format!(
            "  {connected} connected in {connect_seconds:.1} s ({:.0}/s, server CPU {connect_cpu_seconds:.1} s), \
             {connects_refused} refused; silent for {:.0} s",
            connected as f64 / connect_seconds.max(f64::EPSILON),
            shape.warmup.as_secs_f64()
        ),
    );

    if target.mode == FleetMode::Http {
        // The first readings sent as the devices connected are still being stored and delivered: the fleet is
        // silent only once they are through (or after 30 s).
        let settling = Instant::now();
        while record.unmeasured_delivered.load(Ordering::Relaxed) < connected as u64
            && settling.elapsed() < Duration::from_secs(30)
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        say(
            options,
            &format!(
                "  {} of their {connected} first readings delivered, {:.1} s after they connected",
                record.unmeasured_delivered.load(Ordering::Relaxed),
                settling.elapsed().as_secs_f64()
            ),
        );
    }
    let cpu_before = process::cpu_seconds(target.pid);
    tokio::time::sleep(shape.warmup).await;
    let silent_cpu_cores = (process::cpu_seconds(target.pid) - cpu_before) / shape.warmup.as_secs_f64();
    let rss_idle_kib = process::rss_kib(target.pid);

    let start = Instant::now() + Duration::from_millis(100);
    let window_start = start + shape.warmup;
    let stop = window_start + shape.window;
    let mut devices = start_publishing(target, fleet, links, &record, origin, start, stop, shape.interval);
    let progress = {
        let record = record.clone();
        let quiet = options.json;
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(Duration::from_secs(1));
            loop {
                ticker.tick().await;
                if !quiet {
                    let phase = if Instant::now() < window_start { "warm-up" } else { "window" };
                    eprint!(
                        "\r  publishing ({phase}) {:>4.0} s: {} sent, {} delivered   ",
                        start.elapsed().as_secs_f64(),
                        record.sent_total.load(Ordering::Relaxed),
                        record.delivered_total.load(Ordering::Relaxed)
                    );
                }
            }
        })
    };
    tokio::time::sleep_until(window_start.into()).await;
    let cpu_before = process::cpu_seconds(target.pid);
    tokio::time::sleep_until(stop.into()).await;
    let window_cpu_seconds = process::cpu_seconds(target.pid) - cpu_before;
    let rss_publishing_kib = process::rss_kib(target.pid);
    // The window's last readings may still be on their way: wait for them and their acknowledgements, up to the
    // grace.
    let deadline = stop + GRACE;
    while Instant::now() < deadline && !record.settled() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    progress.abort();
    say(options, "");

    let window_us = origin_offset_us(origin, window_start)..origin_offset_us(origin, stop);
    let published = record.sent_us.lock().unwrap().iter().filter(|sent| window_us.contains(sent)).count() as u64;
    let mut latencies: Vec<u32> = record
        .deliveries
        .lock()
        .unwrap()
        .iter()
        .filter(|delivery| window_us.contains(&delivery.sent_us))
        .map(|delivery| delivery.latency_us)
        .collect();
    let delivered = latencies.len() as u64;
    let latency_ms = quantiles_ms(&mut latencies);
    devices.abort_all();
    subscribers.abort_all();
    while devices.join_next().await.is_some() {}
    while subscribers.join_next().await.is_some() {}
    let figures = FleetFigures {
        mode: target.mode,
        devices: fleet.devices.len(),
        subscribers: fleet.applications.len(),
        connected,
        connect_seconds,
        connect_cpu_seconds,
        connects_refused,
        published,
        delivered,
        latency_ms,
        rss_before_kib,
        rss_idle_kib,
        rss_publishing_kib,
        silent_cpu_cores,
        window_cpu_seconds,
        window_seconds: shape.window.as_secs_f64(),
        publishes_failed: match target.mode {
            FleetMode::Http => 0,
            FleetMode::Mqtt | FleetMode::Mosquitto | FleetMode::MosquittoWildcard => {
                record.unacknowledged.load(Ordering::Relaxed)
            }
        },
        http_errors: record.http_errors.load(Ordering::Relaxed)
            + match target.mode {
                FleetMode::Http => record.unacknowledged.load(Ordering::Relaxed),
                FleetMode::Mqtt | FleetMode::Mosquitto | FleetMode::MosquittoWildcard => 0,
            },
        connections_lost: record.connections_lost.load(Ordering::Relaxed),
        misrouted: record.misrouted.load(Ordering::Relaxed),
    };
    say(
        options,
        &format!(
            "  {name}: {} of {} delivered ({:.1} %), p99 {:.1} ms",
            figures.delivered,
            figures.published,
            figures.delivered_percent(),
            figures.latency_ms.1
        ),
    );
    Ok(figures)
}

pub(super) fn origin_offset_us(origin: Instant, at: Instant) -> u64 {
    at.saturating_duration_since(origin).as_micros() as u64
}

/// The `serve` flags of a fleet's Tessera on `data_dir`.
pub(super) fn serve_args(data_dir: &str) -> Vec<String> {
    ["serve", "--data-dir", data_dir, "--http-addr", "127.0.0.1:0", "--mqtt-addr", "127.0.0.1:0"]
        .into_iter()
        .chain(super::NEVER_REACHED_QUOTAS)
        .map(str::to_owned)
        .collect()
}

pub(super) async fn start_tessera(data_dir: &Path) -> anyhow::Result<ChildServer> {
    let args = serve_args(&data_dir.to_string_lossy());
    ChildServer::start(&args.iter().map(String::as_str).collect::<Vec<_>>(), &[]).await
}

/// Checks that this process may hold the fleet's connections, raising its soft limit first.
pub(super) fn check_descriptors(options: &Options, devices: usize, subscribers: usize) -> anyhow::Result<()> {
    let limit = raise_open_file_limit()?;
    let needed = (devices + subscribers + 256) as u64;
    if limit < needed {
        bail!("{devices} devices need about {needed} open files; this process may have {limit} (raise `ulimit -Hn`)");
    }
    say(options, &format!("open-file limit {limit} (the servers inherit it)"));
    Ok(())
}

/// The ACL of the fleet for Mosquitto: each device may write its own topic, each application read its devices'.
fn mosquitto_acl(fleet: &Fleet) -> String {
    let mut acl = String::new();
    for device in &fleet.devices {
        acl.push_str(&format!("user {}\ntopic write /v1.6/devices/{}\n\n", device.token, device.label));
    }
    for application in &fleet.applications {
        acl.push_str(&format!("user {}\n", application.token));
        for device in &fleet.devices[application.devices.clone()] {
            acl.push_str(&format!("topic read /v1.6/devices/{}\n", device.label));
        }
        acl.push('\n');
    }
    acl
}

pub async fn run(options: &Options, shape: &FleetShape) -> anyhow::Result<()> {
    check_descriptors(options, shape.devices, shape.subscribers)?;
    let data_dir = tempfile_dir()?;
    say(options, &format!("starting Tessera (data in {}) to provision the fleet", data_dir.display()));
    let tessera = start_tessera(&data_dir).await?;
    say(
        options,
        &format!(
            "provisioning {} devices, each with its own device token, and {} applications",
            shape.devices, shape.subscribers
        ),
    );
    let fleet = provision(&tessera, &data_dir, shape.devices, shape.subscribers).await?;
    tessera.stop().await;
    say(options, &format!("  provisioned in {:.1} s", fleet.provisioning.as_secs_f64()));

    let mut results = Vec::new();
    let mut skipped = Vec::new();
    for mode in &shape.modes {
        match mode {
            FleetMode::Mqtt | FleetMode::Http => {
                // A fresh server for each run, on the same store: its memory before the fleet is its own.
                let tessera = start_tessera(&data_dir).await?;
                let target = Target {
                    mode: *mode,
                    pid: tessera.pid().context("Tessera has no pid")?,
                    mqtt: tessera.mqtt.context("Tessera printed no MQTT address")?,
                    http: Some(tessera.http),
                };
                let figures = run_fleet(options, shape, target, &fleet).await;
                tessera.stop().await;
                results.push(figures?);
            }
            FleetMode::Mosquitto | FleetMode::MosquittoWildcard => {
                if !mosquitto::available() {
                    say(
                        options,
                        &format!(
                            "Mosquitto skipped: {} or {} is not installed",
                            mosquitto::MOSQUITTO,
                            mosquitto::MOSQUITTO_PASSWD
                        ),
                    );
                    skipped.push(mode.name());
                    continue;
                }
                say(options, "starting Mosquitto with a password file and an ACL of the fleet");
                let users: Vec<(&str, &str)> = fleet
                    .devices
                    .iter()
                    .map(|device| (device.token.as_str(), device.token.as_str()))
                    .chain(
                        fleet
                            .applications
                            .iter()
                            .map(|application| (application.token.as_str(), application.token.as_str())),
                    )
                    .collect();
                let broker = Mosquitto::start(&data_dir.join("mosquitto"), &users, &mosquitto_acl(&fleet)).await?;
                let target = Target {
                    mode: *mode,
                    pid: broker.pid().context("Mosquitto has no pid")?,
                    mqtt: broker.address,
                    http: None,
                };
                let figures = run_fleet(options, shape, target, &fleet).await;
                broker.stop().await;
                results.push(figures?);
            }
        }
    }
    let _ = std::fs::remove_dir_all(&data_dir);
    report(options, shape, &fleet, &results, &skipped);
    Ok(())
}

fn report(options: &Options, shape: &FleetShape, fleet: &Fleet, results: &[FleetFigures], skipped: &[&str]) {
    let tessera = results.iter().find(|figures| figures.mode == FleetMode::Mqtt);
    let mosquitto = results.iter().find(|figures| figures.mode == FleetMode::Mosquitto);
    let ahead_on_latency = tessera.zip(mosquitto).map(|(ours, theirs)| ours.latency_ms.1 <= theirs.latency_ms.1);
    let memory_ratio = tessera.zip(mosquitto).map(|(ours, theirs)| {
        ours.kib_per_device(ours.rss_publishing_kib) / theirs.kib_per_device(theirs.rss_publishing_kib).max(0.1)
    });
    if options.json {
        let document = json!({
            "fleet": {
                "devices": shape.devices,
                "subscribers": shape.subscribers,
                "interval_seconds": shape.interval.as_secs_f64(),
                "warmup_seconds": shape.warmup.as_secs_f64(),
                "window_seconds": shape.window.as_secs_f64(),
                "provisioning_seconds": round(fleet.provisioning.as_secs_f64()),
                "provisioned": "applications' collections and ground tokens through the API; devices and device tokens straight into the store, 10 000 a transaction",
            },
            "targets": {
                "p99_ms": TARGET_P99_MS,
                "kib_per_device": TARGET_KIB_PER_DEVICE,
                "memory_ratio_to_mosquitto": TARGET_MEMORY_RATIO_TO_MOSQUITTO,
            },
            "servers": results.iter().map(FleetFigures::json).collect::<Vec<_>>(),
            "skipped": skipped,
            "tessera_ahead_of_mosquitto_on_p99": ahead_on_latency,
            "tessera_memory_per_device_to_mosquitto": memory_ratio.map(round),
        });
        println!("{document:#}");
        return;
    }
    let column = |text: String| format!("{text:>26}");
    let mut header = format!("\n{:<44}", "fleet figure");
    for figures in results {
        header.push_str(&column(figures.mode.name().to_owned()));
    }
    header.push_str(&column("target (issue 17)".to_owned()));
    println!("{header}");
    let row = |label: &str, cell: &dyn Fn(&FleetFigures) -> String, target: &str| {
        let mut line = format!("{label:<44}");
        for figures in results {
            line.push_str(&column(cell(figures)));
        }
        line.push_str(&column(target.to_owned()));
        println!("{line}");
    };
    row("connect rate (/s)", &|f| format!("{:.0}", f.connect_rate()), "");
    row("server CPU over the connect (s)", &|f| format!("{:.2}", f.connect_cpu_seconds), "");
    row(
        "readings delivered (% of published in window)",
        &|f| format!("{:.2} % of {}", f.delivered_percent(), f.published),
        "100 %",
    );
    row(
        "publish → delivery p50 / p99 / p999 (ms)",
        &|f| format!("{:.1} / {:.1} / {:.1}", f.latency_ms.0, f.latency_ms.1, f.latency_ms.2),
        "p99 ≤ 20",
    );
    row(
        "RSS per connected device idle / publishing (KiB)",
        &|f| format!("{:.1} / {:.1}", f.kib_per_device(f.rss_idle_kib), f.kib_per_device(f.rss_publishing_kib)),
        "≤ 16",
    );
    row("server CPU per reading delivered (µs)", &|f| format!("{:.0}", f.cpu_us_per_delivered()), "");
    row("server CPU, fleet connected and silent (cores)", &|f| format!("{:.3}", f.silent_cpu_cores), "");
    row(
        "errors: refused / publish failed / HTTP non-2xx",
        &|f| format!("{} / {} / {}", f.connects_refused, f.publishes_failed, f.http_errors),
        "0",
    );
    row("connections lost / misrouted deliveries", &|f| format!("{} / {}", f.connections_lost, f.misrouted), "0");
    if let (Some(ahead), Some(ratio)) = (ahead_on_latency, memory_ratio) {
        println!(
            "\nTessera MQTT against Mosquitto: {} on p99 latency (target: ahead); {ratio:.1} × its memory per device \
             while publishing (target ≤ {TARGET_MEMORY_RATIO_TO_MOSQUITTO:.0} ×)",
            if ahead { "ahead" } else { "behind" }
        );
    }
    for name in skipped {
        println!("{name}: skipped (not installed)");
    }
    println!(
        "{} devices ({} per application, {} applications), one reading each every {:.1} s, phases spread evenly; \
         {:.0} s silent, {:.0} s warm-up, {:.0} s measured; devices provisioned in {:.1} s (ground tokens through \
         the API, devices and device tokens straight into the store); MQTT publishes at QoS 1, subscriptions at QoS 0.",
        shape.devices,
        shape.devices / shape.subscribers.max(1),
        shape.subscribers,
        shape.interval.as_secs_f64(),
        shape.warmup.as_secs_f64(),
        shape.warmup.as_secs_f64(),
        shape.window.as_secs_f64(),
        fleet.provisioning.as_secs_f64()
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_and_payloads_give_device_and_send_time() {
        assert_eq!(device_of("/v1.6/devices/fleet-42/v/lv"), Some(42));
        assert_eq!(device_of("/v1.6/devices/fleet-7"), Some(7));
        assert_eq!(device_of("/v1.6/devices/other/v/lv"), None);
        assert_eq!(sent_time_of(br#"{"v": 123456}"#), Some(123456));
        assert_eq!(sent_time_of(b"123456.0"), Some(123456));
        assert_eq!(sent_time_of(b"none"), None);
    }
}
