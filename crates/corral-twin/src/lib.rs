//! Device twins: what an application wants a device to be (`desired`) beside what the device says
//! it is (`reported`), and what is still to do (`delta`).
//!
//! Place on the path: a fleet-operations room beside the registry, off the telemetry corridor.
//! Doors (MQTT `devices/<id>/twin/…`, CoAP) speak the device side through [`TwinDoors`], the
//! platform's `DeviceTwins` service: they hand reported patches to it and acknowledge only after
//! it returned (the update is then durable), and push each new desired version to their devices.
//! The REST API patches [`DesiredTwin`] for applications. [`follow_devices`] gives every
//! registered device its twin and keeps it on its device's profile. Telemetry never comes here,
//! and nothing here is on the ingest hot path.
//!
//! - [`Twin`]: one device's twin; each side is a [`TwinDocument`] (a JSON object, a version that
//!   grows with each change, the time each top-level key last changed); [`delta`] defines the delta.
//! - [`merge`]: RFC 7386 JSON merge patch, the only way a document changes, and the limits
//!   ([`TwinSettings`]) every patch and document is held to.
//! - Profile defaults ([`ProfileDefaults`]): a profile's desired document that its devices inherit
//!   key by key unless they override the key ([`effective_desired`]).
//! - [`DesiredTwin::changes_since`]: the patches since the version a device last applied, from a
//!   bounded history, or the whole document when they are no longer kept ([`DesiredChanges`]).
//! - [`TwinStore`] = [`TwinLifecycle`] + [`TwinReader`] + [`DesiredTwin`] + [`ReportedTwin`] +
//!   [`ProfileDefaults`], one trait per concern; [`SqliteTwins`] implements them in
//!   `<data-dir>/`[`DATABASE_FILE`] (WAL, `synchronous = FULL`).
//! - [`TwinsTable`]: the `twins` SQL table (documents as JSON text, versions, times), which joins
//!   to `devices`.
//!
//! ```
//! use corral_model::{DeviceId, TenantId};
//! use corral_services::ManualClock;
//! use corral_twin::{DesiredTwin, ReportedTwin, SqliteTwins, TwinLifecycle, TwinReader, TwinSettings};
//! use serde_json::json;
//! use std::sync::Arc;
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let twins = SqliteTwins::open_in_memory(Arc::new(ManualClock::at(0)), TwinSettings::default()).await?;
//! let truck = DeviceId::new("truck-7").unwrap();
//! twins.ensure_twin(&truck, &TenantId::default_tenant(), None).await?;
//!
//! let patch = |v: serde_json::Value| v.as_object().unwrap().clone();
//! let desired = twins.patch_desired(&truck, None, Some(0), &patch(json!({"interval_s": 30, "fw": "2.1"}))).await?;
//! assert_eq!(desired.version, 1);
//! twins.patch_reported(&truck, &patch(json!({"interval_s": 30, "fw": "2.0"}))).await?;
//!
//! let twin = twins.twin(&truck, Some("default")).await?;
//! assert_eq!(serde_json::Value::Object(twin.delta), json!({"fw": "2.1"}));
//! # Ok::<(), corral_twin::TwinError>(())
//! # }).unwrap();
//! ```

mod doors;
mod error;
mod follow;
pub mod merge;
mod sql;
mod sqlite;
mod store;
mod twin;

pub use doors::TwinDoors;
pub use error::TwinError;
pub use follow::{DeviceDirectory, TwinOwner, follow_devices};
pub use merge::{Document, merge_patch, parse_patch};
pub use sql::TwinsTable;
pub use sqlite::SqliteTwins;
pub use store::{DesiredTwin, ProfileDefaults, ReportedTwin, TwinLifecycle, TwinReader, TwinStore};
pub use twin::{DesiredChanges, DesiredPatch, FullReason, ProfileDesired, Twin, TwinDocument, delta, effective_desired};

use serde::{Deserialize, Serialize};

/// The twin database's file name in the data directory.
pub const DATABASE_FILE: &str = "twins.db";

/// The `[twin]` section of the server config: the limits on twin documents.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct TwinSettings {
    /// The largest patch, and the largest desired or reported document a patch may produce, as
    /// JSON text in bytes. Over it, a patch is refused (HTTP 413) and nothing is stored.
    pub max_document_bytes: usize,
    /// How deeply objects and arrays may nest in a patch (the document itself is level 1).
    pub max_depth: usize,
    /// How many desired patches are kept per device for "changes since version N"; a device
    /// further behind gets the whole document.
    pub history_per_device: usize,
}

impl Default for TwinSettings {
    fn default() -> Self {
        // 32 KiB and 10 levels are the limits the peers document for a twin section (Azure IoT
        // Hub); a twin is configuration, not telemetry.
        TwinSettings { max_document_bytes: 32 * 1024, max_depth: 10, history_per_device: 100 }
    }
}

impl TwinSettings {
    /// Refuses settings that would make every patch fail.
    pub fn validate(&self) -> Result<(), TwinError> {
        if self.max_document_bytes < 2 || self.max_depth < 1 {
            return Err(TwinError::BadInput("twin.max_document_bytes must be at least 2 and twin.max_depth at least 1".into()));
        }
        Ok(())
    }
}
