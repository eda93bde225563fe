//! The asset registry: devices, profiles (device kinds), tenants, device credentials (tokens,
//! pre-shared keys, certificates), API tokens and console users with roles and tenant scope,
//! and the audit log.
//!
//! # Its place on the data path
//!
//! Every door (HTTP ingest, MQTT, CoAP) asks the registry one question per request or
//! connection: *who is this, and may they?* (through `corral_pki::Identities`, the platform's
//! `Identity` service, which asks [`DeviceTokens::authenticate_device`],
//! [`ApiTokens::authenticate_api`], [`PreSharedKeys::authenticate_psk`] and [`Certificates`]),
//! answered from in-memory caches that every relevant change invalidates, so the hot path does
//! no SQL. After every durable write the pipeline notes that the device was heard from
//! ([`LastSeen`], in memory; persisted in batches). The REST API and the console manage the
//! registry, always on behalf of a [`Principal`] whose [`Role`] and tenant scope every call
//! checks. The SQL engine reads it as the `devices` and `certificates` tables ([`DevicesTable`],
//! [`CertificatesTable`]); what devices report about themselves arrives through its
//! `corral_services::Reported`.
//!
//! # Shape
//!
//! - [`registry`]: the contract, one trait per concern, and [`Registry`], all of them together.
//!   Callers hold an `Arc<dyn Registry>` and never see SQL.
//! - [`SqliteRegistry`]: the implementation in one SQLite file (the `sqlite` module keeps every
//!   statement). A PostgreSQL implementation for cluster mode goes beside it.
//! - The records: [`Device`], [`NewDevice`], [`DevicePatch`], [`DeviceFilter`], [`DevicePage`],
//!   [`DeviceStatus`], [`DeviceIdentity`] (what a door learns about a device); [`Principal`],
//!   [`Role`], [`ApiToken`], [`NewApiToken`], [`User`], [`Session`]; [`Profile`],
//!   [`AttributeDecl`], [`FieldDecl`], [`Tenant`], [`AuditEntry`]; certificate records.
//! - [`RegistryError`], mapped once to [`corral_model::WireError`] by [`RegistryError::to_wire`].
//!
//! Secrets (device tokens `cdt_…`, API tokens `cat_…`, session secrets) are shown once and stored
//! only as SHA-256; passwords as argon2id. Every change writes an audit row in the same
//! transaction as the change.
//!
//! ```
//! use corral_model::DeviceId;
//! use corral_registry::prelude::*;
//! use corral_registry::{NewDevice, RegistryError, SqliteRegistry};
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let registry = SqliteRegistry::open_in_memory().await?;
//! // First start: the administrator's token, printed once.
//! let admin_secret = registry.bootstrap_admin(None).await?.expect("fresh registry");
//! let admin = registry.authenticate_api(&admin_secret).await?;
//!
//! let new = NewDevice::new(DeviceId::new("truck-7").unwrap());
//! let (device, device_token) = registry.create_device(&admin, new).await?;
//! assert_eq!(device.tenant.as_str(), "default");
//!
//! // What an ingest door does with the token a device presents.
//! let who = registry.authenticate_device(&device_token).await?;
//! assert_eq!(who.id, device.id);
//! # Ok::<(), RegistryError>(())
//! # }).unwrap();
//! ```

mod audit;
mod auth;
mod broker_users;
mod cache;
mod certificates;
mod device;
mod error;
mod presence;
mod profiles;
pub mod registry;
mod selection;
mod sqlite;
mod tables;
mod tenants;
mod time;
mod tokens;
mod users;

pub use audit::AuditEntry;
pub use auth::{DEVICE_TOKEN_PREFIX, PSK_MAX_BYTES, PSK_MIN_BYTES, Principal, Role};
pub use broker_users::{BrokerUser, MAX_TOPIC_RULES};
pub use certificates::{AutoRegister, CertificateAuthority, DeviceCertificate, NewCertificateAuthority, NewDeviceCertificate};
pub use device::{Device, DeviceFilter, DeviceIdentity, DevicePage, DevicePatch, DeviceStatus, NewDevice};
pub use error::RegistryError;
pub use profiles::{AttributeDecl, FieldDecl, Profile, ValueType};
pub use registry::{
    ApiTokens, AuditTrail, BrokerUserDirectory, Certificates, ConsoleUsers, DeviceInventory, DeviceSearch, DeviceTokens,
    LastSeen, PreSharedKeys, ProfileCatalog, Registry, TenantDirectory,
};
pub use selection::{Target, select_devices};
pub use sqlite::SqliteRegistry;
pub use tables::{CertificatesTable, DevicesTable};
pub use tenants::Tenant;
pub use tokens::{ApiToken, NewApiToken};
pub use users::{MIN_PASSWORD_CHARS, SESSION_HOURS, Session, User, generate_password};

/// The registry's traits, for code that holds a concrete [`SqliteRegistry`] (tests, tools) and
/// calls its methods directly. Code holding an `Arc<dyn Registry>` needs no import.
pub mod prelude {
    pub use crate::registry::{
        ApiTokens as _, AuditTrail as _, BrokerUserDirectory as _, Certificates as _, ConsoleUsers as _, DeviceInventory as _,
        DeviceSearch as _, DeviceTokens as _, LastSeen as _, PreSharedKeys as _, ProfileCatalog as _, Registry as _,
        TenantDirectory as _,
    };
}

use std::sync::{Mutex, MutexGuard};

/// Locks a std mutex, ignoring poisoning: every critical section here leaves its map consistent
/// (single inserts and removals), so a panic elsewhere must not take authentication down with it.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
