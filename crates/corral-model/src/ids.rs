//! Validated names. A value of these types is always well-formed, so nothing downstream re-checks.

use serde::{Deserialize, Deserializer, Serialize};
use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} {value:?} is invalid: {rule}")]
pub struct IdError {
    pub what: &'static str,
    pub value: String,
    pub rule: &'static str,
}

fn check_name(what: &'static str, value: &str, max_len: usize) -> Result<(), IdError> {
    let err = |rule| IdError { what, value: value.chars().take(140).collect(), rule };
    if value.is_empty() || value.len() > max_len {
        return Err(err(if max_len == 128 { "must be 1-128 characters" } else { "must be 1-64 characters" }));
    }
    if !value.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')) {
        return Err(err("only letters, digits, '.', '_' and '-' are allowed"));
    }
    Ok(())
}

/// The JSON Schema of a validated name: a string of at most `max` characters of `[A-Za-z0-9._-]`.
fn name_schema(description: &str, max: u32) -> schemars::Schema {
    schemars::json_schema!({
        "type": "string",
        "minLength": 1,
        "maxLength": max,
        "pattern": "^[A-Za-z0-9._-]+$",
        "description": description,
    })
}

macro_rules! name_type {
    ($(#[$doc:meta])* $name:ident, $what:literal, $max:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub fn new(value: impl Into<String>) -> Result<Self, IdError> {
                let value = value.into();
                check_name($what, &value, $max)?;
                Ok(Self(value))
            }
            pub fn as_str(&self) -> &str {
                &self.0
            }
            pub fn into_string(self) -> String {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl schemars::JsonSchema for $name {
            fn schema_name() -> std::borrow::Cow<'static, str> {
                stringify!($name).into()
            }
            fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
                name_schema(concat!("A ", $what, ": 1-", stringify!($max), " characters of [A-Za-z0-9._-]."), $max)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                $name::new(s).map_err(serde::de::Error::custom)
            }
        }
    };
}

name_type!(
    /// A device's id: 1-128 characters of `[A-Za-z0-9._-]`, unique across the platform.
    DeviceId, "device id", 128
);
name_type!(
    /// A tenant (line of business or customer): 1-64 characters of `[A-Za-z0-9._-]`.
    TenantId, "tenant", 64
);

impl TenantId {
    pub fn default_tenant() -> Self {
        TenantId("default".to_string())
    }
}

/// A telemetry table (measurement) name: 1-64 characters of `[A-Za-z0-9._-]` starting with a
/// letter or digit (so it is a safe directory name: never `.` or `..`), and not one of the
/// platform's own tables (`devices`...), so it can never shadow them in SQL.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct TableName(String);

/// Names SQL resolves to the platform's own tables; telemetry may not use them.
// `twins` is a platform table in SQL; `commands`, `campaigns` and `campaign_devices` will be
// (issue 18): reserved now, so no telemetry lands in a table SQL could never show again.
pub const RESERVED_TABLES: &[&str] =
    &["devices", "alarms", "events", "audit", "certificates", "twins", "commands", "campaigns", "campaign_devices"];

impl TableName {
    pub fn new(value: impl Into<String>) -> Result<Self, IdError> {
        let value = value.into();
        check_name("table", &value, 64)?;
        if !value.starts_with(|c: char| c.is_ascii_alphanumeric()) {
            return Err(IdError { what: "table", value, rule: "must start with a letter or digit" });
        }
        if RESERVED_TABLES.contains(&value.to_ascii_lowercase().as_str()) {
            return Err(IdError { what: "table", value, rule: "is reserved for the platform" });
        }
        Ok(TableName(value))
    }
    pub fn telemetry() -> Self {
        TableName("telemetry".to_string())
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl schemars::JsonSchema for TableName {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "TableName".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "minLength": 1,
            "maxLength": 64,
            "pattern": "^[A-Za-z0-9][A-Za-z0-9._-]*$",
            "description": "A telemetry table: 1-64 characters of [A-Za-z0-9._-], starting with a letter or digit; not one of the platform's own tables.",
        })
    }
}

impl fmt::Display for TableName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for TableName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        TableName::new(String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_ids_follow_the_contract() {
        assert!(DeviceId::new("truck-7.a_b").is_ok());
        assert!(DeviceId::new("a".repeat(128)).is_ok());
        assert!(DeviceId::new("a".repeat(129)).is_err());
        assert!(DeviceId::new("").is_err());
        assert!(DeviceId::new("a/b").is_err());
        assert!(DeviceId::new("naïve").is_err());
    }

    #[test]
    fn tables_cannot_shadow_platform_tables() {
        assert!(TableName::new("devices").is_err());
        assert!(TableName::new("DEVICES").is_err());
        assert!(TableName::new("_internal").is_err());
        assert!(TableName::new("..").is_err(), "a table name is a directory name");
        assert!(TableName::new(".hidden").is_err());
        assert!(TableName::new("readings").is_ok());
    }
}
