//! Tessera's server: everything between the wire and the store. It opens the data directory, bootstraps the first
//! account, verifies tokens (cached), runs the batching writer, and serves the HTTP dialects. The binary only
//! parses configuration and calls [`start`].

mod accept;
pub mod app;
pub mod audit;
pub mod backup;
pub mod bootstrap;
mod cache;
pub mod cluster;
pub mod config;
pub mod data;
pub mod data_lock;
pub mod entropy;
pub mod error;
pub mod http;
pub mod hub;
pub mod last_readings;
pub mod live;
pub mod metrics;
pub mod mqtt;
pub mod operator;
pub mod peers;
pub mod people;
pub mod quota;
mod server;
pub mod teams;
pub mod time;
pub mod tls;
pub mod tokens;
pub mod writer;

pub use bootstrap::Credentials;
pub use config::{Config, ConfigError, Database};
pub use server::{Server, StartError, start};
