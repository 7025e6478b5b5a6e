//! The server's configuration: one typed struct, built by the binary from flags, `TESSERA_*` variables and an
//! optional TOML file, and passed down. Nothing reads configuration from globals.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// `Debug` shows the database URL without its password (`redact_url`), so a configuration can be logged.
#[derive(Clone)]
pub struct Config {
    /// Holds the SQLite database and the server key; created on first start.
    pub data_dir: PathBuf,
    /// `postgres://…` for a database shared by several nodes, `sqlite://PATH` for another SQLite file; `None`
    /// for SQLite in the data directory.
    pub database_url: Option<String>,
    /// Where the HTTP API listens; port 0 picks a free port (tests).
    pub http_addr: SocketAddr,
    /// Where the MQTT server listens; port 0 picks a free port (tests).
    pub mqtt_addr: SocketAddr,
    /// Whether failing to listen for MQTT stops the start. When the address is only the default (1883, often
    /// taken by a broker already on the machine), Tessera warns and serves HTTP alone instead.
    pub mqtt_required: bool,
    /// How long a token from the Ubidots `auth/token` exchange lives. Each exchange mints a new token, so an
    /// expiry keeps clients that exchange at every start from piling up live tokens.
    pub exchange_token_ttl: Duration,
    /// Verified tokens kept in memory; a cached token is checked without a store round trip.
    pub token_cache_capacity: u64,
    /// Devices and variables kept in memory for ingest.
    pub device_cache_capacity: u64,
    /// Most readings the batching writer commits in one transaction.
    pub writer_max_batch: usize,
    /// Ingest requests that may wait for the writer before new ones wait for room (backpressure).
    pub writer_queue: usize,
    /// How often token usage counted in memory is written to the store.
    pub usage_flush_interval: Duration,
    /// Readings the live hub holds for its slowest consumer before that consumer loses the oldest.
    pub hub_capacity: usize,
    /// How long a user's access token lives after login or refresh.
    pub access_token_ttl: Duration,
    /// How long a refresh token lives.
    pub refresh_token_ttl: Duration,
    /// How long a client has to send a request's line and headers: from the connection's opening for its first
    /// request, from the first byte of each later one. A whole limit, not one per read, so headers sent a byte at a
    /// time (slowloris) are cut off too. 20 s, Apache's `RequestReadTimeout header=20`: a request head is a few
    /// hundred bytes, which even a 2G link carries in a second or two; nginx allows 60 s.
    pub http_header_timeout: Duration,
    /// How long a request body may go without a byte arriving (between reads, as nginx's
    /// `client_body_timeout`). A stalled upload is answered 408 and the connection closed. 20 s, Apache's
    /// `body=20`: a device whose link stalls for that long has lost it; nginx allows 60 s.
    pub http_body_timeout: Duration,
    /// How long an answer may wait for the client to take it (between writes, as nginx's `send_timeout`), on
    /// every connection, WebSockets and event streams included: a client that stops reading is cut off instead of
    /// holding its connection for ever. 20 s, as for the body.
    pub http_send_timeout: Duration,
    /// How long a connection may stay open between requests. 75 s, nginx's `keepalive_timeout`: longer than the
    /// 60 s idle timeout of the common load balancers and proxies, so they close the idle connections they keep
    /// to Tessera, never Tessera under a request they are sending. (Apache's 5 s would have a device that reports
    /// every minute open a connection for every reading.)
    pub http_keep_alive_timeout: Duration,
    /// Most HTTP connections open at once, WebSockets included. At the bound Tessera stops accepting until one
    /// closes; the others wait in the listen queue. 10 000 holds a fleet of that many devices on keep-alive
    /// connections (about 18 KiB of memory each while idle, measured); keep it below the open-file limit (`ulimit -n`),
    /// with room for the store's files and MQTT connections, which Tessera warns about at start.
    pub http_max_connections: usize,
    /// How long the audit trail keeps an entry; older ones are deleted in the background (every minute). 90 days.
    pub audit_retention: Duration,
    /// Largest WebSocket message or frame a client may send on a Horde `/from` stream, which reads only control
    /// frames (a ping carries at most 125 bytes); anything larger closes the socket. 4 KiB.
    pub websocket_max_message_size: usize,
    /// Where a listener of its own serves `/metrics` (and nothing else); `None` (the default) starts none. Bind
    /// it to loopback or a monitoring network: without a `metrics_token` it asks for no credential.
    pub metrics_addr: Option<SocketAddr>,
    /// The bearer token a Prometheus scraper presents for `/metrics` (`Authorization: Bearer …`), on the main
    /// HTTP listener and on `metrics_addr`. Without one, the main listener does not serve `/metrics` at all. At
    /// least 16 characters, printable ASCII without spaces; redacted in `Debug` and `config show`.
    pub metrics_token: Option<String>,
    /// The default request quota of each kind of token, counted per token on this node over HTTP and MQTT
    /// together; a token's own quota, set when it is made or changed, wins.
    pub rate_limits: crate::quota::RateLimits,
    /// The certificate chain (PEM, the server's certificate first) for HTTPS and MQTTS; with `tls_key_file`, it
    /// turns TLS on. Loaded again without a restart when it changes (see `tls.rs`).
    pub tls_cert_file: Option<PathBuf>,
    /// The certificate's private key (PEM).
    pub tls_key_file: Option<PathBuf>,
    /// Where HTTPS serves the same routes as HTTP; `None` when TLS is off. The binary defaults it to
    /// 127.0.0.1:8443 when TLS is configured.
    pub https_addr: Option<SocketAddr>,
    /// Where MQTT over TLS listens; `None` when TLS is off. The binary defaults it to 127.0.0.1:8883 (the port
    /// Ubidots and AllThingsTalk devices use) when TLS is configured.
    pub mqtts_addr: Option<SocketAddr>,
}

