//! Console users and sessions in SQLite (see [`crate::User`]). Session secrets are random and
//! stored as SHA-256 like every other token; each session carries a CSRF secret that the
//! console's forms and requests must echo.

use super::SqliteRegistry;
use super::audit;
use crate::auth::{generate_secret, hash_secret};
use crate::registry::ConsoleUsers;
use crate::time::{from_ms, now_ms};
use crate::users::{SESSION_PREFIX, check_password, check_user_name, hash_password, user_principal, verify_password};
use crate::{Principal, RegistryError, Role, SESSION_HOURS, Session, User};
use async_trait::async_trait;
use corral_model::TenantId;
use serde_json::json;
use sqlx::Row;

fn user_from_row(row: &sqlx::sqlite::SqliteRow) -> Result<User, RegistryError> {
    let tenant: Option<String> = row.try_get("tenant")?;
    Ok(User {
        name: row.try_get("name")?,
        role: row.try_get::<String, _>("role")?.parse()?,
        tenant: tenant.map(TenantId::new).transpose().map_err(|e| RegistryError::storage(e.to_string()))?,
        created_at: from_ms(row.try_get("created_at")?),
        created_by: row.try_get("created_by")?,
        password_changed_at: from_ms(row.try_get("password_changed_at")?),
    })
}

const USER_COLUMNS: &str = "name, role, tenant, created_at, created_by, password_changed_at";

#[async_trait]
impl ConsoleUsers for SqliteRegistry {
    async fn create_user(
        &self,
        actor: &Principal,
        name: &str,
        password: &str,
        role: Role,
        tenant: Option<TenantId>,
    ) -> Result<User, RegistryError> {
        actor.require_admin()?;
        check_user_name(name)?;
        check_password(password)?;
        let tenant = match (&actor.tenant, tenant) {
            (None, None) => None,
            (_, requested) => Some(actor.resolve_tenant(requested)?),
        };
        let hash = hash_password(password).await?;
        let now = now_ms();
        let mut tx = self.write_tx().await?;
        if let Some(t) = &tenant {
            super::tenants::ensure_tenant(&mut tx, actor, t).await?;
        }
        let inserted = sqlx::query(
            "INSERT INTO users (name, password_hash, role, tenant, created_at, created_by, password_changed_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (name) DO NOTHING",
        )
        .bind(name)
        .bind(&hash)
        .bind(role.as_str())
        .bind(tenant.as_ref().map(|t| t.as_str()))
        .bind(now)
        .bind(&actor.name)
        .bind(now)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if inserted == 0 {
            return Err(RegistryError::Conflict(format!("user {name} already exists")));
        }
        audit::record(&mut tx, actor, "user.create", name, tenant.as_ref(), json!({"role": role})).await?;
        tx.commit().await?;
        self.user(name).await?.ok_or_else(|| RegistryError::storage("user vanished after insert"))
    }

    async fn list_users(&self, actor: &Principal) -> Result<Vec<User>, RegistryError> {
        actor.require_admin()?;
        let rows = sqlx::query(&format!("SELECT {USER_COLUMNS} FROM users ORDER BY name")).fetch_all(self.pool()).await?;
        let users = rows.iter().map(user_from_row).collect::<Result<Vec<_>, _>>()?;
        Ok(users.into_iter().filter(|u| actor.tenant.is_none() || u.tenant == actor.tenant).collect())
    }

