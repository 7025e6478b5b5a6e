//! `tessera bench`: how much Tessera holds on this machine, measured against the machine's own limit in the same
//! run. It starts a Tessera and a bare baseline (see `baseline.rs`) as child processes, drives both with the same
//! load generator, the same payloads and the same connection counts, alternating baseline and Tessera runs, and
//! prints each figure with its ratio to the baseline's.

mod backup;
mod baseline;
mod console;
mod crash;
mod fleet;
mod load;
mod mosquitto;
mod mqtt;
mod population;
mod process;
mod range;
mod soak;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::{Value, json};

pub use baseline::serve as serve_baseline;
pub use fleet::{FleetMode, FleetShape};
use load::{Connection, MakeRequest, Outcome, Plan};
use process::ChildServer;

/// What to run, from the command line.
#[derive(Debug, Clone)]
pub struct Options {
    pub duration: Duration,
    /// Where the machine's Mosquitto listens, for the MQTT comparison.
    pub mosquitto: SocketAddr,
    /// A PostgreSQL database to run Tessera on, as two nodes, instead of SQLite; the benchmark works in a schema
    /// of its own there and drops it afterwards.
    pub database_url: Option<String>,
    pub connections: usize,
    pub devices: usize,
    /// Devices and live tokens added to the store before ingest is measured again (0: not measured).
    pub population: usize,
    pub rounds: usize,
    pub json: bool,
    /// Measure the web console's pages (a collection of 10 000 devices) instead of ingest.
    pub console: bool,
    /// Measure `tessera backup` of a store of a million readings under paced ingest instead.
    pub backup: bool,
    /// Run the fleet of issue 19 instead (`fleet.rs`).
    pub fleet: bool,
    /// Soak for this long instead: the fleet and paced HTTP ingest, sampled every interval (`soak.rs`).
    pub soak: Option<Duration>,
    pub soak_plot: std::path::PathBuf,
    pub fleet_shape: FleetShape,
    /// Kill a serving Tessera with SIGKILL under HTTP and MQTT ingest this many times instead, restarting it on
    /// the same store each time, and check that every acknowledged reading is there (`crash.rs`).
    pub crash: Option<usize>,
}

/// One measured scenario, with the server's CPU and memory over it.
#[derive(Debug, Clone)]
struct Measured {
    name: String,
    outcome: Outcome,
    /// CPU cores the server kept busy on average (1.0 = one core).
    cpu_cores: f64,
    peak_rss_mib: f64,
    /// The baseline figure this one is compared with (requests per second).
    baseline_per_second: Option<f64>,
}

impl Measured {
    fn json(&self) -> Value {
        json!({
            "scenario": self.name,
            "requests": self.outcome.requests,
            "errors": self.outcome.errors,
            "per_second": round(self.outcome.per_second()),
            "p50_ms": round(self.outcome.quantile_ms(0.5)),
            "p99_ms": round(self.outcome.quantile_ms(0.99)),
            "p999_ms": round(self.outcome.quantile_ms(0.999)),
            "server_cpu_cores": round(self.cpu_cores),
            "server_peak_rss_mib": round(self.peak_rss_mib),
            "ratio_to_baseline": self.baseline_per_second.map(|baseline| round(self.outcome.per_second() / baseline)),
        })
    }
}

fn round(value: f64) -> f64 {
    (value * 1000.0).round() / 1000.0
}

/// Time per token verification, in microseconds (p50, p99).
#[derive(Debug, Clone, Copy)]
struct VerifyTimes {
    cached: (f64, f64),
    from_store: (f64, f64),
    /// From the cache, of a token with a quota (never reached): the verification every limited request makes.
    cached_limited: (f64, f64),
    /// What counting one request against its token's quota costs, in nanoseconds (mean), with
    /// `COUNTED_TOKENS` tokens counted at once.
    quota_take_ns: f64,
}

/// What counting an HTTP request for `/metrics` costs, in nanoseconds a request (means over alternated rounds).
#[derive(Debug, Clone, Copy)]
struct CountingCost {
    /// The figures alone: the clock read twice and `RouteTable::observe` (a hash of the template, its slot, the
    /// status code's slot, two atomic adds), with the table holding as many templates as the router has.
    observe_ns: f64,
    /// A request through a router with the counting layers against the same router without (both called in
    /// this process, no socket): the layers' whole cost, the route layer's boxed future included.
    router_with_ns: f64,
    router_without_ns: f64,
}

