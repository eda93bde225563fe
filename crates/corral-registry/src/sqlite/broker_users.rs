//! Broker users in SQLite (see [`crate::BrokerUser`]): the password as an argon2id PHC string,
//! the rules as JSON text. Every change is audited and ends the user's connections (through
//! [`BrokerUsers::broker_user_changes`]).

use super::SqliteRegistry;
use super::audit;
use crate::broker_users::{check_broker_password, check_broker_user_name, check_rules, is_token};
use crate::registry::BrokerUserDirectory;
use crate::time::{from_ms, now_ms};
use crate::users::{hash_password, verify_password};
use crate::{BrokerUser, Principal, RegistryError};
use async_trait::async_trait;
use corral_model::{ErrorKind, TenantId, WireError};
use corral_services::{BrokerLogin, BrokerUsers, TopicRule};
use serde_json::json;
use sqlx::Row;

const COLUMNS: &str = "name, tenant, rules, created_at, created_by, updated_at";

fn from_row(row: &sqlx::sqlite::SqliteRow) -> Result<BrokerUser, RegistryError> {
    let tenant: Option<String> = row.try_get("tenant")?;
    let rules: String = row.try_get("rules")?;
    Ok(BrokerUser {
        name: row.try_get("name")?,
        tenant: tenant.map(TenantId::new).transpose().map_err(|e| RegistryError::storage(e.to_string()))?,
        rules: serde_json::from_str(&rules).map_err(|e| RegistryError::storage(format!("broker user rules: {e}")))?,
        created_at: from_ms(row.try_get("created_at")?),
        created_by: row.try_get("created_by")?,
        updated_at: from_ms(row.try_get("updated_at")?),
    })
}

impl SqliteRegistry {
    async fn broker_user_with_hash(&self, name: &str) -> Result<Option<(BrokerUser, String)>, RegistryError> {
        let row = sqlx::query(&format!("SELECT {COLUMNS}, password_hash FROM broker_users WHERE name = ?"))
            .bind(name)
            .fetch_optional(self.pool())
            .await?;
        row.map(|row| Ok((from_row(&row)?, row.try_get("password_hash")?))).transpose()
    }

    /// The user, if `actor` may manage it (an admin; a tenant-scoped one, its tenant's users).
    async fn managed_broker_user(&self, actor: &Principal, name: &str) -> Result<BrokerUser, RegistryError> {
        actor.require_admin()?;
        match self.broker_user_with_hash(name).await? {
            Some((user, _)) if actor.tenant.is_none() || user.tenant == actor.tenant => Ok(user),
            _ => Err(RegistryError::not_found("broker user", name)),
        }
    }

    fn announce_broker_user_change(&self, name: &str) {
        // Nobody listening (no MQTT listener) is fine.
        let _ = self.inner.broker_user_changes.send(name.to_string());
    }
}

#[async_trait]
impl BrokerUserDirectory for SqliteRegistry {
    async fn create_broker_user(
        &self,
        actor: &Principal,
        name: &str,
        password: &str,
        tenant: Option<TenantId>,
        rules: Vec<TopicRule>,
    ) -> Result<BrokerUser, RegistryError> {
        actor.require_admin()?;
        check_broker_user_name(name)?;
        check_broker_password(password)?;
        check_rules(&rules)?;
        let tenant = match (&actor.tenant, tenant) {
            (None, None) => None,
            (_, requested) => Some(actor.resolve_tenant(requested)?),
        };
        let hash = hash_password(password).await?;
        let now = now_ms();
        let rules_text = serde_json::to_string(&rules).map_err(|e| RegistryError::storage(e.to_string()))?;
        let mut tx = self.write_tx().await?;
        if let Some(t) = &tenant {
            super::tenants::ensure_tenant(&mut tx, actor, t).await?;
        }
        let inserted = sqlx::query(
            "INSERT INTO broker_users (name, password_hash, tenant, rules, created_at, created_by, updated_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (name) DO NOTHING",
        )
        .bind(name)
        .bind(&hash)
        .bind(tenant.as_ref().map(|t| t.as_str()))
        .bind(&rules_text)
        .bind(now)
        .bind(&actor.name)
        .bind(now)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if inserted == 0 {
            return Err(RegistryError::Conflict(format!("broker user {name} already exists")));
        }
        audit::record(&mut tx, actor, "broker_user.create", name, tenant.as_ref(), json!({"rules": rules})).await?;
        tx.commit().await?;
        self.managed_broker_user(actor, name).await
    }

