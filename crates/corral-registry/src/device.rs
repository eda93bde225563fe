//! Device types as the API sees them, and their validation.

use crate::RegistryError;
use chrono::{DateTime, Utc};
use corral_model::{DeviceId, TenantId};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};
use std::fmt;
use std::str::FromStr;

/// Limits that keep one device's metadata small enough to sit in every cache and SQL scan.
const MAX_TAGS: usize = 64;
const MAX_TAG_LEN: usize = 64;
const MAX_SITE_LEN: usize = 128;
const MAX_ATTRIBUTES_BYTES: usize = 16 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum DeviceStatus {
    Active,
    /// Kept registered but refused at every door until an operator sets it active again.
    Quarantined,
    /// Retired for good: refused at every door, unchangeable, kept for history.
    Decommissioned,
    /// Created by its first connection with a certificate of an auto-registering CA; refused at
    /// every door until an operator approves it (active) or rejects it (decommissioned).
    #[serde(rename = "pending-approval")]
    PendingApproval,
}

impl DeviceStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceStatus::Active => "active",
            DeviceStatus::Quarantined => "quarantined",
            DeviceStatus::Decommissioned => "decommissioned",
            DeviceStatus::PendingApproval => "pending-approval",
        }
    }
}

impl fmt::Display for DeviceStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for DeviceStatus {
    type Err = RegistryError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "active" => Ok(DeviceStatus::Active),
            "quarantined" => Ok(DeviceStatus::Quarantined),
            "decommissioned" => Ok(DeviceStatus::Decommissioned),
            "pending-approval" => Ok(DeviceStatus::PendingApproval),
            other => Err(RegistryError::BadInput(format!(
                "status: {other:?} is not one of active, quarantined, decommissioned, pending-approval"
            ))),
        }
    }
}

/// A registered device. `last_seen` is the newest of the stored value and the not yet flushed
/// in-memory one, so it is current to the last message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Device {
    pub id: DeviceId,
    pub profile: Option<String>,
    pub tenant: TenantId,
    pub site: Option<String>,
    pub attributes: Map<String, Value>,
    pub tags: Vec<String>,
    pub status: DeviceStatus,
    pub gateway: Option<DeviceId>,
    #[serde(default, with = "crate::time::rfc3339_opt")]
    #[schemars(with = "corral_model::schema::Rfc3339OrNull")]
    pub last_seen: Option<DateTime<Utc>>,
    #[serde(with = "crate::time::rfc3339")]
    #[schemars(with = "corral_model::schema::Rfc3339")]
    pub created_at: DateTime<Utc>,
    #[serde(with = "crate::time::rfc3339")]
    #[schemars(with = "corral_model::schema::Rfc3339")]
    pub updated_at: DateTime<Utc>,
}

impl Device {
    /// What rules need to know of it.
    pub fn facts(&self) -> corral_services::DeviceFacts {
        corral_services::DeviceFacts { attributes: self.attributes.clone(), ..self.scope_facts() }
    }

    /// What scopes and presence need to know of it: all but its attributes (they can be large).
    pub fn scope_facts(&self) -> corral_services::DeviceFacts {
        corral_services::DeviceFacts {
            id: self.id.to_string(),
            tenant: self.tenant.to_string(),
            profile: self.profile.clone(),
            site: self.site.clone(),
            tags: self.tags.clone(),
            attributes: Default::default(),
            last_seen_ns: self.last_seen.and_then(|t| t.timestamp_nanos_opt()),
        }
    }
}

/// Body of `POST /api/v1/devices`. `tenant` defaults to the caller's scope, else `default`.
/// A `profile` nobody has declared yet is accepted and registered as an empty profile, so devices
/// can be enrolled before their kind is described.
#[derive(Debug, Clone, PartialEq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NewDevice {
    pub id: DeviceId,
    pub profile: Option<String>,
    pub tenant: Option<TenantId>,
    pub site: Option<String>,
    pub attributes: Option<Map<String, Value>>,
    pub tags: Option<Vec<String>>,
    pub gateway: Option<DeviceId>,
}

impl NewDevice {
    /// A device with only an id; set the public fields for the rest.
    pub fn new(id: DeviceId) -> NewDevice {
        NewDevice { id, profile: None, tenant: None, site: None, attributes: None, tags: None, gateway: None }
    }
}

/// Body of `PATCH /api/v1/devices/{id}`: a merge patch. An absent field is left alone.
/// `profile`, `site` and `gateway` are clearable: `"site": null` removes the site.
/// `attributes` and `tags` replace the whole value when present (send `{}` / `[]` to empty them;
/// `null` for them, as for `status`, means "unchanged").
#[derive(Debug, Clone, Default, PartialEq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DevicePatch {
    #[serde(default, deserialize_with = "present")]
    pub profile: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    pub site: Option<Option<String>>,
    pub attributes: Option<Map<String, Value>>,
    pub tags: Option<Vec<String>>,
    pub status: Option<DeviceStatus>,
    #[serde(default, deserialize_with = "present")]
    pub gateway: Option<Option<DeviceId>>,
}