/// Times the request counting of `/metrics` (`tessera_server::http::metrics`), alternating routers with and
/// without it so both meet the same machine.
async fn counting_cost() -> CountingCost {
    use axum::body::Body;
    use tower::ServiceExt;
    let metrics = std::sync::Arc::new(tessera_server::metrics::Metrics::default());
    // About as many templates as Tessera's router has, already counted.
    for n in 0..150 {
        let template = format!("/v1/route-{n}/{{id}}");
        metrics.http.observe("native", &template, 200, Duration::ZERO);
    }
    let rounds = 2_000_000u32;
    let started = std::time::Instant::now();
    for _ in 0..rounds {
        let begun = std::time::Instant::now();
        metrics.http.observe("ubidots", std::hint::black_box("/api/v1.6/devices/{device}"), 200, begun.elapsed());
    }
    let observe_ns = started.elapsed().as_nanos() as f64 / f64::from(rounds);

    // Tessera's router has a layer on every route anyway (its catch-panic layer); the route's template is noted
    // beside it, so both routers here have one such layer, and only the counting differs.
    let routes = || {
        axum::Router::new()
            .route("/api/v1.6/devices/{device}", axum::routing::post(|| async { "ok" }))
            .route("/v1/other", axum::routing::get(|| async { "ok" }))
    };
    let plain = routes().layer(tower::layer::util::Identity::new());
    let counted = tessera_server::http::counted(
        routes().layer((tessera_server::http::metrics::NoteRouteLayer, tower::layer::util::Identity::new())),
        metrics,
    );
    let time = async |router: &axum::Router, requests: u32| {
        let started = std::time::Instant::now();
        for _ in 0..requests {
            let request = axum::http::Request::post("/api/v1.6/devices/dev-1").body(Body::empty()).unwrap();
            let response = router.clone().oneshot(request).await.unwrap();
            std::hint::black_box(response);
        }
        started.elapsed().as_nanos() as f64 / f64::from(requests)
    };
    let time_counted = async |requests: u32| {
        let started = std::time::Instant::now();
        for _ in 0..requests {
            let request = axum::http::Request::post("/api/v1.6/devices/dev-1").body(Body::empty()).unwrap();
            let response = counted.clone().oneshot(request).await.unwrap();
            std::hint::black_box(response);
        }
        started.elapsed().as_nanos() as f64 / f64::from(requests)
    };
    time(&plain, 10_000).await;
    time_counted(10_000).await;
    let (mut with, mut without) = (0.0, 0.0);
    let alternations = 6;
    for _ in 0..alternations {
        without += time(&plain, 100_000).await / f64::from(alternations);
        with += time_counted(100_000).await / f64::from(alternations);
    }
    CountingCost { observe_ns, router_with_ns: with, router_without_ns: without }
}

/// Tokens with an open window while the quota check is timed: a fleet of that many devices, each sending within
/// its window.
const COUNTED_TOKENS: usize = 10_000;

/// `serve` flags for the benchmark's servers. Its tokens each send far more than any device would (thousands a
/// second), so they get a quota that is never reached: every request is still counted against it, so the cost of
/// the check is in every figure, but none is refused.
pub(crate) const NEVER_REACHED_QUOTAS: [&str; 4] =
    ["--rate-limit-collection", "1000000000/1", "--rate-limit-account", "1000000000/1"];

/// Verifies one organization token over and over in this process: from the cache, and with its record dropped
/// from the cache before each verification, from the store (SQLite on disk, as `serve` keeps it).
async fn verify_times() -> anyhow::Result<VerifyTimes> {
    let data_dir = tempfile_dir()?;
    let config = tessera_server::Config::new(data_dir.clone());
    let opened = tessera_server::bootstrap::open_store(&config).await?;
    let credentials = tessera_server::bootstrap::bootstrap(opened.store.as_ref(), &opened.key)
        .await?
        .context("a fresh store is bootstrapped")?;
    let audit = std::sync::Arc::new(tessera_server::audit::Audit::new(
        opened.store.clone(),
        credentials.account_id,
        config.audit_retention,
    ));
    // No default quotas: the organization token is timed without one, then a token with a quota of its own.
    let tokens = tessera_server::tokens::TokenService::new(opened.store.clone(), opened.key.clone(), 1_000, audit)
        .with_rate_limits(tessera_server::quota::RateLimits::UNLIMITED);
    // The credential a device sends: an organization token, minted with the API key (so its creator's reach is
    // looked up too, as for every device's token).
    let api_key =
        tokens.verify(credentials.api_key.expose(), None).await.map_err(|error| anyhow::anyhow!("{error}"))?;
    let collection = opened.store.default_collection(credentials.account_id).await?.id;
    let new = tessera_server::tokens::NewToken::new(
        tessera_core::TokenKind::Collection,
        tessera_core::Scope::Collection(collection),
        tessera_core::Rights::ReadWrite,
        "verified".into(),
        None,
    );
    let (record, secret) = tokens.mint(&api_key, new.clone()).await.map_err(|error| anyhow::anyhow!("{error}"))?;
    let secret = secret.expose().to_owned();
    let never_reached = tessera_core::Quota { requests: u32::MAX, window_seconds: 1 };
    let limited_token = tessera_server::tokens::NewToken {
        quota: tessera_core::QuotaSetting::Limited(never_reached),
        name: "verified, limited".into(),
        ..new
    };
    let (limited_record, limited_secret) =
        tokens.mint(&api_key, limited_token).await.map_err(|error| anyhow::anyhow!("{error}"))?;
    // A fleet's worth of other tokens counted at the same time, so the map is as big as it would be.
    let fleet: Vec<tessera_store::TokenRecord> = (0..COUNTED_TOKENS)
        .map(|n| tessera_store::TokenRecord {
            id: tessera_core::TokenId::from_i64(limited_record.id.as_i64() + 1 + n as i64),
            ..limited_record.clone()
        })
        .collect();
    for token in &fleet {
        tokens.quotas().take(token);
    }
    let time_secret = async |secret: &str, rounds: usize, empty_cache: bool| -> anyhow::Result<(f64, f64)> {
        let mut samples = Vec::with_capacity(rounds);
        for _ in 0..rounds {
            if empty_cache {
                // The token's own record comes from the store; what its creator reaches stays cached, as it is
                // for every token of a creator but the first.
                tokens.forget_here(record.id, &record.digest);
            }
            let started = std::time::Instant::now();
            tokens.verify(secret, None).await.map_err(|error| anyhow::anyhow!("verify failed: {error}"))?;
            samples.push(started.elapsed().as_nanos() as f64 / 1000.0);
        }
        samples.sort_by(f64::total_cmp);
        Ok((samples[samples.len() / 2], samples[samples.len() * 99 / 100]))
    };
    let time = async |rounds, empty_cache| time_secret(&secret, rounds, empty_cache).await;
    time(1_000, false).await?; // warm-up
    let cached = time(200_000, false).await?;
    let from_store = time(5_000, true).await?;
    let limited_secret = limited_secret.expose().to_owned();
    time_secret(&limited_secret, 1_000, false).await?;
    let cached_limited = time_secret(&limited_secret, 200_000, false).await?;
    // The check alone, round the fleet: a lock of one of the shards, a hash lookup, the window's arithmetic.
    let rounds = 2_000_000;
    let started = std::time::Instant::now();
    for n in 0..rounds {
        std::hint::black_box(tokens.quotas().take(&fleet[n % fleet.len()]));
    }
    let quota_take_ns = started.elapsed().as_nanos() as f64 / rounds as f64;
    opened.store.close().await;
    let _ = std::fs::remove_dir_all(&data_dir);
    Ok(VerifyTimes { cached, from_store, cached_limited, quota_take_ns })
}

