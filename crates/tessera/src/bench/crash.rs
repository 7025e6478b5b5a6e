//! `tessera bench --crash CYCLES`: whether what Tessera acknowledged survives `kill -9`. Each cycle drives a
//! `tessera serve` child with HTTP ingest and MQTT QoS 1 publishers, kills it with SIGKILL after a random delay
//! (so kills land in commits, WAL checkpoints and the token-usage flush, whose tickers run every second), checks
//! the SQLite file as the kill left it (`PRAGMA integrity_check`), restarts the server on the same data directory
//! and reads back, through the restarted server's API, every reading the cycle sent. At the end the store is
//! opened directly, as the operator's commands open it, and every reading of every cycle is checked once more.
//!
//! Every request carries one reading of each of three variables of its sender's own device, with a timestamp and
//! values no other request has, so a reading in the store says which request it came from. An acknowledged
//! request (HTTP 2xx, MQTT PUBACK) must be in the store whole; one that was not acknowledged may be there, but only
//! whole and with the values sent; nothing else may be.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use bytestring::ByteString;
use futures_util::{SinkExt, StreamExt};
use rmqtt_codec::types::Publish;
use rmqtt_codec::v3::{Packet, QoS};
use serde_json::{Value, json};

use super::load::{self, Connection};
use super::process::ChildServer;
use super::{Options, mqtt, provision, say, tempfile_dir};

const HTTP_SENDERS: usize = 8;
const MQTT_SENDERS: usize = 8;
const SENDERS: usize = HTTP_SENDERS + MQTT_SENDERS;
/// The variables every request writes one reading of, together: a request found in part was half-written.
const VARIABLES: [&str; 3] = ["a", "b", "c"];
/// The kill comes this many milliseconds after the load starts, drawn uniformly. The server's WAL checkpoint and
/// token-usage flush tick every second from its start, which is a little earlier than the load's: a range past a
/// second puts kills before, during and after their first tick.
const KILL_AFTER_MS: (u64, u64) = (50, 1500);
/// Sequence number 1's timestamp; a request's timestamp is this plus its sequence number, in milliseconds.
const FIRST_TIMESTAMP_MS: i64 = 1_700_000_000_000;
/// How long the senders may take to notice that their server is gone.
const SENDERS_STOP_WITHIN: Duration = Duration::from_secs(10);
/// At most this many problems are named one by one; the counts cover all of them.
const NAMED_PROBLEMS: usize = 20;

/// Which device a sender writes to (`provision` creates `bench-N` with sender N's token).
fn device_label(sender: usize) -> String {
    format!("bench-{sender}")
}

fn timestamp_of(sequence: u64) -> i64 {
    FIRST_TIMESTAMP_MS + sequence as i64
}

/// The value of `variable` in request `sequence` of `sender`: unique in the whole run, an integer well within an
/// `f64`'s exact range, so the store gives it back exactly.
fn value_of(sender: usize, sequence: u64, variable: usize) -> u64 {
    sender as u64 * 10_000_000_000 + sequence * VARIABLES.len() as u64 + variable as u64
}

/// A Ubidots device body, the same over HTTP and MQTT: one reading of each variable at the request's timestamp.
fn body(sender: usize, sequence: u64) -> String {
    let timestamp = timestamp_of(sequence);
    let fields: Vec<String> = VARIABLES
        .iter()
        .enumerate()
        .map(|(variable, label)| {
            format!(r#""{label}": {{"value": {}, "timestamp": {timestamp}}}"#, value_of(sender, sequence, variable))
        })
        .collect();
    format!("{{{}}}", fields.join(", "))
}

/// A reading of one sender's device found in the store.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Found {
    /// Index into `VARIABLES`.
    variable: usize,
    timestamp_ms: i64,
    value: f64,
}

/// What a comparison of requests sent with readings stored found, in readings unless said otherwise.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Findings {
    /// Readings of acknowledged requests.
    acknowledged: u64,
    /// Of those, found with the value sent.
    found: u64,
    /// Of those, missing.
    lost: u64,
    /// Readings of requests never acknowledged that are in the store (allowed: the answer was lost in the kill).
    unacknowledged_present: u64,
    /// Requests of which some readings are in the store and others not.
    torn_requests: u64,
    /// Readings at a sent request's timestamp with another value than it sent.
    wrong_values: u64,
    /// Readings no request sent.
    foreign: u64,
}

