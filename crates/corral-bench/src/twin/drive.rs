//! The two ways of changing a device's desired document, at the offered rate and round-robin over
//! the fleet (change `k`, counted from 1, goes to device `(k - 1) mod N` with `{"seq": k}`):
//!
//! - [`rest`]: Corral's `PATCH /api/v1/devices/<id>/twin/desired` with the admin token, answered
//!   200 once the change is durable; at most `in_flight` requests outstanding.
//! - [`mqtt`]: one publisher connection writing `{"version": k, "desired": {"seq": k}}` retained,
//!   QoS 1, on the device's topic; at most `in_flight` PUBLISHes unacknowledged.
//!
//! Both take the clock just before the change is written (`sent_ns`) and when it is acknowledged
//! (`acked_ns`, `None` when it was refused or never acknowledged). A change that waited for the
//! in-flight bound is sent late: `due_ns` is when the schedule wanted it out.

use crate::mqtt::conn::{Client, Login};
use crate::mqtt::wire;
use crate::paced;
use crate::server::ADMIN_TOKEN;
use crate::twin::{Sizes, desired_topic};
use serde_json::json;
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::sync::{Semaphore, mpsc};
use tokio::time::Instant;

/// One change the benchmark made; times in ns after the run's base instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Change {
    pub seq: u64,
    pub device: u32,
    pub due_ns: u64,
    pub sent_ns: u64,
    pub acked_ns: Option<u64>,
}

/// Every change of a run, in `seq` order, and remarks (refusals, missing acknowledgements).
pub struct Sent {
    pub changes: Vec<Change>,
    pub notes: Vec<String>,
}

fn ns_since(base: Instant, at: Instant) -> u64 {
    at.saturating_duration_since(base).as_nanos() as u64
}

pub async fn rest(http: &reqwest::Client, url: &str, ids: &[String], sizes: &Sizes, base: Instant) -> Sent {
    let done = paced::requests(sizes.changes, sizes.rate, sizes.in_flight, |k, due| {
        let (seq, device) = (k as u64 + 1, k % ids.len());
        let url = format!("{url}/api/v1/devices/{}/twin/desired", ids[device]);
        let http = http.clone();
        let due_ns = ns_since(base, due);
        async move {
            let sent_ns = ns_since(base, Instant::now());
            let outcome = match http.patch(url).bearer_auth(ADMIN_TOKEN).json(&json!({ "seq": seq })).send().await {
                Ok(r) if r.status().is_success() => r.bytes().await.map(|_| ()).map_err(|e| e.to_string()),
                Ok(r) => Err(format!("{}: {}", r.status(), r.text().await.unwrap_or_default())),
                Err(e) => Err(e.to_string()),
            };
            let acked_ns = outcome.is_ok().then(|| ns_since(base, Instant::now()));
            (Change { seq, device: device as u32, due_ns, sent_ns, acked_ns }, outcome.err())
        }
    })
    .await;
    let mut changes = done.items;
    changes.sort_by_key(|c| c.seq);
    let mut notes = Vec::new();
    if done.failed > 0 {
        notes.push(format!("{} PATCHes failed, first: {}", done.failed, done.first_error.unwrap_or_default()));
    }
    Sent { changes, notes }
}

pub async fn mqtt(addr: SocketAddr, ids: &[String], sizes: &Sizes, base: Instant) -> anyhow::Result<Sent> {
    let publisher = Client::connect(addr, "twin-bench-publisher", Login::Anonymous).await?;
    let (mut rd, mut wr) = publisher.stream.into_split();
    let mut rx = publisher.rx;
    let gate = Arc::new(Semaphore::new(sizes.in_flight));
    // PUBACKs, in the order they came: (packet id, ns after base). Each frees a place in the window.
    let (ack_tx, mut ack_rx) = mpsc::unbounded_channel::<(u16, u64)>();
    let acker_gate = gate.clone();
    let acker = tokio::spawn(async move {
        loop {
            let mut freed = 0;
            let more = rx
                .read(&mut rd, |kind, _, body| {
                    if let (wire::PUBACK, Some(id)) = (kind, wire::packet_id(body)) {
                        let _ = ack_tx.send((id, base.elapsed().as_nanos() as u64));
                        freed += 1;
                    }
                })
                .await;
            acker_gate.add_permits(freed);
            if !matches!(more, Ok(true)) {
                return;
            }
        }
    });
    let packet_id = |seq: u64| ((seq - 1) % u16::MAX as u64) as u16 + 1;
    let (mut changes, mut out) = (Vec::with_capacity(sizes.changes), Vec::with_capacity(256));
    let start = Instant::now();
    for k in 0..sizes.changes {
        let due = paced::due(start, k, sizes.rate);
        tokio::time::sleep_until(due).await;
        let waited = tokio::time::timeout(Duration::from_secs(10), gate.acquire()).await;
        let Ok(Ok(permit)) = waited else { anyhow::bail!("no PUBACK for 10 s after {k} changes") };
        permit.forget();
        let (seq, device) = (k as u64 + 1, k % ids.len());
        let payload = format!(r#"{{"version":{seq},"desired":{{"seq":{seq}}}}}"#);
        out.clear();
        wire::put_publish(&mut out, desired_topic(&ids[device]).as_bytes(), 1, packet_id(seq), payload.as_bytes());
        out[0] |= 1; // RETAIN, as Corral keeps the desired document.
        let sent_ns = ns_since(base, Instant::now());
        wr.write_all(&out).await?;
        changes.push(Change { seq, device: device as u32, due_ns: ns_since(base, due), sent_ns, acked_ns: None });
    }
    // Wait for the last PUBACKs (all places back in the window), then match them to the changes.
    let all = sizes.in_flight as u32;
    let _ = tokio::time::timeout(Duration::from_secs(10), gate.acquire_many(all)).await;
    acker.abort();
    let mut acks: HashMap<u16, VecDeque<u64>> = HashMap::new();
    while let Ok((id, at)) = ack_rx.try_recv() {
        acks.entry(id).or_default().push_back(at);
    }
    for c in &mut changes {
        c.acked_ns = acks.get_mut(&packet_id(c.seq)).and_then(VecDeque::pop_front);
    }
    let unacked = changes.iter().filter(|c| c.acked_ns.is_none()).count();
    let notes = if unacked > 0 { vec![format!("{unacked} PUBLISHes never acknowledged")] } else { Vec::new() };
    Ok(Sent { changes, notes })
}