pub async fn run(options: Options) -> anyhow::Result<()> {
    if options.console {
        return console::run(&options).await;
    }
    if options.backup {
        return backup::run(&options).await;
    }
    if let Some(cycles) = options.crash {
        return crash::run(&options, cycles).await;
    }
    if let Some(duration) = options.soak {
        return soak::run(&options, duration).await;
    }
    if options.fleet {
        return fleet::run(&options, &options.fleet_shape).await;
    }
    say(&options, "timing token verification and request counting in this process");
    let verify = verify_times().await?;
    let counting = counting_cost().await;
    let data_dir = tempfile_dir()?;
    let data_dir_text = data_dir.to_string_lossy().into_owned();
    say(&options, &format!("starting Tessera (data in {data_dir_text}) and the baseline"));
    let schema = match &options.database_url {
        Some(url) => Some(tessera_store::ScratchSchema::create(url, "tessera_bench").await?),
        None => None,
    };
    let database = schema.as_ref().map(|schema| schema.url().to_owned());
    let serve_args = |data_dir: &str| -> Vec<String> {
        let mut args: Vec<String> = ["serve", "--data-dir", data_dir, "--http-addr", "127.0.0.1:0"]
            .into_iter()
            .chain(["--mqtt-addr", "127.0.0.1:0"])
            .chain(NEVER_REACHED_QUOTAS)
            .map(str::to_owned)
            .collect();
        if let Some(url) = &database {
            args.extend(["--database-url".to_owned(), url.clone()]);
        }
        args
    };
    let args = serve_args(&data_dir_text);
    let tessera = ChildServer::start(&args.iter().map(String::as_str).collect::<Vec<_>>(), &[]).await?;
    // On PostgreSQL a second node shares the database: the figures of two nodes, and revocation across them.
    let second_node = match &database {
        Some(_) => {
            let other_dir = data_dir.join("second-node");
            let args = serve_args(&other_dir.to_string_lossy());
            Some(ChildServer::start(&args.iter().map(String::as_str).collect::<Vec<_>>(), &[]).await?)
        }
        None => None,
    };
    let baseline = ChildServer::start(&["bench-baseline", "--http-addr", "127.0.0.1:0"], &[]).await?;
    let durable_file = data_dir.join("durable-baseline.log");
    let durable_baseline = ChildServer::start(
        &["bench-baseline", "--http-addr", "127.0.0.1:0", "--durable-file", &durable_file.to_string_lossy()],
        &[],
    )
    .await?;
    let api_key = tessera.api_key.clone().context("Tessera printed no API key")?;

    say(&options, &format!("creating {} devices, each with its own token", options.devices));
    let tokens = Arc::new(provision(tessera.http, &api_key, options.devices).await?);

    let ingest_from =
        |address: SocketAddr, first_timestamp: u64| ubidots_ingest(address, tokens.clone(), first_timestamp);

    let ingest = |address: SocketAddr| ingest_from(address, 1_700_000_000_000);
    let closed = Plan { connections: options.connections, duration: options.duration, rate: None, expect: 200 };

    let mut results: Vec<Measured> = Vec::new();
    let mut baseline_runs = Vec::new();
    let mut durable_runs = Vec::new();
    let mut tessera_runs = Vec::new();
    for round in 1..=options.rounds {
        let label = format!("baseline ingest (round {round})");
        baseline_runs.push(measure(&options, &label, &baseline, ingest(baseline.http), closed, None).await?);
        let label = format!("durable baseline ingest (round {round})");
        let durable = ingest(durable_baseline.http);
        durable_runs.push(measure(&options, &label, &durable_baseline, durable, closed, None).await?);
        let label = format!("Tessera ingest (round {round})");
        tessera_runs.push(measure(&options, &label, &tessera, ingest(tessera.http), closed, None).await?);
    }
    let baseline_rate = mean(baseline_runs.iter().map(|run| run.outcome.per_second()));
    let tessera_rate = mean(tessera_runs.iter().map(|run| run.outcome.per_second()));
    let durable_rate = mean(durable_runs.iter().map(|run| run.outcome.per_second()));
    results.push(combine("baseline ingest", &baseline_runs, None));
    results.push(combine("durable baseline ingest (group commit, fdatasync)", &durable_runs, Some(baseline_rate)));
    results.push(combine("ingest (Ubidots HTTP, token check, durable write)", &tessera_runs, Some(baseline_rate)));
    results.push(combine("ingest against the durable baseline", &tessera_runs, Some(durable_rate)));

    // Latency at half of what Tessera just sustained, paced (open loop), for both.
    let half = Plan { rate: Some(tessera_rate / 2.0), ..closed };
    let label = "baseline at half of Tessera's rate";
    let paced_baseline = measure(&options, label, &baseline, ingest(baseline.http), half, None).await?;
    let label = "ingest at half load (paced)";
    let paced =
        measure(&options, label, &tessera, ingest(tessera.http), half, Some(paced_baseline.outcome.per_second()))
            .await?;
    results.push(paced_baseline);
    results.push(paced);

    let reads: MakeRequest = {
        let tokens = tokens.clone();
        let address = tessera.http;
        Arc::new(move |sequence: u64| {
            let device = (sequence as usize) % tokens.len();
            let path = format!("/api/v1.6/devices/bench-{device}/temperature/lv");
            load::request("GET", address, &path, &[("x-auth-token", &tokens[device])], None)
        })
    };
    results.push(
        measure(&options, "token-checked reads (last value)", &tessera, reads, closed, Some(baseline_rate)).await?,
    );
    say(&options, "reading a range of 10 000 values, in pages of 1 000");
    let range = range::time_range_read(tessera.http, "bench-0", &tokens[0]).await?;
    results.extend(mqtt_comparison(&options, &tessera, &tokens).await?);

    // The same ingest once the store holds a million devices and tokens more (it does not restart: what it has
    // cached is the benchmark's own devices, as it would be for the devices that are sending).
    let mut population = None;
    if options.population > 0 {
        say(
            &options,
            &format!("adding {} devices and {} live tokens to the store", options.population, options.population),
        );
        let mut config = tessera_server::Config::new(data_dir.clone());
        config.database_url = database.clone();
        let quiet = options.json;
        let took = population::populate(&config, &tokens[0], options.population, |added| {
            if !quiet {
                eprint!("\r  {added} of each added   ");
            }
        })
        .await?;
        say(&options, &format!("\r  added in {:.1} s", took.as_secs_f64()));
        let mut runs = Vec::new();
        for round in 1..=options.rounds {
            let label = format!("Tessera ingest, full store (round {round})");
            let make = ingest_from(tessera.http, 1_750_000_000_000);
            runs.push(measure(&options, &label, &tessera, make, closed, None).await?);
        }
        let full = combine("ingest with the store full (see below)", &runs, Some(baseline_rate));
        population = Some(Population {
            added: options.population,
            seconds_to_add: took.as_secs_f64(),
            ratio_to_small_store: full.outcome.per_second() / tessera_rate,
            peak_rss_mib: full.peak_rss_mib,
        });
        results.push(full);
    }

    let mut revocation = None;
    if let Some(second) = &second_node {
        let half = Plan { connections: (options.connections / 2).max(1), ..closed };
        let cpu_before = tessera.cpu_seconds() + second.cpu_seconds();
        let started = std::time::Instant::now();
        let (first, other) = tokio::join!(
            load::run(tessera.http, ingest(tessera.http), half, |_, _| {}),
            // Other timestamps than the first node's: two devices never send the same reading.
            load::run(second.http, ingest_from(second.http, 1_800_000_000_000), half, |_, _| {}),
        );
        let (first, other) = (first?, other?);
        let mut both = first.clone();
        both.requests += other.requests;
        both.errors += other.errors;
        both.latencies_us.extend(&other.latencies_us);
        both.latencies_us.sort_unstable();
        say(&options, &format!("  ingest on two nodes: {:.0}/s", both.per_second()));
        let cpu_cores = (tessera.cpu_seconds() + second.cpu_seconds() - cpu_before) / started.elapsed().as_secs_f64();
        results.push(Measured {
            name: "ingest on two PostgreSQL nodes (half the connections each)".into(),
            outcome: both,
            cpu_cores,
            peak_rss_mib: tessera.peak_rss_mib().max(second.peak_rss_mib()),
            baseline_per_second: Some(baseline_rate),
        });
        revocation = Some(revocation_delays(tessera.http, second.http, &api_key, 50).await?);
    }

    tessera.stop().await;
    if let Some(second) = second_node {
        second.stop().await;
    }
    baseline.stop().await;
    durable_baseline.stop().await;
    if let Some(schema) = schema {
        schema.drop().await?;
    }
    let _ = std::fs::remove_dir_all(&data_dir);
    let figures = Figures { verify, counting, revocation, population, range };
    report(&options, &results, figures);
    Ok(())
}

