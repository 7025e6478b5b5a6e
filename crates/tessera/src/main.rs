//! The `tessera` command: `serve` runs the platform, `init` creates a data directory and its first account,
//! `backup` and `restore` copy a SQLite store out and back, and the operator's commands (`token`, `user`,
//! `device`, `variable`, `readings`, `status`, in `admin.rs`) work on the store directly.
//! Configuration comes from flags, then `TESSERA_*` environment variables, then an optional TOML file, then
//! defaults; it is parsed here into one `Config` and passed down.

mod admin;
mod bench;
mod settings;

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tessera_server::backup::BackupError;
use tessera_server::{Config, Credentials};

use crate::settings::{CommonArgs, HttpLimitArgs, RateLimitArgs, Settings, TlsArgs};

/// mimalloc rather than glibc's malloc: allocation and freeing across the runtime's threads cost a fifth of the
/// server's CPU under MQTT and HTTP load (perf), and the hot paths allocate per message (JSON values, topics).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(
    name = "tessera",
    version,
    about = "A self-hosted IoT data platform that speaks Ubidots, Horde and AllThingsTalk",
    after_help = admin::EXIT_CODES
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run Tessera. On an empty data directory it first creates an account and prints its credentials once.
    Serve {
        #[command(flatten)]
        serve: ServeArgs,
        /// Log format: "text" or "json"
        #[arg(long, env = "TESSERA_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
        log_format: String,
    },
    /// The configuration `serve` would run with, from the same flags, variables and file.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Manage users of the account.
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// List, show and revoke tokens, straight from the store (no server needed).
    #[command(after_help = admin::EXIT_CODES)]
    Token {
        #[command(subcommand)]
        command: admin::TokenCommand,
    },
    /// List devices, or show one with its variables' last values.
    #[command(after_help = admin::EXIT_CODES)]
    Device {
        #[command(subcommand)]
        command: admin::DeviceCommand,
    },
    /// A variable's last values.
    #[command(after_help = admin::EXIT_CODES)]
    Variable {
        #[command(subcommand)]
        command: admin::VariableCommand,
    },
    /// Export readings as CSV or JSON Lines.
    #[command(after_help = admin::EXIT_CODES)]
    Readings {
        #[command(subcommand)]
        command: admin::ReadingsCommand,
    },
    /// What the store holds (accounts, users, collections, devices, variables, readings, live tokens by kind, the
    /// database's size) and whether a server runs on the data directory (its process id).
    #[command(after_help = admin::EXIT_CODES)]
    Status {
        #[command(flatten)]
        store: admin::StoreArgs,
    },
    /// Bring the database's schema up to date and exit (`serve` does this too at start; several nodes starting at
    /// once apply each migration once).
    Migrate {
        #[command(flatten)]
        common: CommonArgs,
    },
    /// Measure what Tessera holds on this machine: it starts a Tessera and a bare baseline (an axum handler that
    /// only hashes the token header and parses the body), drives both with the same load, and prints requests per
    /// second, latency percentiles, errors, the server's CPU and peak memory, each against the baseline.
    Bench {
        /// Seconds per measured run
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Concurrent HTTP connections
        #[arg(long, default_value_t = 64)]
        connections: usize,
        /// Simulated devices, each with its own token
        #[arg(long, default_value_t = 1000)]
        devices: usize,
        /// Devices and live tokens (as many of each) then added to the store before ingest is measured again;
        /// 0 skips that scenario. With --backup: the readings in the store that is backed up
        #[arg(long, default_value_t = 1_000_000)]
        population: usize,
        /// Baseline and Tessera runs alternate this many times
        #[arg(long, default_value_t = 2)]
        rounds: usize,
        /// Print the figures as one JSON document
        #[arg(long)]
        json: bool,
        /// Measure the web console's pages instead (10 000 devices in a collection, a week of readings at 1/s
        /// for the chart): p50/p99/p999 of each page
        #[arg(long)]
        console: bool,
        /// Measure `tessera backup` instead: a store of a million readings copied while paced ingest goes on, the
        /// acknowledgements' latency before and during the backup, and how far the WAL grows meanwhile
        #[arg(long, conflicts_with = "console")]
        backup: bool,
        /// Check crashes instead: kill a serving Tessera with SIGKILL this many times under HTTP ingest and MQTT
        /// QoS 1 publishing, restarting it on the same store, and check that every acknowledged reading is there,
        /// whole, and nothing else; exits non-zero on any loss. `--crash` alone runs 100 cycles
        #[arg(long, value_name = "CYCLES", num_args = 0..=1, default_missing_value = "100")]
        #[arg(conflicts_with_all = ["console", "backup"])]
        crash: Option<usize>,
        /// The machine's Mosquitto, driven by the same MQTT load for comparison (skipped if it does not answer)
        #[arg(long, default_value = "127.0.0.1:1883")]
        mosquitto: std::net::SocketAddr,
        /// Run Tessera as two nodes on this PostgreSQL database (in a schema of the benchmark's own) instead of
        /// SQLite, adding two-node ingest and revocation across nodes
        #[arg(long, value_name = "URL")]
        database_url: Option<String>,
        /// Run a fleet instead (issue 19): devices each connected with its own device token and publishing one
        /// reading every --fleet-interval, applications each following its share with a ground token; over MQTT
        /// and HTTP keep-alive against Tessera, and over MQTT against a Mosquitto the bench starts
        #[arg(long, conflicts_with_all = ["console", "backup"])]
        fleet: bool,
        /// Soak for this many seconds instead: the fleet connected and publishing over MQTT, plus HTTP ingest at
        /// 70 % of the sustained rate; memory and p99 sampled every min(60 s, SECONDS/10)
        #[arg(long, value_name = "SECONDS", conflicts_with_all = ["console", "backup", "fleet"])]
        soak: Option<u64>,
        /// Where the soak writes its plot of memory and p99 over time (SVG)
        #[arg(long, value_name = "FILE", default_value = "bench-soak.svg")]
        soak_plot: std::path::PathBuf,
        /// Devices in the fleet (--fleet, --soak)
        #[arg(long, default_value_t = 10_000)]
        fleet_devices: usize,
        /// Applications following the fleet, each its share of the devices with a ground token
        #[arg(long, default_value_t = 20)]
        fleet_subscribers: usize,
        /// Seconds between two readings of one device (at most 60: the clients' keep-alive is 120 s)
        #[arg(long, default_value_t = 5.0)]
        fleet_interval: f64,
        /// Seconds the fleet stays connected and silent, then publishes, before the measured window
        #[arg(long, default_value_t = 10.0)]
        fleet_warmup: f64,
        /// Seconds of the measured window
        #[arg(long, default_value_t = 60.0)]
        fleet_window: f64,
        /// The fleet's runs, in order
        #[arg(long, value_delimiter = ',', default_value = "mqtt,http,mosquitto")]
        fleet_modes: Vec<bench::FleetMode>,
    },
    /// The benchmark's baseline server (started by `tessera bench`).
    #[command(hide = true)]
    BenchBaseline {
        #[arg(long, default_value = "127.0.0.1:0")]
        http_addr: std::net::SocketAddr,
        /// Answer each reading only once it is appended to this file and synced (group commit)
        #[arg(long, value_name = "FILE")]
        durable_file: Option<std::path::PathBuf>,
    },
    /// Copy the SQLite store into one file, online (a running server goes on ingesting): a consistent snapshot
    /// with the server key inside, so the tokens work after a restore. The file is mode 0600: it holds the key.
    /// For PostgreSQL use pg_dump (see the README's "Backups").
    #[command(after_help = EXIT_CODES)]
    Backup {
        #[command(flatten)]
        common: CommonArgs,
        /// The backup file to write (it appears only when whole)
        #[arg(long, value_name = "FILE")]
        to: PathBuf,
        /// Replace the backup file if it exists
        #[arg(long)]
        force: bool,
    },
    /// Bring a backup made by `tessera backup` back into the data directory (no server may be running on it).
    /// The file is checked before anything is touched; an existing store is replaced only with --force, and then
    /// kept aside in DIR/replaced-TIME (a data directory of its own).
    #[command(after_help = EXIT_CODES)]
    Restore {
        #[command(flatten)]
        common: CommonArgs,
        /// The backup file to restore
        #[arg(long, value_name = "FILE")]
        from: PathBuf,
        /// Replace the store the data directory holds (it is kept aside, not deleted)
        #[arg(long)]
        force: bool,
    },
    /// Create the data directory and a bootstrap account. Running it again changes and reveals nothing.
    Init {
        #[command(flatten)]
        common: CommonArgs,
        /// Print the credentials as one JSON object (only when they are created).
        #[arg(long)]
        json: bool,
    },
}

