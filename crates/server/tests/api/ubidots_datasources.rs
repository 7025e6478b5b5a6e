//! The id-based Ubidots API: datasources, variables, values, and `collections/values`.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::helpers::TestServer;

#[tokio::test]
async fn datasources_and_variables_round_trip_with_absolute_urls() {
    let tessera = TestServer::start().await;
    let token = tessera.account_token().await;

    let (status, datasource) =
        tessera.ubidots(Method::POST, "/datasources/", &token, Some(json!({"name": "Living room"}))).await;
    assert_eq!(status, StatusCode::CREATED, "{datasource}");
    let id = datasource["id"].as_str().unwrap();
    assert_eq!(datasource["name"], "Living room");
    assert_eq!(datasource["label"], "living-room");
    assert_eq!(datasource["url"], tessera.url(&format!("/api/v1.6/datasources/{id}")));
    assert_eq!(datasource["variables_url"], tessera.url(&format!("/api/v1.6/datasources/{id}/variables")));

    let (status, again) =
        tessera.ubidots(Method::POST, "/datasources", &token, Some(json!({"name": "living room"}))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{again}");

    let (status, variable) = tessera
        .ubidots(
            Method::POST,
            &format!("/datasources/{id}/variables"),
            &token,
            Some(json!({"name": "Temperature", "unit": "C"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{variable}");
    let variable_id = variable["id"].as_str().unwrap();
    assert_eq!(variable["unit"], "C");
    assert_eq!(variable["datasource"]["url"], datasource["url"]);
    assert_eq!(variable["url"], tessera.url(&format!("/api/v1.6/variables/{variable_id}")));
    assert_eq!(variable["values_url"], tessera.url(&format!("/api/v1.6/variables/{variable_id}/values")));

    let (_, fetched) = tessera.ubidots(Method::GET, &format!("/variables/{variable_id}"), &token, None).await;
    assert_eq!(fetched, variable);
    let (_, listed) = tessera.ubidots(Method::GET, &format!("/datasources/{id}/variables"), &token, None).await;
    assert_eq!(listed["count"], 1);
    let (_, all) = tessera.ubidots(Method::GET, "/variables", &token, None).await;
    assert_eq!(all["results"][0]["id"], variable["id"]);

    // The label routes see the same device and variable.
    let (status, _) =
        tessera.ubidots(Method::POST, "/devices/living-room", &token, Some(json!({"temperature": 21.5}))).await;
    assert_eq!(status, StatusCode::OK);
    let (_, values) = tessera.ubidots(Method::GET, &format!("/variables/{variable_id}/values"), &token, None).await;
    assert_eq!(values["count"], 1);
    assert_eq!(values["results"][0]["value"], 21.5);

    let (status, _) = tessera.ubidots(Method::DELETE, &format!("/variables/{variable_id}"), &token, None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = tessera.ubidots(Method::GET, &format!("/variables/{variable_id}"), &token, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = tessera.ubidots(Method::DELETE, &format!("/datasources/{id}"), &token, None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (_, none) = tessera.ubidots(Method::GET, "/datasources", &token, None).await;
    assert_eq!(none["count"], 0);
    let (status, _) = tessera.ubidots(Method::GET, "/datasources/not-an-id", &token, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn variable_values_take_one_dot_or_a_list_and_ranges_can_be_deleted() {
    let tessera = TestServer::start().await;
    let token = tessera.account_token().await;
    tessera.ubidots(Method::POST, "/devices/d", &token, Some(json!({"v": {"value": 0, "timestamp": 500}}))).await;
    let (_, variables) = tessera.ubidots(Method::GET, "/variables", &token, None).await;
    let id = variables["results"][0]["id"].as_str().unwrap();
    let values_path = format!("/variables/{id}/values");

    let (status, stored) = tessera
        .ubidots(Method::POST, &values_path, &token, Some(json!({"value": 1, "timestamp": 1000, "context": {"a": 1}})))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(stored["value"], 1.0);
    assert_eq!(stored["timestamp"], 1000);
    assert_eq!(stored["context"], json!({"a": 1}));
    assert!(stored["created_at"].is_i64());

    let dots = json!([{"value": 2, "timestamp": 2000}, {"value": 3, "timestamp": 3000}]);
    let (status, statuses) =
        tessera.ubidots(Method::POST, &format!("{values_path}?force=true"), &token, Some(dots)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(statuses, json!([{"status_code": 201}, {"status_code": 201}]));

    let (status, deleted) = tessera.ubidots(Method::DELETE, &format!("{values_path}/1000/2000"), &token, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(deleted, json!({"deleted": 2}));
    let (_, left) = tessera.ubidots(Method::GET, &values_path, &token, None).await;
    let timestamps: Vec<i64> =
        left["results"].as_array().unwrap().iter().map(|v| v["timestamp"].as_i64().unwrap()).collect();
    assert_eq!(timestamps, [3000, 500]);
    let (status, _) = tessera.ubidots(Method::DELETE, &format!("{values_path}/2000/1000"), &token, None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn collection_values_store_all_or_nothing() {
    let tessera = TestServer::start().await;
    let token = tessera.account_token().await;
    tessera.ubidots(Method::POST, "/devices/d", &token, Some(json!({"a": 0, "b": 0}))).await;
    let (_, variables) = tessera.ubidots(Method::GET, "/variables", &token, None).await;
    let a = variables["results"][0]["id"].as_str().unwrap();
    let b = variables["results"][1]["id"].as_str().unwrap();

    let items = json!([
        {"variable": a, "value": 1, "timestamp": 1000},
        {"variable": b, "value": 2, "timestamp": 1000},
        {"variable": a, "value": 3, "timestamp": 2000},
    ]);
    let (status, answer) = tessera.ubidots(Method::POST, "/collections/values", &token, Some(items)).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer, json!([{"status_code": 201}, {"status_code": 201}, {"status_code": 201}]));
    let (_, values_a) = tessera.ubidots(Method::GET, &format!("/variables/{a}/values"), &token, None).await;
    assert_eq!(values_a["count"], 3);

    let bad = json!([{"variable": a, "value": 9, "timestamp": 9000}, {"variable": "0000000000000", "value": 1}]);
    let (status, _) = tessera.ubidots(Method::POST, "/collections/values", &token, Some(bad)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let malformed = json!([{"variable": a, "value": 9, "timestamp": 9000}, {"value": 1}]);
    let (status, body) = tessera.ubidots(Method::POST, "/collections/values", &token, Some(malformed)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body["detail"].as_str().unwrap().starts_with("Item 1"), "{body}");
    let (_, values_a) = tessera.ubidots(Method::GET, &format!("/variables/{a}/values"), &token, None).await;
    assert_eq!(values_a["count"], 3, "nothing of a refused request was stored");
}
