//! A bounded cache of store records that can never keep a record older than the last invalidation of its key.
//!
//! The hazard it closes: a reader misses, reads the record from the store, and is about to insert it when a writer
//! changes the record in the store and invalidates the key; the reader's insert then puts the old record back for
//! good. Here every invalidation bumps an epoch, and a reader that inserts checks afterwards whether an
//! invalidation happened since it started reading; if so it removes what it inserted. A writer must change the
//! store first and invalidate second.

use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::metrics::Counter;

pub struct RecordCache<K, V> {
    entries: moka::sync::Cache<K, V>,
    invalidations: AtomicU64,
    /// Lookups answered from memory, and lookups that went on to the store, for `/metrics`.
    hits: Counter,
    misses: Counter,
}

impl<K, V> std::fmt::Debug for RecordCache<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordCache").field("invalidations", &self.invalidations).finish_non_exhaustive()
    }
}

/// When a reader began its store read; pass it back to [`RecordCache::insert_read`].
#[derive(Debug, Clone, Copy)]
pub struct ReadStarted(u64);

impl<K, V> RecordCache<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// A cache of at most `capacity` entries, each kept at most `time_to_live` (a bound on staleness should the
    /// store be changed behind the server's back).
    pub fn new(capacity: u64, time_to_live: Duration) -> RecordCache<K, V> {
        RecordCache {
            entries: moka::sync::Cache::builder().max_capacity(capacity).time_to_live(time_to_live).build(),
            invalidations: AtomicU64::new(0),
            hits: Counter::default(),
            misses: Counter::default(),
        }
    }

    pub fn get(&self, key: &K) -> Option<V> {
        let found = self.entries.get(key);
        match found {
            Some(_) => self.hits.inc(),
            None => self.misses.inc(),
        }
        found
    }

    /// What `/metrics` shows of this cache, under the name `cache`: hits and misses since start, and the entries
    /// held now, after moka has applied what it still had pending (its count lags otherwise). For a scrape, not
    /// for a hot path.
    pub fn figures(&self, cache: &'static str) -> crate::metrics::CacheFigures {
        self.entries.run_pending_tasks();
        crate::metrics::CacheFigures {
            cache,
            hits: self.hits.get(),
            misses: self.misses.get(),
            entries: self.entries.entry_count(),
        }
    }

    /// Call before reading the record from the store.
    pub fn read_started(&self) -> ReadStarted {
        ReadStarted(self.invalidations.load(Ordering::SeqCst))
    }

    /// Caches a record read from the store since `started`, unless an invalidation may have overtaken the read.
    pub fn insert_read(&self, key: K, value: V, started: ReadStarted) {
        self.entries.insert(key.clone(), value);
        if self.invalidations.load(Ordering::SeqCst) != started.0 {
            // Something was invalidated while we read, perhaps this very key: what we hold may be older than the
            // store. Take it out again; the next reader goes to the store.
            self.entries.invalidate(&key);
        }
    }

    /// Call after the store has changed the record.
    pub fn invalidate(&self, key: &K) {
        self.invalidations.fetch_add(1, Ordering::SeqCst);
        self.entries.invalidate(key);
    }

    /// Drops every entry; as [`RecordCache::invalidate`] for every key.
    pub fn invalidate_all(&self) {
        self.invalidations.fetch_add(1, Ordering::SeqCst);
        self.entries.invalidate_all();
    }

    pub fn entry_count(&self) -> u64 {
        self.entries.entry_count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_overtaken_by_an_invalidation_is_not_kept() {
        let cache: RecordCache<u32, &str> = RecordCache::new(10, Duration::from_secs(60));
        let started = cache.read_started();
        // The writer changes the store and invalidates while the reader holds the old record.
        cache.invalidate(&1);
        cache.insert_read(1, "old", started);
        assert_eq!(cache.get(&1), None);

        let started = cache.read_started();
        cache.insert_read(1, "new", started);
        assert_eq!(cache.get(&1), Some("new"));
    }
}
