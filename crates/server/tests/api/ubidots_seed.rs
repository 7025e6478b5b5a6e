//! Seed 000 (Ubidots organizational tokens), line by line.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::helpers::{DENIED, TestServer};

#[tokio::test]
async fn the_seed_walkthrough_gives_the_documented_answers() {
    let tessera = TestServer::start().await;
    let org = tessera.organization("Organization 1").await;

    // 1. Create an organization token with the API key.
    let created = tessera.organization_token(&org, "Token1").await;
    let keys: Vec<&str> = created.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys, ["name", "token", "id"]);
    assert_eq!(created["name"], "Token1");
    let token = created["token"].as_str().unwrap();
    assert!(token.starts_with("tso_"), "{token}");
    assert!(created["id"].is_string());

    // 2. The token auto-provisions a device in its organization.
    let (status, body) =
        tessera.ubidots(Method::POST, "/devices/new-device", token, Some(json!({"humidity": 22}))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, json!({"humidity": [{"status_code": 201}]}));
    let (_, datasources) = tessera.ubidots(Method::GET, "/datasources", token, None).await;
    assert_eq!(datasources["count"], 1);
    assert_eq!(datasources["results"][0]["label"], "new-device");
    assert_eq!(datasources["results"][0]["organization"], org.as_str());

    // Sending again to the same device updates its variables.
    let (status, _) = tessera.ubidots(Method::POST, "/devices/new-device", token, Some(json!({"humidity": 23}))).await;
    assert_eq!(status, StatusCode::OK);

    // A label already claimed by another organization is refused with the exact body, and nothing is written.
    let account_token = tessera.account_token().await;
    let claimed = "/devices/500027000d51353432383931";
    let (status, _) = tessera.ubidots(Method::POST, claimed, &account_token, Some(json!({"humidity": 1}))).await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = tessera.ubidots(Method::POST, claimed, token, Some(json!({"humidity": 22}))).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(body, json!({"detail": DENIED}));
    let (_, values) = tessera.ubidots(Method::GET, &format!("{claimed}/humidity/values"), &account_token, None).await;
    assert_eq!(values["count"], 1, "the refused dot was not stored: {values}");
    assert_eq!(values["results"][0]["value"], 1.0);

    // 4. List the organization's tokens with the API key: ids, never secrets.
    let (status, listed) = tessera
        .call(
            Method::GET,
            &format!("/api/v1.6/auth/tokens/organizations/{org}/"),
            &[("x-ubidots-apikey", &tessera.api_key), ("content-type", "application/json")],
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(listed["count"], 1);
    assert_eq!(listed["next"], json!(null));
    assert_eq!(listed["previous"], json!(null));
    assert_eq!(listed["results"][0]["name"], "Token1");
    assert_eq!(listed["results"][0]["id"], created["id"]);
    assert_eq!(listed["results"][0]["token"], created["id"], "listings show the public id");
    assert!(!listed.to_string().contains(token), "a listing never reveals a secret");
}

#[tokio::test]
async fn organization_token_listings_paginate_with_absolute_urls() {
    let tessera = TestServer::start().await;
    let org = tessera.organization("Org").await;
    for index in 0..5 {
        tessera.organization_token(&org, &format!("Token{index}")).await;
    }
    let path = format!("/api/v1.6/auth/tokens/organizations/{org}/?page_size=2&page=2");
    let (status, page) = tessera.call(Method::GET, &path, &[("x-ubidots-apikey", &tessera.api_key)], None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(page["count"], 5);
    assert_eq!(page["results"].as_array().unwrap().len(), 2);
    assert_eq!(page["results"][0]["name"], "Token2");
    let next = page["next"].as_str().unwrap();
    assert_eq!(next, tessera.url(&format!("/api/v1.6/auth/tokens/organizations/{org}?page_size=2&page=3")));
    let previous = page["previous"].as_str().unwrap();
    assert!(previous.ends_with("page_size=2&page=1"), "{previous}");
    let (_, last) = tessera
        .call(Method::GET, next.trim_start_matches(&tessera.base), &[("x-ubidots-apikey", &tessera.api_key)], None)
        .await;
    assert_eq!(last["results"].as_array().unwrap().len(), 1);
    assert_eq!(last["next"], json!(null));
}

#[tokio::test]
async fn organization_tokens_can_be_revoked_and_are_refused_at_once() {
    let tessera = TestServer::start().await;
    let org = tessera.organization("Org").await;
    let created = tessera.organization_token(&org, "Token1").await;
    let token = created["token"].as_str().unwrap();
    let (status, _) = tessera.ubidots(Method::POST, "/devices/d1", token, Some(json!({"t": 1}))).await;
    assert_eq!(status, StatusCode::OK);

    let path = format!("/api/v1.6/auth/tokens/organizations/{org}/{}/", created["id"].as_str().unwrap());
    let (status, _) = tessera.call(Method::DELETE, &path, &[("x-ubidots-apikey", &tessera.api_key)], None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, body) = tessera.ubidots(Method::POST, "/devices/d1", token, Some(json!({"t": 2}))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    let (status, _) = tessera.call(Method::DELETE, &path, &[("x-ubidots-apikey", &tessera.api_key)], None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn organization_routes_need_the_api_key_and_an_existing_organization() {
    let tessera = TestServer::start().await;
    let org = tessera.organization("Org").await;
    let account_token = tessera.account_token().await;
    let path = format!("/api/v1.6/auth/tokens/organizations/{org}/");

    let (status, _) = tessera.call(Method::GET, &path, &[], None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = tessera.call(Method::GET, &path, &[("x-ubidots-apikey", &account_token)], None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "a token is not an API key");
    let (status, _) =
        tessera.call(Method::POST, "/api/v1.6/auth/token", &[("x-ubidots-apikey", "tsk_unknown")], None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let missing = "/api/v1.6/auth/tokens/organizations/0000000000000/";
    let (status, _) = tessera.call(Method::GET, missing, &[("x-ubidots-apikey", &tessera.api_key)], None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, body) =
        tessera.call(Method::POST, &path, &[("x-ubidots-apikey", &tessera.api_key)], Some(json!({"name": 5}))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body["detail"].as_str().unwrap().contains("name"), "{body}");

    // The API key itself only mints tokens: it cannot send data.
    let (status, body) = tessera
        .call(Method::POST, "/api/v1.6/devices/x", &[("x-auth-token", &tessera.api_key)], Some(json!({"t": 1})))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
}