/// Ubidots HTTP ingest of the bench's devices (`bench-N`), each with its organization token: one dot of
/// `temperature` a request, its timestamp `first_timestamp` plus the request's sequence, so runs that start
/// apart never overwrite each other's readings.
pub(crate) fn ubidots_ingest(address: SocketAddr, tokens: Arc<Vec<String>>, first_timestamp: u64) -> MakeRequest {
    Arc::new(move |sequence: u64| {
        let device = (sequence as usize) % tokens.len();
        let body = format!(
            r#"{{"temperature": {{"value": {}, "timestamp": {}}}}}"#,
            sequence % 1000,
            first_timestamp + sequence
        );
        load::request(
            "POST",
            address,
            &format!("/api/v1.6/devices/bench-{device}"),
            &[("x-auth-token", &tokens[device])],
            Some(&body),
        )
    })
}

/// Ingest with a full store against ingest with only the benchmark's devices.
#[derive(Debug, Clone, Copy)]
struct Population {
    /// Devices added, and as many tokens.
    added: usize,
    seconds_to_add: f64,
    ratio_to_small_store: f64,
    peak_rss_mib: f64,
}

/// Publishers at QoS 0 to one subscriber, on Mosquitto and on Tessera alternately: messages per second that reach
/// the subscriber. Skipped, with a line saying so, when no Mosquitto answers.
async fn mqtt_comparison(options: &Options, tessera: &ChildServer, tokens: &[String]) -> anyhow::Result<Vec<Measured>> {
    const PUBLISHERS: usize = 8;
    let Some(tessera_mqtt) = tessera.mqtt else { return Ok(Vec::new()) };
    if tokio::net::TcpStream::connect(options.mosquitto).await.is_err() {
        say(options, &format!("MQTT comparison skipped: no Mosquitto at {}", options.mosquitto));
        return Ok(Vec::new());
    }
    let mosquitto_pid = process::pid_of("mosquitto");
    let topic = |publisher: usize| format!("/v1.6/devices/bench-{}", publisher % tokens.len());
    let tessera_credentials: Vec<Option<String>> = tokens.iter().take(PUBLISHERS).cloned().map(Some).collect();
    let (mut theirs, mut ours) = (Vec::new(), Vec::new());
    for round in 1..=options.rounds {
        let cpu_before = mosquitto_pid.map_or(0.0, process::cpu_seconds);
        let outcome =
            mqtt::run(options.mosquitto, &[None], None, "/v1.6/devices/+", topic, PUBLISHERS, options.duration).await?;
        let cpu = (mosquitto_pid.map_or(0.0, process::cpu_seconds) - cpu_before) / outcome.seconds;
        let name = format!("Mosquitto QoS 0 to a subscriber (round {round})");
        theirs.push(mqtt_measured(options, &name, outcome, cpu, mosquitto_pid.map_or(0.0, process::peak_rss_mib)));

        let cpu_before = tessera.cpu_seconds();
        let outcome = mqtt::run(
            tessera_mqtt,
            &tessera_credentials,
            Some(&tokens[0]),
            "/v1.6/devices/+/temperature/lv",
            topic,
            PUBLISHERS,
            options.duration,
        )
        .await?;
        let cpu = (tessera.cpu_seconds() - cpu_before) / outcome.seconds;
        let name = format!("Tessera MQTT QoS 0 to a subscriber (round {round})");
        ours.push(mqtt_measured(options, &name, outcome, cpu, tessera.peak_rss_mib()));
    }
    let mosquitto_rate = mean(theirs.iter().map(|run| run.outcome.per_second()));
    Ok(vec![
        combine("MQTT QoS 0 delivered, Mosquitto (reference)", &theirs, None),
        combine("MQTT QoS 0 delivered (ACL checked, stored)", &ours, Some(mosquitto_rate)),
    ])
}

