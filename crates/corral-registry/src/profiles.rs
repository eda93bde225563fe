//! Profiles: device kinds (`truck`, `hvac`) declaring the attributes their devices carry and the
//! telemetry they send. Declared attributes become typed columns of the SQL `devices` table.
//!
//! Profiles are shared by all tenants, so only unscoped operators and admins may write them.
//! A device may name a profile nobody has declared yet: an empty profile row is created for it
//! (audited as `profile.create`) and `put_profile` fills it in later.

use crate::RegistryError;
use crate::device::{check_name, check_text};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;

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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
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

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AttributeDecl {
    /// The attribute, and its column in the SQL `devices` table (not one of that table's own
    /// columns).
    pub name: String,
    pub r#type: ValueType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FieldDecl {
    /// The telemetry field (not `time` or `device`).
    pub name: String,
    pub r#type: ValueType,
    /// Its unit, for people (`°C`, `kWh`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    pub name: String,
    /// At most 1024 characters.
    #[serde(default)]
    pub description: Option<String>,
    /// The attributes its devices carry (at most 256).
    #[serde(default)]
    pub attributes: Vec<AttributeDecl>,
    /// The telemetry fields its devices send (at most 256).
    #[serde(default)]
    pub telemetry: Vec<FieldDecl>,
}

impl Profile {
    pub(crate) fn validate(&self) -> Result<(), RegistryError> {
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
