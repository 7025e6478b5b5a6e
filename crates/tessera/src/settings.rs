//! Configuration sources for the binary: flags and `TESSERA_*` variables (through clap), and an optional TOML
//! file. Flags and variables win over the file; the file wins over defaults.

use std::num::{NonZeroU64, NonZeroUsize};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use serde::Deserialize;
use tessera_core::Quota;
use tessera_server::Config;
use tessera_server::quota::RateLimits;

/// Flags every command shares.
#[derive(Debug, clap::Args)]
pub struct CommonArgs {
    /// Directory for the database and server key [default: ./tessera-data]
    #[arg(long, env = "TESSERA_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// The database: postgres://USER@HOST/DB to share one among several nodes, or sqlite://PATH
    /// [default: SQLite in the data directory]
    #[arg(long, env = "TESSERA_DATABASE_URL", value_name = "URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// A TOML file with settings (keys as in the README)
    #[arg(long, env = "TESSERA_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// How slow an HTTP client may be, and how many may be connected (`serve` only). Each also has a TOML key of the
/// same name.
#[derive(Debug, Default, clap::Args)]
pub struct HttpLimitArgs {
    /// Seconds a client has to send a request's line and headers [default: 20]
    #[arg(long, env = "TESSERA_HTTP_HEADER_TIMEOUT_SECONDS", value_name = "SECONDS")]
    pub http_header_timeout_seconds: Option<NonZeroU64>,
    /// Seconds a request body may go without a byte arriving [default: 20]
    #[arg(long, env = "TESSERA_HTTP_BODY_TIMEOUT_SECONDS", value_name = "SECONDS")]
    pub http_body_timeout_seconds: Option<NonZeroU64>,
    /// Seconds an answer may wait for the client to take a byte [default: 20]
    #[arg(long, env = "TESSERA_HTTP_SEND_TIMEOUT_SECONDS", value_name = "SECONDS")]
    pub http_send_timeout_seconds: Option<NonZeroU64>,
    /// Seconds a connection may stay open between requests [default: 75]
    #[arg(long, env = "TESSERA_HTTP_KEEP_ALIVE_TIMEOUT_SECONDS", value_name = "SECONDS")]
    pub http_keep_alive_timeout_seconds: Option<NonZeroU64>,
    /// Most HTTP connections (WebSockets included) open at once [default: 10000]
    #[arg(long, env = "TESSERA_HTTP_MAX_CONNECTIONS", value_name = "COUNT")]
    pub http_max_connections: Option<NonZeroUsize>,
    /// Largest WebSocket message or frame a client may send on a Horde /from stream [default: 4096]
    #[arg(long, env = "TESSERA_WEBSOCKET_MAX_MESSAGE_BYTES", value_name = "BYTES")]
    pub websocket_max_message_bytes: Option<NonZeroUsize>,
}

/// TLS for HTTPS and MQTTS (`serve` only). Each also has a TOML key of the same name. Naming both files turns
/// TLS on; the listeners then default to 127.0.0.1:8443 (HTTPS) and 127.0.0.1:8883 (MQTTS).
#[derive(Debug, Default, clap::Args)]
pub struct TlsArgs {
    /// The certificate chain (PEM, the server's certificate first), reloaded when it changes
    #[arg(long, env = "TESSERA_TLS_CERT_FILE", value_name = "FILE")]
    pub tls_cert_file: Option<PathBuf>,
    /// The certificate's private key (PEM), reloaded when it changes
    #[arg(long, env = "TESSERA_TLS_KEY_FILE", value_name = "FILE")]
    pub tls_key_file: Option<PathBuf>,
    /// Address for HTTPS, serving the same routes as HTTP [default with TLS: 127.0.0.1:8443]
    #[arg(long, env = "TESSERA_HTTPS_ADDR", value_name = "ADDR")]
    pub https_addr: Option<std::net::SocketAddr>,
    /// Address for MQTT over TLS [default with TLS: 127.0.0.1:8883]
    #[arg(long, env = "TESSERA_MQTTS_ADDR", value_name = "ADDR")]
    pub mqtts_addr: Option<std::net::SocketAddr>,
}

/// Where HTTPS listens when TLS is configured and no address is given.
pub const DEFAULT_HTTPS_ADDR: ([u8; 4], u16) = ([127, 0, 0, 1], 8443);
/// Where MQTTS listens when TLS is configured and no address is given: the port of MQTT over TLS (IANA), which
/// Ubidots' and AllThingsTalk's devices use.
pub const DEFAULT_MQTTS_ADDR: ([u8; 4], u16) = ([127, 0, 0, 1], 8883);

/// A default quota as written in a flag, a variable or the TOML file: `REQUESTS/SECONDS` (`20/5`: 20 requests in
/// every 5 s) or `unlimited`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct QuotaArg(pub Option<Quota>);

impl std::str::FromStr for QuotaArg {
    type Err = String;

