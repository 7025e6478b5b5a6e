//! A full store: devices and live tokens added beside the benchmark's own, written straight into the store in
//! large transactions (as a fleet is provisioned), so that ingest can be measured against a store of a million of
//! each. They are real rows: devices of the benchmark's organization, and organization tokens for it whose secrets
//! nobody keeps.

use std::time::{Duration, Instant};

use anyhow::Context;
use tessera_core::{DeviceId, Label, Scope, Secret, TokenId, TokenKind};
use tessera_server::entropy::{new_id, new_secret};
use tessera_store::{Device, TokenRecord};

/// Rows per transaction: large enough that commits cost nothing, small enough to hold in memory.
const CHUNK: usize = 10_000;

/// Adds `count` devices and `count` live tokens to the organization that `sample_token` (one of the benchmark's
/// tokens) belongs to, through the store of `config`. Calls `progress` with the rows added so far; answers how long
/// it took.
pub async fn populate(
    config: &tessera_server::Config,
    sample_token: &str,
    count: usize,
    progress: impl Fn(usize),
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let opened = tessera_server::bootstrap::open_store(config).await?;
    let store = opened.store.clone();
    let sample = Secret::parse(sample_token).map_err(|error| anyhow::anyhow!("a benchmark token: {error}"))?;
    let sample = store.token_by_digest(&opened.key.digest(&sample)).await.context("the benchmark's token")?;
    let Scope::Collection(organization) = sample.scope else {
        anyhow::bail!("the benchmark's token is not an organization token");
    };
    let now = tessera_server::time::now_ms();
    let mut added = 0;
    while added < count {
        let size = CHUNK.min(count - added);
        let devices: Vec<Device> = (added..added + size)
            .map(|n| fleet_device(sample.account, organization, n, now))
            .collect::<anyhow::Result<_>>()?;
        let tokens: Vec<TokenRecord> = (added..added + size)
            .map(|n| TokenRecord {
                name: format!("fleet token {n}"),
                ..TokenRecord::new(
                    TokenId(new_id()),
                    sample.account,
                    TokenKind::Collection,
                    opened.key.digest(&new_secret(TokenKind::Collection)),
                    Scope::Collection(organization),
                    sample.creator,
                    now,
                )
            })
            .collect();
        store.insert_devices(&devices).await?;
        store.insert_tokens(&tokens, &[]).await?;
        added += size;
        progress(added);
    }
    store.close().await;
    Ok(started.elapsed())
}

/// Device `fleet-{n}` of `collection`, as a provisioning tool would write it.
pub fn fleet_device(
    account: tessera_core::AccountId,
    collection: tessera_core::CollectionId,
    n: usize,
    now: i64,
) -> anyhow::Result<Device> {
    Ok(Device {
        id: DeviceId(new_id()),
        account,
        collection,
        label: Label::parse(&format!("fleet-{n}")).map_err(|error| anyhow::anyhow!("{error}"))?,
        name: format!("fleet device {n}"),
        imsi: None,
        imei: None,
        tags: Default::default(),
        created_at_ms: now,
        last_seen_at_ms: None,
    })
}
