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
}

impl Default for StorageSettings {
    fn default() -> Self {
        StorageSettings {
            buffer_ceiling_mb: 256,
            persist_mb: 64,
            persist_age_secs: 600,
            backpressure_wait_secs: 10,
            wal_segment_mb: 64,
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
        Ok(())
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