    fn from_str(text: &str) -> Result<QuotaArg, String> {
        let text = text.trim();
        if text.eq_ignore_ascii_case("unlimited") {
            return Ok(QuotaArg(None));
        }
        let wrong =
            || format!("'{text}' is no quota: write REQUESTS/SECONDS (20/5 is 20 requests every 5 s) or unlimited");
        let (requests, seconds) = text.split_once('/').ok_or_else(wrong)?;
        let requests: u32 = requests.trim().parse().map_err(|_| wrong())?;
        let seconds: u32 = seconds.trim().trim_end_matches('s').parse().map_err(|_| wrong())?;
        // Zero is refused: no requests would make tokens that never work, no window is no quota.
        Quota::new(requests, seconds).map(|quota| QuotaArg(Some(quota))).ok_or_else(|| {
            format!("'{text}': both the requests and the seconds must be above zero (or write unlimited)")
        })
    }
}

impl TryFrom<String> for QuotaArg {
    type Error = String;

    fn try_from(text: String) -> Result<QuotaArg, String> {
        text.parse()
    }
}

/// The default request quota of each kind of token (`serve` only; each also has a TOML key of the same name). A
/// token's own quota, set through the API, wins over its kind's.
#[derive(Debug, Default, clap::Args)]
pub struct RateLimitArgs {
    /// Default quota of device tokens: REQUESTS/SECONDS or unlimited [default: 20/5]
    #[arg(long, env = "TESSERA_RATE_LIMIT_DEVICE", value_name = "QUOTA")]
    pub rate_limit_device: Option<QuotaArg>,
    /// Default quota of ground tokens [default: 500/5]
    #[arg(long, env = "TESSERA_RATE_LIMIT_GROUND", value_name = "QUOTA")]
    pub rate_limit_ground: Option<QuotaArg>,
    /// Default quota of collection (Ubidots organization) tokens [default: 500/5]
    #[arg(long, env = "TESSERA_RATE_LIMIT_COLLECTION", value_name = "QUOTA")]
    pub rate_limit_collection: Option<QuotaArg>,
    /// Default quota of account tokens (Ubidots auth/token) [default: 500/5]
    #[arg(long, env = "TESSERA_RATE_LIMIT_ACCOUNT", value_name = "QUOTA")]
    pub rate_limit_account: Option<QuotaArg>,
    /// Default quota of Horde resource tokens [default: 500/5]
    #[arg(long, env = "TESSERA_RATE_LIMIT_RESOURCE", value_name = "QUOTA")]
    pub rate_limit_resource: Option<QuotaArg>,
    /// Default quota of API keys [default: unlimited]
    #[arg(long, env = "TESSERA_RATE_LIMIT_API_KEY", value_name = "QUOTA")]
    pub rate_limit_api_key: Option<QuotaArg>,
    /// Default quota of user sessions (the console, /v1/me, Horde /tokens) [default: unlimited]
    #[arg(long, env = "TESSERA_RATE_LIMIT_USER_SESSION", value_name = "QUOTA")]
    pub rate_limit_user_session: Option<QuotaArg>,
}

/// The TOML file's keys. Unknown keys are refused, so a typo is reported instead of silently ignored.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    data_dir: Option<PathBuf>,
    database_url: Option<String>,
    http_addr: Option<std::net::SocketAddr>,
    mqtt_addr: Option<std::net::SocketAddr>,
    metrics_addr: Option<std::net::SocketAddr>,
    metrics_token: Option<String>,
    exchange_token_ttl_seconds: Option<u64>,
    token_cache_capacity: Option<u64>,
    device_cache_capacity: Option<u64>,
    writer_max_batch: Option<usize>,
    writer_queue: Option<usize>,
    access_token_ttl_seconds: Option<u64>,
    refresh_token_ttl_seconds: Option<u64>,
    /// How long the audit trail keeps an entry (zero is refused: the trail would keep nothing).
    audit_retention_days: Option<NonZeroU64>,
    // Zero is refused: a zero timeout would cut off every client, a zero bound would accept none.
    http_header_timeout_seconds: Option<NonZeroU64>,
    http_body_timeout_seconds: Option<NonZeroU64>,
    http_send_timeout_seconds: Option<NonZeroU64>,
    http_keep_alive_timeout_seconds: Option<NonZeroU64>,
    http_max_connections: Option<NonZeroUsize>,
    websocket_max_message_bytes: Option<NonZeroUsize>,
    rate_limit_device: Option<QuotaArg>,
    rate_limit_ground: Option<QuotaArg>,
    rate_limit_collection: Option<QuotaArg>,
    rate_limit_account: Option<QuotaArg>,
    rate_limit_resource: Option<QuotaArg>,
    rate_limit_api_key: Option<QuotaArg>,
    rate_limit_user_session: Option<QuotaArg>,
    tls_cert_file: Option<PathBuf>,
    tls_key_file: Option<PathBuf>,
    https_addr: Option<std::net::SocketAddr>,
    mqtts_addr: Option<std::net::SocketAddr>,
}

