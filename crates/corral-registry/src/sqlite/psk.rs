//! Pre-shared keys: the device credential of CoAP over DTLS. The PSK identity a device sends in
//! its handshake is its device id; the key is random (generated here) or the one the factory
//! put in the device. Keys are kept as they are (a handshake needs the key itself, a hash would
//! not do), so the registry file must be guarded like the CA keys next to it.

use super::SqliteRegistry;
use super::audit;
use super::devices::{fetch_visible, refuse_decommissioned};
use crate::registry::PreSharedKeys;
use crate::time::now_ms;
use crate::{DeviceIdentity, DeviceStatus, PSK_MAX_BYTES, PSK_MIN_BYTES, Principal, RegistryError};
use async_trait::async_trait;
use rand::RngCore;
use serde_json::json;
use sqlx::Row;

/// Random bytes in a generated key. The key is their hex text (32 characters): the same
/// 128 bits, but typeable, because common tools take a PSK as text (libcoap's `coap-client -k`).
const GENERATED_PSK_ENTROPY: usize = 16;

#[async_trait]
impl PreSharedKeys for SqliteRegistry {
    async fn set_device_psk(&self, actor: &Principal, id: &str, key: Option<Vec<u8>>) -> Result<Vec<u8>, RegistryError> {
        actor.require_write()?;
        let generated = key.is_none();
        let key = match key {
            Some(k) if (PSK_MIN_BYTES..=PSK_MAX_BYTES).contains(&k.len()) => k,
            Some(k) => {
                return Err(RegistryError::BadInput(format!(
                    "key: {} bytes; a pre-shared key has {PSK_MIN_BYTES} to {PSK_MAX_BYTES} bytes",
                    k.len()
                )));
            }
            None => {
                let mut random = [0u8; GENERATED_PSK_ENTROPY];
                rand::rng().fill_bytes(&mut random);
                crate::auth::hex(&random).into_bytes()
            }
        };
        let mut tx = self.write_tx().await?;
        let d = fetch_visible(&mut tx, actor, id).await?;
        refuse_decommissioned(&d)?;
        let replaced = sqlx::query("SELECT 1 FROM device_psks WHERE device_id = ?")
            .bind(d.id.as_str())
            .fetch_optional(&mut *tx)
            .await?
            .is_some();
        sqlx::query(
            "INSERT INTO device_psks (device_id, psk, created_at, created_by) VALUES (?, ?, ?, ?) \
             ON CONFLICT (device_id) DO UPDATE SET psk = excluded.psk, created_at = excluded.created_at, created_by = excluded.created_by",
        )
        .bind(d.id.as_str())
        .bind(&key)
        .bind(now_ms())
        .bind(&actor.name)
        .execute(&mut *tx)
        .await?;
        audit::record(
            &mut tx,
            actor,
            "device.set_psk",
            d.id.as_str(),
            Some(&d.tenant),
            json!({"generated": generated, "replaced": replaced}),
        )
        .await?;
        tx.commit().await?;
        self.forget_device(&d.id);
        self.credentials_changed(&d.id);
        Ok(key)
    }

    async fn remove_device_psk(&self, actor: &Principal, id: &str) -> Result<(), RegistryError> {
        actor.require_write()?;
        let mut tx = self.write_tx().await?;
        let d = fetch_visible(&mut tx, actor, id).await?;
        let removed = sqlx::query("DELETE FROM device_psks WHERE device_id = ?")
            .bind(d.id.as_str())
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if removed == 0 {
            return Err(RegistryError::not_found("pre-shared key of device", d.id.as_str()));
        }
        audit::record(&mut tx, actor, "device.remove_psk", d.id.as_str(), Some(&d.tenant), json!({})).await?;
        tx.commit().await?;
        self.forget_device(&d.id);
        self.credentials_changed(&d.id);
        Ok(())
    }

    async fn has_device_psk(&self, actor: &Principal, id: &str) -> Result<bool, RegistryError> {
        let mut conn = self.pool().acquire().await?;
        let d = fetch_visible(&mut conn, actor, id).await?;
        let row =
            sqlx::query("SELECT 1 FROM device_psks WHERE device_id = ?").bind(d.id.as_str()).fetch_optional(&mut *conn).await?;
        Ok(row.is_some())
    }

    async fn authenticate_psk(&self, identity: &str) -> Result<(DeviceIdentity, Vec<u8>), RegistryError> {
        let (device, key) = match self.inner.psk_auth.lookup(identity) {
            Ok(hit) => hit,
            Err(generation) => {
                let row = sqlx::query("SELECT d.id, d.tenant, d.status, d.gateway, p.psk FROM device_psks p JOIN devices d ON d.id = p.device_id WHERE p.device_id = ?")
                    .bind(identity)
                    .fetch_optional(self.pool())
                    .await?
                    .ok_or_else(|| RegistryError::Unauthenticated(format!("no pre-shared key for PSK identity {identity:?}")))?;
                let found = (super::device_tokens::identity_from_row(&row)?, row.try_get::<Vec<u8>, _>("psk")?);
                self.inner.psk_auth.fill(identity.to_string(), found.clone(), generation);
                found
            }
        };
        if device.status != DeviceStatus::Active {
            return Err(RegistryError::Forbidden(format!("device {} is {}", device.id, device.status)));
        }
        Ok((device, key))
    }
}
