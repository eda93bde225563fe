//! [`Identities`]: the platform's [`Identity`] service for every door. Tokens and pre-shared
//! keys are the registry's, certificates the authorities'; the rules that hold on every door
//! (active devices only, a gateway speaks for its active children) are written here once.

use crate::Authorities;
use async_trait::async_trait;
use corral_model::{DeviceId, ErrorKind, TenantId, WireError};
use corral_registry::{DEVICE_TOKEN_PREFIX, DeviceIdentity, DeviceStatus, Principal, Registry};
use corral_services::{Application, Caller, Credential, DeviceCaller, Identity, Role};
use std::sync::Arc;
use tokio::sync::broadcast;

/// Who a credential is, over the registry and the tenants' CAs. Cheap to clone.
#[derive(Clone)]
pub struct Identities {
    registry: Arc<dyn Registry>,
    authorities: Authorities,
}

impl Identities {
    pub fn new(registry: Arc<dyn Registry>, authorities: Authorities) -> Self {
        Identities { registry, authorities }
    }
}

fn device(d: DeviceIdentity) -> DeviceCaller {
    DeviceCaller { id: d.id, tenant: d.tenant, gateway: d.gateway }
}

fn application(p: Principal) -> Application {
    let role = match p.role {
        corral_registry::Role::Admin => Role::Admin,
        corral_registry::Role::Operator => Role::Operator,
        corral_registry::Role::Viewer => Role::Viewer,
    };
    Application { token_id: p.token_id, name: p.name, role, tenant: p.tenant }
}

#[async_trait]
impl Identity for Identities {
    async fn authenticate(&self, credential: Credential<'_>) -> Result<Caller, WireError> {
        match credential {
            Credential::Certificate(der) => self
                .authorities
                .identify(der)
                .await
                .map(|d| Caller::Device(device(d)))
                .map_err(|why| WireError::new(ErrorKind::Unauthenticated, format!("client certificate: {why}"))),
            Credential::DeviceToken(secret) => {
                self.registry.authenticate_device(secret).await.map(|d| Caller::Device(device(d))).map_err(|e| e.to_wire())
            }
            Credential::Token(secret) if secret.starts_with(DEVICE_TOKEN_PREFIX) => {
                self.registry.authenticate_device(secret).await.map(|d| Caller::Device(device(d))).map_err(|e| e.to_wire())
            }
            Credential::Token(secret) => {
                self.registry.authenticate_api(secret).await.map(|p| Caller::Application(application(p))).map_err(|e| e.to_wire())
            }
            Credential::PskSession(identity) => {
                self.registry.authenticate_psk(identity).await.map(|(d, _key)| Caller::Device(device(d))).map_err(|e| e.to_wire())
            }
        }
    }

    async fn psk(&self, identity: &str) -> Result<Vec<u8>, WireError> {
        self.registry.authenticate_psk(identity).await.map(|(_device, key)| key).map_err(|e| e.to_wire())
    }

    async fn speaks_for(&self, caller: &DeviceCaller, device: &str) -> Result<Option<DeviceCaller>, WireError> {
        if caller.id.as_str() == device {
            return Ok(Some(caller.clone()));
        }
        let Ok(child) = self.registry.get_device(&Principal::system(), device).await else { return Ok(None) };
        if child.gateway.as_ref() != Some(&caller.id) {
            return Ok(None);
        }
        if child.status != DeviceStatus::Active {
            return Err(WireError::new(ErrorKind::Forbidden, format!("device {device} is {}", child.status)));
        }
        Ok(Some(DeviceCaller { id: child.id, tenant: child.tenant, gateway: child.gateway }))
    }

    async fn children_of(&self, gateway: &DeviceId) -> Result<Vec<DeviceId>, WireError> {
        self.registry.children_of(gateway).await.map_err(|e| e.to_wire())
    }

    async fn tenant_of(&self, device: &str) -> Result<Option<TenantId>, WireError> {
        self.registry.tenant_of(device).await.map_err(|e| e.to_wire())
    }

    fn heard_from(&self, device: &DeviceId, at_ns: i64) {
        self.registry.touch(device, chrono::DateTime::from_timestamp_nanos(at_ns));
    }

    fn credential_changes(&self) -> broadcast::Receiver<DeviceId> {
        self.registry.credential_changes()
    }
}
