//! The durable record of artifacts and campaigns, one trait each, so the SQLite book of the
//! single binary and a PostgreSQL one in cluster mode are interchangeable. `scope` is a caller's
//! tenant scope (`None`: every tenant); another tenant's record is `NotFound`, exactly as one that
//! does not exist.

use crate::CampaignError;
use crate::artifact::Artifact;
use crate::model::{Campaign, CampaignDevice, DeviceState};
use async_trait::async_trait;
use corral_model::DeviceId;

#[async_trait]
pub trait ArtifactCatalog: Send + Sync {
    /// Records an artifact; `Conflict` when its tenant has one of that name and version already.
    async fn add_artifact(&self, artifact: &Artifact) -> Result<(), CampaignError>;
    async fn artifact(&self, id: &str, scope: Option<&str>) -> Result<Artifact, CampaignError>;
    /// Newest first, after the artifact `after` (the previous page's last).
    async fn artifacts(&self, scope: Option<&str>, after: Option<&str>, limit: usize) -> Result<Vec<Artifact>, CampaignError>;
}

/// How many devices of a campaign are in each state, per wave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WaveCount {
    pub wave: u32,
    pub state: DeviceState,
    pub devices: u64,
}

#[async_trait]
pub trait CampaignBook: Send + Sync {
    /// Records a campaign and its devices in one transaction.
    async fn add_campaign(&self, campaign: &Campaign, devices: &[CampaignDevice]) -> Result<(), CampaignError>;
    async fn campaign(&self, id: &str, scope: Option<&str>) -> Result<Campaign, CampaignError>;
    /// Newest first, after the campaign `after`.
    async fn campaigns(&self, scope: Option<&str>, after: Option<&str>, limit: usize) -> Result<Vec<Campaign>, CampaignError>;
    /// Campaigns that are not final, and final ones with devices still between notified and
    /// final: what the rollout follows after a start.
    async fn open_campaigns(&self) -> Result<Vec<Campaign>, CampaignError>;
    /// Writes a campaign's state, reason and times.
    async fn save_campaign(&self, campaign: &Campaign) -> Result<(), CampaignError>;
    /// Adds devices (ones already in the campaign are left as they are).
    async fn add_devices(&self, devices: &[CampaignDevice]) -> Result<(), CampaignError>;
    /// Every device of a campaign, in notification order.
    async fn devices(&self, campaign: &str) -> Result<Vec<CampaignDevice>, CampaignError>;
    /// A page of a campaign's devices in device order after `after`, optionally in one state.
    async fn device_page(
        &self,
        campaign: &str,
        state: Option<DeviceState>,
        after: Option<&DeviceId>,
        limit: usize,
    ) -> Result<Vec<CampaignDevice>, CampaignError>;
    /// Every campaign's devices in `scope`, a page at a time (campaign, then device order), for SQL.
    async fn all_devices(
        &self,
        scope: Option<&str>,
        after: Option<(&str, &DeviceId)>,
        limit: usize,
    ) -> Result<Vec<CampaignDevice>, CampaignError>;
    /// Writes devices' state, reason, command and times, in one transaction.
    async fn save_devices(&self, devices: &[CampaignDevice]) -> Result<(), CampaignError>;
    async fn counts(&self, campaign: &str) -> Result<Vec<WaveCount>, CampaignError>;
    /// The most frequent failure reasons, with how many devices gave each.
    async fn failure_reasons(&self, campaign: &str, limit: usize) -> Result<Vec<(String, u64)>, CampaignError>;
}
