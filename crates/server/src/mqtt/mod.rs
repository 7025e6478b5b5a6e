//! The MQTT server inside `tessera serve`: MQTT 3.1.1 and 5 on the `rmqtt-codec` codec, with every CONNECT,
//! PUBLISH and SUBSCRIBE judged by the one authorization path. The session speaks 3.1.1 packets; MQTT 5 ones are
//! translated at the edge (`v5.rs`). QoS 0 and 1 both ways, retained last states, persistent-session
//! subscriptions, keep-alive, and a connection whose token stops working closed within a second.
//!
//! CONNECT takes the token as each dialect puts it: Ubidots `username = token`; AllThingsTalk `username = token`
//! or `maker:<token>` (password anything); Horde consumers `username = collection id, password = token`.

pub mod topics;
pub mod v5;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use bytestring::ByteString;
use futures_util::{SinkExt, StreamExt};
use rmqtt_codec::types::Publish;
use rmqtt_codec::v3::{self, ConnectAck, ConnectAckReason, Packet, QoS, SubscribeReturnCode};
use rmqtt_codec::version::ProtocolVersion;
use rmqtt_codec::{MqttCodec, MqttPacket};
use serde_json::json;
use tessera_core::{Action, DeviceId, Label, Secret, Target, VariableId};
use tessera_store::Device;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tokio_util::codec::Framed;

use crate::app::{App, AppError};
use crate::data::Wait;
use crate::data::{device_target, variable_target};
use crate::hub::LiveReading;
use crate::time::rfc3339;
use crate::tls::Transport;
use crate::tokens::Caller;
use topics::{Inbound, Outbound};

const MAX_PACKET: u32 = 256 * 1024;
/// How long a client has to send CONNECT after opening the connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// A client that takes none of its deliveries for this long is disconnected (a slow consumer never holds its
/// connection's task, and with it the token recheck, for longer).
const STALLED_AFTER: Duration = Duration::from_secs(5);
/// Most topic filters one connection may hold; further ones are refused at SUBACK.
const MAX_SUBSCRIPTIONS: usize = 256;
/// Readings delivered before the connection's buffer is flushed and other work (its own packets) gets a turn.
const DELIVERIES_PER_WRITE: usize = 256;
/// Most devices whose last states a wildcard SUBSCRIBE is answered with.
const RETAINED_DEVICES: u64 = 1_000;

/// Most persistent sessions remembered at once; beyond it the oldest are forgotten.
const MAX_SESSIONS: usize = 10_000;

/// Messages kept for one persistent session while its client is away, at most; the oldest go first.
const MAX_QUEUED: usize = 1_000;
/// How long a persistent session collects messages for an absent client.
const SESSION_COLLECTS_FOR: Duration = Duration::from_secs(60 * 60);

/// A session's key: whose client ids these are, and the client id. Client ids are namespaced by credential, so a
/// token can neither take over another token's connection nor resume its session (and read what was kept for it).
type SessionKey = (Principal, String);

/// Who holds a session: for a login, the user (their access tokens rotate, their sessions stay theirs); for any
/// other token, the token itself (two device tokens of one creator reach different things).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Principal {
    User(tessera_core::UserId),
    Token(tessera_core::TokenId),
}

impl Principal {
    fn of(caller: &Caller) -> Principal {
        match (caller.record.kind, caller.record.creator) {
            (tessera_core::TokenKind::UserAccess, tessera_store::Creator::User(user)) => Principal::User(user),
            _ => Principal::Token(caller.record.id),
        }
    }
}
/// The filters a session holds, with their QoS.
type Filters = Vec<(String, QoS)>;
/// Messages waiting for a client: topic, payload, QoS.
type Queue = std::collections::VecDeque<(String, String, QoS)>;

/// A persistent session whose client is away: its subscriptions, and a task collecting the QoS 1 messages they
/// call for (authorized as they arrive, with the token judged again on its recheck schedule) until the client returns.
struct Kept {
    order: u64,
    filters: Filters,
    queue: Arc<std::sync::Mutex<Queue>>,
    collector: tokio::task::JoinHandle<()>,
}

impl Kept {
    /// Stops collecting and hands over the subscriptions and what was collected.
    fn resume(mut self) -> (Filters, Queue) {
        self.collector.abort();
        let queue = std::mem::take(&mut *self.queue.lock().unwrap_or_else(|poisoned| poisoned.into_inner()));
        (std::mem::take(&mut self.filters), queue)
    }
}

impl Drop for Kept {
    fn drop(&mut self) {
        self.collector.abort();
    }
}

/// The persistent sessions of clients that are away (`clean_session = false`), at most `MAX_SESSIONS`, and the
/// connections live now, so that a client connecting again with its id takes its earlier connection over.
#[derive(Default)]
struct Sessions {
    /// For the kept sessions' gauge and evictions.
    metrics: Arc<crate::metrics::Metrics>,
    kept: std::sync::Mutex<HashMap<SessionKey, Kept>>,
    live: std::sync::Mutex<HashMap<SessionKey, Takeover>>,
    counter: std::sync::atomic::AtomicU64,
}

/// How a live connection is asked to end, and how it tells it has (its session kept, if persistent).
struct Takeover {
    connection: u64,
    end: Arc<tokio::sync::Notify>,
    ended: watch::Receiver<bool>,
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sessions").finish_non_exhaustive()
    }
}

