//! The Horde dialect: seed 001's tokens, resource scopes against widening, collections, devices, data, messages
//! to devices, and the `/from` WebSocket.

use std::time::Duration;

use futures_util::StreamExt;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::helpers::TestServer;

/// A Horde request with a user session.
async fn horde(
    tessera: &TestServer,
    method: Method,
    path: &str,
    session: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    tessera.call(method, path, &[("authorization", &format!("Bearer {session}"))], body).await
}

/// A Horde request with a token.
async fn with_token(
    tessera: &TestServer,
    method: Method,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    tessera.call(method, path, &[("x-api-token", token)], body).await
}

#[tokio::test]
async fn the_seed_walkthrough_manages_tokens() {
    let tessera = TestServer::start().await;
    let (session, _) = tessera.user("ada@example.com", "correct horse battery").await;
    let body = json!({"resource": "/teams", "write": false, "tags": {"name": "the read-only team token"}});
    let (status, created) = horde(&tessera, Method::POST, "/tokens", &session, Some(body)).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let keys: Vec<&str> = created.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys, ["resource", "write", "token", "tags"]);
    assert_eq!(created["resource"], "/teams");
    assert_eq!(created["write"], false);
    let secret = created["token"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("tsr_"));

    let (_, listed) = horde(&tessera, Method::GET, "/tokens", &session, None).await;
    assert_eq!(listed["tokens"].as_array().unwrap().len(), 1);
    let id = listed["tokens"][0]["token"].as_str().unwrap().to_owned();
    assert_ne!(id, secret, "listings show the public id");

    let (status, patched) = horde(
        &tessera,
        Method::PATCH,
        &format!("/tokens/{secret}"),
        &session,
        Some(json!({"tags": {"New": "attribute"}})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{patched}");
    assert_eq!(patched["tags"], json!({"name": "the read-only team token", "new": "attribute"}));
    assert_eq!(patched["token"], id.as_str());
    let (_, removed_tag) =
        horde(&tessera, Method::PATCH, &format!("/tokens/{id}"), &session, Some(json!({"tags": {"new": ""}}))).await;
    assert_eq!(removed_tag["tags"], json!({"name": "the read-only team token"}));
    // Resource and write may change; the new resource is validated and normalised like a new one.
    let (status, widened) = horde(
        &tessera,
        Method::PATCH,
        &format!("/tokens/{id}"),
        &session,
        Some(json!({"resource": "//collections/", "write": true})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{widened}");
    assert_eq!((&widened["resource"], &widened["write"]), (&json!("/collections"), &json!(true)));
    let (status, _) =
        horde(&tessera, Method::PATCH, &format!("/tokens/{id}"), &session, Some(json!({"resource": "/things"}))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, fetched) = horde(&tessera, Method::GET, &format!("/tokens/{secret}"), &session, None).await;
    assert_eq!(status, StatusCode::OK, "the secret names the token too");
    assert_eq!((&fetched["token"], &fetched["resource"]), (&json!(id.as_str()), &json!("/collections")));

    // Tokens are managed only in a session, never with a token; another user's token does not exist.
    let (status, _) = with_token(&tessera, Method::GET, "/tokens", &secret, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (bob, _) = tessera.user("bob@example.com", "correct horse battery").await;
    let (status, _) = horde(&tessera, Method::GET, &format!("/tokens/{id}"), &bob, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = horde(&tessera, Method::DELETE, &format!("/tokens/{id}"), &bob, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let (status, _) = horde(&tessera, Method::DELETE, &format!("/tokens/{id}"), &session, None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = horde(&tessera, Method::GET, &format!("/tokens/{id}"), &session, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = with_token(&tessera, Method::GET, "/teams", &secret, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    for (body, expected) in [
        (json!({"write": true}), "'resource' is required"),
        (json!({"resource": "/"}), "'write' is required"),
        (json!({"resource": "/things", "write": true}), "expected /"),
        (json!({"resource": "/collections%2Fx", "write": true}), "encoded slash"),
        (json!({"resource": "/collections/0000000000000", "write": true}), "no existing collection"),
    ] {
        let (status, error) = horde(&tessera, Method::POST, "/tokens", &session, Some(body.clone())).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert!(error["message"].as_str().unwrap().contains(expected), "{body}: {error}");
    }
}

/// A user with two collections, and a token of theirs for a resource.
struct Scoped {
    tessera: TestServer,
    session: String,
    mine: String,
    other: String,
}

async fn scoped() -> Scoped {
    let tessera = TestServer::start().await;
    let (session, _) = tessera.user("ada@example.com", "correct horse battery").await;
    let (_, mine) =
        horde(&tessera, Method::POST, "/collections", &session, Some(json!({"tags": {"name": "mine"}}))).await;
    let (_, other) =
        horde(&tessera, Method::POST, "/collections", &session, Some(json!({"tags": {"name": "other"}}))).await;
    Scoped {
        mine: mine["collectionId"].as_str().unwrap().to_owned(),
        other: other["collectionId"].as_str().unwrap().to_owned(),
        tessera,
        session,
    }
}

async fn token_for(scoped: &Scoped, resource: &str, write: bool) -> String {
    let (status, token) = horde(
        &scoped.tessera,
        Method::POST,
        "/tokens",
        &scoped.session,
        Some(json!({"resource": resource, "write": write})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{resource}: {token}");
    token["token"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn resource_scopes_cannot_be_widened() {
    let scoped = scoped().await;
    let tessera = &scoped.tessera;
    let (mine, other) = (&scoped.mine, &scoped.other);
    // Dot segments, doubled and trailing slashes normalise to the collection itself.
    for spelling in [format!("//collections/./{mine}/"), format!("/collections/{other}/../{mine}")] {
        let token = token_for(&scoped, &spelling, false).await;
        let (_, listed) = horde(tessera, Method::GET, "/tokens", &scoped.session, None).await;
        assert!(listed["tokens"].as_array().unwrap().iter().any(|t| t["resource"] == format!("/collections/{mine}")));
        let (status, _) = with_token(tessera, Method::GET, &format!("/collections/{mine}"), &token, None).await;
        assert_eq!(status, StatusCode::OK);
        let (status, _) = with_token(tessera, Method::GET, &format!("/collections/{other}"), &token, None).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{spelling} reached the other collection");
    }

    let read_only = token_for(&scoped, &format!("/collections/{mine}"), false).await;
    for method in [Method::PUT, Method::PATCH, Method::DELETE, Method::POST] {
        let (status, error) = with_token(
            tessera,
            method.clone(),
            &format!("/collections/{mine}"),
            &read_only,
            Some(json!({"tags": {"a": "b"}})),
        )
        .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{method}: {error}");
        assert_eq!(error["status"], 403, "Horde's error shape: {error}");
    }
    // A write token is told the method is not there, in Horde's shape too.
    let writer = token_for(&scoped, &format!("/collections/{mine}"), true).await;
    let (status, error) = with_token(tessera, Method::PUT, &format!("/collections/{mine}"), &writer, None).await;
    assert_eq!((status, &error["status"]), (StatusCode::METHOD_NOT_ALLOWED, &json!(405)), "{error}");

    // A token for "/" that may write acts for its owner in teams, never on the owner's login: it cannot enroll a
    // second factor (which would lock the owner out) nor read the owner's profile.
    let root_writer = token_for(&scoped, "/", true).await;
    for (method, path) in [(Method::POST, "/v1/me/totp"), (Method::GET, "/v1/me"), (Method::POST, "/v1/logout")] {
        let (status, error) =
            tessera.call(method.clone(), path, &[("authorization", &format!("Bearer {root_writer}"))], None).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{method} {path}: {error}");
    }
    let (status, _) = horde(tessera, Method::POST, "/teams", &root_writer, Some(json!({}))).await;
    assert_eq!(status, StatusCode::CREATED, "a / write token still creates teams");
    let (status, _) = with_token(
        tessera,
        Method::POST,
        &format!("/collections/{mine}/devices"),
        &read_only,
        Some(json!({"imsi": "1", "imei": "2"})),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = with_token(tessera, Method::GET, "/", &read_only, None).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "only a / token reads the root");
    let (status, _) = with_token(tessera, Method::GET, "/teams", &read_only, None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // Requests that spell the other collection oddly are still the other collection.
    for path in [format!("/collections/{other}/"), format!("/collections//{other}")] {
        let (status, _) = with_token(tessera, Method::GET, &path, &read_only, None).await;
        assert_ne!(status, StatusCode::OK, "{path}");
    }
    let prefix = &mine[..12];
    let (status, _) = with_token(tessera, Method::GET, &format!("/collections/{prefix}"), &read_only, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "a prefix of an id is no id");

    let root = token_for(&scoped, "/", false).await;
    let (status, _) = with_token(tessera, Method::GET, "/", &root, None).await;
    assert_eq!(status, StatusCode::OK);
    let (_, listed) = with_token(tessera, Method::GET, "/collections", &root, None).await;
    assert_eq!(listed["collections"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn a_token_reaches_nothing_once_its_owner_left_the_team() {
    let tessera = TestServer::start().await;
    let (ada, _) = tessera.user("ada@example.com", "correct horse battery").await;
    let (bob, bob_id) = tessera.user("bob@example.com", "correct horse battery").await;
    let (_, team) = horde(&tessera, Method::POST, "/teams", &ada, Some(json!({}))).await;
    let team_id = team["teamId"].as_str().unwrap();
    let (_, collection) = horde(&tessera, Method::POST, "/collections", &ada, Some(json!({"teamId": team_id}))).await;
    let collection_id = collection["collectionId"].as_str().unwrap();
    let (_, invite) = horde(&tessera, Method::POST, &format!("/teams/{team_id}/invites"), &ada, None).await;
    horde(&tessera, Method::POST, "/teams/accept", &bob, Some(json!({"code": invite["code"]}))).await;
    let (_, token) =
        horde(&tessera, Method::POST, "/tokens", &bob, Some(json!({"resource": "/collections", "write": true}))).await;
    let token = token["token"].as_str().unwrap();
    let (status, _) = with_token(&tessera, Method::GET, &format!("/collections/{collection_id}"), token, None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = with_token(
        &tessera,
        Method::PATCH,
        &format!("/collections/{collection_id}"),
        token,
        Some(json!({"tags": {"x": "y"}})),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "a member's write token still cannot write");
    horde(&tessera, Method::DELETE, &format!("/teams/{team_id}/members/{bob_id}"), &ada, None).await;
    let (status, _) = with_token(&tessera, Method::GET, &format!("/collections/{collection_id}"), token, None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // Bob can still revoke the token that now reaches nothing, so it cannot come back if he is invited again.
    let (status, _) = horde(&tessera, Method::DELETE, &format!("/tokens/{token}"), &bob, None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn devices_data_messages_and_the_live_stream() {
    let scoped = scoped().await;
    let tessera = &scoped.tessera;
    let mine = &scoped.mine;
    let writer = token_for(&scoped, "/", true).await;

    let (status, device) = with_token(
        tessera,
        Method::POST,
        &format!("/collections/{mine}/devices"),
        &writer,
        Some(json!({"imsi": "242016000001", "imei": "357000000000001", "tags": {"name": "Meter"}})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{device}");
    let device_id = device["deviceId"].as_str().unwrap().to_owned();
    assert_eq!(device["collectionId"], mine.as_str());
    let (status, clash) = with_token(
        tessera,
        Method::POST,
        &format!("/collections/{mine}/devices"),
        &writer,
        Some(json!({"imsi": "242016000001", "imei": "357000000000002"})),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{clash}");
    let (status, missing) =
        with_token(tessera, Method::POST, &format!("/collections/{mine}/devices"), &writer, Some(json!({"imsi": "1"})))
            .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(missing["message"].as_str().unwrap().contains("imei"));
    let (_, listed) = with_token(tessera, Method::GET, &format!("/collections/{mine}/devices"), &writer, None).await;
    assert_eq!(listed["devices"].as_array().unwrap().len(), 1);
    let (status, _) = with_token(tessera, Method::DELETE, &format!("/collections/{mine}"), &writer, None).await;
    assert_eq!(status, StatusCode::CONFLICT, "a collection with devices stays");

    // A WebSocket on /from sees a reading sent through the Ubidots dialect.
    let url = format!("{}/collections/{mine}/from", tessera.base.replace("http://", "ws://"));
    let mut request = url.clone().into_client_request().unwrap();
    request.headers_mut().insert("x-api-token", writer.parse().unwrap());
    let (mut socket, _) = tokio_tungstenite::connect_async(request).await.expect("the stream opens");
    let (status, _) = tessera
        .ubidots(
            Method::POST,
            &format!("/devices/{device_id}"),
            &writer,
            Some(json!({"temperature": {"value": 21.5, "timestamp": 1000}})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let message = tokio::time::timeout(Duration::from_secs(10), socket.next())
        .await
        .expect("a message arrives")
        .unwrap()
        .unwrap();
    let message: Value = serde_json::from_str(message.to_text().unwrap()).unwrap();
    assert_eq!(message["type"], "data");
    assert_eq!(message["device"]["deviceId"], device_id.as_str());
    assert_eq!(message["payload"], "MjEuNQ==", "base64 of the value as JSON text, 21.5");
    assert_eq!(message["received"], 1000);

    // The same reading through /data, for the collection and for the device.
    let (_, data) =
        with_token(tessera, Method::GET, &format!("/collections/{mine}/data?since=0&until=0&limit=0"), &writer, None)
            .await;
    assert_eq!(data["messages"].as_array().unwrap().len(), 1);
    assert_eq!(data["messages"][0], message);
    let (_, none) = with_token(
        tessera,
        Method::GET,
        &format!("/collections/{mine}/devices/{device_id}/data?since=2000"),
        &writer,
        None,
    )
    .await;
    assert_eq!(none["messages"].as_array().unwrap().len(), 0);
    // Newest first; `until` is inclusive and `limit` keeps the newest of the window.
    for timestamp in [2000, 3000, 4000] {
        let body = json!({"temperature": {"value": timestamp, "timestamp": timestamp}});
        tessera.ubidots(Method::POST, &format!("/devices/{device_id}"), &writer, Some(body)).await;
    }
    let received = |data: &Value| -> Vec<i64> {
        data["messages"].as_array().unwrap().iter().map(|message| message["received"].as_i64().unwrap()).collect()
    };
    let data_path = format!("/collections/{mine}/devices/{device_id}/data");
    let (_, all) = with_token(tessera, Method::GET, &data_path, &writer, None).await;
    assert_eq!(received(&all), [4000, 3000, 2000, 1000]);
    let (_, window) = with_token(tessera, Method::GET, &format!("{data_path}?until=3000&limit=2"), &writer, None).await;
    assert_eq!(received(&window), [3000, 2000]);
    let (_, window) =
        with_token(tessera, Method::GET, &format!("{data_path}?since=2000&until=3000"), &writer, None).await;
    assert_eq!(received(&window), [3000, 2000]);
    let (status, _) = with_token(tessera, Method::GET, &format!("{data_path}?limit=-1"), &writer, None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // Only a read-only token may ride in the query string.
    let read_only = token_for(&scoped, &format!("/collections/{mine}"), false).await;
    let (socket_ok, _) =
        tokio_tungstenite::connect_async(format!("{url}?api_token={read_only}")).await.expect("read-only in the URL");
    drop(socket_ok);
    let refused = tokio_tungstenite::connect_async(format!("{url}?api_token={writer}")).await;
    assert!(refused.is_err(), "a read-write token in the URL is refused");

    // Messages to devices are queued and readable through the native API.
    let (status, _) = with_token(
        tessera,
        Method::POST,
        &format!("/collections/{mine}/devices/{device_id}/to"),
        &writer,
        Some(json!({"port": 17, "payload": "aGVsbG8="})),
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (_, broadcast) = with_token(
        tessera,
        Method::POST,
        &format!("/collections/{mine}/to"),
        &writer,
        Some(json!({"port": 18, "payload": "aGk="})),
    )
    .await;
    assert_eq!(broadcast, json!({"sent": 1, "failed": 0, "errors": []}));
    let (status, bad) = with_token(
        tessera,
        Method::POST,
        &format!("/collections/{mine}/devices/{device_id}/to"),
        &writer,
        Some(json!({"port": 17, "payload": "not base64!"})),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
    let (_, queued) =
        tessera.native(Method::GET, &format!("/devices/{device_id}/downlinks"), &scoped.session, None).await;
    let ports: Vec<i64> = queued["downlinks"].as_array().unwrap().iter().map(|d| d["port"].as_i64().unwrap()).collect();
    assert_eq!(ports, [17, 18]);

    // Deleting the token cuts the stream.
    let (_, listed) = horde(tessera, Method::GET, "/tokens", &scoped.session, None).await;
    for token in listed["tokens"].as_array().unwrap() {
        horde(tessera, Method::DELETE, &format!("/tokens/{}", token["token"].as_str().unwrap()), &scoped.session, None)
            .await;
    }
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match socket.next().await {
                None | Some(Err(_)) => return,
                Some(Ok(message)) if message.is_close() => return,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the stream of a revoked token is closed");
}
