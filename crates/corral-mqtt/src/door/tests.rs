//! The door's own state: the cache of devices' tenants.

use super::*;
use corral_ingest::{Accepted, Batch};
use corral_services::{Caller, Credential, DeviceCaller};
use std::sync::atomic::{AtomicUsize, Ordering};

/// A registry that knows `d1` (tenant acme) and counts how often it is asked for a tenant.
#[derive(Default)]
struct Registry {
    asked: AtomicUsize,
}

#[async_trait]
impl corral_services::Identity for Registry {
    async fn authenticate(&self, _: Credential<'_>) -> Result<Caller, WireError> {
        Err(WireError::internal("not in this test"))
    }
    async fn psk(&self, _: &str) -> Result<Vec<u8>, WireError> {
        Err(WireError::internal("not in this test"))
    }
    async fn speaks_for(&self, _: &DeviceCaller, _: &str) -> Result<Option<DeviceCaller>, WireError> {
        Ok(None)
    }
    async fn children_of(&self, _: &DeviceId) -> Result<Vec<DeviceId>, WireError> {
        Ok(vec![])
    }
    async fn tenant_of(&self, device: &str) -> Result<Option<TenantId>, WireError> {
        self.asked.fetch_add(1, Ordering::SeqCst);
        // An answer that takes a turn of the runtime, as a database's would.
        tokio::task::yield_now().await;
        Ok((device == "d1").then(|| TenantId::new("acme").unwrap()))
    }
    fn heard_from(&self, _: &DeviceId, _: i64) {}
    fn credential_changes(&self) -> tokio::sync::broadcast::Receiver<DeviceId> {
        tokio::sync::broadcast::channel(1).1
    }
}

struct Nowhere;

#[async_trait]
impl Sink for Nowhere {
    async fn submit(&self, _: &Envelope, _: Vec<Batch>) -> Result<Accepted, WireError> {
        Err(WireError::internal("not in this test"))
    }
}

#[async_trait]
impl Reported for Nowhere {
    async fn merge_attributes(&self, _: &DeviceId, _: serde_json::Map<String, serde_json::Value>) -> Result<(), WireError> {
        Err(WireError::internal("not in this test"))
    }
}

/// Regression (issue 17): the first lookup of a device's tenant blocked a runtime thread
/// (`block_in_place`, which panics outright on a current-thread runtime like this test's). The
/// cache answers at once; the registry is awaited, once per device it knows.
#[tokio::test]
async fn a_devices_tenant_is_awaited_once_then_cached() {
    let registry = Arc::new(Registry::default());
    let door = PlatformDoor::new(registry.clone(), Arc::new(Nowhere), Arc::new(Nowhere));
    assert_eq!(door.device_tenant("d1"), None, "not asked yet");
    assert_eq!(door.resolve_device_tenant("d1").await.as_deref(), Some("acme"));
    assert_eq!(door.device_tenant("d1").as_deref(), Some("acme"), "cached");
    assert_eq!(door.resolve_device_tenant("d1").await.as_deref(), Some("acme"));
    assert_eq!(registry.asked.load(Ordering::SeqCst), 1);
    // An unknown name is not cached: it may be registered next.
    assert_eq!(door.resolve_device_tenant("nobody").await, None);
    assert_eq!(door.device_tenant("nobody"), None);
    assert_eq!(door.resolve_device_tenant("nobody").await, None);
    assert_eq!(registry.asked.load(Ordering::SeqCst), 3);
}
