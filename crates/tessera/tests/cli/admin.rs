//! The operator's commands (`tessera token|user|device|variable|readings|status`) as a script at 3 a.m. runs them:
//! the real binary against a store a real `tessera serve` uses, on SQLite and (when `TESSERA_TEST_POSTGRES_URL`
//! is set) on PostgreSQL, each test with its own data directory or scratch schema.

use std::process::{Output, Stdio};
use std::time::Duration;

use serde_json::{Value, json};
use tessera_store::{Store, UserTotp};
use tokio::io::{AsyncBufReadExt, BufReader};

use super::{Serving, tessera};

/// Where the store is, as the flags every command takes.
#[derive(Clone)]
struct Place {
    flags: Vec<String>,
    postgres: Option<String>,
}

impl Place {
    fn sqlite(dir: &std::path::Path) -> Place {
        Place { flags: vec!["--data-dir".into(), dir.display().to_string()], postgres: None }
    }

    fn postgres(url: &str) -> Place {
        Place { flags: vec!["--database-url".into(), url.to_owned()], postgres: Some(url.to_owned()) }
    }

    async fn store(&self) -> Box<dyn Store> {
        match &self.postgres {
            Some(url) => Box::new(tessera_store::PostgresStore::connect(url).await.unwrap()),
            None => {
                let file = std::path::Path::new(&self.flags[1]).join("tessera.db");
                Box::new(tessera_store::SqliteStore::open(&file).await.unwrap())
            }
        }
    }
}

/// Runs `tessera ARGS… <place flags>` and answers its output.
async fn run(place: &Place, args: &[&str]) -> Output {
    tessera().args(args).args(&place.flags).output().await.unwrap()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Runs a command that must succeed with JSON on standard output.
async fn run_json(place: &Place, args: &[&str]) -> Value {
    let output = run(place, args).await;
    assert_eq!(output.status.code(), Some(0), "{args:?}: {}", stderr(&output));
    serde_json::from_slice(&output.stdout).unwrap_or_else(|_| panic!("{args:?} prints JSON: {}", stdout(&output)))
}

/// Asserts the exit code and that standard error names `named`.
fn assert_refused(output: &Output, code: i32, named: &str) {
    assert_eq!(output.status.code(), Some(code), "stdout {} stderr {}", stdout(output), stderr(output));
    assert!(stderr(output).contains(named), "the error names {named}: {}", stderr(output));
}

async fn serve(place: &Place) -> Serving {
    let flags: Vec<&std::ffi::OsStr> = place.flags.iter().map(|flag| flag.as_ref()).collect();
    super::serve_with(&flags).await
}

/// The store initialized, the admin given an enabled second factor, a server on it, a token from the API key and
/// 2 500 readings of `boiler/temp` (more than two pages of the export), three of `boiler/state`, one with a
/// context that CSV must quote.
struct Fixture {
    place: Place,
    admin_password: String,
    token: String,
    serving: Serving,
    client: reqwest::Client,
}

async fn fixture(place: Place) -> Fixture {
    let init = run(&place, &["init", "--json"]).await;
    assert!(init.status.success(), "{}", stderr(&init));
    let credentials: Value = serde_json::from_slice(&init.stdout).unwrap();
    let api_key = credentials["api_key"].as_str().unwrap().to_owned();
    {
        let store = place.store().await;
        let admin = store.users_by_email("admin@tessera.local").await.unwrap().remove(0);
        let totp = UserTotp { secret: vec![7; 20], enabled: true, last_step: None };
        store.set_totp(admin.id, None, Some(&totp), &[], &[]).await.unwrap();
        store.close().await;
    }
    let serving = serve(&place).await;
    let client = reqwest::Client::new();
    let answer: Value = client
        .post(format!("{}/api/v1.6/auth/token", serving.base))
        .header("x-ubidots-apikey", &api_key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = answer["token"].as_str().unwrap().to_owned();
    // 125 a request: the body limit is 10 000 bytes.
    for chunk in 0..20 {
        let dots: Vec<Value> =
            (0..125).map(|n| chunk * 125 + n).map(|n| json!({"value": n, "timestamp": 1_000_000 + n * 1000})).collect();
        let response = client
            .post(format!("{}/api/v1.6/devices/boiler/temp/values", serving.base))
            .header("x-auth-token", &token)
            .json(&dots)
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success(), "{}", response.text().await.unwrap());
    }
    let states = json!({"state": [
        {"value": 1, "timestamp": 5000, "context": {"note": "a, \"quoted\" one"}},
        {"value": 2, "timestamp": 6000}, {"value": 3, "timestamp": 7000}]});
    let response = client
        .post(format!("{}/api/v1.6/devices/boiler", serving.base))
        .header("x-auth-token", &token)
        .json(&states)
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success());
    let admin_password = credentials["admin_password"].as_str().unwrap().to_owned();
    Fixture { place, admin_password, token, serving, client }
}

