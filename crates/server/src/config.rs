//! The server's configuration: one typed struct, built by the binary from flags, `TESSERA_*` variables and an
//! optional TOML file, and passed down. Nothing reads configuration from globals.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Config {
    /// Holds the SQLite database and the server key; created on first start.
    pub data_dir: PathBuf,
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
}

impl Config {
    /// The defaults `tessera serve` uses with no flags.
    pub fn new(data_dir: PathBuf) -> Config {
        Config {
            data_dir,
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
        }
    }

    pub fn database_path(&self) -> PathBuf {
        self.data_dir.join("tessera.db")
    }
}
