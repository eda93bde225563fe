//! Authentication on the hot path: "who is this token?" answered from memory.
//!
//! Every ingest request (HTTP, MQTT, CoAP) and every API call asks this, so a hit costs one hash
//! and one map lookup under a short lock, no SQL. Only valid tokens are cached, so the cache is
//! bounded by the tokens in the database; unknown tokens fall through to an indexed lookup.
//!
//! Invalidation must never lose to a concurrent fill: a request that missed the cache may have
//! read the old row just before a rotation committed. Each cache therefore carries a generation,
//! bumped by every invalidation, and a fill is dropped if the generation moved since its miss.

use crate::lock;
use std::collections::HashMap;
use std::sync::Mutex;

/// Who a credential stands for, keyed by the credential's hash (tokens) or the PSK identity, so
/// that authenticating a known credential skips the database. A change invalidates what it touches
/// and bumps the generation, so a lookup that raced with it cannot put a stale answer back.
pub(crate) struct AuthCache<V> {
    state: Mutex<CacheState<V>>,
}

struct CacheState<V> {
    by_key: HashMap<String, V>,
    generation: u64,
}

impl<V: Clone> AuthCache<V> {
    pub(crate) fn new() -> Self {
        AuthCache { state: Mutex::new(CacheState { by_key: HashMap::new(), generation: 0 }) }
    }

    /// The cached value, or on a miss the generation to hand back to [`AuthCache::fill`].
    pub(crate) fn lookup(&self, key: &str) -> Result<V, u64> {
        let state = lock(&self.state);
        state.by_key.get(key).cloned().ok_or(state.generation)
    }

    pub(crate) fn fill(&self, key: String, value: V, generation: u64) {
        let mut state = lock(&self.state);
        if state.generation == generation {
            state.by_key.insert(key, value);
        }
    }

    /// Drops every entry `stale` matches. Call after the change has committed.
    pub(crate) fn invalidate(&self, stale: impl Fn(&V) -> bool) {
        let mut state = lock(&self.state);
        state.generation += 1;
        state.by_key.retain(|_, v| !stale(v));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fill_that_raced_an_invalidation_is_dropped() {
        let cache = AuthCache::<u32>::new();
        let generation = cache.lookup("h").unwrap_err();
        cache.invalidate(|_| true); // e.g. a rotation committed meanwhile
        cache.fill("h".into(), 1, generation);
        assert!(cache.lookup("h").is_err());
        let generation = cache.lookup("h").unwrap_err();
        cache.fill("h".into(), 2, generation);
        assert_eq!(cache.lookup("h"), Ok(2));
        cache.invalidate(|v| *v == 2);
        assert!(cache.lookup("h").is_err());
    }
}
