//! The two requesters, each sending command `k` (from 1) to device `(k - 1) mod N` at the offered
//! rate with at most `in_flight` outstanding, payload `{"seq": k}`:
//!
//! - [`rest`]: Corral's `POST /api/v1/devices/<id>/commands` with `"wait": 10`: the answer is the
//!   command once the device answered it (200, `state` succeeded, `response` its payload);
//! - [`mqtt`]: one application client subscribed QoS 1 to `devices/+/commands/+/response` that
//!   publishes each command QoS 1 on `devices/<id>/commands/cmd-<k>`; the round trip ends when the
//!   device's answer for `k` arrives at that client.
//!
//! A round trip counts only when the answer carries the command's own `seq`.

use super::Sizes;
use crate::mqtt::conn::{Client, Login};
use crate::mqtt::wire;
use crate::paced;
use crate::server::ADMIN_TOKEN;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::sync::Semaphore;
use tokio::time::Instant;

/// One command: when it was due and sent, and when its answer came back (ns after the base).
#[derive(Debug, Clone, Copy, Default)]
pub struct Trip {
    pub due_ns: u64,
    pub sent_ns: u64,
    pub answered_ns: Option<u64>,
}

pub struct Sent {
    pub trips: Vec<Trip>,
    pub notes: Vec<String>,
}

fn ns(base: Instant) -> u64 {
    base.elapsed().as_nanos() as u64
}

pub async fn rest(http: &reqwest::Client, url: &str, ids: &[String], sizes: &Sizes, base: Instant) -> Sent {
    let done = paced::requests(sizes.commands, sizes.rate, sizes.in_flight, |k, due| {
        let seq = k as u64 + 1;
        let url = format!("{url}/api/v1/devices/{}/commands", ids[k % ids.len()]);
        let (http, due_ns) = (http.clone(), due.saturating_duration_since(base).as_nanos() as u64);
        async move {
            let sent_ns = ns(base);
            let body = json!({"name": "ping", "payload": {"seq": seq}, "wait": 10, "timeout": 60});
            let outcome = match http.post(url).bearer_auth(ADMIN_TOKEN).json(&body).send().await {
                Ok(r) if r.status() == 200 => match r.json::<Value>().await {
                    Ok(c) if c["state"] == "succeeded" && c["response"]["seq"] == seq => Ok(()),
                    Ok(c) => Err(format!("answered, but not with its own seq: {c}")),
                    Err(e) => Err(e.to_string()),
                },
                Ok(r) => Err(format!("{}: {}", r.status(), r.text().await.unwrap_or_default())),
                Err(e) => Err(e.to_string()),
            };
            let answered_ns = outcome.is_ok().then(|| ns(base));
            ((seq, Trip { due_ns, sent_ns, answered_ns }), outcome.err())
        }
    })
    .await;
    let mut trips = vec![Trip::default(); sizes.commands];
    for (seq, trip) in done.items {
        trips[seq as usize - 1] = trip;
    }
    let notes = match done.first_error {
        Some(e) => vec![format!("{} commands not answered with their own seq, first: {e}", done.failed)],
        None => Vec::new(),
    };
    Sent { trips, notes }
}

pub async fn mqtt(addr: SocketAddr, ids: &[String], sizes: &Sizes, base: Instant) -> anyhow::Result<Sent> {
    let mut app = Client::connect(addr, "commands-bench-app", Login::Anonymous).await?;
    app.subscribe("devices/+/commands/+/response", 1).await?;
    let (mut rd, wr) = app.stream.into_split();
    // Both halves write: the reader its PUBACKs of the answers, this task the commands.
    let wr = Arc::new(tokio::sync::Mutex::new(wr));
    let mut rx = app.rx;
    let gate = Arc::new(Semaphore::new(sizes.in_flight));
    // seq → ns its answer arrived (the first time).
    let answers: Arc<Mutex<HashMap<u64, u64>>> = Arc::default();
    let (reader_gate, reader_answers, reader_wr) = (gate.clone(), answers.clone(), wr.clone());
    let reader = tokio::spawn(async move {
        loop {
            let (mut acks, mut freed) = (Vec::new(), 0);
            let more = rx
                .read(&mut rd, |kind, flags, body| {
                    let Some((_, packet_id, payload)) =
                        (kind == wire::PUBLISH).then(|| wire::publish_parts(flags, body)).flatten()
                    else {
                        return;
                    };
                    if packet_id != 0 {
                        wire::put_puback(&mut acks, packet_id);
                    }
                    if let Some(seq) = wire::find_u64(payload, b"\"seq\":")
                        && reader_answers.lock().unwrap().insert(seq, ns(base)).is_none()
                    {
                        freed += 1;
                    }
                })
                .await;
            reader_gate.add_permits(freed);
            let acked = acks.is_empty() || reader_wr.lock().await.write_all(&acks).await.is_ok();
            if !matches!(more, Ok(true)) || !acked {
                return;
            }
        }
    });
    let mut trips = Vec::with_capacity(sizes.commands);
    let mut out = Vec::with_capacity(256);
    let start = Instant::now();
    for k in 0..sizes.commands {
        let due = paced::due(start, k, sizes.rate);
        tokio::time::sleep_until(due).await;
        let permit = tokio::time::timeout(Duration::from_secs(10), gate.acquire()).await;
        let Ok(Ok(permit)) = permit else { anyhow::bail!("no answer for 10 s after {k} commands") };
        permit.forget();
        let seq = k as u64 + 1;
        out.clear();
        let topic = format!("devices/{}/commands/cmd-{seq}", ids[k % ids.len()]);
        let payload = format!(r#"{{"id":"cmd-{seq}","name":"ping","payload":{{"seq":{seq}}}}}"#);
        wire::put_publish(&mut out, topic.as_bytes(), 1, (seq % u16::MAX as u64) as u16 + 1, payload.as_bytes());
        let sent_ns = ns(base);
        wr.lock().await.write_all(&out).await?;
        trips.push(Trip { due_ns: due.saturating_duration_since(base).as_nanos() as u64, sent_ns, answered_ns: None });
    }
    // The last answers: every place back in the window, or 10 s.
    let _ = tokio::time::timeout(Duration::from_secs(10), gate.acquire_many(sizes.in_flight as u32)).await;
    reader.abort();
    let answers = answers.lock().unwrap();
    for (k, t) in trips.iter_mut().enumerate() {
        t.answered_ns = answers.get(&(k as u64 + 1)).copied();
    }
    let unanswered = trips.iter().filter(|t| t.answered_ns.is_none()).count();
    let notes = if unanswered > 0 { vec![format!("{unanswered} commands never answered")] } else { Vec::new() };
    Ok(Sent { trips, notes })
}
