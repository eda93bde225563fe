//! How an action reaches the world outside Corral: a signed webhook POST, a NATS publish, an MQTT
//! republish or a device command. The outbox (`corral-outbox`) decides *when* to try, and
//! retries; `Actions` makes one attempt and says whether a failure is worth retrying.

pub mod nats;
pub mod policy;
pub mod webhook;

pub use corral_outbox::AttemptError;

use crate::Platform;
use crate::outbox::Target;
use corral_outbox::Delivery;
use nats::NatsPublisher;
use std::sync::Arc;
use webhook::WebhookClient;

/// The rules' half of the outbox: carries one entry to the target its action names. Owned by the
/// outbox's delivery loop for the life of the server.
pub(crate) struct Actions {
    pub webhook: WebhookClient,
    pub nats: NatsPublisher,
    pub platform: Arc<dyn Platform>,
    /// Command actions become tracked commands through it, which reach the device whatever its
    /// door, and wait for it when it is away.
    pub commands: Arc<dyn corral_services::IssueCommands>,
}

impl corral_outbox::Deliver for Actions {
    type Target = Target;

    fn kind(&self, target: &Target) -> &'static str {
        target.spec.kind()
    }

    async fn deliver(&self, d: &Delivery<Target>) -> Result<(), AttemptError> {
        use crate::spec::ActionSpec;
        match &d.target.spec {
            ActionSpec::Webhook { url, secret, .. } => {
                let event = format!("alarm.{}", d.event);
                let secret = secret.as_deref().unwrap_or_default();
                self.webhook.post(url, secret, &d.idempotency_key, &event, d.payload.as_bytes()).await
            }
            ActionSpec::Nats { url, subject, .. } => {
                let alarm: serde_json::Value = serde_json::from_str(&d.payload).unwrap_or_default();
                let subject = expand_from(subject, &alarm, &d.event);
                self.nats.publish(url, &subject, &d.idempotency_key, d.payload.as_bytes()).await
            }
            ActionSpec::Mqtt { topic, .. } => {
                let event: serde_json::Value = serde_json::from_str(&d.payload).unwrap_or_default();
                let topic = expand_from(topic, &event, &d.event);
                let tenant = event["alarm"]["tenant"].as_str().unwrap_or_default();
                self.platform.publish(&topic, d.payload.clone().into_bytes(), tenant).await.map_err(AttemptError::retry)
            }
            ActionSpec::Command { name, payload, timeout_s, .. } => {
                let event: serde_json::Value = serde_json::from_str(&d.payload).unwrap_or_default();
                // No payload of its own: the device gets the alarm event.
                let payload = if payload.is_null() { event.clone() } else { payload.clone() };
                let tenant = event["alarm"]["tenant"].as_str().and_then(|t| corral_model::TenantId::new(t).ok());
                let device = d.target.device.as_str();
                let (device, tenant) = match (corral_model::DeviceId::new(device), tenant) {
                    (Ok(device), Some(tenant)) => (device, tenant),
                    (Err(e), _) => return Err(AttemptError::permanent(format!("command for {device}: {e}"))),
                    (_, None) => return Err(AttemptError::permanent(format!("command for {device}: the event has no tenant"))),
                };
                let order = corral_services::CommandOrder {
                    device,
                    tenant,
                    name: name.clone(),
                    payload,
                    timeout: std::time::Duration::from_secs(*timeout_s),
                    created_by: format!("rule:{}", event["alarm"]["rule"].as_str().unwrap_or_default()),
                    // The outbox retries an entry whose outcome it did not record: the same key then
                    // finds the command created the first time instead of commanding twice.
                    key: Some(d.idempotency_key.clone()),
                };
                self.commands.issue(order).await.map(drop).map_err(|e| AttemptError::retry(e.message))
            }
        }
    }
}

/// Expands a topic or subject template from the event JSON.
fn expand_from(template: &str, event: &serde_json::Value, kind: &str) -> String {
    let alarm = &event["alarm"];
    let s = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_string();
    crate::spec::expand(template, &s(&alarm["device"]), &s(&alarm["tenant"]), &s(&alarm["rule"]), kind)
}
