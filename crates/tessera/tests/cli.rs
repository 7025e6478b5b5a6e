//! The `tessera` binary as an operator uses it: `init`, `serve`, and a crash in the middle of ingest.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

#[path = "cli/admin.rs"]
mod admin;
#[path = "cli/backup.rs"]
mod backup;
#[path = "cli/crash.rs"]
mod crash;
#[path = "cli/descriptors.rs"]
mod descriptors;
#[path = "cli/fleet.rs"]
mod fleet;

fn tessera() -> Command {
    launched(Command::new(env!("CARGO_BIN_EXE_tessera")))
}

/// `command` (tessera, or a program that executes it) without the operator's own settings in its environment.
fn launched(mut command: Command) -> Command {
    for variable in
        ["TESSERA_DATA_DIR", "TESSERA_DATABASE_URL", "TESSERA_HTTP_ADDR", "TESSERA_MQTT_ADDR", "TESSERA_CONFIG"]
    {
        command.env_remove(variable);
    }
    command.env("RUST_LOG", "warn");
    command
}

/// A running `tessera serve` and what it printed before it said it was listening.
struct Serving {
    child: Child,
    base: String,
    printed: Vec<String>,
}

/// Starts `tessera serve` on port 0 and waits (without sleeping) for the line that names its address.
async fn serve(data_dir: &Path) -> Serving {
    serve_with(&["--data-dir".as_ref(), data_dir.as_os_str()]).await
}

/// `tessera serve ARGS…` on HTTP port 0 (MQTT on port 0 too: the machine's Mosquitto may hold 1883), once it says
/// where it listens.
async fn serve_with(args: &[&std::ffi::OsStr]) -> Serving {
    let mut child = tessera()
        .args(["serve", "--http-addr", "127.0.0.1:0", "--mqtt-addr", "127.0.0.1:0"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("tessera starts");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut printed = Vec::new();
    loop {
        let line = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
            .await
            .expect("tessera announces its address")
            .unwrap()
            .expect("tessera exited before listening");
        if let Some(address) = line.strip_prefix("Tessera is listening on ") {
            return Serving { child, base: address.to_owned(), printed };
        }
        printed.push(line);
    }
}

fn printed_value(printed: &[String], label: &str) -> Option<String> {
    printed.iter().find_map(|line| line.trim().strip_prefix(label).map(|rest| rest.trim().to_owned()))
}

#[tokio::test]
async fn init_prints_credentials_once_as_json_and_then_nothing() {
    let directory = tempfile::tempdir().unwrap();
    let data_dir = directory.path().join("data");
    let first = tessera().args(["init", "--json", "--data-dir"]).arg(&data_dir).output().await.unwrap();
    assert!(first.status.success());
    let credentials: Value = serde_json::from_slice(&first.stdout).expect("one JSON object");
    let keys: Vec<&str> = credentials.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys, ["account_id", "api_key", "admin_email", "admin_password"]);
    assert!(credentials["api_key"].as_str().unwrap().starts_with("tsk_"));

    let key_file = std::fs::metadata(data_dir.join("server.key")).unwrap();
    #[cfg(unix)]
    assert_eq!(std::os::unix::fs::PermissionsExt::mode(&key_file.permissions()) & 0o777, 0o600);
    let database = std::fs::read(data_dir.join("tessera.db")).unwrap();
    let api_key = credentials["api_key"].as_str().unwrap();
    assert!(!database.windows(api_key.len()).any(|window| window == api_key.as_bytes()), "no secret at rest");

    let second = tessera().args(["init", "--json", "--data-dir"]).arg(&data_dir).output().await.unwrap();
    assert!(second.status.success());
    assert!(second.stdout.is_empty(), "a second init reveals nothing");
    assert!(String::from_utf8_lossy(&second.stderr).contains("already initialized"));

    // `serve` on the initialized directory prints no credentials, and the key from `init` works.
    let mut serving = serve(&data_dir).await;
    assert!(printed_value(&serving.printed, "API key:").is_none());
    let response = reqwest::Client::new()
        .post(format!("{}/api/v1.6/auth/token", serving.base))
        .header("x-ubidots-apikey", api_key)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    serving.child.kill().await.unwrap();
}

#[tokio::test]
async fn serve_on_an_empty_directory_prints_the_credentials_once() {
    let directory = tempfile::tempdir().unwrap();
    let mut first = serve(directory.path()).await;
    let api_key = printed_value(&first.printed, "API key:").expect("credentials are printed");
    assert!(api_key.starts_with("tsk_"));
    assert!(printed_value(&first.printed, "admin password:").is_some());
    first.child.kill().await.unwrap();
    first.child.wait().await.unwrap();
    let mut second = serve(directory.path()).await;
    assert!(printed_value(&second.printed, "API key:").is_none());
    second.child.kill().await.unwrap();
}

#[tokio::test]
async fn a_second_server_on_the_same_data_directory_is_refused_naming_the_first() {
    let directory = tempfile::tempdir().unwrap();
    let mut first = serve(directory.path()).await;
    let pid = first.child.id().unwrap();
    let second = tessera()
        .args(["serve", "--http-addr", "127.0.0.1:0", "--data-dir"])
        .arg(directory.path())
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(!second.status.success(), "the second server must not start");
    assert!(stderr.contains(&format!("a running Tessera server (process {pid}) holds the data directory")), "{stderr}");
    // The first still serves, and once it is gone (however it went) the directory is free.
    let health = reqwest::get(format!("{}/healthz", first.base)).await.unwrap();
    assert!(health.status().is_success());
    first.child.kill().await.unwrap();
    first.child.wait().await.unwrap();
    let mut after = serve(directory.path()).await;
    after.child.kill().await.unwrap();
}

#[tokio::test]
async fn help_never_shows_the_database_password_from_the_environment() {
    for command in [&["serve", "--help"][..], &["status", "--help"], &["backup", "--help"]] {
        let output = tessera()
            .args(command)
            .env("TESSERA_DATABASE_URL", "postgres://tessera:hunter2-secret@db/tessera")
            .output()
            .await
            .unwrap();
        let help = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success() && help.contains("TESSERA_DATABASE_URL"), "{command:?}: {help}");
        assert!(!help.contains("hunter2"), "{command:?} shows the password: {help}");
    }
}