impl Settings {
    /// The file's settings (if any) overridden by flags and environment variables.
    pub fn load(common: &CommonArgs) -> anyhow::Result<Settings> {
        let mut settings = match &common.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading the configuration file {}", path.display()))?;
                toml::from_str(&text).with_context(|| format!("parsing the configuration file {}", path.display()))?
            }
            None => Settings::default(),
        };
        if let Some(data_dir) = &common.data_dir {
            settings.data_dir = Some(data_dir.clone());
        }
        if let Some(url) = &common.database_url {
            settings.database_url = Some(url.clone());
        }
        Ok(settings)
    }

    /// These settings with the HTTP limits given as flags or variables put over the file's.
    pub fn with_http_limits(mut self, limits: &HttpLimitArgs) -> Settings {
        let HttpLimitArgs {
            http_header_timeout_seconds,
            http_body_timeout_seconds,
            http_send_timeout_seconds,
            http_keep_alive_timeout_seconds,
            http_max_connections,
            websocket_max_message_bytes,
        } = *limits;
        self.http_header_timeout_seconds = http_header_timeout_seconds.or(self.http_header_timeout_seconds);
        self.http_body_timeout_seconds = http_body_timeout_seconds.or(self.http_body_timeout_seconds);
        self.http_send_timeout_seconds = http_send_timeout_seconds.or(self.http_send_timeout_seconds);
        self.http_keep_alive_timeout_seconds = http_keep_alive_timeout_seconds.or(self.http_keep_alive_timeout_seconds);
        self.http_max_connections = http_max_connections.or(self.http_max_connections);
        self.websocket_max_message_bytes = websocket_max_message_bytes.or(self.websocket_max_message_bytes);
        self
    }

    /// These settings with the default quotas given as flags or variables put over the file's.
    pub fn with_rate_limits(mut self, limits: &RateLimitArgs) -> Settings {
        let RateLimitArgs {
            rate_limit_device,
            rate_limit_ground,
            rate_limit_collection,
            rate_limit_account,
            rate_limit_resource,
            rate_limit_api_key,
            rate_limit_user_session,
        } = *limits;
        self.rate_limit_device = rate_limit_device.or(self.rate_limit_device);
        self.rate_limit_ground = rate_limit_ground.or(self.rate_limit_ground);
        self.rate_limit_collection = rate_limit_collection.or(self.rate_limit_collection);
        self.rate_limit_account = rate_limit_account.or(self.rate_limit_account);
        self.rate_limit_resource = rate_limit_resource.or(self.rate_limit_resource);
        self.rate_limit_api_key = rate_limit_api_key.or(self.rate_limit_api_key);
        self.rate_limit_user_session = rate_limit_user_session.or(self.rate_limit_user_session);
        self
    }

    /// These settings with the TLS files and addresses given as flags or variables put over the file's.
    pub fn with_tls(mut self, tls: &TlsArgs) -> Settings {
        let TlsArgs { tls_cert_file, tls_key_file, https_addr, mqtts_addr } = tls;
        self.tls_cert_file = tls_cert_file.clone().or(self.tls_cert_file);
        self.tls_key_file = tls_key_file.clone().or(self.tls_key_file);
        self.https_addr = https_addr.or(self.https_addr);
        self.mqtts_addr = mqtts_addr.or(self.mqtts_addr);
        self
    }

    pub fn into_config(self) -> Config {
        let mut config = Config::new(self.data_dir.unwrap_or_else(|| PathBuf::from("tessera-data")));
        config.database_url = self.database_url;
        if let Some(http_addr) = self.http_addr {
            config.http_addr = http_addr;
        }
        if let Some(mqtt_addr) = self.mqtt_addr {
            config.mqtt_addr = mqtt_addr;
            config.mqtt_required = true;
        }
        config.metrics_addr = self.metrics_addr;
        config.metrics_token = self.metrics_token;
        if let Some(seconds) = self.exchange_token_ttl_seconds {
            config.exchange_token_ttl = Duration::from_secs(seconds);
        }
        if let Some(capacity) = self.token_cache_capacity {
            config.token_cache_capacity = capacity;
        }
        if let Some(capacity) = self.device_cache_capacity {
            config.device_cache_capacity = capacity;
        }
        if let Some(batch) = self.writer_max_batch {
            config.writer_max_batch = batch;
        }
        if let Some(queue) = self.writer_queue {
            config.writer_queue = queue;
        }
        if let Some(seconds) = self.access_token_ttl_seconds {
            config.access_token_ttl = Duration::from_secs(seconds);
        }
        if let Some(seconds) = self.refresh_token_ttl_seconds {
            config.refresh_token_ttl = Duration::from_secs(seconds);
        }
        if let Some(days) = self.audit_retention_days {
            config.audit_retention = Duration::from_secs(days.get().saturating_mul(86_400));
        }
        let seconds = |seconds: NonZeroU64| Duration::from_secs(seconds.get());
        if let Some(timeout) = self.http_header_timeout_seconds {
            config.http_header_timeout = seconds(timeout);
        }
        if let Some(timeout) = self.http_body_timeout_seconds {
            config.http_body_timeout = seconds(timeout);
        }
        if let Some(timeout) = self.http_send_timeout_seconds {
            config.http_send_timeout = seconds(timeout);
        }
        if let Some(timeout) = self.http_keep_alive_timeout_seconds {
            config.http_keep_alive_timeout = seconds(timeout);
        }
        if let Some(bound) = self.http_max_connections {
            config.http_max_connections = bound.get();
        }
        if let Some(bytes) = self.websocket_max_message_bytes {
            config.websocket_max_message_size = bytes.get();
        }
        let RateLimits { device, ground, collection, account, resource, api_key, user_session } = config.rate_limits;
        let or = |set: Option<QuotaArg>, default: Option<Quota>| set.map_or(default, |QuotaArg(quota)| quota);
        config.rate_limits = RateLimits {
            device: or(self.rate_limit_device, device),
            ground: or(self.rate_limit_ground, ground),
            collection: or(self.rate_limit_collection, collection),
            account: or(self.rate_limit_account, account),
            resource: or(self.rate_limit_resource, resource),
            api_key: or(self.rate_limit_api_key, api_key),
            user_session: or(self.rate_limit_user_session, user_session),
        };
        // With TLS configured (either file named: `Config::check` refuses one without the other), both TLS
        // listeners serve, on their defaults unless given; without it, an address given alone is kept for
        // `Config::check` to refuse by name.
        let tls = self.tls_cert_file.is_some() || self.tls_key_file.is_some();
        config.tls_cert_file = self.tls_cert_file;
        config.tls_key_file = self.tls_key_file;
        config.https_addr = self.https_addr.or_else(|| tls.then(|| DEFAULT_HTTPS_ADDR.into()));
        config.mqtts_addr = self.mqtts_addr.or_else(|| tls.then(|| DEFAULT_MQTTS_ADDR.into()));
        config
    }
}

