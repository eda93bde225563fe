//! The book in one SQLite file, `<data-dir>/campaigns.db` ([`SqliteCampaigns`]), with the SQL
//! kept in this module. Durable (`corral_sqlite::open`): a campaign answered `201 Created`, and
//! every device step the rollout wrote, survive a `kill -9`.

mod rows;

use crate::CampaignError;
use crate::artifact::Artifact;
use crate::book::{ArtifactCatalog, CampaignBook, WaveCount};
use crate::model::{Campaign, CampaignDevice, DeviceState};
use async_trait::async_trait;
use corral_model::DeviceId;
use corral_sqlite::Migration;
use sqlx::SqlitePool;
use std::path::Path;

/// The book's file name in the data directory.
pub const DATABASE_FILE: &str = "campaigns.db";

const MIGRATIONS: &[Migration] = &[Migration { version: 1, sql: include_str!("../../migrations/0001_init.sql") }];
const MAX_CONNECTIONS: u32 = 4;

/// The SQLite book. Clone it freely: clones share one pool.
#[derive(Debug, Clone)]
pub struct SqliteCampaigns {
    pool: SqlitePool,
}

impl SqliteCampaigns {
    pub async fn open(path: &Path, now_ms: i64) -> Result<SqliteCampaigns, CampaignError> {
        Self::with_pool(corral_sqlite::open(path, MAX_CONNECTIONS).await?, now_ms).await
    }

    /// A private in-memory book, for tests. Gone when the last clone drops.
    pub async fn open_in_memory() -> Result<SqliteCampaigns, CampaignError> {
        Self::with_pool(corral_sqlite::open_in_memory().await?, 0).await
    }

    async fn with_pool(pool: SqlitePool, now_ms: i64) -> Result<SqliteCampaigns, CampaignError> {
        corral_sqlite::migrate(&pool, "campaigns", MIGRATIONS, now_ms).await?;
        Ok(SqliteCampaigns { pool })
    }

    /// Checkpoints and closes the database; calls after this fail.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

#[async_trait]
impl ArtifactCatalog for SqliteCampaigns {
    async fn add_artifact(&self, artifact: &Artifact) -> Result<(), CampaignError> {
        let mut tx = corral_sqlite::write_tx(&self.pool).await?;
        if !rows::insert_artifact(&mut tx, artifact).await? {
            return Err(CampaignError::Conflict(format!(
                "tenant {} has an artifact {} version {} already",
                artifact.tenant, artifact.name, artifact.version
            )));
        }
        tx.commit().await?;
        Ok(())
    }

    async fn artifact(&self, id: &str, scope: Option<&str>) -> Result<Artifact, CampaignError> {
        let mut conn = self.pool.acquire().await?;
        rows::load_artifact(&mut conn, id)
            .await?
            .filter(|a| scope.is_none_or(|t| a.tenant.as_str() == t))
            .ok_or_else(|| CampaignError::NotFound(format!("no artifact {id:?}")))
    }

    async fn artifacts(&self, scope: Option<&str>, after: Option<&str>, limit: usize) -> Result<Vec<Artifact>, CampaignError> {
        let mut conn = self.pool.acquire().await?;
        rows::list_artifacts(&mut conn, scope, after, limit).await
    }
}

#[async_trait]
impl CampaignBook for SqliteCampaigns {
    async fn add_campaign(&self, campaign: &Campaign, devices: &[CampaignDevice]) -> Result<(), CampaignError> {
        let mut tx = corral_sqlite::write_tx(&self.pool).await?;
        rows::insert_campaign(&mut tx, campaign).await?;
        for device in devices {
            rows::insert_device(&mut tx, device).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn campaign(&self, id: &str, scope: Option<&str>) -> Result<Campaign, CampaignError> {
        let mut conn = self.pool.acquire().await?;
        rows::load_campaign(&mut conn, id)
            .await?
            .filter(|c| scope.is_none_or(|t| c.tenant.as_str() == t))
            .ok_or_else(|| CampaignError::NotFound(format!("no campaign {id:?}")))
    }

    async fn campaigns(&self, scope: Option<&str>, after: Option<&str>, limit: usize) -> Result<Vec<Campaign>, CampaignError> {
        let mut conn = self.pool.acquire().await?;
        rows::list_campaigns(&mut conn, scope, after, limit).await
    }

    async fn open_campaigns(&self) -> Result<Vec<Campaign>, CampaignError> {
        let mut conn = self.pool.acquire().await?;
        rows::open_campaigns(&mut conn).await
    }

    async fn save_campaign(&self, campaign: &Campaign) -> Result<(), CampaignError> {
        let mut tx = corral_sqlite::write_tx(&self.pool).await?;
        rows::save_campaign(&mut tx, campaign).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn add_devices(&self, devices: &[CampaignDevice]) -> Result<(), CampaignError> {
        let mut tx = corral_sqlite::write_tx(&self.pool).await?;
        for device in devices {
            rows::insert_device(&mut tx, device).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn devices(&self, campaign: &str) -> Result<Vec<CampaignDevice>, CampaignError> {
        let mut conn = self.pool.acquire().await?;
        rows::campaign_devices(&mut conn, campaign).await
    }

    async fn device_page(
        &self,
        campaign: &str,
        state: Option<DeviceState>,
        after: Option<&DeviceId>,
        limit: usize,
    ) -> Result<Vec<CampaignDevice>, CampaignError> {
        let mut conn = self.pool.acquire().await?;
        rows::device_page(&mut conn, campaign, state, after, limit).await
    }

    async fn all_devices(
        &self,
        scope: Option<&str>,
        after: Option<(&str, &DeviceId)>,
        limit: usize,
    ) -> Result<Vec<CampaignDevice>, CampaignError> {
        let mut conn = self.pool.acquire().await?;
        rows::all_devices(&mut conn, scope, after, limit).await
    }

    async fn save_devices(&self, devices: &[CampaignDevice]) -> Result<(), CampaignError> {
        if devices.is_empty() {
            return Ok(());
        }
        let mut tx = corral_sqlite::write_tx(&self.pool).await?;
        for device in devices {
            rows::save_device(&mut tx, device).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn counts(&self, campaign: &str) -> Result<Vec<WaveCount>, CampaignError> {
        let mut conn = self.pool.acquire().await?;
        rows::counts(&mut conn, campaign).await
    }

    async fn failure_reasons(&self, campaign: &str, limit: usize) -> Result<Vec<(String, u64)>, CampaignError> {
        let mut conn = self.pool.acquire().await?;
        rows::failure_reasons(&mut conn, campaign, limit).await
    }
}