impl Config {
    /// The defaults `tessera serve` uses with no flags.
    pub fn new(data_dir: PathBuf) -> Config {
        Config {
            data_dir,
            database_url: None,
            http_addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            mqtt_addr: SocketAddr::from(([127, 0, 0, 1], 1883)),
            mqtt_required: false,
            exchange_token_ttl: Duration::from_secs(24 * 60 * 60),
            token_cache_capacity: 100_000,
            device_cache_capacity: 100_000,
            writer_max_batch: 5_000,
            writer_queue: 4_096,
            usage_flush_interval: Duration::from_secs(1),
            hub_capacity: 4096,
            access_token_ttl: Duration::from_secs(3599),
            refresh_token_ttl: Duration::from_secs(60 * 24 * 60 * 60),
            http_header_timeout: Duration::from_secs(20),
            http_body_timeout: Duration::from_secs(20),
            http_send_timeout: Duration::from_secs(20),
            http_keep_alive_timeout: Duration::from_secs(75),
            http_max_connections: 10_000,
            websocket_max_message_size: 4 * 1024,
            audit_retention: Duration::from_secs(90 * 24 * 60 * 60),
            metrics_addr: None,
            metrics_token: None,
            rate_limits: crate::quota::RateLimits::default(),
            tls_cert_file: None,
            tls_key_file: None,
            https_addr: None,
            mqtts_addr: None,
        }
    }

    /// The certificate and key files, when TLS is configured (both named), or the key that is missing.
    pub fn tls_files(&self) -> Result<Option<crate::tls::TlsFiles>, ConfigError> {
        match (&self.tls_cert_file, &self.tls_key_file) {
            (Some(cert_file), Some(key_file)) => {
                Ok(Some(crate::tls::TlsFiles { cert_file: cert_file.clone(), key_file: key_file.clone() }))
            }
            (Some(_), None) => {
                Err(ConfigError { key: "tls_key_file", problem: "must be set with tls_cert_file".into() })
            }
            (None, Some(_)) => {
                Err(ConfigError { key: "tls_cert_file", problem: "must be set with tls_key_file".into() })
            }
            (None, None) => Ok(None),
        }
    }

    /// The database this configuration names, or what is wrong with its URL.
    pub fn database(&self) -> Result<Database, String> {
        let Some(url) = self.database_url.as_deref() else {
            return Ok(Database::Sqlite(self.data_dir.join("tessera.db")));
        };
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(Database::Postgres(url.to_owned()));
        }
        match url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:")) {
            Some("") => Err("the SQLite database URL names no file (sqlite://PATH)".to_owned()),
            Some(path) => Ok(Database::Sqlite(PathBuf::from(path))),
            None => Err(format!(
                "the database URL must start with postgres://, postgresql:// or sqlite://, not '{}'",
                url.split("://").next().unwrap_or(url)
            )),
        }
    }
}

