//! Several nodes on one PostgreSQL database: nothing a user sees may depend on which node answers.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::json;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::helpers::{TestServer, test_config};
use crate::mqtt::Client;

/// Another node on `first`'s PostgreSQL database, with the same credentials.
async fn another_node(first: &TestServer) -> TestServer {
    another_node_at(first, first.database_url.as_deref().expect("the suite runs on PostgreSQL")).await
}

/// Another node on `first`'s database, reached through `database_url` (a proxy, say).
async fn another_node_at(first: &TestServer, database_url: &str) -> TestServer {
    let data_dir = tempfile::tempdir().expect("temporary directory");
    let server = tessera_server::start(test_config(&data_dir, Some(database_url.to_owned())))
        .await
        .expect("a second node starts");
    assert!(server.credentials().is_none(), "the account exists already");
    TestServer {
        base: format!("http://{}", server.http_addr()),
        server: Some(server),
        api_key: first.api_key.clone(),
        admin_email: first.admin_email.clone(),
        admin_password: first.admin_password.clone(),
        client: reqwest::Client::new(),
        data_dir,
        database_url: first.database_url.clone(),
    }
}

/// Polls `check` every few milliseconds until it holds; answers how long that took, or panics after `limit`.
async fn until(limit: Duration, what: &str, mut check: impl AsyncFnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !check().await {
        assert!(started.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    started.elapsed()
}

#[tokio::test]
async fn a_token_revoked_on_one_node_is_refused_on_the_other() {
    let a = TestServer::start().await;
    let b = another_node(&a).await;
    let org = a.organization("Shared").await;
    let mut delays = Vec::new();
    for n in 0..20 {
        let token = a.organization_token(&org, &format!("t{n}")).await;
        let (secret, id) = (token["token"].as_str().unwrap(), token["id"].as_str().unwrap());
        // Node B verifies the token (and caches it) before node A revokes it.
        assert_eq!(b.ubidots(Method::GET, "/datasources", secret, None).await.0, StatusCode::OK);
        let (status, _) = a.native(Method::DELETE, &format!("/tokens/{id}"), &a.api_key, None).await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        delays.push(
            until(Duration::from_secs(2), "refused on node B", async || {
                b.ubidots(Method::GET, "/datasources", secret, None).await.0 == StatusCode::UNAUTHORIZED
            })
            .await,
        );
    }
    delays.sort();
    println!("revocation seen on the other node: p50 {:?}, max {:?}", delays[delays.len() / 2], delays.last().unwrap());
}

/// Issue 13, hole 8: a revocation and the notice to the other nodes are one event. The store revokes with no
/// server around it (what is left of a node that dies right after its commit, before any queue of its could
/// publish), and the other node, which had the token cached, refuses it at once all the same.
#[tokio::test]
async fn a_revocation_is_heard_even_when_its_node_dies_right_after_the_commit() {
    use tessera_store::{Store, TokenStore};
    let a = TestServer::start().await;
    let mut b = another_node(&a).await;
    let org = a.organization("Orphans").await;
    let minted = a.organization_token(&org, "doomed").await;
    let (secret, id) = (minted["token"].as_str().unwrap(), minted["id"].as_str().unwrap());
    assert_eq!(b.ubidots(Method::GET, "/datasources", secret, None).await.0, StatusCode::OK, "cached on B now");

    let url = a.database_url.clone().unwrap();
    let store = tessera_store::PostgresStore::connect(&url).await.unwrap();
    let id: tessera_core::TokenId = id.parse().unwrap();
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    let account: i64 = sqlx::query_scalar("SELECT account_id FROM tokens WHERE id = $1")
        .bind(id.as_i64())
        .fetch_one(&pool)
        .await
        .unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    store.revoke_token(tessera_core::AccountId::from_i64(account), id, now, &[]).await.unwrap();
    store.close().await;

    let took = until(Duration::from_secs(2), "refused on B", async || {
        b.ubidots(Method::GET, "/datasources", secret, None).await.0 == StatusCode::UNAUTHORIZED
    })
    .await;
    assert!(took < Duration::from_secs(1), "heard with the commit, not after a cache's lifetime: {took:?}");
    b.stop().await;
}

#[tokio::test]
async fn live_consumers_on_one_node_get_what_another_ingests() {
    let a = TestServer::start().await;
    let b = another_node(&a).await;
    let org = a.organization("Live").await;
    let token = a.organization_token(&org, "sensor").await["token"].as_str().unwrap().to_owned();

    let mut subscriber = Client::connect(&b, &token, "").await.unwrap();
    subscriber.subscribe("/v1.6/devices/+/temperature/lv").await;
    let mut events = b
        .client
        .get(b.url(&format!("/v1/collections/{org}/events")))
        .header("authorization", format!("Bearer {token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(events.status(), StatusCode::OK);

    let reading = json!({"temperature": {"value": 21.5, "timestamp": 1000}});
    assert_eq!(a.ubidots(Method::POST, "/devices/boiler", &token, Some(reading)).await.0, StatusCode::OK);
    let (topic, value) = subscriber.message().await;
    assert_eq!((topic.as_str(), value), ("/v1.6/devices/boiler/temperature/lv", json!(21.5)));
    let mut received = String::new();
    while !received.contains("\n\n") {
        let chunk = tokio::time::timeout(Duration::from_secs(10), events.chunk()).await.expect("an event").unwrap();
        received.push_str(std::str::from_utf8(&chunk.unwrap()).unwrap());
    }
    assert!(received.contains("\"value\":21.5"), "{received}");

    // One commit of 200 readings makes an event far over NOTIFY's 8000 bytes: it travels by reference.
    let bulk: serde_json::Map<String, serde_json::Value> = (0..200).map(|n| (format!("v{n}"), json!(n))).collect();
    let (status, _) = a.ubidots(Method::POST, "/devices/bulk", &token, Some(serde_json::Value::Object(bulk))).await;
    assert_eq!(status, StatusCode::OK);
    let mut received = String::new();
    while received.matches("event: reading").count() < 200 {
        let chunk = tokio::time::timeout(Duration::from_secs(10), events.chunk()).await.expect("the events").unwrap();
        received.push_str(std::str::from_utf8(&chunk.unwrap()).unwrap());
    }
    assert!(received.contains("\"value\":199.0"), "the last of the bulk arrived");
}

#[tokio::test]
async fn a_device_deleted_on_one_node_is_forgotten_by_the_other() {
    let a = TestServer::start().await;
    let b = another_node(&a).await;
    let token = a.account_token().await;
    // Node B learns the device and its variable (and caches them).
    let first = json!({"t": {"value": 1, "timestamp": 1000}});
    assert_eq!(b.ubidots(Method::POST, "/devices/meter", &token, Some(first)).await.0, StatusCode::OK);
    let id = datasource_id(&a, &token, "meter").await;
    assert_eq!(a.ubidots(Method::DELETE, &format!("/datasources/{id}"), &token, None).await.0, StatusCode::NO_CONTENT);

    // The label names a new device now; a reading through node B lands in it and is seen through node A.
    until(Duration::from_secs(2), "node B writes to the new device", async || {
        let again = json!({"t": {"value": 2, "timestamp": 2000}});
        b.ubidots(Method::POST, "/devices/meter", &token, Some(again)).await;
        a.ubidots(Method::GET, "/devices/meter/t/lv", &token, None).await == (StatusCode::OK, json!(2.0))
    })
    .await;
    assert_ne!(datasource_id(&a, &token, "meter").await, id);
}

async fn datasource_id(node: &TestServer, token: &str, label: &str) -> String {
    let (_, listing) = node.ubidots(Method::GET, "/datasources", token, None).await;
    let found = listing["results"].as_array().unwrap().iter().find(|datasource| datasource["label"] == label);
    found.expect("the datasource is listed")["id"].as_str().unwrap().to_owned()
}

/// As the revocation above: a device deleted by a bare store (a node dying right after its commit) is forgotten
/// by the node that cached its label, because the store sent that inside the deletion's transaction.
#[tokio::test]
async fn a_device_deletion_is_heard_even_when_its_node_dies_right_after_the_commit() {
    use tessera_store::{DeviceStore, Store};
    let a = TestServer::start().await;
    let b = another_node(&a).await;
    let token = a.account_token().await;
    let first = json!({"t": {"value": 1, "timestamp": 1000}});
    assert_eq!(b.ubidots(Method::POST, "/devices/meter", &token, Some(first)).await.0, StatusCode::OK);
    let id: tessera_core::DeviceId = datasource_id(&a, &token, "meter").await.parse().unwrap();

    let url = a.database_url.clone().unwrap();
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    let account: i64 = sqlx::query_scalar("SELECT account_id FROM devices WHERE id = $1")
        .bind(id.as_i64())
        .fetch_one(&pool)
        .await
        .unwrap();
    let store = tessera_store::PostgresStore::connect(&url).await.unwrap();
    store.delete_device(tessera_core::AccountId::from_i64(account), id).await.unwrap();
    store.close().await;

    until(Duration::from_secs(2), "node B writes to a new device of that label", async || {
        let again = json!({"t": {"value": 2, "timestamp": 2000}});
        b.ubidots(Method::POST, "/devices/meter", &token, Some(again)).await;
        a.ubidots(Method::GET, "/devices/meter/t/lv", &token, None).await == (StatusCode::OK, json!(2.0))
    })
    .await;
}

/// A TCP forwarder to PostgreSQL that can be cut (every connection dropped, new ones refused) and restored: the
/// database going away, as one node sees it.
struct Cable {
    address: std::net::SocketAddr,
    up: Arc<AtomicBool>,
    cut: watch::Sender<u64>,
}

impl Cable {
    async fn to(target: String) -> Cable {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let up = Arc::new(AtomicBool::new(true));
        let (cut, _) = watch::channel(0);
        let (accept_up, accept_cut) = (up.clone(), cut.clone());
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if !accept_up.load(Ordering::SeqCst) {
                    continue; // dropped at once: refused
                }
                let mut cuts = accept_cut.subscribe();
                let target = target.clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(target).await else { return };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = cuts.changed() => {}
                    }
                });
            }
        });
        Cable { address, up, cut }
    }

    fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        self.cut.send_modify(|cuts| *cuts += 1);
    }

    fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

