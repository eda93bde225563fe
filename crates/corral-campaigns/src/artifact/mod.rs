//! Firmware artifacts: uploaded once (streamed to disk, never held in memory), stored by their
//! SHA-256, signed per tenant, and handed to devices as a manifest they verify before installing.
//!
//! - [`ArtifactFiles`]: the content on disk (`<data-dir>/artifacts/sha256/<hex>`).
//! - [`TenantKeys`], [`DownloadGrants`], [`manifest_message`]: signatures and short-lived URLs.
//! - [`Artifacts`]: the three together with the catalog, as the REST API, the CoAP door and the
//!   campaigns use them.

mod files;
mod signing;

pub use files::{ArtifactFiles, Received};
pub use signing::{DownloadGrants, TenantKeys, manifest_message, verify};

use crate::CampaignError;
use crate::book::ArtifactCatalog;
use async_trait::async_trait;
use bytes::Bytes;
use corral_model::{DeviceId, TenantId, WireError};
use corral_services::{ArtifactDownloads, Clock};
use futures::Stream;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

/// The default upload limit: 2 GiB.
pub const DEFAULT_MAX_BYTES: u64 = 2 << 30;

/// One uploaded artifact: what it is, what it fits, and its manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Artifact {
    /// `art_` and 16 hex digits.
    pub id: String,
    pub tenant: TenantId,
    pub name: String,
    pub version: String,
    /// Bytes.
    pub size: u64,
    /// Lowercase hex.
    pub sha256: String,
    /// Ed25519 over [`manifest_message`], base64.
    pub signature: String,
    /// The key that signed it, base64: the tenant's own (`signed_by: corral`) or the operator's.
    pub public_key: String,
    /// `corral` (the tenant's key) or `operator` (a signature given on upload).
    pub signed_by: String,
    /// The profiles it fits (informational; empty: any).
    pub profiles: Vec<String>,
    /// The hardware revisions it fits (informational; empty: any).
    pub hardware: Vec<String>,
    /// When it was uploaded, Unix milliseconds.
    pub created_at_ms: i64,
    pub created_by: String,
}

/// What a device is given and verifies: rebuild [`manifest_message`] from `name`, `version`,
/// `size` and `sha256`, check `signature` with the trusted key, then check the download's SHA-256
/// and size.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct ArtifactManifest {
    pub id: String,
    pub name: String,
    pub version: String,
    /// Bytes.
    pub size: u64,
    /// Lowercase hex.
    pub sha256: String,
    /// Ed25519 over the manifest message, base64.
    pub signature: String,
    /// The key that signed it, base64.
    pub public_key: String,
    /// `corral` or `operator`.
    pub signed_by: String,
}

impl Artifact {
    /// What a device is given and verifies (see [`ArtifactManifest`]).
    pub fn manifest(&self) -> ArtifactManifest {
        ArtifactManifest {
            id: self.id.clone(),
            name: self.name.clone(),
            version: self.version.clone(),
            size: self.size,
            sha256: self.sha256.clone(),
            signature: self.signature.clone(),
            public_key: self.public_key.clone(),
            signed_by: self.signed_by.clone(),
        }
    }

    /// An `ETag` for the content: its digest, so a resumed download can tell it is the same file.
    pub fn etag(&self) -> String {
        format!("\"sha256-{}\"", self.sha256)
    }
}

/// What an upload says about itself.
#[derive(Debug, Clone, Default)]
pub struct NewArtifact {
    pub tenant: Option<TenantId>,
    pub name: String,
    pub version: String,
    pub profiles: Vec<String>,
    pub hardware: Vec<String>,
    pub created_by: String,
    /// The operator's own signature and public key (base64), checked on upload; `None`: Corral
    /// signs with the tenant's key.
    pub signature: Option<String>,
    pub public_key: Option<String>,
}

/// A name, version, profile or hardware label: 1–128 of `A-Z a-z 0-9 . _ + -`.
fn check_label(what: &str, value: &str) -> Result<(), CampaignError> {
    let ok = !value.is_empty()
        && value.len() <= 128
        && value.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '+' | '-'));
    if ok { Ok(()) } else { Err(CampaignError::bad(format!("{what} {value:?}: 1 to 128 of A-Z a-z 0-9 . _ + -"))) }
}

/// A new artifact id: `art_` and 16 random hex digits.
fn new_artifact_id() -> String {
    format!("art_{:016x}", rand::random::<u64>())
}

/// Artifacts as the platform uses them.
pub struct Artifacts {
    files: ArtifactFiles,
    keys: TenantKeys,
    grants: DownloadGrants,
    catalog: Arc<dyn ArtifactCatalog>,
    clock: Arc<dyn Clock>,
    max_bytes: u64,
    /// Held while content is kept and recorded: whether a refused upload's content may be
    /// removed depends on no other upload keeping the same digest at the same moment.
    recording: tokio::sync::Mutex<()>,
}

