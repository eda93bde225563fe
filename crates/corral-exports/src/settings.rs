//! The `[exports]` section of the server's configuration.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// `[exports]`: where local exports go, the S3-compatible endpoint, retries and alarms.
/// S3 credentials come from the standard environment variables (`AWS_ACCESS_KEY_ID`,
/// `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`), never from this file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct ExportSettings {
    /// Local destinations are folders under this directory (unset: `<data-dir>/exports`).
    pub dir: Option<PathBuf>,
    /// An S3-compatible endpoint (MinIO, Ceph, a cloud's S3 API), e.g. `http://minio:9000`;
    /// unset: AWS S3 (or `AWS_ENDPOINT_URL`).
    pub s3_endpoint: Option<String>,
    /// The region requests are signed for (S3-compatible stores mostly accept any).
    pub s3_region: String,
    /// Seconds before the first retry of a failed run; each further failure doubles it, up to
    /// the export's own interval.
    pub retry_secs: u64,
    /// Failed runs in a row before the export's alarm is raised (cleared by the next success).
    pub alarm_after_failures: u32,
}

impl Default for ExportSettings {
    fn default() -> Self {
        ExportSettings { dir: None, s3_endpoint: None, s3_region: "us-east-1".into(), retry_secs: 30, alarm_after_failures: 3 }
    }
}

impl ExportSettings {
    /// Errors name the setting.
    pub fn validate(&self) -> Result<(), String> {
        if self.retry_secs == 0 || self.alarm_after_failures == 0 {
            return Err("retry_secs and alarm_after_failures must be positive".into());
        }
        if let Some(endpoint) = &self.s3_endpoint {
            let (scheme, rest) = endpoint.split_once("://").unwrap_or(("", ""));
            let host_ok = !rest.is_empty() && !rest.contains(char::is_whitespace) && !rest.contains('"');
            if !matches!(scheme, "http" | "https") || !host_ok {
                return Err(format!("s3_endpoint {endpoint:?}: write a URL such as http://minio:9000 (no quotes)"));
            }
        }
        Ok(())
    }
}
