//! What a campaign needs from the rest of the platform, as one trait ([`Fleet`]): which devices a
//! target selects, the devices' twins (to configure them and to hear their reports), and where an
//! installed firmware version is recorded. The binary implements it over the registry, the SQL
//! engine and the twin store; tests implement it in memory.

use async_trait::async_trait;
use corral_model::{DeviceId, TenantId, WireError};
use corral_registry::Target;
use corral_services::ReportedNotice;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use tokio::sync::broadcast;

#[async_trait]
pub trait Fleet: Send + Sync + 'static {
    /// The active devices of `tenant` that `target` selects; more than `max` is an error.
    async fn select(&self, tenant: &TenantId, target: &Target, max: usize) -> Result<BTreeMap<DeviceId, TenantId>, WireError>;

    /// Merges `desired` into the device's desired twin (a configuration campaign's change).
    async fn configure(&self, device: &DeviceId, tenant: &TenantId, desired: &Map<String, Value>) -> Result<(), WireError>;

    /// The device's reported document now.
    async fn reported(&self, device: &DeviceId) -> Result<Map<String, Value>, WireError>;

    /// Records that the device runs firmware `version`: its `firmware_version` attribute and the
    /// `firmware_version` key of its reported twin.
    async fn installed(&self, device: &DeviceId, version: &str) -> Result<(), WireError>;

    /// Every reported-twin change from now on.
    fn reported_changes(&self) -> broadcast::Receiver<ReportedNotice>;
}

/// Whether `reported` holds what the merge patch `desired` asks for: every value equal (objects
/// compared key by key, numbers by value), every `null` key absent.
pub fn satisfies(reported: &Map<String, Value>, desired: &Map<String, Value>) -> bool {
    desired.iter().all(|(key, want)| match (want, reported.get(key)) {
        (Value::Null, got) => got.is_none(),
        (Value::Object(want), Some(Value::Object(got))) => satisfies(got, want),
        (want, Some(got)) => same(want, got),
        (_, None) => false,
    })
}

fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same(a, b)),
        (Value::Object(x), Value::Object(y)) => x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w))),
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn map(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn reported_satisfies_a_desired_patch_value_by_value() {
        let reported = map(json!({"interval_s": 30.0, "net": {"apn": "iot", "roaming": false}, "extra": 1}));
        assert!(satisfies(&reported, &map(json!({"interval_s": 30}))));
        assert!(satisfies(&reported, &map(json!({"net": {"apn": "iot"}, "gone": null}))));
        assert!(!satisfies(&reported, &map(json!({"net": {"apn": "iot2"}}))));
        assert!(!satisfies(&reported, &map(json!({"extra": null}))));
        assert!(!satisfies(&reported, &map(json!({"missing": 1}))));
    }
}