impl Artifacts {
    /// Opens the artifact store under `dir` (content, keys, the download-grant key).
    pub async fn open(
        dir: &Path,
        catalog: Arc<dyn ArtifactCatalog>,
        clock: Arc<dyn Clock>,
        max_bytes: u64,
    ) -> Result<Artifacts, CampaignError> {
        let files = ArtifactFiles::open(dir).await?;
        let keys = TenantKeys::open(&dir.join("keys"))?;
        let grants = DownloadGrants::open(&dir.join("download.key"))?;
        Ok(Artifacts { files, keys, grants, catalog, clock, max_bytes, recording: Default::default() })
    }

    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    /// Receives `body` (streamed to disk), checks the operator's signature if there is one or
    /// signs it with the tenant's key, and records it. Nothing is left behind when it fails.
    pub async fn upload<S, E>(&self, new: NewArtifact, body: S) -> Result<Artifact, CampaignError>
    where
        S: Stream<Item = Result<Bytes, E>>,
        E: std::fmt::Display,
    {
        check_label("name", &new.name)?;
        check_label("version", &new.version)?;
        for label in new.profiles.iter().chain(&new.hardware) {
            check_label("profile or hardware", label)?;
        }
        let tenant = new.tenant.unwrap_or_else(TenantId::default_tenant);
        let received = self.files.receive(body, self.max_bytes).await?;
        let message = manifest_message(&new.name, &new.version, received.size, &received.sha256);
        let signed = match (new.signature, new.public_key) {
            (Some(signature), Some(public_key)) => {
                verify(&message, &signature, &public_key).map(|()| (signature, public_key, "operator"))
            }
            (None, None) => self.keys.sign(tenant.as_str(), &message).map(|(s, k)| (s, k, "corral")),
            _ => Err(CampaignError::bad("give both signature and public_key, or neither (Corral then signs)")),
        };
        let (signature, public_key, signed_by) = match signed {
            Ok(signed) => signed,
            Err(e) => {
                self.files.discard(received).await;
                return Err(e);
            }
        };
        let artifact = Artifact {
            id: new_artifact_id(),
            tenant,
            name: new.name,
            version: new.version,
            size: received.size,
            sha256: received.sha256.clone(),
            signature,
            public_key,
            signed_by: signed_by.to_string(),
            profiles: new.profiles,
            hardware: new.hardware,
            created_at_ms: self.clock.now_ms(),
            created_by: new.created_by,
        };
        // Content first: a catalog entry never points at a missing file.
        let _recording = self.recording.lock().await;
        let shared = tokio::fs::try_exists(self.files.path(&artifact.sha256)).await.unwrap_or(true);
        let kept = self.files.keep(received).await?;
        if let Err(e) = self.catalog.add_artifact(&artifact).await {
            // Refused (the same name and version again): content no artifact refers to is not kept.
            if !shared {
                let _ = tokio::fs::remove_file(&kept).await;
            }
            return Err(e);
        }
        tracing::info!(artifact = %artifact.id, name = %artifact.name, version = %artifact.version, size = artifact.size, sha256 = %artifact.sha256, "artifact uploaded");
        Ok(artifact)
    }

    pub async fn get(&self, id: &str, scope: Option<&str>) -> Result<Artifact, CampaignError> {
        self.catalog.artifact(id, scope).await
    }

    pub async fn list(&self, scope: Option<&str>, after: Option<&str>, limit: usize) -> Result<Vec<Artifact>, CampaignError> {
        self.catalog.artifacts(scope, after, limit).await
    }

    /// The artifact's content on disk.
    pub fn content(&self, artifact: &Artifact) -> PathBuf {
        self.files.path(&artifact.sha256)
    }

    /// The tenant's public signing key, base64.
    pub fn public_key(&self, tenant: &str) -> Result<String, CampaignError> {
        self.keys.public_key(tenant)
    }

    /// A URL path that lets `device` download `artifact` without credentials until `expires_ms`.
    pub fn download_url(&self, artifact: &str, device: &DeviceId, expires_ms: i64) -> String {
        self.grants.url(artifact, device.as_str(), expires_ms)
    }

    /// The artifact a download URL's parts grant, if they are ours and have not expired.
    pub async fn redeem(&self, artifact: &str, device: &str, expires_ms: i64, mac: &str) -> Result<Artifact, CampaignError> {
        self.grants.check(artifact, device, expires_ms, mac, self.clock.now_ms())?;
        self.catalog.artifact(artifact, None).await
    }
}

#[async_trait]
impl ArtifactDownloads for Artifacts {
    async fn read_chunk(&self, tenant: &TenantId, artifact: &str, offset: u64, len: usize) -> Result<(Bytes, u64), WireError> {
        // A device reads only its own tenant's artifacts; another tenant's look absent.
        let artifact = self.catalog.artifact(artifact, Some(tenant.as_str())).await?;
        if offset > artifact.size {
            return Err(WireError::bad_input(format!("offset {offset} is past the artifact's {} bytes", artifact.size)));
        }
        let read = async {
            let mut file = tokio::fs::File::open(self.content(&artifact)).await?;
            file.seek(std::io::SeekFrom::Start(offset)).await?;
            let want = usize::try_from(artifact.size - offset).unwrap_or(usize::MAX).min(len);
            let mut chunk = vec![0; want];
            file.read_exact(&mut chunk).await?;
            Ok::<_, std::io::Error>(chunk)
        };
        let chunk = read.await.map_err(|e| CampaignError::Io(e).to_wire())?;
        Ok((Bytes::from(chunk), artifact.size))
    }
}