/// Distinguishes `"field": null` (`Some(None)`) from an absent field (`None`, via `default`).
fn present<'de, T: Deserialize<'de>, D: Deserializer<'de>>(d: D) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// Query of `GET /api/v1/devices`. Every filter narrows; `q` is a case-insensitive substring
/// match over id, site, profile, tags and the attributes' JSON text.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct DeviceFilter {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant: Option<TenantId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub site: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<DeviceStatus>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub q: Option<String>,
    /// Page size: default 100, at most 1000.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
    /// Cursor: the `next` of the previous page (the last id on it). Pages are ordered by id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
    /// Devices carrying this tag.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// Order: `id` (default), `site`, `profile`, `status`, `tenant`, `last_seen`, `created_at`;
    /// with `desc=true` descending. Any order but ascending id pages with `offset`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sort: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub desc: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offset: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct DevicePage {
    pub devices: Vec<Device>,
    /// Devices matching the filter across all pages.
    pub total: u64,
    /// Pass as `after` for the next page (id order), or as `offset` (any other order); `None` on
    /// the last page.
    pub next: Option<String>,
}

/// What a transport needs to know about an authenticated device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceIdentity {
    pub id: DeviceId,
    pub tenant: TenantId,
    pub status: DeviceStatus,
    pub gateway: Option<DeviceId>,
}

/// Names of profiles, attributes and telemetry fields: the identifier alphabet of the contract,
/// so they can become SQL columns and MQTT topic segments without quoting surprises.
pub(crate) fn check_name(field: &str, value: &str, max: usize) -> Result<(), RegistryError> {
    let ok = !value.is_empty()
        && value.len() <= max
        && value.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(RegistryError::BadInput(format!(
            "{field}: {value:?} must be 1-{max} characters of letters, digits, '.', '_' and '-'"
        )))
    }
}

/// Free text shown to people (sites, tags, names): anything printable, bounded.
pub(crate) fn check_text(field: &str, value: &str, max: usize) -> Result<(), RegistryError> {
    let len = value.chars().count();
    if len == 0 || len > max || value.chars().any(char::is_control) || value.trim() != value {
        return Err(RegistryError::BadInput(format!(
            "{field}: must be 1-{max} characters, without control characters or surrounding spaces"
        )));
    }
    Ok(())
}

pub(crate) fn check_site(site: &str) -> Result<(), RegistryError> {
    check_text("site", site, MAX_SITE_LEN)
}

/// Validates tags and drops duplicates, keeping first-seen order (order is the user's).
pub(crate) fn normalize_tags(tags: Vec<String>) -> Result<Vec<String>, RegistryError> {
    if tags.len() > MAX_TAGS {
        return Err(RegistryError::BadInput(format!("tags: at most {MAX_TAGS} tags")));
    }
    let mut out: Vec<String> = Vec::with_capacity(tags.len());
    for t in tags {
        check_text("tags", &t, MAX_TAG_LEN)?;
        if !out.contains(&t) {
            out.push(t);
        }
    }
    Ok(out)
}

/// The attributes' stored JSON text, refusing oversized documents.
pub(crate) fn attributes_json(attributes: &Map<String, Value>) -> Result<String, RegistryError> {
    let text = serde_json::to_string(attributes).map_err(|e| RegistryError::BadInput(format!("attributes: {e}")))?;
    if text.len() > MAX_ATTRIBUTES_BYTES {
        return Err(RegistryError::BadInput(format!(
            "attributes: {} bytes of JSON, at most {MAX_ATTRIBUTES_BYTES} allowed",
            text.len()
        )));
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patch_tells_null_from_absent() {
        let p: DevicePatch = serde_json::from_str(r#"{"site": null, "tags": ["a"]}"#).unwrap();
        assert_eq!(p.site, Some(None));
        assert_eq!(p.profile, None);
        assert_eq!(p.tags, Some(vec!["a".to_string()]));
        let p: DevicePatch = serde_json::from_str(r#"{"gateway": "gw-1"}"#).unwrap();
        assert_eq!(p.gateway, Some(Some(DeviceId::new("gw-1").unwrap())));
        assert!(serde_json::from_str::<DevicePatch>(r#"{"tenant": "x"}"#).is_err());
    }

    #[test]
    fn new_device_rejects_unknown_fields_and_bad_ids() {
        assert!(serde_json::from_str::<NewDevice>(r#"{"id": "a", "colour": "red"}"#).is_err());
        assert!(serde_json::from_str::<NewDevice>(r#"{"id": "a/b"}"#).is_err());
        let d: NewDevice = serde_json::from_str(r#"{"id": "truck-1", "tenant": "acme"}"#).unwrap();
        assert_eq!(d.tenant.unwrap().as_str(), "acme");
    }

    #[test]
    fn tags_are_validated_and_deduplicated() {
        let t = normalize_tags(vec!["b".into(), "a".into(), "b".into()]).unwrap();
        assert_eq!(t, vec!["b", "a"]);
        assert!(normalize_tags(vec!["".into()]).is_err());
        assert!(normalize_tags(vec!["x\n".into()]).is_err());
        assert!(check_site(" padded").is_err());
        assert!(check_name("profile", "hvac.v2", 64).is_ok());
        assert!(check_name("profile", "has space", 64).is_err());
    }
}