    async fn list_broker_users(&self, actor: &Principal) -> Result<Vec<BrokerUser>, RegistryError> {
        actor.require_admin()?;
        let rows = sqlx::query(&format!("SELECT {COLUMNS} FROM broker_users ORDER BY name")).fetch_all(self.pool()).await?;
        let users = rows.iter().map(from_row).collect::<Result<Vec<_>, _>>()?;
        Ok(users.into_iter().filter(|u| actor.tenant.is_none() || u.tenant == actor.tenant).collect())
    }

    async fn broker_user(&self, actor: &Principal, name: &str) -> Result<BrokerUser, RegistryError> {
        self.managed_broker_user(actor, name).await
    }

    async fn update_broker_user(
        &self,
        actor: &Principal,
        name: &str,
        password: Option<&str>,
        rules: Option<Vec<TopicRule>>,
    ) -> Result<BrokerUser, RegistryError> {
        let user = self.managed_broker_user(actor, name).await?;
        if let Some(password) = password {
            check_broker_password(password)?;
        }
        if let Some(rules) = &rules {
            check_rules(rules)?;
        }
        let hash = match password {
            Some(password) => Some(hash_password(password).await?),
            None => None,
        };
        let rules_text =
            rules.as_ref().map(serde_json::to_string).transpose().map_err(|e| RegistryError::storage(e.to_string()))?;
        let mut tx = self.write_tx().await?;
        sqlx::query(
            "UPDATE broker_users SET password_hash = coalesce(?, password_hash), rules = coalesce(?, rules), \
             updated_at = ? WHERE name = ?",
        )
        .bind(hash)
        .bind(rules_text)
        .bind(now_ms())
        .bind(&user.name)
        .execute(&mut *tx)
        .await?;
        let detail = json!({"password": password.is_some(), "rules": rules});
        audit::record(&mut tx, actor, "broker_user.update", &user.name, user.tenant.as_ref(), detail).await?;
        tx.commit().await?;
        self.announce_broker_user_change(&user.name);
        self.managed_broker_user(actor, name).await
    }

    async fn remove_broker_user(&self, actor: &Principal, name: &str) -> Result<(), RegistryError> {
        let user = self.managed_broker_user(actor, name).await?;
        let mut tx = self.write_tx().await?;
        sqlx::query("DELETE FROM broker_users WHERE name = ?").bind(&user.name).execute(&mut *tx).await?;
        audit::record(&mut tx, actor, "broker_user.remove", &user.name, user.tenant.as_ref(), json!({})).await?;
        tx.commit().await?;
        self.announce_broker_user_change(&user.name);
        Ok(())
    }
}

#[async_trait]
impl BrokerUsers for SqliteRegistry {
    async fn log_in(&self, name: &str, password: &str) -> Result<Option<BrokerLogin>, WireError> {
        // A token is never a broker password (`check_broker_password` refuses them).
        if check_broker_user_name(name).is_err() || is_token(password) {
            return Ok(None);
        }
        let Some((user, stored)) = self.broker_user_with_hash(name).await.map_err(|e| e.to_wire())? else {
            return Ok(None);
        };
        if !verify_password(password, stored).await {
            return Err(WireError::new(ErrorKind::Unauthenticated, format!("wrong password for broker user {name}")));
        }
        Ok(Some(BrokerLogin { name: user.name, tenant: user.tenant, rules: user.rules }))
    }

    fn broker_user_changes(&self) -> tokio::sync::broadcast::Receiver<String> {
        self.inner.broker_user_changes.subscribe()
    }
}
