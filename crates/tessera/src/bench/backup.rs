//! `tessera bench --backup`: what `tessera backup` costs a server that goes on ingesting. A Tessera is filled with
//! a million readings (`--population`; 100 devices, 150 readings a request, as a device catching up would send
//! them), then paced ingest (open loop, latency from when each request was due) runs for the run's duration
//! alone, and again while `tessera backup` copies the store beside it, as the operator's command would. It prints
//! how long the backup took, the acknowledgements' latency before, during and after it, and how far the WAL grew
//! while the backup's read transaction held its checkpoints back.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::json;

use super::load::{self, Connection};
use super::process::ChildServer;
use super::{Options, provision, say, tempfile_dir};

/// Devices the readings in the store (`--population`, a million by default) belong to (each also sends the paced ingest).
const DEVICES: usize = 100;
const DOTS_PER_REQUEST: usize = 150;
/// Paced ingest: requests a second, over this many connections.
const RATE: f64 = 400.0;
const CONNECTIONS: usize = 16;
/// How long paced ingest runs after the backup, so that the WAL's catching up is seen too.
const AFTER: Duration = Duration::from_secs(3);

pub async fn run(options: &Options) -> anyhow::Result<()> {
    let data_dir = tempfile_dir()?;
    let data_text = data_dir.to_string_lossy().into_owned();
    say(options, &format!("starting Tessera (data in {data_text})"));
    let mut args = vec!["serve", "--data-dir", &data_text, "--http-addr", "127.0.0.1:0", "--mqtt-addr", "127.0.0.1:0"];
    args.extend(super::NEVER_REACHED_QUOTAS);
    let tessera = ChildServer::start(&args, &[]).await?;
    let api_key = tessera.api_key.clone().context("Tessera printed no API key")?;
    let address = tessera.http;
    let tokens = Arc::new(provision(address, &api_key, DEVICES).await?);

    let readings = options.population.max(DEVICES);
    say(options, &format!("filling the store with {readings} readings"));
    let filling = Instant::now();
    fill(address, &tokens, readings).await?;
    say(options, &format!("  filled in {:.1} s", filling.elapsed().as_secs_f64()));
    let database = data_dir.join("tessera.db");
    let wal = data_dir.join("tessera.db-wal");

    say(options, &format!("paced ingest, {RATE}/s, {} s without a backup", options.duration.as_secs()));
    let stop = Arc::new(AtomicBool::new(false));
    let before = paced(address, tokens.clone(), 1_700_000_000_000, stop.clone(), Some(options.duration)).await?;

    say(options, "paced ingest again, with `tessera backup` running beside it");
    let backup_file = data_dir.with_extension("tessera-backup");
    let ingest = tokio::spawn(paced(address, tokens.clone(), 1_800_000_000_000, stop.clone(), None));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let store_bytes = file_size(&database) + file_size(&wal);
    let wal_at_start = file_size(&wal);
    let executable = std::env::current_exe().context("finding the tessera executable")?;
    let backup_began = Instant::now();
    let mut backup = tokio::process::Command::new(executable)
        .args(["backup", "--data-dir", &data_text, "--to"])
        .arg(&backup_file)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .context("starting tessera backup")?;
    let mut wal_peak = wal_at_start;
    let status = loop {
        if let Some(status) = backup.try_wait()? {
            break status;
        }
        wal_peak = wal_peak.max(file_size(&wal));
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let backup_took = backup_began.elapsed();
    let backup_ended = Instant::now();
    let output = backup.wait_with_output().await?;
    if !status.success() {
        bail!("tessera backup failed: {}", String::from_utf8_lossy(&output.stderr));
    }
    let printed = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    tokio::time::sleep(AFTER).await;
    let wal_after = file_size(&wal);
    stop.store(true, Ordering::Relaxed);
    let during_and_after = ingest.await??;
    let backup_bytes = file_size(&backup_file);
    tessera.stop().await;
    let _ = std::fs::remove_file(&backup_file);
    let _ = std::fs::remove_dir_all(&data_dir);

    let window = |sent: &Sent, from: Instant, to: Instant| -> Vec<u32> {
        let mut latencies: Vec<u32> =
            sent.acknowledged.iter().filter(|(due, _)| (from..to).contains(due)).map(|(_, us)| *us).collect();
        latencies.sort_unstable();
        latencies
    };
    let all_before = window(&before, before.started, Instant::now());
    let during = window(&during_and_after, backup_began, backup_ended);
    let after = window(&during_and_after, backup_ended, backup_ended + AFTER);
    let quantile = |latencies: &[u32], q: f64| -> f64 {
        if latencies.is_empty() {
            return f64::NAN;
        }
        f64::from(latencies[((latencies.len() - 1) as f64 * q).round() as usize]) / 1000.0
    };
    let row = |latencies: &[u32]| {
        json!({
            "acknowledged": latencies.len(),
            "p50_ms": quantile(latencies, 0.5),
            "p99_ms": quantile(latencies, 0.99),
            "max_ms": quantile(latencies, 1.0),
        })
    };
    let mib = |bytes: u64| ((bytes as f64 / (1024.0 * 1024.0)) * 10.0).round() / 10.0;
    if options.json {
        let document = json!({
            "readings_in_store": readings,
            "store_mib": mib(store_bytes),
            "backup_mib": mib(backup_bytes),
            "backup_seconds": (backup_took.as_secs_f64() * 100.0).round() / 100.0,
            "backup_printed": printed,
            "paced_rate": RATE,
            "before": row(&all_before),
            "during_backup": row(&during),
            "after_backup": row(&after),
            "errors": before.errors + during_and_after.errors,
            "wal_mib": { "at_start": mib(wal_at_start), "peak": mib(wal_peak), "after": mib(wal_after) },
        });
        println!("{document:#}");
        return Ok(());
    }
    println!();
    println!("Backup of a store with {readings} readings ({:.1} MiB) under paced ingest of {RATE}/s", mib(store_bytes));
    println!(
        "  tessera backup: {:.2} s, {:.1} MiB written; it said: {printed}",
        backup_took.as_secs_f64(),
        mib(backup_bytes)
    );
    println!("{:<28} {:>12} {:>9} {:>9} {:>9}", "acknowledgements", "count", "p50 ms", "p99 ms", "max ms");
    for (name, latencies) in [("before the backup", &all_before), ("during the backup", &during), ("after it", &after)]
    {
        println!(
            "{name:<28} {:>12} {:>9.2} {:>9.2} {:>9.2}",
            latencies.len(),
            quantile(latencies, 0.5),
            quantile(latencies, 0.99),
            quantile(latencies, 1.0)
        );
    }
    println!("errors: {}", before.errors + during_and_after.errors);
    println!(
        "WAL: {:.1} MiB when the backup began, {:.1} MiB at most during it, {:.1} MiB {} s after it",
        mib(wal_at_start),
        mib(wal_peak),
        mib(wal_after),
        AFTER.as_secs()
    );
    Ok(())
}

fn file_size(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |metadata| metadata.len())
}

