//! The AllThingsTalk dialect over HTTP: assets with profiles and their state, seen by the other dialects too.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::TestServer;

async fn att(
    tessera: &TestServer,
    method: Method,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    tessera.call(method, path, &[("authorization", &format!("Bearer {token}"))], body).await
}

#[tokio::test]
async fn assets_take_states_their_profile_allows_and_every_dialect_sees_them() {
    let tessera = TestServer::start().await;
    let account_token = tessera.account_token().await;
    tessera.ubidots(Method::POST, "/devices/thermostat", &account_token, Some(json!({"temperature": 20}))).await;
    let (_, sources) = tessera.ubidots(Method::GET, "/datasources", &account_token, None).await;
    let device = sources["results"][0]["id"].as_str().unwrap().to_owned();
    let (_, minted) = tessera
        .native(Method::POST, &format!("/devices/{device}/tokens"), &tessera.api_key, Some(json!({"name": "sdk"})))
        .await;
    let token = minted["secret"].as_str().unwrap().to_owned();

    let (status, asset) = att(
        &tessera,
        Method::POST,
        &format!("/device/{device}/assets"),
        &token,
        Some(json!({
            "Name": "setpoint", "Title": "Set point", "Description": "wanted temperature", "Is": "actuator",
            "Profile": {"type": "integer", "minimum": 5, "maximum": 30}
        })),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{asset}");
    let keys: Vec<&str> = asset.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys, ["id", "name", "title", "description", "is", "profile", "deviceId"]);
    assert_eq!(asset["is"], "actuator");
    assert_eq!(asset["deviceId"], device.as_str());

    let (_, assets) = att(&tessera, Method::GET, &format!("/device/{device}/assets"), &token, None).await;
    let names: Vec<&str> = assets.as_array().unwrap().iter().map(|a| a["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["temperature", "setpoint"], "the Ubidots variable is an asset too");

    let state_path = format!("/device/{device}/asset/setpoint/state");
    let (status, _) = att(&tessera, Method::GET, &state_path, &token, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "no state yet");
    let (status, stored) =
        att(&tessera, Method::PUT, &state_path, &token, Some(json!({"value": 21, "at": "2026-11-22T10:00:00.500Z"})))
            .await;
    assert_eq!(status, StatusCode::OK, "{stored}");
    for (value, expected) in [(json!(21.5), "integer"), (json!(31), "above"), (json!("warm"), "integer")] {
        let (status, error) = att(&tessera, Method::PUT, &state_path, &token, Some(json!({"value": value}))).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{value}");
        assert!(error["message"].as_str().unwrap().contains(expected), "{value}: {error}");
    }
    let (_, state) = att(&tessera, Method::GET, &state_path, &token, None).await;
    assert_eq!(state, json!({"state": {"value": 21.0, "at": "2026-11-22T10:00:00.500Z"}}));

    // The Ubidots dialect reads the same reading, and a state sent there is the asset's state here.
    let (_, last) = tessera.ubidots(Method::GET, "/devices/thermostat/setpoint/lv", &account_token, None).await;
    assert_eq!(last, json!(21.0));
    // The profile holds whichever dialect the value comes through.
    let (status, error) =
        tessera.ubidots(Method::POST, "/devices/thermostat", &account_token, Some(json!({"setpoint": 99}))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{error}");
    assert!(error.to_string().contains("above"), "{error}");
    let (_, last) = tessera.ubidots(Method::GET, "/devices/thermostat/setpoint/lv", &account_token, None).await;
    assert_eq!(last, json!(21.0), "nothing of the refused request is stored");
    tessera
        .ubidots(
            Method::POST,
            "/devices/thermostat",
            &account_token,
            Some(json!({"temperature": {"value": 22, "timestamp": 1_900_000_000_000_i64}})),
        )
        .await;
    let (_, temperature) =
        att(&tessera, Method::GET, &format!("/device/{device}/asset/temperature/state"), &token, None).await;
    assert_eq!(temperature["state"]["value"], 22.0);

    // Values other than numbers keep their form.
    att(
        &tessera,
        Method::POST,
        &format!("/device/{device}/assets"),
        &token,
        Some(json!({"Name": "location", "Is": "sensor", "Profile": {"type": "object"}})),
    )
    .await;
    let location = json!({"lat": 50.8, "lng": 4.3});
    let (status, _) = att(
        &tessera,
        Method::PUT,
        &format!("/device/{device}/asset/location/state"),
        &token,
        Some(json!({"value": location})),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (_, state) = att(&tessera, Method::GET, &format!("/device/{device}/asset/location/state"), &token, None).await;
    assert_eq!(state["state"]["value"], location);

    // A device token reaches its own device only; bad definitions are refused with the reason.
    tessera.ubidots(Method::POST, "/devices/other", &account_token, Some(json!({"t": 1}))).await;
    let (_, sources) = tessera.ubidots(Method::GET, "/datasources", &account_token, None).await;
    let other = sources["results"].as_array().unwrap().iter().find(|d| d["label"] == "other").unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, _) = att(&tessera, Method::GET, &format!("/device/{other}/assets"), &token, None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, error) = att(
        &tessera,
        Method::POST,
        &format!("/device/{device}/assets"),
        &token,
        Some(json!({"Name": "x", "Profile": {"type": "array"}})),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(error["message"].as_str().unwrap().contains("array"), "{error}");
    let (status, _) = att(
        &tessera,
        Method::POST,
        &format!("/device/{device}/assets"),
        &token,
        Some(json!({"Name": "x", "Is": "gadget"})),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, device_json) = att(&tessera, Method::GET, &format!("/device/{device}"), &token, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(device_json["assets"].as_array().unwrap().len(), 3);
}
