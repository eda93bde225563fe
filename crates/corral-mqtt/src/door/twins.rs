//! The broker's part in device twins, beside reported patches (which the door takes in
//! `on_platform_publish`):
//!
//! - Each device's desired document is kept as the *retained* message of
//!   `devices/<id>/twin/desired` (QoS 1). A device that subscribes gets the current document at
//!   once; a connected one gets each change; a persistent session collects the changes made
//!   while the device was away. The broker persists retained messages and sessions, so all of
//!   that survives a restart.
//! - Whatever a change notice could miss (a change committed just before a `kill -9`, notices
//!   dropped while this task lagged) is repaired by comparing every retained document's version
//!   with the store's, at start and after lagging.
//! - `devices/<id>/twin/get` is answered on `devices/<id>/twin`, or on the MQTT 5 response topic
//!   with the request's correlation data when that topic lies under `devices/<id>/twin/`.

use crate::Broker;
use crate::codec::QoS;
use crate::tap::Tapped;
use corral_model::DeviceId;
use corral_services::{DesiredMessage, DeviceTwins};
use futures::StreamExt;
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::broadcast::error::RecvError;

const DESIRED_FILTER: &str = "devices/+/twin/desired";
const GET_FILTER: &str = "devices/+/twin/get";
/// Twins read per page when comparing every retained document with the store.
const PAGE: usize = 1000;
/// Retained documents published at once while catching up.
const CONCURRENT_PUBLISHES: usize = 64;

/// Starts carrying twins between `twins` and the broker. Returns once every retained desired
/// document matches the store, so a device connecting afterwards finds its current one. The task
/// ends with the broker.
pub async fn carry_twins(broker: Broker, twins: Arc<dyn DeviceTwins>) -> Result<(), crate::BrokerError> {
    // Subscribe before reading the documents: no change falls between the read and the notices.
    let mut changes = twins.desired_changes();
    let mut gets = broker.tap(GET_FILTER, 1024)?;
    let mut published = republish_all(&broker, twins.as_ref()).await;
    tokio::spawn(async move {
        loop {
            tokio::select! {
                notice = changes.recv() => match notice {
                    Ok(notice) => {
                        if published.get(&notice.device).is_some_and(|v| *v >= notice.version) {
                            continue;
                        }
                        // The store's document now, which is at least the noticed version: notices
                        // of quick successive changes then cost one publish, never an older one.
                        match twins.desired(&notice.device).await {
                            Ok(message) => publish_desired(&broker, &mut published, message).await,
                            Err(e) => tracing::warn!(device = %notice.device, error = %e, "desired document not read"),
                        }
                    }
                    Err(RecvError::Lagged(missed)) => {
                        tracing::warn!(missed, "desired changes came faster than MQTT published them; comparing every twin");
                        published = republish_all(&broker, twins.as_ref()).await;
                    }
                    Err(RecvError::Closed) => return,
                },
                Some(request) = gets.recv() => answer_get(&broker, twins.as_ref(), request).await,
                else => return,
            }
        }
    });
    Ok(())
}

/// Publishes every desired document whose retained copy is missing or of another version;
/// returns the version now retained per device. Documents never set (version 0, empty) are not
/// retained: a fleet of untouched twins costs the broker nothing.
async fn republish_all(broker: &Broker, twins: &dyn DeviceTwins) -> HashMap<DeviceId, u64> {
    let retained: HashMap<Arc<str>, u64> =
        broker.retained(DESIRED_FILTER).into_iter().filter_map(|(topic, payload)| Some((topic, version_of(&payload)?))).collect();
    let mut published = HashMap::new();
    let mut after: Option<DeviceId> = None;
    loop {
        let page = match twins.desired_page(after.as_ref(), PAGE).await {
            Ok(page) => page,
            Err(e) => {
                tracing::error!(error = %e, "reading desired documents failed; devices get changes from now on");
                return published;
            }
        };
        let Some(last) = page.last() else { return published };
        after = Some(last.device.clone());
        let mut stale = Vec::new();
        for message in page {
            let topic = desired_topic(&message.device);
            if retained.get(topic.as_str()) == Some(&message.version) || message.version == 0 {
                published.insert(message.device, message.version);
            } else {
                stale.push(message);
            }
        }
        // Each publish waits for the broker's group commit: many at once share the fsyncs.
        let done: Vec<(DesiredMessage, bool)> = futures::stream::iter(stale)
            .map(|message| async move {
                let ok = publish(broker, &message).await;
                (message, ok)
            })
            .buffer_unordered(CONCURRENT_PUBLISHES)
            .collect()
            .await;
        published.extend(done.into_iter().filter(|(_, ok)| *ok).map(|(message, _)| (message.device, message.version)));
    }
}