/// Another node on `first`'s database, reached through a cable the test can cut.
async fn node_behind_a_cable(first: &TestServer) -> (Cable, TestServer) {
    let url = first.database_url.clone().unwrap();
    let (head, rest) = url.split_once('@').unwrap();
    let (host, tail) = rest.split_once('/').unwrap();
    let cable = Cable::to(host.to_owned()).await;
    let node = another_node_at(first, &format!("{head}@{}/{tail}", cable.address)).await;
    (cable, node)
}

#[tokio::test]
async fn a_node_cut_off_from_postgresql_is_unready_loses_no_acknowledged_reading_and_recovers() {
    let a = TestServer::start().await;
    // Node B reaches the database through a cable this test can cut.
    let (cable, mut b) = node_behind_a_cable(&a).await;
    let token = a.account_token().await;
    let ready = |node: &TestServer| {
        let request = node.client.get(node.url("/readyz"));
        async move { request.send().await.map(|response| response.status()).ok() }
    };
    assert_eq!(ready(&b).await, Some(StatusCode::OK));

    // Load on node B throughout: every reading it acknowledges must be stored.
    let (stop_load, load_stopped) = watch::channel(false);
    let sender = b.client.clone();
    let ingest = b.url("/api/v1.6/devices/load");
    let load_token = token.clone();
    let load = tokio::spawn(async move {
        let mut acknowledged = Vec::new();
        let mut timestamp = 1_000;
        while !*load_stopped.borrow() {
            timestamp += 1;
            let body = json!({"n": {"value": timestamp, "timestamp": timestamp}});
            let answer = sender.post(&ingest).header("x-auth-token", &load_token).json(&body).send().await;
            if answer.is_ok_and(|answer| answer.status() == StatusCode::OK) {
                acknowledged.push(timestamp);
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        acknowledged
    });
    tokio::time::sleep(Duration::from_millis(300)).await;

    cable.cut();
    until(Duration::from_secs(10), "node B unready while cut off", async || {
        ready(&b).await == Some(StatusCode::SERVICE_UNAVAILABLE)
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    cable.restore();
    until(Duration::from_secs(20), "node B ready again", async || ready(&b).await == Some(StatusCode::OK)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop_load.send(true).unwrap();
    let acknowledged = load.await.unwrap();
    assert!((10..1000).contains(&acknowledged.len()), "the load ran: {} acknowledged", acknowledged.len());

    let (_, values) = a.ubidots(Method::GET, "/devices/load/n/values?page_size=1000", &token, None).await;
    let stored: std::collections::BTreeSet<i64> =
        values["results"].as_array().unwrap().iter().map(|value| value["timestamp"].as_i64().unwrap()).collect();
    let lost: Vec<_> = acknowledged.iter().filter(|timestamp| !stored.contains(timestamp)).collect();
    assert!(lost.is_empty(), "acknowledged but not stored: {lost:?}");

    // Back in touch: node B hears revocations again.
    let org = a.organization("After").await;
    let fresh = a.organization_token(&org, "fresh").await;
    let (secret, id) = (fresh["token"].as_str().unwrap(), fresh["id"].as_str().unwrap());
    assert_eq!(b.ubidots(Method::GET, "/datasources", secret, None).await.0, StatusCode::OK);
    a.native(Method::DELETE, &format!("/tokens/{id}"), &a.api_key, None).await;
    until(Duration::from_secs(2), "refused on node B after the outage", async || {
        b.ubidots(Method::GET, "/datasources", secret, None).await.0 == StatusCode::UNAUTHORIZED
    })
    .await;
    b.stop().await;
}

/// Issue 13: with the database out of reach, a token the node has not cached cannot be checked. That is the
/// server's trouble, not the credential's: 503 with `Retry-After` in each dialect's shape, never 401 (a device told
/// 401 concludes its token is bad and stops).
#[tokio::test]
async fn a_token_that_cannot_be_checked_while_the_store_is_away_is_answered_503_with_retry_after() {
    let a = TestServer::start().await;
    let (cable, mut b) = node_behind_a_cable(&a).await;
    let token = a.account_token().await; // minted on A: never seen by B
    cable.cut();
    let dialects: [(&str, &str, &str, &str); 4] = [
        ("/api/v1.6/datasources", "x-auth-token", "", "detail"),
        ("/v1/collections", "authorization", "Bearer ", "detail"),
        ("/collections", "x-api-token", "", "message"),
        ("/device/x/assets", "authorization", "Bearer ", "message"),
    ];
    for (path, header, prefix, field) in dialects {
        let started = std::time::Instant::now();
        let response = b.client.get(b.url(path)).header(header, format!("{prefix}{token}")).send().await.unwrap();
        let status = response.status();
        let retry_after = response.headers().get("retry-after").map(|value| value.to_str().unwrap().to_owned());
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{path}: {body}");
        assert!(retry_after.is_some_and(|seconds| seconds.parse::<u32>().is_ok()), "{path}: Retry-After");
        assert!(body[field].is_string(), "{path}: the dialect's shape: {body}");
        assert!(started.elapsed() < Duration::from_secs(15), "{path}: answered in {:?}", started.elapsed());
    }
    cable.restore();
    until(Duration::from_secs(20), "the token works once the store is back", async || {
        b.ubidots(Method::GET, "/datasources", &token, None).await.0 == StatusCode::OK
    })
    .await;
    b.stop().await;
}

#[tokio::test]
async fn text_postgresql_cannot_hold_is_refused_by_name_and_nothing_is_stored() {
    let a = TestServer::start().await;
    let token = a.account_token().await;
    let (status, body) = a.native(Method::POST, "/collections", &token, Some(json!({"name": "nul\u{0}name"}))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body["detail"].as_str().unwrap().contains("NUL"), "{body}");
    let (_, collections) = a.native(Method::GET, "/collections", &token, None).await;
    let names: Vec<&str> =
        collections["collections"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["Default"]);
}

/// Issue 15: a bulk revocation on one node reaches the tokens the other node has cached.
#[tokio::test]
async fn a_bulk_revocation_on_one_node_is_refused_on_the_other() {
    let a = TestServer::start().await;
    let b = another_node(&a).await;
    let org = a.organization("Bulk").await;
    let mut secrets = Vec::new();
    for n in 0..5 {
        secrets.push(a.organization_token(&org, &format!("t{n}")).await["token"].as_str().unwrap().to_owned());
    }
    for secret in &secrets {
        assert_eq!(b.ubidots(Method::GET, "/datasources", secret, None).await.0, StatusCode::OK, "cached on B");
    }
    let (status, answer) = a.native(Method::POST, "/tokens/revoke", &a.api_key, Some(json!({"collection": org}))).await;
    assert_eq!((status, &answer["revoked"]), (StatusCode::OK, &json!(5)), "{answer}");
    for secret in &secrets {
        until(Duration::from_secs(2), "refused on node B", async || {
            b.ubidots(Method::GET, "/datasources", secret, None).await.0 == StatusCode::UNAUTHORIZED
        })
        .await;
    }
}

/// Issue 15: a rotated token's old secret works on every node during the overlap and is refused on every node
/// after it; a token disabled on one node ends its MQTT connection on the other.
#[tokio::test]
async fn rotation_overlaps_and_disabling_hold_on_every_node() {
    let a = TestServer::start().await;
    let b = another_node(&a).await;
    let org = a.organization("Rotating").await;
    let token = a.organization_token(&org, "meter").await;
    let (old, id) = (token["token"].as_str().unwrap().to_owned(), token["id"].as_str().unwrap().to_owned());
    // Polled every few milliseconds below, for up to a second or two: beyond its kind's default quota on a fast node.
    let unlimited = json!({"quota": "unlimited"});
    assert_eq!(a.native(Method::PATCH, &format!("/tokens/{id}"), &a.api_key, Some(unlimited)).await.0, StatusCode::OK);
    assert_eq!(b.ubidots(Method::GET, "/datasources", &old, None).await.0, StatusCode::OK, "cached on B");
    let (status, rotated) =
        a.native(Method::POST, &format!("/tokens/{id}/rotate"), &a.api_key, Some(json!({"overlap_seconds": 1}))).await;
    assert_eq!(status, StatusCode::OK, "{rotated}");
    let new = rotated["secret"].as_str().unwrap();
    assert_eq!(b.ubidots(Method::GET, "/datasources", new, None).await.0, StatusCode::OK, "the new secret on B");
    assert_eq!(
        b.ubidots(Method::GET, "/datasources", &old, None).await.0,
        StatusCode::OK,
        "the old one within the overlap"
    );
    until(Duration::from_secs(5), "the old secret refused on node B after the overlap", async || {
        b.ubidots(Method::GET, "/datasources", &old, None).await.0 == StatusCode::UNAUTHORIZED
    })
    .await;
    assert_eq!(a.ubidots(Method::GET, "/datasources", &old, None).await.0, StatusCode::UNAUTHORIZED, "and on A");

    // A token revoked during an overlap: the replaced secret, cached on B, is refused there too.
    let other = a.organization_token(&org, "second").await;
    let (first, other_id) = (other["token"].as_str().unwrap().to_owned(), other["id"].as_str().unwrap().to_owned());
    let rotation = json!({"overlap_seconds": 3600});
    let (_, rotated) = a.native(Method::POST, &format!("/tokens/{other_id}/rotate"), &a.api_key, Some(rotation)).await;
    let second = rotated["secret"].as_str().unwrap().to_owned();
    for secret in [&first, &second] {
        assert_eq!(b.ubidots(Method::GET, "/datasources", secret, None).await.0, StatusCode::OK, "cached on B");
    }
    assert_eq!(
        a.native(Method::DELETE, &format!("/tokens/{other_id}"), &a.api_key, None).await.0,
        StatusCode::NO_CONTENT
    );
    for secret in [&first, &second] {
        until(Duration::from_secs(2), "both secrets refused on node B", async || {
            b.ubidots(Method::GET, "/datasources", secret, None).await.0 == StatusCode::UNAUTHORIZED
        })
        .await;
    }

    // Disabled on A: the connection it holds on B ends, and B refuses a new one.
    let mut device = Client::connect(&b, new, "").await.expect("connects to B");
    assert!(device.publish("/v1.6/devices/meter", json!({"kwh": 1})).await);
    let (status, _) =
        a.native(Method::PATCH, &format!("/tokens/{id}"), &a.api_key, Some(json!({"enabled": false}))).await;
    assert_eq!(status, StatusCode::OK);
    until(Duration::from_secs(5), "the MQTT connection on B ends", async || {
        !device.publish("/v1.6/devices/meter", json!({"kwh": 2})).await
    })
    .await;
    assert!(Client::connect(&b, new, "").await.is_err(), "B refuses the disabled token");
}

/// Issue 19: live readings are described from each node's shared descriptions, which the store's invalidation of
/// a changed device reaches on every node.
#[tokio::test]
async fn a_device_changed_on_one_node_is_described_anew_by_the_others_live_consumers() {
    let a = TestServer::start().await;
    let b = another_node(&a).await;
    let org = a.organization("Described").await;
    let token = a.organization_token(&org, "consumer").await["token"].as_str().unwrap().to_owned();
    let mut consumer = Client::connect(&b, &org, &token).await.unwrap();
    consumer.subscribe(&format!("{org}/#")).await;
    a.ubidots(Method::POST, "/devices/meter", &token, Some(json!({"flow": 1}))).await;
    let (_, message) = consumer.message().await;
    assert!(message["device"].get("tags").is_none(), "no tags yet: {message}");
    let device = message["device"]["deviceId"].as_str().unwrap().to_owned();

    let (status, _) = a
        .call(
            Method::PATCH,
            &format!("/collections/{org}/devices/{device}"),
            &[("x-api-token", token.as_str())],
            Some(json!({"tags": {"name": "pump 7"}})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    // Node B hears the change shortly after the commit; until then a reading may still show the old record.
    let mut flow = 1;
    until(Duration::from_secs(5), "node B describes the device as it is now", async || {
        flow += 1;
        a.ubidots(Method::POST, "/devices/meter", &token, Some(json!({ "flow": flow }))).await;
        let (_, message) = consumer.message().await;
        message["device"]["tags"]["name"] == "pump 7"
    })
    .await;
}
