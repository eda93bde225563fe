//! Certificate authorities and device certificates as records ([`crate::Certificates`]).

use crate::DeviceStatus;
use chrono::{DateTime, Utc};
use corral_model::{DeviceId, TenantId};
use serde::Serialize;

/// A CA a tenant trusts for device certificates.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct CertificateAuthority {
    /// `ca-` and 12 hex digits.
    pub id: String,
    /// The tenant whose devices' certificates it vouches for.
    pub tenant: TenantId,
    /// A name for people.
    pub name: String,
    /// True when Corral holds its key and issues certificates; false for an operator's own CA
    /// that Corral only verifies against.
    pub managed: bool,
    /// The certificate's subject (distinguished name).
    pub subject: String,
    /// SHA-256 of the certificate (DER), lowercase hex.
    pub fingerprint: String,
    /// When the CA certificate expires.
    #[serde(with = "crate::time::rfc3339")]
    #[schemars(with = "corral_model::schema::Rfc3339")]
    pub not_after: DateTime<Utc>,
    #[serde(with = "crate::time::rfc3339")]
    #[schemars(with = "corral_model::schema::Rfc3339")]
    pub created_at: DateTime<Utc>,
    /// Who registered it (a token's or user's name).
    pub created_by: String,
    /// The CA certificate (PEM), for devices and servers to trust.
    pub certificate: String,
    /// Just-in-time registration: the first connection of an unknown device with a certificate
    /// of this CA creates it, with `register_profile` and `register_status`.
    pub auto_register: bool,
    /// The profile devices registered by their certificate get.
    pub register_profile: Option<String>,
    /// The status they start in: `active`, or `pending-approval`.
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
    /// SHA-256 of the certificate (DER), lowercase hex.
    pub fingerprint: String,
    /// The serial number, lowercase hex.
    pub serial: String,
    pub device: DeviceId,
    /// The id of the CA that issued it.
    pub ca: String,
    #[serde(with = "crate::time::rfc3339")]
    #[schemars(with = "corral_model::schema::Rfc3339")]
    pub not_before: DateTime<Utc>,
    #[serde(with = "crate::time::rfc3339")]
    #[schemars(with = "corral_model::schema::Rfc3339")]
    pub not_after: DateTime<Utc>,
    /// When Corral issued it, or first saw it on a connection.
    #[serde(with = "crate::time::rfc3339")]
    #[schemars(with = "corral_model::schema::Rfc3339")]
    pub issued_at: DateTime<Utc>,
    /// Who issued it (a token's or user's name; `first use` for one first seen on a connection).
    pub issued_by: String,
    /// When it was revoked; null while it is valid.
    #[serde(with = "crate::time::rfc3339_opt")]
    #[schemars(with = "corral_model::schema::Rfc3339OrNull")]
    pub revoked_at: Option<DateTime<Utc>>,
    /// Who revoked it; null while it is valid.
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
