//! Every device has a twin, from the moment it is registered: [`follow_devices`] creates the
//! twins of new devices and moves a twin to its device's new profile (whose defaults then give it
//! a new desired version, which reaches the device like any other change).
//!
//! The registry and the twins are two databases, so this cannot be one transaction. Instead the
//! follower reads every device when it starts, and again whenever it fell behind the change
//! notices: a device created just before a `kill -9` gets its twin at the next start.

use crate::{TwinError, TwinLifecycle};
use async_trait::async_trait;
use corral_model::{DeviceId, TenantId, WireError};
use std::sync::Arc;
use tokio::sync::broadcast::error::RecvError;

/// A device as its twin needs to know it: whose it is, and whose profile defaults it inherits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TwinOwner {
    pub device: DeviceId,
    pub tenant: TenantId,
    pub profile: Option<String>,
}

/// Where the twins learn which devices exist (implemented over the registry by the binary).
#[async_trait]
pub trait DeviceDirectory: Send + Sync + 'static {
    /// Every device.
    async fn devices(&self) -> Result<Vec<TwinOwner>, WireError>;

    /// One device; `None` when it does not exist.
    async fn device(&self, id: &DeviceId) -> Result<Option<TwinOwner>, WireError>;

    /// The id of each device created or moved to another profile from now on.
    fn changes(&self) -> tokio::sync::broadcast::Receiver<DeviceId>;
}

/// Brings every device's twin up to date with the directory, then keeps it so on a task of its
/// own. Returns once the catch-up is done, so doors started afterwards find every twin.
pub async fn follow_devices(twins: Arc<dyn TwinLifecycle>, directory: Arc<dyn DeviceDirectory>) -> Result<(), TwinError> {
    // Subscribe first: a device created during the catch-up is then either read by it or heard of.
    let mut changes = directory.changes();
    let count = catch_up(&*twins, &*directory).await?;
    tracing::info!(devices = count, "twins follow the registry");
    tokio::spawn(async move {
        loop {
            let result = match changes.recv().await {
                Ok(id) => follow_one(&*twins, &*directory, &id).await,
                Err(RecvError::Lagged(missed)) => {
                    tracing::warn!(missed, "device changes came faster than twins followed; reading every device");
                    catch_up(&*twins, &*directory).await.map(drop)
                }
                Err(RecvError::Closed) => return,
            };
            if let Err(e) = result {
                tracing::error!(error = %e, "a twin could not follow its device; it will at the next start");
            }
        }
    });
    Ok(())
}

/// Ensures the twin of every device; how many devices there are.
async fn catch_up(twins: &dyn TwinLifecycle, directory: &dyn DeviceDirectory) -> Result<usize, TwinError> {
    let devices = directory.devices().await.map_err(|e| TwinError::storage(format!("listing devices: {e}")))?;
    for owner in &devices {
        twins.ensure_twin(&owner.device, &owner.tenant, owner.profile.as_deref()).await?;
    }
    Ok(devices.len())
}

async fn follow_one(twins: &dyn TwinLifecycle, directory: &dyn DeviceDirectory, id: &DeviceId) -> Result<(), TwinError> {
    let owner = directory.device(id).await.map_err(|e| TwinError::storage(format!("reading device {id}: {e}")))?;
    if let Some(owner) = owner {
        twins.ensure_twin(&owner.device, &owner.tenant, owner.profile.as_deref()).await?;
    }
    Ok(())
}
