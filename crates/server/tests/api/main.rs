//! Integration tests of the HTTP API: each test starts its own Tessera on port 0 with its own data directory.

pub const STORE: helpers::StoreKind = helpers::StoreKind::Sqlite;

mod allthingstalk;
mod console;
mod contract;
mod device_level;
mod helpers;
mod horde;
mod lifecycle;
mod limits;
mod metrics;
mod mqtt;
mod native;
mod people;
mod python_clients;
mod quota;
mod teams;
mod timestamps;
mod tls;
mod token_management;
mod tokens;
mod ubidots_data;
mod ubidots_datasources;
mod ubidots_seed;
