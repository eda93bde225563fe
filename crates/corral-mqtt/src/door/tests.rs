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

/// A device that subscribes to its commands, or resumes a session that does, can take them: the
/// tracker hears it is ready. A gateway is ready for the children whose commands it subscribes to.
#[tokio::test]
async fn devices_subscribing_to_their_commands_are_ready_for_them() {
    let bus = Arc::new(corral_services::CommandBus::new(16));
    let mut ready = bus.readiness();
    let door = PlatformDoor::new(Arc::new(Registry::default()), Arc::new(Nowhere), Arc::new(Nowhere)).with_commands(bus.clone());
    let gateway = Identity::Device { id: "gw".into(), tenant: "acme".into(), children: vec!["c1".into(), "c2".into()] };
    let filters = |f: &[&str]| f.iter().map(|s| s.to_string()).collect::<Vec<_>>();

    door.on_subscribed(&gateway, "gw", &filters(&["devices/gw/telemetry", "devices/gw/commands/+"]), false);
    assert_eq!(ready.try_recv().unwrap(), (DeviceId::new("gw").unwrap(), Door::Mqtt));
    door.on_subscribed(&gateway, "gw", &filters(&["devices/c2/#"]), true);
    assert_eq!(ready.try_recv().unwrap(), (DeviceId::new("c2").unwrap(), Door::Mqtt));
    // Not its commands, or not a device: nobody is ready.
    door.on_subscribed(&gateway, "gw", &filters(&["devices/gw/twin/desired", "devices/c1/commands/cmd_1"]), false);
    let app = Identity::Application { name: "a".into(), principal: "a".into(), role: corral_services::Role::Admin, tenant: None };
    door.on_subscribed(&app, "a", &filters(&["devices/+/commands/+"]), false);
    assert!(ready.try_recv().is_err());
}
