//! `/metrics`: refused without its credential, and a scrape after some traffic that `promtool check metrics` (from
//! Debian's `prometheus` package, which `.ci/run` installs) finds clean, with the counters moved by what was done.

use std::collections::HashMap;
use std::io::Write as _;
use std::process::{Command, Stdio};

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::helpers::{StoreKind, TestServer};
use crate::mqtt::Client;

pub(crate) const METRICS_TOKEN: &str = "scrape-token-0123456789abcdef";

/// The samples of a scrape, by series (`name{labels}`, as written), with their values.
pub(crate) fn samples(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').expect("a sample is a series and a value");
            (series.to_owned(), value.parse().unwrap_or_else(|_| panic!("a number in {line}")))
        })
        .collect()
}

pub(crate) async fn scrape(tessera: &TestServer) -> String {
    let response = tessera
        .client
        .get(tessera.url("/metrics"))
        .bearer_auth(METRICS_TOKEN)
        .send()
        .await
        .expect("the scrape is sent");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "text/plain; version=0.0.4; charset=utf-8");
    response.text().await.unwrap()
}

async fn status_of(request: reqwest::RequestBuilder) -> (StatusCode, Option<String>) {
    let response = request.send().await.expect("the request is sent");
    let challenge = response.headers().get("www-authenticate").map(|value| value.to_str().unwrap().to_owned());
    (response.status(), challenge)
}

#[tokio::test]
async fn metrics_are_not_served_without_their_credential() {
    // Nothing configured: the main listener has no /metrics, whatever is presented.
    let tessera = TestServer::start().await;
    let url = tessera.url("/metrics");
    assert_eq!(status_of(tessera.client.get(&url)).await.0, StatusCode::NOT_FOUND);
    assert_eq!(status_of(tessera.client.get(&url).bearer_auth(&tessera.api_key)).await.0, StatusCode::NOT_FOUND);

    // With a token: only that token, as a bearer credential.
    let tessera = TestServer::start_with(|config| config.metrics_token = Some(METRICS_TOKEN.into())).await;
    let url = tessera.url("/metrics");
    let refused = (StatusCode::UNAUTHORIZED, Some("Bearer realm=\"metrics\"".to_owned()));
    assert_eq!(status_of(tessera.client.get(&url)).await, refused, "no credential");
    let wrong = format!("{METRICS_TOKEN}x");
    assert_eq!(status_of(tessera.client.get(&url).bearer_auth(&wrong)).await, refused, "a longer token");
    let prefix = &METRICS_TOKEN[..METRICS_TOKEN.len() - 1];
    assert_eq!(status_of(tessera.client.get(&url).bearer_auth(prefix)).await, refused, "a prefix of the token");
    let account_token = tessera.account_token().await;
    for credential in [&tessera.api_key, &account_token] {
        assert_eq!(status_of(tessera.client.get(&url).bearer_auth(credential)).await, refused, "Tessera's tokens");
    }
    let in_another_header = tessera.client.get(&url).header("x-auth-token", METRICS_TOKEN);
    assert_eq!(status_of(in_another_header).await, refused, "only as a bearer credential");
    let in_the_query = tessera.client.get(format!("{url}?token={METRICS_TOKEN}"));
    assert_eq!(status_of(in_the_query).await, refused, "never in the URL");
    assert_eq!(status_of(tessera.client.get(&url).bearer_auth(METRICS_TOKEN)).await.0, StatusCode::OK);

    // A listener of its own, without a token: open there (where the operator bound it), and still not on the
    // main listener; it serves nothing but /metrics.
    let tessera = TestServer::start_with(|config| config.metrics_addr = Some("127.0.0.1:0".parse().unwrap())).await;
    let dedicated = tessera.server.as_ref().unwrap().metrics_addr().expect("the metrics listener is up");
    assert_ne!(dedicated, tessera.server.as_ref().unwrap().http_addr());
    let dedicated_url = format!("http://{dedicated}/metrics");
    assert_eq!(status_of(tessera.client.get(&dedicated_url)).await.0, StatusCode::OK);
    assert_eq!(status_of(tessera.client.get(tessera.url("/metrics"))).await.0, StatusCode::NOT_FOUND);
    let elsewhere = format!("http://{dedicated}/v1/collections");
    assert_eq!(status_of(tessera.client.get(&elsewhere).bearer_auth(&tessera.api_key)).await.0, StatusCode::NOT_FOUND);

    // A listener of its own with a token: the token is asked for there too.
    let tessera = TestServer::start_with(|config| {
        config.metrics_addr = Some("127.0.0.1:0".parse().unwrap());
        config.metrics_token = Some(METRICS_TOKEN.into());
    })
    .await;
    let dedicated = tessera.server.as_ref().unwrap().metrics_addr().unwrap();
    let dedicated_url = format!("http://{dedicated}/metrics");
    assert_eq!(status_of(tessera.client.get(&dedicated_url)).await, refused);
    assert_eq!(status_of(tessera.client.get(&dedicated_url).bearer_auth(METRICS_TOKEN)).await.0, StatusCode::OK);
}

