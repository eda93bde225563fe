//! Publish-to-subscriber latency at a fixed offered rate: one publisher (for Corral a registered
//! device on its `devices/<id>/telemetry`, the durable path; for Mosquitto the same topic,
//! anonymous) sends `{"temperature":21.5,"sent_ns":<monotonic ns>}` every millisecond in the
//! quantity the rate calls for; one subscriber (Corral: the admin API token) subscribed with the
//! same QoS takes its own clock on arrival. Publisher and subscriber share a process and a clock.
//! The first second is warm-up and not recorded.

use super::conn::{Client, Login};
use super::stats::percentile;
use super::{Ctx, Figure, fig, wire};
use crate::server::ADMIN_TOKEN;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;

const WARM_UP: Duration = Duration::from_secs(1);
/// Most unacknowledged QoS 1 PUBLISHes. Corral announces Receive Maximum 128 (MQTT 5) and
/// disconnects a client beyond it, MQTT 3.1.1 clients included, who cannot be told; so a
/// publisher stays below it and waits (the wait is part of the latency, as the timestamp is
/// taken when the message was due).
const QOS1_WINDOW: u64 = 100;

pub async fn run(ctx: &Ctx<'_>, qos: u8) -> anyhow::Result<(Vec<Figure>, Vec<String>)> {
    let prefix = format!("latency-qos{qos}");
    let rate = ctx.sizes.rate;
    let (id, pub_login) = match ctx.devices.first() {
        Some((id, token)) => (id.clone(), Login::Device(token)),
        None => ("mqtt-bench-latency".to_string(), Login::Anonymous),
    };
    let sub_login = if ctx.broker.http.is_some() { Login::Token(ADMIN_TOKEN) } else { Login::Anonymous };
    let topic = format!("devices/{id}/telemetry");
    let mut sub = Client::connect(ctx.broker.mqtt, "mqtt-bench-latency-sub", sub_login).await?;
    sub.subscribe(&topic, qos).await?;
    let publisher = Client::connect(ctx.broker.mqtt, &id, pub_login).await?;

    let base = Instant::now();
    let record_from = WARM_UP.as_nanos() as u64;
    let end = WARM_UP + Duration::from_secs_f64(ctx.sizes.latency_seconds);
    let stop = Arc::new(AtomicBool::new(false));

    let sub_stop = stop.clone();
    let subscriber = tokio::spawn(async move {
        let (mut samples, mut acks, mut received) = (Vec::with_capacity(1 << 16), Vec::with_capacity(1024), 0u64);
        while !sub_stop.load(Relaxed) {
            acks.clear();
            let read = sub.rx.read(&mut sub.stream, |kind, flags, body| {
                if kind != wire::PUBLISH {
                    return;
                }
                let now = base.elapsed().as_nanos() as u64;
                let Some((_, packet_id, payload)) = wire::publish_parts(flags, body) else { return };
                if packet_id != 0 {
                    wire::put_puback(&mut acks, packet_id);
                }
                if let Some(sent) = wire::find_u64(payload, b"\"sent_ns\":") {
                    received += 1;
                    if sent >= record_from {
                        samples.push(now.saturating_sub(sent));
                    }
                }
            });
            match tokio::time::timeout(Duration::from_millis(100), read).await {
                Ok(Ok(true)) => {}
                Ok(Ok(false)) => anyhow::bail!("subscriber disconnected by the broker"),
                Ok(Err(e)) => return Err(e),
                Err(_) => {}
            }
            if !acks.is_empty() {
                sub.stream.write_all(&acks).await.map_err(|e| anyhow::anyhow!("subscriber writing PUBACKs: {e}"))?;
            }
        }
        Ok((samples, received))
    });

    let (mut rd, mut wr) = publisher.stream.into_split();
    let mut rx = publisher.rx;
    let pub_stop = stop.clone();
    // QoS 1: PUBACKs are read (and dropped) so the socket never fills up.
    let acked = Arc::new(AtomicU64::new(0));
    let acked_in = acked.clone();
    let acker = tokio::spawn(async move {
        while !pub_stop.load(Relaxed) {
            let mut n = 0;
            let read = rx.read(&mut rd, |kind, _, _| n += (kind == wire::PUBACK) as u64);
            let _ = tokio::time::timeout(Duration::from_millis(100), read).await;
            acked_in.fetch_add(n, Relaxed);
        }
    });
    let window = if qos > 0 { QOS1_WINDOW } else { u64::MAX };
    let (mut held_back, mut prev_due) = (0u64, 0u64);
    let (mut out, mut payload, mut sent, mut next_id) = (Vec::with_capacity(4096), Vec::with_capacity(64), 0u64, 1u16);
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tick.tick().await;
        let elapsed = base.elapsed();
        if elapsed >= end {
            break;
        }
        let due = (elapsed.as_secs_f64() * rate as f64) as u64;
        out.clear();
        let room = window.saturating_sub(sent - acked.load(Relaxed).min(sent));
        if due.saturating_sub(sent) > room {
            held_back += 1;
        }
        let stop_at = due.min(sent.saturating_add(room));
        let now_ns = base.elapsed().as_nanos() as u64;
        while sent < stop_at {
            // A message held back on an earlier tick carries the time it was due, so the wait
            // for the window counts; the others the time they are written.
            let stamp = if sent < prev_due { (sent as f64 * 1e9 / rate as f64) as u64 } else { now_ns };
            payload.clear();
            payload.extend_from_slice(br#"{"temperature":21.5,"sent_ns":"#);
            wire::put_u64(&mut payload, stamp);
            payload.push(b'}');
            wire::put_publish(&mut out, topic.as_bytes(), qos, next_id, &payload);
            if qos > 0 {
                next_id = next_id.checked_add(1).unwrap_or(1);
            }
            sent += 1;
        }
        prev_due = due;
        if !out.is_empty() {
            wr.write_all(&out).await.map_err(|e| anyhow::anyhow!("publisher after {sent} messages: {e}"))?;
        }
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Relaxed);
    let (mut samples, received) = subscriber.await??;
    let _ = acker.await;
    samples.sort_unstable();
    let ms = |q: f64| percentile(&samples, q).map_or(f64::NAN, |ns| ns as f64 / 1e6);
    let mut notes = Vec::new();
    if held_back > 0 {
        notes.push(format!("publisher held back by the {QOS1_WINDOW}-message window on {held_back} ticks of 1 ms"));
    }
    if received < sent {
        notes.push(format!("{received} of {sent} messages received"));
    }
    let figures = vec![
        fig(&format!("{prefix}.p50"), &format!("{prefix}: p50 ms at {rate} msg/s"), ms(50.0)),
        fig(&format!("{prefix}.p99"), &format!("{prefix}: p99 ms"), ms(99.0)),
        fig(&format!("{prefix}.max"), &format!("{prefix}: max ms"), ms(100.0)),
        fig(&format!("{prefix}.achieved"), &format!("{prefix}: msg/s achieved"), sent as f64 / end.as_secs_f64()),
        fig(
            &format!("{prefix}.received"),
            &format!("{prefix}: received / sent, %"),
            100.0 * received as f64 / sent.max(1) as f64,
        ),
    ];
    Ok((figures, notes))
}
