//! API tokens: credentials for people and programs, each with a role and an optional tenant scope.
//! Also the first-start bootstrap of the administrator token.

use super::SqliteRegistry;
use super::audit;
use super::device_tokens::principal_from_row;
use super::tenants::ensure_tenant;
use crate::auth::{API_TOKEN_PREFIX, generate_secret, hash_secret};
use crate::device::check_text;
use crate::registry::ApiTokens;
use crate::time::{from_ms, now_ms};
use crate::{ApiToken, NewApiToken, Principal, RegistryError, Role};
use async_trait::async_trait;
use corral_model::TenantId;
use serde_json::json;
use sqlx::Row;

/// The shortest preset admin secret accepted. A person picks it, so it has less entropy than a
/// generated one; 16 characters keeps it out of reach of guessing against the API.
const MIN_PRESET_CHARS: usize = 16;

/// An API token as listed: everything but the secret, which exists only in its creator's hands.
const TOKEN_COLUMNS: &str = "id, name, role, tenant, created_at, last_used_at, revoked_at";

#[async_trait]
impl ApiTokens for SqliteRegistry {
    async fn authenticate_api(&self, token: &str) -> Result<Principal, RegistryError> {
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

    async fn bootstrap_admin(&self, preset: Option<&str>) -> Result<Option<String>, RegistryError> {
        if let Some(p) = preset
            && (p.chars().count() < MIN_PRESET_CHARS || p.chars().any(|c| c.is_whitespace() || c.is_control()))
        {
            return Err(RegistryError::BadInput(format!(
                "admin token: must be at least {MIN_PRESET_CHARS} characters without whitespace"
            )));
        }
        let secret = preset.map_or_else(|| generate_secret(API_TOKEN_PREFIX), str::to_owned);
        let hash = hash_secret(&secret);
        let mut tx = self.write_tx().await?;
        let existing: i64 = sqlx::query("SELECT COUNT(*) AS n FROM api_tokens").fetch_one(&mut *tx).await?.try_get("n")?;
        if existing > 0 {
            if preset.is_some() {
                let known = sqlx::query("SELECT 1 FROM api_tokens WHERE hash = ?").bind(&hash).fetch_optional(&mut *tx).await?;
                if known.is_none() {
                    tracing::warn!("a preset admin token was given, but API tokens already exist; it is ignored");
                }
            }
            return Ok(None);
        }
        let id =
            sqlx::query("INSERT INTO api_tokens (name, role, tenant, hash, created_at) VALUES ('admin', 'admin', NULL, ?, ?)")
                .bind(&hash)
                .bind(now_ms())
                .execute(&mut *tx)
                .await?
                .last_insert_rowid();
        let detail = json!({"name": "admin", "role": "admin", "bootstrap": true, "preset": preset.is_some()});
        audit::record(&mut tx, &Principal::system(), "token.create", &id.to_string(), None, detail).await?;
        tx.commit().await?;
        tracing::info!(token_id = id, "bootstrap admin token created");
        self.bootstrap_admin_user(&secret).await?;
        Ok(Some(secret))
    }

    async fn create_api_token(&self, actor: &Principal, new: NewApiToken) -> Result<(ApiToken, String), RegistryError> {
        actor.require_admin()?;
        check_text("name", &new.name, 64)?;
        let tenant = match actor.tenant {
            Some(_) => Some(actor.resolve_tenant(new.tenant)?),
            None => new.tenant,
        };
        let secret = generate_secret(API_TOKEN_PREFIX);
        let now = now_ms();
        let mut tx = self.write_tx().await?;
        if let Some(t) = &tenant {
            ensure_tenant(&mut tx, actor, t).await?;
        }
        let id = sqlx::query("INSERT INTO api_tokens (name, role, tenant, hash, created_at) VALUES (?, ?, ?, ?, ?)")
            .bind(&new.name)
            .bind(new.role.as_str())
            .bind(tenant.as_ref().map(TenantId::as_str))
            .bind(hash_secret(&secret))
            .bind(now)
            .execute(&mut *tx)
            .await?
            .last_insert_rowid();
        let detail = json!({"name": new.name, "role": new.role, "tenant": tenant});
        audit::record(&mut tx, actor, "token.create", &id.to_string(), tenant.as_ref(), detail).await?;
        tx.commit().await?;
        let token =
            ApiToken { id, name: new.name, role: new.role, tenant, created_at: from_ms(now), last_used_at: None, revoked: false };
        Ok((token, secret))
    }

    async fn list_api_tokens(&self, actor: &Principal) -> Result<Vec<ApiToken>, RegistryError> {
        actor.require_admin()?;
        let rows = sqlx::query(&format!("SELECT {TOKEN_COLUMNS} FROM api_tokens WHERE ?1 IS NULL OR tenant = ?1 ORDER BY id"))
            .bind(actor.tenant.as_ref().map(TenantId::as_str))
            .fetch_all(self.pool())
            .await?;
        rows.iter().map(|r| self.token_from_row(r)).collect()
    }

    async fn revoke_api_token(&self, actor: &Principal, id: i64) -> Result<(), RegistryError> {
        actor.require_admin()?;
        let mut tx = self.write_tx().await?;
        let row = sqlx::query(&format!("SELECT {TOKEN_COLUMNS} FROM api_tokens WHERE id = ?"))
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
        let token = match row {
            Some(r) => self.token_from_row(&r)?,
            None => return Err(RegistryError::not_found("API token", &id.to_string())),
        };
        // A scoped admin does not see unscoped or other tenants' tokens, so they do not exist for it.
        if actor.tenant.is_some() && token.tenant != actor.tenant {
            return Err(RegistryError::not_found("API token", &id.to_string()));
        }
        if token.revoked {
            return Ok(());
        }
        if token.role == Role::Admin && token.tenant.is_none() {
            let others: i64 = sqlx::query(
                "SELECT COUNT(*) AS n FROM api_tokens \
                 WHERE role = 'admin' AND tenant IS NULL AND revoked_at IS NULL AND id != ?",
            )
            .bind(id)
            .fetch_one(&mut *tx)
            .await?
            .try_get("n")?;
            if others == 0 {
                return Err(RegistryError::Conflict(
                    "this is the last unscoped admin token; create another admin token before revoking it".into(),
                ));
            }
        }
        sqlx::query("UPDATE api_tokens SET revoked_at = ? WHERE id = ?").bind(now_ms()).bind(id).execute(&mut *tx).await?;
        // The console's first administrator signs in with the bootstrap token as its password:
        // revoking that token (a leak, say) must not leave the same secret working there. Unless
        // the password was changed since, the `admin` user can no longer sign in until someone
        // sets a new one (`corral user passwd admin`).
        let bootstrap: Option<i64> =
            sqlx::query("SELECT MIN(id) AS id FROM api_tokens").fetch_one(&mut *tx).await?.try_get("id")?;
        let mut detail = json!({"name": token.name, "role": token.role});
        if bootstrap == Some(id) {
            let locked = sqlx::query(
                "UPDATE users SET password_hash = '!bootstrap token revoked' \
                 WHERE name = 'admin' AND created_by = 'system' AND password_changed_at = created_at",
            )
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if locked > 0 {
                sqlx::query("DELETE FROM user_sessions WHERE user_name = 'admin'").execute(&mut *tx).await?;
                detail["console_admin_locked"] = json!(true);
            }
        }
        audit::record(&mut tx, actor, "token.revoke", &id.to_string(), token.tenant.as_ref(), detail).await?;
        tx.commit().await?;
        self.forget_api_token(id);
        Ok(())
    }
}

impl SqliteRegistry {
    fn token_from_row(&self, row: &sqlx::sqlite::SqliteRow) -> Result<ApiToken, RegistryError> {
        let p = principal_from_row(row)?;
        let stored: Option<i64> = row.try_get("last_used_at")?;
        let recent = self.inner.presence.token_last_used(p.token_id);
        Ok(ApiToken {
            id: p.token_id,
            name: p.name,
            role: p.role,
            tenant: p.tenant,
            created_at: from_ms(row.try_get("created_at")?),
            last_used_at: stored.max(recent).map(from_ms),
            revoked: row.try_get::<Option<i64>, _>("revoked_at")?.is_some(),
        })
    }
}
