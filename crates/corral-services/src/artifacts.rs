//! Firmware artifacts as a door reads them for a device: a piece at a time, so a door that cuts a
//! download into blocks (CoAP Block2) never holds the whole image. Implemented by the campaigns
//! room (`corral-campaigns`).

use async_trait::async_trait;
use bytes::Bytes;
use corral_model::{TenantId, WireError};

#[async_trait]
pub trait ArtifactDownloads: Send + Sync + 'static {
    /// Up to `len` bytes of `artifact` from `offset`, and the artifact's whole size. A device of
    /// `tenant` reads only its tenant's artifacts: another tenant's is `NotFound`.
    async fn read_chunk(&self, tenant: &TenantId, artifact: &str, offset: u64, len: usize) -> Result<(Bytes, u64), WireError>;
}