impl Fixture {
    /// The status of a request with the Ubidots token.
    async fn token_status(&self) -> u16 {
        self.client
            .get(format!("{}/api/v1.6/devices/boiler/temp/values?page_size=1", self.serving.base))
            .header("x-auth-token", &self.token)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    /// The audit trail's entries of `event`, as the administrator reads them (signed in with the password alone:
    /// call it after the second factor's reset).
    async fn audit(&self, event: &str) -> Vec<Value> {
        let login: Value = self
            .client
            .post(format!("{}/v1/login", self.serving.base))
            .json(&json!({"email": "admin@tessera.local", "password": self.admin_password}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let session = login["access_token"].as_str().unwrap_or_else(|| panic!("{login}"));
        let answer: Value = self
            .client
            .get(format!("{}/v1/audit?event={event}", self.serving.base))
            .bearer_auth(session)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        answer["entries"].as_array().cloned().unwrap_or_else(|| panic!("{answer}"))
    }

    async fn stop(&mut self) {
        self.serving.child.kill().await.unwrap();
        self.serving.child.wait().await.unwrap();
    }
}

/// The readings-only commands and the second factor's reset, beside a running server, on either store.
async fn reads_and_reset_beside_a_server(fixture: &Fixture) {
    let place = &fixture.place;
    // status: what the store holds.
    let status = run_json(place, &["status", "--json"]).await;
    assert_eq!((&status["devices"], &status["variables"], &status["readings"]), (&json!(1), &json!(2), &json!(2503)));
    assert_eq!((&status["accounts"], &status["users"], &status["collections"]), (&json!(1), &json!(1), &json!(1)));
    assert_eq!(status["live_tokens"], json!({"account": 1, "api_key": 1}), "{status}");
    assert!(status["database_bytes"].as_u64().unwrap() > 50_000, "{status}");
    let table = stdout(&run(place, &["status"]).await);
    assert!(table.lines().any(|line| line.starts_with("readings") && line.ends_with(" 2503")), "{table}");

    // token list and show, as JSON and as a table.
    let tokens = run_json(place, &["token", "list", "--json"]).await;
    let kinds: Vec<&str> = tokens.as_array().unwrap().iter().map(|token| token["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["api_key", "account"]);
    let account_token = run_json(place, &["token", "list", "--kind", "account", "--json"]).await;
    let id = account_token[0]["id"].as_str().unwrap().to_owned();
    assert!(!stdout(&run(place, &["token", "list", "--json"]).await).contains(&fixture.token), "no secret shown");
    let table = stdout(&run(place, &["token", "list"]).await);
    let mut lines = table.lines();
    let header = lines.next().unwrap();
    assert!(header.starts_with("ID") && header.contains("  KIND  ") && header.ends_with("NAME"), "{table}");
    let row = lines.find(|line| line.starts_with(&id)).expect("the token's row");
    assert_eq!(row.find("account"), header.find("KIND"), "columns are aligned: {table}");
    assert_eq!(row.find("live"), header.find("STATE"), "{table}");
    let shown = run_json(place, &["token", "show", &id, "--json"]).await;
    assert_eq!(
        (&shown["kind"], &shown["state"], &shown["scope"]),
        (&json!("account"), &json!("live"), &json!("account"))
    );
    let fields = stdout(&run(place, &["token", "show", &id]).await);
    assert!(fields.lines().any(|line| line.starts_with("kind") && line.ends_with(" account")), "{fields}");

    // devices and variables.
    let devices = run_json(place, &["device", "list", "--json"]).await;
    assert_eq!(devices[0]["label"], "boiler", "{devices}");
    let device_table = stdout(&run(place, &["device", "list"]).await);
    assert!(device_table.lines().nth(1).unwrap().contains("  boiler  "), "{device_table}");
    let device = run_json(place, &["device", "show", "boiler", "--json"]).await;
    let variables = device["variables"].as_array().unwrap();
    assert_eq!(variables.len(), 2);
    assert_eq!((&variables[1]["label"], &variables[1]["last"]["value"]), (&json!("temp"), &json!(2499.0)));
    let by_id = run_json(place, &["device", "show", devices[0]["id"].as_str().unwrap(), "--json"]).await;
    assert_eq!(by_id["label"], "boiler");
    let shown = stdout(&run(place, &["device", "show", "boiler"]).await);
    assert!(shown.contains("VARIABLE") && shown.lines().any(|line| line.contains("  temp  ")), "{shown}");
    let values =
        run_json(place, &["variable", "values", "--device", "boiler", "--variable", "temp", "--limit", "3", "--json"])
            .await;
    let numbers: Vec<f64> = values.as_array().unwrap().iter().map(|value| value["value"].as_f64().unwrap()).collect();
    assert_eq!(numbers, [2499.0, 2498.0, 2497.0]);

    // The export of a range is what the Ubidots API answers for it, over more than two pages of the store.
    let (start, end) = (1_000_000 + 100 * 1000, 1_000_000 + 2_300 * 1000);
    let from = tessera_core::time::rfc3339(start);
    let to = tessera_core::time::rfc3339(end);
    let exported = run(
        place,
        &["readings", "export", "--device", "boiler", "--variable", "temp", "--from", &from, "--to", &to, "--json"],
    )
    .await;
    assert!(exported.status.success(), "{}", stderr(&exported));
    let lines: Vec<Value> = stdout(&exported).lines().map(|line| serde_json::from_str(line).unwrap()).collect();
    let mut from_api: Vec<(i64, f64)> = Vec::new();
    for page in 1..=3 {
        let url = format!(
            "{}/api/v1.6/devices/boiler/temp/values?start={start}&end={end}&page_size=1000&page={page}",
            fixture.serving.base
        );
        let api: Value =
            fixture.client.get(url).header("x-auth-token", &fixture.token).send().await.unwrap().json().await.unwrap();
        let results = api["results"].as_array().unwrap_or_else(|| panic!("{api}"));
        from_api.extend(results.iter().map(|dot| (dot["timestamp"].as_i64().unwrap(), dot["value"].as_f64().unwrap())));
    }
    let from_export: Vec<(i64, f64)> =
        lines.iter().map(|line| (line["timestamp_ms"].as_i64().unwrap(), line["value"].as_f64().unwrap())).collect();
    assert_eq!(from_export.len(), 2201);
    assert_eq!(from_export, from_api);
    assert!(lines.iter().all(|line| line["device"] == "boiler" && line["variable"] == "temp"));
    // CSV: every variable of the device, a header, RFC 4180 quoting of a context with a comma and quotes.
    let csv = run(place, &["readings", "export", "--device", "boiler"]).await;
    let csv = stdout(&csv);
    let mut rows = csv.lines();
    assert_eq!(rows.next(), Some("device,variable,timestamp,value,bytes_base64,context,received_at"));
    let rows: Vec<&str> = rows.collect();
    assert_eq!(rows.len(), 2503, "the whole range by default");
    assert!(rows[0].starts_with("boiler,state,1970-01-01T00:00:07.000Z,3.0,,,"), "{}", rows[0]);
    assert!(rows[2].contains(r#",1.0,,"{""note"":""a, \""quoted\"" one""}","#), "{}", rows[2]);
    // A reader that takes the first line and goes (`| head -1`) stops the export quietly, with success.
    let mut export = tessera()
        .args(["readings", "export", "--device", "boiler"])
        .args(&place.flags)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(export.stdout.take().unwrap()).read_line(&mut first).await.unwrap();
    assert!(first.starts_with("device,variable,"), "{first}");
    let closed = export.wait_with_output().await.unwrap();
    assert_eq!(closed.status.code(), Some(0), "{}", stderr(&closed));
    assert!(!stderr(&closed).contains("error"), "{}", stderr(&closed));

    // Not found: named, exit 3.
    assert_refused(&run(place, &["device", "show", "furnace"]).await, 3, "'furnace'");
    assert_refused(
        &run(place, &["variable", "values", "--device", "boiler", "--variable", "pressure"]).await,
        3,
        "'pressure'",
    );
    assert_refused(&run(place, &["token", "show", "0000000000001"]).await, 3, "0000000000001");
    assert_refused(&run(place, &["token", "list", "--user", "nobody@example.com"]).await, 3, "nobody@example.com");
    assert_refused(&run(place, &["user", "reset-second-factor", "nobody@example.com"]).await, 3, "nobody@example.com");
    assert_refused(&run(place, &["readings", "export", "--device", "furnace"]).await, 3, "'furnace'");
    // Usage: the flag named, exit 2.
    let backwards =
        ["readings", "export", "--device", "boiler", "--from", "2026-01-02T00:00:00Z", "--to", "2026-01-01T00:00:00Z"];
    assert_refused(&run(place, &backwards).await, 2, "--from");
    assert_refused(
        &run(place, &["readings", "export", "--device", "boiler", "--from", "yesterday"]).await,
        2,
        "--from",
    );
    assert_refused(&run(place, &["readings", "export", "--device", "boiler", "--format", "xml"]).await, 2, "--format");
    assert_refused(&run(place, &["token", "list", "--kind", "bogus"]).await, 2, "--kind");
    assert_refused(&run(place, &["token", "show", "not-an-id"]).await, 2, "<ID>");
    assert_refused(&run(place, &["token", "revoke"]).await, 2, "<ID>");
    assert_refused(
        &run(place, &["variable", "values", "--device", "boiler", "--variable", "temp", "--limit", "0"]).await,
        2,
        "--limit",
    );

    // The second factor's reset, beside the running server: done, audited as the operator, seen by the API.
    let users = run_json(place, &["user", "list", "--json"]).await;
    assert_eq!((&users[0]["email"], &users[0]["second_factor"]), (&json!("admin@tessera.local"), &json!("enabled")));
    let table = stdout(&run(place, &["user", "list"]).await);
    assert!(table.lines().nth(1).unwrap().contains("  enabled  "), "{table}");
    let reset = run_json(place, &["user", "reset-second-factor", "ADMIN@tessera.local", "--json"]).await;
    assert_eq!(reset["reset"], true, "{reset}");
    let users = run_json(place, &["user", "list", "--json"]).await;
    assert_eq!(users[0]["second_factor"], "none");
    let again = run(place, &["user", "reset-second-factor", users[0]["id"].as_str().unwrap()]).await;
    assert!(again.status.success() && stdout(&again).contains("has no second factor"), "{}", stdout(&again));
    let entries = fixture.audit("second_factor.reset").await;
    assert_eq!(entries.len(), 1, "once: the second reset changed nothing {entries:?}");
    assert_eq!(
        (&entries[0]["actor"], &entries[0]["detail"]["email"]),
        (&json!("operator"), &json!("admin@tessera.local"))
    );
}

#[tokio::test]
async fn operator_commands_on_sqlite_beside_a_running_server() {
    let directory = tempfile::tempdir().unwrap();
    let mut fixture = fixture(Place::sqlite(directory.path())).await;
    reads_and_reset_beside_a_server(&fixture).await;
    let place = fixture.place.clone();
    let pid = fixture.serving.child.id().unwrap();
    let status = run_json(&place, &["status", "--json"]).await;
    assert_eq!((&status["server_running"], &status["server_pid"]), (&json!(true), &json!(pid)));
    assert!(stdout(&run(&place, &["status"]).await).contains(&format!("running (process {pid})")));

    // A revocation the running server would not hear of is refused, naming it, and the token still works.
    let id =
        run_json(&place, &["token", "list", "--kind", "account", "--json"]).await[0]["id"].as_str().unwrap().to_owned();
    let refused = run(&place, &["token", "revoke", &id]).await;
    assert_refused(&refused, 4, &format!("a running Tessera server (process {pid}) holds the data directory"));
    assert!(stderr(&refused).contains("POST /v1/tokens/revoke"), "it says what to do instead: {}", stderr(&refused));
    assert_refused(&run(&place, &["token", "revoke", "--kind", "account"]).await, 4, &format!("process {pid}"));
    assert_eq!(fixture.token_status().await, 200, "the token is untouched");
    assert_eq!(run_json(&place, &["token", "show", &id, "--json"]).await["state"], "live");

    // With the server stopped, the revocation is made and audited; the next server refuses the token.
    fixture.stop().await;
    let status = run_json(&place, &["status", "--json"]).await;
    assert_eq!((&status["server_running"], &status["server_pid"]), (&json!(false), &Value::Null));
    let revoked = run_json(&place, &["token", "revoke", &id, "--json"]).await;
    assert_eq!(revoked, json!({"revoked": 1, "tokens": [id]}));
    let again = run(&place, &["token", "revoke", &id]).await;
    assert!(again.status.success() && stdout(&again).contains("was not live"), "{}", stdout(&again));
    assert_eq!(run_json(&place, &["token", "show", &id, "--json"]).await["state"], "revoked");
    assert_eq!(run_json(&place, &["token", "revoke", "--kind", "api_key", "--json"]).await, json!({"revoked": 1}));
    // The administrator's login session (the audit was read with it): its access and refresh token.
    let sessions = run_json(&place, &["token", "revoke", "--user", "admin@tessera.local", "--json"]).await;
    assert_eq!(sessions, json!({"revoked": 2}));
    assert_eq!(run_json(&place, &["token", "list", "--json"]).await, json!([]));
    let table = stdout(&run(&place, &["token", "list"]).await);
    assert_eq!(table.lines().count(), 1, "an empty listing is its header: {table}");
    // The API key is revoked too: read the audit trail straight from the store.
    let store = place.store().await;
    let account = store.accounts().await.unwrap()[0].id;
    let query =
        tessera_store::AuditQuery { actor: Some(tessera_store::Actor::Operator), limit: 100, ..Default::default() };
    let entries = store.audit_entries(account, &query).await.unwrap();
    store.close().await;
    // (Entries of one transaction share their millisecond, so their order among themselves is not asserted.)
    let mut events: Vec<&str> = entries.iter().map(|entry| entry.event.as_str()).collect();
    events.sort_unstable();
    let revoked = ["token.revoked"; 4];
    let expected = [&["second_factor.reset"][..], &revoked, &["tokens.bulk_revoked"; 2]].concat();
    assert_eq!(events, expected);
    fixture.serving = serve(&place).await;
    assert_eq!(fixture.token_status().await, 401, "the revoked token is refused");
    fixture.stop().await;

    // Unreachable: no database where the flags point (and none is created), exit 5.
    let missing = directory.path().join("typo");
    let output = tessera().args(["status", "--data-dir"]).arg(&missing).output().await.unwrap();
    assert_refused(&output, 5, "no Tessera database at");
    assert!(!missing.exists(), "a typo creates nothing");
}

/// A listing longer than the rows a table holds to settle its widths is printed whole and aligned, and its JSON is
/// one array.
#[tokio::test]
async fn long_listings_are_streamed_whole() {
    let directory = tempfile::tempdir().unwrap();
    let place = Place::sqlite(directory.path());
    assert!(run(&place, &["init", "--json"]).await.status.success());
    let store = place.store().await;
    let account = store.accounts().await.unwrap()[0].id;
    let collection = store.default_collection(account).await.unwrap().id;
    let now = 1_800_000_000_000;
    let devices: Vec<tessera_store::Device> = (0..2_345)
        .map(|n| tessera_store::Device {
            id: tessera_core::DeviceId(tessera_core::Id::generate(now, n)),
            account,
            collection,
            label: tessera_core::Label::parse(&format!("sensor-{n:05}")).unwrap(),
            name: if n == 2_000 { "a name longer than any before it".into() } else { String::new() },
            imsi: None,
            imei: None,
            tags: Default::default(),
            created_at_ms: now,
            last_seen_at_ms: None,
        })
        .collect();
    assert_eq!(store.insert_devices(&devices).await.unwrap(), 2_345);
    store.close().await;

    let table = stdout(&run(&place, &["device", "list"]).await);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 2_346, "a header and every device");
    let label_at = lines[0].find("LABEL").unwrap();
    assert!(lines[1..].iter().all(|line| line.find("sensor-") == Some(label_at)), "aligned past the first page");
    assert!(lines.iter().any(|line| line.ends_with("a name longer than any before it")));
    let listed = run_json(&place, &["device", "list", "--json"]).await;
    assert_eq!(listed.as_array().unwrap().len(), 2_345);
    let named = run_json(&place, &["device", "list", "--json", "--account", &account.to_string()]).await;
    assert_eq!(named, listed);
    assert_refused(&run(&place, &["device", "list", "--account", "0000000000001"]).await, 3, "0000000000001");
}

#[tokio::test]
async fn help_documents_the_exit_codes() {
    for command in
        [&["--help"][..], &["token", "--help"], &["status", "--help"], &["user", "reset-second-factor", "--help"]]
    {
        let help = stdout(&tessera().args(command).output().await.unwrap());
        assert!(
            help.contains("3 not found")
                && help.contains("4 refused because a running server holds the SQLite data directory"),
            "{command:?}: {help}"
        );
    }
}

#[tokio::test]
async fn an_unreachable_postgresql_exits_5() {
    let output = tessera()
        .args(["token", "list", "--database-url", "postgres://postgres@127.0.0.1:1/none"])
        .output()
        .await
        .unwrap();
    assert_refused(&output, 5, "cannot reach PostgreSQL");
}

#[tokio::test]
async fn operator_commands_on_postgresql_reach_a_running_node_at_once() {
    let Ok(base) = std::env::var("TESSERA_TEST_POSTGRES_URL") else {
        use std::io::Write;
        let _ = writeln!(std::io::stderr(), "admin: PostgreSQL skipped (TESSERA_TEST_POSTGRES_URL is not set)");
        return;
    };
    let schema = tessera_store::ScratchSchema::create(&base, "admin").await.unwrap();
    let mut fixture = fixture(Place::postgres(schema.url())).await;
    reads_and_reset_beside_a_server(&fixture).await;
    let place = fixture.place.clone();
    let status = run_json(&place, &["status", "--json"]).await;
    assert_eq!(status["server_running"], Value::Null, "PostgreSQL nodes take no lock: {status}");

    // The revocation goes out with its transaction: the running node refuses the token within a second.
    assert_eq!(fixture.token_status().await, 200, "cached by the node");
    let id =
        run_json(&place, &["token", "list", "--kind", "account", "--json"]).await[0]["id"].as_str().unwrap().to_owned();
    let revoked = run_json(&place, &["token", "revoke", &id, "--json"]).await;
    assert_eq!(revoked["revoked"], 1);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
    loop {
        if fixture.token_status().await == 401 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the node still honours the revoked token");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let entries = fixture.audit("token.revoked").await;
    assert_eq!((&entries[0]["actor"], &entries[0]["token"]), (&json!("operator"), &json!(id)));
    fixture.stop().await;
    schema.drop().await.unwrap();
}

#[tokio::test]
async fn a_store_without_its_server_key_is_refused_and_no_key_is_made() {
    // Opening used to make a new key, under which every stored token was garbage from then on.
    let directory = tempfile::tempdir().unwrap();
    let init = tessera().args(["init", "--data-dir"]).arg(directory.path()).output().await.unwrap();
    assert!(init.status.success(), "{}", stderr(&init));
    std::fs::remove_file(directory.path().join("server.key")).unwrap();
    let place = Place::sqlite(directory.path());
    assert_refused(&run(&place, &["status"]).await, 1, "no server.key");
    assert!(!directory.path().join("server.key").exists(), "no key was made");
}