/// The store's readings, each device's in requests of 150, from four connections.
async fn fill(address: SocketAddr, tokens: &Arc<Vec<String>>, readings: usize) -> anyhow::Result<()> {
    const SENDERS: usize = 4;
    let per_device = readings / DEVICES;
    let mut senders = tokio::task::JoinSet::new();
    for sender in 0..SENDERS {
        let tokens = tokens.clone();
        senders.spawn(async move {
            let mut connection = Connection::open(address).await?;
            for device in (sender..DEVICES).step_by(SENDERS) {
                let path = format!("/api/v1.6/devices/bench-{device}");
                for start in (0..per_device).step_by(DOTS_PER_REQUEST) {
                    let dots: Vec<String> = (start..(start + DOTS_PER_REQUEST).min(per_device))
                        .map(|index| {
                            format!(
                                r#"{{"value": {}, "timestamp": {}}}"#,
                                index % 1000,
                                1_600_000_000_000 + index * 1000
                            )
                        })
                        .collect();
                    let body = format!(r#"{{"temperature": [{}]}}"#, dots.join(","));
                    let request =
                        load::request("POST", address, &path, &[("x-auth-token", &tokens[device])], Some(&body));
                    connection.send_ok(&request, &format!("filling bench-{device}")).await?;
                }
            }
            anyhow::Ok(())
        });
    }
    while let Some(done) = senders.join_next().await {
        done??;
    }
    Ok(())
}

/// What a paced run acknowledged: when each request was due, and its latency in microseconds.
struct Sent {
    started: Instant,
    acknowledged: Vec<(Instant, u32)>,
    errors: u64,
}

/// Paced ingest (as `load::run` paces it) until `duration` is over or `stop` is set, keeping each request's due
/// time so that latencies can be split by when they were sent.
async fn paced(
    address: SocketAddr,
    tokens: Arc<Vec<String>>,
    first_timestamp: u64,
    stop: Arc<AtomicBool>,
    duration: Option<Duration>,
) -> anyhow::Result<Sent> {
    let started = Instant::now();
    let interval = Duration::from_secs_f64(CONNECTIONS as f64 / RATE);
    let mut workers = tokio::task::JoinSet::new();
    for worker in 0..CONNECTIONS {
        let (tokens, stop) = (tokens.clone(), stop.clone());
        let mut connection = Connection::open(address).await?;
        workers.spawn(async move {
            let mut acknowledged = Vec::new();
            let mut errors = 0u64;
            let mut due = started + interval.mul_f64(worker as f64 / CONNECTIONS as f64);
            let mut sequence = worker as u64;
            loop {
                if stop.load(Ordering::Relaxed) || duration.is_some_and(|duration| due >= started + duration) {
                    break;
                }
                // Counted from when it was due, or from waking if the connection slept until then (see load.rs).
                let counted_from = if Instant::now() < due {
                    tokio::time::sleep_until(due.into()).await;
                    Instant::now()
                } else {
                    due
                };
                let device = (sequence as usize) % tokens.len();
                let body = format!(
                    r#"{{"temperature": {{"value": {}, "timestamp": {}}}}}"#,
                    sequence % 1000,
                    first_timestamp + sequence
                );
                let request = load::request(
                    "POST",
                    address,
                    &format!("/api/v1.6/devices/bench-{device}"),
                    &[("x-auth-token", &tokens[device])],
                    Some(&body),
                );
                match connection.send(&request).await {
                    Ok((200, _)) => {
                        acknowledged.push((due, u32::try_from(counted_from.elapsed().as_micros()).unwrap_or(u32::MAX)))
                    }
                    Ok(_) => errors += 1,
                    Err(_) => {
                        errors += 1;
                        connection = Connection::open(address).await?;
                    }
                }
                sequence += CONNECTIONS as u64;
                due += interval;
            }
            anyhow::Ok((acknowledged, errors))
        });
    }
    let mut sent = Sent { started, acknowledged: Vec::new(), errors: 0 };
    while let Some(finished) = workers.join_next().await {
        let (acknowledged, errors) = finished??;
        sent.acknowledged.extend(acknowledged);
        sent.errors += errors;
    }
    Ok(sent)
}
