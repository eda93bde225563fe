//! The broker as a door of the platform ([`PlatformDoor`], its [`BrokerHooks`]): who a client
//! is (the [`Identity`] service, with MQTT's own rules on top: the client id of a device is its
//! id), what a device's publishes become (decode → the ingest [`Sink`] → WAL, the same corridor as
//! HTTP and CoAP; attributes to [`Reported`]; reported twin patches to [`DeviceTwins`]), and
//! which devices hold a connection now ([`ConnectedDevices`]), and which devices can take their
//! commands (`on_subscribed` → [`Commands::ready`]). [`carry_commands`] joins the broker to the
//! [`Commands`] service, [`carry_twins`] to the desired documents and `twin/get`.

mod commands;
mod connected;
mod in_order;
mod login;
#[cfg(test)]
mod tests;
mod twins;

pub use commands::{carry_commands, disconnect_on_broker_user_changes, disconnect_on_credential_changes};
pub use connected::ConnectedDevices;
pub use twins::carry_twins;

use crate::codec::ReasonCode;
use crate::hooks::{
    BrokerHooks, ConnectRefusal, ConnectRequest, DisconnectKind, Identity, InboundPublish, PlatformWrite, PublishRefusal,
    TenantLookup,
};
use crate::topic::PlatformTopic;
use async_trait::async_trait;
use corral_ingest::Sink;
use corral_ingest::decode::{Limits, TelemetryFormat};
use corral_model::{DeviceId, Door, Envelope, ErrorKind, TableName, TenantId, WireError};
use corral_services::{Commands, DeviceTwins, Reported};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// What the MQTT door uses of the platform: services only, never a concrete room.
#[derive(Clone)]
pub struct PlatformDoor {
    identity: Arc<dyn corral_services::Identity>,
    sink: Arc<dyn Sink>,
    reported: Arc<dyn Reported>,
    /// `None`: no twin store is wired (tests of other things); reported twin patches are refused.
    twins: Option<Arc<dyn DeviceTwins>>,
    /// Told when a device subscribes to its commands (`None`: nobody tracks commands).
    commands: Option<Arc<dyn Commands>>,
    /// Where user names that are neither devices nor tokens log in (`None`: no broker users).
    broker_users: Option<Arc<dyn corral_services::BrokerUsers>>,
    limits: Limits,
    connected: ConnectedDevices,
    /// Tenants of devices named by applications' publishes. A device's tenant never changes once
    /// it is registered, so an entry stays true; only unknown names are asked again.
    tenants: Arc<Mutex<HashMap<String, String>>>,
    /// Reported twin patches and attribute merges of a device, applied in the order sent.
    twin_order: in_order::MergeOrder,
    attribute_order: in_order::MergeOrder,
}

/// Entries of the tenant cache before it starts over (a few MB at most).
const MAX_CACHED_TENANTS: usize = 100_000;

impl PlatformDoor {
    pub fn new(identity: Arc<dyn corral_services::Identity>, sink: Arc<dyn Sink>, reported: Arc<dyn Reported>) -> Self {
        PlatformDoor {
            identity,
            sink,
            reported,
            twins: None,
            commands: None,
            broker_users: None,
            limits: Limits::default(),
            connected: ConnectedDevices::default(),
            tenants: Default::default(),
            twin_order: Default::default(),
            attribute_order: Default::default(),
        }
    }

    /// Devices' `twin/reported` patches go to `twins`.
    pub fn with_twins(mut self, twins: Arc<dyn DeviceTwins>) -> Self {
        self.twins = Some(twins);
        self
    }

    /// Devices that subscribe to their commands (or resume a session that does) are announced
    /// ready on `commands`, so the commands waiting for them are handed over.
    pub fn with_commands(mut self, commands: Arc<dyn Commands>) -> Self {
        self.commands = Some(commands);
        self
    }

    /// Clients may log in as broker users: a user name, a password and topic rules.
    pub fn with_broker_users(mut self, users: Arc<dyn corral_services::BrokerUsers>) -> Self {
        self.broker_users = Some(users);
        self
    }

    /// The devices connected through this door (presence reads it).
    pub fn connected(&self) -> ConnectedDevices {
        self.connected.clone()
    }

    fn heard_from(&self, device: &str, at_ns: i64) {
        if let Ok(id) = DeviceId::new(device) {
            self.identity.heard_from(&id, at_ns);
        }
    }

    /// `devices/<id>/attributes`: a JSON object merged into the device's attributes.
    fn report_attributes(&self, device: DeviceId, payload: &[u8]) -> Result<PlatformWrite, PublishRefusal> {
        let reported: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(payload).map_err(|e| {
            PublishRefusal::new(ReasonCode::PAYLOAD_FORMAT_INVALID, format!("attributes must be a JSON object: {e}"))
        })?;
        let (to, name) = (self.reported.clone(), device.to_string());
        let merge = async move { to.merge_attributes(&device, reported).await.map_err(|e| refusal(&e, "attributes")) };
        Ok(self.attribute_order.after_previous(&name, merge))
    }
}

#[async_trait]
impl BrokerHooks for PlatformDoor {
    async fn authenticate(&self, req: &ConnectRequest) -> Result<Identity, ConnectRefusal> {
        login::authenticate(self.identity.as_ref(), self.broker_users.as_deref(), req).await
    }

