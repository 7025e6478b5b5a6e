//! Issue 17, part 4: `tessera bench --crash`, the short version. The server is killed with SIGKILL under HTTP and
//! MQTT QoS 1 ingest ten times and restarted on the same store; every acknowledged reading must be there, whole,
//! and the store must pass its integrity check.

use serde_json::Value;

use super::tessera;

/// Runs `tessera bench --crash CYCLES --json` with `extra` arguments and answers its summary, failing with what it
/// printed if it failed (a loss exits non-zero).
async fn crash_check(cycles: &str, extra: &[&str]) -> Value {
    let output = tessera().args(["bench", "--crash", cycles, "--json"]).args(extra).output().await.unwrap();
    let printed = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{}\n{printed}\n{}", output.status, String::from_utf8_lossy(&output.stderr));
    serde_json::from_str(&printed).expect("one JSON document")
}

/// What every run must show, whatever the store: nothing acknowledged missing, nothing half-written or foreign,
/// and both HTTP and MQTT acknowledged something, so the check had something to lose.
fn assert_nothing_lost(summary: &Value) {
    assert_eq!(summary["cycles"], 10, "{summary:#}");
    assert_eq!(summary["clean"], true, "{summary:#}");
    assert_eq!(summary["lost"], 0, "{summary:#}");
    for part in ["per_cycle", "whole_store"] {
        let findings = &summary[part];
        assert_eq!(findings["lost"], 0, "{part}: {summary:#}");
        assert_eq!(findings["torn_requests"], 0, "{part}: {summary:#}");
        assert_eq!(findings["wrong_values"], 0, "{part}: {summary:#}");
        assert_eq!(findings["foreign"], 0, "{part}: {summary:#}");
        assert_eq!(findings["found"], findings["readings_acknowledged"], "{part}: {summary:#}");
    }
    // Each cycle's requests are read back once, and all of them again at the end: the same acknowledgements.
    assert_eq!(summary["per_cycle"]["readings_acknowledged"], summary["whole_store"]["readings_acknowledged"]);
    assert!(summary["readings_acknowledged"].as_u64().unwrap() > 0, "{summary:#}");
    assert!(summary["requests_acknowledged"]["http"].as_u64().unwrap() > 0, "{summary:#}");
    assert!(summary["requests_acknowledged"]["mqtt"].as_u64().unwrap() > 0, "{summary:#}");
    assert_eq!(summary["failures_while_running"], serde_json::json!([]), "{summary:#}");
    // Every server started cleanly and ran without logging an error or panicking, the restarts on a crashed store
    // included.
    assert_eq!(summary["server_errors"]["count"], 0, "{summary:#}");
}

#[tokio::test]
async fn ten_kills_under_ingest_lose_no_acknowledged_reading_on_sqlite() {
    let summary = crash_check("10", &[]).await;
    assert_nothing_lost(&summary);
    assert_eq!(summary["store"], "sqlite");
    // After each kill and once more at the end.
    assert_eq!(summary["integrity"]["checks"], 11, "{summary:#}");
    assert_eq!(summary["integrity"]["ok"], true, "{summary:#}");
}

#[tokio::test]
async fn ten_kills_under_ingest_lose_no_acknowledged_reading_on_postgresql() {
    let Ok(url) = std::env::var("TESSERA_TEST_POSTGRES_URL") else {
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "cli: crash check on PostgreSQL skipped (TESSERA_TEST_POSTGRES_URL is not set)"
        );
        return;
    };
    let summary = crash_check("10", &["--database-url", &url]).await;
    assert_nothing_lost(&summary);
    assert_eq!(summary["store"], "postgres");
}
