//! Timestamps on every dialect: parsed by a date crate, impossible instants refused with an error naming the
//! text, and one range kept (1970-01-01T00:00:00Z to 9999-12-31T23:59:59.999Z) whichever way a reading arrives.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::TestServer;
use crate::mqtt::Client;

/// A device with a `temp` reading stored at a known instant, and a device token for it.
async fn device_with_state(tessera: &TestServer) -> (String, String) {
    let account_token = tessera.account_token().await;
    tessera.ubidots(Method::POST, "/devices/probe", &account_token, Some(json!({"temp": 1}))).await;
    let (_, sources) = tessera.ubidots(Method::GET, "/datasources", &account_token, None).await;
    let device = sources["results"][0]["id"].as_str().unwrap().to_owned();
    let (_, minted) =
        tessera.native(Method::POST, &format!("/devices/{device}/tokens"), &tessera.api_key, Some(json!({}))).await;
    let token = minted["secret"].as_str().unwrap().to_owned();
    let (status, _) = put_state(tessera, &device, &token, json!({"value": 5, "at": "2021-10-15T10:00:00Z"})).await;
    assert_eq!(status, StatusCode::OK);
    (device, token)
}

async fn put_state(tessera: &TestServer, device: &str, token: &str, body: Value) -> (StatusCode, Value) {
    let path = format!("/device/{device}/asset/temp/state");
    tessera.call(Method::PUT, &path, &[("authorization", &format!("Bearer {token}"))], Some(body)).await
}

async fn state(tessera: &TestServer, device: &str, token: &str) -> Value {
    let path = format!("/device/{device}/asset/temp/state");
    tessera.call(Method::GET, &path, &[("authorization", &format!("Bearer {token}"))], None).await.1
}

#[tokio::test]
async fn allthingstalk_refuses_impossible_instants_by_name_and_keeps_what_it_had() {
    let tessera = TestServer::start().await;
    let (device, token) = device_with_state(&tessera).await;
    let before = state(&tessera, &device, &token).await;
    for (at, named) in [
        // A multi-byte character where the offset's digits should be: was a panic ("Service panicked", 500).
        ("2021-10-15T10:00:00+0é", "2021-10-15T10:00:00+0é"),
        // Was stored at -5336598346174303232 ms (the arithmetic wrapped).
        ("999999999-01-01T00:00:00Z", "999999999-01-01T00:00:00Z"),
        // Was taken as an offset of 99 hours and 99 minutes.
        ("2021-10-15T10:00:00+99:99", "+99:99"),
        // Was stored as March 3rd.
        ("2021-02-31T00:00:00Z", "2021-02-31"),
        // Before the epoch: outside the kept range on every dialect.
        ("1969-12-31T23:59:59Z", "outside"),
        // RFC 3339 writes it, but no place is 23 hours and 59 minutes behind UTC.
        ("2024-01-01T00:00:00-23:59", "offset"),
    ] {
        let (status, error) = put_state(&tessera, &device, &token, json!({"value": 9, "at": at})).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{at}: {error}");
        let message = error["message"].as_str().unwrap_or_else(|| panic!("{at}: AllThingsTalk's shape: {error}"));
        assert!(message.contains(named) && message.contains("'at'"), "{at}: {message}");
    }
    let (status, error) = put_state(&tessera, &device, &token, json!({"value": 9, "at": 12})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{error}");
    assert_eq!(state(&tessera, &device, &token).await, before, "nothing refused was stored");
}

#[tokio::test]
async fn ubidots_refuses_timestamps_beyond_the_kept_range() {
    let tessera = TestServer::start().await;
    let token = tessera.account_token().await;
    for timestamp in [json!(253_402_300_800_000_i64), json!(-1), json!(9.0e15), json!(i64::MAX)] {
        let body = json!({"temp": {"value": 1, "timestamp": timestamp}});
        let (status, error) = tessera.ubidots(Method::POST, "/devices/probe", &token, Some(body)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{timestamp}: {error}");
        assert!(error.to_string().contains("9999-12-31T23:59:59.999Z"), "{timestamp}: {error}");
    }
    let latest = json!({"temp": {"value": 2, "timestamp": 253_402_300_799_999_i64}});
    let (status, _) = tessera.ubidots(Method::POST, "/devices/probe", &token, Some(latest)).await;
    assert_eq!(status, StatusCode::OK, "the last instant of the range is kept");
    let (_, values) = tessera.ubidots(Method::GET, "/devices/probe/temp/values", &token, None).await;
    assert_eq!(values["results"][0]["timestamp"], 253_402_300_799_999_i64, "{values}");
}

#[tokio::test]
async fn an_mqtt_state_with_a_broken_time_is_refused_without_a_panic_and_other_clients_go_on() {
    let tessera = TestServer::start().await;
    let (device, token) = device_with_state(&tessera).await;
    let mut bystander = Client::connect(&tessera, &token, &token).await.unwrap();
    bystander.subscribe(&format!("device/{device}/asset/temp/feed")).await;
    let mut sender = Client::connect(&tessera, &token, &token).await.unwrap();
    let topic = format!("device/{device}/asset/temp/state");
    assert!(
        !sender.publish(&topic, json!({"value": 1, "at": "2021-10-15T10:00:00+0é"})).await,
        "a refused publish ends the sender's connection (MQTT 3.1.1 cannot refuse one publish)"
    );
    let mut sender = Client::connect(&tessera, &token, &token).await.unwrap();
    assert!(sender.publish(&topic, json!({"value": 2})).await);
    // A retained last state may come first; the new state follows on the same, still open, connection.
    loop {
        let (_, feed) = bystander.message().await;
        if feed["value"] == 2.0 {
            break;
        }
        assert_eq!(feed["value"], 1.0, "only the retained state before it: {feed}");
    }
    assert_eq!(state(&tessera, &device, &token).await["state"]["value"], 2.0);
}
