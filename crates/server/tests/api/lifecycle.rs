//! What happens to tokens after they are made (issue 15): rotation with an overlap, disabling and enabling, bulk
//! and leak revocation, the expiry policy, usage with the address, and the audit trail that records it all.

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{TestServer, client_from, decode};
use crate::mqtt::Client;

/// Polls `check` every 20 ms until it holds; panics after `limit`.
async fn eventually(limit: Duration, what: &str, mut check: impl AsyncFnMut() -> bool) {
    let started = Instant::now();
    while !check().await {
        assert!(started.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A collection token minted with the API key: `(id, secret)`.
async fn collection_token(tessera: &TestServer, collection: &str, extra: Value) -> (String, String) {
    let mut body = json!({"kind": "collection", "collection": collection, "name": "meters"});
    if let (Some(body), Value::Object(extra)) = (body.as_object_mut(), extra) {
        body.extend(extra);
    }
    let (status, token) = tessera.native(Method::POST, "/tokens", &tessera.api_key, Some(body)).await;
    assert_eq!(status, StatusCode::CREATED, "{token}");
    (token["id"].as_str().unwrap().to_owned(), token["secret"].as_str().unwrap().to_owned())
}

/// A device token for `device`: `(id, secret)`.
async fn device_token(tessera: &TestServer, device: &str) -> (String, String) {
    let (status, token) =
        tessera.native(Method::POST, &format!("/devices/{device}/tokens"), &tessera.api_key, Some(json!({}))).await;
    assert_eq!(status, StatusCode::CREATED, "{token}");
    (token["id"].as_str().unwrap().to_owned(), token["secret"].as_str().unwrap().to_owned())
}

async fn writes(tessera: &TestServer, secret: &str, label: &str) -> StatusCode {
    tessera.ubidots(Method::POST, &format!("/devices/{label}"), secret, Some(json!({"t": 2}))).await.0
}

/// The audit entries `query` names, as the administrator sees them.
async fn audit(tessera: &TestServer, admin: &str, query: &str) -> Vec<Value> {
    let (status, body) = tessera.native(Method::GET, &format!("/audit?{query}"), admin, None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["entries"].as_array().unwrap().clone()
}

#[tokio::test]
async fn rotation_keeps_the_token_and_its_old_secret_works_until_the_overlap_ends() {
    let tessera = TestServer::start().await;
    let collection = tessera.organization("Rotating").await;
    let (id, old) = collection_token(&tessera, &collection, json!({})).await;
    assert_eq!(writes(&tessera, &old, "pump").await, StatusCode::OK);
    // A connection made with the old secret lives as long as the secret does.
    let mut connected = Client::connect(&tessera, &old, "").await.expect("connects with the old secret");

    let (status, rotated) = tessera
        .native(Method::POST, &format!("/tokens/{id}/rotate"), &tessera.api_key, Some(json!({"overlap_seconds": 1})))
        .await;
    assert_eq!(status, StatusCode::OK, "{rotated}");
    assert_eq!((rotated["id"].as_str(), rotated["name"].as_str()), (Some(id.as_str()), Some("meters")), "same token");
    assert_eq!(rotated["scope"], json!({"kind": "collection", "id": collection}), "same scope: {rotated}");
    let new = rotated["secret"].as_str().unwrap().to_owned();
    assert_ne!(new, old);
    assert!(rotated["replaced_secret_valid_until"].is_string(), "{rotated}");
    assert_eq!(writes(&tessera, &new, "pump").await, StatusCode::OK, "the new secret works at once");
    assert_eq!(writes(&tessera, &old, "pump").await, StatusCode::OK, "the old one within the overlap");
    eventually(Duration::from_secs(5), "the old secret is refused after the overlap", async || {
        writes(&tessera, &old, "pump").await == StatusCode::UNAUTHORIZED
    })
    .await;
    eventually(Duration::from_secs(5), "the connection with the old secret ends after the overlap", async || {
        !connected.publish("/v1.6/devices/pump", json!({"t": 9})).await
    })
    .await;
    let (_, refused) = tessera.ubidots(Method::POST, "/devices/pump", &old, Some(json!({"t": 3}))).await;
    assert!(refused["detail"].as_str().unwrap().contains("rotation"), "the refusal says why: {refused}");
    assert_eq!(writes(&tessera, &new, "pump").await, StatusCode::OK, "the new secret goes on");

    // Without an overlap the old secret stops at once; device tokens rotate by the same route.
    let device = tessera.device_with_reading("valve").await;
    let (device_token_id, device_secret) = device_token(&tessera, &device).await;
    let (status, rotated) =
        tessera.native(Method::POST, &format!("/tokens/{device_token_id}/rotate"), &tessera.api_key, None).await;
    assert_eq!(status, StatusCode::OK, "{rotated}");
    assert_eq!(rotated["kind"], "device");
    assert_eq!(writes(&tessera, &device_secret, "valve").await, StatusCode::UNAUTHORIZED);
    assert_eq!(writes(&tessera, rotated["secret"].as_str().unwrap(), "valve").await, StatusCode::OK);

    // Revoked during an overlap, both secrets stop (the replaced one was cached too).
    let (other, first) = collection_token(&tessera, &collection, json!({})).await;
    let long_overlap = json!({"overlap_seconds": 3600});
    let (_, rotated) =
        tessera.native(Method::POST, &format!("/tokens/{other}/rotate"), &tessera.api_key, Some(long_overlap)).await;
    let second = rotated["secret"].as_str().unwrap().to_owned();
    assert_eq!(writes(&tessera, &first, "pump").await, StatusCode::OK);
    assert_eq!(
        tessera.native(Method::DELETE, &format!("/tokens/{other}"), &tessera.api_key, None).await.0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(writes(&tessera, &first, "pump").await, StatusCode::UNAUTHORIZED, "the replaced secret");
    assert_eq!(writes(&tessera, &second, "pump").await, StatusCode::UNAUTHORIZED, "the new one");

    // Refusals: an overlap beyond 30 days, a field that does not exist, a session, someone else's token.
    for (body, expected) in [
        (json!({"overlap_seconds": 31 * 86_400}), "from 0 to 2592000"),
        (json!({"overlap_seconds": -1}), "whole number"),
        (json!({"overlap": 60}), "unknown field 'overlap'"),
    ] {
        let (status, problem) =
            tessera.native(Method::POST, &format!("/tokens/{id}/rotate"), &tessera.api_key, Some(body)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{problem}");
        assert!(problem["detail"].as_str().unwrap().contains(expected), "{problem}");
    }
    assert_eq!(writes(&tessera, &new, "pump").await, StatusCode::OK, "a refused rotation changed nothing");
    let admin = tessera.admin_session().await;
    let (_, sessions) = tessera.native(Method::GET, "/tokens", &admin, None).await;
    let session = sessions["tokens"].as_array().unwrap().iter().find(|token| token["kind"] == "user_access").unwrap();
    let (status, problem) = tessera
        .native(Method::POST, &format!("/tokens/{}/rotate", session["id"].as_str().unwrap()), &admin, None)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{problem}");
    let (outsider, _) = tessera.user("outsider@example.com", "a long password").await;
    let (status, _) = tessera.native(Method::POST, &format!("/tokens/{id}/rotate"), &outsider, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "a token one does not manage does not exist");
    let (status, _) = tessera.native(Method::POST, &format!("/tokens/{id}/rotate"), &new, None).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "a collection token manages no token");

    let rotations = audit(&tessera, &admin, &format!("event=token.rotated&token={id}")).await;
    assert_eq!(rotations.len(), 1, "{rotations:?}");
    assert_eq!(rotations[0]["detail"]["overlap_seconds"], 1);
    assert!(rotations[0]["actor"].as_str().unwrap().starts_with("token:"), "the API key: {}", rotations[0]);
}

#[tokio::test]
async fn a_token_whose_creator_lost_the_rights_to_it_is_not_rotated() {
    let tessera = TestServer::start().await;
    let admin = tessera.admin_session().await;
    let collection = tessera.organization("Orphans").await;
    let (id, secret) = collection_token(&tessera, &collection, json!({})).await;
    let (_, tokens) = tessera.native(Method::GET, "/tokens", &admin, None).await;
    let api_key_id =
        tokens["tokens"].as_array().unwrap().iter().find(|token| token["kind"] == "api_key").unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned();
    let mut connected = Client::connect(&tessera, &secret, "").await.expect("the key's token connects");
    // The API key that made the token is disabled: its tokens reach nothing while it is.
    let (status, key) =
        tessera.native(Method::PATCH, &format!("/tokens/{api_key_id}"), &admin, Some(json!({"enabled": false}))).await;
    assert_eq!((status, &key["enabled"]), (StatusCode::OK, &json!(false)), "{key}");
    assert_eq!(tessera.ubidots(Method::GET, "/datasources", &tessera.api_key, None).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(writes(&tessera, &secret, "pump").await, StatusCode::FORBIDDEN, "its creator reaches nothing now");
    eventually(Duration::from_secs(5), "its open MQTT connection ends", async || {
        !connected.publish("/v1.6/devices/pump", json!({"t": 1})).await
    })
    .await;
    let (status, problem) = tessera.native(Method::POST, &format!("/tokens/{id}/rotate"), &admin, None).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{problem}");
    assert!(problem["detail"].as_str().unwrap().contains("creator"), "{problem}");
    assert_eq!(writes(&tessera, &secret, "pump").await, StatusCode::FORBIDDEN, "nothing changed");

    let (status, _) =
        tessera.native(Method::PATCH, &format!("/tokens/{api_key_id}"), &admin, Some(json!({"enabled": true}))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(writes(&tessera, &secret, "pump").await, StatusCode::OK, "the key's tokens work again");
    let (status, rotated) = tessera.native(Method::POST, &format!("/tokens/{id}/rotate"), &admin, None).await;
    assert_eq!(status, StatusCode::OK, "{rotated}");
}

#[tokio::test]
async fn a_disabled_token_is_refused_on_http_and_mqtt_until_it_is_enabled() {
    let tessera = TestServer::start().await;
    let device = tessera.device_with_reading("boiler").await;
    let (id, secret) = device_token(&tessera, &device).await;
    // The test publishes every 20 ms until the connection ends (up to a second): more than a device token's default
    // quota (20 in 5 s), which would refuse the writes after it.
    let unlimited = json!({"quota": "unlimited"});
    let (status, _) = tessera.native(Method::PATCH, &format!("/tokens/{id}"), &tessera.api_key, Some(unlimited)).await;
    assert_eq!(status, StatusCode::OK);
    let mut connected = Client::connect(&tessera, &secret, "").await.expect("the device connects");
    assert!(connected.publish("/v1.6/devices/boiler", json!({"t": 1})).await);

    let (status, token) = tessera
        .native(Method::PATCH, &format!("/tokens/{id}"), &tessera.api_key, Some(json!({"enabled": false})))
        .await;
    assert_eq!(status, StatusCode::OK, "{token}");
    assert_eq!((&token["enabled"], token["disabled_at"].is_string()), (&json!(false), true), "{token}");
    assert_eq!(writes(&tessera, &secret, "boiler").await, StatusCode::UNAUTHORIZED);
    let (_, refused) = tessera.ubidots(Method::POST, "/devices/boiler", &secret, Some(json!({"t": 2}))).await;
    assert!(refused["detail"].as_str().unwrap().contains("disabled"), "{refused}");
    assert!(Client::connect(&tessera, &secret, "").await.is_err(), "a disabled token does not connect");
    // The connection made before is ended by its next check (every second).
    eventually(Duration::from_secs(5), "the open MQTT connection ends", async || {
        !connected.publish("/v1.6/devices/boiler", json!({"t": 3})).await
    })
    .await;
    let (_, listed) = tessera.native(Method::GET, &format!("/devices/{device}/tokens"), &tessera.api_key, None).await;
    assert_eq!(listed["tokens"][0]["enabled"], false, "still listed, as disabled: {listed}");

    let (status, token) =
        tessera.native(Method::PATCH, &format!("/tokens/{id}"), &tessera.api_key, Some(json!({"enabled": true}))).await;
    assert_eq!((status, &token["enabled"]), (StatusCode::OK, &json!(true)));
    assert_eq!(writes(&tessera, &secret, "boiler").await, StatusCode::OK, "the same secret works again");
    let mut again = Client::connect(&tessera, &secret, "").await.expect("and connects again");
    assert!(again.publish("/v1.6/devices/boiler", json!({"t": 4})).await);

    // Refusals change nothing.
    for (body, expected) in [
        (json!({"enabled": "no"}), "true or false"),
        (json!({}), "nothing to change"),
        (json!({"disabled": true}), "unknown field"),
    ] {
        let (status, problem) =
            tessera.native(Method::PATCH, &format!("/tokens/{id}"), &tessera.api_key, Some(body)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{problem}");
        assert!(problem["detail"].as_str().unwrap().contains(expected), "{problem}");
    }
    let (status, _) =
        tessera.native(Method::PATCH, &format!("/tokens/{id}"), &secret, Some(json!({"enabled": false}))).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "a device token cannot disable itself or anything");
    let (outsider, _) = tessera.user("outsider@example.com", "a long password").await;
    let (status, _) =
        tessera.native(Method::PATCH, &format!("/tokens/{id}"), &outsider, Some(json!({"enabled": false}))).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "a token one does not manage does not exist");
    assert_eq!(tessera.native(Method::GET, "/token-policies", &secret, None).await.0, StatusCode::FORBIDDEN);
    assert_eq!(writes(&tessera, &secret, "boiler").await, StatusCode::OK);
    let admin = tessera.admin_session().await;
    let events: Vec<String> = audit(&tessera, &admin, &format!("token={id}"))
        .await
        .iter()
        .map(|entry| entry["event"].as_str().unwrap().to_owned())
        .collect();
    for expected in ["token.minted", "token.disabled", "token.enabled"] {
        assert!(events.iter().any(|event| event == expected), "{expected} in {events:?}");
    }
}

#[tokio::test]
async fn bulk_revocation_takes_every_token_of_a_device_a_collection_a_kind_or_a_user() {
    let tessera = TestServer::start().await;
    let device_a = tessera.device_with_reading("a").await;
    let device_b = tessera.device_with_reading("b").await;
    let mut of_a = Vec::new();
    for _ in 0..3 {
        of_a.push(device_token(&tessera, &device_a).await.1);
    }
    let (_, of_b) = device_token(&tessera, &device_b).await;
    let collection = tessera.organization("Bulk").await;
    let (_, org_secret) = collection_token(&tessera, &collection, json!({})).await;

    let bulk = async |body: Value, credential: &str| {
        tessera.native(Method::POST, "/tokens/revoke", credential, Some(body)).await
    };
    let (status, answer) = bulk(json!({"device": device_a}), &tessera.api_key).await;
    assert_eq!((status, &answer["revoked"]), (StatusCode::OK, &json!(3)), "{answer}");
    for secret in &of_a {
        assert_eq!(writes(&tessera, secret, "a").await, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(writes(&tessera, &of_b, "b").await, StatusCode::OK, "another device's token stays");
    let (status, answer) = bulk(json!({"kind": "device"}), &tessera.api_key).await;
    assert_eq!((status, &answer["revoked"]), (StatusCode::OK, &json!(1)), "{answer}");
    assert_eq!(writes(&tessera, &of_b, "b").await, StatusCode::UNAUTHORIZED);
    let (status, answer) = bulk(json!({"collection": collection}), &tessera.api_key).await;
    assert_eq!((status, &answer["revoked"]), (StatusCode::OK, &json!(1)), "{answer}");
    assert_eq!(tessera.ubidots(Method::GET, "/datasources", &org_secret, None).await.0, StatusCode::UNAUTHORIZED);

    // Every token of a user: the ones they made and their sessions.
    let (session, user) = tessera.user("leaver@example.com", "a long password").await;
    let (status, made) =
        tessera.native(Method::POST, "/tokens", &session, Some(json!({"kind": "account", "rights": "read"}))).await;
    assert_eq!(status, StatusCode::CREATED, "{made}");
    let admin = tessera.admin_session().await;
    let (status, answer) = bulk(json!({"user": user}), &admin).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert!(answer["revoked"].as_u64().unwrap() >= 2, "a token and a session at least: {answer}");
    assert_eq!(tessera.native(Method::GET, "/me", &session, None).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(
        tessera.native(Method::GET, "/collections", made["secret"].as_str().unwrap(), None).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(tessera.native(Method::GET, "/me", &admin, None).await.0, StatusCode::OK, "the caller goes on");

    // Someone who manages none of them revokes none of them; refusals name what is wrong.
    let device_c = tessera.device_with_reading("c").await;
    let (_, of_c) = device_token(&tessera, &device_c).await;
    let (other, _) = tessera.user("other@example.com", "a long password").await;
    let (status, answer) = bulk(json!({"kind": "device"}), &other).await;
    assert_eq!((status, &answer["revoked"]), (StatusCode::OK, &json!(0)), "{answer}");
    assert_eq!(writes(&tessera, &of_c, "c").await, StatusCode::OK, "not theirs to revoke");
    assert_eq!(bulk(json!({"kind": "device"}), &of_c).await.0, StatusCode::FORBIDDEN, "a device token revokes nothing");
    for (body, expected) in [
        (json!({}), "name the tokens"),
        (json!({"kind": "gadget"}), "unknown token kind"),
        (json!({"device": 5}), "an id"),
        (json!({"team": "x"}), "unknown field"),
    ] {
        let (status, problem) = bulk(body, &tessera.api_key).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{problem}");
        assert!(problem["detail"].as_str().unwrap().contains(expected), "{problem}");
    }
    assert_eq!(writes(&tessera, &of_c, "c").await, StatusCode::OK, "refused calls revoked nothing");
    let summaries = audit(&tessera, &admin, "event=tokens.bulk_revoked").await;
    assert_eq!(summaries.len(), 4, "one per call that revoked something: {summaries:?}");
}

#[tokio::test]
async fn a_leaked_secret_reported_by_anyone_is_revoked_and_the_answer_tells_nothing() {
    let tessera = TestServer::start().await;
    let device = tessera.device_with_reading("leaky").await;
    let (id, secret) = device_token(&tessera, &device).await;
    let report = async |credentials: Value| {
        let response = tessera
            .client
            .post(tessera.url("/v1/credentials/revoke"))
            .json(&json!({"credentials": credentials}))
            .send()
            .await
            .unwrap();
        decode(response).await
    };
    let unknown = secret[..secret.len() - 8].to_owned() + "aaaaaaaa";
    let (status, for_nothing) = report(json!([unknown, "not a secret"])).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let (status, for_a_real_one) = report(json!([secret])).await;
    assert_eq!((status, &for_a_real_one), (StatusCode::ACCEPTED, &for_nothing), "the same answer either way");
    eventually(Duration::from_secs(5), "the reported token is revoked", async || {
        writes(&tessera, &secret, "leaky").await == StatusCode::UNAUTHORIZED
    })
    .await;
    let admin = tessera.admin_session().await;
    let entries = audit(&tessera, &admin, &format!("event=token.leak_revoked&token={id}")).await;
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_eq!((entries[0]["actor"].as_str(), entries[0]["address"].as_str()), (Some("anonymous"), Some("127.0.0.1")));

    // Bad reports are refused by name, and one address may report a few times a minute only.
    for body in
        [json!({}), json!({"credentials": []}), json!({"credentials": [5]}), json!({"credentials": vec!["x"; 101]})]
    {
        let response = tessera.client.post(tessera.url("/v1/credentials/revoke")).json(&body).send().await.unwrap();
        let (status, problem) = decode(response).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {problem}");
    }
    let padded = format!("{{\"credentials\": [\"x\"]{}}}", " ".repeat(70 * 1024));
    let response = tessera
        .client
        .post(tessera.url("/v1/credentials/revoke"))
        .header("content-type", "application/json")
        .body(padded)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE, "the report's own 64 KiB limit holds");
    let reporter = client_from("127.0.0.9");
    let mut statuses = Vec::new();
    for _ in 0..12 {
        let response = reporter
            .post(tessera.url("/v1/credentials/revoke"))
            .json(&json!({"credentials": ["nothing"]}))
            .send()
            .await
            .unwrap();
        let retry_after = response.headers().get("retry-after").is_some();
        statuses.push((response.status(), retry_after));
    }
    assert!(statuses[..10].iter().all(|(status, _)| *status == StatusCode::ACCEPTED), "{statuses:?}");
    assert_eq!(statuses[11], (StatusCode::TOO_MANY_REQUESTS, true), "{statuses:?}");
}

#[tokio::test]
async fn the_expiry_policy_gives_new_tokens_a_default_and_caps_longer_ones() {
    let tessera = TestServer::start().await;
    let admin = tessera.admin_session().await;
    let collection = tessera.organization("Policed").await;
    let policy = json!({"max_lifetime_seconds": 3600, "default_lifetime_seconds": 600});
    let (status, set) = tessera.native(Method::PUT, "/token-policies/collection", &admin, Some(policy.clone())).await;
    assert_eq!((status, &set), (StatusCode::OK, &policy));
    let (_, listed) = tessera.native(Method::GET, "/token-policies", &tessera.api_key, None).await;
    assert_eq!(listed["policies"]["collection"], policy, "those who mint see the policy: {listed}");

    let expires_in = |token: &Value| {
        let at = tessera_core::time::parse_iso8601(token["expires_at"].as_str().expect("an expiry")).unwrap();
        (at - tessera_server::time::now_ms()) as f64 / 1000.0
    };
    let mint = async |extra: Value| {
        let mut body = json!({"kind": "collection", "collection": collection});
        body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        let (status, token) = tessera.native(Method::POST, "/tokens", &tessera.api_key, Some(body)).await;
        assert_eq!(status, StatusCode::CREATED, "{token}");
        token
    };
    let defaulted = mint(json!({})).await;
    assert!((590.0..=601.0).contains(&expires_in(&defaulted)), "the default lifetime: {defaulted}");
    let capped = mint(json!({"expires_in": 10 * 86_400})).await;
    assert!((3590.0..=3601.0).contains(&expires_in(&capped)), "cut to the maximum: {capped}");
    let shorter = mint(json!({"expires_in": 60})).await;
    assert!((50.0..=61.0).contains(&expires_in(&shorter)), "a shorter one is kept: {shorter}");
    let account_token = mint(json!({"kind": "account"})).await;
    assert!(account_token["expires_at"].is_null(), "other kinds are not affected: {account_token}");
    let entries =
        audit(&tessera, &admin, &format!("event=token.minted&token={}", capped["id"].as_str().unwrap())).await;
    assert_eq!(entries[0]["detail"]["expiry_set_by_policy"], true, "{entries:?}");

    let (_, expiring) = tessera.native(Method::GET, "/tokens?expiring_within_days=1", &admin, None).await;
    let ids: Vec<&str> =
        expiring["tokens"].as_array().unwrap().iter().map(|token| token["id"].as_str().unwrap()).collect();
    for token in [&defaulted, &capped, &shorter] {
        assert!(ids.contains(&token["id"].as_str().unwrap()), "{ids:?}");
    }
    assert!(!ids.contains(&account_token["id"].as_str().unwrap()), "a token that never expires is not expiring");

    // Only account administrators set it, and nonsense is refused by name with nothing changed.
    assert_eq!(
        tessera.native(Method::PUT, "/token-policies/collection", &tessera.api_key, Some(json!({}))).await.0,
        StatusCode::FORBIDDEN
    );
    let (member, _) = tessera.user("member@example.com", "a long password").await;
    assert_eq!(
        tessera.native(Method::PUT, "/token-policies/device", &member, Some(json!({}))).await.0,
        StatusCode::FORBIDDEN
    );
    for (kind, body, expected) in [
        ("collection", json!({"max_lifetime_seconds": 60, "default_lifetime_seconds": 120}), "longer than the maximum"),
        ("collection", json!({"max_lifetime_seconds": 0}), "0 seconds"),
        ("collection", json!({"max_lifetime_seconds": "1h"}), "whole number"),
        ("user_access", json!({"max_lifetime_seconds": 60}), "session"),
    ] {
        let (status, problem) =
            tessera.native(Method::PUT, &format!("/token-policies/{kind}"), &admin, Some(body)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{problem}");
        assert!(problem["detail"].as_str().unwrap().contains(expected), "{problem}");
    }
    assert_eq!(
        tessera.native(Method::PUT, "/token-policies/gadget", &admin, Some(json!({}))).await.0,
        StatusCode::NOT_FOUND
    );
    let (_, listed) = tessera.native(Method::GET, "/token-policies", &admin, None).await;
    assert_eq!(listed["policies"]["collection"], policy, "unchanged: {listed}");
    // Both fields empty removes the policy.
    let (status, _) = tessera.native(Method::PUT, "/token-policies/collection", &admin, Some(json!({}))).await;
    assert_eq!(status, StatusCode::OK);
    assert!(mint(json!({})).await["expires_at"].is_null(), "no policy, no expiry");
}

#[tokio::test]
async fn usage_shows_when_and_from_where_a_token_was_last_used() {
    let tessera = TestServer::start().await;
    let collection = tessera.organization("Used").await;
    let (used, secret) = collection_token(&tessera, &collection, json!({})).await;
    let (unused, _) = collection_token(&tessera, &collection, json!({})).await;
    let status = client_from("127.0.0.7")
        .get(tessera.url("/api/v1.6/datasources"))
        .header("x-auth-token", &secret)
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, StatusCode::OK);
    eventually(Duration::from_secs(5), "the use is flushed to the store", async || {
        let (_, token) = tessera.native(Method::GET, &format!("/tokens/{used}"), &tessera.api_key, None).await;
        token["uses"] == 1 && token["last_used_from"] == "127.0.0.7" && token["last_used_at"].is_string()
    })
    .await;
    let (_, quiet) = tessera.native(Method::GET, "/tokens?unused_for_days=1", &tessera.api_key, None).await;
    let ids: Vec<&str> =
        quiet["tokens"].as_array().unwrap().iter().map(|token| token["id"].as_str().unwrap()).collect();
    assert!(ids.contains(&unused.as_str()) && !ids.contains(&used.as_str()), "{ids:?}");
    let (status, problem) = tessera.native(Method::GET, "/tokens?unused_for_days=many", &tessera.api_key, None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{problem}");
}

#[tokio::test]
async fn the_audit_trail_says_who_did_what_from_where_for_administrators_only() {
    let tessera = TestServer::start().await;
    // A failed sign-in, a good one, a token made and revoked, and the revoked token presented again.
    let (status, _) = tessera
        .call(Method::POST, "/v1/login", &[], Some(json!({"email": tessera.admin_email, "password": "wrong password"})))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "OAuth's invalid_grant");
    let admin = tessera.admin_session().await;
    let collection = tessera.organization("Audited").await;
    let (id, secret) = collection_token(&tessera, &collection, json!({})).await;
    assert_eq!(tessera.native(Method::DELETE, &format!("/tokens/{id}"), &admin, None).await.0, StatusCode::NO_CONTENT);
    for _ in 0..3 {
        assert_eq!(writes(&tessera, &secret, "pump").await, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(writes(&tessera, "tsd_garbage", "pump").await, StatusCode::UNAUTHORIZED);

    let (_, me) = tessera.native(Method::GET, "/me", &admin, None).await;
    let admin_actor = format!("user:{}", me["id"].as_str().unwrap());
    eventually(
        Duration::from_secs(20),
        "the refusals are written to the trail once they gathered repeats",
        async || audit(&tessera, &admin, "event=credential.refused").await.len() >= 2,
    )
    .await;
    let refused = audit(&tessera, &admin, &format!("event=credential.refused&token={id}")).await;
    assert_eq!(refused.len(), 1, "three refusals of one token from one address are one entry: {refused:?}");
    assert_eq!((refused[0]["count"].as_u64(), refused[0]["outcome"].as_str()), (Some(3), Some("refused")));
    assert_eq!(refused[0]["address"], "127.0.0.1");
    let anonymous = audit(&tessera, &admin, "event=credential.refused&actor=anonymous").await;
    assert_eq!(anonymous[0]["detail"]["reason"], "malformed", "{anonymous:?}");
    let failed = audit(&tessera, &admin, "event=login.failed").await;
    assert_eq!(
        (failed[0]["actor"].as_str(), failed[0]["detail"]["reason"].as_str()),
        (Some(admin_actor.as_str()), Some("wrong password"))
    );
    let revoked = audit(&tessera, &admin, &format!("event=token.revoked&actor={admin_actor}")).await;
    assert_eq!(revoked[0]["token"].as_str(), Some(id.as_str()), "{revoked:?}");
    let signed_in = audit(&tessera, &admin, "event=login.succeeded").await;
    assert_eq!(
        (signed_in[0]["detail"]["factor"].as_str(), signed_in[0]["address"].as_str()),
        (Some("password"), Some("127.0.0.1"))
    );
    let secret_text = serde_json::to_string(&audit(&tessera, &admin, "limit=1000").await).unwrap();
    assert!(!secret_text.contains(&secret[4..]), "no secret is ever in the trail");

    // Pages by cursor, newest first, without overlap.
    let all = audit(&tessera, &admin, "limit=1000").await;
    assert!(all.len() >= 6, "{all:?}");
    let (mut paged, mut cursor) = (Vec::new(), String::new());
    loop {
        let (_, page) = tessera.native(Method::GET, &format!("/audit?limit=2&cursor={cursor}"), &admin, None).await;
        paged.extend(page["entries"].as_array().unwrap().iter().map(|entry| entry["id"].clone()));
        match page["next"].as_str() {
            Some(next) => cursor = next.to_owned(),
            None => break,
        }
    }
    let ids: Vec<Value> = all.iter().map(|entry| entry["id"].clone()).collect();
    assert_eq!(paged, ids);
    let since = all[0]["at"].as_str().unwrap();
    assert!(!audit(&tessera, &admin, &format!("since={since}")).await.is_empty());
    let earliest = all.iter().map(|entry| entry["at"].as_str().unwrap()).min().unwrap();
    assert!(audit(&tessera, &admin, &format!("until={earliest}")).await.is_empty(), "nothing before the first");

    // For account administrators only; bad filters are named.
    let (member, _) = tessera.user("member@example.com", "a long password").await;
    assert_eq!(tessera.native(Method::GET, "/audit", &member, None).await.0, StatusCode::FORBIDDEN);
    assert_eq!(tessera.native(Method::GET, "/audit", &tessera.api_key, None).await.0, StatusCode::FORBIDDEN);
    assert_eq!(tessera.native(Method::GET, "/audit", "tsk_nothing", None).await.0, StatusCode::UNAUTHORIZED);
    for (query, expected) in [
        ("event=token.exploded", "unknown event"),
        ("actor=robot", "'actor'"),
        ("since=yesterday", "'since'"),
        ("limit=0", "'limit'"),
        ("cursor=%3F", "'cursor'"),
    ] {
        let (status, problem) = tessera.native(Method::GET, &format!("/audit?{query}"), &admin, None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {problem}");
        assert!(problem["detail"].as_str().unwrap().contains(expected), "{query}: {problem}");
    }
}

/// Issue 15's probe: a session whose access token had run out was passed over by a bulk revocation of
/// `user_access` tokens, and its refresh token went on renewing it. A session is both, whichever is asked for.
#[tokio::test]
async fn a_bulk_revocation_of_sessions_takes_those_whose_access_token_ran_out() {
    let tessera = TestServer::start_with(|config| config.access_token_ttl = Duration::from_secs(1)).await;
    let (_, bob) = tessera.user("bob@example.com", "a long password").await;
    let bob_session = tessera.login("bob@example.com", "a long password").await;
    let refresh = bob_session["refresh_token"].as_str().unwrap().to_owned();
    eventually(Duration::from_secs(5), "bob's access token runs out", async || {
        tessera.native(Method::GET, "/me", bob_session["access_token"].as_str().unwrap(), None).await.0
            == StatusCode::UNAUTHORIZED
    })
    .await;
    let fresh = tessera.admin_session().await;
    let (status, answer) =
        tessera.native(Method::POST, "/tokens/revoke", &fresh, Some(json!({"user": bob, "kind": "user_access"}))).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert!(answer["revoked"].as_u64().unwrap() >= 1, "{answer}");
    let (status, _) =
        tessera.call(Method::POST, "/v1/token/refresh", &[], Some(json!({"refresh_token": refresh}))).await;
    assert_ne!(status, StatusCode::OK, "the refresh token went with its session");
}