#[tokio::test]
async fn sigterm_stops_the_server_gracefully() {
    let directory = tempfile::tempdir().unwrap();
    let mut serving = serve(directory.path()).await;
    let pid = serving.child.id().unwrap();
    let killed = std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status().unwrap();
    assert!(killed.success());
    let status = tokio::time::timeout(Duration::from_secs(30), serving.child.wait()).await.unwrap().unwrap();
    assert!(status.success(), "{status}");
}

/// Every reading answered with 201 is there after `kill -9` in the middle of a stream of ingest requests.
#[tokio::test]
async fn acknowledged_readings_survive_kill_9() {
    let directory = tempfile::tempdir().unwrap();
    let mut serving = serve(directory.path()).await;
    let api_key = printed_value(&serving.printed, "API key:").unwrap();
    let client = reqwest::Client::new();
    let token: Value = client
        .post(format!("{}/api/v1.6/auth/token", serving.base))
        .header("x-ubidots-apikey", &api_key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = token["token"].as_str().unwrap().to_owned();

    // Eight senders, each with its own device and increasing timestamps, until the server dies.
    let (acknowledged_sender, mut acknowledged) = tokio::sync::mpsc::unbounded_channel::<(usize, i64)>();
    let mut senders = tokio::task::JoinSet::new();
    for sender in 0..8 {
        let client = client.clone();
        let url = format!("{}/api/v1.6/devices/crash-{sender}", serving.base);
        let token = token.clone();
        let acknowledged = acknowledged_sender.clone();
        senders.spawn(async move {
            for timestamp in 1.. {
                let body = json!({"v": {"value": timestamp, "timestamp": timestamp}});
                let Ok(response) = client.post(&url).header("x-auth-token", &token).json(&body).send().await else {
                    return;
                };
                let Ok(answer) = response.json::<Value>().await else { return };
                if answer["v"][0]["status_code"] == 201 {
                    let _ = acknowledged.send((sender, timestamp));
                }
            }
        });
    }
    drop(acknowledged_sender);
    let mut received = Vec::new();
    while received.len() < 300 {
        received.push(acknowledged.recv().await.expect("readings are acknowledged"));
    }
    serving.child.start_kill().unwrap();
    serving.child.wait().await.unwrap();
    while senders.join_next().await.is_some() {}
    while let Ok(late) = acknowledged.try_recv() {
        received.push(late);
    }

    let mut restarted = serve(directory.path()).await;
    for sender in 0..8 {
        let highest = received.iter().filter(|(s, _)| *s == sender).map(|(_, t)| *t).max().unwrap_or(0);
        let url = format!("{}/api/v1.6/devices/crash-{sender}/v/values?page_size=1000", restarted.base);
        let values: Value = client.get(&url).header("x-auth-token", &token).send().await.unwrap().json().await.unwrap();
        let stored: std::collections::BTreeSet<i64> = values["results"]
            .as_array()
            .map(|results| results.iter().map(|dot| dot["timestamp"].as_i64().unwrap()).collect())
            .unwrap_or_default();
        for (_, timestamp) in received.iter().filter(|(s, _)| *s == sender) {
            assert!(stored.contains(timestamp), "device {sender}: acknowledged reading {timestamp} was lost");
        }
        assert!(stored.len() as i64 >= highest, "device {sender}: {} stored, {highest} acknowledged", stored.len());
    }
    restarted.child.kill().await.unwrap();
}

#[tokio::test]
async fn user_add_creates_a_user_who_can_log_in() {
    let directory = tempfile::tempdir().unwrap();
    let init = tessera().args(["init", "--json", "--data-dir"]).arg(directory.path()).output().await.unwrap();
    assert!(init.status.success());

    let mut add = tessera()
        .args(["user", "add", "--email", "ada@example.com", "--password-stdin", "--admin", "--data-dir"])
        .arg(directory.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use tokio::io::AsyncWriteExt;
    add.stdin.take().unwrap().write_all(b"correct horse battery\n").await.unwrap();
    let output = add.wait_with_output().await.unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let printed = String::from_utf8_lossy(&output.stdout).to_string() + &String::from_utf8_lossy(&output.stderr);
    assert!(printed.contains("ada@example.com") && printed.contains("administrator"), "{printed}");
    assert!(!printed.contains("correct horse battery"), "the password is never printed");

    let short = tessera()
        .args(["user", "add", "--email", "bob@example.com", "--password", "short", "--data-dir"])
        .arg(directory.path())
        .output()
        .await
        .unwrap();
    assert!(!short.status.success());
    assert!(String::from_utf8_lossy(&short.stderr).contains("at least 10"));

    let mut serving = serve(directory.path()).await;
    let response = reqwest::Client::new()
        .post(format!("{}/v1/login", serving.base))
        .json(&json!({"email": "ada@example.com", "password": "correct horse battery"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    serving.child.kill().await.unwrap();
}

#[tokio::test]
async fn migrate_brings_the_schema_up_to_date_and_names_a_bad_database_url() {
    let directory = tempfile::tempdir().unwrap();
    let file = directory.path().join("elsewhere.db");
    let url = format!("sqlite://{}", file.display());
    let migrated =
        tessera().args(["migrate", "--database-url", &url]).current_dir(directory.path()).output().await.unwrap();
    assert!(migrated.status.success(), "{}", String::from_utf8_lossy(&migrated.stderr));
    assert!(String::from_utf8_lossy(&migrated.stdout).contains("up to date"));
    assert!(file.exists(), "the SQLite file the URL names is created");
    assert!(directory.path().join("server.key").exists(), "its key goes beside it");
    assert!(!directory.path().join("tessera-data").exists(), "not into a data directory in the working directory");

    let refused = tessera()
        .args(["migrate", "--database-url", "mysql://root:hunter2@db/tessera"])
        .current_dir(directory.path())
        .output()
        .await
        .unwrap();
    assert!(!refused.status.success());
    let error = String::from_utf8_lossy(&refused.stderr);
    assert!(error.contains("postgres://") && error.contains("'mysql'"), "{error}");
    assert!(!error.contains("hunter2"), "the URL's password is not echoed: {error}");
}

/// Several nodes starting at once on one PostgreSQL database migrate it once and agree on one account.
#[tokio::test]
async fn nodes_starting_at_once_on_postgresql_migrate_once_and_bootstrap_once() {
    use sqlx::Connection;
    let Ok(base) = std::env::var("TESSERA_TEST_POSTGRES_URL") else {
        use std::io::Write;
        let _ = writeln!(std::io::stderr(), "cli: PostgreSQL start skipped (TESSERA_TEST_POSTGRES_URL is not set)");
        return;
    };
    let schema = tessera_store::ScratchSchema::create(&base, "cli").await.unwrap();
    let url = schema.url().to_owned();

    // Three processes at once: each migrates and bootstraps if it finds no account.
    let starts: Vec<Child> = (0..3)
        .map(|_| {
            tessera()
                .args(["init", "--json", "--database-url", &url])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut created = 0;
    for start in starts {
        let output = start.wait_with_output().await.unwrap();
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        if !output.stdout.is_empty() {
            let credentials: Value = serde_json::from_slice(&output.stdout).expect("one JSON object");
            assert!(credentials["api_key"].as_str().unwrap().starts_with("tsk_"));
            created += 1;
        }
    }
    assert_eq!(created, 1, "exactly one of the starts created the account");
    let mut admin = sqlx::PgConnection::connect(&base).await.unwrap();
    let count = format!("SELECT count(*) FROM \"{}\".accounts", schema.name());
    let accounts: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(count)).fetch_one(&mut admin).await.unwrap();
    assert_eq!(accounts, 1);
    schema.drop().await.unwrap();
}

/// A short `tessera bench` run answers every scenario with figures (not their size: that is the benchmark's job).
#[tokio::test]
async fn bench_measures_every_scenario_and_prints_json() {
    let output = tessera()
        .args(["bench", "--seconds", "1", "--connections", "2", "--devices", "3", "--rounds", "1", "--json"])
        .args(["--population", "25000"])
        .output()
        .await
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let figures: Value = serde_json::from_slice(&output.stdout).expect("one JSON document");
    let scenarios = figures["scenarios"].as_array().unwrap();
    let names: Vec<&str> = scenarios.iter().map(|scenario| scenario["scenario"].as_str().unwrap()).collect();
    for expected in [
        "baseline ingest",
        "durable baseline ingest (group commit, fdatasync)",
        "ingest (Ubidots HTTP, token check, durable write)",
        "ingest against the durable baseline",
        "ingest at half load (paced)",
    ] {
        assert!(names.contains(&expected), "{names:?}");
    }
    for scenario in scenarios.iter().filter(|scenario| !scenario["scenario"].as_str().unwrap().starts_with("MQTT")) {
        assert!(scenario["per_second"].as_f64().unwrap() > 0.0, "{scenario}");
        assert_eq!(scenario["errors"], 0, "{scenario}");
        assert!(scenario["p99_ms"].as_f64().unwrap() > 0.0, "{scenario}");
        assert!(scenario["server_peak_rss_mib"].as_f64().unwrap() > 1.0, "{scenario}");
    }
    let ingest = scenarios
        .iter()
        .find(|scenario| scenario["scenario"] == "ingest (Ubidots HTTP, token check, durable write)")
        .unwrap();
    // A figure, not its size: on a loaded machine a one-second run can round to 0.000 (a disk stall of a second).
    assert!(ingest["ratio_to_baseline"].as_f64().is_some_and(|ratio| ratio >= 0.0), "{ingest}");
    let against_durable =
        scenarios.iter().find(|scenario| scenario["scenario"] == "ingest against the durable baseline").unwrap();
    assert!(against_durable["ratio_to_baseline"].as_f64().is_some(), "{against_durable}");
    let full = &figures["full_store"];
    assert_eq!((&full["devices_added"], &full["tokens_added"]), (&json!(25000), &json!(25000)), "{full}");
    assert!(full["ingest_ratio_to_small_store"].as_f64().unwrap() > 0.0, "{full}");
    let targets = figures["targets"].as_array().unwrap();
    assert_eq!(targets.len(), 5, "{targets:?}");
    assert!(targets.iter().all(|target| target["figure"].is_number() && target["met"].is_boolean()), "{targets:?}");
    let range = &figures["range_read"];
    assert_eq!((&range["values"], &range["pages"]), (&json!(10000), &json!(10)), "{range}");
    assert!(range["median_ms"].as_f64().unwrap() > 0.0, "{range}");
    let verify = &figures["token_verify_us"];
    assert!(verify["cached_p50"].as_f64().unwrap() > 0.0 && verify["store_p50"].as_f64().unwrap() > 0.0);
}

/// Issue 16: `tessera config show` prints what `serve` would run with, flags over variables over the file, and no
/// password.
#[tokio::test]
async fn config_show_prints_the_effective_configuration_without_secrets() {
    let directory = tempfile::tempdir().unwrap();
    let file = directory.path().join("tessera.toml");
    std::fs::write(&file, "http_max_connections = 300\nwriter_queue = 77\n").unwrap();
    let output = tessera()
        .args(["config", "show", "--json", "--config", file.to_str().unwrap(), "--http-max-connections", "500"])
        .args(["--rate-limit-device", "7/3"])
        .env("TESSERA_DATABASE_URL", "postgres://tessera:s3cret@db.example/tessera")
        .env("TESSERA_METRICS_TOKEN", "scrape-secret-0123456789")
        .args(["--metrics-addr", "127.0.0.1:9464"])
        .output()
        .await
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let text = String::from_utf8(output.stdout).unwrap();
    assert!(!text.contains("s3cret") && !text.contains("scrape-secret"), "{text}");
    let shown: Value = serde_json::from_str(&text).unwrap();
    assert_eq!((&shown["metrics_token"], &shown["metrics_addr"]), (&json!("***"), &json!("127.0.0.1:9464")));
    let output = tessera().args(["config", "show"]).env("TESSERA_METRICS_TOKEN", "short").output().await.unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success() && stderr.contains("metrics_token is 5 characters long"), "{stderr}");
    let shown: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(shown["database_url"], "postgres://tessera:***@db.example/tessera");
    assert_eq!((&shown["http_max_connections"], &shown["writer_queue"]), (&json!(500), &json!(77)), "{shown}");
    assert_eq!((&shown["rate_limit_device"], &shown["rate_limit_api_key"]), (&json!("7/3"), &json!("unlimited")));

    let output = tessera().args(["config", "show", "--http-max-connections", "0"]).output().await.unwrap();
    assert!(!output.status.success(), "zero is refused");
    // A value that cannot work is named by its key, by `config show` and by `serve`, before anything starts.
    std::fs::write(&file, "writer_queue = 0\n").unwrap();
    for command in [&["config", "show"][..], &["serve", "--data-dir", directory.path().join("d").to_str().unwrap()][..]]
    {
        let output = tessera().args(command).args(["--config", file.to_str().unwrap()]).output().await.unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            !output.status.success() && stderr.contains("writer_queue must be at least 1"),
            "{command:?}: {stderr}"
        );
    }
    let output = tessera().args(["config", "show"]).output().await.unwrap();
    let lines = String::from_utf8(output.stdout).unwrap();
    assert!(lines.lines().any(|line| line == "http_addr = \"127.0.0.1:8080\""), "TOML lines by default: {lines}");
}
