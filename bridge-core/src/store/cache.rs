//! Read-through caches of rows that every handled event looks up (portals, ghosts) and that change rarely.
//!
//! Every write to a cached table goes through the store's own methods, which invalidate the cache; a generation
//! number keeps a read that raced such a write from filling the cache with the row as it was before.

use std::{future::Future, sync::Mutex};

use dashmap::DashMap;

use super::Result;

/// Entries above which a cache starts over, so a busy network's many people cannot grow it without bound.
const MAX_ENTRIES: usize = 50_000;

/// Rows by one string key.
#[derive(Debug)]
pub(crate) struct ReadCache<V> {
    entries: DashMap<String, V>,
    /// Bumped by every invalidation; a fill only lands if no invalidation happened since its read began.
    generation: Mutex<u64>,
}

impl<V> Default for ReadCache<V> {
    fn default() -> Self {
        Self { entries: DashMap::new(), generation: Mutex::new(0) }
    }
}

impl<V: Clone> ReadCache<V> {
    /// The cached row for `key`, or the one `load` reads (kept for next time). A missing row is not cached: it may
    /// be created at any moment.
    pub(crate) async fn get_or_load(
        &self,
        key: &str,
        load: impl Future<Output = Result<Option<V>>>,
    ) -> Result<Option<V>> {
        if let Some(value) = self.entries.get(key) {
            return Ok(Some(value.clone()));
        }
        let seen = *self.lock();
        let value = load.await?;
        if let Some(value) = &value {
            let generation = self.lock();
            if *generation == seen {
                if self.entries.len() >= MAX_ENTRIES {
                    self.entries.clear();
                }
                self.entries.insert(key.to_owned(), value.clone());
            }
        }
        Ok(value)
    }

    /// Drops the entries `stale` picks; call after the write that made them stale has been committed.
    pub(crate) fn invalidate(&self, mut stale: impl FnMut(&str, &V) -> bool) {
        let mut generation = self.lock();
        *generation += 1;
        self.entries.retain(|key, value| !stale(key, value));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, u64> {
        self.generation.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_hit_skips_the_load_and_a_miss_is_not_remembered() {
        let cache = ReadCache::<u32>::default();
        assert_eq!(cache.get_or_load("a", async { Ok(None) }).await.unwrap(), None);
        assert_eq!(cache.get_or_load("a", async { Ok(Some(1)) }).await.unwrap(), Some(1));
        assert_eq!(
            cache.get_or_load("a", async { panic!("a cached row is not loaded again") }).await.unwrap(),
            Some(1)
        );
        cache.invalidate(|key, _| key == "a");
        assert_eq!(cache.get_or_load("a", async { Ok(Some(2)) }).await.unwrap(), Some(2));
    }

    #[tokio::test]
    async fn a_read_that_raced_an_invalidation_does_not_fill_the_cache() {
        let cache = ReadCache::<u32>::default();
        let stale_read = async {
            // The write lands (and invalidates) while this read is on its way back with the old row.
            cache.invalidate(|_, _| true);
            Ok(Some(1))
        };
        assert_eq!(cache.get_or_load("a", stale_read).await.unwrap(), Some(1));
        assert_eq!(cache.get_or_load("a", async { Ok(Some(2)) }).await.unwrap(), Some(2), "the stale row was cached");
    }
}
