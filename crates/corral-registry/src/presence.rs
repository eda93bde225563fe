//! "Last heard from": kept in memory on the hot path, persisted in batches by the implementation.
//!
//! Every ingest request touches its device; a SQL write per message would make the registry the
//! bottleneck of the whole data path. So `touch` only updates a map, and `flush_last_seen` (called
//! periodically and at shutdown by the server) writes the newest values in one transaction.
//! Readers merge both, so an API caller sees the latest value even before a flush. API tokens'
//! `last_used_at` travels the same way, for the same reason.

use crate::time::{from_ms, now_ms};
use crate::{Device, lock};
use corral_model::DeviceId;
use std::collections::HashMap;
use std::sync::Mutex;

#[derive(Default)]
pub(crate) struct Presence {
    devices: Mutex<HashMap<DeviceId, i64>>,
    tokens: Mutex<HashMap<i64, i64>>,
}

/// Keeps the newest of two timestamps; messages can arrive out of order across doors.
fn note<K: Eq + std::hash::Hash>(map: &mut HashMap<K, i64>, key: &K, ms: i64, owned: impl FnOnce() -> K) {
    match map.get_mut(key) {
        Some(v) => *v = (*v).max(ms),
        None => {
            map.insert(owned(), ms);
        }
    }
}

/// Drops the entries a flush wrote, unless they moved on meanwhile (then the next flush writes
/// them). Never draining before the commit means readers always see max(db, memory).
fn forget_flushed<K: Eq + std::hash::Hash>(map: &mut HashMap<K, i64>, flushed: &[(K, i64)]) {
    for (k, ms) in flushed {
        if map.get(k).is_some_and(|v| v <= ms) {
            map.remove(k);
        }
    }
}

/// What `flush` must write: the newest device `last_seen` and API token `last_used_at` values,
/// in Unix milliseconds, taken without draining (see [`Presence::forget`]).
pub(crate) struct Unflushed {
    pub(crate) devices: Vec<(DeviceId, i64)>,
    pub(crate) tokens: Vec<(i64, i64)>,
}

impl Presence {
    pub(crate) fn device_seen(&self, device: &DeviceId, ms: i64) {
        note(&mut lock(&self.devices), device, ms, || device.clone());
    }

    pub(crate) fn unflushed(&self) -> Unflushed {
        Unflushed {
            devices: lock(&self.devices).iter().map(|(k, v)| (k.clone(), *v)).collect(),
            tokens: lock(&self.tokens).iter().map(|(k, v)| (*k, *v)).collect(),
        }
    }

    /// After `flushed` committed: drops what it wrote, unless it moved on meanwhile.
    pub(crate) fn forget(&self, flushed: &Unflushed) {
        forget_flushed(&mut lock(&self.devices), &flushed.devices);
        forget_flushed(&mut lock(&self.tokens), &flushed.tokens);
    }

    pub(crate) fn token_used(&self, token_id: i64) {
        note(&mut lock(&self.tokens), &token_id, now_ms(), || token_id);
    }

    pub(crate) fn token_last_used(&self, token_id: i64) -> Option<i64> {
        lock(&self.tokens).get(&token_id).copied()
    }

    pub(crate) fn merge_into(&self, device: &mut Device) {
        if let Some(ms) = lock(&self.devices).get(&device.id).copied() {
            let mem = from_ms(ms);
            if device.last_seen.is_none_or(|db| db < mem) {
                device.last_seen = Some(mem);
            }
        }
    }
}