impl Sessions {
    /// Registers a new connection for `key`, first ending the one that held it (MQTT 3.1.1 §3.1.4): waits, briefly,
    /// until that one has ended and kept its session. Answers this connection's number, its end signal and the
    /// sender through which it reports having ended.
    async fn arrive(&self, key: &SessionKey) -> (u64, Arc<tokio::sync::Notify>, watch::Sender<bool>) {
        let previous = self.live.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).remove(key);
        if let Some(mut previous) = previous {
            previous.end.notify_one();
            let _ = tokio::time::timeout(Duration::from_secs(5), previous.ended.wait_for(|ended| *ended)).await;
        }
        let connection = self.counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let end = Arc::new(tokio::sync::Notify::new());
        let (ended_sender, ended) = watch::channel(false);
        let takeover = Takeover { connection, end: end.clone(), ended };
        self.live.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).insert(key.clone(), takeover);
        (connection, end, ended_sender)
    }

    /// Forgets a connection that ended, unless another has taken its key since.
    fn leave(&self, key: &SessionKey, connection: u64) {
        let mut live = self.live.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if live.get(key).is_some_and(|takeover| takeover.connection == connection) {
            live.remove(key);
        }
    }

    fn take(&self, key: &SessionKey) -> Option<Kept> {
        let mut kept = self.kept.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let taken = kept.remove(key);
        self.metrics.mqtt.sessions_kept.set(kept.len() as i64);
        taken
    }

    /// Keeps a session whose connection ended, and starts collecting for it.
    fn keep(&self, key: SessionKey, session: Session) {
        // The connection's own subscription to the hub carries on, so nothing published meanwhile is missed.
        let Session { app, caller, subscriptions, routing, live, outbox, .. } = session;
        let live = live.unwrap_or_else(|| app.hub.subscribe(crate::hub::Consumer::Mqtt));
        // What the connection had not written yet is kept too, as far as QoS 1 asks: the collector routes it first.
        let unsent: Vec<Arc<LiveReading>> = outbox.readings.into_iter().collect();
        let queue = Arc::new(std::sync::Mutex::new(Queue::new()));
        let collector = tokio::spawn(collect(app, caller, subscriptions.clone(), routing, queue.clone(), live, unsent));
        let order = self.counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut kept = self.kept.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if kept.len() >= MAX_SESSIONS {
            let oldest = kept.iter().min_by_key(|(_, kept)| kept.order).map(|(key, _)| key.clone());
            if let Some(oldest) = oldest {
                kept.remove(&oldest);
                self.metrics.mqtt.sessions_evicted.inc();
            }
        }
        kept.insert(key, Kept { order, filters: subscriptions, queue, collector });
        self.metrics.mqtt.sessions_kept.set(kept.len() as i64);
    }
}

/// Collects the QoS 1 messages an absent client's subscriptions call for.
async fn collect(
    app: App,
    mut caller: Caller,
    filters: Filters,
    mut routing: Routing,
    queue: Arc<std::sync::Mutex<Queue>>,
    mut live: crate::hub::Subscription,
    unsent: Vec<Arc<LiveReading>>,
) {
    let mut recheck = app.tokens.recheck_schedule(&caller);
    let until = Instant::now() + SESSION_COLLECTS_FOR;
    let keep = async |routing: &mut Routing, caller: &Caller, reading: &LiveReading| {
        for message in routing.messages(&app, caller, &filters, reading).await {
            if message.2 == QoS::AtMostOnce {
                continue;
            }
            let mut queue = queue.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            if queue.len() >= MAX_QUEUED {
                queue.pop_front();
                app.metrics.mqtt.dropped_session_queue.inc();
            }
            queue.push_back(message);
        }
    };
    for reading in unsent {
        keep(&mut routing, &caller, &reading).await;
    }
    loop {
        tokio::select! {
            reading = live.next() => {
                let Some(reading) = reading else { return };
                keep(&mut routing, &caller, &reading).await;
            }
            _ = recheck.due(&caller) => match app.tokens.reverify(&caller).await {
                Some(fresh) => caller = fresh,
                None => return,
            },
            _ = tokio::time::sleep_until(until) => return,
        }
    }
}

/// A socket MQTT is served on: plain, or MQTTS with `tls`.
pub struct Listener {
    pub tcp: TcpListener,
    pub tls: Option<TlsAcceptor>,
}

impl std::fmt::Debug for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // `TlsAcceptor` has no `Debug`; whether there is one is what matters.
        f.debug_struct("Listener").field("tcp", &self.tcp).field("tls", &self.tls.is_some()).finish()
    }
}

/// Accepts MQTT connections on every listener until `stopped` turns true. Persistent sessions are shared: a client
/// id resumes its session (or takes over its connection) whichever of MQTT and MQTTS it comes back on.
pub async fn serve(listeners: Vec<Listener>, app: App, stopped: watch::Receiver<bool>) {
    let sessions = Arc::new(Sessions { metrics: app.metrics.clone(), ..Sessions::default() });
    let loops =
        listeners.into_iter().map(|listener| accept_loop(listener, app.clone(), stopped.clone(), sessions.clone()));
    futures_util::future::join_all(loops).await;
}

async fn accept_loop(listener: Listener, app: App, stopped: watch::Receiver<bool>, sessions: Arc<Sessions>) {
    let name = if listener.tls.is_some() { "mqtts" } else { "mqtt" };
    let mut stop_signal = stopped.clone();
    // A failing accept (out of file descriptors) pauses, doubling to 1 s, instead of spinning on the failure.
    let mut failures = crate::accept::AcceptFailures::new(name);
    loop {
        tokio::select! {
            (stream, peer) = crate::accept::accept(&listener.tcp, &mut failures, app.metrics.listeners.accept_errors(name)) => {
                app.metrics.mqtt.accepted.inc();
                let app = app.clone();
                let stopped = stopped.clone();
                let sessions = sessions.clone();
                let tls = listener.tls.clone();
                tokio::spawn(async move {
                    // The handshake is done here, in the connection's task, within the time a client has to send
                    // CONNECT; a failed one is logged at debug.
                    let stream = match tls {
                        None => Transport::Plain(stream),
                        Some(acceptor) => {
                            let deadline = Instant::now() + CONNECT_TIMEOUT;
                            match crate::tls::handshake(&acceptor, stream, peer, name, deadline).await {
                                Some(stream) => stream,
                                None => return,
                            }
                        }
                    };
                    // A panic ends this client's connection only (each is a task of its own), and is said loudly.
                    let served = std::panic::AssertUnwindSafe(connection(stream, peer, app, stopped, sessions));
                    match futures_util::FutureExt::catch_unwind(served).await {
                        Ok(Ok(())) => {}
                        Ok(Err(reason)) => tracing::debug!(%peer, %reason, "mqtt connection ended"),
                        Err(_) => tracing::error!(%peer, "an mqtt connection's task panicked; that connection was closed"),
                    }
                });
            }
            _ = stop_signal.changed() => break,
        }
    }
}

/// A client connection. The session speaks MQTT 3.1.1 packets; for an MQTT 5 client they are translated at this
/// edge (`v5.rs`), so every rule is written once.
struct Connection {
    framed: Framed<Transport, MqttCodec>,
    version: ProtocolVersion,
    /// Filters in the last MQTT 5 UNSUBSCRIBE, whose acknowledgement lists one reason per filter.
    unsubscribed: usize,
    /// Where the small read and write buffers made for this connection begin (`release_buffers`).
    small_buffers: (usize, usize),
}

/// What a connection's read and write buffers hold while it is idle, each; a larger packet grows them for as
/// long as it takes.
const IDLE_BUFFER: usize = 256;
/// What the read buffer can take in one read while a client streams (a packet's tail is waiting in it).
const STREAMING_READ: usize = 8 * 1024;
/// Queued deliveries are written once the write buffer holds this much (or at the end of a burst).
const WRITE_BURST: usize = 8 * 1024;

