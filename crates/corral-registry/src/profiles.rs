//! Profiles: device kinds (`truck`, `hvac`) declaring the attributes their devices carry and the
//! telemetry they send. Declared attributes become typed columns of the SQL `devices` table.
//!
//! Profiles are shared by all tenants, so only unscoped operators and admins may write them.
//! A device may name a profile nobody has declared yet: an empty profile row is created for it
//! (audited as `profile.create`) and `put_profile` fills it in later.

use crate::device::{check_name, check_text};
use crate::time::now_ms;
use crate::{Principal, Registry, RegistryError, audit};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::{Row, SqliteConnection};
use std::collections::{BTreeMap, HashSet};

const MAX_DECLS: usize = 256;
const MAX_DESCRIPTION_CHARS: usize = 1024;

/// Names a declared attribute cannot take, because the SQL `devices` table already has a column
/// by that name.
const DEVICE_COLUMNS: &[&str] = &[
    "id",
    "device",
    "profile",
    "tenant",
    "site",
    "attributes",
    "tags",
    "status",
    "gateway",
    "last_seen",
    "created_at",
    "updated_at",
];
/// Columns every telemetry table has; a field by these names would shadow them.
const TELEMETRY_COLUMNS: &[&str] = &["time", "device"];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ValueType {
    String,
    Number,
    Boolean,
}

impl ValueType {
    pub fn as_str(self) -> &'static str {
        match self {
            ValueType::String => "string",
            ValueType::Number => "number",
            ValueType::Boolean => "boolean",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttributeDecl {
    pub name: String,
    pub r#type: ValueType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldDecl {
    pub name: String,
    pub r#type: ValueType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub attributes: Vec<AttributeDecl>,
    #[serde(default)]
    pub telemetry: Vec<FieldDecl>,
}

impl Profile {
    fn validate(&self) -> Result<(), RegistryError> {
        check_name("profile", &self.name, 64)?;
        if let Some(d) = &self.description
            && d.chars().count() > MAX_DESCRIPTION_CHARS
        {
            return Err(RegistryError::BadInput(format!("description: at most {MAX_DESCRIPTION_CHARS} characters")));
        }
        if self.attributes.len() > MAX_DECLS || self.telemetry.len() > MAX_DECLS {
            return Err(RegistryError::BadInput(format!("attributes, telemetry: at most {MAX_DECLS} declarations each")));
        }
        let mut seen = HashSet::new();
        for a in &self.attributes {
            check_name("attributes.name", &a.name, 64)?;
            if DEVICE_COLUMNS.contains(&a.name.to_ascii_lowercase().as_str()) {
                return Err(RegistryError::BadInput(format!(
                    "attributes: {:?} is a built-in column of the devices table",
                    a.name
                )));
            }
            if !seen.insert(a.name.as_str()) {
                return Err(RegistryError::BadInput(format!("attributes: {:?} declared twice", a.name)));
            }
        }
        let mut seen = HashSet::new();
        for f in &self.telemetry {
            check_name("telemetry.name", &f.name, 128)?;
            if TELEMETRY_COLUMNS.contains(&f.name.to_ascii_lowercase().as_str()) {
                return Err(RegistryError::BadInput(format!("telemetry: {:?} is a column of every telemetry table", f.name)));
            }
            if let Some(u) = &f.unit {
                check_text("telemetry.unit", u, 32)?;
            }
            if !seen.insert(f.name.as_str()) {
                return Err(RegistryError::BadInput(format!("telemetry: {:?} declared twice", f.name)));
            }
        }
        Ok(())
    }
}

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

impl Registry {
    /// Creates or replaces a profile. Operators and admins without a tenant scope.
    pub async fn put_profile(&self, actor: &Principal, profile: Profile) -> Result<Profile, RegistryError> {
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

    /// Every profile, by name. Any principal: profiles describe kinds, not anyone's devices.
    pub async fn list_profiles(&self, _actor: &Principal) -> Result<Vec<Profile>, RegistryError> {
        let rows = sqlx::query("SELECT name, description, attributes, telemetry FROM profiles ORDER BY name")
            .fetch_all(self.pool())
            .await?;
        rows.iter().map(profile_from_row).collect()
    }

    pub async fn get_profile(&self, _actor: &Principal, name: &str) -> Result<Profile, RegistryError> {
        let row = sqlx::query("SELECT name, description, attributes, telemetry FROM profiles WHERE name = ?")
            .bind(name)
            .fetch_optional(self.pool())
            .await?
            .ok_or_else(|| RegistryError::not_found("profile", name))?;
        profile_from_row(&row)
    }

    /// The union of all profiles' declared attributes, sorted by name: the typed columns of the
    /// SQL `devices` table. Where profiles disagree on a name's type it becomes `string`, the one
    /// type every value can be shown as; the description kept is the first one found.
    pub async fn declared_attributes(&self) -> Result<Vec<AttributeDecl>, RegistryError> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profile_json_shape() {
        let p: Profile = serde_json::from_str(
            r#"{"name":"hvac","attributes":[{"name":"floor","type":"number"}],
                "telemetry":[{"name":"temperature","type":"number","unit":"°C"}]}"#,
        )
        .unwrap();
        assert_eq!(p.attributes[0].r#type, ValueType::Number);
        p.validate().unwrap();
        let back = serde_json::to_value(&p).unwrap();
        assert_eq!(back["telemetry"][0]["type"], "number");
        assert!(back["attributes"][0].get("description").is_none());
    }

    #[test]
    fn declarations_cannot_shadow_columns_or_repeat() {
        let decl = |n: &str| AttributeDecl { name: n.into(), r#type: ValueType::String, description: None };
        let mut p = Profile { name: "x".into(), description: None, attributes: vec![decl("site")], telemetry: vec![] };
        assert!(p.validate().is_err());
        p.attributes = vec![decl("floor"), decl("floor")];
        assert!(p.validate().is_err());
        p.attributes = vec![];
        p.telemetry = vec![FieldDecl { name: "time".into(), r#type: ValueType::Number, unit: None }];
        assert!(p.validate().is_err());
    }
}
