//! The API suite again, each test on a PostgreSQL schema of its own, plus what only several nodes can show
//! (`cluster`). Compiled when `TESSERA_TEST_POSTGRES_URL` is set (see `build.rs`); otherwise one test says it was
//! skipped.

#[cfg(postgres_tests)]
pub const STORE: helpers::StoreKind = helpers::StoreKind::Postgres;

// The modules of `tests/api`, compiled here against `crate::STORE`.
#[cfg(postgres_tests)]
#[path = "../api/allthingstalk.rs"]
mod allthingstalk;
#[cfg(postgres_tests)]
mod cluster;
#[cfg(postgres_tests)]
#[path = "../api/console.rs"]
mod console;
#[cfg(postgres_tests)]
#[path = "../api/device_level.rs"]
mod device_level;
#[cfg(postgres_tests)]
#[path = "../api/helpers.rs"]
mod helpers;
#[cfg(postgres_tests)]
#[path = "../api/horde.rs"]
mod horde;
#[cfg(postgres_tests)]
#[path = "../api/lifecycle.rs"]
mod lifecycle;
#[cfg(postgres_tests)]
#[path = "../api/metrics.rs"]
mod metrics;
#[cfg(postgres_tests)]
#[path = "../api/mqtt.rs"]
mod mqtt;
#[cfg(postgres_tests)]
#[path = "../api/native.rs"]
mod native;
#[cfg(postgres_tests)]
#[path = "../api/people.rs"]
mod people;
#[cfg(postgres_tests)]
#[path = "../api/python_clients.rs"]
mod python_clients;
#[cfg(postgres_tests)]
#[path = "../api/quota.rs"]
mod quota;
#[cfg(postgres_tests)]
#[path = "../api/teams.rs"]
mod teams;
#[cfg(postgres_tests)]
#[path = "../api/timestamps.rs"]
mod timestamps;
#[cfg(postgres_tests)]
#[path = "../api/token_management.rs"]
mod token_management;
#[cfg(postgres_tests)]
#[path = "../api/tokens.rs"]
mod tokens;
#[cfg(postgres_tests)]
#[path = "../api/ubidots_data.rs"]
mod ubidots_data;
#[cfg(postgres_tests)]
#[path = "../api/ubidots_datasources.rs"]
mod ubidots_datasources;
#[cfg(postgres_tests)]
#[path = "../api/ubidots_seed.rs"]
mod ubidots_seed;

#[cfg(not(postgres_tests))]
#[test]
fn api_suite_on_postgresql_skipped() {
    use std::io::Write;
    // Past the harness's capture, so the skip shows in every run's output.
    let _ = writeln!(
        std::io::stderr(),
        "api_postgres: the API suite on PostgreSQL was skipped (TESSERA_TEST_POSTGRES_URL was not set at build time)"
    );
}