    fn on_platform_publish(&self, who: &Identity, publish: &InboundPublish) -> Result<PlatformWrite, PublishRefusal> {
        let Some(tenant) = who.tenant().and_then(|t| TenantId::new(t).ok()) else {
            return Err(PublishRefusal::new(ReasonCode::NOT_AUTHORIZED, "only devices publish platform topics"));
        };
        let device = DeviceId::new(publish.device.as_str())
            .map_err(|e| PublishRefusal::new(ReasonCode::TOPIC_NAME_INVALID, format!("device id in topic: {e}")))?;
        match &publish.kind {
            PlatformTopic::Telemetry { table } => {
                let table = match table {
                    Some(t) => TableName::new(t.as_str())
                        .map_err(|e| PublishRefusal::new(ReasonCode::TOPIC_NAME_INVALID, format!("table in topic: {e}")))?,
                    None => TableName::telemetry(),
                };
                let received_at_ns = chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0);
                let format = TelemetryFormat::from_content_type(publish.content_type.as_deref().unwrap_or(""));
                let batch = format
                    .decode(&publish.payload, device.as_str(), &table, received_at_ns, &self.limits)
                    .map_err(|e| refusal(&e, &publish.topic))?;
                let envelope = Envelope { device, tenant, door: Door::Mqtt, received_at_ns };
                let (sink, topic) = (self.sink.clone(), publish.topic.clone());
                Ok(Box::pin(async move { sink.submit(&envelope, vec![batch]).await.map(drop).map_err(|e| refusal(&e, &topic)) }))
            }
            PlatformTopic::Attributes => self.report_attributes(device, &publish.payload),
            PlatformTopic::TwinReported => {
                let twins = self.twins.clone().ok_or_else(|| {
                    PublishRefusal::new(ReasonCode::IMPLEMENTATION_SPECIFIC_ERROR, "device twins are not available here")
                })?;
                let (payload, topic, name) = (publish.payload.clone(), publish.topic.clone(), device.to_string());
                let merge = async move { twins.report(&device, &payload).await.map_err(|e| refusal(&e, &topic)) };
                Ok(self.twin_order.after_previous(&name, merge))
            }
        }
    }

    fn device_tenant(&self, device: &str) -> Option<String> {
        // Asked when an application publishes to a device topic (commands) and when the platform
        // does. Only the cache answers here: the broker awaits `resolve_device_tenant` for the
        // rest, so no connection task holds a runtime thread while the registry answers.
        lock(&self.tenants).get(device).cloned()
    }

    fn resolve_device_tenant(&self, device: &str) -> TenantLookup {
        let (identity, tenants, name) = (self.identity.clone(), self.tenants.clone(), device.to_string());
        Box::pin(async move {
            // Another connection may have looked it up since the broker asked the cache.
            if let Some(tenant) = lock(&tenants).get(&name) {
                return Some(tenant.clone());
            }
            let tenant = identity.tenant_of(&name).await.ok().flatten()?.as_str().to_string();
            let mut cache = lock(&tenants);
            if cache.len() >= MAX_CACHED_TENANTS {
                cache.clear();
            }
            cache.insert(name, tenant.clone());
            Some(tenant)
        })
    }

    fn on_connected(&self, who: &Identity, _client_id: &str) {
        if let Identity::Device { id, .. } = who {
            let now = chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default();
            self.connected.change(id, true, now);
            self.heard_from(id, now);
        }
    }

    fn on_subscribed(&self, who: &Identity, _client_id: &str, filters: &[String], _resumed: bool) {
        let (Some(commands), Identity::Device { id, children, .. }) = (&self.commands, who) else { return };
        // A gateway takes its children's commands too, when it subscribes to them.
        for device in std::iter::once(id).chain(children) {
            if filters.iter().any(|filter| commands::takes_commands_of(filter, device))
                && let Ok(device) = DeviceId::new(device.as_str())
            {
                commands.ready(device, Door::Mqtt);
            }
        }
    }

    fn on_disconnected(&self, who: &Identity, _client_id: &str, how: DisconnectKind) {
        if let Identity::Device { id, .. } = who {
            // One instant for both: heard from at the disconnect, and not after it.
            let now = chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default();
            self.connected.change(id, false, now);
            self.heard_from(id, now);
            if how != DisconnectKind::Clean {
                tracing::info!(device = %id, how = ?how, "device connection lost");
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The MQTT 5 PUBACK reason for an error the HTTP door would answer with a status.
fn refusal(e: &WireError, topic: &str) -> PublishRefusal {
    let reason = match e.kind {
        ErrorKind::BadInput | ErrorKind::TooLarge | ErrorKind::Conflict => ReasonCode::PAYLOAD_FORMAT_INVALID,
        ErrorKind::Unavailable => ReasonCode::QUOTA_EXCEEDED,
        ErrorKind::Unauthenticated | ErrorKind::Forbidden | ErrorKind::NotFound => ReasonCode::NOT_AUTHORIZED,
        ErrorKind::Internal => ReasonCode::UNSPECIFIED_ERROR,
    };
    PublishRefusal::new(reason, format!("{topic}: {e}"))
}

/// `/metrics` lines of the broker, and how many devices are connected.
pub struct DoorMetrics(pub crate::Broker, pub ConnectedDevices);

impl corral_services::MetricsSource for DoorMetrics {
    fn render(&self, out: &mut String) {
        self.0.metrics().render_prometheus(out);
        corral_services::metrics::Exposition::new(out).gauge(
            "corral_mqtt_devices_online",
            "Devices with a live MQTT connection.",
            self.1.count(),
        );
    }
}
