//! The server's configuration: one typed struct, built by the binary from flags, `TESSERA_*` variables and an
//! optional TOML file, and passed down. Nothing reads configuration from globals.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone)]
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
