//! The native API: collections, problem documents, health probes.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::helpers::TestServer;

#[tokio::test]
async fn collections_are_created_listed_and_deleted() {
    let tessera = TestServer::start().await;
    let token = tessera.account_token().await;
    let (status, created) =
        tessera.native(Method::POST, "/collections", &token, Some(json!({"name": "Plant 7"}))).await;
    assert_eq!(status, StatusCode::CREATED);
    let id = created["id"].as_str().unwrap();
    assert_eq!(created["name"], "Plant 7");
    assert_eq!(created["is_default"], false);

    let (_, listed) = tessera.native(Method::GET, "/collections", &token, None).await;
    let names: Vec<&str> =
        listed["collections"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["Default", "Plant 7"]);
    let (_, fetched) = tessera.native(Method::GET, &format!("/collections/{id}"), &token, None).await;
    assert_eq!(fetched, created);

    // A collection with devices cannot be deleted; the default collection never.
    let org_token = tessera.organization_token(id, "t").await;
    tessera.ubidots(Method::POST, "/devices/d", org_token["token"].as_str().unwrap(), Some(json!({"t": 1}))).await;
    let (status, problem) = tessera.native(Method::DELETE, &format!("/collections/{id}"), &token, None).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert!(problem["detail"].as_str().unwrap().contains("device"), "{problem}");
    let default_id = listed["collections"][0]["id"].as_str().unwrap();
    let (status, _) = tessera.native(Method::DELETE, &format!("/collections/{default_id}"), &token, None).await;
    assert_eq!(status, StatusCode::CONFLICT);

    let (_, sources) = tessera.ubidots(Method::GET, "/datasources", &token, None).await;
    let device = sources["results"][0]["id"].as_str().unwrap();
    tessera.ubidots(Method::DELETE, &format!("/datasources/{device}"), &token, None).await;
    let (status, _) = tessera.native(Method::DELETE, &format!("/collections/{id}"), &token, None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = tessera.native(Method::GET, &format!("/collections/{id}"), &token, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn an_organization_token_sees_only_its_collection() {
    let tessera = TestServer::start().await;
    let org = tessera.organization("Mine").await;
    tessera.organization("Theirs").await;
    let org_token = tessera.organization_token(&org, "t").await;
    let token = org_token["token"].as_str().unwrap();
    let (_, listed) = tessera.native(Method::GET, "/collections", token, None).await;
    assert_eq!(listed["collections"].as_array().unwrap().len(), 1);
    assert_eq!(listed["collections"][0]["id"], org.as_str());
    let (status, _) = tessera.native(Method::POST, "/collections", token, Some(json!({"name": "x"}))).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn errors_are_problem_documents_and_401_names_the_scheme() {
    let tessera = TestServer::start().await;
    let response = tessera.client.get(tessera.url("/v1/collections")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(response.headers()["content-type"], "application/problem+json");
    assert!(response.headers()["www-authenticate"].to_str().unwrap().starts_with("Bearer"));
    let problem: serde_json::Value = response.json().await.unwrap();
    assert_eq!(problem["status"], 401);
    assert_eq!(problem["title"], "Unauthorized");

    let token = tessera.account_token().await;
    for (body, expected) in [
        (json!({}), "'name' is required"),
        (json!({"name": ""}), "1 to 200 characters"),
        (json!({"name": 7}), "must be a string"),
    ] {
        let (status, problem) = tessera.native(Method::POST, "/collections", &token, Some(body)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(problem["detail"].as_str().unwrap().contains(expected), "{problem}");
    }
}

#[tokio::test]
async fn health_and_readiness_answer() {
    let tessera = TestServer::start().await;
    let (status, body) = tessera.call(Method::GET, "/healthz", &[], None).await;
    assert_eq!((status, body), (StatusCode::OK, json!({"status": "ok"})));
    let (status, body) = tessera.call(Method::GET, "/readyz", &[], None).await;
    assert_eq!((status, body), (StatusCode::OK, json!({"status": "ready"})));
}

#[tokio::test]
async fn server_sent_events_carry_new_readings_of_the_collection() {
    let tessera = TestServer::start().await;
    let org = tessera.organization("Live").await;
    let org_token = tessera.organization_token(&org, "sender").await;
    let sender = org_token["token"].as_str().unwrap().to_owned();
    let reader = tessera.account_token().await;
    let mut response = tessera
        .client
        .get(tessera.url(&format!("/v1/collections/{org}/events")))
        .header("authorization", format!("Bearer {reader}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "text/event-stream");

    // A reading in another collection is not this stream's; the one in this collection is.
    tessera.ubidots(Method::POST, "/devices/elsewhere", &reader, Some(json!({"t": 1}))).await;
    tessera
        .ubidots(Method::POST, "/devices/live-1", &sender, Some(json!({"t": {"value": 7, "timestamp": 1000}})))
        .await;
    let mut received = String::new();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while !received.contains("\n\n") {
        let chunk =
            tokio::time::timeout_at(deadline, response.chunk()).await.expect("an event arrives").unwrap().unwrap();
        received.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    assert!(received.starts_with("event: reading\n"), "{received}");
    let data = received.lines().find_map(|line| line.strip_prefix("data: ")).unwrap();
    let event: serde_json::Value = serde_json::from_str(data).unwrap();
    assert_eq!(event["collection"], org.as_str());
    assert_eq!(event["value"], 7.0);
    assert_eq!(event["timestamp"], 1000);

    let own = tessera
        .client
        .get(tessera.url(&format!("/v1/collections/{org}/events")))
        .header("authorization", format!("Bearer {sender}"))
        .send()
        .await
        .unwrap();
    assert_eq!(own.status(), StatusCode::OK, "the collection's own token may follow it too");
    let other = tessera.organization("Other").await;
    let refused = tessera
        .client
        .get(tessera.url(&format!("/v1/collections/{other}/events")))
        .header("authorization", format!("Bearer {sender}"))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::FORBIDDEN, "but not another collection");
}

#[tokio::test]
async fn unknown_paths_answer_404_in_their_dialects_shape() {
    let tessera = TestServer::start().await;
    let token = tessera.account_token().await;
    let bearer = format!("Bearer {token}");
    let headers = [("authorization", bearer.as_str()), ("x-auth-token", token.as_str())];
    for (path, field) in [
        ("/v1/no-such-thing", "detail"),
        ("/api/v1.6/no-such-thing/", "detail"),
        ("/device/0000000000000/no-such-thing", "message"),
        ("/collections/0000000000000/outputs", "message"),
    ] {
        let (status, body) = tessera.call(Method::GET, path, &headers, None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
        assert!(body[field].is_string(), "{path}: {body}");
    }
    let (_, horde) = tessera.call(Method::GET, "/collections/0000000000000/outputs", &headers, None).await;
    assert_eq!(horde["status"], 404, "Horde's shape: {horde}");
    let response = tessera.client.get(tessera.url("/v1/no-such-thing")).send().await.unwrap();
    assert_eq!(response.headers()["content-type"], "application/problem+json");
}