impl Connection {
    fn new(framed: Framed<Transport, MqttCodec>, version: ProtocolVersion) -> Connection {
        let small_buffers = (framed.read_buffer().as_ptr() as usize, framed.write_buffer().as_ptr() as usize);
        Connection { framed, version, unsubscribed: 0, small_buffers }
    }

    /// Gives back buffers a large packet or a burst of deliveries grew, once they are empty again, so an idle
    /// connection holds `IDLE_BUFFER` each way whatever it did before. A buffer's capacity does not tell: one
    /// read or written through a large packet may show a few bytes of capacity and still hold the whole large
    /// allocation behind its offset. So a buffer that is not a view into the small allocation made for it is
    /// replaced; small packets never leave it, and cost nothing here.
    fn release_buffers(&mut self) {
        fn release(buffer: &mut bytes::BytesMut, small: &mut usize) {
            let offset = (buffer.as_ptr() as usize).wrapping_sub(*small);
            if buffer.is_empty() && offset > IDLE_BUFFER {
                *buffer = bytes::BytesMut::with_capacity(IDLE_BUFFER);
                *small = buffer.as_ptr() as usize;
            }
        }
        release(self.framed.read_buffer_mut(), &mut self.small_buffers.0);
        release(self.framed.write_buffer_mut(), &mut self.small_buffers.1);
        // A read that ended inside a packet means the client is sending more than one read took: the next reads
        // take up to `STREAMING_READ` at once. Kept at `IDLE_BUFFER`, a publisher sending as fast as it can cost a
        // `recv` for every few packets (QoS 0 delivered to one subscriber fell from 178 k/s to 113 k/s in the
        // bench); the buffer goes back to `IDLE_BUFFER` as soon as it is empty again.
        let read = self.framed.read_buffer_mut();
        if !read.is_empty() && read.capacity() - read.len() < STREAMING_READ / 2 {
            read.reserve(STREAMING_READ);
        }
    }

    async fn next(&mut self) -> Option<Result<Packet, String>> {
        match self.framed.next().await? {
            Ok((MqttPacket::V3(packet), _)) => Some(Ok(packet)),
            Ok((MqttPacket::V5(packet), _)) => Some(v5::incoming(packet, &mut self.unsubscribed)),
            Ok((MqttPacket::Version(_), _)) => Some(Err("unexpected packet".into())),
            Err(error) => Some(Err(format!("malformed packet: {error}"))),
        }
    }
}

async fn send(connection: &mut Connection, packet: Packet) -> Result<(), String> {
    feed(connection, packet).await?;
    connection.framed.flush().await.map_err(|error| format!("send failed: {error}"))
}

/// Queues a packet in the connection's write buffer without flushing it (the buffer is flushed when it fills, or
/// by the next `send` or `flush`): a burst of deliveries leaves in a few writes instead of one each.
async fn feed(connection: &mut Connection, packet: Packet) -> Result<(), String> {
    let packet = match connection.version {
        ProtocolVersion::MQTT3 => MqttPacket::V3(packet),
        ProtocolVersion::MQTT5 => MqttPacket::V5(v5::outgoing(packet, connection.unsubscribed)),
    };
    connection.framed.feed(packet).await.map_err(|error| format!("send failed: {error}"))
}

/// The PUBACK of a QoS 1 publish dropped for its token's quota: MQTT 5's carries reason code 0x97 (Quota
/// exceeded), MQTT 3.1.1's is a plain acknowledgement (it has no way to refuse one publish).
async fn acknowledge_over_quota(connection: &mut Connection, packet_id: std::num::NonZeroU16) -> Result<(), String> {
    match connection.version {
        ProtocolVersion::MQTT3 => send(connection, Packet::PublishAck { packet_id }).await,
        ProtocolVersion::MQTT5 => {
            let packet = MqttPacket::V5(v5::quota_exceeded(packet_id));
            connection.framed.send(packet).await.map_err(|error| format!("send failed: {error}"))
        }
    }
}

async fn refuse(connection: &mut Connection, reason: ConnectAckReason) -> Result<(), String> {
    send(connection, Packet::ConnectAck(ConnectAck { return_code: reason, session_present: false })).await?;
    Err(format!("connection refused: {}", reason.reason()))
}

/// The codec a connection reads and writes with once its CONNECT has told the protocol version (the version is
/// read first with `rmqtt_codec::version::VersionCodec`). Public so that the fuzz targets decode bytes exactly as a
/// connection does.
pub fn session_codec(version: ProtocolVersion) -> MqttCodec {
    match version {
        ProtocolVersion::MQTT3 => MqttCodec::V3(v3::Codec::new(MAX_PACKET)),
        ProtocolVersion::MQTT5 => MqttCodec::V5(rmqtt_codec::v5::Codec::new(MAX_PACKET, MAX_PACKET)),
    }
}

/// The token in a CONNECT, as each dialect puts it.
async fn authenticate(app: &App, connect: &v3::Connect, peer: SocketAddr) -> Option<Caller> {
    let username = connect.username.as_ref().map(|name| name.to_string()).unwrap_or_default();
    let username = username.strip_prefix("maker:").unwrap_or(&username).to_owned();
    let password = connect.password.as_ref().and_then(|password| std::str::from_utf8(password).ok()).unwrap_or("");
    for candidate in [username.as_str(), password] {
        if Secret::parse(candidate.trim()).is_ok() {
            // The connection takes nothing from the token's quota; each PUBLISH on it does (`Session::handle`).
            return app.tokens.verify_connection(candidate.trim(), Some(peer.ip())).await.ok();
        }
    }
    None
}