fn mqtt_measured(options: &Options, name: &str, outcome: mqtt::MqttOutcome, cpu_cores: f64, peak: f64) -> Measured {
    say(
        options,
        &format!(
            "  {name}: {:.0} delivered/s ({} published, {} delivered)",
            outcome.delivered_per_second(),
            outcome.published,
            outcome.delivered
        ),
    );
    Measured {
        name: name.to_owned(),
        outcome: Outcome { requests: outcome.delivered, errors: 0, seconds: outcome.seconds, latencies_us: Vec::new() },
        cpu_cores,
        peak_rss_mib: peak,
        baseline_per_second: None,
    }
}

/// Runs one scenario and reads the server's CPU time and memory around it.
async fn measure(
    options: &Options,
    name: &str,
    server: &ChildServer,
    make: MakeRequest,
    plan: Plan,
    baseline_per_second: Option<f64>,
) -> anyhow::Result<Measured> {
    let quiet = options.json;
    let label = name.to_owned();
    let cpu_before = server.cpu_seconds();
    let started = std::time::Instant::now();
    let outcome = load::run(server.http, make, plan, move |done, elapsed| {
        if !quiet {
            eprint!(
                "\r  {label}: {:>4.0} s, {done} requests, {:.0}/s   ",
                elapsed.as_secs_f64(),
                done as f64 / elapsed.as_secs_f64()
            );
        }
    })
    .await?;
    let cpu_cores = (server.cpu_seconds() - cpu_before) / started.elapsed().as_secs_f64();
    if !quiet {
        eprintln!(
            "\r  {name}: {:.0}/s, p99 {:.2} ms, {} errors{}",
            outcome.per_second(),
            outcome.quantile_ms(0.99),
            outcome.errors,
            " ".repeat(20)
        );
    }
    Ok(Measured { name: name.to_owned(), outcome, cpu_cores, peak_rss_mib: server.peak_rss_mib(), baseline_per_second })
}

