//! The MQTT broker's view of the platform ([`BrokerHooks`]): who a client is (the registry), where
//! a device's telemetry goes (decode → pipeline → WAL, the same corridor as HTTP), and which
//! devices are connected right now.

use async_trait::async_trait;
use corral_ingest::decode::{Limits, TelemetryFormat};
use corral_ingest::{Pipeline, Sink};
use corral_model::{DeviceId, Door, Envelope, ErrorKind, TableName, TenantId, WireError};
use corral_mqtt::codec::ReasonCode;
use corral_mqtt::topic::PlatformTopic;
use corral_mqtt::{
    BrokerHooks, ConnectRefusal, ConnectRequest, DisconnectKind, Identity, InboundPublish, PlatformWrite, PublishRefusal, Role,
};
use corral_registry::{Principal, Registry, RegistryError};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Devices with a live MQTT connection, counted per device (a takeover connects the new session
/// before the old one's disconnect is reported, so a set would briefly call the device offline),
/// and when each device's last connection ended.
#[derive(Debug, Default, Clone)]
pub struct ConnectedDevices(Arc<Mutex<Connections>>);

#[derive(Debug, Default)]
struct Connections {
    live: HashMap<String, usize>,
    ended_ns: HashMap<String, i64>,
}

impl ConnectedDevices {
    fn lock(&self) -> std::sync::MutexGuard<'_, Connections> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn connection(&self, device: &str) -> corral_rules::Connection {
        let c = self.lock();
        corral_rules::Connection { connected: c.live.contains_key(device), ended_ns: c.ended_ns.get(device).copied() }
    }

    pub fn count(&self) -> usize {
        self.lock().live.len()
    }

    fn change(&self, device: &str, up: bool, at_ns: i64) {
        let mut c = self.lock();
        if up {
            *c.live.entry(device.to_string()).or_default() += 1;
        } else if let Some(n) = c.live.get_mut(device) {
            *n -= 1;
            if *n == 0 {
                c.live.remove(device);
                c.ended_ns.insert(device.to_string(), at_ns);
            }
        }
    }
}

pub struct PlatformHooks {
    pub registry: Registry,
    /// Who a client certificate names (mTLS on MQTTS).
    pub authorities: corral_pki::Authorities,
    pub pipeline: Pipeline,
    pub limits: Limits,
    pub connected: ConnectedDevices,
}