async fn connection(
    stream: Transport,
    peer: SocketAddr,
    app: App,
    mut stopped: watch::Receiver<bool>,
    sessions: Arc<Sessions>,
) -> Result<(), String> {
    // Small buffers, grown by the codec as packets need and given back once idle (`Connection::release_buffers`):
    // tokio-util's default, 8 KiB each way, was most of an idle device's memory.
    let mut framed = Framed::with_capacity(stream, MqttCodec::Version(rmqtt_codec::version::VersionCodec), IDLE_BUFFER);
    framed.set_backpressure_boundary(WRITE_BURST);
    let version = match tokio::time::timeout(CONNECT_TIMEOUT, framed.next()).await {
        Ok(Some(Ok((MqttPacket::Version(version), _)))) => version,
        _ => {
            app.metrics.mqtt.refused_no_connect.inc();
            return Err("no CONNECT".into());
        }
    };
    *framed.codec_mut() = session_codec(version);
    let mut framed = Connection::new(framed, version);
    let connect = match tokio::time::timeout(CONNECT_TIMEOUT, framed.framed.next()).await {
        Ok(Some(Ok((MqttPacket::V3(Packet::Connect(connect)), _)))) => connect,
        Ok(Some(Ok((MqttPacket::V5(rmqtt_codec::v5::Packet::Connect(connect)), _)))) => v5::connect(*connect),
        _ => {
            app.metrics.mqtt.refused_no_connect.inc();
            return Err("no CONNECT".into());
        }
    };
    let Some(caller) = authenticate(&app, &connect, peer).await else {
        app.metrics.mqtt.refused_bad_credentials.inc();
        return refuse(&mut framed, ConnectAckReason::BadUserNameOrPassword).await;
    };
    if caller.authorize_listing().is_err() {
        // The core's rule for credentials that read no data at all (an API key, a refresh token, a token whose
        // creator reaches nothing): such a credential has no business on the data channel.
        app.metrics.mqtt.refused_not_authorized.inc();
        return refuse(&mut framed, ConnectAckReason::NotAuthorized).await;
    }
    // A persistent session resumes the subscriptions it had, each judged again for this connection's caller.
    // A client without an id gets one of its own (MQTT 3.1.1 §3.1.3.1), so it takes nobody over.
    let client_id = match connect.client_id.is_empty() {
        true => format!("\u{0}anonymous-{}", sessions.counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed)),
        false => connect.client_id.to_string(),
    };
    let key = (Principal::of(&caller), client_id);
    // Subscribed before an earlier connection or a kept session stops listening, so that a reading published
    // while one hands over to the other reaches this client (twice at worst, which QoS 1 allows). A clean session
    // resumes no subscriptions, so it has nothing to hear yet (and a connecting device skips the subscription).
    let live = (!connect.clean_session).then(|| app.hub.subscribe(crate::hub::Consumer::Mqtt));
    let (connection, end, ended) = sessions.arrive(&key).await;
    let resumed = sessions.take(&key).filter(|_| !connect.clean_session);
    let session_present = resumed.is_some();
    let (kept_filters, queued) = resumed.map(Kept::resume).unwrap_or_default();
    let mut subscriptions = Vec::new();
    for (filter, qos) in kept_filters {
        if may_subscribe(&app, &caller, &filter).await {
            subscriptions.push((filter, qos));
        }
    }
    let accepted = ConnectAck { return_code: ConnectAckReason::ConnectionAccepted, session_present };
    send(&mut framed, Packet::ConnectAck(accepted)).await?;
    let _connected = Connected::count(&app.metrics);
    tracing::debug!(%peer, token = %caller.record.id, session_present, "mqtt client connected");
    // A connection that subscribes to nothing (a device that only publishes) does not hear the hub at all.
    let live = live.filter(|_| !subscriptions.is_empty());
    let mut session = Session {
        app,
        caller,
        framed,
        subscriptions,
        routing: Routing::default(),
        last_packet_id: 0,
        live,
        throttled: Throttled::default(),
        outbox: Outbox::default(),
    };
    // What came for a persistent session while its client was away goes first.
    for (topic, payload, qos) in queued {
        session.publish(topic, payload, qos, false).await?;
    }
    let outcome = session.run(connect.keep_alive, &mut stopped, &end).await;
    if !connect.clean_session && !connect.client_id.is_empty() {
        sessions.keep(key.clone(), session);
    }
    sessions.leave(&key, connection);
    let _ = ended.send(true);
    outcome
}

/// A connection past its CONNACK, counted in `tessera_mqtt_connections` while it lives, however it ends.
struct Connected(Arc<crate::metrics::Metrics>);

impl Connected {
    fn count(metrics: &Arc<crate::metrics::Metrics>) -> Connected {
        metrics.mqtt.connected.inc();
        Connected(metrics.clone())
    }
}

impl Drop for Connected {
    fn drop(&mut self) {
        self.0.mqtt.connected.dec();
    }
}

struct Session {
    app: App,
    caller: Caller,
    framed: Connection,
    /// Granted filters with their QoS.
    subscriptions: Vec<(String, QoS)>,
    /// The last packet id used for a QoS 1 delivery.
    last_packet_id: u16,
    routing: Routing,
    /// Readings from the hub, from before the CONNACK (or the first granted SUBSCRIBE) until the connection ends,
    /// and on, if its session is kept; `None` while the connection subscribes to nothing, so that publishers are
    /// not woken for every reading.
    live: Option<crate::hub::Subscription>,
    /// Publishes dropped for the token's quota, for the log.
    throttled: Throttled,
    /// Deliveries waiting to be written to the client.
    outbox: Outbox,
}

/// Deliveries most one connected session holds while its client reads slower than they come; beyond it the
/// oldest go, counted (`session_queue_full`) and said in the log at most once a minute.
const SESSION_QUEUE: usize = 1_000;

/// A connected session's own queue of readings it may read, bounded at `SESSION_QUEUE`. Readings, not messages:
/// they are described and their payloads made only when they are written, so a client slower than its
/// subscriptions costs nothing for the readings it loses (made eagerly, a flood's payloads were formatted and
/// then dropped: QoS 0 delivered to one subscriber fell from 178 k/s to 113 k/s in the bench).
#[derive(Debug)]
struct Outbox {
    readings: std::collections::VecDeque<Arc<LiveReading>>,
    drops: crate::hub::DropReport,
}

impl Default for Outbox {
    fn default() -> Outbox {
        Outbox {
            readings: std::collections::VecDeque::new(),
            drops: crate::hub::DropReport::new(crate::hub::Consumer::Mqtt, "session"),
        }
    }
}

impl Outbox {
    fn push(&mut self, reading: Arc<LiveReading>, metrics: &crate::metrics::Metrics) {
        if self.readings.len() >= SESSION_QUEUE {
            self.readings.pop_front();
            metrics.mqtt.dropped_session_queue.inc();
            self.drops.note(1);
        }
        self.readings.push_back(reading);
    }
}

/// How often a connection says in the log that it loses publishes to its token's quota, at most.
const THROTTLED_LOG_EVERY: Duration = Duration::from_secs(60);

/// Publishes a connection dropped for its token's quota since it last said so in the log (a device over its
/// quota would otherwise write a line per message).
#[derive(Debug, Default)]
struct Throttled {
    since_logged: u64,
    logged_at: Option<Instant>,
}

impl Throttled {
    fn note(&mut self, caller: &Caller, quota: tessera_core::Quota) {
        self.since_logged += 1;
        let now = Instant::now();
        if self.logged_at.is_none_or(|at| now.duration_since(at) >= THROTTLED_LOG_EVERY) {
            tracing::info!(
                token = %caller.record.id,
                %quota,
                dropped = self.since_logged,
                "mqtt publishes over the token's quota were dropped"
            );
            self.since_logged = 0;
            self.logged_at = Some(now);
        }
    }
}

