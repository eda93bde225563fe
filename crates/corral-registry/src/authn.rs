//! Authentication on the hot path: "who is this token?" answered from memory.
//!
//! Every ingest request (HTTP, MQTT, CoAP) and every API call asks this, so a hit costs one hash
//! and one map lookup under a short lock, no SQL. Only valid tokens are cached, so the cache is
//! bounded by the tokens in the database; unknown tokens fall through to an indexed lookup.
//!
//! Invalidation must never lose to a concurrent fill: a request that missed the cache may have
//! read the old row just before a rotation committed. Each cache therefore carries a generation,
//! bumped by every invalidation, and a fill is dropped if the generation moved since its miss.

use crate::auth::{DEVICE_TOKEN_PREFIX, hash_secret};
use crate::{DeviceIdentity, DeviceStatus, Principal, Registry, RegistryError, lock};
use corral_model::{DeviceId, TenantId};
use sqlx::Row;
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

fn bad_device_token() -> RegistryError {
    RegistryError::Unauthenticated("invalid device token".to_string())
}

impl Registry {
    /// Resolves a device token. Unknown or rotated-away token: `Unauthenticated`; quarantined or
    /// decommissioned device: `Forbidden`, naming the status so the operator knows why.
    pub async fn authenticate_device(&self, token: &str) -> Result<DeviceIdentity, RegistryError> {
        // Every device token we issue has the prefix; anything else cannot match, so skip the
        // hash and the database for garbage.
        if !token.starts_with(DEVICE_TOKEN_PREFIX) {
            return Err(bad_device_token());
        }
        let hash = hash_secret(token);
        let identity = match self.inner.device_auth.lookup(&hash) {
            Ok(hit) => hit,
            Err(generation) => {
                // A token rotated away with an overlap stays valid until its revoked_at.
                let row = sqlx::query(
                    "SELECT d.id, d.tenant, d.status, d.gateway, t.revoked_at FROM device_tokens t \
                     JOIN devices d ON d.id = t.device_id WHERE t.hash = ? AND (t.revoked_at IS NULL OR t.revoked_at > ?)",
                )
                .bind(&hash)
                .bind(crate::time::now_ms())
                .fetch_optional(self.pool())
                .await?
                .ok_or_else(bad_device_token)?;
                let identity = identity_from_row(&row)?;
                // Only tokens without an end are cached: the cache has no clock.
                if row.try_get::<Option<i64>, _>("revoked_at")?.is_none() {
                    self.inner.device_auth.fill(hash, identity.clone(), generation);
                }
                identity
            }
        };
        match identity.status {
            DeviceStatus::Active => Ok(identity),
            status => Err(RegistryError::Forbidden(format!("device {} is {status}", identity.id))),
        }
    }

    /// Resolves an API token (the `Bearer` of a management request). Unknown or revoked:
    /// `Unauthenticated`. Also notes the token's use for `last_used_at`.
    pub async fn authenticate_api(&self, token: &str) -> Result<Principal, RegistryError> {
        if token.is_empty() {
            return Err(RegistryError::Unauthenticated("missing API token".to_string()));
        }
        let hash = hash_secret(token);
        let principal = match self.inner.api_auth.lookup(&hash) {
            Ok(hit) => hit,
            Err(generation) => {
                let row = sqlx::query("SELECT id, name, role, tenant, revoked_at FROM api_tokens WHERE hash = ?")
                    .bind(&hash)
                    .fetch_optional(self.pool())
                    .await?
                    .ok_or_else(|| RegistryError::Unauthenticated("invalid API token".to_string()))?;
                if row.try_get::<Option<i64>, _>("revoked_at")?.is_some() {
                    return Err(RegistryError::Unauthenticated("API token has been revoked".to_string()));
                }
                let principal = principal_from_row(&row)?;
                self.inner.api_auth.fill(hash, principal.clone(), generation);
                principal
            }
        };
        self.inner.presence.token_used(principal.token_id);
        Ok(principal)
    }

    /// After a device's status, gateway, token or pre-shared key changed.
    pub(crate) fn forget_device(&self, id: &DeviceId) {
        self.inner.device_auth.invalidate(|d| d.id == *id);
        self.inner.psk_auth.invalidate(|(d, _)| d.id == *id);
    }

    /// After what a live connection was authenticated with stopped holding as it was: the
    /// device's token was rotated, its status or its gateway changed.
    pub(crate) fn credentials_changed(&self, id: &DeviceId) {
        // No receiver (no broker running) is not an error.
        let _ = self.inner.credential_changes.send(id.clone());
    }

    /// Device ids whose token, status or gateway changed, as they change. Transports holding
    /// long-lived connections (MQTT) disconnect those devices, which must reconnect with
    /// credentials that still hold. A receiver that lags too far skips ahead (and is told so).
    pub fn credential_changes(&self) -> tokio::sync::broadcast::Receiver<DeviceId> {
        self.inner.credential_changes.subscribe()
    }

    /// After an API token was revoked.
    pub(crate) fn forget_api_token(&self, token_id: i64) {
        self.inner.api_auth.invalidate(|p| p.token_id == token_id);
    }
}

pub(crate) fn identity_from_row(row: &sqlx::sqlite::SqliteRow) -> Result<DeviceIdentity, RegistryError> {
    let corrupt = |e: &dyn std::fmt::Display| RegistryError::storage(format!("device identity row: {e}"));
    let gateway: Option<String> = row.try_get("gateway")?;
    Ok(DeviceIdentity {
        id: DeviceId::new(row.try_get::<String, _>("id")?).map_err(|e| corrupt(&e))?,
        tenant: TenantId::new(row.try_get::<String, _>("tenant")?).map_err(|e| corrupt(&e))?,
        status: row.try_get::<String, _>("status")?.parse().map_err(|e| corrupt(&e))?,
        gateway: gateway.map(DeviceId::new).transpose().map_err(|e| corrupt(&e))?,
    })
}

pub(crate) fn principal_from_row(row: &sqlx::sqlite::SqliteRow) -> Result<Principal, RegistryError> {
    let corrupt = |e: &dyn std::fmt::Display| RegistryError::storage(format!("api token row: {e}"));
    let tenant: Option<String> = row.try_get("tenant")?;
    Ok(Principal {
        token_id: row.try_get("id")?,
        name: row.try_get("name")?,
        role: row.try_get::<String, _>("role")?.parse().map_err(|e| corrupt(&e))?,
        tenant: tenant.map(TenantId::new).transpose().map_err(|e| corrupt(&e))?,
    })
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