impl Findings {
    fn clean(&self) -> bool {
        self.lost == 0 && self.torn_requests == 0 && self.wrong_values == 0 && self.foreign == 0
    }

    fn add(&mut self, other: &Findings) {
        self.acknowledged += other.acknowledged;
        self.found += other.found;
        self.lost += other.lost;
        self.unacknowledged_present += other.unacknowledged_present;
        self.torn_requests += other.torn_requests;
        self.wrong_values += other.wrong_values;
        self.foreign += other.foreign;
    }

    fn json(&self) -> Value {
        json!({
            "readings_acknowledged": self.acknowledged,
            "found": self.found,
            "lost": self.lost,
            "unacknowledged_present": self.unacknowledged_present,
            "torn_requests": self.torn_requests,
            "wrong_values": self.wrong_values,
            "foreign": self.foreign,
        })
    }
}

/// Compares the requests `sender` made (sequence number → acknowledged) with the readings of its device found in
/// the store over the timestamps those requests span (or more), adding what it finds to `findings` and naming each
/// problem in `problems` (up to `NAMED_PROBLEMS`).
fn check_sender(
    sender: usize,
    requests: &BTreeMap<u64, bool>,
    found: &[Found],
    findings: &mut Findings,
    problems: &mut Vec<String>,
) {
    let mut name = |problem: String| {
        if problems.len() < NAMED_PROBLEMS {
            problems.push(format!("{}: {problem}", device_label(sender)));
        }
    };
    // What the store holds, by the request it came from; a reading no request can have sent is foreign.
    let mut by_request: BTreeMap<u64, [Option<f64>; VARIABLES.len()]> = BTreeMap::new();
    for reading in found {
        let sequence = u64::try_from(reading.timestamp_ms - FIRST_TIMESTAMP_MS).ok();
        let slot = sequence
            .filter(|sequence| requests.contains_key(sequence) && reading.variable < VARIABLES.len())
            .map(|sequence| &mut by_request.entry(sequence).or_default()[reading.variable]);
        match slot {
            Some(slot) if slot.is_none() => *slot = Some(reading.value),
            _ => {
                findings.foreign += 1;
                name(format!(
                    "a reading no request sent: {} = {} at {}",
                    VARIABLES.get(reading.variable).unwrap_or(&"?"),
                    reading.value,
                    reading.timestamp_ms
                ));
            }
        }
    }
    for (&sequence, &acknowledged) in requests {
        let stored = by_request.get(&sequence).copied().unwrap_or_default();
        let mut present = 0;
        let mut whole = 0;
        for (variable, value) in stored.iter().enumerate() {
            let sent = value_of(sender, sequence, variable) as f64;
            match value {
                None if acknowledged => {
                    findings.lost += 1;
                    name(format!("acknowledged reading lost: {} at {}", VARIABLES[variable], timestamp_of(sequence)));
                }
                None => {}
                Some(value) if *value == sent => {
                    present += 1;
                    whole += 1;
                }
                Some(value) => {
                    present += 1;
                    findings.wrong_values += 1;
                    name(format!("{} at {} is {value}, sent {sent}", VARIABLES[variable], timestamp_of(sequence)));
                }
            }
        }
        if present > 0 && present < VARIABLES.len() {
            findings.torn_requests += 1;
            name(format!(
                "request {sequence} ({}) half-written: {present} of {} readings stored",
                if acknowledged { "acknowledged" } else { "unacknowledged" },
                VARIABLES.len()
            ));
        }
        if acknowledged {
            findings.acknowledged += VARIABLES.len() as u64;
            findings.found += whole;
        } else {
            findings.unacknowledged_present += whole;
        }
    }
}

/// What one sender did in one cycle.
#[derive(Debug)]
struct SenderRun {
    sender: usize,
    /// Every request it began to send, in order, and whether it was acknowledged.
    requests: Vec<(u64, bool)>,
    /// Answers other than 2xx (HTTP) while the server ran.
    refused: u64,
    /// Why it stopped, if that was before the kill.
    failed_while_running: Option<String>,
}

impl SenderRun {
    fn new(sender: usize) -> SenderRun {
        SenderRun { sender, requests: Vec::new(), refused: 0, failed_while_running: None }
    }

