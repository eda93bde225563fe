//! Profiles in SQLite (what a profile is and may declare: [`crate::Profile`]). A device may
//! name a profile nobody has declared yet: an empty profile row is created for it (audited as
//! `profile.create`) and `put_profile` fills it in later.

use super::SqliteRegistry;
use super::audit;
use crate::registry::ProfileCatalog;
use crate::time::now_ms;
use crate::{AttributeDecl, Principal, Profile, RegistryError, ValueType};
use async_trait::async_trait;
use serde_json::json;
use sqlx::{Row, SqliteConnection};
use std::collections::BTreeMap;

fn profile_from_row(row: &sqlx::sqlite::SqliteRow) -> Result<Profile, RegistryError> {
    let name: String = row.try_get("name")?;
    let corrupt = |e: serde_json::Error| RegistryError::storage(format!("profile {name:?}: {e}"));
    let attributes: String = row.try_get("attributes")?;
    let telemetry: String = row.try_get("telemetry")?;
    Ok(Profile {
        description: row.try_get("description")?,
        attributes: serde_json::from_str(&attributes).map_err(corrupt)?,
        telemetry: serde_json::from_str(&telemetry).map_err(corrupt)?,
        name,
    })
}

/// Makes sure a profile row exists for a device naming it (see the module docs).
pub(crate) async fn ensure_profile(conn: &mut SqliteConnection, actor: &Principal, name: &str) -> Result<(), RegistryError> {
    let now = now_ms();
    let created =
        sqlx::query("INSERT INTO profiles (name, created_at, updated_at) VALUES (?, ?, ?) ON CONFLICT (name) DO NOTHING")
            .bind(name)
            .bind(now)
            .bind(now)
            .execute(&mut *conn)
            .await?
            .rows_affected();
    if created == 1 {
        audit::record(conn, actor, "profile.create", name, None, json!({"implicit": true})).await?;
    }
    Ok(())
}

#[async_trait]
impl ProfileCatalog for SqliteRegistry {
    async fn put_profile(&self, actor: &Principal, profile: Profile) -> Result<Profile, RegistryError> {
        actor.require_write()?;
        actor.require_unscoped("profiles")?;
        profile.validate()?;
        let attributes = serde_json::to_string(&profile.attributes).map_err(|e| RegistryError::storage(e.to_string()))?;
        let telemetry = serde_json::to_string(&profile.telemetry).map_err(|e| RegistryError::storage(e.to_string()))?;
        let now = now_ms();
        let mut tx = self.write_tx().await?;
        sqlx::query(
            "INSERT INTO profiles (name, description, attributes, telemetry, created_at, updated_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?5) ON CONFLICT (name) DO UPDATE SET \
             description = excluded.description, attributes = excluded.attributes, \
             telemetry = excluded.telemetry, updated_at = excluded.updated_at",
        )
        .bind(&profile.name)
        .bind(profile.description.as_deref())
        .bind(&attributes)
        .bind(&telemetry)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let detail = json!({
            "attributes": profile.attributes.iter().map(|a| &a.name).collect::<Vec<_>>(),
            "telemetry": profile.telemetry.iter().map(|f| &f.name).collect::<Vec<_>>(),
        });
        audit::record(&mut tx, actor, "profile.put", &profile.name, None, detail).await?;
        tx.commit().await?;
        Ok(profile)
    }

    async fn list_profiles(&self, _actor: &Principal) -> Result<Vec<Profile>, RegistryError> {
        let rows = sqlx::query("SELECT name, description, attributes, telemetry FROM profiles ORDER BY name")
            .fetch_all(self.pool())
            .await?;
        rows.iter().map(profile_from_row).collect()
    }

    async fn get_profile(&self, _actor: &Principal, name: &str) -> Result<Profile, RegistryError> {
        let row = sqlx::query("SELECT name, description, attributes, telemetry FROM profiles WHERE name = ?")
            .bind(name)
            .fetch_optional(self.pool())
            .await?
            .ok_or_else(|| RegistryError::not_found("profile", name))?;
        profile_from_row(&row)
    }

    async fn declared_attributes(&self) -> Result<Vec<AttributeDecl>, RegistryError> {
        let rows = sqlx::query("SELECT name, description, attributes, telemetry FROM profiles ORDER BY name")
            .fetch_all(self.pool())
            .await?;
        let mut merged: BTreeMap<String, AttributeDecl> = BTreeMap::new();
        for row in &rows {
            for decl in profile_from_row(row)?.attributes {
                match merged.get_mut(&decl.name) {
                    Some(existing) => {
                        if existing.r#type != decl.r#type {
                            existing.r#type = ValueType::String;
                        }
                        if existing.description.is_none() {
                            existing.description = decl.description;
                        }
                    }
                    None => {
                        merged.insert(decl.name.clone(), decl);
                    }
                }
            }
        }
        Ok(merged.into_values().collect())
    }
}