/// Variables whose routes one connection keeps at most; beyond it they are all worked out again as readings come
/// (an account-wide subscriber would otherwise hold a route for every variable of the account).
const ROUTES_KEPT: usize = 4_096;

/// Turns a new reading into the messages a client's subscriptions call for. Devices and variables are described
/// from the node's shared live descriptions (`DataService::live_device`), not kept here.
#[derive(Default)]
struct Routing {
    /// Where each variable's readings go for the subscriptions held: the topics that match one, with the QoS.
    /// Made at a variable's first reading (every reading of a variable has the same topics: labels do not change)
    /// and forgotten when the subscriptions change, so a reading is not matched against every filter again.
    routes: HashMap<VariableId, Vec<(String, Outbound, QoS)>>,
}

/// Where a live reading lies, for `authorize`: from the ids the reading carries (the writer put them there from
/// the records it stored), so readability is decided before anything is read for the reading. The same target
/// as `variable_target` of its variable.
fn live_target(reading: &LiveReading) -> Target {
    Target::variable(reading.account, reading.collection, reading.device, reading.reading.variable)
}

impl Routing {
    /// Whether a reading may call for messages: the caller subscribes, may read it, and its variable is not known
    /// to match none of the subscriptions. From memory only: no store read, no payload.
    fn may_deliver(&self, caller: &Caller, subscriptions: &[(String, QoS)], reading: &LiveReading) -> bool {
        !subscriptions.is_empty()
            && reading.account == caller.account()
            && caller.authorize(Action::Read, &live_target(reading)).is_ok()
            && self.routes.get(&reading.reading.variable).is_none_or(|routes| !routes.is_empty())
    }

    /// `(topic, payload, QoS)` of every message the subscriptions call for, if the caller may read the reading.
    /// A reading the caller may not read, or that no subscription wants, costs no store read and no lookup.
    async fn messages(
        &mut self,
        app: &App,
        caller: &Caller,
        subscriptions: &[(String, QoS)],
        reading: &LiveReading,
    ) -> Vec<(String, String, QoS)> {
        if !self.may_deliver(caller, subscriptions, reading) {
            return Vec::new();
        }
        let variable = reading.reading.variable;
        let device = match self.routes.get(&variable) {
            Some(routes) if routes.is_empty() => return Vec::new(),
            // Only a Horde message carries the device's record (its name and tags, current as of the last change).
            Some(routes) if !routes.iter().any(|(_, kind, _)| *kind == Outbound::HordeMessage) => None,
            Some(_) => Some(app.data.live_device(reading.account, reading.device).await),
            None => {
                let Some(device) = app.data.live_device(reading.account, reading.device).await else {
                    return Vec::new();
                };
                let Some(described) = app.data.live_variable(reading.account, variable).await else {
                    return Vec::new();
                };
                if self.routes.len() >= ROUTES_KEPT {
                    self.routes.clear();
                }
                let topics = topics::outbound_topics(
                    &reading.collection.to_string(),
                    &device.id.to_string(),
                    device.label.as_str(),
                    described.label.as_str(),
                );
                let routes = topics
                    .into_iter()
                    .filter_map(|(topic, kind)| {
                        let qos = subscribed_qos(subscriptions, &topic)?;
                        Some((topic, kind, qos))
                    })
                    .collect();
                self.routes.insert(variable, routes);
                Some(Some(device))
            }
        };
        let device = match device {
            Some(Some(device)) => Some(device),
            // The device is gone: nothing to describe its readings with.
            Some(None) => return Vec::new(),
            None => None,
        };
        let Some(routes) = self.routes.get(&variable) else { return Vec::new() };
        routes
            .iter()
            .filter_map(|(topic, kind, qos)| {
                let payload = payload(kind, device.as_deref(), &reading.reading)?;
                Some((topic.clone(), payload, *qos))
            })
            .collect()
    }

    /// Forgets where readings go, after the subscriptions changed.
    fn subscriptions_changed(&mut self) {
        self.routes.clear();
    }
}

/// The highest QoS among the subscriptions matching `topic`, if any matches.
fn subscribed_qos(subscriptions: &[(String, QoS)], topic: &str) -> Option<QoS> {
    subscriptions
        .iter()
        .filter(|(filter, _)| topics::matches(filter, topic))
        .map(|(_, qos)| *qos)
        .max_by_key(|qos| *qos as u8)
}