    /// Ends the run; an error before the kill is the server's doing and is reported.
    fn stop(mut self, killed: &AtomicBool, error: impl std::fmt::Display) -> SenderRun {
        if !killed.load(Ordering::SeqCst) {
            self.failed_while_running = Some(error.to_string());
        }
        self
    }

    /// Notes a request before its first byte is written: from then on it may be stored.
    fn begin(&mut self, sequence: u64) {
        self.requests.push((sequence, false));
    }

    fn acknowledged(&mut self) {
        if let Some(last) = self.requests.last_mut() {
            last.1 = true;
        }
    }
}

/// One keep-alive connection posting requests one after another until the server dies.
async fn send_http(
    address: SocketAddr,
    token: String,
    sender: usize,
    first: u64,
    killed: Arc<AtomicBool>,
) -> SenderRun {
    let mut run = SenderRun::new(sender);
    let mut connection = match Connection::open(address).await {
        Ok(connection) => connection,
        Err(error) => return run.stop(&killed, error),
    };
    let path = format!("/api/v1.6/devices/{}", device_label(sender));
    for sequence in first.. {
        if killed.load(Ordering::SeqCst) {
            break;
        }
        let request = load::request("POST", address, &path, &[("x-auth-token", &token)], Some(&body(sender, sequence)));
        run.begin(sequence);
        match connection.send(&request).await {
            Ok((status, _)) if (200..300).contains(&status) => run.acknowledged(),
            Ok((status, answer)) => {
                if !killed.load(Ordering::SeqCst) {
                    run.refused += 1;
                    if run.failed_while_running.is_none() {
                        let answer = String::from_utf8_lossy(&answer).chars().take(200).collect::<String>();
                        run.failed_while_running = Some(format!("answered {status}: {answer}"));
                    }
                }
            }
            Err(error) => return run.stop(&killed, error),
        }
    }
    run
}

/// One MQTT connection publishing at QoS 1, each publish waiting for its PUBACK, until the server dies.
async fn send_mqtt(
    address: SocketAddr,
    token: String,
    sender: usize,
    first: u64,
    killed: Arc<AtomicBool>,
) -> SenderRun {
    let mut run = SenderRun::new(sender);
    let mut client = match mqtt::connect(address, &format!("crash-{sender}"), Some(&token)).await {
        Ok(client) => client,
        Err(error) => return run.stop(&killed, error),
    };
    let topic = ByteString::from(format!("/v1.6/devices/{}", device_label(sender)));
    for sequence in first.. {
        if killed.load(Ordering::SeqCst) {
            break;
        }
        let packet_id = std::num::NonZeroU16::new((sequence % u64::from(u16::MAX)) as u16 + 1).expect("not zero");
        let publish = Publish {
            dup: false,
            retain: false,
            qos: QoS::AtLeastOnce,
            topic: topic.clone(),
            packet_id: Some(packet_id),
            payload: Bytes::from(body(sender, sequence)),
            properties: None,
        };
        run.begin(sequence);
        if let Err(error) = client.send(Packet::Publish(Box::new(publish))).await {
            return run.stop(&killed, error);
        }
        loop {
            match client.next().await {
                Some(Ok((Packet::PublishAck { packet_id: acknowledged }, _))) if acknowledged == packet_id => {
                    run.acknowledged();
                    break;
                }
                Some(Ok(_)) => continue,
                Some(Err(error)) => return run.stop(&killed, format!("{error:?}")),
                None => return run.stop(&killed, "the server closed the connection"),
            }
        }
    }
    run
}

/// A small, seeded generator (SplitMix64) for the kill delays: no dependency for a few draws, and the seed is
/// printed so a run's delays can be told.
struct Delays {
    state: u64,
}

