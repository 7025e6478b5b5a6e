//! Sending and reading data through the Ubidots label routes.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::helpers::TestServer;

#[tokio::test]
async fn all_three_body_forms_mixed_store_every_dot() {
    let tessera = TestServer::start().await;
    let token = tessera.account_token().await;
    let body = json!({
        "humidity": 22,
        "temperature": {"value": 10, "timestamp": 1634311791000_i64, "context": {"lat": 6.1, "lng": -1.2}},
        "pressure": [{"value": 10, "timestamp": 1634311791000_i64}, {"value": 11, "timestamp": 1634311792000_i64}],
    });
    let (status, answer) = tessera.ubidots(Method::POST, "/devices/weather", &token, Some(body)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        answer,
        json!({
            "humidity": [{"status_code": 201}],
            "temperature": [{"status_code": 201}],
            "pressure": [{"status_code": 201}, {"status_code": 201}],
        })
    );
    let (_, temperature) = tessera.ubidots(Method::GET, "/devices/weather/temperature/values", &token, None).await;
    assert_eq!(temperature["results"][0]["timestamp"], 1634311791000_i64);
    assert_eq!(temperature["results"][0]["context"], json!({"lat": 6.1, "lng": -1.2}));
    let (_, pressure) = tessera.ubidots(Method::GET, "/devices/weather/pressure/values", &token, None).await;
    assert_eq!(pressure["count"], 2);
    assert_eq!(pressure["results"][0]["value"], 11.0, "newest first");
    let (status, last) = tessera.ubidots(Method::GET, "/devices/weather/pressure/lv", &token, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(last, json!(11.0));

    let (status, device) = tessera.ubidots(Method::GET, "/devices/weather/", &token, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(device["pressure"]["value"], 11.0);
    assert_eq!(device["humidity"]["value"], 22.0);
    assert_eq!(device.as_object().unwrap().len(), 3);
}

#[tokio::test]
async fn the_timestamp_parameter_sets_the_default_and_labels_fold_case() {
    let tessera = TestServer::start().await;
    let token = tessera.account_token().await;
    let body = json!({"Temp": 1, "temp": {"value": 2, "timestamp": 5000}});
    let (status, answer) =
        tessera.ubidots(Method::POST, "/devices/Mixed-Case/?timestamp=4000", &token, Some(body)).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let (_, values) = tessera.ubidots(Method::GET, "/devices/mixed-case/temp/values", &token, None).await;
    let timestamps: Vec<i64> =
        values["results"].as_array().unwrap().iter().map(|v| v["timestamp"].as_i64().unwrap()).collect();
    assert_eq!(timestamps, [5000, 4000]);
}

#[tokio::test]
async fn values_paginate_and_filter_by_inclusive_range() {
    let tessera = TestServer::start().await;
    let token = tessera.account_token().await;
    let dots: Vec<_> = (1..=25).map(|n| json!({"value": n, "timestamp": n * 1000})).collect();
    let (status, _) = tessera.ubidots(Method::POST, "/devices/d/v/values", &token, Some(json!(dots))).await;
    assert_eq!(status, StatusCode::OK);

    let (_, page) = tessera.ubidots(Method::GET, "/devices/d/v/values?page_size=10&page=2", &token, None).await;
    assert_eq!(page["count"], 25);
    let values: Vec<f64> = page["results"].as_array().unwrap().iter().map(|v| v["value"].as_f64().unwrap()).collect();
    assert_eq!(values, (6..=15).rev().map(f64::from).collect::<Vec<_>>());
    assert!(page["next"].as_str().unwrap().ends_with("/api/v1.6/devices/d/v/values?page_size=10&page=3"));

    let (_, ranged) = tessera.ubidots(Method::GET, "/devices/d/v/values?start=3000&end=5000", &token, None).await;
    assert_eq!(ranged["count"], 3);
    assert_eq!(ranged["results"][0]["timestamp"], 5000);
    assert_eq!(ranged["results"][2]["timestamp"], 3000);

    let (status, body) = tessera.ubidots(Method::GET, "/devices/d/v/values?page_size=0", &token, None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body["detail"].as_str().unwrap().contains("page_size"), "{body}");
    let (status, _) = tessera.ubidots(Method::GET, "/devices/d/v/values?start=yesterday", &token, None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn a_malformed_body_is_refused_whole_naming_the_problem() {
    let tessera = TestServer::start().await;
    let token = tessera.account_token().await;
    tessera.ubidots(Method::POST, "/devices/d", &token, Some(json!({"good": 1}))).await;

    let (status, body) =
        tessera.ubidots(Method::POST, "/devices/d", &token, Some(json!({"good": 2, "bad": {"value": "x"}}))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let detail = body["detail"].as_str().unwrap();
    assert!(detail.contains("'bad'") && detail.contains("must be a number"), "{detail}");
    let (_, values) = tessera.ubidots(Method::GET, "/devices/d/good/values", &token, None).await;
    assert_eq!(values["count"], 1, "no dot of the refused body was stored");
    let (status, _) = tessera.ubidots(Method::GET, "/devices/d/bad/values", &token, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "no variable was created for the refused body");

    let response = tessera
        .client
        .post(tessera.url("/api/v1.6/devices/d"))
        .header("x-auth-token", &token)
        .header("content-type", "application/json")
        .body("{\"good\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let body: serde_json::Value = response.json().await.unwrap();
    assert!(body["detail"].as_str().unwrap().contains("not valid JSON"), "{body}");

    let (status, body) = tessera.ubidots(Method::POST, "/devices/bad label", &token, Some(json!({"t": 1}))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
}

#[tokio::test]
async fn an_oversized_body_is_refused_and_nothing_is_stored() {
    let tessera = TestServer::start().await;
    let token = tessera.account_token().await;
    let dots: Vec<_> = (0..1000).map(|n| json!({"value": n, "timestamp": n})).collect();
    let body = json!({"big": dots});
    assert!(body.to_string().len() > 10_000);
    let (status, answer) = tessera.ubidots(Method::POST, "/devices/d", &token, Some(body)).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{answer}");
    assert!(answer["detail"].as_str().unwrap().contains("10000 bytes"), "{answer}");
    let (status, _) = tessera.ubidots(Method::GET, "/devices/d", &token, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn readings_of_unknown_devices_and_variables_are_404() {
    let tessera = TestServer::start().await;
    let token = tessera.account_token().await;
    let (status, _) = tessera.ubidots(Method::GET, "/devices/nothing/v/values", &token, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    tessera.ubidots(Method::POST, "/devices/d", &token, Some(json!({"t": 1}))).await;
    let (status, _) = tessera.ubidots(Method::GET, "/devices/d/nothing/lv", &token, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn acknowledged_readings_survive_a_restart() {
    let tessera = TestServer::start().await;
    let token = tessera.account_token().await;
    let mut sends = tokio::task::JoinSet::new();
    for n in 0..20 {
        let request = tessera
            .client
            .post(tessera.url("/api/v1.6/devices/d"))
            .header("x-auth-token", &token)
            .json(&json!({"v": {"value": n, "timestamp": n}}));
        sends.spawn(async move { request.send().await.map(|response| response.status()) });
    }
    while let Some(sent) = sends.join_next().await {
        assert_eq!(sent.unwrap().unwrap(), StatusCode::OK);
    }
    let restarted = tessera.restart().await;
    let (_, values) = restarted.ubidots(Method::GET, "/devices/d/v/values", &token, None).await;
    assert_eq!(values["count"], 20);
}
