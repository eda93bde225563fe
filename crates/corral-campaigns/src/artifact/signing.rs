//! Artifact signatures and download grants: the two secrets the campaign room keeps under the
//! data directory (files `0600`, created on first use).
//!
//! - Each tenant has its own Ed25519 key (`keys/<tenant>.ed25519`); Corral signs each artifact's
//!   [`manifest_message`] with it, and devices check the signature with the tenant's public key
//!   (`GET /api/v1/artifacts/signing-key`). An operator may sign with their own key instead; the
//!   signature is then checked on upload.
//! - Download grants (`/api/v1/downloads/<artifact>/<device>/<expires>/<mac>`) are HMAC-SHA256
//!   over the artifact, the device and the expiry, with `download.key`: a URL a device can fetch
//!   without a header, good for one artifact, one device and a short time.

use crate::CampaignError;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// What an artifact's signature covers: its name, version, size and SHA-256, one per line.
/// Devices rebuild this text from the manifest they are given and verify the signature over it.
pub fn manifest_message(name: &str, version: &str, size: u64, sha256: &str) -> String {
    format!("corral-artifact-v1\nname: {name}\nversion: {version}\nsize: {size}\nsha256: {sha256}\n")
}

/// Checks an operator's signature (base64) over `message` with their public key (base64, 32 bytes).
pub fn verify(message: &str, signature_b64: &str, public_key_b64: &str) -> Result<(), CampaignError> {
    let bad = |what: &str| CampaignError::bad(format!("{what} is not valid base64 of the right length"));
    let key: [u8; 32] =
        B64.decode(public_key_b64.trim()).ok().and_then(|k| k.try_into().ok()).ok_or_else(|| bad("public_key"))?;
    let signature: [u8; 64] =
        B64.decode(signature_b64.trim()).ok().and_then(|s| s.try_into().ok()).ok_or_else(|| bad("signature"))?;
    let key = VerifyingKey::from_bytes(&key).map_err(|_| CampaignError::bad("public_key is not an Ed25519 public key"))?;
    key.verify(message.as_bytes(), &Signature::from_bytes(&signature))
        .map_err(|_| CampaignError::Forbidden("the signature does not verify for this artifact's manifest".into()))
}

/// Writes `bytes` to a new file readable by its owner only.
fn write_secret(path: &Path, bytes: &[u8]) -> Result<(), CampaignError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    Ok(())
}

