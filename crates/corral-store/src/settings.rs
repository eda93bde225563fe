//! The `[storage]` section of the server's configuration: what an operator tunes of the store.

use crate::StoreConfig;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Duration;

/// `[storage]`: the write buffer, persistence to Parquet and the WAL.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct StorageSettings {
    /// Memory ceiling of the write buffer, MiB; above it writers wait, then get 503 + Retry-After.
    pub buffer_ceiling_mb: usize,
    /// Persist the buffer to Parquet when it holds this many MiB...
    pub persist_mb: usize,
    /// ...or when its oldest row is this many seconds old.
    pub persist_age_secs: u64,
    /// Seconds a writer waits at the ceiling before it gets 503.
    pub backpressure_wait_secs: u64,
    /// WAL segment size, MiB.
    pub wal_segment_mb: u64,
    /// How long each table keeps its rows, e.g. `{ telemetry = "30d", telemetry_1h = "730d" }`
    /// (units s, m, h, d, w). Tables not named keep everything. Tenant policies are set through
    /// the API (`corral data retention set TABLE KEEP --tenant T`).
    pub retention: std::collections::BTreeMap<String, String>,
    /// Seconds between two retention runs.
    pub retention_check_secs: u64,
    /// Seconds between two rollup refreshes (the newest buckets lag by up to this).
    pub rollup_refresh_secs: u64,
}

impl Default for StorageSettings {
    fn default() -> Self {
        StorageSettings {
            buffer_ceiling_mb: 256,
            persist_mb: 64,
            persist_age_secs: 600,
            backpressure_wait_secs: 10,
            wal_segment_mb: 64,
            retention: Default::default(),
            retention_check_secs: 3600,
            rollup_refresh_secs: 60,
        }
    }
}

impl StorageSettings {
    /// Errors name the setting.
    pub fn validate(&self) -> Result<(), String> {
        if self.buffer_ceiling_mb == 0 || self.persist_mb == 0 || self.persist_mb > self.buffer_ceiling_mb {
            return Err(format!("need 0 < persist_mb ({}) <= buffer_ceiling_mb ({})", self.persist_mb, self.buffer_ceiling_mb));
        }
        if self.persist_age_secs == 0 || self.wal_segment_mb == 0 {
            return Err("persist_age_secs and wal_segment_mb must be positive".into());
        }
        if self.retention_check_secs == 0 || self.rollup_refresh_secs == 0 {
            return Err("retention_check_secs and rollup_refresh_secs must be positive".into());
        }
        for (table, keep) in &self.retention {
            corral_services::parse_duration(keep).map_err(|e| format!("retention.{table}: {e}"))?;
        }
        Ok(())
    }

    /// What the lifecycle (retention, rollups) reads of these settings.
    pub fn lifecycle_settings(&self) -> crate::LifecycleSettings {
        crate::LifecycleSettings {
            retention: self.retention.clone(),
            retention_check: Duration::from_secs(self.retention_check_secs),
            rollup_refresh: Duration::from_secs(self.rollup_refresh_secs),
        }
    }

    /// The store in `dir` with these settings.
    pub fn store_config(&self, dir: impl Into<PathBuf>) -> StoreConfig {
        StoreConfig {
            buffer_ceiling_bytes: self.buffer_ceiling_mb << 20,
            persist_bytes: self.persist_mb << 20,
            persist_age: Duration::from_secs(self.persist_age_secs),
            backpressure_wait: Duration::from_secs(self.backpressure_wait_secs),
            wal_segment_bytes: self.wal_segment_mb << 20,
            ..StoreConfig::new(dir)
        }
    }
}