/// One line for several rounds of a scenario: their requests and latencies together.
fn combine(name: &str, runs: &[Measured], baseline_per_second: Option<f64>) -> Measured {
    let mut outcome = Outcome::default();
    for run in runs {
        outcome.requests += run.outcome.requests;
        outcome.errors += run.outcome.errors;
        outcome.seconds += run.outcome.seconds;
        outcome.latencies_us.extend(&run.outcome.latencies_us);
    }
    outcome.latencies_us.sort_unstable();
    Measured {
        name: name.to_owned(),
        outcome,
        cpu_cores: mean(runs.iter().map(|run| run.cpu_cores)),
        peak_rss_mib: runs.iter().map(|run| run.peak_rss_mib).fold(0.0, f64::max),
        baseline_per_second,
    }
}

fn mean(values: impl Iterator<Item = f64>) -> f64 {
    let (sum, count) = values.fold((0.0, 0usize), |(sum, count), value| (sum + value, count + 1));
    sum / count.max(1) as f64
}

fn say(options: &Options, text: &str) {
    if !options.json {
        eprintln!("{text}");
    }
}

/// A figure the benchmark is held to (issue 17), and whether this run met it.
struct Target {
    what: &'static str,
    figure: f64,
    unit: &'static str,
    met: bool,
}

/// The targets, read off this run's scenarios (a scenario not run has no target line).
fn targets(results: &[Measured], population: Option<&Population>) -> Vec<Target> {
    let named = |name: &str| results.iter().find(|result| result.name == name);
    let ratio =
        |result: &Measured| result.baseline_per_second.map_or(0.0, |baseline| result.outcome.per_second() / baseline);
    let mut targets = Vec::new();
    if let Some(ingest) = named("ingest against the durable baseline") {
        let figure = ratio(ingest);
        targets.push(Target {
            what: "ingest, durable, at least 0.8 of the durable baseline",
            figure,
            unit: "×",
            met: figure >= 0.8,
        });
    }
    if let Some(paced) = named("ingest at half load (paced)") {
        let figure = paced.outcome.quantile_ms(0.99);
        targets.push(Target {
            what: "paced ingest at half the rate: p99 at most 5 ms",
            figure,
            unit: "ms",
            met: figure <= 5.0,
        });
    }
    if let Some(reads) = named("token-checked reads (last value)") {
        let figure = ratio(reads);
        targets.push(Target {
            what: "last-value reads: at least 0.8 of the no-op baseline",
            figure,
            unit: "×",
            met: figure >= 0.8,
        });
    }
    if let Some(population) = population {
        let figure = population.ratio_to_small_store;
        targets.push(Target {
            what: "full store: ingest within 20 % of the small store",
            figure,
            unit: "×",
            met: figure >= 0.8,
        });
        let figure = population.peak_rss_mib;
        targets.push(Target {
            what: "full store: server RSS at most 300 MiB",
            figure,
            unit: "MiB",
            met: figure <= 300.0,
        });
    }
    targets
}

/// What the benchmark measured besides its scenarios' rates.
struct Figures {
    verify: VerifyTimes,
    counting: CountingCost,
    revocation: Option<(f64, f64)>,
    population: Option<Population>,
    range: range::RangeRead,
}

