//! The adapters that join two rooms where neither should know the other. Each trait lives in the
//! crate that uses it; the binary, the only place that knows every room, implements it here.

use async_trait::async_trait;
use corral_registry::{DeviceStatus, Principal, Registry};
use corral_services::DeviceFacts;
use corral_store::Store;
use std::sync::Arc;

/// What the rules need from the rest of the platform: device facts from the registry, the MQTT
/// broker to publish alarm events and `mqtt` actions on (set once the broker runs), table fields
/// from the store. (Command actions go through the `Commands` service instead.)
pub struct RulesPlatform {
    pub registry: Arc<dyn Registry>,
    pub store: Store,
    pub broker: std::sync::OnceLock<corral_mqtt::Broker>,
}

#[async_trait]
impl corral_rules::Platform for RulesPlatform {
    async fn device(&self, id: &str) -> Option<DeviceFacts> {
        let device = self.registry.get_device(&Principal::system(), id).await.ok()?;
        (device.status == DeviceStatus::Active).then(|| device.facts())
    }

    async fn devices(&self) -> Vec<DeviceFacts> {
        match self.registry.devices_for_sql(None).await {
            Ok(devices) => devices.iter().filter(|d| d.status == DeviceStatus::Active).map(|d| d.facts()).collect(),
            Err(e) => {
                tracing::warn!(error = %e, "listing devices for absence rules failed");
                Vec::new()
            }
        }
    }

    async fn publish(&self, topic: &str, payload: Vec<u8>, tenant: &str) -> Result<(), String> {
        let broker = self.broker.get().ok_or("MQTT is off")?;
        broker
            .publish_for_tenant(topic, payload, corral_mqtt::QoS::AtLeastOnce, false, Some(tenant))
            .await
            .map_err(|e| e.to_string())
    }

    fn table_fields(&self, table: &str) -> Option<Vec<String>> {
        let snapshot = self.store.snapshot_table(table)?;
        Some(snapshot.schema.fields().iter().map(|f| f.name().clone()).filter(|n| n != "time" && n != "device").collect())
    }
}

/// MQTT over WebSocket (`GET /mqtt` on the HTTP listener) into the same broker.
pub struct MqttWebSocket(pub corral_mqtt::Broker);

#[async_trait]
impl corral_http::MqttOverWebSocket for MqttWebSocket {
    async fn serve(&self, stream: tokio::io::DuplexStream, peer: std::net::SocketAddr) {
        self.0.serve_connection(stream, peer, "ws").await;
    }
}

/// The registry as the twins' directory of devices: every device gets a twin, on its profile.
pub struct TwinDevices(pub Arc<dyn Registry>);

fn twin_owner(device: &corral_registry::Device) -> corral_twin::TwinOwner {
    corral_twin::TwinOwner { device: device.id.clone(), tenant: device.tenant.clone(), profile: device.profile.clone() }
}

#[async_trait]
impl corral_twin::DeviceDirectory for TwinDevices {
    async fn devices(&self) -> Result<Vec<corral_twin::TwinOwner>, corral_model::WireError> {
        let devices = self.0.devices_for_sql(None).await.map_err(|e| e.to_wire())?;
        Ok(devices.iter().map(twin_owner).collect())
    }

    async fn device(&self, id: &corral_model::DeviceId) -> Result<Option<corral_twin::TwinOwner>, corral_model::WireError> {
        match self.0.get_device(&Principal::system(), id.as_str()).await {
            Ok(device) => Ok(Some(twin_owner(&device))),
            Err(corral_registry::RegistryError::NotFound(_)) => Ok(None),
            Err(e) => Err(e.to_wire()),
        }
    }

    fn changes(&self) -> tokio::sync::broadcast::Receiver<corral_model::DeviceId> {
        self.0.device_changes()
    }
}

/// What campaigns need from the rest of the platform: device selection (registry and SQL, in the
/// campaign's tenant), the twin store (configuration, reports) and the registry's attributes
/// (the installed firmware version).
pub struct CampaignFleet {
    pub registry: Arc<dyn Registry>,
    pub sql: Arc<dyn corral_services::SqlService>,
    pub twins: Arc<dyn corral_twin::TwinStore>,
}

#[async_trait]
impl corral_campaigns::Fleet for CampaignFleet {
    async fn select(
        &self,
        tenant: &corral_model::TenantId,
        target: &corral_registry::Target,
        max: usize,
    ) -> Result<std::collections::BTreeMap<corral_model::DeviceId, corral_model::TenantId>, corral_model::WireError> {
        // As an operator confined to the campaign's tenant: the scope holds in the registry
        // listing and in the SQL engine alike.
        let within = Principal { tenant: Some(tenant.clone()), name: "campaign".into(), ..Principal::system() };
        corral_registry::select_devices(self.registry.as_ref(), self.sql.as_ref(), &within, target, max).await
    }

    async fn configure(
        &self,
        device: &corral_model::DeviceId,
        tenant: &corral_model::TenantId,
        desired: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<(), corral_model::WireError> {
        self.twins.patch_desired(device, Some(tenant.as_str()), None, desired).await.map(drop).map_err(|e| e.to_wire())
    }

    async fn reported(
        &self,
        device: &corral_model::DeviceId,
    ) -> Result<serde_json::Map<String, serde_json::Value>, corral_model::WireError> {
        Ok(self.twins.twin(device, None).await.map_err(|e| e.to_wire())?.reported.document)
    }

    async fn installed(&self, device: &corral_model::DeviceId, version: &str) -> Result<(), corral_model::WireError> {
        let mut attributes = serde_json::Map::new();
        attributes.insert("firmware_version".into(), serde_json::Value::from(version));
        corral_services::Reported::merge_attributes(self.registry.as_ref(), device, attributes.clone()).await?;
        self.twins.patch_reported(device, &attributes).await.map(drop).map_err(|e| e.to_wire())
    }

    fn reported_changes(&self) -> tokio::sync::broadcast::Receiver<corral_services::ReportedNotice> {
        self.twins.reported_changes()
    }
}

/// What the store's lifecycle needs from the registry: a tenant's devices (for its retention
/// policies) and the audit log (every deletion is recorded).
pub struct LifecycleRegistry(pub Arc<dyn Registry>);

#[async_trait]
impl corral_store::LifecyclePlatform for LifecycleRegistry {
    async fn tenant_devices(&self, tenant: &str) -> Result<std::collections::HashSet<String>, corral_model::WireError> {
        let tenant = corral_model::TenantId::new(tenant).map_err(|e| corral_model::WireError::bad_input(e.to_string()))?;
        let devices = self.0.devices_for_sql(Some(&tenant)).await.map_err(|e| e.to_wire())?;
        Ok(devices.into_iter().map(|d| d.id.to_string()).collect())
    }

    async fn record_deletion(&self, deletion: &corral_services::Deletion) {
        let detail = serde_json::to_value(deletion).unwrap_or_default();
        if let Err(e) = self.0.record_audit(&Principal::system(), "data.delete", &deletion.table, None, detail).await {
            tracing::error!(table = %deletion.table, error = %e, "audit entry for a deletion not written");
        }
    }
}