impl Delays {
    fn next(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn kill_after(&mut self) -> Duration {
        let (low, high) = KILL_AFTER_MS;
        Duration::from_millis(low + self.next() % (high - low + 1))
    }
}

/// The outcome of `PRAGMA integrity_check` of the SQLite database as a kill left it, read through a read-only
/// connection: it recovers the WAL the server left into its own view, but neither checkpoints nor removes it, so
/// the next start still meets the crash as it was (checked: the WAL is still there afterwards).
async fn integrity_check(data_dir: &Path) -> anyhow::Result<Result<(), String>> {
    use sqlx::Connection as _;
    let database = data_dir.join("tessera.db");
    let wal = data_dir.join("tessera.db-wal");
    let wal_before = wal.exists();
    let options = sqlx::sqlite::SqliteConnectOptions::new().filename(&database).read_only(true).foreign_keys(false);
    let mut connection = sqlx::sqlite::SqliteConnection::connect_with(&options)
        .await
        .with_context(|| format!("opening {} read-only", database.display()))?;
    let problems: Result<Vec<String>, sqlx::Error> =
        sqlx::query_scalar("PRAGMA integrity_check(10)").fetch_all(&mut connection).await;
    connection.close().await.context("closing the integrity check's connection")?;
    if wal_before && !wal.exists() {
        bail!("the integrity check removed the WAL the kill left; the restart would not recover from the crash");
    }
    Ok(match problems {
        Ok(problems) if problems == ["ok"] => Ok(()),
        Ok(problems) => Err(problems.join("; ")),
        Err(error) => Err(format!("the check could not run: {error}")),
    })
}

/// Reads back, through `server`'s Ubidots API, the readings of each sender's device over the timestamps of
/// `requests[sender]`, and compares them.
async fn check_through_api(
    server: &ChildServer,
    tokens: &[String],
    requests: &[BTreeMap<u64, bool>],
    problems: &mut Vec<String>,
) -> anyhow::Result<Findings> {
    let mut findings = Findings::default();
    let mut connection = Connection::open(server.http).await?;
    for (sender, requests) in requests.iter().enumerate() {
        let (Some((&first, _)), Some((&last, _))) = (requests.first_key_value(), requests.last_key_value()) else {
            continue;
        };
        let mut found = Vec::new();
        for (variable, label) in VARIABLES.iter().enumerate() {
            for page in 1.. {
                let path = format!(
                    "/api/v1.6/devices/{}/{label}/values?start={}&end={}&page_size=1000&page={page}",
                    device_label(sender),
                    timestamp_of(first),
                    timestamp_of(last)
                );
                let request = load::request("GET", server.http, &path, &[("x-auth-token", &tokens[sender])], None);
                let (status, answer) = connection.send(&request).await.context("reading values back")?;
                if status == 404 {
                    // The variable was never created: the kill came before its first reading.
                    break;
                }
                if status != 200 {
                    bail!("reading {path} back answered {status}: {}", String::from_utf8_lossy(&answer));
                }
                let document: Value = serde_json::from_slice(&answer).context("a values page")?;
                for dot in document["results"].as_array().context("no results in a values page")? {
                    found.push(Found {
                        variable,
                        timestamp_ms: dot["timestamp"].as_i64().context("a dot without a timestamp")?,
                        value: dot["value"].as_f64().unwrap_or(f64::NAN),
                    });
                }
                if document["next"].is_null() {
                    break;
                }
            }
        }
        check_sender(sender, requests, &found, &mut findings, problems);
    }
    Ok(findings)
}

/// Opens the store as the operator's commands do (taking the data directory's lock, which the killed server's
/// kernel released) and compares every reading of every sender's device with every request sent.
async fn check_directly(
    data_dir: &Path,
    database_url: Option<&str>,
    requests: &[BTreeMap<u64, bool>],
    problems: &mut Vec<String>,
) -> anyhow::Result<Findings> {
    use tessera_server::operator::{self, Access, OperatorError};
    let mut config = tessera_server::Config::new(data_dir.to_path_buf());
    config.database_url = database_url.map(str::to_owned);
    let operator = operator::open(&config, None, Access::Exclusive)
        .await
        .map_err(|error| anyhow::anyhow!("opening the store after the last kill: {error}"))?;
    let mut findings = Findings::default();
    let mut outcome = Ok(());
    for (sender, requests) in requests.iter().enumerate() {
        let device = match operator.device(&device_label(sender)).await {
            Ok(device) => device,
            Err(error) => {
                outcome = Err(anyhow::anyhow!("{}: {error}", device_label(sender)));
                break;
            }
        };
        let mut found = Vec::new();
        for (variable, label) in VARIABLES.iter().enumerate() {
            let stored = match operator.variable(&device, label).await {
                Ok(stored) => stored,
                Err(OperatorError::NotFound(_)) => continue,
                Err(error) => {
                    outcome = Err(anyhow::anyhow!("{}/{label}: {error}", device_label(sender)));
                    break;
                }
            };
            let read = operator
                .each_reading(stored.id, tessera_store::TimeRange::ALL, |reading| {
                    let value = match reading.value {
                        tessera_core::Value::Number(number) => number,
                        _ => f64::NAN,
                    };
                    found.push(Found { variable, timestamp_ms: reading.timestamp_ms, value });
                    Ok(true)
                })
                .await;
            if let Err(error) = read {
                outcome = Err(anyhow::anyhow!("reading {}/{label}: {error}", device_label(sender)));
                break;
            }
        }
        check_sender(sender, requests, &found, &mut findings, problems);
    }
    operator.close().await;
    outcome.map(|()| findings)
}

/// Everything the run measured.
#[derive(Debug, Default)]
struct Report {
    cycles: usize,
    seed: u64,
    shortest_kill_ms: u64,
    longest_kill_ms: u64,
    http_acknowledged: u64,
    mqtt_acknowledged: u64,
    /// Requests begun but never answered (the kill came first).
    unanswered: u64,
    refused: u64,
    failures_while_running: Vec<String>,
    /// Each cycle's requests, read back through the restarted server.
    per_cycle: Findings,
    /// Every request of the run, against the store opened directly after the last kill.
    whole_store: Findings,
    /// `None` on PostgreSQL (its own recovery; no file of ours to check).
    integrity_checks: Option<usize>,
    integrity_failures: Vec<String>,
    problems: Vec<String>,
    /// Lines the servers logged at level ERROR, and panics, over all their lives (the first few of them).
    server_errors: u64,
    server_error_lines: Vec<String>,
}

impl Report {
    fn clean(&self) -> bool {
        self.per_cycle.clean()
            && self.whole_store.clean()
            && self.integrity_failures.is_empty()
            && self.server_errors == 0
    }