/// What `backup` and `restore` exit with, for scripts (`--help` shows it; the README too).
const EXIT_CODES: &str = "Exit codes:
  0  done
  1  failure (a file could not be read, written or synced)
  2  usage: a wrong flag or configuration, or --to names a file of the store itself
  3  not found: no store to back up, or no backup file
  4  a running Tessera server holds the data directory (its process id is named)
  6  the file is not a backup this Tessera can restore (nothing was changed)
  7  the target exists: a store in the data directory, or the backup file (give --force)
  8  the store is PostgreSQL: use pg_dump and pg_restore (see the README)";

/// The exit code of a failed `backup` or `restore` (as `EXIT_CODES` lists them).
fn backup_exit_code(error: &BackupError) -> u8 {
    match error {
        BackupError::Configuration(_) | BackupError::OntoTheStore(_) | BackupError::ToADirectory(_) => 2,
        BackupError::NoStore(_) | BackupError::NoBackupFile(_) => 3,
        BackupError::Locked(tessera_server::data_lock::LockError::Held { .. }) => 4,
        BackupError::NotRestorable { .. }
        | BackupError::NoKeyInBackup(_)
        | BackupError::KeyLength { .. }
        | BackupError::ChangedDuringRestore(_) => 6,
        BackupError::StoreExists { .. } | BackupError::BackupExists(_) => 7,
        BackupError::PostgresBackup | BackupError::PostgresRestore => 8,
        BackupError::Locked(_)
        | BackupError::NoKey { .. }
        | BackupError::Io { .. }
        | BackupError::Store { .. }
        | BackupError::CopyUnsound(_) => 1,
    }
}