#[async_trait]
impl BrokerHooks for PlatformHooks {
    async fn authenticate(&self, req: &ConnectRequest) -> Result<Identity, ConnectRefusal> {
        let refuse = |refusal: ConnectRefusal, why: &str| {
            tracing::info!(client_id = %req.client_id, peer = %req.peer_addr, transport = req.transport, why, "mqtt connect refused");
            Err(refusal)
        };
        if let Some(certificate) = &req.certificate {
            // mTLS: the certificate chained to a registered CA; it names the device, no password.
            let device = match self.authorities.identify(certificate).await {
                Ok(d) => d,
                Err(why) => return refuse(ConnectRefusal::NotAuthorized, &why),
            };
            if req.client_id != device.id.as_str() {
                return refuse(ConnectRefusal::ClientIdNotValid, "client id must be the device id the certificate names");
            }
            return self
                .device_identity(device.id, device.tenant)
                .await
                .or_else(|why| refuse(ConnectRefusal::ServerUnavailable, &why));
        }
        let Some(password) = req.password.as_deref() else {
            return refuse(ConnectRefusal::NotAuthorized, "no credentials (password = device or API token)");
        };
        let Ok(secret) = std::str::from_utf8(password) else {
            return refuse(ConnectRefusal::BadCredentials, "password is not a token");
        };
        if secret.starts_with(corral_registry::DEVICE_TOKEN_PREFIX) {
            let device = match self.registry.authenticate_device(secret).await {
                Ok(d) => d,
                Err(e) => return refuse(refusal_for(&e), &e.to_string()),
            };
            // Client id = device id (the contract), so a device holds one session and the ACL
            // can name its topics; the user name, when sent, must say the same.
            if req.client_id != device.id.as_str() || req.username.as_deref().is_some_and(|u| u != device.id.as_str()) {
                return refuse(ConnectRefusal::ClientIdNotValid, "client id and user name must be the device id");
            }
            return self
                .device_identity(device.id, device.tenant)
                .await
                .or_else(|why| refuse(ConnectRefusal::ServerUnavailable, &why));
        }
        let principal = match self.registry.authenticate_api(secret).await {
            Ok(p) => p,
            Err(e) => return refuse(refusal_for(&e), &e.to_string()),
        };
        if req.username.as_deref().is_some_and(|u| u != "token" && u != principal.name) {
            return refuse(ConnectRefusal::BadCredentials, "user name must be the API token's name or `token`");
        }
        // A device's id is its client id: only its own credential may hold that session.
        match self.registry.tenant_of(&req.client_id).await {
            Ok(None) => Ok(application(&principal)),
            Ok(Some(_)) => refuse(ConnectRefusal::ClientIdNotValid, "client id names a registered device; choose another"),
            Err(e) => refuse(ConnectRefusal::ServerUnavailable, &e.to_string()),
        }
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
                let (pipeline, topic) = (self.pipeline.clone(), publish.topic.clone());
                Ok(Box::pin(
                    async move { pipeline.submit(&envelope, vec![batch]).await.map(|_| ()).map_err(|e| refusal(&e, &topic)) },
                ))
            }
            PlatformTopic::Attributes => self.report_attributes(device, &publish.payload),
            // No twin store yet: routed to subscribers like any other message.
            PlatformTopic::TwinReported => Ok(Box::pin(async { Ok(()) })),
        }
    }

    fn device_tenant(&self, device: &str) -> Option<String> {
        // Asked only when a tenant-scoped application publishes to a device topic (commands),
        // which is rare; a blocking registry read is acceptable there.
        let registry = self.registry.clone();
        let device = device.to_string();
        tokio::task::block_in_place(|| {
            tokio::runtime::Handle::current().block_on(async move { registry.tenant_of(&device).await.ok().flatten() })
        })
        .map(|t| t.as_str().to_string())
    }

    fn on_connected(&self, who: &Identity, _client_id: &str) {
        if let Identity::Device { id, .. } = who {
            let now = chrono::Utc::now();
            self.connected.change(id, true, now.timestamp_nanos_opt().unwrap_or_default());
            self.touch(id, now);
        }
    }

    fn on_disconnected(&self, who: &Identity, _client_id: &str, how: DisconnectKind) {
        if let Identity::Device { id, .. } = who {
            // One instant for both: heard from at the disconnect, and not after it.
            let now = chrono::Utc::now();
            self.connected.change(id, false, now.timestamp_nanos_opt().unwrap_or_default());
            self.touch(id, now);
            if how != DisconnectKind::Clean {
                tracing::info!(device = %id, how = ?how, "device connection lost");
            }
        }
    }
}

impl PlatformHooks {
    /// A device's MQTT identity: its topics and those of the children it speaks for.
    async fn device_identity(&self, id: DeviceId, tenant: TenantId) -> Result<Identity, String> {
        let children = self.registry.children_of(&id).await.map_err(|e| e.to_string())?;
        let children = children.into_iter().map(|c| c.as_str().to_string()).collect();
        Ok(Identity::Device { id: id.as_str().to_string(), tenant: tenant.as_str().to_string(), children })
    }

    fn touch(&self, device: &str, at: chrono::DateTime<chrono::Utc>) {
        if let Ok(id) = DeviceId::new(device) {
            self.registry.touch(&id, at);
        }
    }

    /// `devices/<id>/attributes`: a JSON object merged into the device's attributes.
    fn report_attributes(&self, device: DeviceId, payload: &[u8]) -> Result<PlatformWrite, PublishRefusal> {
        let reported: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(payload).map_err(|e| {
            PublishRefusal::new(ReasonCode::PAYLOAD_FORMAT_INVALID, format!("attributes must be a JSON object: {e}"))
        })?;
        let registry = self.registry.clone();
        Ok(Box::pin(async move {
            registry
                .merge_attributes(&Principal::system(), device.as_str(), reported)
                .await
                .map(|_| ())
                .map_err(|e| refusal(&e.to_wire(), "attributes"))
        }))
    }
}

fn application(principal: &Principal) -> Identity {
    let role = match principal.role {
        corral_registry::Role::Admin => Role::Admin,
        corral_registry::Role::Operator => Role::Operator,
        corral_registry::Role::Viewer => Role::Viewer,
    };
    Identity::Application {
        name: principal.name.clone(),
        principal: format!("token:{}", principal.token_id),
        role,
        tenant: principal.tenant.as_ref().map(|t| t.as_str().to_string()),
    }
}

fn refusal_for(e: &RegistryError) -> ConnectRefusal {
    match e {
        RegistryError::Unauthenticated(_) => ConnectRefusal::BadCredentials,
        RegistryError::Forbidden(_) => ConnectRefusal::NotAuthorized,
        _ => ConnectRefusal::ServerUnavailable,
    }
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
