//! The device side of the twin protocol ([`DeviceTwins`]) over the twin store: the JSON a device
//! sends and receives, the same on MQTT and CoAP (and the same documents as over HTTP).
//!
//! - Desired, pushed to the device: `{"version": 3, "desired": {...}}`, the whole effective
//!   document each time, so a device that missed a message loses nothing by applying the next.
//! - Reported, from the device: an RFC 7386 merge patch (`null` deletes a key).
//! - `get`, from the device: empty or `{}` → the whole twin, as `GET /api/v1/devices/<id>/twin`
//!   answers it; `{"since": 2}` → what changed since version 2, as [`DesiredChanges`] (`{"kind":
//!   "patches", "version", "patches": [...]}` or `{"kind": "full", "desired", "reason"}`).

use crate::{DesiredChanges, DeviceDirectory, Twin, TwinError, TwinSettings, TwinStore, merge};
use async_trait::async_trait;
use bytes::Bytes;
use corral_model::{DeviceId, WireError};
use corral_services::{DesiredMessage, DesiredNotice, DeviceTwins};
use serde_json::{Value, json};
use std::sync::Arc;
use tokio::sync::broadcast;

/// [`DeviceTwins`] for every door, over any [`TwinStore`].
#[derive(Clone)]
pub struct TwinDoors {
    store: Arc<dyn TwinStore>,
    settings: TwinSettings,
    directory: Option<Arc<dyn DeviceDirectory>>,
}

impl TwinDoors {
    pub fn new(store: Arc<dyn TwinStore>, settings: TwinSettings) -> Self {
        TwinDoors { store, settings, directory: None }
    }

    /// Creates a twin on first use when [`follow_devices`](crate::follow_devices) has not yet
    /// (a device that speaks right after it was registered).
    pub fn with_directory(mut self, directory: Arc<dyn DeviceDirectory>) -> Self {
        self.directory = Some(directory);
        self
    }

    /// The device's twin, created now if its device exists but the twin does not yet.
    async fn twin(&self, device: &DeviceId) -> Result<Twin, WireError> {
        match (self.store.twin(device, None).await, &self.directory) {
            (Err(TwinError::NotFound(_)), Some(directory)) => match directory.device(device).await? {
                Some(owner) => Ok(self.store.ensure_twin(&owner.device, &owner.tenant, owner.profile.as_deref()).await?),
                None => Err(TwinError::not_found(device.as_str()).to_wire()),
            },
            (result, _) => Ok(result?),
        }
    }
}

fn desired_message(twin: &Twin) -> Result<DesiredMessage, TwinError> {
    let body = json!({ "version": twin.desired.version, "desired": twin.desired.document });
    let payload = serde_json::to_vec(&body).map_err(|e| TwinError::storage(e.to_string()))?;
    Ok(DesiredMessage {
        device: twin.device.clone(),
        tenant: twin.tenant.clone(),
        version: twin.desired.version,
        payload: Bytes::from(payload),
    })
}

/// The `since` of a `get` request; `None` for the whole twin.
fn since_of(request: &[u8]) -> Result<Option<u64>, TwinError> {
    if request.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let request: Value = serde_json::from_slice(request)
        .map_err(|e| TwinError::BadInput(format!("a twin get request is {{}} or {{\"since\": N}}, not valid JSON: {e}")))?;
    let Value::Object(fields) = request else {
        return Err(TwinError::BadInput("a twin get request is {} or {\"since\": N}".into()));
    };
    match fields.get("since") {
        None => Ok(None),
        Some(since) => since
            .as_u64()
            .map(Some)
            .ok_or_else(|| TwinError::BadInput(format!("\"since\" must be a desired version (0 or more), not {since}"))),
    }
}

fn to_bytes(value: &impl serde::Serialize) -> Result<Bytes, WireError> {
    serde_json::to_vec(value).map(Bytes::from).map_err(|e| TwinError::storage(e.to_string()).to_wire())
}

#[async_trait]
impl DeviceTwins for TwinDoors {
    async fn report(&self, device: &DeviceId, patch: &[u8]) -> Result<(), WireError> {
        let patch = merge::parse_patch(patch, &self.settings)?;
        match self.store.patch_reported(device, &patch).await {
            // Only for a twin not created yet: the common case costs no extra read.
            Err(TwinError::NotFound(_)) => {
                self.twin(device).await?;
                self.store.patch_reported(device, &patch).await?;
            }
            other => {
                other?;
            }
        }
        Ok(())
    }

    async fn desired(&self, device: &DeviceId) -> Result<DesiredMessage, WireError> {
        Ok(desired_message(&self.twin(device).await?)?)
    }

    async fn get(&self, device: &DeviceId, request: &[u8]) -> Result<Bytes, WireError> {
        match since_of(request)? {
            None => to_bytes(&self.twin(device).await?),
            Some(since) => {
                self.twin(device).await?;
                let changes: DesiredChanges = self.store.changes_since(device, since).await?;
                to_bytes(&changes)
            }
        }
    }

    fn desired_changes(&self) -> broadcast::Receiver<DesiredNotice> {
        self.store.subscribe()
    }

    async fn desired_page(&self, after: Option<&DeviceId>, limit: usize) -> Result<Vec<DesiredMessage>, WireError> {
        let twins = self.store.list_twins(None, after, limit).await?;
        Ok(twins.iter().map(desired_message).collect::<Result<_, _>>()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_get_request_asks_for_the_whole_twin_or_the_changes_since_a_version() {
        assert_eq!(since_of(b"").unwrap(), None);
        assert_eq!(since_of(b" \n").unwrap(), None);
        assert_eq!(since_of(b"{}").unwrap(), None);
        assert_eq!(since_of(br#"{"since": 4}"#).unwrap(), Some(4));
        for bad in [&br#"{"since": -1}"#[..], br#"{"since": "4"}"#, b"[1]", b"{", b"4"] {
            assert!(matches!(since_of(bad), Err(TwinError::BadInput(_))), "{:?}", String::from_utf8_lossy(bad));
        }
    }
}