async fn publish_desired(broker: &Broker, published: &mut HashMap<DeviceId, u64>, message: DesiredMessage) {
    if publish(broker, &message).await {
        published.insert(message.device, message.version);
    }
}

/// Publishes `message` as the retained desired document of its device; `false` (logged) when
/// the broker refused it.
async fn publish(broker: &Broker, message: &DesiredMessage) -> bool {
    let topic = desired_topic(&message.device);
    let tenant = message.tenant.as_str();
    match broker.publish_for_tenant(&topic, message.payload.clone(), QoS::AtLeastOnce, true, Some(tenant)).await {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(%topic, error = %e, "desired document not published");
            false
        }
    }
}

async fn answer_get(broker: &Broker, twins: &dyn DeviceTwins, request: Tapped) {
    // Only what clients asked; the platform's own publishes on the topic are not questions.
    if !request.from_client {
        return;
    }
    let Some(device) = crate::topic::device_of(&request.topic).and_then(|d| DeviceId::new(d).ok()) else { return };
    let payload = match twins.get(&device, &request.payload).await {
        Ok(answer) => answer,
        Err(e) => bytes::Bytes::from(serde_json::json!({ "error": e.message }).to_string()),
    };
    let topic = answer_topic(&device, request.response_topic.as_deref());
    if let Err(e) = broker.publish_answer(&topic, payload, request.correlation_data).await {
        tracing::warn!(%topic, error = %e, "twin answer not published");
    }
}

fn desired_topic(device: &DeviceId) -> String {
    format!("devices/{device}/twin/desired")
}

/// `devices/<id>/twin`, or the request's response topic when it is under `devices/<id>/twin/`
/// and is none of the twin's own topics: the platform publishes answers only where the device
/// alone expects them, never on a topic that means something else.
fn answer_topic(device: &DeviceId, response_topic: Option<&str>) -> String {
    let base = format!("devices/{device}/twin");
    match response_topic {
        Some(topic)
            if topic.strip_prefix(base.as_str()).and_then(|rest| rest.strip_prefix('/')).is_some_and(|rest| {
                !rest.is_empty() && !matches!(rest, "desired" | "reported" | "get") && crate::topic::is_valid_topic_name(topic)
            }) =>
        {
            topic.to_string()
        }
        _ => base,
    }
}

/// The `version` of a desired document as retained.
fn version_of(payload: &[u8]) -> Option<u64> {
    serde_json::from_slice::<serde_json::Value>(payload).ok()?.get("version")?.as_u64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_go_to_the_devices_twin_topic_unless_it_asked_for_another_under_it() {
        let d = DeviceId::new("d1").unwrap();
        assert_eq!(answer_topic(&d, None), "devices/d1/twin");
        assert_eq!(answer_topic(&d, Some("devices/d1/twin/answers/7")), "devices/d1/twin/answers/7");
        for elsewhere in [
            "devices/d2/twin/x",
            "devices/d1/commands/x",
            "devices/d1/twin/desired",
            "devices/d1/twin/reported",
            "devices/d1/twin/get",
            "devices/d1/twinx",
            "devices/d1/twin/",
            "alarms/acme/d1",
            "devices/d1/twin/+",
        ] {
            assert_eq!(answer_topic(&d, Some(elsewhere)), "devices/d1/twin", "{elsewhere}");
        }
    }

    #[test]
    fn the_version_is_read_from_a_retained_document() {
        assert_eq!(version_of(br#"{"version": 3, "desired": {}}"#), Some(3));
        assert_eq!(version_of(b"{}"), None);
        assert_eq!(version_of(b"garbage"), None);
    }
}