impl Session {
    async fn run(
        &mut self,
        keep_alive: u16,
        stopped: &mut watch::Receiver<bool>,
        taken_over: &tokio::sync::Notify,
    ) -> Result<(), String> {
        // A client silent for one and a half keep-alive periods is gone (MQTT 3.1.1 §3.1.2.10).
        let allowance = (keep_alive > 0).then(|| Duration::from_millis(u64::from(keep_alive) * 1500));
        // One timer for the connection, moved on only when it fires: a packet notes when it was heard, and a timer
        // reset at every packet was a timer-wheel update per message of every connection.
        let mut heard_at = Instant::now();
        let mut silence = Box::pin(tokio::time::sleep(allowance.unwrap_or_default()));
        // Heard only once the connection subscribes to something: a command would otherwise wake every connected
        // device.
        let mut commands = None;
        let mut recheck = self.app.tokens.recheck_schedule(&self.caller);
        loop {
            self.framed.release_buffers();
            if commands.is_none() && !self.subscriptions.is_empty() {
                commands = Some(self.app.hub.subscribe_commands());
            }
            tokio::select! {
                packet = self.framed.next() => {
                    let packet = match packet {
                        Some(Ok(packet)) => packet,
                        Some(Err(reason)) => return Err(reason),
                        None => return Ok(()),
                    };
                    heard_at = Instant::now();
                    if !self.handle(packet).await? {
                        return Ok(());
                    }
                }
                reading = next_live(&mut self.live) => {
                    let Some(reading) = reading else { return Ok(()) };
                    self.route(reading);
                    // Whatever else the hub already holds goes into the same write.
                    for _ in 1..DELIVERIES_PER_WRITE {
                        let Some(reading) = self.live.as_mut().and_then(|live| live.try_next()) else { break };
                        self.route(reading);
                    }
                }
                _ = std::future::ready(()), if !self.outbox.readings.is_empty() => self.write_outbox().await?,
                command = next_command(&mut commands) => match command {
                    Ok(command) => {
                        let metrics = self.app.metrics.clone();
                        within(STALLED_AFTER, &metrics.mqtt.slow_clients, self.deliver_command(&command)).await?
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(missed)) => {
                        tracing::warn!(missed, token = %self.caller.record.id, "mqtt client too slow for commands");
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return Ok(()),
                },
                _ = silence.as_mut(), if allowance.is_some() => {
                    let until = heard_at + allowance.unwrap_or_default();
                    if until <= Instant::now() {
                        return Err("keep-alive expired".into());
                    }
                    silence.as_mut().reset(until);
                }
                _ = recheck.due(&self.caller) => {
                    match self.app.tokens.reverify(&self.caller).await {
                        Some(fresh) => self.caller = fresh,
                        None => return Err("the token no longer works".into()),
                    }
                }
                _ = stopped.changed() => return Ok(()),
                _ = taken_over.notified() => return Err("another connection took the client id over".into()),
            }
        }
    }

    /// Handles one packet; `false` when the client disconnects.
    async fn handle(&mut self, packet: Packet) -> Result<bool, String> {
        match packet {
            Packet::Publish(publish) => {
                self.app.metrics.mqtt.received.inc();
                let packet_id = publish.packet_id;
                let qos = publish.qos;
                if qos == QoS::ExactlyOnce {
                    // Not stored rather than stored without the PUBREC handshake (a resend would store it twice).
                    return Err("QoS 2 publishes are not supported; use QoS 0 or 1".into());
                }
                // One unit of the token's quota, on the counter its HTTP requests take from too. Over it, the
                // publish is dropped (and counted as throttled) and the connection stays open: MQTT 5 answers a QoS 1
                // publish with reason code 0x97 (Quota exceeded); MQTT 3.1.1 cannot refuse one, and a QoS 1 publish
                // is acknowledged all the same, so the client moves on instead of holding it in flight and sending it
                // again (which would only meet the quota again). QoS 0 owes no answer.
                if let crate::quota::Charge::Counted { quota, standing } = self.app.tokens.charge(&self.caller)
                    && !standing.allowed
                {
                    self.throttled.note(&self.caller, quota);
                    self.app.metrics.mqtt.dropped_quota.inc();
                    if let (QoS::AtLeastOnce, Some(packet_id)) = (qos, packet_id) {
                        acknowledge_over_quota(&mut self.framed, packet_id).await?;
                    }
                    return Ok(true);
                }
                if let Err(error) = self.ingest(&publish).await {
                    // MQTT 3.1.1 has no way to refuse one publish: a refused one ends the connection.
                    return Err(format!("publish to '{}' refused: {error}", publish.topic));
                }
                if let (QoS::AtLeastOnce, Some(packet_id)) = (qos, packet_id) {
                    send(&mut self.framed, Packet::PublishAck { packet_id }).await?;
                }
                Ok(true)
            }
            Packet::Subscribe { packet_id, topic_filters } => {
                let mut status = Vec::with_capacity(topic_filters.len());
                let mut granted_filters = Vec::new();
                for (filter, qos) in topic_filters {
                    // Let other tasks run between filters: a packet may hold thousands.
                    tokio::task::yield_now().await;
                    let already = self.subscriptions.iter().any(|(existing, _)| existing.as_str() == &*filter);
                    if !already && self.subscriptions.len() >= MAX_SUBSCRIPTIONS {
                        status.push(SubscribeReturnCode::Failure);
                        continue;
                    }
                    if may_subscribe(&self.app, &self.caller, &filter).await {
                        // Heard from now on, before the retained states are read: nothing falls in between.
                        if self.live.is_none() {
                            self.live = Some(self.app.hub.subscribe(crate::hub::Consumer::Mqtt));
                        }
                        let granted = if qos == QoS::AtMostOnce { QoS::AtMostOnce } else { QoS::AtLeastOnce };
                        self.subscriptions.retain(|(existing, _)| existing.as_str() != &*filter);
                        self.subscriptions.push((filter.to_string(), granted));
                        self.routing.subscriptions_changed();
                        // Retained states go once per new filter, not again for one already held.
                        if !already && !granted_filters.iter().any(|held: &String| held.as_str() == &*filter) {
                            granted_filters.push(filter.to_string());
                        }
                        status.push(SubscribeReturnCode::Success(granted));
                    } else {
                        status.push(SubscribeReturnCode::Failure);
                    }
                }
                send(&mut self.framed, Packet::SubscribeAck { packet_id, status }).await?;
                for filter in granted_filters {
                    self.send_retained(&filter).await?;
                }
                Ok(true)
            }
            Packet::Unsubscribe { packet_id, topic_filters } => {
                self.subscriptions
                    .retain(|(existing, _)| !topic_filters.iter().any(|filter| &**filter == existing.as_str()));
                self.routing.subscriptions_changed();
                send(&mut self.framed, Packet::UnsubscribeAck { packet_id }).await?;
                Ok(true)
            }
            Packet::PingRequest => {
                send(&mut self.framed, Packet::PingResponse).await?;
                Ok(true)
            }
            Packet::PublishAck { .. } => Ok(true),
            Packet::Disconnect => Ok(false),
            other => Err(format!("unexpected packet {}", other.packet_type())),
        }
    }

    /// Stores what a client published, through the same path as HTTP.
    async fn ingest(&mut self, publish: &Publish) -> Result<(), AppError> {
        let body: serde_json::Value = serde_json::from_slice(&publish.payload)
            .map_err(|error| AppError::BadRequest(format!("the payload is not JSON: {error}")))?;
        // QoS 0 is owed no acknowledgement: the connection goes on to its next message once this one is queued for
        // the writer (in order), instead of waiting for each commit, which made a connection latency-bound.
        let wait = if publish.qos == QoS::AtMostOnce { Wait::Queued } else { Wait::Committed };
        match topics::inbound(&publish.topic) {
            // The dialects' body parsers (pure, shared with their HTTP routes), then the data service stores it: the
            // same authorization and the same checks as over HTTP.
            Some(Inbound::UbidotsDevice { label }) => {
                let label = Label::parse(label).map_err(|error| AppError::bad_label("device", error))?;
                let series = crate::http::ubidots::devices::device_series(&body, crate::time::now_ms())?;
                self.app.data.write_device_series(&self.caller, &label, series, wait).await?;
            }
            Some(Inbound::AssetState { device, asset }) => {
                let (_, dot) = crate::http::allthingstalk::assets::state_dot(&body)?;
                let (device, asset) = crate::http::allthingstalk::assets::state_path(device, asset)?;
                self.app.data.write_state(&self.caller, device, &asset, dot, wait).await?;
            }
            None => return Err(AppError::BadRequest(format!("no dialect publishes to '{}'", publish.topic))),
        }
        Ok(())
    }

    /// Queues a new reading in the session's own queue, if it may call for messages.
    fn route(&mut self, reading: Arc<LiveReading>) {
        if self.routing.may_deliver(&self.caller, &self.subscriptions, &reading) {
            self.outbox.push(reading, &self.app.metrics);
        }
    }

    /// Writes the next burst of queued deliveries to the client, and meanwhile keeps taking readings from the hub
    /// into the session's queue, so a client slow to read loses only its own oldest messages (counted), never the
    /// hub's for itself. A client that takes nothing for `STALLED_AFTER` is let go: this task is held in the write
    /// meanwhile, where neither the keep-alive nor the token recheck runs.
    async fn write_outbox(&mut self) -> Result<(), String> {
        let mut packets = Vec::with_capacity(self.outbox.readings.len().min(DELIVERIES_PER_WRITE));
        while packets.len() < DELIVERIES_PER_WRITE {
            let Some(reading) = self.outbox.readings.pop_front() else { break };
            for (topic, payload, qos) in
                self.routing.messages(&self.app, &self.caller, &self.subscriptions, &reading).await
            {
                packets.push(Packet::Publish(Box::new(self.publication(topic, payload, qos, false))));
            }
        }
        let metrics = self.app.metrics.clone();
        let Session { caller, framed, subscriptions, routing, live, outbox, .. } = self;
        let write = within(STALLED_AFTER, &metrics.mqtt.slow_clients, async {
            for packet in packets {
                feed(framed, packet).await?;
            }
            framed.framed.flush().await.map_err(|error| format!("send failed: {error}"))
        });
        tokio::pin!(write);
        loop {
            tokio::select! {
                biased;
                written = &mut write => return written,
                reading = next_live(live) => {
                    let Some(reading) = reading else { return Ok(()) };
                    if routing.may_deliver(caller, subscriptions, &reading) {
                        outbox.push(reading, &metrics);
                    }
                }
            }
        }
    }

    /// After a SUBSCRIBE, sends the last state of every variable whose topics the filter matches, flagged
    /// retained: a subscriber learns the current state without waiting for the next one. A filter naming one
    /// device looks at that device; a wildcard in the device's place looks at the devices the caller may list
    /// (at most `RETAINED_DEVICES` of them).
    async fn send_retained(&mut self, filter: &str) -> Result<(), String> {
        let account = self.caller.account();
        let levels: Vec<&str> = filter.split('/').collect();
        let devices: Vec<Device> = match levels.as_slice() {
            ["device", "+", ..] | ["", "v1.6", "devices", "+", ..] | ["v1.6", "devices", "+", ..] => {
                let Ok(Some(visible)) = crate::data::visible_devices(&self.caller) else { return Ok(()) };
                let page = tessera_store::Page { number: 1, size: RETAINED_DEVICES };
                self.app
                    .data
                    .list_devices(&self.caller, &visible, page)
                    .await
                    .map(|devices| devices.items)
                    .unwrap_or_default()
            }
            ["device", id, ..] => match id.parse::<DeviceId>() {
                Ok(id) => self
                    .app
                    .data
                    .device_by_id(&self.caller, Action::Read, id)
                    .await
                    .ok()
                    .map(|(device, _)| device)
                    .into_iter()
                    .collect(),
                Err(_) => Vec::new(),
            },
            ["", "v1.6", "devices", label, ..] | ["v1.6", "devices", label, ..] => match Label::parse(label) {
                Ok(label) => self
                    .app
                    .data
                    .device_by_label(account, &label)
                    .await
                    .ok()
                    .map(|device| (*device).clone())
                    .into_iter()
                    .collect(),
                Err(_) => Vec::new(),
            },
            _ => Vec::new(),
        };
        for device in devices {
            let filter_by_device = tessera_store::DeviceFilter::device(device.id);
            let Ok(variables) =
                self.app.data.list_variables(&self.caller, &filter_by_device, tessera_store::Page::ALL).await
            else {
                continue;
            };
            for variable in variables.items {
                let Ok(permit) = self.caller.authorize(Action::Read, &variable_target(&variable)) else {
                    continue;
                };
                let topics = topics::outbound_topics(
                    &device.collection.to_string(),
                    &device.id.to_string(),
                    device.label.as_str(),
                    variable.label.as_str(),
                );
                let wanted: Vec<_> = topics
                    .into_iter()
                    .filter(|(topic, kind)| *kind != Outbound::HordeMessage && topics::matches(filter, topic))
                    .collect();
                if wanted.is_empty() {
                    continue;
                }
                let Ok(Some(last)) = self.app.data.last_reading(&permit, &variable).await else { continue };
                for (topic, kind) in wanted {
                    let qos = subscribed_qos(&self.subscriptions, &topic).unwrap_or(QoS::AtMostOnce);
                    let Some(payload) = payload(&kind, Some(&device), &last) else { continue };
                    self.publish(topic, payload, qos, true).await?;
                }
            }
        }
        Ok(())
    }

    /// Sends a command to a subscriber of its actuator's command topic, if the caller may read the actuator.
    async fn deliver_command(&mut self, command: &crate::hub::LiveCommand) -> Result<(), String> {
        if self.subscriptions.is_empty() || command.account != self.caller.account() {
            return Ok(());
        }
        // Decided from the ids the command carries, before its variable is looked up.
        let target = Target::variable(command.account, command.collection, command.device, command.variable);
        if self.caller.authorize(Action::Read, &target).is_err() {
            return Ok(());
        }
        let Some(variable) = self.app.data.live_variable(command.account, command.variable).await else {
            return Ok(());
        };
        let topic = format!("device/{}/asset/{}/command", command.device, variable.label);
        if let Some(qos) = subscribed_qos(&self.subscriptions, &topic) {
            let payload = json!({"value": command.value, "at": rfc3339(command.at_ms)}).to_string();
            self.publish(topic, payload, qos, false).await?;
        }
        Ok(())
    }

    /// Sends a PUBLISH at `qos` (0 or 1; QoS 1 gets a packet id, and the client's PUBACK is taken as it comes).
    async fn publish(&mut self, topic: String, payload: String, qos: QoS, retain: bool) -> Result<(), String> {
        let publish = self.publication(topic, payload, qos, retain);
        send(&mut self.framed, Packet::Publish(Box::new(publish))).await
    }

    /// A PUBLISH to this client at `qos` (QoS 1 takes the next packet id).
    fn publication(&mut self, topic: String, payload: String, qos: QoS, retain: bool) -> Publish {
        // Every publication made here is sent (fed or written) right after.
        self.app.metrics.mqtt.sent.inc();
        let mut publish = publication(topic, payload, retain);
        if qos != QoS::AtMostOnce {
            self.last_packet_id = self.last_packet_id.checked_add(1).unwrap_or(1);
            publish.qos = QoS::AtLeastOnce;
            publish.packet_id = std::num::NonZeroU16::new(self.last_packet_id);
        }
        publish
    }
}

/// Whether a SUBSCRIBE for `filter` is granted: a topic of a dialect, and, where it names one device or
/// collection, one the caller may read. Wildcards are granted and filtered message by message.
async fn may_subscribe(app: &App, caller: &Caller, filter: &str) -> bool {
    if !topics::valid_filter(filter) {
        return false;
    }
    let levels: Vec<&str> = filter.split('/').collect();
    let account = caller.account();
    match levels.as_slice() {
        ["", "v1.6", "devices", label, ..] | ["v1.6", "devices", label, ..] if !label.contains(['+', '#']) => {
            let Ok(label) = Label::parse(label) else { return false };
            match app.data.device_by_label(account, &label).await {
                Ok(device) => caller.authorize(Action::Read, &device_target(&device)).is_ok(),
                // A device not created yet may be waited for; its messages are authorized one by one.
                Err(AppError::NotFound(_)) => caller.authorize_listing().is_ok(),
                Err(_) => false,
            }
        }
        ["device", device, ..] if !device.contains(['+', '#']) => {
            let Ok(device) = device.parse::<DeviceId>() else { return false };
            app.data.device_by_id(caller, Action::Read, device).await.is_ok()
        }
        [collection, ..]
            if !collection.contains(['+', '#']) && collection.parse::<tessera_core::CollectionId>().is_ok() =>
        {
            let Ok(collection) = collection.parse() else { return false };
            caller.authorize(Action::Read, &Target::collection(account, collection)).is_ok()
        }
        _ => caller.authorize_listing().is_ok(),
    }
}

/// What a reading looks like on one kind of topic; a Horde message needs the device (`None` without it).
fn payload(kind: &Outbound, device: Option<&Device>, reading: &tessera_core::Reading) -> Option<String> {
    let value = reading.value.to_json();
    Some(match kind {
        Outbound::UbidotsLastValue => value.to_string(),
        Outbound::UbidotsDot => {
            json!({"value": value, "timestamp": reading.timestamp_ms, "context": reading.context}).to_string()
        }
        Outbound::AssetFeed => json!({"value": value, "at": rfc3339(reading.timestamp_ms)}).to_string(),
        Outbound::HordeMessage => crate::http::horde::message_json(device?, reading).to_string(),
    })
}

/// A PUBLISH to a subscriber, at QoS 0.
fn publication(topic: String, payload: String, retain: bool) -> Publish {
    Publish {
        dup: false,
        retain,
        qos: QoS::AtMostOnce,
        topic: ByteString::from(topic),
        packet_id: None,
        payload: Bytes::from(payload),
        properties: None,
    }
}

/// `work`, or an error once `limit` has passed without it finishing.
async fn within<T>(
    limit: Duration,
    slow_clients: &crate::metrics::Counter,
    work: impl Future<Output = Result<T, String>>,
) -> Result<T, String> {
    tokio::time::timeout(limit, work).await.map_err(|_| {
        slow_clients.inc();
        format!("the client took no deliveries for {limit:?}")
    })?
}

/// The next actuator command, or never while the connection subscribes to nothing.
async fn next_command(
    commands: &mut Option<tokio::sync::broadcast::Receiver<Arc<crate::hub::LiveCommand>>>,
) -> Result<Arc<crate::hub::LiveCommand>, tokio::sync::broadcast::error::RecvError> {
    match commands {
        Some(commands) => commands.recv().await,
        None => std::future::pending().await,
    }
}

/// The next reading from the hub, or never while the connection hears nothing.
async fn next_live(live: &mut Option<crate::hub::Subscription>) -> Option<Arc<LiveReading>> {
    match live {
        Some(live) => live.next().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 19: an idle connection holds small buffers, whatever the packets it read and wrote before.
    #[tokio::test]
    async fn a_connection_gives_back_the_buffers_a_large_packet_grew() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = tokio::net::TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let mut framed =
            Framed::with_capacity(Transport::Plain(server), session_codec(ProtocolVersion::MQTT3), IDLE_BUFFER);
        framed.set_backpressure_boundary(WRITE_BURST);
        let mut connection = Connection::new(framed, ProtocolVersion::MQTT3);
        let mut peer = Framed::new(client, v3::Codec::new(MAX_PACKET));

        // A 100 KB publish each way.
        let large = publication("t".into(), "x".repeat(100_000), false);
        peer.send(Packet::Publish(Box::new(large.clone()))).await.unwrap();
        assert!(matches!(connection.next().await, Some(Ok(Packet::Publish(_)))));
        send(&mut connection, Packet::Publish(Box::new(large))).await.unwrap();
        assert!(matches!(peer.next().await, Some(Ok(_))));
        let before = (connection.framed.read_buffer().as_ptr(), connection.framed.write_buffer().as_ptr());

        connection.release_buffers();
        let after = (connection.framed.read_buffer().as_ptr(), connection.framed.write_buffer().as_ptr());
        assert!(before.0 != after.0 && before.1 != after.1, "both large allocations were given back");
        assert_eq!(connection.framed.read_buffer().capacity(), IDLE_BUFFER);
        assert_eq!(connection.framed.write_buffer().capacity(), IDLE_BUFFER);
        // Small packets leave them as they are.
        peer.send(Packet::PingRequest).await.unwrap();
        assert!(matches!(connection.next().await, Some(Ok(Packet::PingRequest))));
        send(&mut connection, Packet::PingResponse).await.unwrap();
        connection.release_buffers();
        let within = |now: *const u8, then: *const u8| (now as usize).wrapping_sub(then as usize) < IDLE_BUFFER;
        assert!(
            within(connection.framed.read_buffer().as_ptr(), after.0)
                && within(connection.framed.write_buffer().as_ptr(), after.1),
            "no new allocation for a ping"
        );

        // A client streaming publishes: a read that ended inside one makes room for large reads, until the
        // buffer is empty again.
        for _ in 0..3 {
            peer.feed(Packet::Publish(Box::new(publication("t".into(), "y".repeat(200), false)))).await.unwrap();
        }
        peer.flush().await.unwrap();
        assert!(matches!(connection.next().await, Some(Ok(Packet::Publish(_)))));
        assert!(!connection.framed.read_buffer().is_empty(), "the first read of 256 bytes ended inside a packet");
        connection.release_buffers();
        assert!(connection.framed.read_buffer().capacity() >= STREAMING_READ);
        assert!(matches!(connection.next().await, Some(Ok(Packet::Publish(_)))));
        assert!(matches!(connection.next().await, Some(Ok(Packet::Publish(_)))));
        connection.release_buffers();
        assert_eq!(connection.framed.read_buffer().capacity(), IDLE_BUFFER, "empty again, small again");
    }
}