/// Prints a failed `backup` or `restore` with its causes and exits with its code.
fn exit_with(error: &BackupError) -> ! {
    let mut message = format!("Error: {error}");
    let mut cause = std::error::Error::source(error);
    while let Some(inner) = cause {
        message.push_str(&format!("\n  because: {inner}"));
        cause = inner.source();
    }
    eprintln!("{message}");
    std::process::exit(i32::from(backup_exit_code(error)));
}

/// Where `serve` listens and how it is limited: the flags `serve` and `config show` share.
#[derive(Debug, clap::Args)]
struct ServeArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// Address for the HTTP API [default: 127.0.0.1:8080]
    #[arg(long, env = "TESSERA_HTTP_ADDR", value_name = "ADDR")]
    http_addr: Option<std::net::SocketAddr>,
    /// Address for the MQTT server [default: 127.0.0.1:1883; if that is taken, HTTP is served alone]
    #[arg(long, env = "TESSERA_MQTT_ADDR", value_name = "ADDR")]
    mqtt_addr: Option<std::net::SocketAddr>,
    /// Address of a listener serving only /metrics (Prometheus) [default: none]
    #[arg(long, env = "TESSERA_METRICS_ADDR", value_name = "ADDR")]
    metrics_addr: Option<std::net::SocketAddr>,
    /// Bearer token a scraper presents for /metrics; without one the HTTP port serves no /metrics. Prefer the
    /// variable or the file: a flag shows in the process list
    #[arg(long, env = "TESSERA_METRICS_TOKEN", value_name = "TOKEN", hide_env_values = true)]
    metrics_token: Option<String>,
    #[command(flatten)]
    http_limits: HttpLimitArgs,
    #[command(flatten)]
    rate_limits: RateLimitArgs,
    #[command(flatten)]
    tls: TlsArgs,
}

