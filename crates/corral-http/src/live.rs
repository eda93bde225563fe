//! `GET /api/v1/devices/{id}/live`: a device's readings as server-sent events, each sent once it
//! is durable (the console's device page draws them as they arrive).
//!
//! [`LiveFeed`] is a pipeline observer that fans readings out on a broadcast channel. It asks for
//! batches only while someone listens and turns into readings only the rows of devices someone
//! watches, so a fleet's ingest pays nothing for one open device page; a listener that falls
//! behind skips ahead and is told how much it missed, rather than slowing ingest.

use crate::AppState;
use crate::auth::Caller;
use crate::error::ApiResult;
use crate::extract::Path;
use crate::openapi::{Api, Operation};
use async_trait::async_trait;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use corral_model::{Batch, Envelope, FieldValue};
use futures::Stream;
use serde::Serialize;
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::broadcast;

const TAG: &str = "devices";

pub(crate) fn routes(api: Api) -> Api {
    api.get(
        "/api/v1/devices/{id}/live",
        stream,
        Operation::new(TAG, "A device's readings as they arrive (server-sent events)")
            .describe(
                "Each row of the device is sent once it is durable, as a `reading` event whose data is JSON: \
                 `{\"device\", \"table\", \"time\" (RFC 3339, to the nanosecond), \"values\" (field: value)}`. A \
                 listener that falls behind skips ahead and gets a `lagged` event with how many readings it \
                 missed. A comment every 15 s keeps proxies from closing an idle stream. The credential is \
                 checked again every 30 s: the stream ends when it no longer holds (signed out, revoked, \
                 expired). Only readings from after the request are sent.",
            )
            .path::<String>("id", "The device")
            .returns_raw(200, "text/event-stream", "The stream, open until the client or the credential goes"),
    )
}

/// One row as a live view sees it.
#[derive(Debug, Clone, Serialize)]
pub struct Reading {
    pub device: String,
    pub table: String,
    /// RFC 3339, nanoseconds.
    pub time: String,
    pub values: Map<String, Value>,
}

/// Readings of the watched devices as they become durable; subscribe and filter.
#[derive(Clone)]
pub struct LiveFeed {
    sender: broadcast::Sender<Arc<Reading>>,
    /// Devices with an open stream, and how many streams each has.
    watched: Arc<Mutex<HashMap<String, usize>>>,
}

impl Default for LiveFeed {
    fn default() -> Self {
        // Room for bursts: a listener further behind than this skips ahead.
        LiveFeed { sender: broadcast::channel(4096).0, watched: Arc::default() }
    }
}

fn lock(m: &Mutex<HashMap<String, usize>>) -> std::sync::MutexGuard<'_, HashMap<String, usize>> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A device being watched while this lives (one open stream).
struct Watch {
    feed: LiveFeed,
    device: String,
}

impl Watch {
    fn new(feed: &LiveFeed, device: String) -> Watch {
        *lock(&feed.watched).entry(device.clone()).or_default() += 1;
        Watch { feed: feed.clone(), device }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let mut watched = lock(&self.feed.watched);
        if let Some(n) = watched.get_mut(&self.device) {
            *n -= 1;
            if *n == 0 {
                watched.remove(&self.device);
            }
        }
    }
}

fn json(value: &FieldValue) -> Value {
    match value {
        FieldValue::Float(f) => serde_json::Number::from_f64(*f).map_or(Value::Null, Value::Number),
        FieldValue::Int(i) => Value::from(*i),
        FieldValue::UInt(u) => Value::from(*u),
        FieldValue::Bool(b) => Value::Bool(*b),
        FieldValue::Str(s) => Value::String(s.clone()),
    }
}

#[async_trait]
impl corral_ingest::Observer for LiveFeed {
    fn wants(&self) -> bool {
        !lock(&self.watched).is_empty()
    }

    async fn observe(&self, _envelope: &Envelope, batches: Vec<Batch>) {
        let watched = lock(&self.watched);
        for batch in batches {
            for row in batch.rows.into_iter().filter(|r| watched.contains_key(&r.device)) {
                let time =
                    chrono::DateTime::from_timestamp_nanos(row.time_ns).to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true);
                let values = row.fields.iter().map(|(name, value)| (name.clone(), json(value))).collect();
                let _ = self.sender.send(Arc::new(Reading { device: row.device, table: batch.table.to_string(), time, values }));
            }
        }
    }
}

/// How often an open stream checks that its credential still holds (sign-out, a new password,
/// a revoked token, an expired session end it within this).
const RECHECK: Duration = Duration::from_secs(30);

/// The stream: `reading` events with a [`Reading`] as JSON, `lagged` events with how many were
/// skipped, and a comment every 15 s to keep proxies from closing an idle stream. It ends when
/// its credential stops holding.
pub async fn stream(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Sse<impl Stream<Item = Result<Event, std::convert::Infallible>>>> {
    // Exists and is visible to the caller, or 404 like every other read of it.
    let device = state.registry.get_device(&caller, &id).await?;
    let receiver = state.live.sender.subscribe();
    // Dropped with the stream when the client goes: the device is then no longer watched.
    let watch = Watch::new(&state.live, device.id.to_string());
    let mut recheck = tokio::time::interval_at(tokio::time::Instant::now() + RECHECK, RECHECK);
    recheck.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The request's headers hold its credential, checked again while the stream runs.
    let context = (receiver, watch, headers, recheck, state);
    let events = futures::stream::unfold(context, |(mut receiver, watch, headers, mut recheck, state)| async move {
        loop {
            let received = tokio::select! {
                received = receiver.recv() => received,
                _ = recheck.tick() => {
                    match crate::auth::authenticate(&state, &headers).await {
                        Ok(_) => continue,
                        Err(_) => return None,
                    }
                }
            };
            let event = match received {
                Ok(reading) if reading.device == watch.device => Event::default()
                    .event("reading")
                    .json_data(&*reading)
                    .unwrap_or_else(|_| Event::default().comment("unencodable")),
                Ok(_) => continue,
                Err(broadcast::error::RecvError::Lagged(n)) => Event::default().event("lagged").data(n.to_string()),
                Err(broadcast::error::RecvError::Closed) => return None,
            };
            return Some((Ok(event), (receiver, watch, headers, recheck, state)));
        }
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use corral_ingest::Observer;
    use corral_model::{DeviceId, Door, Row, TableName, TenantId};

    #[tokio::test]
    async fn only_watched_devices_become_readings_and_only_while_watched() {
        let feed = LiveFeed::default();
        assert!(!feed.wants(), "nobody watches: the pipeline does not even copy batches");
        let mut receiver = feed.sender.subscribe();
        let watch = Watch::new(&feed, "pump-1".into());
        assert!(feed.wants());
        let envelope = Envelope {
            device: DeviceId::new("pump-1").unwrap(),
            tenant: TenantId::default_tenant(),
            door: Door::Http,
            received_at_ns: 0,
        };
        let batch = Batch {
            table: TableName::telemetry(),
            rows: vec![
                Row::new(1, "pump-2").field("rpm", FieldValue::Float(1.0)),
                Row::new(2, "pump-1").field("rpm", FieldValue::Int(7)),
            ],
        };
        feed.observe(&envelope, vec![batch]).await;
        let reading = receiver.try_recv().unwrap();
        assert_eq!((reading.device.as_str(), reading.values["rpm"].clone()), ("pump-1", Value::from(7)));
        assert!(receiver.try_recv().is_err(), "the unwatched device's row was skipped");
        drop(watch);
        assert!(!feed.wants());
    }
}