/// The shortest `metrics_token` taken: guessing one of 16 random characters is out of reach.
pub const MIN_METRICS_TOKEN_LENGTH: usize = 16;

/// The longest duration any setting may have.
const LONGEST_DURATION: Duration = Duration::from_secs(100 * 365 * 24 * 60 * 60);
/// The largest count any setting may have.
const LARGEST_COUNT: usize = 1 << 30;

/// A configuration value that cannot work, named by its key (as the TOML file writes it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("configuration: {key} {problem}")]
pub struct ConfigError {
    pub key: &'static str,
    pub problem: String,
}

impl Config {
    /// Checks every value `start` would otherwise take as it is (or quietly raise): the first that cannot work
    /// is named with what is wrong. `tessera serve` and `tessera config show` refuse such a configuration.
    pub fn check(&self) -> Result<(), ConfigError> {
        let positive_durations = [
            ("exchange_token_ttl_seconds", self.exchange_token_ttl),
            ("usage_flush_interval", self.usage_flush_interval),
            ("access_token_ttl_seconds", self.access_token_ttl),
            ("refresh_token_ttl_seconds", self.refresh_token_ttl),
            ("http_header_timeout_seconds", self.http_header_timeout),
            ("http_body_timeout_seconds", self.http_body_timeout),
            ("http_send_timeout_seconds", self.http_send_timeout),
            ("http_keep_alive_timeout_seconds", self.http_keep_alive_timeout),
            ("audit_retention_days", self.audit_retention),
        ];
        for (key, duration) in positive_durations {
            if duration.is_zero() {
                return Err(ConfigError { key, problem: "must be more than zero".into() });
            }
            // Larger ones overflow the clock's arithmetic (a timeout of 2^64 s panicked every connection).
            if duration > LONGEST_DURATION {
                return Err(ConfigError {
                    key,
                    problem: format!("must be at most {} s (100 years)", LONGEST_DURATION.as_secs()),
                });
            }
        }
        let positive_counts = [
            ("token_cache_capacity", self.token_cache_capacity as usize),
            ("device_cache_capacity", self.device_cache_capacity as usize),
            ("writer_max_batch", self.writer_max_batch),
            ("writer_queue", self.writer_queue),
            ("hub_capacity", self.hub_capacity),
            ("http_max_connections", self.http_max_connections),
            ("websocket_max_message_bytes", self.websocket_max_message_size),
        ];
        for (key, count) in positive_counts {
            if count == 0 {
                return Err(ConfigError { key, problem: "must be at least 1".into() });
            }
            // Queues and bounds are semaphores and sums: 2^64 overflowed them at start.
            if count > LARGEST_COUNT {
                return Err(ConfigError { key, problem: format!("must be at most {LARGEST_COUNT}") });
            }
        }
        if self.refresh_token_ttl < self.access_token_ttl {
            return Err(ConfigError {
                key: "refresh_token_ttl_seconds",
                problem: format!(
                    "({} s) is shorter than access_token_ttl_seconds ({} s): sessions could not be renewed",
                    self.refresh_token_ttl.as_secs(),
                    self.access_token_ttl.as_secs()
                ),
            });
        }
        self.database().map_err(|problem| ConfigError { key: "database_url", problem })?;
        if let Some(token) = &self.metrics_token {
            if token.len() < MIN_METRICS_TOKEN_LENGTH {
                return Err(ConfigError {
                    key: "metrics_token",
                    problem: format!(
                        "is {} characters long; it must have at least {MIN_METRICS_TOKEN_LENGTH} (e.g. `openssl rand \
                         -hex 32`)",
                        token.len()
                    ),
                });
            }
            if !token.bytes().all(|byte| byte.is_ascii_graphic()) {
                return Err(ConfigError {
                    key: "metrics_token",
                    problem: "must be printable ASCII without spaces (it travels in an HTTP header)".into(),
                });
            }
        }
        match self.tls_files()? {
            // The files are read here, so `tessera config show` finds a wrong one as `serve` would.
            Some(files) => {
                crate::tls::load(&files).map_err(crate::tls::LoadError::into_config_error)?;
            }
            None => {
                let listeners = [("https_addr", self.https_addr.is_some()), ("mqtts_addr", self.mqtts_addr.is_some())];
                if let Some((key, _)) = listeners.into_iter().find(|(_, set)| *set) {
                    return Err(ConfigError { key, problem: "needs tls_cert_file and tls_key_file".into() });
                }
            }
        }
        let listeners = self.listeners();
        for (index, (key, addr)) in listeners.iter().enumerate() {
            if let Some((other, other_addr)) = listeners[..index].iter().find(|(_, other)| overlap(*addr, *other)) {
                return Err(ConfigError {
                    key,
                    problem: format!("({addr}) is the port of {other} ({other_addr}): each listener needs its own"),
                });
            }
        }
        Ok(())
    }

