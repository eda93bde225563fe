//! `GET /api/v1/devices/{id}/live`: a device's readings as server-sent events, each sent once it
//! is durable (the console's device page draws them as they arrive).
//!
//! [`LiveFeed`] is a pipeline observer that fans readings out on a broadcast channel. It asks for
//! batches only while someone listens, so it costs nothing when no live view is open; a listener
//! that falls behind skips ahead and is told how much it missed, rather than slowing ingest.

use crate::AppState;
use crate::auth::Caller;
use crate::error::ApiResult;
use async_trait::async_trait;
use axum::extract::{Path, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use corral_model::{Batch, Envelope, FieldValue};
use futures::Stream;
use serde::Serialize;
use serde_json::{Map, Value};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast;

/// One row as a live view sees it.
#[derive(Debug, Clone, Serialize)]
pub struct Reading {
    pub device: String,
    pub table: String,
    /// RFC 3339, nanoseconds.
    pub time: String,
    pub values: Map<String, Value>,
}

/// Readings of every device as they become durable; subscribe and filter.
#[derive(Clone)]
pub struct LiveFeed {
    sender: broadcast::Sender<Arc<Reading>>,
}

impl Default for LiveFeed {
    fn default() -> Self {
        // Room for bursts: a listener further behind than this skips ahead.
        LiveFeed { sender: broadcast::channel(4096).0 }
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
        self.sender.receiver_count() > 0
    }

    async fn observe(&self, _envelope: &Envelope, batches: Vec<Batch>) {
        for batch in batches {
            for row in batch.rows {
                let time = chrono::DateTime::from_timestamp_nanos(row.time_ns).to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true);
                let values = row.fields.iter().map(|(name, value)| (name.clone(), json(value))).collect();
                let _ = self.sender.send(Arc::new(Reading { device: row.device, table: batch.table.to_string(), time, values }));
            }
        }
    }
}

/// The stream: `reading` events with a [`Reading`] as JSON, `lagged` events with how many were
/// skipped, and a comment every 15 s to keep proxies from closing an idle stream.
pub async fn stream(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<String>,
) -> ApiResult<Sse<impl Stream<Item = Result<Event, std::convert::Infallible>>>> {
    // Exists and is visible to the caller, or 404 like every other read of it.
    let device = state.registry.get_device(&caller, &id).await?;
    let receiver = state.live.sender.subscribe();
    let id = device.id.to_string();
    let events = futures::stream::unfold((receiver, id), |(mut receiver, id)| async move {
        loop {
            match receiver.recv().await {
                Ok(reading) if reading.device == id => {
                    let event = Event::default().event("reading").json_data(&*reading).unwrap_or_else(|_| Event::default().comment("unencodable"));
                    return Some((Ok(event), (receiver, id)));
                }
                Ok(_) => continue,
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    return Some((Ok(Event::default().event("lagged").data(n.to_string())), (receiver, id)));
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}