    async fn set_user_password(
        &self,
        actor: &Principal,
        name: &str,
        password: &str,
        current: Option<&str>,
    ) -> Result<(), RegistryError> {
        let user = self.visible_user(actor, name, true).await?;
        check_password(password)?;
        // Signed-in users changing their own password prove it first: a session left open on a
        // shared screen must not be enough to take the account over. (Sessions carry token id 0;
        // an admin API token resetting a password is an administrator's act, not the user's.)
        if actor.token_id == 0 && actor.name == user.name {
            let Some(current) = current else {
                return Err(RegistryError::BadInput("current_password: needed to change your own password".into()));
            };
            let (_, stored) = self.user_with_hash(&user.name).await?.ok_or_else(|| RegistryError::not_found("user", name))?;
            if !verify_password(current, stored).await {
                return Err(RegistryError::Forbidden("the current password is wrong".into()));
            }
        }
        let hash = hash_password(password).await?;
        let mut tx = self.write_tx().await?;
        sqlx::query("UPDATE users SET password_hash = ?, password_changed_at = ? WHERE name = ?")
            .bind(&hash)
            .bind(now_ms())
            .bind(&user.name)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM user_sessions WHERE user_name = ?").bind(&user.name).execute(&mut *tx).await?;
        audit::record(&mut tx, actor, "user.password", &user.name, user.tenant.as_ref(), json!({})).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn remove_user(&self, actor: &Principal, name: &str) -> Result<(), RegistryError> {
        let user = self.visible_user(actor, name, false).await?;
        if actor.name == user.name {
            return Err(RegistryError::Conflict("a user cannot remove itself".into()));
        }
        let mut tx = self.write_tx().await?;
        sqlx::query("DELETE FROM users WHERE name = ?").bind(&user.name).execute(&mut *tx).await?;
        audit::record(&mut tx, actor, "user.remove", &user.name, user.tenant.as_ref(), json!({})).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn sign_in(&self, name: &str, password: &str) -> Result<Session, RegistryError> {
        let refused = || RegistryError::Unauthenticated("wrong user name or password".into());
        let user = if check_user_name(name).is_ok() { self.user_with_hash(name).await? } else { None };
        let (user, stored) = match user {
            Some((user, stored)) => (Some(user), stored),
            None => (
                None,
                self.inner
                    .decoy_hash
                    .get_or_init(|| async { hash_password(&generate_secret("")).await.unwrap_or_default() })
                    .await
                    .clone(),
            ),
        };
        let matches = verify_password(password, stored).await;
        let Some(user) = user.filter(|_| matches) else { return Err(refused()) };
        let secret = generate_secret(SESSION_PREFIX);
        let csrf = generate_secret("");
        let now = now_ms();
        let expires = now + SESSION_HOURS * 3_600_000;
        let mut tx = self.write_tx().await?;
        sqlx::query("DELETE FROM user_sessions WHERE expires_at <= ?").bind(now).execute(&mut *tx).await?;
        sqlx::query("INSERT INTO user_sessions (hash, user_name, csrf, created_at, expires_at) VALUES (?, ?, ?, ?, ?)")
            .bind(hash_secret(&secret))
            .bind(&user.name)
            .bind(&csrf)
            .bind(now)
            .bind(expires)
            .execute(&mut *tx)
            .await?;
        let principal = user_principal(&user);
        audit::record(&mut tx, &principal, "user.sign_in", &user.name, user.tenant.as_ref(), json!({})).await?;
        tx.commit().await?;
        Ok(Session { secret, csrf, principal, expires_at: from_ms(expires) })
    }

    async fn session(&self, secret: &str) -> Result<(Principal, String), RegistryError> {
        let row = sqlx::query(
            "SELECT u.name, u.role, u.tenant, u.created_at, u.created_by, u.password_changed_at, s.csrf \
             FROM user_sessions s JOIN users u ON u.name = s.user_name WHERE s.hash = ? AND s.expires_at > ?",
        )
        .bind(hash_secret(secret))
        .bind(now_ms())
        .fetch_optional(self.pool())
        .await?
        .ok_or_else(|| RegistryError::Unauthenticated("not signed in, or the session expired".into()))?;
        Ok((user_principal(&user_from_row(&row)?), row.try_get("csrf")?))
    }

    async fn sign_out(&self, secret: &str) -> Result<(), RegistryError> {
        sqlx::query("DELETE FROM user_sessions WHERE hash = ?").bind(hash_secret(secret)).execute(self.pool()).await?;
        Ok(())
    }
}

impl SqliteRegistry {
    /// First start: the administrator the console signs in with is `admin`, whose password is
    /// the bootstrap admin token (no default password exists anywhere).
    pub(crate) async fn bootstrap_admin_user(&self, password: &str) -> Result<(), RegistryError> {
        let hash = hash_password(password).await?;
        let now = now_ms();
        sqlx::query(
            "INSERT INTO users (name, password_hash, role, tenant, created_at, created_by, password_changed_at) \
             VALUES ('admin', ?, 'admin', NULL, ?, 'system', ?) ON CONFLICT (name) DO NOTHING",
        )
        .bind(hash)
        .bind(now)
        .bind(now)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    async fn user(&self, name: &str) -> Result<Option<User>, RegistryError> {
        Ok(self.user_with_hash(name).await?.map(|(u, _)| u))
    }

    async fn user_with_hash(&self, name: &str) -> Result<Option<(User, String)>, RegistryError> {
        let row = sqlx::query(&format!("SELECT {USER_COLUMNS}, password_hash FROM users WHERE name = ?"))
            .bind(name)
            .fetch_optional(self.pool())
            .await?;
        row.map(|r| Ok((user_from_row(&r)?, r.try_get("password_hash")?))).transpose()
    }

    /// A user the actor may manage: admins see their scope's users; with `or_self`, anyone may
    /// reach its own account.
    async fn visible_user(&self, actor: &Principal, name: &str, or_self: bool) -> Result<User, RegistryError> {
        let user = self.user(name).await?;
        match user {
            Some(u) if or_self && u.name == actor.name && actor.token_id == 0 => Ok(u),
            Some(u) if actor.is_admin() && (actor.tenant.is_none() || u.tenant == actor.tenant) => Ok(u),
            Some(_) if !actor.is_admin() => {
                Err(RegistryError::Forbidden(format!("role {} may not manage users; admin only", actor.role)))
            }
            _ => Err(RegistryError::not_found("user", name)),
        }
    }
}
