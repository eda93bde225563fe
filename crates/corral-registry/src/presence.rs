//! "Last heard from": kept in memory on the hot path, written to SQLite in batches.
//!
//! Every ingest request touches its device; a SQL write per message would make the registry the
//! bottleneck of the whole data path. So `touch` only updates a map, and `flush_last_seen` (called
//! periodically and at shutdown by the server) writes the newest values in one transaction.
//! Readers merge both, so an API caller sees the latest value even before a flush. API tokens'
//! `last_used_at` travels the same way, for the same reason.

use crate::time::{from_ms, now_ms};
use crate::{Device, Registry, RegistryError, lock};
use chrono::{DateTime, Utc};
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

impl Presence {
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

impl Registry {
    /// Records that `device` was heard from at `at`. Memory only; see [`Registry::flush_last_seen`].
    pub fn touch(&self, device: &DeviceId, at: DateTime<Utc>) {
        let ms = at.timestamp_millis();
        note(&mut lock(&self.inner.presence.devices), device, ms, || device.clone());
    }

    /// Writes the newest in-memory `last_seen` (and API token `last_used_at`) values in one
    /// transaction. Returns how many device rows changed. Values never move backwards.
    pub async fn flush_last_seen(&self) -> Result<usize, RegistryError> {
        let presence = &self.inner.presence;
        let devices: Vec<(DeviceId, i64)> = lock(&presence.devices).iter().map(|(k, v)| (k.clone(), *v)).collect();
        let tokens: Vec<(i64, i64)> = lock(&presence.tokens).iter().map(|(k, v)| (*k, *v)).collect();
        if devices.is_empty() && tokens.is_empty() {
            return Ok(0);
        }
        let mut tx = self.write_tx().await?;
        let mut written = 0;
        for (id, ms) in &devices {
            let r = sqlx::query("UPDATE devices SET last_seen = ?1 WHERE id = ?2 AND (last_seen IS NULL OR last_seen < ?1)")
                .bind(ms)
                .bind(id.as_str())
                .execute(&mut *tx)
                .await?;
            written += r.rows_affected() as usize;
        }
        for (id, ms) in &tokens {
            sqlx::query(
                "UPDATE api_tokens SET last_used_at = ?1 \
                 WHERE id = ?2 AND (last_used_at IS NULL OR last_used_at < ?1)",
            )
            .bind(ms)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        forget_flushed(&mut lock(&presence.devices), &devices);
        forget_flushed(&mut lock(&presence.tokens), &tokens);
        tracing::debug!(devices = written, tokens = tokens.len(), "last_seen flushed");
        Ok(written)
    }
}

/// The pipeline reports who was heard from after every durable write (`last_seen`, in memory).
impl corral_ingest::Presence for Registry {
    fn heard_from(&self, envelope: &corral_model::Envelope) {
        self.touch(&envelope.device, DateTime::from_timestamp_nanos(envelope.received_at_ns));
    }
}
