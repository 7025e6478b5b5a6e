//! Per-token request quotas (issue 15): one counter per token across HTTP and MQTT; 429 in each dialect's shape
//! with `Retry-After`; the `RateLimit-Policy` and `RateLimit` fields on every answer to a limited token; MQTT 3.1.1
//! publishes over the quota dropped, MQTT 5 ones answered with reason code 0x97; the throttled count on the
//! token's record; windows that close; quotas kept by the store.

use std::time::{Duration, Instant};

use bytes::Bytes;
use bytestring::ByteString;
use futures_util::{SinkExt, StreamExt};
use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use rmqtt_codec::types::Publish;
use rmqtt_codec::v5::{self, PublishAckReason, QoS};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_util::codec::Framed;

use crate::helpers::TestServer;
use crate::mqtt::Client;

/// A request with `headers`; the answer's status, headers and body (JSON, or a string if not).
async fn send(
    tessera: &TestServer,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<Value>,
) -> (StatusCode, HeaderMap, Value) {
    let mut request = tessera.client.request(method, tessera.url(path));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("request is sent");
    let (status, headers) = (response.status(), response.headers().clone());
    let text = response.text().await.expect("body is readable");
    (status, headers, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).map(|value| value.to_str().expect("a text header"))
}

/// A token minted with the API key through `POST /v1/tokens` with `quota`: `(id, secret)`.
async fn token_with_quota(tessera: &TestServer, kind_and_scope: Value, quota: Value) -> (String, String) {
    let mut body = kind_and_scope;
    body["name"] = json!("quota test");
    body["quota"] = quota;
    let (status, token) = tessera.native(Method::POST, "/tokens", &tessera.api_key, Some(body)).await;
    assert_eq!(status, StatusCode::CREATED, "{token}");
    (token["id"].as_str().unwrap().to_owned(), token["secret"].as_str().unwrap().to_owned())
}

async fn collection_token(tessera: &TestServer, collection: &str, quota: Value) -> (String, String) {
    token_with_quota(tessera, json!({"kind": "collection", "collection": collection}), quota).await
}

/// A device token for `device` made through `POST /v1/devices/{id}/tokens`, with `extra` in its body.
async fn device_token(tessera: &TestServer, device: &str, extra: Value) -> (String, String) {
    let path = format!("/devices/{device}/tokens");
    let (status, token) = tessera.native(Method::POST, &path, &tessera.api_key, Some(extra)).await;
    assert_eq!(status, StatusCode::CREATED, "{token}");
    (token["id"].as_str().unwrap().to_owned(), token["secret"].as_str().unwrap().to_owned())
}

/// The token as the API key sees it.
async fn token_record(tessera: &TestServer, id: &str) -> Value {
    let (status, token) = tessera.native(Method::GET, &format!("/tokens/{id}"), &tessera.api_key, None).await;
    assert_eq!(status, StatusCode::OK, "{token}");
    token
}

/// Checks the fields of an answer to a limited token: `q` per `w` s, `r` left, and a reset within the window.
fn assert_fields(headers: &HeaderMap, q: u32, w: u32, r: u32) {
    assert_eq!(header(headers, "ratelimit-policy"), Some(format!("\"default\";q={q};w={w}").as_str()));
    let limit = header(headers, "ratelimit").expect("a RateLimit field");
    let prefix = format!("\"default\";r={r};t=");
    let reset: u32 = limit.strip_prefix(&prefix).and_then(|t| t.parse().ok()).unwrap_or_else(|| panic!("{limit}"));
    assert!((1..=w).contains(&reset), "{limit}");
}

/// Checks a refusal for the quota: 429, `Retry-After` in seconds within the window, and the fields with nothing
/// left. Answers the `Retry-After`.
fn assert_throttled(status: StatusCode, headers: &HeaderMap, q: u32, w: u32) -> u32 {
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    let retry: u32 = header(headers, "retry-after").expect("Retry-After").parse().expect("seconds");
    assert!((1..=w).contains(&retry), "Retry-After {retry}");
    assert_fields(headers, q, w, 0);
    let reset: u32 = header(headers, "ratelimit").unwrap().rsplit("t=").next().unwrap().parse().unwrap();
    assert!(retry >= reset, "Retry-After ({retry}) must not name an earlier time than the reset ({reset})");
    retry
}

