//! Device-level tokens (device and ground tokens) reach devices and their data, never group or user resources:
//! every listing of collections, teams or the root refuses them, on every dialect, rather than answering empty.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::helpers::TestServer;

#[tokio::test]
async fn device_and_ground_tokens_cannot_list_collections_teams_or_the_root() {
    let tessera = TestServer::start().await;
    let account_token = tessera.account_token().await;
    tessera.ubidots(Method::POST, "/devices/meter", &account_token, Some(json!({"kwh": 1}))).await;
    let (_, sources) = tessera.ubidots(Method::GET, "/datasources", &account_token, None).await;
    let device = sources["results"][0]["id"].as_str().unwrap().to_owned();
    let collection = tessera.organization("Ground").await;
    let (_, device_token) =
        tessera.native(Method::POST, &format!("/devices/{device}/tokens"), &tessera.api_key, Some(json!({}))).await;
    let (_, ground_token) = tessera
        .native(Method::POST, &format!("/collections/{collection}/ground-tokens"), &tessera.api_key, Some(json!({})))
        .await;
    for token in [&device_token, &ground_token] {
        let secret = token["secret"].as_str().unwrap();
        for path in ["/collections", "/teams", "/"] {
            let (status, body) = tessera.call(Method::GET, path, &[("x-api-token", secret)], None).await;
            assert_eq!(status, StatusCode::FORBIDDEN, "Horde {path} with a {} token: {body}", token["kind"]);
            assert_eq!(body["status"], 403, "Horde's shape: {body}");
        }
        let (status, body) = tessera.native(Method::GET, "/collections", secret, None).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "native with a {} token: {body}", token["kind"]);
        assert!(body["detail"].as_str().unwrap().contains("device-level"), "{body}");
    }
    // The device's own data stays reachable.
    let device_secret = device_token["secret"].as_str().unwrap();
    let (status, _) = tessera
        .call(
            Method::GET,
            &format!("/device/{device}/assets"),
            &[("authorization", &format!("Bearer {device_secret}"))],
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
}