#[tokio::test]
async fn a_scrape_after_traffic_is_clean_for_promtool_and_counts_what_happened() {
    let tessera = TestServer::start_with(|config| config.metrics_token = Some(METRICS_TOKEN.into())).await;
    let account_token = tessera.account_token().await;
    let before = samples(&scrape(&tessera).await);

    // An HTTP reading, an MQTT reading, a refused credential over HTTP, a refused MQTT connection, a path no route
    // has.
    let (status, _) =
        tessera.ubidots(Method::POST, "/devices/metrics-dev", &account_token, Some(json!({"t": 1}))).await;
    assert_eq!(status, StatusCode::OK);
    let mut device = Client::connect(&tessera, &account_token, "").await.unwrap();
    assert!(device.publish("/v1.6/devices/metrics-mqtt", json!({"temperature": 21.5})).await);
    let (status, _) = tessera.ubidots(Method::GET, "/devices/metrics-dev", "not-a-token", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(Client::connect(&tessera, "nobody", "nothing").await.is_err());
    let (status, _) = tessera.call(Method::GET, "/no/such/route/42", &[], None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let text = scrape(&tessera).await;
    let after = samples(&text);
    let moved = |series: &str| {
        let now = after.get(series).unwrap_or_else(|| panic!("{series} is not in the scrape:\n{text}"));
        now - before.get(series).copied().unwrap_or(0.0)
    };
    let ubidots = |route: &str, code: &str| {
        format!("tessera_http_requests_total{{dialect=\"ubidots\",route=\"{route}\",code=\"{code}\"}}")
    };
    assert_eq!(moved(&ubidots("/api/v1.6/devices/{device}", "200")), 1.0);
    assert_eq!(moved(&ubidots("/api/v1.6/devices/{device}", "401")), 1.0);
    assert_eq!(
        moved(
            "tessera_http_request_duration_seconds_count{dialect=\"ubidots\",route=\"/api/v1.6/devices/{device}\",code=\"200\"}"
        ),
        1.0
    );
    assert_eq!(moved("tessera_http_requests_total{dialect=\"horde\",route=\"unmatched\",code=\"404\"}"), 1.0);
    assert_eq!(moved("tessera_http_requests_total{dialect=\"server\",route=\"/metrics\",code=\"200\"}"), 1.0);
    assert!(!text.contains("metrics-dev") && !text.contains("/no/such"), "no path requested becomes a label");
    assert!(!text.contains(METRICS_TOKEN) && !text.contains(&account_token), "no secret shows");

    assert_eq!(moved("tessera_readings_committed_total"), 2.0, "one reading over HTTP, one over MQTT");
    assert_eq!(moved("tessera_readings_failed_total"), 0.0);
    let batches = moved("tessera_writer_batches_total");
    assert!((1.0..=2.0).contains(&batches), "the two readings took one or two commits: {batches}");
    assert_eq!(moved("tessera_writer_commit_duration_seconds_count"), batches);
    assert_eq!(moved("tessera_writer_requests_total"), 2.0);
    assert_eq!(after["tessera_writer_queue_depth"], 0.0, "nothing waits once both were answered");
    assert_eq!(moved("tessera_credential_refusals_total{reason=\"malformed\"}"), 1.0);
    assert_eq!(moved("tessera_mqtt_connections_accepted_total"), 2.0);
    assert_eq!(moved("tessera_mqtt_connections_refused_total{reason=\"bad_credentials\"}"), 1.0);
    assert_eq!(after["tessera_mqtt_connections"], 1.0, "the device is still connected");
    assert_eq!(moved("tessera_mqtt_messages_received_total"), 1.0);
    assert_eq!(moved("tessera_cache_misses_total{cache=\"devices\"}"), 2.0, "two new devices, each looked up once");
    assert!(moved("tessera_cache_hits_total{cache=\"tokens\"}") >= 2.0, "the account token came from the cache");
    assert!(after["tessera_cache_entries{cache=\"devices\"}"] >= 2.0, "both devices are cached: {text}");
    let pool = match crate::STORE {
        StoreKind::Sqlite => "tessera_store_pool_max_connections{pool=\"writes\"}",
        StoreKind::Postgres => "tessera_store_pool_max_connections{pool=\"main\"}",
    };
    assert!(after[pool] >= 1.0, "{text}");
    if crate::STORE == StoreKind::Postgres {
        assert_eq!(after["tessera_cluster_connected"], 1.0);
        assert!(moved("tessera_cluster_events_sent_total") >= 1.0, "the readings went out to the other nodes");
    } else {
        assert!(!text.contains("tessera_cluster_"), "one node on SQLite has no cluster figures");
    }

    // The device leaves: the gauge follows.
    drop(device);
    let mut connected = after["tessera_mqtt_connections"];
    for _ in 0..100 {
        connected = samples(&scrape(&tessera).await)["tessera_mqtt_connections"];
        if connected == 0.0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(connected, 0.0, "a closed connection leaves the gauge");

    check_with_promtool(&text);
}

/// `promtool check metrics` reads the exposition on its standard input and lints it (names, units, HELP, TYPE);
/// clean output and exit status 0 mean no complaint.
fn check_with_promtool(text: &str) {
    let Ok(mut promtool) = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    else {
        assert!(std::env::var_os("CI").is_none(), "CI must install promtool (apt-get install prometheus)");
        eprintln!("skipped promtool check metrics: promtool is not installed (apt-get install prometheus)");
        return;
    };
    promtool.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let output = promtool.wait_with_output().unwrap();
    let complaints = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success() && complaints.trim().is_empty(), "promtool complains:\n{complaints}\n{text}");
}
