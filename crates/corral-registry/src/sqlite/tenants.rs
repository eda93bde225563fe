//! Tenants: the unit of isolation between lines of business or customers.
//!
//! A tenant row holds only a display name and a creation time; devices and tokens reference it.
//! Creating a device (or token) in an unknown tenant creates the row implicitly, so a fleet can be
//! enrolled without a separate setup step; `default` exists from the first migration.

use super::SqliteRegistry;
use super::audit;
use crate::device::check_text;
use crate::registry::TenantDirectory;
use crate::time::{from_ms, now_ms};
use crate::{Principal, RegistryError, Tenant};
use async_trait::async_trait;
use corral_model::TenantId;
use serde_json::json;
use sqlx::{Row, SqliteConnection};

/// Makes sure `tenant` has a row, creating (and auditing) it if missing.
pub(crate) async fn ensure_tenant(
    conn: &mut SqliteConnection,
    actor: &Principal,
    tenant: &TenantId,
) -> Result<(), RegistryError> {
    let created = sqlx::query("INSERT INTO tenants (id, name, created_at) VALUES (?, NULL, ?) ON CONFLICT (id) DO NOTHING")
        .bind(tenant.as_str())
        .bind(now_ms())
        .execute(&mut *conn)
        .await?
        .rows_affected();
    if created == 1 {
        audit::record(conn, actor, "tenant.create", tenant.as_str(), Some(tenant), json!({"implicit": true})).await?;
    }
    Ok(())
}

fn tenant_from_row(row: &sqlx::sqlite::SqliteRow) -> Result<Tenant, RegistryError> {
    Ok(Tenant {
        id: TenantId::new(row.try_get::<String, _>("id")?).map_err(|e| RegistryError::storage(format!("tenant row: {e}")))?,
        name: row.try_get("name")?,
        created_at: from_ms(row.try_get("created_at")?),
    })
}

#[async_trait]
impl TenantDirectory for SqliteRegistry {
    async fn create_tenant(&self, actor: &Principal, id: TenantId, name: Option<String>) -> Result<Tenant, RegistryError> {
        actor.require_admin()?;
        actor.require_unscoped("tenants")?;
        if let Some(n) = &name {
            check_text("name", n, 128)?;
        }
        let now = now_ms();
        let mut tx = self.write_tx().await?;
        let inserted = sqlx::query("INSERT INTO tenants (id, name, created_at) VALUES (?, ?, ?) ON CONFLICT (id) DO NOTHING")
            .bind(id.as_str())
            .bind(name.as_deref())
            .bind(now)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if inserted == 0 {
            return Err(RegistryError::Conflict(format!("tenant {id} already exists")));
        }
        audit::record(&mut tx, actor, "tenant.create", id.as_str(), Some(&id), json!({"name": name})).await?;
        tx.commit().await?;
        Ok(Tenant { id, name, created_at: from_ms(now) })
    }

    async fn list_tenants(&self, actor: &Principal) -> Result<Vec<Tenant>, RegistryError> {
        let rows = sqlx::query("SELECT id, name, created_at FROM tenants WHERE ?1 IS NULL OR id = ?1 ORDER BY id")
            .bind(actor.tenant.as_ref().map(TenantId::as_str))
            .fetch_all(self.pool())
            .await?;
        rows.iter().map(tenant_from_row).collect()
    }
}
