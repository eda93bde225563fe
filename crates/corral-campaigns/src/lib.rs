//! Firmware and configuration campaigns: staged rollouts to a selection of devices that stop
//! themselves when devices start failing.
//!
//! Place on the path: a fleet-operations room beside the registry, off the telemetry corridor. It
//! uses the other rooms through their services: the tracked commands (`IssueCommands`) notify a
//! device of new firmware, its twin carries a configuration and the device's progress reports,
//! the registry records the firmware version it ends with.
//!
//! - [`artifact`]: firmware images, streamed to disk, stored by SHA-256, signed per tenant
//!   (Ed25519), downloadable with `Range` and by short-lived per-device URLs ([`Artifacts`]).
//! - [`model`]: [`Campaign`], its [`Plan`] (waves, concurrency, thresholds, window), and the
//!   states a campaign and each of its devices move through.
//! - [`Rollouts`]: the task that follows every open campaign; a device reports its steps in its
//!   reported twin, `{"campaigns": {"<id>": {"state": "installing"}}}` (`docs/campaigns.md`).
//! - [`CampaignBook`], [`ArtifactCatalog`]: the durable record; [`SqliteCampaigns`] keeps it in
//!   `<data-dir>/`[`DATABASE_FILE`].
//! - [`CampaignsTable`], [`CampaignDevicesTable`]: the SQL tables `campaigns` and `campaign_devices`.

pub mod artifact;
mod book;
mod error;
mod fleet;
mod metrics;
pub mod model;
mod rollout;
mod sql;
mod sqlite;

pub use artifact::{Artifact, ArtifactManifest, Artifacts, NewArtifact};
pub use book::{ArtifactCatalog, CampaignBook, WaveCount};
pub use error::CampaignError;
pub use fleet::{Fleet, satisfies};
pub use metrics::RolloutMetrics;
pub use model::{Campaign, CampaignDevice, CampaignState, DeviceState, NewCampaign, Plan, Rollout};
pub use rollout::{Action, FIRMWARE_COMMAND, MAX_CAMPAIGN_DEVICES, Progress, Rollouts};
pub use sql::{CampaignDevicesTable, CampaignsTable};
pub use sqlite::{DATABASE_FILE, SqliteCampaigns};

/// The `[campaigns]` section of the server config.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct CampaignSettings {
    /// The largest firmware artifact an upload may carry, in MiB (413 above it; nothing is kept).
    pub max_artifact_mb: u64,
}

impl Default for CampaignSettings {
    fn default() -> Self {
        CampaignSettings { max_artifact_mb: artifact::DEFAULT_MAX_BYTES >> 20 }
    }
}

impl CampaignSettings {
    pub fn validate(&self) -> Result<(), CampaignError> {
        if self.max_artifact_mb == 0 {
            return Err(CampaignError::BadInput("campaigns.max_artifact_mb must be at least 1".into()));
        }
        Ok(())
    }

    pub fn max_artifact_bytes(&self) -> u64 {
        self.max_artifact_mb.saturating_mul(1 << 20)
    }
}