fn report(options: &Options, results: &[Measured], figures: Figures) {
    let Figures { verify, counting, revocation, population, range } = figures;
    let targets = targets(results, population.as_ref());
    if options.json {
        let document = json!({
            "store": if options.database_url.is_some() { "postgres" } else { "sqlite" },
            "revocation_on_other_node_ms": revocation.map(|(p50, p99)| json!({"p50": round(p50), "p99": round(p99)})),
            "full_store": population.map(|population| json!({
                "devices_added": population.added,
                "tokens_added": population.added,
                "seconds_to_add": round(population.seconds_to_add),
                "ingest_ratio_to_small_store": round(population.ratio_to_small_store),
                "server_peak_rss_mib": round(population.peak_rss_mib),
            })),
            "token_verify_us": {
                "cached_p50": round(verify.cached.0),
                "cached_p99": round(verify.cached.1),
                "store_p50": round(verify.from_store.0),
                "store_p99": round(verify.from_store.1),
                "cached_with_quota_p50": round(verify.cached_limited.0),
                "cached_with_quota_p99": round(verify.cached_limited.1),
            },
            "quota_check_ns": round(verify.quota_take_ns),
            "range_read": {
                "values": range.values,
                "pages": range.pages,
                "median_ms": round(range.median_ms),
                "slowest_ms": round(range.slowest_ms),
            },
            "request_counting_ns": {
                "observe": round(counting.observe_ns),
                "router_with_layers": round(counting.router_with_ns),
                "router_without_layers": round(counting.router_without_ns),
            },
            "connections": options.connections,
            "devices": options.devices,
            "seconds_per_run": options.duration.as_secs_f64(),
            "rounds": options.rounds,
            "scenarios": results.iter().map(Measured::json).collect::<Vec<_>>(),
            "targets": targets
                .iter()
                .map(|target| json!({"target": target.what, "figure": round(target.figure), "unit": target.unit, "met": target.met}))
                .collect::<Vec<_>>(),
        });
        println!("{document:#}");
        return;
    }
    println!(
        "\n{:<52} {:>10} {:>8} {:>8} {:>8} {:>7} {:>6} {:>8} {:>9}",
        "scenario", "per s", "p50 ms", "p99 ms", "p999 ms", "errors", "CPU", "peak MiB", "×baseline"
    );
    for result in results {
        let ratio = result
            .baseline_per_second
            .map_or_else(|| "-".to_owned(), |baseline| format!("{:.2}", result.outcome.per_second() / baseline));
        let millis = |q: f64| {
            let value = result.outcome.quantile_ms(q);
            if value.is_nan() { "-".to_owned() } else { format!("{value:.2}") }
        };
        println!(
            "{:<52} {:>10.0} {:>8} {:>8} {:>8} {:>7} {:>6.2} {:>8.1} {:>9}",
            result.name,
            result.outcome.per_second(),
            millis(0.5),
            millis(0.99),
            millis(0.999),
            result.outcome.errors,
            result.cpu_cores,
            result.peak_rss_mib,
            ratio
        );
    }
    println!("\ntargets:");
    for target in &targets {
        let verdict = if target.met { "met" } else { "MISSED" };
        println!("  {:<60} {:>8.2} {:<3} {verdict}", target.what, target.figure, target.unit);
    }
    println!(
        "\ntoken verification: {:.2} µs p50, {:.2} µs p99 from the cache; {:.1} µs p50, {:.1} µs p99 from the store",
        verify.cached.0, verify.cached.1, verify.from_store.0, verify.from_store.1
    );
    println!(
        "quota check: {:.0} ns a request (one token's count among {COUNTED_TOKENS}); verification from the cache of a \
         token with a quota {:.2} µs p50, {:.2} µs p99 (the ingest runs above count every request too)",
        verify.quota_take_ns, verify.cached_limited.0, verify.cached_limited.1
    );
    println!(
        "request counting for /metrics: {:.0} ns to count one request; a request through a router with the counting \
         layers {:.0} ns against {:.0} ns without (+{:.0} ns; the ingest runs above are counted too)",
        counting.observe_ns,
        counting.router_with_ns,
        counting.router_without_ns,
        counting.router_with_ns - counting.router_without_ns
    );
    println!(
        "a range of {} values read back in {} pages (Ubidots API, newest first): {:.1} ms median, {:.1} ms slowest of \
         7 reads",
        range.values, range.pages, range.median_ms, range.slowest_ms
    );
    if let Some((p50, p99)) = revocation {
        println!("revocation seen by the other node: {p50:.1} ms p50, {p99:.1} ms p99");
    }
    if let Some(population) = population {
        println!(
            "full store: {} devices and {} live tokens added (in {:.0} s); ingest then ran at {:.2} of the rate with \
             {} devices; server peak RSS {:.0} MiB",
            population.added,
            population.added,
            population.seconds_to_add,
            population.ratio_to_small_store,
            options.devices,
            population.peak_rss_mib
        );
    }
    println!(
        "{} connections, {} devices each with its own token, {} s per run, baseline and Tessera alternated over {} \
         rounds; CPU in cores of the server process.",
        options.connections,
        options.devices,
        options.duration.as_secs(),
        options.rounds
    );
}

