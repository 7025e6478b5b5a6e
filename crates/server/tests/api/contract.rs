//! The OpenAPI document against the server it describes: served without a credential, and held to by a live
//! Tessera under schemathesis, a property-based contract tester (PyPI, installed by `.ci/run`), which sends
//! thousands of requests made from the document and checks every answer's status, content type, headers and body
//! against it.

use std::process::Command;

use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::helpers::TestServer;

#[tokio::test]
async fn the_document_is_served_without_a_credential() {
    let tessera = TestServer::start().await;
    let response = tessera.client.get(tessera.url("/v1/openapi.json")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "application/json");
    let document: Value = response.json().await.unwrap();
    assert_eq!(document["openapi"], "3.1.0");
    assert!(document["paths"]["/v1/collections"]["post"]["requestBody"].is_object());
    assert_eq!(document["paths"]["/api/v1.6/datasources"]["get"]["x-tessera-dialect"], "ubidots");
    // Every route the document lists exists: none falls through to the 404 for unknown routes, nor to a 405.
    for (path, item) in document["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            let Ok(method) = Method::from_bytes(method.to_uppercase().as_bytes()) else { continue };
            let concrete = path.replace(['{', '}'], "");
            let response = tessera.client.request(method.clone(), tessera.url(&concrete)).send().await.unwrap();
            let status = response.status();
            let body = response.text().await.unwrap_or_default();
            assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
            assert!(
                !(status == StatusCode::NOT_FOUND && body.contains("route not found")),
                "{method} {path} is listed but not routed: {body}"
            );
        }
    }
}

/// A path segment that is not UTF-8 once decoded names nothing: a problem document, not axum's plain-text 400.
#[tokio::test]
async fn a_path_that_is_not_utf8_is_a_problem_document() {
    let tessera = TestServer::start().await;
    for (method, path) in [
        (Method::GET, "/v1/collections/%FF"),
        (Method::GET, "/v1/devices/%C3%28/tokens"),
        (Method::POST, "/v1/tokens/%80/rotate"),
    ] {
        let response = tessera
            .client
            .request(method, tessera.url(path))
            .header("authorization", format!("Bearer {}", tessera.api_key))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{path}");
        assert_eq!(response.headers()["content-type"], "application/problem+json", "{path}");
    }
}

fn schemathesis_available() -> bool {
    Command::new("schemathesis").arg("--version").output().is_ok_and(|output| output.status.success())
}

/// `schemathesis run` against `tessera` with `credential`, over the operations `filters` select (the vendors'
/// routes are listed with their bodies undescribed, so only native operations are selected); its output when it
/// fails.
async fn schemathesis(tessera: &TestServer, credential: &str, filters: &[&str], max_seconds: u32) -> u64 {
    let mut arguments: Vec<String> = vec![
        "run".into(),
        tessera.url("/v1/openapi.json"),
        "--url".into(),
        tessera.base.clone(),
        "--checks".into(),
        "not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,\
         response_schema_conformance"
            .into(),
        "--header".into(),
        format!("Authorization: Bearer {credential}"),
        // Enough cases per operation to reach the edges of every schema, bounded in time for a 2-core CI machine.
        "--max-examples".into(),
        "30".into(),
        "--seed".into(),
        "16".into(),
        "--max-time".into(),
        max_seconds.to_string(),
        "--request-timeout".into(),
        "10".into(),
        // One worker: Python 3.11.7's ast module is not safe across threads ("AST constructor recursion depth
        // mismatch" inside schemathesis with two).
        "--workers".into(),
        "1".into(),
        "--no-color".into(),
        // The event stream answers 200 and never ends: schemathesis would wait for its end until its timeout.
        "--exclude-operation-id".into(),
        "collection_events".into(),
    ];
    arguments.extend(filters.iter().map(|filter| (*filter).to_owned()));
    // schemathesis keeps a cache of failures to replay (`.schemathesis/`) in its working directory: a directory of
    // the run's own, so that no run replays another's and nothing lands in the source tree.
    let workspace = tempfile::tempdir().expect("a temporary directory");
    let output = tokio::task::spawn_blocking(move || {
        Command::new("schemathesis")
            .args(&arguments)
            .current_dir(workspace.path())
            .env("NO_COLOR", "1")
            .output()
            .expect("schemathesis runs")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    println!("{stdout}");
    assert!(
        output.status.success(),
        "schemathesis found failures:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // "5587 generated, 5587 passed": how many cases it ran, so that a run that tested nothing cannot pass.
    stdout
        .lines()
        .find_map(|line| line.trim().split_once(" generated, ").and_then(|(count, _)| count.parse().ok()))
        .expect("schemathesis says how many cases it ran")
}

/// schemathesis over every native operation, with an administrator's session (it reaches every route, the user
/// routes too). Three operations could take that session away mid-run, after which every case would be a 401 and
/// test nothing: logging out, a bulk revocation naming `user_access` tokens or the administrator, and revoking the
/// session's refresh token by its id (which `GET /v1/tokens` lists; its access token goes with it). They run in a
/// second pass with a session of their own, which they may destroy. Both sessions are opened first: schemathesis'
/// wrong passwords get the address's logins throttled (429, as documented).
#[tokio::test(flavor = "multi_thread")]
async fn schemathesis_finds_no_failure() {
    if !schemathesis_available() {
        assert!(std::env::var_os("CI").is_none(), "CI must install schemathesis (see .ci/run)");
        eprintln!("skipped: schemathesis is not installed (see .ci/run)");
        return;
    }
    let tessera = TestServer::start().await;
    let session = tessera.admin_session().await;
    let sacrificial = tessera.admin_session().await;
    let destructive = ["logout", "revoke_tokens_in_bulk", "revoke_token"];
    let mut everything_else = vec!["--include-path-regex", "^/v1/"];
    for operation in destructive {
        everything_else.extend(["--exclude-operation-id", operation]);
    }
    let cases = schemathesis(&tessera, &session, &everything_else, 80).await;
    assert!(cases >= 1_000, "only {cases} cases ran");
    let (status, _) = tessera.native(Method::GET, "/me", &session, None).await;
    assert_eq!(status, StatusCode::OK, "the session survived the first pass");

    let mut only_destructive = Vec::new();
    for operation in destructive {
        only_destructive.extend(["--include-operation-id", operation]);
    }
    let cases = schemathesis(&tessera, &sacrificial, &only_destructive, 20).await;
    assert!(cases >= 100, "only {cases} cases ran");
}