    /// Notes what a killed server complained of while it ran.
    fn complained(&mut self, cycle: usize, complaints: super::process::Complaints) {
        self.server_errors += complaints.count;
        for line in complaints.first {
            if self.server_error_lines.len() < NAMED_PROBLEMS {
                self.server_error_lines.push(format!("server of cycle {cycle}: {line}"));
            }
        }
    }
}

pub async fn run(options: &Options, cycles: usize) -> anyhow::Result<()> {
    let data_dir = tempfile_dir()?;
    let schema = match &options.database_url {
        Some(url) => Some(tessera_store::ScratchSchema::create(url, "tessera_crash").await?),
        None => None,
    };
    let database_url = schema.as_ref().map(|schema| schema.url().to_owned());
    let outcome = run_cycles(options, cycles, &data_dir, database_url.as_deref()).await;
    if let Some(schema) = schema {
        schema.drop().await?;
    }
    let report = outcome?;
    print(options, &report);
    if !report.clean() {
        eprintln!("the store is kept for inspection at {}", data_dir.display());
        bail!(
            "acknowledged readings lost or damaged: {} lost in the cycles' checks, {} at the end; {} half-written \
             requests; {} integrity failures; {} errors logged by the servers",
            report.per_cycle.lost,
            report.whole_store.lost,
            report.per_cycle.torn_requests.max(report.whole_store.torn_requests),
            report.integrity_failures.len(),
            report.server_errors
        );
    }
    let _ = std::fs::remove_dir_all(&data_dir);
    Ok(())
}

/// Starts the server, provisions the senders, then kills, checks and restarts it `cycles` times, and checks the whole
/// store once more at the end.
async fn run_cycles(
    options: &Options,
    cycles: usize,
    data_dir: &Path,
    database_url: Option<&str>,
) -> anyhow::Result<Report> {
    let data_text = data_dir.to_string_lossy().into_owned();
    let mut args = vec!["serve", "--data-dir", &data_text, "--http-addr", "127.0.0.1:0", "--mqtt-addr", "127.0.0.1:0"];
    args.extend(super::NEVER_REACHED_QUOTAS);
    if let Some(url) = database_url {
        args.extend(["--database-url", url]);
    }
    let store = if database_url.is_some() { "PostgreSQL" } else { "SQLite" };
    say(options, &format!("crash check on {store}: data in {data_text}"));
    let mut server = ChildServer::start(&args, &[]).await?;
    let api_key = server.api_key.clone().context("Tessera printed no API key")?;
    let tokens = Arc::new(provision(server.http, &api_key, SENDERS).await?);

    let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_nanos() as u64;
    let mut delays = Delays { state: seed };
    let mut report = Report {
        cycles,
        seed,
        shortest_kill_ms: u64::MAX,
        integrity_checks: database_url.is_none().then_some(0),
        ..Report::default()
    };
    say(
        options,
        &format!(
            "{cycles} cycles: {HTTP_SENDERS} HTTP and {MQTT_SENDERS} MQTT QoS 1 senders, SIGKILL {}–{} ms into the \
             load (seed {seed})",
            KILL_AFTER_MS.0, KILL_AFTER_MS.1
        ),
    );
    let mut all_requests: Vec<BTreeMap<u64, bool>> = vec![BTreeMap::new(); SENDERS];
    let mut next_sequence = [1u64; SENDERS];
    for cycle in 1..=cycles {
        let kill_after = delays.kill_after();
        let killed = Arc::new(AtomicBool::new(false));
        let mut senders = tokio::task::JoinSet::new();
        for sender in 0..SENDERS {
            let (token, first, killed) = (tokens[sender].clone(), next_sequence[sender], killed.clone());
            if sender < HTTP_SENDERS {
                senders.spawn(send_http(server.http, token, sender, first, killed));
            } else {
                let address = server.mqtt.context("Tessera printed no MQTT address")?;
                senders.spawn(send_mqtt(address, token, sender, first, killed));
            }
        }
        tokio::time::sleep(kill_after).await;
        // Set before the signal: a sender failing after this line may be failing because of it.
        killed.store(true, Ordering::SeqCst);
        let complaints = server.kill().await.with_context(|| format!("cycle {cycle}"))?;
        report.complained(cycle, complaints);
        let kill_ms = kill_after.as_millis() as u64;
        report.shortest_kill_ms = report.shortest_kill_ms.min(kill_ms);
        report.longest_kill_ms = report.longest_kill_ms.max(kill_ms);

        let mut this_cycle: Vec<BTreeMap<u64, bool>> = vec![BTreeMap::new(); SENDERS];
        let (mut acknowledged, mut unanswered) = (0u64, 0u64);
        let gathered = tokio::time::timeout(SENDERS_STOP_WITHIN, async {
            let mut runs = Vec::new();
            while let Some(run) = senders.join_next().await {
                runs.push(run?);
            }
            anyhow::Ok(runs)
        })
        .await
        .with_context(|| format!("cycle {cycle}: the senders did not stop within {SENDERS_STOP_WITHIN:?}"))??;
        for run in gathered {
            for &(sequence, answered) in &run.requests {
                this_cycle[run.sender].insert(sequence, answered);
                all_requests[run.sender].insert(sequence, answered);
                next_sequence[run.sender] = next_sequence[run.sender].max(sequence + 1);
                if answered {
                    acknowledged += 1;
                    if run.sender < HTTP_SENDERS {
                        report.http_acknowledged += 1;
                    } else {
                        report.mqtt_acknowledged += 1;
                    }
                } else {
                    unanswered += 1;
                }
            }
            report.refused += run.refused;
            if let Some(failure) = run.failed_while_running {
                report.failures_while_running.push(format!("cycle {cycle}, {}: {failure}", device_label(run.sender)));
            }
        }
        report.unanswered += unanswered;

        let mut integrity = "";
        if let Some(checks) = &mut report.integrity_checks {
            *checks += 1;
            integrity = match integrity_check(data_dir).await? {
                Ok(()) => ", integrity ok",
                Err(problem) => {
                    report.integrity_failures.push(format!("after cycle {cycle}: {problem}"));
                    ", INTEGRITY CHECK FAILED"
                }
            };
        }
        server = ChildServer::start(&args, &[]).await.with_context(|| format!("restarting after cycle {cycle}"))?;
        if server.api_key.is_some() {
            bail!("cycle {cycle}: the restarted server made a new store (it printed a new API key)");
        }
        let findings = check_through_api(&server, &tokens, &this_cycle, &mut report.problems).await?;
        report.per_cycle.add(&findings);
        say(
            options,
            &format!(
                "cycle {cycle:>3}/{cycles}: killed after {kill_ms:>4} ms; {acknowledged} requests acknowledged, \
                 {unanswered} unanswered{integrity}; read back: {} of {} acknowledged readings, {} lost, {} \
                 unacknowledged present{}",
                findings.found,
                findings.acknowledged,
                findings.lost,
                findings.unacknowledged_present,
                if findings.clean() { "" } else { ", DAMAGED (see below)" }
            ),
        );
    }
    // The last restart is killed too: the final check opens the store as a crash left it.
    let complaints = server.kill().await.context("the last restart")?;
    report.complained(cycles + 1, complaints);
    if let Some(checks) = &mut report.integrity_checks {
        *checks += 1;
        if let Err(problem) = integrity_check(data_dir).await? {
            report.integrity_failures.push(format!("at the end: {problem}"));
        }
    }
    say(options, "checking every reading of the run in the store, opened directly");
    report.whole_store = check_directly(data_dir, database_url, &all_requests, &mut report.problems).await?;
    Ok(report)
}

fn print(options: &Options, report: &Report) {
    let store = if options.database_url.is_some() { "postgres" } else { "sqlite" };
    let integrity = match report.integrity_checks {
        None => "not checked (PostgreSQL)".to_owned(),
        Some(checks) if report.integrity_failures.is_empty() => format!("ok ({checks} checks)"),
        Some(checks) => format!("FAILED {} of {checks}", report.integrity_failures.len()),
    };
    if options.json {
        let document = json!({
            "store": store,
            "cycles": report.cycles,
            "http_senders": HTTP_SENDERS,
            "mqtt_senders": MQTT_SENDERS,
            "readings_per_request": VARIABLES.len(),
            "seed": report.seed,
            "kill_after_ms": {"shortest": report.shortest_kill_ms, "longest": report.longest_kill_ms},
            "requests_acknowledged": {"http": report.http_acknowledged, "mqtt": report.mqtt_acknowledged},
            "requests_unanswered": report.unanswered,
            "requests_refused": report.refused,
            "failures_while_running": report.failures_while_running,
            "readings_acknowledged": report.whole_store.acknowledged,
            "found": report.whole_store.found,
            "lost": report.whole_store.lost.max(report.per_cycle.lost),
            "unacknowledged_present": report.whole_store.unacknowledged_present,
            "per_cycle": report.per_cycle.json(),
            "whole_store": report.whole_store.json(),
            "integrity": {
                "checks": report.integrity_checks,
                "ok": report.integrity_checks.map(|_| report.integrity_failures.is_empty()),
                "failures": report.integrity_failures,
            },
            "problems": report.problems,
            "server_errors": {"count": report.server_errors, "first": report.server_error_lines},
            "clean": report.clean(),
        });
        println!("{document:#}");
        return;
    }
    for problem in &report.problems {
        eprintln!("  {problem}");
    }
    for failure in &report.failures_while_running {
        eprintln!("  sender stopped while the server ran: {failure}");
    }
    for line in &report.server_error_lines {
        eprintln!("  {line}");
    }
    println!("\n{:<44} {:>22} {:>22}", "readings", "each cycle, read back", "whole store at the end");
    let (cycles, end) = (&report.per_cycle, &report.whole_store);
    let rows = [
        ("acknowledged (HTTP 2xx, MQTT PUBACK)", cycles.acknowledged, end.acknowledged),
        ("found, with the value sent", cycles.found, end.found),
        ("lost", cycles.lost, end.lost),
        ("unacknowledged but present (whole)", cycles.unacknowledged_present, end.unacknowledged_present),
        ("half-written requests", cycles.torn_requests, end.torn_requests),
        ("wrong values", cycles.wrong_values, end.wrong_values),
        ("present but never sent", cycles.foreign, end.foreign),
    ];
    for (name, in_cycles, at_end) in rows {
        println!("{name:<44} {in_cycles:>22} {at_end:>22}");
    }
    println!(
        "\n{} cycles on {store}, each killed with SIGKILL {}–{} ms into the load (seed {}); {} requests acknowledged \
         (HTTP {}, MQTT {}), {} unanswered at a kill, {} refused; {} senders stopped while the server ran; {} errors \
         logged by the servers; store integrity {integrity}; {}",
        report.cycles,
        report.shortest_kill_ms,
        report.longest_kill_ms,
        report.seed,
        report.http_acknowledged + report.mqtt_acknowledged,
        report.http_acknowledged,
        report.mqtt_acknowledged,
        report.unanswered,
        report.refused,
        report.failures_while_running.len(),
        report.server_errors,
        if report.clean() { "0 lost" } else { "FAILED" }
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the store would hold of `sender`'s request `sequence` if it was stored whole.
    fn whole(sender: usize, sequence: u64) -> Vec<Found> {
        (0..VARIABLES.len())
            .map(|variable| Found {
                variable,
                timestamp_ms: timestamp_of(sequence),
                value: value_of(sender, sequence, variable) as f64,
            })
            .collect()
    }

    fn check(requests: &[(u64, bool)], found: &[Found]) -> (Findings, Vec<String>) {
        let requests: BTreeMap<u64, bool> = requests.iter().copied().collect();
        let (mut findings, mut problems) = (Findings::default(), Vec::new());
        check_sender(3, &requests, found, &mut findings, &mut problems);
        (findings, problems)
    }

    #[test]
    fn every_acknowledged_request_found_whole_is_clean_and_an_unanswered_one_may_be_there() {
        let found: Vec<Found> = [1, 2, 3].into_iter().flat_map(|sequence| whole(3, sequence)).collect();
        let (findings, problems) = check(&[(1, true), (2, true), (3, false), (4, false)], &found);
        assert!(findings.clean(), "{findings:?} {problems:?}");
        assert_eq!(findings.acknowledged, 6);
        assert_eq!(findings.found, 6);
        assert_eq!(findings.unacknowledged_present, 3);
        assert!(problems.is_empty());
    }

    #[test]
    fn a_missing_acknowledged_reading_is_lost_and_its_request_half_written() {
        let mut found: Vec<Found> = [1, 2].into_iter().flat_map(|sequence| whole(3, sequence)).collect();
        found.retain(|reading| !(reading.timestamp_ms == timestamp_of(2) && reading.variable == 1));
        let (findings, problems) = check(&[(1, true), (2, true)], &found);
        assert!(!findings.clean());
        assert_eq!((findings.lost, findings.found, findings.torn_requests), (1, 5, 1), "{findings:?}");
        assert!(problems.iter().any(|problem| problem.contains("acknowledged reading lost: b")), "{problems:?}");
    }

    #[test]
    fn an_acknowledged_request_missing_whole_is_lost() {
        let (findings, _) = check(&[(1, true), (2, true)], &whole(3, 1));
        assert_eq!((findings.lost, findings.torn_requests), (3, 0));
        assert!(!findings.clean());
    }

    #[test]
    fn an_unacknowledged_request_found_in_part_is_half_written() {
        let found: Vec<Found> = whole(3, 5).into_iter().take(2).collect();
        let (findings, problems) = check(&[(5, false)], &found);
        assert_eq!((findings.torn_requests, findings.lost), (1, 0));
        assert!(!findings.clean());
        assert!(problems[0].contains("half-written"), "{problems:?}");
    }

    #[test]
    fn another_value_or_a_reading_nobody_sent_is_damage() {
        let mut found = whole(3, 1);
        found[2].value += 1.0;
        let (findings, _) = check(&[(1, true)], &found);
        assert_eq!((findings.wrong_values, findings.found), (1, 2));
        assert!(!findings.clean());

        // Another sender's value at this sender's timestamp, and a timestamp no request had.
        let mut found = whole(3, 1);
        found.push(Found { variable: 0, timestamp_ms: timestamp_of(9), value: 1.0 });
        let (findings, _) = check(&[(1, true)], &found);
        assert_eq!(findings.foreign, 1);
        assert!(!findings.clean());
        let (findings, _) = check(&[(1, true)], &whole(4, 1));
        assert_eq!(findings.wrong_values, 3);
    }

    #[test]
    fn the_bodies_carry_the_values_the_checker_expects() {
        let body: Value = serde_json::from_str(&body(7, 42)).unwrap();
        for (variable, label) in VARIABLES.iter().enumerate() {
            assert_eq!(body[label]["timestamp"], timestamp_of(42));
            assert_eq!(body[label]["value"].as_f64(), Some(value_of(7, 42, variable) as f64));
        }
    }
}
