//! Device tokens in SQLite: authentication (through the [`crate::cache::AuthCache`]) and rotation.

use super::SqliteRegistry;
use super::audit;
use super::devices::{fetch_visible, refuse_decommissioned};
use crate::auth::{DEVICE_TOKEN_PREFIX, generate_secret, hash_secret};
use crate::registry::DeviceTokens;
use crate::time::now_ms;
use crate::{DeviceIdentity, DeviceStatus, Principal, RegistryError};
use async_trait::async_trait;
use corral_model::{DeviceId, TenantId};
use serde_json::json;
use sqlx::Row;

fn bad_device_token() -> RegistryError {
    RegistryError::Unauthenticated("invalid device token".to_string())
}

#[async_trait]
impl DeviceTokens for SqliteRegistry {
    async fn authenticate_device(&self, token: &str) -> Result<DeviceIdentity, RegistryError> {
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
                .bind(now_ms())
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

    fn credential_changes(&self) -> tokio::sync::broadcast::Receiver<DeviceId> {
        self.inner.credential_changes.subscribe()
    }

    async fn rotate_device_token(&self, actor: &Principal, id: &str) -> Result<String, RegistryError> {
        self.rotate_device_token_with_overlap(actor, id, 0).await
    }

    async fn rotate_device_token_with_overlap(
        &self,
        actor: &Principal,
        id: &str,
        overlap_secs: u64,
    ) -> Result<String, RegistryError> {
        actor.require_write()?;
        if overlap_secs > 30 * 86_400 {
            return Err(RegistryError::BadInput("overlap_secs: at most 30 days (2592000)".into()));
        }
        let token = generate_secret(DEVICE_TOKEN_PREFIX);
        let now = now_ms();
        let mut tx = self.write_tx().await?;
        let d = fetch_visible(&mut tx, actor, id).await?;
        refuse_decommissioned(&d)?;
        let revoked = sqlx::query("UPDATE device_tokens SET revoked_at = ? WHERE device_id = ? AND revoked_at IS NULL")
            .bind(now + overlap_secs as i64 * 1000)
            .bind(d.id.as_str())
            .execute(&mut *tx)
            .await?
            .rows_affected();
        sqlx::query("INSERT INTO device_tokens (hash, device_id, created_at) VALUES (?, ?, ?)")
            .bind(hash_secret(&token))
            .bind(d.id.as_str())
            .bind(now)
            .execute(&mut *tx)
            .await?;
        audit::record(
            &mut tx,
            actor,
            "device.rotate_token",
            d.id.as_str(),
            Some(&d.tenant),
            json!({"revoked": revoked, "overlap_secs": overlap_secs}),
        )
        .await?;
        tx.commit().await?;
        self.forget_device(&d.id);
        if overlap_secs == 0 {
            self.credentials_changed(&d.id);
        }
        Ok(token)
    }
}

impl SqliteRegistry {
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

    /// After a device was created or its profile changed (see
    /// [`crate::DeviceInventory::device_changes`]).
    pub(crate) fn device_changed(&self, id: &DeviceId) {
        let _ = self.inner.device_changes.send(id.clone());
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
