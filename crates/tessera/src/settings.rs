//! Configuration sources for the binary: flags and `TESSERA_*` variables (through clap), and an optional TOML
//! file. Flags and variables win over the file; the file wins over defaults.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use serde::Deserialize;
use tessera_server::Config;

/// Flags every command shares.
#[derive(Debug, clap::Args)]
pub struct CommonArgs {
    /// Directory for the database and server key [default: ./tessera-data]
    #[arg(long, env = "TESSERA_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// The database: postgres://USER@HOST/DB to share one among several nodes, or sqlite://PATH
    /// [default: SQLite in the data directory]
    #[arg(long, env = "TESSERA_DATABASE_URL", value_name = "URL")]
    pub database_url: Option<String>,
    /// A TOML file with settings (keys as in the README)
    #[arg(long, env = "TESSERA_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// The TOML file's keys. Unknown keys are refused, so a typo is reported instead of silently ignored.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    data_dir: Option<PathBuf>,
    database_url: Option<String>,
    http_addr: Option<std::net::SocketAddr>,
    mqtt_addr: Option<std::net::SocketAddr>,
    exchange_token_ttl_seconds: Option<u64>,
    token_cache_capacity: Option<u64>,
    device_cache_capacity: Option<u64>,
    writer_max_batch: Option<usize>,
    writer_queue: Option<usize>,
    access_token_ttl_seconds: Option<u64>,
    refresh_token_ttl_seconds: Option<u64>,
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
        config
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

        std::fs::write(&path, "data_dri = \"typo\"\n").unwrap();
        let error = Settings::load(&CommonArgs { data_dir: None, database_url: None, config: Some(path) }).unwrap_err();
        assert!(format!("{error:#}").contains("unknown field `data_dri`"), "{error:#}");
    }
}
