//! The audit log: who changed what, when. Written by every mutation inside its own transaction,
//! so the log can neither miss a committed change nor record one that rolled back.

use super::SqliteRegistry;
use crate::registry::AuditTrail;
use crate::time::{from_ms, now_ms};
use crate::{AuditEntry, Principal, RegistryError};
use async_trait::async_trait;
use corral_model::TenantId;
use serde_json::Value;
use sqlx::{Row, SqliteConnection};

const DEFAULT_LIMIT: u32 = 100;
const MAX_LIMIT: u32 = 1000;

/// Appends one audit row on `conn`, which must be the mutation's own transaction.
pub(crate) async fn record(
    conn: &mut SqliteConnection,
    actor: &Principal,
    action: &str,
    target: &str,
    tenant: Option<&TenantId>,
    detail: Value,
) -> Result<(), RegistryError> {
    sqlx::query("INSERT INTO audit (at, actor, actor_token, action, target, tenant, detail) VALUES (?, ?, ?, ?, ?, ?, ?)")
        .bind(now_ms())
        .bind(&actor.name)
        .bind(actor.audit_token())
        .bind(action)
        .bind(target)
        .bind(tenant.map(TenantId::as_str))
        .bind(detail.to_string())
        .execute(conn)
        .await?;
    Ok(())
}

#[async_trait]
impl AuditTrail for SqliteRegistry {
    async fn record_audit(
        &self,
        actor: &Principal,
        action: &str,
        target: &str,
        tenant: Option<&TenantId>,
        detail: Value,
    ) -> Result<(), RegistryError> {
        let mut conn = self.pool().acquire().await?;
        record(&mut conn, actor, action, target, tenant, detail).await
    }

    async fn audit_log(&self, actor: &Principal, limit: u32) -> Result<Vec<AuditEntry>, RegistryError> {
        actor.require_admin()?;
        let limit = if limit == 0 { DEFAULT_LIMIT } else { limit.min(MAX_LIMIT) };
        let rows = sqlx::query(
            "SELECT id, at, actor, actor_token, action, target, tenant, detail FROM audit \
             WHERE ?1 IS NULL OR tenant = ?1 ORDER BY id DESC LIMIT ?2",
        )
        .bind(actor.tenant.as_ref().map(TenantId::as_str))
        .bind(i64::from(limit))
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|row| {
                let tenant: Option<String> = row.try_get("tenant")?;
                let detail: String = row.try_get("detail")?;
                Ok(AuditEntry {
                    id: row.try_get("id")?,
                    at: from_ms(row.try_get("at")?),
                    actor: row.try_get("actor")?,
                    actor_token: row.try_get("actor_token")?,
                    action: row.try_get("action")?,
                    target: row.try_get("target")?,
                    tenant: tenant
                        .map(TenantId::new)
                        .transpose()
                        .map_err(|e| RegistryError::storage(format!("audit row: {e}")))?,
                    detail: serde_json::from_str(&detail)
                        .map_err(|e| RegistryError::storage(format!("audit row detail: {e}")))?,
                })
            })
            .collect()
    }
}