/// 32 bytes from `path`, created from the OS's randomness when it does not exist.
fn secret(path: &Path) -> Result<[u8; 32], CampaignError> {
    match std::fs::read(path) {
        Ok(bytes) => hex::decode(bytes.trim_ascii())
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| CampaignError::Storage(format!("{} is not 32 bytes in hex", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let fresh: [u8; 32] = rand::random();
            write_secret(path, hex::encode(fresh).as_bytes())?;
            Ok(fresh)
        }
        Err(e) => Err(e.into()),
    }
}

/// The tenants' signing keys, under one directory.
#[derive(Debug)]
pub struct TenantKeys {
    dir: PathBuf,
    loaded: Mutex<HashMap<String, SigningKey>>,
}

impl TenantKeys {
    pub fn open(dir: &Path) -> Result<TenantKeys, CampaignError> {
        std::fs::create_dir_all(dir)?;
        Ok(TenantKeys { dir: dir.to_path_buf(), loaded: Mutex::new(HashMap::new()) })
    }

    fn key(&self, tenant: &str) -> Result<SigningKey, CampaignError> {
        let mut loaded = self.loaded.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(key) = loaded.get(tenant) {
            return Ok(key.clone());
        }
        let key = SigningKey::from_bytes(&secret(&self.dir.join(format!("{tenant}.ed25519")))?);
        loaded.insert(tenant.to_string(), key.clone());
        Ok(key)
    }

    /// The tenant's public key, base64.
    pub fn public_key(&self, tenant: &str) -> Result<String, CampaignError> {
        Ok(B64.encode(self.key(tenant)?.verifying_key().as_bytes()))
    }

    /// Signs `message` with the tenant's key: (signature, public key), both base64.
    pub fn sign(&self, tenant: &str, message: &str) -> Result<(String, String), CampaignError> {
        let key = self.key(tenant)?;
        Ok((B64.encode(key.sign(message.as_bytes()).to_bytes()), B64.encode(key.verifying_key().as_bytes())))
    }
}

/// Mints and checks short-lived per-device download URLs.
pub struct DownloadGrants {
    key: [u8; 32],
}

impl DownloadGrants {
    pub fn open(path: &Path) -> Result<DownloadGrants, CampaignError> {
        Ok(DownloadGrants { key: secret(path)? })
    }

    fn mac(&self, artifact: &str, device: &str, expires_ms: i64) -> Hmac<Sha256> {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.key).expect("HMAC takes any key length");
        mac.update(format!("{artifact}\n{device}\n{expires_ms}").as_bytes());
        mac
    }

    /// The URL path that lets `device` fetch `artifact` until `expires_ms`.
    pub fn url(&self, artifact: &str, device: &str, expires_ms: i64) -> String {
        let mac = hex::encode(self.mac(artifact, device, expires_ms).finalize().into_bytes());
        format!("/api/v1/downloads/{artifact}/{device}/{expires_ms}/{mac}")
    }

    /// Whether a URL's parts are ours and still good at `now_ms` (constant-time comparison).
    pub fn check(&self, artifact: &str, device: &str, expires_ms: i64, mac_hex: &str, now_ms: i64) -> Result<(), CampaignError> {
        let given = hex::decode(mac_hex).map_err(|_| CampaignError::Forbidden("this download link is not valid".into()))?;
        self.mac(artifact, device, expires_ms)
            .verify_slice(&given)
            .map_err(|_| CampaignError::Forbidden("this download link is not valid".into()))?;
        if now_ms >= expires_ms {
            return Err(CampaignError::Forbidden("this download link has expired; ask for a new one".into()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tenant_key_signs_and_an_operator_signature_is_checked() {
        let dir = tempfile::tempdir().unwrap();
        let keys = TenantKeys::open(dir.path()).unwrap();
        let message = manifest_message("meter-fw", "2.1.0", 11, "ab");
        let (signature, public) = keys.sign("acme", &message).unwrap();
        verify(&message, &signature, &public).unwrap();
        assert!(matches!(verify(&message.replace("2.1.0", "2.1.1"), &signature, &public), Err(CampaignError::Forbidden(_))));
        assert!(matches!(verify(&message, "not base64", &public), Err(CampaignError::BadInput(_))));
        // Per tenant, and kept: a second opening signs with the same key.
        assert_ne!(keys.public_key("other").unwrap(), public);
        assert_eq!(TenantKeys::open(dir.path()).unwrap().public_key("acme").unwrap(), public);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("acme.ed25519")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn a_download_grant_is_for_one_artifact_one_device_and_a_short_time() {
        let dir = tempfile::tempdir().unwrap();
        let grants = DownloadGrants::open(&dir.path().join("download.key")).unwrap();
        let url = grants.url("art_1", "meter-1", 5000);
        let parts: Vec<&str> = url.trim_start_matches("/api/v1/downloads/").split('/').collect();
        let mac = parts[3];
        grants.check("art_1", "meter-1", 5000, mac, 4999).unwrap();
        assert!(grants.check("art_1", "meter-1", 5000, mac, 5000).is_err(), "expired");
        assert!(grants.check("art_1", "meter-2", 5000, mac, 0).is_err(), "another device");
        assert!(grants.check("art_2", "meter-1", 5000, mac, 0).is_err(), "another artifact");
        assert!(grants.check("art_1", "meter-1", 9000, mac, 0).is_err(), "a later expiry");
        assert!(DownloadGrants::open(&dir.path().join("download.key")).unwrap().check("art_1", "meter-1", 5000, mac, 0).is_ok());
    }
}
