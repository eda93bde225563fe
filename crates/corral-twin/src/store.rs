//! The twin store, one trait per concern, so a door that only takes reported updates or only
//! watches desired changes can be handed just that. [`crate::SqliteTwins`] implements them all;
//! a PostgreSQL implementation goes beside it in cluster mode.
//!
//! Every write is durable when it returns: the reported update a device is acknowledged for, or
//! the desired change an operator saw succeed, survives `kill -9`.

use crate::TwinError;
use crate::merge::Document;
use crate::twin::{DesiredChanges, ProfileDesired, Twin, TwinDocument};
use async_trait::async_trait;
use corral_model::{DeviceId, TenantId};
use corral_services::{DesiredNotice, ReportedNotice};
use tokio::sync::broadcast;

/// Creating, moving and removing twins; the registry calls these when it creates a device, changes
/// its tenant or profile, or deletes it.
#[async_trait]
pub trait TwinLifecycle: Send + Sync {
    /// Creates the device's twin (empty reported document, the profile's defaults as desired) or,
    /// when it exists, records its current tenant and profile. Moving to another profile changes
    /// the effective desired document, which is then a new desired version like any other change.
    async fn ensure_twin(&self, device: &DeviceId, tenant: &TenantId, profile: Option<&str>) -> Result<Twin, TwinError>;

    /// Removes the twin and its history. `false` when there was none.
    async fn remove_twin(&self, device: &DeviceId) -> Result<bool, TwinError>;
}

/// Reading twins. `scope` is the caller's tenant scope (`None`: every tenant); a twin of another
/// tenant is [`TwinError::NotFound`], exactly as a device that does not exist.
#[async_trait]
pub trait TwinReader: Send + Sync {
    async fn twin(&self, device: &DeviceId, scope: Option<&str>) -> Result<Twin, TwinError>;

    /// Up to `limit` twins in `scope`, ordered by device id, starting after `after`: pages for
    /// the SQL table and for a door that republishes every desired document.
    async fn list_twins(&self, scope: Option<&str>, after: Option<&DeviceId>, limit: usize) -> Result<Vec<Twin>, TwinError>;
}

/// The desired document: what applications want a device to be.
#[async_trait]
pub trait DesiredTwin: Send + Sync {
    /// Merges `patch` (RFC 7386) into the device's own desired keys and returns the effective
    /// desired document after it. With `expected_version`, the patch applies only if the desired
    /// version is still that one, else [`TwinError::Conflict`] (optimistic concurrency for
    /// read-modify-write clients, `If-Match` over HTTP). A patch that changes nothing returns the
    /// current document and version.
    async fn patch_desired(
        &self,
        device: &DeviceId,
        scope: Option<&str>,
        expected_version: Option<u64>,
        patch: &Document,
    ) -> Result<TwinDocument, TwinError>;

    /// What changed since the device applied desired version `since`: the patches, if the
    /// bounded history still holds them all, else the full document and why.
    async fn changes_since(&self, device: &DeviceId, since: u64) -> Result<DesiredChanges, TwinError>;

    /// Every durable desired change from now on: `(device, new version)`. Subscribe *before*
    /// reading the current document, then ignore notices at or below the version read, and no
    /// change can fall between the read and the subscription. A receiver that lags (the channel
    /// is bounded) gets `RecvError::Lagged` and should read its devices' twins again.
    fn subscribe(&self) -> broadcast::Receiver<DesiredNotice>;
}

/// The reported document: what a device says it is.
#[async_trait]
pub trait ReportedTwin: Send + Sync {
    /// Merges the device's `patch` (RFC 7386: `null` deletes a key) into its reported document
    /// and returns the document after it. Durable when it returns, so a door may acknowledge.
    async fn patch_reported(&self, device: &DeviceId, patch: &Document) -> Result<TwinDocument, TwinError>;

    /// Every durable reported change from now on, with the patch that made it. A receiver that
    /// lags gets `RecvError::Lagged` and should read the reported documents it follows again.
    fn reported_changes(&self) -> broadcast::Receiver<ReportedNotice>;
}

/// Desired defaults per profile, inherited by the profile's devices key by key.
#[async_trait]
pub trait ProfileDefaults: Send + Sync {
    /// The profile's defaults; an empty document at version 0 when it has none.
    async fn profile_defaults(&self, profile: &str) -> Result<ProfileDesired, TwinError>;

    /// Merges `patch` into the profile's defaults, and in the same transaction gives every twin
    /// of the profile whose effective desired document changed a new desired version (and a
    /// history entry and a notice), so a device is never left behind by a profile change.
    async fn patch_profile_defaults(&self, profile: &str, patch: &Document) -> Result<ProfileDesired, TwinError>;
}

/// All the twin store's concerns, for the one place (the binary) that builds the store.
#[async_trait]
pub trait TwinStore: TwinLifecycle + TwinReader + DesiredTwin + ReportedTwin + ProfileDefaults {
    /// Closes the store (checkpointing the database); calls after this fail.
    async fn close(&self);
}
