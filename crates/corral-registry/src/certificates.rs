//! Certificate authorities and device certificates as records ([`crate::Certificates`]).

use crate::DeviceStatus;
use chrono::{DateTime, Utc};
use corral_model::{DeviceId, TenantId};
use serde::Serialize;

/// A CA a tenant trusts for device certificates.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct CertificateAuthority {
    pub id: String,
    pub tenant: TenantId,
    pub name: String,
    /// True when Corral holds its key and issues certificates; false for an operator's own CA
    /// that Corral only verifies against.
    pub managed: bool,
    pub subject: String,
    pub fingerprint: String,
    #[serde(with = "crate::time::rfc3339")]
    #[schemars(with = "corral_model::schema::Rfc3339")]
    pub not_after: DateTime<Utc>,
    #[serde(with = "crate::time::rfc3339")]
    #[schemars(with = "corral_model::schema::Rfc3339")]
    pub created_at: DateTime<Utc>,
    pub created_by: String,
    pub certificate: String,
    /// Just-in-time registration: the first connection of an unknown device with a certificate
    /// of this CA creates it, with `register_profile` and `register_status`.
    pub auto_register: bool,
    pub register_profile: Option<String>,
    pub register_status: DeviceStatus,
}

/// How a CA registers the unknown devices its certificates name.
#[derive(Debug, Clone, PartialEq)]
pub struct AutoRegister {
    pub profile: Option<String>,
    /// `Active`, or `PendingApproval` for an operator to approve first.
    pub status: DeviceStatus,
}

/// A CA to record (its certificate already parsed by the caller).
#[derive(Debug, Clone)]
pub struct NewCertificateAuthority {
    pub tenant: Option<TenantId>,
    pub name: String,
    pub certificate: String,
    pub subject: String,
    pub fingerprint: String,
    pub not_after_ms: i64,
    pub managed: bool,
    pub auto_register: Option<AutoRegister>,
}

/// A device certificate: issued by a managed CA, or first seen on an mTLS connection.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct DeviceCertificate {
    pub fingerprint: String,
    pub serial: String,
    pub device: DeviceId,
    pub ca: String,
    #[serde(with = "crate::time::rfc3339")]
    #[schemars(with = "corral_model::schema::Rfc3339")]
    pub not_before: DateTime<Utc>,
    #[serde(with = "crate::time::rfc3339")]
    #[schemars(with = "corral_model::schema::Rfc3339")]
    pub not_after: DateTime<Utc>,
    #[serde(with = "crate::time::rfc3339")]
    #[schemars(with = "corral_model::schema::Rfc3339")]
    pub issued_at: DateTime<Utc>,
    pub issued_by: String,
    #[serde(with = "crate::time::rfc3339_opt")]
    #[schemars(with = "corral_model::schema::Rfc3339OrNull")]
    pub revoked_at: Option<DateTime<Utc>>,
    pub revoked_by: Option<String>,
}

/// A certificate to record for a device.
#[derive(Debug, Clone)]
pub struct NewDeviceCertificate {
    pub fingerprint: String,
    pub serial: String,
    pub ca: String,
    pub not_before_ms: i64,
    pub not_after_ms: i64,
}