#[tokio::test]
async fn every_dialect_answers_429_in_its_own_shape_with_retry_after_and_the_fields() {
    let tessera = TestServer::start().await;
    let collection = tessera.organization("Throttled").await;
    let once_a_minute = json!({"requests": 1, "window_seconds": 60});

    // Ubidots: Django REST framework's throttling answer.
    let (_, secret) = collection_token(&tessera, &collection, once_a_minute.clone()).await;
    let ubidots = [("x-auth-token", secret.as_str())];
    let (status, headers, _) = send(&tessera, Method::GET, "/api/v1.6/datasources", &ubidots, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_fields(&headers, 1, 60, 0);
    let (status, headers, body) = send(&tessera, Method::GET, "/api/v1.6/datasources", &ubidots, None).await;
    let retry = assert_throttled(status, &headers, 1, 60);
    assert_eq!(body, json!({"detail": format!("Request was throttled. Expected available in {retry} seconds.")}));

    // Native: an RFC 9457 problem document.
    let (_, secret) = collection_token(&tessera, &collection, once_a_minute.clone()).await;
    let bearer = format!("Bearer {secret}");
    let native = [("authorization", bearer.as_str())];
    let (status, headers, _) = send(&tessera, Method::GET, "/v1/collections", &native, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_fields(&headers, 1, 60, 0);
    let (status, headers, body) = send(&tessera, Method::GET, "/v1/collections", &native, None).await;
    assert_throttled(status, &headers, 1, 60);
    assert_eq!(header(&headers, "content-type"), Some("application/problem+json"));
    assert_eq!((body["status"].as_u64(), body["title"].as_str()), (Some(429), Some("Too Many Requests")), "{body}");
    assert!(body["detail"].as_str().unwrap().contains("1 requests per 60 s"), "{body}");

    // Horde: {"status", "message"}.
    let (_, secret) = collection_token(&tessera, &collection, once_a_minute.clone()).await;
    let horde = [("x-api-token", secret.as_str())];
    let path = format!("/collections/{collection}");
    let (status, headers, body) = send(&tessera, Method::GET, &path, &horde, None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_fields(&headers, 1, 60, 0);
    let (status, headers, body) = send(&tessera, Method::GET, &path, &horde, None).await;
    assert_throttled(status, &headers, 1, 60);
    assert_eq!(body["status"], 429, "{body}");
    assert!(body["message"].as_str().unwrap().starts_with("Too many requests"), "{body}");

    // AllThingsTalk: {"message"}, for a device token.
    let id = tessera.device_with_reading("throttled-sensor").await;
    let (_, secret) = device_token(&tessera, &id, json!({"quota": once_a_minute})).await;
    let bearer = format!("Bearer {secret}");
    let att = [("authorization", bearer.as_str())];
    let path = format!("/device/{id}");
    let (status, headers, body) = send(&tessera, Method::GET, &path, &att, None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_fields(&headers, 1, 60, 0);
    let (status, headers, body) = send(&tessera, Method::GET, &path, &att, None).await;
    assert_throttled(status, &headers, 1, 60);
    assert!(body["message"].as_str().unwrap().contains("quota"), "{body}");
    assert_eq!(body.as_object().map(|fields| fields.len()), Some(1), "{body}");
}

#[tokio::test]
async fn every_answer_to_a_limited_token_counts_down_and_unlimited_ones_carry_no_fields() {
    let tessera = TestServer::start().await;
    let id = tessera.device_with_reading("counting").await;
    // A device token with its kind's default: 20 requests in 5 s.
    let (_, secret) = device_token(&tessera, &id, json!({})).await;
    let ubidots = [("x-auth-token", secret.as_str())];
    for left in [19, 18, 17] {
        let body = json!({"t": left});
        let (status, headers, _) =
            send(&tessera, Method::POST, "/api/v1.6/devices/counting", &ubidots, Some(body)).await;
        assert_eq!(status, StatusCode::OK);
        assert_fields(&headers, 20, 5, left);
        assert!(header(&headers, "retry-after").is_none());
    }
    // A refusal that is not the quota's still says where the token stands.
    let (status, headers, _) =
        send(&tessera, Method::GET, "/api/v1.6/devices/counting/nothing/lv", &ubidots, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_fields(&headers, 20, 5, 16);

    // The API key is unlimited by default: nothing is counted, nothing said.
    let (status, headers, _) =
        send(&tessera, Method::GET, "/v1/tokens", &[("authorization", &format!("Bearer {}", tessera.api_key))], None)
            .await;
    assert_eq!(status, StatusCode::OK);
    assert!(header(&headers, "ratelimit").is_none() && header(&headers, "ratelimit-policy").is_none());
    // Nor is a request without a credential.
    let (status, headers, _) = send(&tessera, Method::GET, "/api/v1.6/datasources", &[], None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(header(&headers, "ratelimit").is_none());
}

/// A small MQTT 5 client on the codec the server uses: what a QoS 1 PUBACK's reason code is.
struct Mqtt5 {
    framed: Framed<TcpStream, v5::Codec>,
    next_id: u16,
}

impl Mqtt5 {
    async fn connect(tessera: &TestServer, username: &str) -> Mqtt5 {
        let address = tessera.server.as_ref().unwrap().mqtt_addr().expect("MQTT listens");
        let mut framed = Framed::new(TcpStream::connect(address).await.unwrap(), v5::Codec::new(1 << 20, 1 << 20));
        let connect = v5::Connect {
            clean_start: true,
            keep_alive: 30,
            session_expiry_interval_secs: 0,
            auth_method: None,
            auth_data: None,
            request_problem_info: true,
            request_response_info: false,
            receive_max: None,
            topic_alias_max: 0,
            user_properties: Default::default(),
            max_packet_size: None,
            last_will: None,
            client_id: ByteString::from(format!("mqtt5-{username:.12}")),
            username: Some(ByteString::from(username.to_owned())),
            password: None,
            cert: None,
        };
        framed.send(v5::Packet::Connect(Box::new(connect))).await.unwrap();
        match Mqtt5::next(&mut framed).await {
            Some(v5::Packet::ConnectAck(ack)) if ack.reason_code == v5::ConnectAckReason::Success => {}
            other => panic!("no successful CONNACK: {other:?}"),
        }
        Mqtt5 { framed, next_id: 0 }
    }

    async fn next(framed: &mut Framed<TcpStream, v5::Codec>) -> Option<v5::Packet> {
        match tokio::time::timeout(Duration::from_secs(10), framed.next()).await {
            Ok(Some(Ok((packet, _)))) => Some(packet),
            Ok(_) => None,
            Err(_) => panic!("nothing from the server in 10 s"),
        }
    }

    async fn publish(&mut self, topic: &str, payload: Value, qos: QoS) {
        let packet_id = (qos == QoS::AtLeastOnce).then(|| {
            self.next_id += 1;
            std::num::NonZeroU16::new(self.next_id).unwrap()
        });
        let publish = Publish {
            dup: false,
            retain: false,
            qos,
            topic: ByteString::from(topic.to_owned()),
            packet_id,
            payload: Bytes::from(payload.to_string()),
            properties: None,
        };
        self.framed.send(v5::Packet::Publish(Box::new(publish))).await.unwrap();
    }

    /// Publishes at QoS 1 and answers the PUBACK's reason code.
    async fn publish_acknowledged(&mut self, topic: &str, payload: Value) -> PublishAckReason {
        self.publish(topic, payload, QoS::AtLeastOnce).await;
        match Mqtt5::next(&mut self.framed).await {
            Some(v5::Packet::PublishAck(ack)) => ack.reason_code,
            other => panic!("no PUBACK: {other:?}"),
        }
    }

    /// Whether the connection still answers.
    async fn pings(&mut self) -> bool {
        self.framed.send(v5::Packet::PingRequest).await.unwrap();
        matches!(Mqtt5::next(&mut self.framed).await, Some(v5::Packet::PingResponse))
    }
}

/// The timestamps of the readings stored for `variable` of `label`, as another token reads them.
async fn stored_timestamps(tessera: &TestServer, reader: &str, label: &str, variable: &str) -> Vec<i64> {
    let path = format!("/devices/{label}/{variable}/values?page_size=100");
    let (status, values) = tessera.ubidots(Method::GET, &path, reader, None).await;
    assert_eq!(status, StatusCode::OK, "{values}");
    let mut stamps: Vec<i64> =
        values["results"].as_array().unwrap().iter().map(|dot| dot["timestamp"].as_i64().unwrap()).collect();
    stamps.sort_unstable();
    stamps
}

/// Polls `check` every 20 ms until it holds; panics after `limit`.
async fn eventually(limit: Duration, what: &str, mut check: impl AsyncFnMut() -> bool) {
    let started = Instant::now();
    while !check().await {
        assert!(started.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_quota_is_reached_by_mixing_http_and_mqtt_and_the_throttled_reach_the_record() {
    let tessera = TestServer::start().await;
    let collection = tessera.organization("Mixed").await;
    let (id, secret) = collection_token(&tessera, &collection, json!({"requests": 5, "window_seconds": 60})).await;
    let reading = |at: i64| json!({"temperature": {"value": at, "timestamp": at}});
    let path = "/api/v1.6/devices/mixed";
    let ubidots = [("x-auth-token", secret.as_str())];

    // Connecting takes nothing from the quota; each HTTP request and each publish takes one, from one counter.
    let mut v311 = Client::connect(&tessera, &secret, "").await.expect("connects");
    let mut v5 = Mqtt5::connect(&tessera, &secret).await;
    for (at, left) in [(1_000, 4), (2_000, 3)] {
        let (status, headers, _) = send(&tessera, Method::POST, path, &ubidots, Some(reading(at))).await;
        assert_eq!(status, StatusCode::OK);
        assert_fields(&headers, 5, 60, left);
    }
    assert!(v311.publish("/v1.6/devices/mixed", reading(3_000)).await, "acknowledged and stored");
    assert_eq!(v5.publish_acknowledged("/v1.6/devices/mixed", reading(4_000)).await, PublishAckReason::Success);
    let (status, headers, _) = send(&tessera, Method::POST, path, &ubidots, Some(reading(5_000))).await;
    assert_eq!(status, StatusCode::OK);
    assert_fields(&headers, 5, 60, 0);

    // The quota is used up, whichever way the next request comes.
    let (status, headers, _) = send(&tessera, Method::POST, path, &ubidots, Some(reading(6_000))).await;
    assert_throttled(status, &headers, 5, 60);
    assert_eq!(v5.publish_acknowledged("/v1.6/devices/mixed", reading(7_000)).await, PublishAckReason::QuotaExceeded);
    v5.publish("/v1.6/devices/mixed", reading(8_000), QoS::AtMostOnce).await;
    assert!(v5.pings().await, "an MQTT 5 connection over its quota stays open");
    // MQTT 3.1.1 cannot refuse a publish: it is acknowledged, dropped, and the connection stays open.
    assert!(v311.publish("/v1.6/devices/mixed", reading(9_000)).await, "acknowledged, not stored");
    assert!(v311.publish("/v1.6/devices/mixed", reading(10_000)).await, "and the connection still answers");

    let reader = tessera.account_token().await;
    assert_eq!(stored_timestamps(&tessera, &reader, "mixed", "temperature").await, [1_000, 2_000, 3_000, 4_000, 5_000]);

    // Five throttled: one HTTP request, two MQTT 5 publishes (QoS 1 and 0), two MQTT 3.1.1 ones; the record has
    // them after the usage flush (every second), and the uses are the five requests and the two connections.
    eventually(Duration::from_secs(5), "the throttled count reaches the record", async || {
        token_record(&tessera, &id).await["throttled"] == 5
    })
    .await;
    let record = token_record(&tessera, &id).await;
    assert_eq!(record["uses"], 2 + 3, "{record}");
}

#[tokio::test]
async fn a_token_with_an_explicit_unlimited_quota_is_never_limited() {
    let tessera = TestServer::start().await;
    let id = tessera.device_with_reading("unbounded").await;
    let (token, secret) = device_token(&tessera, &id, json!({"quota": "unlimited"})).await;
    assert_eq!(token_record(&tessera, &token).await["quota"], "unlimited");
    let ubidots = [("x-auth-token", secret.as_str())];
    // Twice a device token's default of 20 in 5 s.
    for at in 0..40 {
        let body = json!({"t": {"value": at, "timestamp": 1_000 + at}});
        let (status, headers, _) =
            send(&tessera, Method::POST, "/api/v1.6/devices/unbounded", &ubidots, Some(body)).await;
        assert_eq!(status, StatusCode::OK, "request {at}");
        assert!(header(&headers, "ratelimit").is_none() && header(&headers, "ratelimit-policy").is_none());
    }
    let mut client = Client::connect(&tessera, &secret, "").await.expect("connects");
    for at in 0..30 {
        assert!(client.publish("/v1.6/devices/unbounded", json!({"t": {"value": at, "timestamp": 2_000 + at}})).await);
    }
    let reader = tessera.account_token().await;
    // The device's first reading, then every one sent here.
    assert_eq!(stored_timestamps(&tessera, &reader, "unbounded", "t").await.len(), 1 + 40 + 30);
}

#[tokio::test]
async fn a_window_closes_and_the_full_quota_is_back() {
    let tessera = TestServer::start().await;
    let id = tessera.device_with_reading("pulsing").await;
    let (_, secret) = device_token(&tessera, &id, json!({"quota": {"requests": 2, "window_seconds": 1}})).await;
    let ubidots = [("x-auth-token", secret.as_str())];
    let get = || send(&tessera, Method::GET, "/api/v1.6/devices/pulsing", &ubidots, None);
    let opened = Instant::now();
    assert_eq!(get().await.0, StatusCode::OK);
    assert_eq!(get().await.0, StatusCode::OK);
    let (status, headers, _) = get().await;
    assert_eq!(assert_throttled(status, &headers, 2, 1), 1);
    // Refused until the second since the window opened is over, then the quota is whole again.
    let mut answered = get().await;
    while answered.0 == StatusCode::TOO_MANY_REQUESTS {
        assert!(opened.elapsed() < Duration::from_millis(1_900), "the window did not close");
        tokio::time::sleep(Duration::from_millis(25)).await;
        answered = get().await;
    }
    assert!(opened.elapsed() >= Duration::from_millis(950), "refused for the rest of the window");
    assert_eq!(answered.0, StatusCode::OK);
    assert_fields(&answered.1, 2, 1, 1);
}

#[tokio::test]
async fn a_tokens_quota_is_kept_by_the_store_and_a_change_applies_at_once() {
    let tessera = TestServer::start().await;
    let collection = tessera.organization("Kept").await;
    let (id, secret) = collection_token(&tessera, &collection, json!({"requests": 3, "window_seconds": 600})).await;
    let tessera = tessera.restart().await;
    let record = token_record(&tessera, &id).await;
    assert_eq!(record["quota"], json!({"requests": 3, "window_seconds": 600}), "{record}");

    let ubidots = [("x-auth-token", secret.as_str())];
    for left in [2, 1, 0] {
        let (status, headers, _) = send(&tessera, Method::GET, "/api/v1.6/datasources", &ubidots, None).await;
        assert_eq!(status, StatusCode::OK);
        assert_fields(&headers, 3, 600, left);
    }
    let (status, headers, _) = send(&tessera, Method::GET, "/api/v1.6/datasources", &ubidots, None).await;
    assert_throttled(status, &headers, 3, 600);

    // Raised: the units used so far still count, the rest of the new quota is there at once.
    let raise = json!({"quota": {"requests": 10, "window_seconds": 600}});
    let (status, changed) =
        tessera.native(Method::PATCH, &format!("/tokens/{id}"), &tessera.api_key, Some(raise)).await;
    assert_eq!(status, StatusCode::OK, "{changed}");
    let (status, headers, _) = send(&tessera, Method::GET, "/api/v1.6/datasources", &ubidots, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_fields(&headers, 10, 600, 6);

    // Back to its kind's default (500 in 5 s), and then unlimited.
    let default = json!({"quota": "default"});
    let (status, _) = tessera.native(Method::PATCH, &format!("/tokens/{id}"), &tessera.api_key, Some(default)).await;
    assert_eq!(status, StatusCode::OK);
    let (_, headers, _) = send(&tessera, Method::GET, "/api/v1.6/datasources", &ubidots, None).await;
    assert_eq!(header(&headers, "ratelimit-policy"), Some("\"default\";q=500;w=5"));
    let unlimited = json!({"quota": "unlimited"});
    let (status, _) = tessera.native(Method::PATCH, &format!("/tokens/{id}"), &tessera.api_key, Some(unlimited)).await;
    assert_eq!(status, StatusCode::OK);
    let tessera = tessera.restart().await;
    assert_eq!(token_record(&tessera, &id).await["quota"], "unlimited");
    let (status, headers, _) = send(&tessera, Method::GET, "/api/v1.6/datasources", &ubidots, None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(header(&headers, "ratelimit").is_none());
}

#[tokio::test]
async fn kind_defaults_come_from_the_configuration() {
    let tessera = TestServer::start_with(|config| {
        config.rate_limits.collection = Some(tessera_core::Quota { requests: 2, window_seconds: 30 });
    })
    .await;
    let collection = tessera.organization("Configured").await;
    let token = tessera.organization_token(&collection, "configured").await;
    let ubidots = [("x-auth-token", token["token"].as_str().unwrap())];
    let (status, headers, _) = send(&tessera, Method::GET, "/api/v1.6/datasources", &ubidots, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_fields(&headers, 2, 30, 1);
    send(&tessera, Method::GET, "/api/v1.6/datasources", &ubidots, None).await;
    let (status, headers, _) = send(&tessera, Method::GET, "/api/v1.6/datasources", &ubidots, None).await;
    assert_throttled(status, &headers, 2, 30);
}