    /// Every address Tessera listens on, with its TOML key.
    fn listeners(&self) -> Vec<(&'static str, SocketAddr)> {
        let tls = [("https_addr", self.https_addr), ("mqtts_addr", self.mqtts_addr)];
        let mut listeners = vec![("http_addr", self.http_addr), ("mqtt_addr", self.mqtt_addr)];
        listeners.extend(tls.into_iter().filter_map(|(key, addr)| Some((key, addr?))));
        listeners.extend(self.metrics_addr.map(|addr| ("metrics_addr", addr)));
        listeners
    }
}

/// Whether two listeners would fight over one port: the same port (port 0 picks a free one each time) on the
/// same address, or on any address where one of them is the wildcard (`0.0.0.0`, `[::]`) of the same family or,
/// for `[::]`, of both (Linux binds a v6 wildcard dual-stack).
fn overlap(a: SocketAddr, b: SocketAddr) -> bool {
    if a.port() == 0 || a.port() != b.port() {
        return false;
    }
    let wildcard_covers = |wild: SocketAddr, other: SocketAddr| {
        wild.ip().is_unspecified() && (wild.is_ipv6() || wild.is_ipv4() == other.is_ipv4())
    };
    a.ip() == b.ip() || wildcard_covers(a, b) || wildcard_covers(b, a)
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Every field, the URL redacted: a field added to `Config` must be added here (the test below says so).
        let Config {
            data_dir,
            database_url,
            http_addr,
            mqtt_addr,
            mqtt_required,
            exchange_token_ttl,
            token_cache_capacity,
            device_cache_capacity,
            writer_max_batch,
            writer_queue,
            usage_flush_interval,
            hub_capacity,
            access_token_ttl,
            refresh_token_ttl,
            http_header_timeout,
            http_body_timeout,
            http_send_timeout,
            http_keep_alive_timeout,
            http_max_connections,
            audit_retention,
            websocket_max_message_size,
            metrics_addr,
            metrics_token,
            rate_limits,
            tls_cert_file,
            tls_key_file,
            https_addr,
            mqtts_addr,
        } = self;
        f.debug_struct("Config")
            .field("data_dir", data_dir)
            .field("database_url", &database_url.as_deref().map(redact_url))
            .field("http_addr", http_addr)
            .field("mqtt_addr", mqtt_addr)
            .field("mqtt_required", mqtt_required)
            .field("exchange_token_ttl", exchange_token_ttl)
            .field("token_cache_capacity", token_cache_capacity)
            .field("device_cache_capacity", device_cache_capacity)
            .field("writer_max_batch", writer_max_batch)
            .field("writer_queue", writer_queue)
            .field("usage_flush_interval", usage_flush_interval)
            .field("hub_capacity", hub_capacity)
            .field("access_token_ttl", access_token_ttl)
            .field("refresh_token_ttl", refresh_token_ttl)
            .field("http_header_timeout", http_header_timeout)
            .field("http_body_timeout", http_body_timeout)
            .field("http_send_timeout", http_send_timeout)
            .field("http_keep_alive_timeout", http_keep_alive_timeout)
            .field("http_max_connections", http_max_connections)
            .field("audit_retention", audit_retention)
            .field("websocket_max_message_size", websocket_max_message_size)
            .field("metrics_addr", metrics_addr)
            .field("metrics_token", &metrics_token.as_ref().map(|_| "***"))
            .field("rate_limits", rate_limits)
            .field("tls_cert_file", tls_cert_file)
            .field("tls_key_file", tls_key_file)
            .field("https_addr", https_addr)
            .field("mqtts_addr", mqtts_addr)
            .finish()
    }
}