/// The effective configuration as `tessera config show` prints it: one `key = value` line per key, TOML that
/// reads back as the same configuration; TOML has no null, so a key that is not set is a comment.
pub fn as_toml(shown: &[(&'static str, serde_json::Value)]) -> String {
    shown
        .iter()
        .map(|(key, value)| match value {
            serde_json::Value::Null => format!("# {key} is not set\n"),
            value => format!("{key} = {value}\n"),
        })
        .collect()
}

/// The configuration as its TOML keys, each with the value in force (the database URL without its password), for
/// `tessera config show`. Every key a file may set is here, so what is shown can be pasted into a file.
pub fn effective(config: &Config) -> Vec<(&'static str, serde_json::Value)> {
    use serde_json::json;
    let seconds = |duration: Duration| json!(duration.as_secs());
    let quota = |quota: Option<Quota>| match quota {
        Some(Quota { requests, window_seconds }) => json!(format!("{requests}/{window_seconds}")),
        None => json!("unlimited"),
    };
    let limits = &config.rate_limits;
    let mut shown = vec![
        ("data_dir", json!(config.data_dir.display().to_string())),
        ("database_url", json!(config.database_url.as_deref().map(tessera_server::config::redact_url))),
        ("http_addr", json!(config.http_addr.to_string())),
        ("mqtt_addr", json!(config.mqtt_addr.to_string())),
        ("metrics_addr", json!(config.metrics_addr.map(|addr| addr.to_string()))),
        // Redacted as the database URL's password is; shown set, so an operator can tell it is.
        ("metrics_token", json!(config.metrics_token.as_ref().map(|_| "***"))),
        ("exchange_token_ttl_seconds", seconds(config.exchange_token_ttl)),
        ("token_cache_capacity", json!(config.token_cache_capacity)),
        ("device_cache_capacity", json!(config.device_cache_capacity)),
        ("writer_max_batch", json!(config.writer_max_batch)),
        ("writer_queue", json!(config.writer_queue)),
        ("access_token_ttl_seconds", seconds(config.access_token_ttl)),
        ("refresh_token_ttl_seconds", seconds(config.refresh_token_ttl)),
        ("audit_retention_days", json!(config.audit_retention.as_secs() / 86_400)),
        ("http_header_timeout_seconds", seconds(config.http_header_timeout)),
        ("http_body_timeout_seconds", seconds(config.http_body_timeout)),
        ("http_send_timeout_seconds", seconds(config.http_send_timeout)),
        ("http_keep_alive_timeout_seconds", seconds(config.http_keep_alive_timeout)),
        ("http_max_connections", json!(config.http_max_connections)),
        ("websocket_max_message_bytes", json!(config.websocket_max_message_size)),
        ("rate_limit_device", quota(limits.device)),
        ("rate_limit_ground", quota(limits.ground)),
        ("rate_limit_collection", quota(limits.collection)),
        ("rate_limit_account", quota(limits.account)),
        ("rate_limit_resource", quota(limits.resource)),
        ("rate_limit_api_key", quota(limits.api_key)),
        ("rate_limit_user_session", quota(limits.user_session)),
    ];
    // Only when TLS is on: TOML has no null to write "off" with, and the lines must read back as a file.
    let path = |path: &PathBuf| json!(path.display().to_string());
    let address = |addr: std::net::SocketAddr| json!(addr.to_string());
    shown.extend(config.tls_cert_file.as_ref().map(|file| ("tls_cert_file", path(file))));
    shown.extend(config.tls_key_file.as_ref().map(|file| ("tls_key_file", path(file))));
    shown.extend(config.https_addr.map(|addr| ("https_addr", address(addr))));
    shown.extend(config.mqtts_addr.map(|addr| ("mqtts_addr", address(addr))));
    shown
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_limits_come_from_the_file_and_flags_win() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("tessera.toml");
        std::fs::write(
            &path,
            "http_header_timeout_seconds = 5\nhttp_body_timeout_seconds = 6\nhttp_send_timeout_seconds = 7\n\
             http_keep_alive_timeout_seconds = 8\nhttp_max_connections = 9\nwebsocket_max_message_bytes = 10\n",
        )
        .unwrap();
        let common = CommonArgs { data_dir: None, database_url: None, config: Some(path) };
        let config = Settings::load(&common).unwrap().with_http_limits(&HttpLimitArgs::default()).into_config();
        assert_eq!(config.http_header_timeout, Duration::from_secs(5));
        assert_eq!(config.http_body_timeout, Duration::from_secs(6));
        assert_eq!(config.http_send_timeout, Duration::from_secs(7));
        assert_eq!(config.http_keep_alive_timeout, Duration::from_secs(8));
        assert_eq!(config.http_max_connections, 9);
        assert_eq!(config.websocket_max_message_size, 10);

        let flags = HttpLimitArgs {
            http_keep_alive_timeout_seconds: NonZeroU64::new(30),
            http_max_connections: NonZeroUsize::new(500),
            ..HttpLimitArgs::default()
        };
        let config = Settings::load(&common).unwrap().with_http_limits(&flags).into_config();
        assert_eq!(config.http_keep_alive_timeout, Duration::from_secs(30));
        assert_eq!(config.http_max_connections, 500);
        assert_eq!(config.http_header_timeout, Duration::from_secs(5));

        let defaults = Settings::default().into_config();
        assert_eq!(defaults.http_header_timeout, Config::new(PathBuf::new()).http_header_timeout);
    }

    #[test]
    fn rate_limits_come_from_the_file_and_flags_win() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("tessera.toml");
        std::fs::write(&path, "rate_limit_device = \"4/1\"\nrate_limit_collection = \"unlimited\"\n").unwrap();
        let common = CommonArgs { data_dir: None, database_url: None, config: Some(path.clone()) };
        let config = Settings::load(&common).unwrap().with_rate_limits(&RateLimitArgs::default()).into_config();
        assert_eq!(config.rate_limits.device, Some(Quota { requests: 4, window_seconds: 1 }));
        assert_eq!(config.rate_limits.collection, None);
        assert_eq!(config.rate_limits.ground, RateLimits::default().ground, "a kind not named keeps its default");

        let flags = RateLimitArgs {
            rate_limit_device: Some("100/60s".parse().unwrap()),
            rate_limit_api_key: Some("10/1".parse().unwrap()),
            ..RateLimitArgs::default()
        };
        let config = Settings::load(&common).unwrap().with_rate_limits(&flags).into_config();
        assert_eq!(config.rate_limits.device, Some(Quota { requests: 100, window_seconds: 60 }));
        assert_eq!(config.rate_limits.api_key, Some(Quota { requests: 10, window_seconds: 1 }));
        assert_eq!(config.rate_limits.collection, None, "the file's, where no flag says otherwise");

        for wrong in ["0/5", "5/0", "5", "five/5", "-1/5", ""] {
            let refused = wrong.parse::<QuotaArg>().unwrap_err();
            assert!(refused.contains("quota") || refused.contains("above zero"), "{wrong}: {refused}");
        }
        std::fs::write(&path, "rate_limit_ground = \"0/5\"\n").unwrap();
        let error = Settings::load(&common).unwrap_err();
        assert!(format!("{error:#}").contains("above zero"), "{error:#}");
    }

    #[test]
    fn the_effective_configuration_reads_back_as_itself_and_hides_the_password() {
        let mut config = Config::new(PathBuf::from("/data"));
        config.database_url = Some("postgres://tessera:s3cret@db/tessera".into());
        config.http_max_connections = 500;
        let shown = effective(&config);
        let text = as_toml(&shown);
        assert!(!text.contains("s3cret") && text.contains("postgres://tessera:***@db/tessera"), "{text}");
        // Pasted into a file (the password put back), it makes the same configuration.
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("tessera.toml");
        std::fs::write(&path, text.replace("***", "s3cret")).unwrap();
        let read = Settings::load(&CommonArgs { data_dir: None, database_url: None, config: Some(path) })
            .unwrap()
            .into_config();
        assert_eq!(format!("{read:?}"), format!("{:?}", Config { mqtt_required: true, ..config }));
    }

    #[test]
    fn tls_comes_from_the_file_and_flags_and_turns_both_tls_listeners_on() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("tessera.toml");
        std::fs::write(&path, "tls_cert_file = \"/etc/tessera/cert.pem\"\ntls_key_file = \"/etc/tessera/key.pem\"\n")
            .unwrap();
        let common = CommonArgs { data_dir: None, database_url: None, config: Some(path.clone()) };
        let config = Settings::load(&common).unwrap().with_tls(&TlsArgs::default()).into_config();
        assert_eq!(config.tls_cert_file, Some(PathBuf::from("/etc/tessera/cert.pem")));
        assert_eq!(config.tls_key_file, Some(PathBuf::from("/etc/tessera/key.pem")));
        assert_eq!(config.https_addr, Some(DEFAULT_HTTPS_ADDR.into()));
        assert_eq!(config.mqtts_addr, Some(DEFAULT_MQTTS_ADDR.into()), "8883 on loopback");
        assert_eq!(config.http_addr, Config::new(PathBuf::new()).http_addr, "plain HTTP stays where it was");

        let flags = TlsArgs {
            tls_cert_file: Some("/run/cert.pem".into()),
            mqtts_addr: Some("0.0.0.0:8883".parse().unwrap()),
            ..TlsArgs::default()
        };
        let config = Settings::load(&common).unwrap().with_tls(&flags).into_config();
        assert_eq!(config.tls_cert_file, Some(PathBuf::from("/run/cert.pem")), "the flag wins");
        assert_eq!(config.tls_key_file, Some(PathBuf::from("/etc/tessera/key.pem")), "the file's, unflagged");
        assert_eq!(config.mqtts_addr, Some("0.0.0.0:8883".parse().unwrap()));

        let off = Settings::default().with_tls(&TlsArgs::default()).into_config();
        assert_eq!((off.tls_cert_file, off.https_addr, off.mqtts_addr), (None, None, None), "no TLS, no listeners");
        let keys: Vec<&str> = effective(&Config::new(PathBuf::new())).iter().map(|(key, _)| *key).collect();
        assert!(!keys.iter().any(|key| key.contains("tls") || key.contains("https") || key.contains("mqtts")));

        // With TLS on, `config show` prints its four keys, and they read back as the same configuration.
        let mut config = Settings::load(&common).unwrap().into_config();
        config.database_url = Some("sqlite:///var/tessera.db".into());
        let text = as_toml(&effective(&config));
        assert!(text.contains("mqtts_addr = \"127.0.0.1:8883\"") && text.contains("tls_key_file"), "{text}");
        std::fs::write(&path, &text).unwrap();
        let read = Settings::load(&common).unwrap().into_config();
        assert_eq!(format!("{read:?}"), format!("{:?}", Config { mqtt_required: true, ..config }));
    }

    #[test]
    fn flags_override_the_file_and_unknown_keys_are_refused() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("tessera.toml");
        std::fs::write(&path, "data_dir = \"/from/file\"\nhttp_addr = \"127.0.0.1:9999\"\n").unwrap();
        let from_file =
            Settings::load(&CommonArgs { data_dir: None, database_url: None, config: Some(path.clone()) }).unwrap();
        let config = from_file.into_config();
        assert_eq!(config.data_dir, PathBuf::from("/from/file"));
        assert_eq!(config.http_addr.port(), 9999);

        let overridden = Settings::load(&CommonArgs {
            data_dir: Some("/from/flag".into()),
            database_url: None,
            config: Some(path.clone()),
        })
        .unwrap();
        assert_eq!(overridden.into_config().data_dir, PathBuf::from("/from/flag"));

        std::fs::write(&path, "http_max_connections = 0\n").unwrap();
        let error =
            Settings::load(&CommonArgs { data_dir: None, database_url: None, config: Some(path.clone()) }).unwrap_err();
        assert!(format!("{error:#}").contains("nonzero"), "{error:#}");

        std::fs::write(&path, "audit_retention_days = 30\n").unwrap();
        let config = Settings::load(&CommonArgs { data_dir: None, database_url: None, config: Some(path.clone()) })
            .unwrap()
            .into_config();
        assert_eq!(config.audit_retention, Duration::from_secs(30 * 86_400));

        std::fs::write(&path, "data_dri = \"typo\"\n").unwrap();
        let error = Settings::load(&CommonArgs { data_dir: None, database_url: None, config: Some(path) }).unwrap_err();
        assert!(format!("{error:#}").contains("unknown field `data_dri`"), "{error:#}");
    }
}