/// An organization with `devices` tokens, each device created by its first reading. Answers the tokens.
pub(crate) async fn provision(address: SocketAddr, api_key: &str, devices: usize) -> anyhow::Result<Vec<String>> {
    let mut connection = Connection::open(address).await?;
    let exchange = load::request("POST", address, "/api/v1.6/auth/token", &[("x-ubidots-apikey", api_key)], None);
    let account_token = json_field(&mut connection, &exchange, 201, "token").await?;
    let create = load::request(
        "POST",
        address,
        "/v1/collections",
        &[("authorization", &format!("Bearer {account_token}"))],
        Some(r#"{"name": "bench"}"#),
    );
    let organization = json_field(&mut connection, &create, 201, "id").await?;
    let mut tokens = Vec::with_capacity(devices);
    for device in 0..devices {
        let path = format!("/api/v1.6/auth/tokens/organizations/{organization}/");
        let body = format!(r#"{{"name": "device {device}"}}"#);
        let mint = load::request("POST", address, &path, &[("x-ubidots-apikey", api_key)], Some(&body));
        let token = json_field(&mut connection, &mint, 201, "token").await?;
        let first = load::request(
            "POST",
            address,
            &format!("/api/v1.6/devices/bench-{device}"),
            &[("x-auth-token", &token)],
            Some(r#"{"temperature": 0}"#),
        );
        connection.send_ok(&first, &format!("creating device bench-{device}")).await?;
        tokens.push(token);
    }
    Ok(tokens)
}

async fn json_field(connection: &mut Connection, request: &[u8], expect: u16, field: &str) -> anyhow::Result<String> {
    let (status, body) = connection.send(request).await?;
    if status != expect {
        bail!("setup request answered {status}: {}", String::from_utf8_lossy(&body));
    }
    let document: Value = serde_json::from_slice(&body)?;
    document[field].as_str().map(str::to_owned).with_context(|| format!("no {field} in {document}"))
}

/// How long after a token is revoked on `first` the node `second` refuses it, in milliseconds (p50, p99), over
/// `trials` tokens that `second` verified (and cached) just before.
async fn revocation_delays(
    first: SocketAddr,
    second: SocketAddr,
    api_key: &str,
    trials: usize,
) -> anyhow::Result<(f64, f64)> {
    let mut on_first = Connection::open(first).await?;
    let mut on_second = Connection::open(second).await?;
    let exchange = load::request("POST", first, "/api/v1.6/auth/token", &[("x-ubidots-apikey", api_key)], None);
    let account_token = json_field(&mut on_first, &exchange, 201, "token").await?;
    let bearer = format!("Bearer {account_token}");
    let create = load::request(
        "POST",
        first,
        "/v1/collections",
        &[("authorization", &bearer)],
        Some(r#"{"name": "revocation"}"#),
    );
    let organization = json_field(&mut on_first, &create, 201, "id").await?;
    let mut delays = Vec::with_capacity(trials);
    for trial in 0..trials {
        let path = format!("/api/v1.6/auth/tokens/organizations/{organization}/");
        let body = format!(r#"{{"name": "revoked {trial}"}}"#);
        let mint = load::request("POST", first, &path, &[("x-ubidots-apikey", api_key)], Some(&body));
        let (status, answer) = on_first.send(&mint).await?;
        if status != 201 {
            bail!("minting a token answered {status}");
        }
        let answer: Value = serde_json::from_slice(&answer)?;
        let (secret, id) = (answer["token"].as_str().unwrap_or_default(), answer["id"].as_str().unwrap_or_default());
        let read = load::request("GET", second, "/api/v1.6/datasources", &[("x-auth-token", secret)], None);
        if on_second.send(&read).await?.0 != 200 {
            bail!("the second node refused a live token");
        }
        let revoke = load::request(
            "DELETE",
            first,
            &format!("/v1/tokens/{id}"),
            &[("authorization", &format!("Bearer {api_key}"))],
            None,
        );
        if on_first.send(&revoke).await?.0 != 204 {
            bail!("revoking a token failed");
        }
        let revoked_at = std::time::Instant::now();
        loop {
            if on_second.send(&read).await?.0 == 401 {
                break;
            }
            if revoked_at.elapsed() > Duration::from_secs(5) {
                bail!("the second node still accepts a token revoked 5 s ago");
            }
        }
        delays.push(revoked_at.elapsed().as_secs_f64() * 1000.0);
    }
    delays.sort_by(f64::total_cmp);
    Ok((delays[delays.len() / 2], delays[(delays.len() * 99 / 100).min(delays.len() - 1)]))
}

/// A fresh directory for the benchmark's store.
fn tempfile_dir() -> anyhow::Result<std::path::PathBuf> {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_nanos();
    let path = std::env::temp_dir().join(format!("tessera-bench-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&path)?;
    Ok(path)
}
