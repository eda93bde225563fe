//! Alarms about the platform itself rather than a device: a scheduled export that keeps
//! failing, say. They live beside the rules' alarms (same list, lifecycle, SQL table and MQTT
//! events), under rule id 0 and a `device` that names what failed (`export:nightly`).

use async_trait::async_trait;

#[async_trait]
pub trait PlatformAlarms: Send + Sync + 'static {
    /// Raises the alarm `key`, or counts one more occurrence if it is open. `tenant` is whose
    /// concern it is (`None`: only unscoped callers see it).
    async fn raise(&self, key: &str, tenant: Option<&str>, title: &str, message: &str);
    /// Clears the alarm `key` if it is open (what failed works again).
    async fn clear(&self, key: &str);
}

/// No alarms: for rooms run without the rules (tests, tools).
#[async_trait]
impl PlatformAlarms for () {
    async fn raise(&self, key: &str, _tenant: Option<&str>, title: &str, message: &str) {
        tracing::warn!(key, title, message, "platform alarm (no alarm board to raise it on)");
    }

    async fn clear(&self, _key: &str) {}
}
