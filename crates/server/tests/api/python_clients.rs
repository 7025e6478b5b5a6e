//! Public third-party clients, unchanged, against a Tessera of the test's own. They need Python packages that
//! `.ci/run` installs; without them the test says plainly that it was skipped (and fails under CI, where a
//! missing package is a broken install step).

use std::path::PathBuf;
use std::process::Command;

use crate::helpers::TestServer;

fn python_module_available(module: &str) -> bool {
    Command::new("python3")
        .args(["-c", &format!("import {module}")])
        .output()
        .map(|output| output.status.success())
        .unwrap_or(false)
}

fn client_script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/clients").join(name)
}

/// Runs a client script against `tessera` with `environment`, unless its Python packages are missing; answers
/// whether it ran.
pub(crate) async fn run_client(script: &str, packages: &[&str], environment: Vec<(&'static str, String)>) -> bool {
    let missing: Vec<&&str> = packages.iter().filter(|package| !python_module_available(package)).collect();
    if !missing.is_empty() {
        assert!(std::env::var_os("CI").is_none(), "CI must install the Python packages {missing:?}");
        eprintln!("skipped {script}: the Python packages {missing:?} are not installed (see .ci/run)");
        return false;
    }
    let script = client_script(script);
    let output = tokio::task::spawn_blocking(move || {
        Command::new("python3").arg(&script).envs(environment).output().expect("python3 runs")
    })
    .await
    .unwrap();
    assert!(
        output.status.success(),
        "the client failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    true
}

#[tokio::test]
async fn the_ubidots_python_client_works_unchanged() {
    let tessera = TestServer::start().await;
    let environment = vec![("TESSERA_BASE_URL", tessera.base.clone()), ("TESSERA_API_KEY", tessera.api_key.clone())];
    run_client("ubidots_client.py", &["ubidots"], environment).await;
}

#[tokio::test]
async fn a_real_totp_generator_logs_in() {
    let tessera = TestServer::start().await;
    let environment = vec![
        ("TESSERA_BASE_URL", tessera.base.clone()),
        ("TESSERA_ADMIN_EMAIL", tessera.admin_email.clone()),
        ("TESSERA_ADMIN_PASSWORD", tessera.admin_password.clone()),
    ];
    run_client("totp_login.py", &["pyotp", "requests"], environment).await;
}

#[tokio::test]
async fn the_telenor_nbiot_client_works_unchanged() {
    let tessera = TestServer::start().await;
    let (session, _) = tessera.user("ada@example.com", "correct horse battery").await;
    let (status, token) = tessera
        .call(
            reqwest::Method::POST,
            "/tokens",
            &[("authorization", &format!("Bearer {session}"))],
            Some(serde_json::json!({"resource": "/", "write": true})),
        )
        .await;
    assert_eq!(status, reqwest::StatusCode::CREATED, "{token}");
    let environment = vec![
        ("TESSERA_BASE_URL", tessera.base.clone()),
        ("TESSERA_TOKEN", token["token"].as_str().unwrap().to_owned()),
    ];
    run_client("nbiot_client.py", &["nbiot", "websockets", "requests"], environment).await;
}

#[tokio::test]
async fn the_allthingstalk_sdk_works_unchanged() {
    let tessera = TestServer::start().await;
    let account_token = tessera.account_token().await;
    tessera
        .ubidots(reqwest::Method::POST, "/devices/thermostat", &account_token, Some(serde_json::json!({"boot": 1})))
        .await;
    let (_, sources) = tessera.ubidots(reqwest::Method::GET, "/datasources", &account_token, None).await;
    let device = sources["results"][0]["id"].as_str().unwrap().to_owned();
    let (_, minted) = tessera
        .native(
            reqwest::Method::POST,
            &format!("/devices/{device}/tokens"),
            &tessera.api_key,
            Some(serde_json::json!({"name": "sdk"})),
        )
        .await;
    // The SDK's own boot asset list must not include the Ubidots variable: remove it first.
    let (_, variables) = tessera.ubidots(reqwest::Method::GET, "/variables", &account_token, None).await;
    let boot = variables["results"][0]["id"].as_str().unwrap().to_owned();
    tessera.ubidots(reqwest::Method::DELETE, &format!("/variables/{boot}"), &account_token, None).await;
    let server = tessera.server.as_ref().unwrap();
    let environment = vec![
        ("TESSERA_HTTP", server.http_addr().to_string()),
        ("TESSERA_MQTT", server.mqtt_addr().unwrap().to_string()),
        ("TESSERA_DEVICE", device),
        ("TESSERA_TOKEN", minted["secret"].as_str().unwrap().to_owned()),
    ];
    run_client("allthingstalk_sdk.py", &["allthingstalk", "paho.mqtt", "dateutil"], environment).await;
}
