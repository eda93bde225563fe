//! `last_seen` and `last_used_at` written to SQLite in batches (see [`crate::presence`]).

use super::SqliteRegistry;
use crate::RegistryError;
use crate::registry::LastSeen;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use corral_model::DeviceId;

#[async_trait]
impl LastSeen for SqliteRegistry {
    fn touch(&self, device: &DeviceId, at: DateTime<Utc>) {
        let ms = at.timestamp_millis();
        self.inner.presence.device_seen(device, ms);
    }

    async fn flush_last_seen(&self) -> Result<usize, RegistryError> {
        let unflushed = self.inner.presence.unflushed();
        let (devices, tokens) = (&unflushed.devices, &unflushed.tokens);
        if devices.is_empty() && tokens.is_empty() {
            return Ok(0);
        }
        let mut tx = self.write_tx().await?;
        let mut written = 0;
        for (id, ms) in devices {
            let r = sqlx::query("UPDATE devices SET last_seen = ?1 WHERE id = ?2 AND (last_seen IS NULL OR last_seen < ?1)")
                .bind(ms)
                .bind(id.as_str())
                .execute(&mut *tx)
                .await?;
            written += r.rows_affected() as usize;
        }
        for (id, ms) in tokens {
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
        self.inner.presence.forget(&unflushed);
        tracing::debug!(devices = written, tokens = tokens.len(), "last_seen flushed");
        Ok(written)
    }
}

/// The pipeline reports who was heard from after every durable write (`last_seen`, in memory).
impl corral_ingest::Presence for SqliteRegistry {
    fn heard_from(&self, envelope: &corral_model::Envelope) {
        self.touch(&envelope.device, DateTime::from_timestamp_nanos(envelope.received_at_ns));
    }
}