/// A database URL with its password (the userinfo's, or a `password=` parameter) replaced by `***`, for logs and
/// `tessera config show`. A URL that does not parse is not shown at all: where its password is cannot be known.
pub fn redact_url(text: &str) -> String {
    let Ok(mut url) = url::Url::parse(text) else {
        return "(a database URL that does not parse)".to_owned();
    };
    if url.password().is_some() {
        let _ = url.set_password(Some("***"));
    }
    // `password`, and any other parameter that holds one (libpq's `sslpassword`, for a client key's passphrase).
    let secret = |key: &str| key.to_ascii_lowercase().contains("password");
    if url.query_pairs().any(|(key, _)| secret(&key)) {
        let pairs: Vec<(String, String)> = url
            .query_pairs()
            .map(|(key, value)| {
                let value = if secret(&key) { "***".into() } else { value.into_owned() };
                (key.into_owned(), value)
            })
            .collect();
        url.query_pairs_mut().clear().extend_pairs(pairs);
    }
    url.to_string()
}

/// Where Tessera keeps its data.
#[derive(Debug, Clone, PartialEq)]
pub enum Database {
    /// One SQLite file: one node. Its server key lives in the data directory.
    Sqlite(PathBuf),
    /// A PostgreSQL database any number of nodes share. Its server key lives in the database.
    Postgres(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_that_cannot_work_are_named_by_their_key() {
        let defaults = Config::new(PathBuf::from("/data"));
        assert_eq!(defaults.check(), Ok(()));
        let refused = |change: fn(&mut Config)| {
            let mut config = defaults.clone();
            change(&mut config);
            config.check().unwrap_err()
        };
        assert_eq!(refused(|config| config.writer_queue = 0).key, "writer_queue");
        assert_eq!(refused(|config| config.exchange_token_ttl = Duration::ZERO).key, "exchange_token_ttl_seconds");
        assert_eq!(refused(|config| config.audit_retention = Duration::ZERO).key, "audit_retention_days");
        let short = refused(|config| config.refresh_token_ttl = Duration::from_secs(60));
        assert!(short.key == "refresh_token_ttl_seconds" && short.problem.contains("shorter"), "{short}");
        let url = refused(|config| config.database_url = Some("mysql://u:p@h/db".into()));
        assert!(url.to_string().starts_with("configuration: database_url"), "{url}");
        let huge = refused(|config| config.http_header_timeout = Duration::from_secs(u64::MAX));
        assert!(huge.key == "http_header_timeout_seconds" && huge.problem.contains("at most"), "{huge}");
        let many = refused(|config| config.writer_queue = usize::MAX);
        assert!(many.key == "writer_queue" && many.problem.contains("at most"), "{many}");
        let short = refused(|config| config.metrics_token = Some("too-short".into()));
        assert!(short.key == "metrics_token" && short.problem.contains("at least 16"), "{short}");
        let spaced = refused(|config| config.metrics_token = Some("a token with spaces in it".into()));
        assert!(spaced.key == "metrics_token" && spaced.problem.contains("without spaces"), "{spaced}");
    }

    #[test]
    fn the_debug_form_never_shows_the_metrics_token() {
        let mut config = Config::new(PathBuf::from("/data"));
        config.metrics_token = Some("scrape-me-0123456789".into());
        let shown = format!("{config:?}");
        assert!(!shown.contains("scrape-me") && shown.contains("metrics_token: Some(\"***\")"), "{shown}");
    }

    #[test]
    fn the_listener_keys_are_checked_too() {
        let defaults = Config::new(PathBuf::from("/data"));
        let refused = |change: fn(&mut Config)| {
            let mut config = defaults.clone();
            change(&mut config);
            config.check().unwrap_err()
        };
        let same_port = refused(|config| config.mqtt_addr = "127.0.0.1:8080".parse().unwrap());
        assert!(same_port.key == "mqtt_addr" && same_port.problem.contains("http_addr"), "{same_port}");
        let wildcard = refused(|config| config.mqtt_addr = "0.0.0.0:8080".parse().unwrap());
        assert_eq!(wildcard.key, "mqtt_addr", "the wildcard takes the loopback's port too");
        let metrics = refused(|config| config.metrics_addr = Some("127.0.0.1:1883".parse().unwrap()));
        assert!(metrics.key == "metrics_addr" && metrics.problem.contains("mqtt_addr"), "{metrics}");
    }

    #[test]
    fn listeners_overlap_only_on_one_port_of_a_shared_address() {
        let at = |text: &str| text.parse::<SocketAddr>().unwrap();
        assert!(overlap(at("127.0.0.1:80"), at("127.0.0.1:80")));
        assert!(overlap(at("0.0.0.0:80"), at("10.0.0.1:80")));
        assert!(overlap(at("[::1]:80"), at("[::]:80")));
        assert!(overlap(at("[::]:80"), at("127.0.0.1:80")), "a v6 wildcard is dual-stack");
        assert!(!overlap(at("0.0.0.0:80"), at("[::1]:80")), "a v4 wildcard leaves v6 alone");
        assert!(!overlap(at("127.0.0.1:80"), at("127.0.0.2:80")));
        assert!(!overlap(at("127.0.0.1:80"), at("127.0.0.1:81")));
        assert!(!overlap(at("127.0.0.1:0"), at("127.0.0.1:0")), "port 0 is a fresh port each time");
    }

    #[test]
    fn tls_settings_that_cannot_work_are_named_by_their_key() {
        let defaults = Config::new(PathBuf::from("/data"));
        let refused = |change: &dyn Fn(&mut Config)| {
            let mut config = defaults.clone();
            change(&mut config);
            config.check().unwrap_err()
        };
        let alone = refused(&|config| config.tls_cert_file = Some("/etc/tessera/cert.pem".into()));
        assert_eq!((alone.key, alone.problem.as_str()), ("tls_key_file", "must be set with tls_cert_file"));
        assert_eq!(refused(&|config| config.tls_key_file = Some("/k.pem".into())).key, "tls_cert_file");
        let listener = refused(&|config| config.mqtts_addr = Some(SocketAddr::from(([127, 0, 0, 1], 8883))));
        assert!(listener.key == "mqtts_addr" && listener.problem.contains("tls_cert_file"), "{listener}");
        let missing = refused(&|config| {
            config.tls_cert_file = Some("/nowhere/cert.pem".into());
            config.tls_key_file = Some("/nowhere/key.pem".into());
        });
        assert_eq!(missing.key, "tls_cert_file");
        assert!(missing.to_string().contains("/nowhere/cert.pem") && missing.problem.contains("cannot be read"));
    }

    #[test]
    fn the_debug_form_and_redact_url_never_show_a_password() {
        let mut config = Config::new(PathBuf::from("/data"));
        config.database_url =
            Some("postgres://tessera:s3cret@db.example:5432/tessera?password=other&sslmode=require".into());
        config.tls_key_file = Some("/etc/tessera/key.pem".into());
        let shown = format!("{config:?}");
        assert!(shown.contains("tls_key_file: Some(\"/etc/tessera/key.pem\")"), "the key's path, not the key: {shown}");
        assert!(!shown.contains("s3cret") && !shown.contains("other"), "{shown}");
        assert!(
            shown.contains("postgres://tessera:***@db.example:5432/tessera?password=***&sslmode=require"),
            "{shown}"
        );
        assert_eq!(redact_url("postgres://u@h/db"), "postgres://u@h/db", "nothing to hide");
        assert_eq!(redact_url("postgres://u@h/db?sslpassword=pass"), "postgres://u@h/db?sslpassword=***");
        assert_eq!(redact_url("sqlite:///var/t.db"), "sqlite:///var/t.db");
        assert_eq!(redact_url("postgres://u:p@ss@h/db"), "postgres://u:***@h/db", "the last @ ends the userinfo");
        assert!(!redact_url("postgres://u:secret@[bad").contains("secret"), "an unreadable URL is not shown");
    }

    #[test]
    fn database_urls_are_understood_or_refused_by_name() {
        let mut config = Config::new(PathBuf::from("/data"));
        assert_eq!(config.database(), Ok(Database::Sqlite(PathBuf::from("/data/tessera.db"))));
        config.database_url = Some("postgres://u@h/db".into());
        assert_eq!(config.database(), Ok(Database::Postgres("postgres://u@h/db".into())));
        config.database_url = Some("sqlite:///var/t.db".into());
        assert_eq!(config.database(), Ok(Database::Sqlite(PathBuf::from("/var/t.db"))));
        config.database_url = Some("mysql://u:secret@h/db".into());
        let refused = config.database().unwrap_err();
        assert!(refused.contains("'mysql'") && !refused.contains("secret"), "{refused}");
    }
}
