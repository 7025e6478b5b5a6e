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

    /// Replaces the entries of `keys` that are held now with what `update` makes of them (`None` leaves one as it
    /// is); keys not held stay out. Call after the store has changed the records: it counts as an invalidation
    /// first, so a reader whose store read began before the change and inserts after this call takes its insert
    /// out again (a key absent here may be inserted by such a reader a moment later).
    pub fn update_held<'k>(&self, keys: impl IntoIterator<Item = &'k K>, update: impl Fn(&K, &V) -> Option<V>)
    where
        K: 'k,
    {
        self.invalidations.fetch_add(1, Ordering::SeqCst);
        for key in keys {
            // A lookup first: most keys of a commit are not held, and the compute below takes the key's lock.
            if !self.entries.contains_key(key) {
                continue;
            }
            self.entries.entry(key.clone()).and_compute_with(|held| {
                match held.and_then(|held| update(key, held.value())) {
                    Some(updated) => moka::ops::compute::Op::Put(updated),
                    None => moka::ops::compute::Op::Nop,
                }
            });
        }
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

/// A bounded cache of records that many readers want at once, keyed by id: the live consumers' devices and
/// variables (every MQTT subscriber, stream and console page describes the same readings). Concurrent lookups of a
/// key that is not held wait for one store read instead of each making their own, so N subscribers following the
/// same devices cost one read per device, not N. A failed read (or a record that does not exist) is not kept: the
/// next lookup reads again.
///
/// The stale-read hazard of [`RecordCache`] is closed by the cell: an invalidation takes the key's cell out of the
/// map, so a read that began before it fills a cell nobody will find again; the next lookup makes a new cell and
/// reads the store anew. A writer must change the store first and invalidate second.
pub struct SharedReads<K, V> {
    entries: moka::sync::Cache<K, std::sync::Arc<tokio::sync::OnceCell<V>>>,
    /// Lookups answered without a store read of their own (from memory, or by waiting for another's), and store
    /// reads made, for `/metrics` (as `hits` and `misses`).
    hits: Counter,
    reads: Counter,
}

impl<K, V> std::fmt::Debug for SharedReads<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedReads").finish_non_exhaustive()
    }
}

impl<K, V> SharedReads<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// At most `capacity` keys, each kept at most `time_to_live` (a bound on staleness should the store be changed
    /// behind the server's back).
    pub fn new(capacity: u64, time_to_live: Duration) -> SharedReads<K, V> {
        SharedReads {
            entries: moka::sync::Cache::builder().max_capacity(capacity).time_to_live(time_to_live).build(),
            hits: Counter::default(),
            reads: Counter::default(),
        }
    }

    /// The record held for `key`, or what `read` answers (one read for every lookup waiting on this key).
    pub async fn get_or_read<E>(&self, key: K, read: impl Future<Output = Result<V, E>>) -> Result<V, E> {
        let cell = self.entries.get_with(key, || std::sync::Arc::new(tokio::sync::OnceCell::new()));
        if let Some(value) = cell.get() {
            self.hits.inc();
            return Ok(value.clone());
        }
        let mut read_here = false;
        let value = cell
            .get_or_try_init(|| {
                read_here = true;
                self.reads.inc();
                read
            })
            .await?;
        if !read_here {
            self.hits.inc();
        }
        Ok(value.clone())
    }

    /// Call after the store has changed the record.
    pub fn invalidate(&self, key: &K) {
        self.entries.invalidate(key);
    }

    /// Drops every entry.
    pub fn invalidate_all(&self) {
        self.entries.invalidate_all();
    }

    /// What `/metrics` shows, as [`RecordCache::figures`]: `misses` are the store reads made.
    pub fn figures(&self, cache: &'static str) -> crate::metrics::CacheFigures {
        self.entries.run_pending_tasks();
        crate::metrics::CacheFigures {
            cache,
            hits: self.hits.get(),
            misses: self.reads.get(),
            entries: self.entries.entry_count(),
        }
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

    #[test]
    fn an_update_changes_held_entries_only_and_overtakes_a_read_in_flight() {
        let cache: RecordCache<u32, u32> = RecordCache::new(10, Duration::from_secs(60));
        cache.insert_read(1, 10, cache.read_started());
        let started = cache.read_started();
        cache.update_held(&[1, 2], |_, held| Some(held + 1));
        assert_eq!(cache.get(&1), Some(11));
        assert_eq!(cache.get(&2), None, "a key not held is not made up");
        // A reader of key 2 that began before the update read what the store had before it.
        cache.insert_read(2, 20, started);
        assert_eq!(cache.get(&2), None);
        cache.update_held(&[1], |_, _| None);
        assert_eq!(cache.get(&1), Some(11), "None leaves the entry as it is");
    }

    #[tokio::test]
    async fn many_lookups_of_one_key_make_one_read_and_an_invalidation_makes_the_next_read_again() {
        let cache: std::sync::Arc<SharedReads<u32, String>> =
            std::sync::Arc::new(SharedReads::new(10, Duration::from_secs(60)));
        let reads = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
        let lookups = (0..20).map(|_| {
            let (cache, reads) = (cache.clone(), reads.clone());
            tokio::spawn(async move {
                cache
                    .get_or_read(1, async {
                        reads.fetch_add(1, Ordering::SeqCst);
                        // Slow enough that every lookup arrives while the first read is under way.
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        Ok::<_, ()>("old".to_owned())
                    })
                    .await
            })
        });
        for lookup in futures_util::future::join_all(lookups).await {
            assert_eq!(lookup.unwrap(), Ok("old".to_owned()));
        }
        assert_eq!(reads.load(Ordering::SeqCst), 1, "twenty lookups, one read");
        let figures = cache.figures("test");
        assert_eq!((figures.hits, figures.misses), (19, 1));

        // A failed read is not kept; a changed record is read again after its invalidation.
        assert_eq!(cache.get_or_read(2, async { Err::<String, _>("gone") }).await, Err("gone"));
        assert_eq!(cache.get_or_read(2, async { Ok::<_, &str>("back".to_owned()) }).await, Ok("back".to_owned()));
        cache.invalidate(&1);
        assert_eq!(cache.get_or_read(1, async { Ok::<_, ()>("new".to_owned()) }).await, Ok("new".to_owned()));

        // A read that began before an invalidation fills a cell nobody finds again.
        let (finish, finished) = tokio::sync::oneshot::channel::<()>();
        let racing = {
            let cache = cache.clone();
            tokio::spawn(async move {
                cache
                    .get_or_read(3, async {
                        finished.await.unwrap();
                        Ok::<_, ()>("before the change".to_owned())
                    })
                    .await
            })
        };
        tokio::task::yield_now().await;
        while cache.entries.get(&3).is_none() {
            tokio::task::yield_now().await;
        }
        cache.invalidate(&3);
        finish.send(()).unwrap();
        assert_eq!(racing.await.unwrap(), Ok("before the change".to_owned()));
        assert_eq!(
            cache.get_or_read(3, async { Ok::<_, ()>("after the change".to_owned()) }).await,
            Ok("after the change".to_owned())
        );
    }
}