impl ServeArgs {
    /// The configuration these flags, the environment and the file make.
    fn config(&self) -> anyhow::Result<Config> {
        let mut config = Settings::load(&self.common)?
            .with_http_limits(&self.http_limits)
            .with_rate_limits(&self.rate_limits)
            .with_tls(&self.tls)
            .into_config();
        if let Some(http_addr) = self.http_addr {
            config.http_addr = http_addr;
        }
        if let Some(mqtt_addr) = self.mqtt_addr {
            // An address asked for must be served: failing to listen on it stops the start.
            config.mqtt_addr = mqtt_addr;
            config.mqtt_required = true;
        }
        if let Some(metrics_addr) = self.metrics_addr {
            config.metrics_addr = Some(metrics_addr);
        }
        if let Some(metrics_token) = &self.metrics_token {
            config.metrics_token = Some(metrics_token.clone());
        }
        Ok(config)
    }
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Print the effective configuration (flags over variables over the file over defaults), as TOML keys, with
    /// secrets redacted (the database URL's password).
    Show {
        #[command(flatten)]
        serve: ServeArgs,
        /// One JSON object instead of TOML lines.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
enum UserCommand {
    /// Add a user (with a private team). The password is never logged.
    Add {
        #[command(flatten)]
        common: CommonArgs,
        #[arg(long)]
        email: String,
        /// The password (visible in the process list; prefer --password-stdin)
        #[arg(long, conflicts_with = "password_stdin")]
        password: Option<String>,
        /// Read the password from the first line of standard input
        #[arg(long)]
        password_stdin: bool,
        /// Make the user an administrator of the account
        #[arg(long)]
        admin: bool,
        #[arg(long, default_value = "")]
        name: String,
    },
    /// List the account's users and whether each has a second factor.
    #[command(after_help = admin::EXIT_CODES)]
    List {
        #[command(flatten)]
        store: admin::StoreArgs,
    },
    /// Remove a user's second factor and recovery codes (a lost phone), recorded in the audit trail as the
    /// operator's. Their password and sessions stay; they can enrol again.
    #[command(after_help = admin::EXIT_CODES)]
    ResetSecondFactor {
        #[command(flatten)]
        store: admin::StoreArgs,
        /// The user's email or id
        #[arg(value_name = "EMAIL|ID")]
        user: String,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the runtime")?;
    match cli.command {
        Command::Serve { serve: args, log_format } => {
            init_logging(&log_format);
            runtime.block_on(serve(args.config()?))
        }
        Command::Config { command: ConfigCommand::Show { serve, json } } => {
            let config = serve.config()?;
            config.check()?;
            let shown = settings::effective(&config);
            if json {
                let object: serde_json::Map<String, serde_json::Value> =
                    shown.into_iter().map(|(key, value)| (key.to_owned(), value)).collect();
                println!("{}", serde_json::Value::Object(object));
            } else {
                print!("{}", settings::as_toml(&shown));
            }
            Ok(())
        }
        Command::User { command: UserCommand::Add { common, email, password, password_stdin, admin, name } } => {
            init_logging("text");
            let config = Settings::load(&common)?.into_config();
            let password = match (password, password_stdin) {
                (Some(password), _) => password,
                (None, true) => {
                    let mut line = String::new();
                    std::io::stdin().read_line(&mut line).context("reading the password from standard input")?;
                    line.trim_end_matches(['\n', '\r']).to_owned()
                }
                (None, false) => anyhow::bail!("give the password with --password or --password-stdin"),
            };
            let new = tessera_server::people::NewUser {
                email,
                password,
                display_name: name,
                phone: String::new(),
                is_admin: admin,
            };
            let user = runtime.block_on(tessera_server::bootstrap::add_user_as_operator(&config, new))?;
            println!(
                "Added user {} ({}){}",
                user.email,
                user.id,
                if user.is_admin { " as an administrator" } else { "" }
            );
            Ok(())
        }
        Command::Bench {
            seconds,
            connections,
            devices,
            population,
            rounds,
            json,
            console,
            backup,
            crash,
            mosquitto,
            database_url,
            fleet,
            soak,
            soak_plot,
            fleet_devices,
            fleet_subscribers,
            fleet_interval,
            fleet_warmup,
            fleet_window,
            fleet_modes,
        } => {
            init_logging("text");
            anyhow::ensure!(
                seconds > 0 && connections > 0 && devices > 0 && rounds > 0 && crash != Some(0),
                "every count must be at least 1"
            );
            anyhow::ensure!(
                fleet_devices > 0 && fleet_subscribers > 0 && fleet_subscribers <= fleet_devices,
                "--fleet-devices and --fleet-subscribers must be at least 1, and no more applications than devices"
            );
            let seconds_flag = |name: &str, value: f64, range: std::ops::RangeInclusive<f64>| {
                anyhow::ensure!(range.contains(&value), "--{name} must be within {range:?} seconds");
                Ok(std::time::Duration::from_secs_f64(value))
            };
            let fleet_shape = bench::FleetShape {
                devices: fleet_devices,
                subscribers: fleet_subscribers,
                interval: seconds_flag("fleet-interval", fleet_interval, 0.01..=60.0)?,
                warmup: seconds_flag("fleet-warmup", fleet_warmup, 0.1..=3600.0)?,
                window: seconds_flag("fleet-window", fleet_window, 0.1..=86_400.0)?,
                modes: fleet_modes,
            };
            anyhow::ensure!(soak.is_none_or(|seconds| seconds > 0), "--soak must be at least 1 second");
            let options = bench::Options {
                duration: std::time::Duration::from_secs(seconds),
                mosquitto,
                database_url,
                connections,
                devices,
                population,
                rounds,
                json,
                console,
                backup,
                fleet,
                soak: soak.map(std::time::Duration::from_secs),
                soak_plot,
                fleet_shape,
                crash,
            };
            runtime.block_on(bench::run(options))
        }
        Command::BenchBaseline { http_addr, durable_file } => {
            runtime.block_on(bench::serve_baseline(http_addr, durable_file))
        }
        Command::Migrate { common } => {
            init_logging("text");
            let config = Settings::load(&common)?.into_config();
            runtime.block_on(migrate(config))
        }
        Command::Backup { common, to, force } => {
            init_logging("text");
            let config = Settings::load(&common)?.into_config();
            match runtime.block_on(tessera_server::backup::backup(&config, &to, force)) {
                Ok(done) => {
                    println!(
                        "Backed up {} to {} ({:.1} MiB, {:.1} s, of which the snapshot {:.1} s), with its server key: \
                         keep the file as private as the data directory.",
                        done.database.display(),
                        to.display(),
                        done.bytes as f64 / (1024.0 * 1024.0),
                        done.took.as_secs_f64(),
                        done.snapshot_took.as_secs_f64(),
                    );
                    Ok(())
                }
                Err(error) => exit_with(&error),
            }
        }
        Command::Restore { common, from, force } => {
            init_logging("text");
            let config = Settings::load(&common)?.into_config();
            match runtime.block_on(tessera_server::backup::restore(&config, &from, force)) {
                Ok(done) => {
                    println!(
                        "Restored {} into {} (schema version {}; `tessera serve` brings it up to date).",
                        from.display(),
                        done.data_dir.display(),
                        done.schema_version
                    );
                    if let Some(aside) = done.kept_aside {
                        println!("The store it replaced is kept in {}.", aside.display());
                    }
                    Ok(())
                }
                Err(error) => exit_with(&error),
            }
        }
        Command::Init { common, json } => {
            init_logging("text");
            let config = Settings::load(&common)?.into_config();
            runtime.block_on(init(config, json))
        }
        Command::Token { command } => finish(runtime.block_on(admin::token(command))),
        Command::Device { command } => finish(runtime.block_on(admin::device(command))),
        Command::Variable { command } => finish(runtime.block_on(admin::variable(command))),
        Command::Readings { command } => finish(runtime.block_on(admin::readings(command))),
        Command::Status { store } => finish(runtime.block_on(admin::status(store))),
        Command::User { command: UserCommand::List { store } } => finish(runtime.block_on(admin::list_users(store))),
        Command::User { command: UserCommand::ResetSecondFactor { store, user } } => {
            finish(runtime.block_on(admin::reset_second_factor(store, user)))
        }
    }
}

/// Ends an operator's command with its exit code (`admin::EXIT_CODES`) and its message on standard error.
fn finish(outcome: Result<(), admin::Failure>) -> anyhow::Result<()> {
    if let Err(failure) = outcome {
        if failure.is_output_closed() {
            return Ok(());
        }
        let _ = writeln!(std::io::stderr(), "error: {failure}");
        std::process::exit(i32::from(failure.exit_code()));
    }
    Ok(())
}

fn init_logging(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// Where the data lives, for people: the data directory, or the database (its URL without the password).
fn data_place(config: &Config) -> String {
    match config.database() {
        Ok(tessera_server::Database::Postgres(url)) => match url.split_once('@') {
            Some((_, host)) => format!("PostgreSQL at {host}"),
            None => format!("PostgreSQL at {}", url.split_once("://").map_or(url.as_str(), |(_, rest)| rest)),
        },
        Ok(tessera_server::Database::Sqlite(path)) => path.display().to_string(),
        Err(_) => config.data_dir.display().to_string(),
    }
}

async fn migrate(config: Config) -> anyhow::Result<()> {
    let place = data_place(&config);
    let opened = tessera_server::bootstrap::open_store(&config).await.context("opening the store")?;
    opened.store.close().await;
    println!("The schema of {place} is up to date.");
    Ok(())
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let data_dir = data_place(&config);
    let server = tessera_server::start(config).await.context("starting tessera")?;
    if let Some(credentials) = server.credentials() {
        print_credentials_readably(credentials, &data_dir);
    }
    if let Some(mqtt_addr) = server.mqtt_addr() {
        println!("Tessera MQTT is listening on {mqtt_addr}");
    }
    if let Some(mqtts_addr) = server.mqtts_addr() {
        println!("Tessera MQTTS is listening on {mqtts_addr}");
    }
    if let Some(https_addr) = server.https_addr() {
        println!("Tessera is listening on https://{https_addr}");
    }
    println!("Tessera is listening on http://{}", server.http_addr());
    server.run_until(shutdown_signal()).await;
    Ok(())
}

async fn init(config: Config, json: bool) -> anyhow::Result<()> {
    let data_dir = data_place(&config);
    let opened = tessera_server::bootstrap::open_store(&config).await.context("opening the store")?;
    let created = tessera_server::bootstrap::bootstrap(opened.store.as_ref(), &opened.key)
        .await
        .context("creating the bootstrap account")?;
    opened.store.close().await;
    match created {
        Some(credentials) if json => {
            let document = serde_json::json!({
                "account_id": credentials.account_id.to_string(),
                "api_key": credentials.api_key.expose(),
                "admin_email": credentials.admin_email,
                "admin_password": credentials.admin_password,
            });
            println!("{document}");
        }
        Some(credentials) => print_credentials_readably(&credentials, &data_dir),
        None => eprintln!("Tessera is already initialized in {data_dir}; nothing was changed."),
    }
    Ok(())
}

fn print_credentials_readably(credentials: &Credentials, data_dir: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "\nTessera created a new account in {data_dir}.\n\
         These credentials are shown only this once; keep them somewhere safe:\n\n  \
         account id:      {}\n  \
         API key:         {}\n  \
         admin email:     {}\n  \
         admin password:  {}\n",
        credentials.account_id,
        credentials.api_key.expose(),
        credentials.admin_email,
        credentials.admin_password,
    );
    let _ = out.flush();
}

/// Completes on SIGINT (Ctrl-C) or SIGTERM.
async fn shutdown_signal() {
    let interrupt = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = interrupt => {}
        _ = terminate => {}
    }
    tracing::info!("shutting down: finishing requests in flight and committing queued readings");
}
