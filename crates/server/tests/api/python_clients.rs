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

#[tokio::test]
async fn the_ubidots_python_client_works_unchanged() {
    if !python_module_available("ubidots") {
        assert!(std::env::var_os("CI").is_none(), "CI must install the Python package ubidots==1.6.6");
        eprintln!("skipped: the Python package ubidots 1.6.6 is not installed (pip install ubidots==1.6.6)");
        return;
    }
    let tessera = TestServer::start().await;
    let script = client_script("ubidots_client.py");
    let base = tessera.base.clone();
    let api_key = tessera.api_key.clone();
    let output = tokio::task::spawn_blocking(move || {
        Command::new("python3")
            .arg(script)
            .env("TESSERA_BASE_URL", base)
            .env("TESSERA_API_KEY", api_key)
            .output()
            .expect("python3 runs")
    })
    .await
    .unwrap();
    assert!(
        output.status.success(),
        "the ubidots client failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
