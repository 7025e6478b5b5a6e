//! The last reading of each variable, answered from memory when this node is the store's only writer.
//!
//! A last-value read is the commonest read of an IoT platform (a dashboard's tiles, a device asking for its
//! setpoint) and on SQLite each one was a trip to the store's worker thread. Here the writer, which commits every
//! reading, keeps the entries current: after each commit, and before it answers anyone, it puts a newer reading
//! into the entry of its variable if that entry is held ([`LastReadings::committed`]). A variable not held is read
//! from the store once and held from then on. A reader's store read that a commit overtakes is not kept (the
//! epoch of [`RecordCache`]), so an entry is never older than what the store has. Deleting readings takes the
//! variable's entry out after the store has deleted them.
//!
//! Only when this node is the only writer: on SQLite one process holds the store (the data directory's lock). On
//! PostgreSQL another node's commit would reach this one's memory only later, through the cluster's events, while a
//! client acknowledged there may read here at once; there every last-value read goes to the store.

use std::collections::HashMap;
use std::time::Duration;

use tessera_core::{Reading, VariableId};
use tessera_store::{Store, StoreResult};

use crate::cache::RecordCache;

/// A bound on how long an entry is kept unread-from-the-store, should the store be changed behind the server's
/// back (a restore needs the server stopped; this is for what no rule foresaw).
const TIME_TO_LIVE: Duration = Duration::from_secs(600);

#[derive(Debug)]
pub struct LastReadings {
    /// `None` when this node is not the only writer: every read goes to the store.
    held: Option<RecordCache<VariableId, Option<Reading>>>,
}

impl LastReadings {
    /// Holds at most `capacity` variables' last readings when `only_writer`, none otherwise.
    pub fn new(only_writer: bool, capacity: u64) -> LastReadings {
        LastReadings { held: only_writer.then(|| RecordCache::new(capacity, TIME_TO_LIVE)) }
    }

    /// The reading of `variable` with the latest timestamp, from memory or the store.
    pub async fn get(&self, store: &dyn Store, variable: VariableId) -> StoreResult<Option<Reading>> {
        let Some(held) = &self.held else { return store.last_reading(variable).await };
        if let Some(last) = held.get(&variable) {
            return Ok(last);
        }
        let started = held.read_started();
        let last = store.last_reading(variable).await?;
        held.insert_read(variable, last.clone(), started);
        Ok(last)
    }

    /// Called by the writer once `readings` are committed, before their writers are answered: a held entry takes
    /// a reading whose timestamp is at least its own (the store replaces a reading of the same variable and
    /// timestamp with the later one, so the later one is the last reading there too).
    pub fn committed(&self, readings: &[Reading]) {
        let Some(held) = &self.held else { return };
        // The batch's newest reading of each variable (later ones win ties), in one pass.
        let mut newest: HashMap<VariableId, &Reading> = HashMap::with_capacity(readings.len());
        for reading in readings {
            newest
                .entry(reading.variable)
                .and_modify(|newest| {
                    if reading.timestamp_ms >= newest.timestamp_ms {
                        *newest = reading;
                    }
                })
                .or_insert(reading);
        }
        held.update_held(newest.keys(), |variable, last| {
            let newest = newest.get(variable)?;
            match last {
                Some(last) if last.timestamp_ms > newest.timestamp_ms => None,
                _ => Some(Some((*newest).clone())),
            }
        });
    }

    /// Called after readings of `variable` were deleted from the store.
    pub fn deleted(&self, variable: VariableId) {
        if let Some(held) = &self.held {
            held.invalidate(&variable);
        }
    }

    /// What `/metrics` shows of the cache, when there is one.
    pub fn figures(&self) -> Option<crate::metrics::CacheFigures> {
        self.held.as_ref().map(|held| held.figures("last_readings"))
    }
}
