//! Token rules end to end: isolation between organizations, typos, revocation, expiry, read-only tokens, and
//! tokens in URLs.

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::helpers::{DENIED, TestServer};

#[tokio::test]
async fn an_organization_token_never_reaches_another_organizations_device() {
    let tessera = TestServer::start().await;
    let org_a = tessera.organization("A").await;
    let org_b = tessera.organization("B").await;
    let token_a = tessera.organization_token(&org_a, "a").await["token"].as_str().unwrap().to_owned();
    let token_b = tessera.organization_token(&org_b, "b").await["token"].as_str().unwrap().to_owned();

    let (status, _) = tessera.ubidots(Method::POST, "/devices/b-device", &token_b, Some(json!({"t": 1}))).await;
    assert_eq!(status, StatusCode::OK);

    for (method, path, body) in [
        (Method::POST, "/devices/b-device", Some(json!({"t": 2}))),
        (Method::POST, "/devices/b-device/t/values", Some(json!({"value": 2}))),
        (Method::GET, "/devices/b-device", None),
        (Method::GET, "/devices/b-device/t/values", None),
        (Method::GET, "/devices/b-device/t/lv", None),
    ] {
        let (status, answer) = tessera.ubidots(method.clone(), path, &token_a, body).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{method} {path}: {answer}");
        assert_eq!(answer, json!({"detail": DENIED}));
    }
    // Nor through the id-based API.
    let (_, listed) = tessera.ubidots(Method::GET, "/datasources", &token_a, None).await;
    assert_eq!(listed["count"], 0);
    let (_, b_sources) = tessera.ubidots(Method::GET, "/datasources", &token_b, None).await;
    let device_id = b_sources["results"][0]["id"].as_str().unwrap();
    let (status, _) = tessera.ubidots(Method::GET, &format!("/datasources/{device_id}"), &token_a, None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = tessera.ubidots(Method::DELETE, &format!("/datasources/{device_id}"), &token_a, None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (_, values) = tessera.ubidots(Method::GET, "/devices/b-device/t/values", &token_b, None).await;
    assert_eq!(values["count"], 1, "nothing of A's attempts was stored");
}

#[tokio::test]
async fn a_token_with_one_changed_character_is_refused_with_401() {
    let tessera = TestServer::start().await;
    let token = tessera.account_token().await;
    let mut flipped = token.clone().into_bytes();
    let position = flipped.len() - 10;
    flipped[position] = if flipped[position] == b'a' { b'b' } else { b'a' };
    let flipped = String::from_utf8(flipped).unwrap();
    let (status, body) = tessera.ubidots(Method::POST, "/devices/d", &flipped, Some(json!({"t": 1}))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(body["detail"].as_str().unwrap().contains("checksum"), "{body}");
    let (status, body) = tessera.ubidots(Method::GET, "/datasources", "not-a-token", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    let (status, body) = tessera.call(Method::GET, "/api/v1.6/datasources", &[], None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["detail"], "Authentication credentials were not provided.");
}

async fn mint(tessera: &TestServer, body: serde_json::Value) -> serde_json::Value {
    let (status, answer) = tessera.native(Method::POST, "/tokens", &tessera.api_key, Some(body)).await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    answer
}

#[tokio::test]
async fn an_expired_token_is_refused() {
    let tessera = TestServer::start().await;
    let minted = mint(&tessera, json!({"kind": "account", "expires_in": 1})).await;
    let secret = minted["secret"].as_str().unwrap();
    assert!(minted["expires_at"].is_string());
    let (status, _) = tessera.ubidots(Method::GET, "/datasources", secret, None).await;
    assert_eq!(status, StatusCode::OK);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (status, body) = tessera.ubidots(Method::GET, "/datasources", secret, None).await;
        if status == StatusCode::UNAUTHORIZED {
            assert!(body["detail"].as_str().unwrap().contains("expired"), "{body}");
            break;
        }
        assert!(Instant::now() < deadline, "the token did not expire");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_read_only_token_reads_and_never_writes() {
    let tessera = TestServer::start().await;
    let writer = tessera.account_token().await;
    let (status, _) = tessera.ubidots(Method::POST, "/devices/d", &writer, Some(json!({"t": 1}))).await;
    assert_eq!(status, StatusCode::OK);
    let read_only = mint(&tessera, json!({"kind": "account", "rights": "read"})).await;
    let secret = read_only["secret"].as_str().unwrap();

    let (status, _) = tessera.ubidots(Method::GET, "/devices/d/t/values", secret, None).await;
    assert_eq!(status, StatusCode::OK);
    for method in [Method::POST, Method::PUT, Method::PATCH] {
        let (status, body) =
            tessera.ubidots(method.clone(), "/devices/d/t/values", secret, Some(json!({"value": 2}))).await;
        assert!(matches!(status, StatusCode::FORBIDDEN | StatusCode::METHOD_NOT_ALLOWED), "{method}: {status} {body}");
    }
    let (status, _) = tessera.ubidots(Method::POST, "/devices/d", secret, Some(json!({"t": 2}))).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (_, sources) = tessera.ubidots(Method::GET, "/datasources", secret, None).await;
    let id = sources["results"][0]["id"].as_str().unwrap();
    let (status, _) = tessera.ubidots(Method::DELETE, &format!("/datasources/{id}"), secret, None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (_, values) = tessera.ubidots(Method::GET, "/devices/d/t/values", &writer, None).await;
    assert_eq!(values["count"], 1);
}

#[tokio::test]
async fn a_token_in_the_url_is_accepted_only_read_only_on_get() {
    let tessera = TestServer::start().await;
    let writer = tessera.account_token().await;
    tessera.ubidots(Method::POST, "/devices/d", &writer, Some(json!({"t": 1}))).await;
    let read_only = mint(&tessera, json!({"kind": "account", "rights": "read"})).await;
    let secret = read_only["secret"].as_str().unwrap();

    let (status, values) =
        tessera.call(Method::GET, &format!("/api/v1.6/devices/d/t/values?token={secret}"), &[], None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(values["count"], 1);
    let (status, _) =
        tessera.call(Method::GET, &format!("/api/v1.6/devices/d/t/values?token={writer}"), &[], None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "a read-write token may not travel in a URL");
    let (status, _) =
        tessera.call(Method::POST, &format!("/api/v1.6/devices/d?token={secret}"), &[], Some(json!({"t": 2}))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn native_token_management_lists_and_revokes() {
    let tessera = TestServer::start().await;
    let org = tessera.organization("Org").await;
    let org_token = tessera.organization_token(&org, "t1").await;
    let (status, listed) =
        tessera.native(Method::GET, &format!("/tokens?collection={org}"), &tessera.api_key, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(listed["tokens"].as_array().unwrap().len(), 1);
    assert_eq!(listed["tokens"][0]["scope"], json!({"kind": "collection", "id": org}));
    assert!(!listed.to_string().contains(org_token["token"].as_str().unwrap()));

    // A token cannot manage tokens, not even an account-wide one.
    let account_token = tessera.account_token().await;
    let (status, problem) = tessera.native(Method::GET, "/tokens", &account_token, None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(problem["status"], 403);

    let id = org_token["id"].as_str().unwrap();
    let (status, _) = tessera.native(Method::DELETE, &format!("/tokens/{id}"), &account_token, None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = tessera.native(Method::DELETE, &format!("/tokens/{id}"), &tessera.api_key, None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = tessera.native(Method::GET, &format!("/tokens/{id}"), &tessera.api_key, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) =
        tessera.ubidots(Method::POST, "/devices/d", org_token["token"].as_str().unwrap(), Some(json!({"t": 1}))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn token_use_is_counted() {
    let tessera = TestServer::start().await;
    let minted = mint(&tessera, json!({"kind": "account", "name": "counted"})).await;
    let secret = minted["secret"].as_str().unwrap();
    for _ in 0..3 {
        tessera.ubidots(Method::GET, "/datasources", secret, None).await;
    }
    let id = minted["id"].as_str().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, token) = tessera.native(Method::GET, &format!("/tokens/{id}"), &tessera.api_key, None).await;
        if token["uses"] == 3 {
            assert!(token["last_used_at"].is_string());
            break;
        }
        assert!(Instant::now() < deadline, "usage was not recorded: {token}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn deleting_a_collection_revokes_its_tokens() {
    let tessera = TestServer::start().await;
    let org = tessera.organization("Short-lived").await;
    let org_token = tessera.organization_token(&org, "t").await;
    let token = org_token["token"].as_str().unwrap();
    // The organization token reaches its collection, so it may delete it (it holds no devices yet)...
    let (status, _) = tessera.native(Method::DELETE, &format!("/collections/{org}"), token, None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    // ...and is refused from then on, like every other token of that collection.
    let (status, body) = tessera.ubidots(Method::POST, "/devices/after", token, Some(json!({"t": 1}))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
}

#[tokio::test]
async fn credentials_that_read_no_data_cannot_list_it() {
    let tessera = TestServer::start().await;
    let token = tessera.account_token().await;
    tessera.ubidots(Method::POST, "/devices/d", &token, Some(json!({"t": 1}))).await;
    for path in ["/datasources", "/variables"] {
        let (status, body) = tessera.ubidots(Method::GET, path, &tessera.api_key, None).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{path}: {body}");
        assert!(body.get("count").is_none());
    }
    let (status, _) = tessera.native(Method::GET, "/collections", &tessera.api_key, None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn a_token_with_non_ascii_characters_is_refused_not_a_crash() {
    let tessera = TestServer::start().await;
    let token = tessera.account_token().await;
    // As long in bytes as a real token, with a two-byte character where the checksum begins.
    let forged = format!("{}%C3%A9aaaaaa", &token[..token.len() - 8]);
    let (status, body) = tessera.call(Method::GET, &format!("/api/v1.6/datasources?token={forged}"), &[], None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
}

#[tokio::test]
async fn device_and_ground_tokens_reach_device_data_only() {
    let tessera = TestServer::start().await;
    let org = tessera.organization("Ground").await;
    let org_token = tessera.organization_token(&org, "provisioner").await;
    let provisioner = org_token["token"].as_str().unwrap();
    for label in ["meter-1", "meter-2"] {
        tessera.ubidots(Method::POST, &format!("/devices/{label}"), provisioner, Some(json!({"t": 1}))).await;
    }
    let account_token = tessera.account_token().await;
    tessera.ubidots(Method::POST, "/devices/elsewhere", &account_token, Some(json!({"t": 1}))).await;
    let (_, sources) = tessera.ubidots(Method::GET, "/datasources", provisioner, None).await;
    let meter_1 = sources["results"].as_array().unwrap().iter().find(|d| d["label"] == "meter-1").unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();

    // Two device tokens for one device: one can be rotated while the other works.
    let mut device_tokens = Vec::new();
    for name in ["primary", "spare"] {
        let (status, minted) = tessera
            .native(
                Method::POST,
                &format!("/devices/{meter_1}/tokens"),
                &tessera.api_key,
                Some(json!({"name": name, "expires_in": 3600})),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{minted}");
        assert!(minted["secret"].as_str().unwrap().starts_with("tsd_"));
        assert!(minted["expires_at"].is_string());
        assert_eq!(minted["issued_by"]["kind"], "token");
        device_tokens.push(minted);
    }
    let device_token = device_tokens[0]["secret"].as_str().unwrap();
    let (_, listed) = tessera.native(Method::GET, &format!("/devices/{meter_1}/tokens"), &tessera.api_key, None).await;
    assert_eq!(listed["tokens"].as_array().unwrap().len(), 2);
    assert!(!listed.to_string().contains(device_token), "listings never show secrets");

    let (status, _) = tessera.ubidots(Method::POST, "/devices/meter-1", device_token, Some(json!({"t": 2}))).await;
    assert_eq!(status, StatusCode::OK, "a device token writes its device");
    for (method, path) in [
        (Method::POST, "/devices/meter-2"),
        (Method::POST, "/devices/brand-new"),
        (Method::GET, "/devices/meter-2/t/values"),
    ] {
        let (status, _) = tessera.ubidots(method.clone(), path, device_token, Some(json!({"t": 3}))).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{method} {path}");
    }
    let (status, _) = tessera.native(Method::GET, &format!("/collections/{org}"), device_token, None).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "never the collection");
    let (status, _) = tessera.native(Method::GET, "/tokens", device_token, None).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "never tokens");

    // A ground token reaches every device of its ground, and no other, at device level only.
    let (status, ground) = tessera
        .native(
            Method::POST,
            &format!("/collections/{org}/ground-tokens"),
            &tessera.api_key,
            Some(json!({"name": "g"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{ground}");
    let ground_token = ground["secret"].as_str().unwrap();
    assert!(ground_token.starts_with("tsg_"));
    for label in ["meter-1", "meter-2"] {
        let (status, _) =
            tessera.ubidots(Method::POST, &format!("/devices/{label}"), ground_token, Some(json!({"t": 4}))).await;
        assert_eq!(status, StatusCode::OK, "{label}");
    }
    let (status, _) = tessera.ubidots(Method::GET, "/devices/elsewhere/t/values", ground_token, None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) =
        tessera.ubidots(Method::POST, "/devices/new-in-ground", ground_token, Some(json!({"t": 1}))).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "device-level tokens do not create devices");
    let (_, visible) = tessera.ubidots(Method::GET, "/datasources", ground_token, None).await;
    assert_eq!(visible["count"], 2);

    // Deleting one device token leaves the other working.
    let id = device_tokens[0]["id"].as_str().unwrap();
    let (status, _) =
        tessera.native(Method::DELETE, &format!("/devices/{meter_1}/tokens/{id}"), &tessera.api_key, None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = tessera.ubidots(Method::POST, "/devices/meter-1", device_token, Some(json!({"t": 5}))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let spare = device_tokens[1]["secret"].as_str().unwrap();
    let (status, _) = tessera.ubidots(Method::POST, "/devices/meter-1", spare, Some(json!({"t": 5}))).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) =
        tessera.native(Method::POST, &format!("/devices/{meter_1}/tokens"), provisioner, Some(json!({}))).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "a token never mints tokens");
}
