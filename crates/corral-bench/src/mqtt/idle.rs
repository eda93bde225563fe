//! Idle connections: K clients connect (anonymously: Mosquitto with `allow_anonymous`, Corral with
//! `--mqtt-allow-anonymous`, so no K device registrations), keep-alive off, and stay silent. The
//! broker's VmRSS before and after, over K, is its memory per connection.

use super::conn::{Client, Login};
use super::{Ctx, Figure, fig};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

/// Connection handshakes in flight at once.
const CONCURRENT_CONNECTS: usize = 256;

pub async fn run(ctx: &Ctx<'_>) -> anyhow::Result<(Vec<Figure>, Vec<String>)> {
    let k = ctx.sizes.idle;
    let before = ctx.broker.rss_bytes();
    let started = Instant::now();
    let gate = Arc::new(Semaphore::new(CONCURRENT_CONNECTS));
    let mut set = JoinSet::new();
    let addr = ctx.broker.mqtt;
    for i in 0..k {
        let gate = gate.clone();
        set.spawn(async move {
            let _permit = gate.acquire_owned().await?;
            Client::connect(addr, &format!("idle-{i:06}"), Login::Anonymous).await
        });
    }
    let (mut held, mut failed, mut first_error) = (Vec::with_capacity(k), 0usize, None);
    while let Some(r) = set.join_next().await {
        match r? {
            Ok(c) => held.push(c),
            Err(e) => {
                failed += 1;
                first_error.get_or_insert_with(|| format!("{e:#}"));
            }
        }
    }
    let connect_secs = started.elapsed().as_secs_f64();
    // Let the broker settle (buffers shrink, allocator caches fill) before reading RSS.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = ctx.broker.rss_bytes();
    let n = held.len();
    drop(held);
    let mut notes = Vec::new();
    if failed > 0 {
        notes.push(format!("{failed} of {k} connections failed; first: {}", first_error.unwrap_or_default()));
    }
    let per = if n > 0 { after.saturating_sub(before) as f64 / n as f64 } else { f64::NAN };
    let figures = vec![
        fig("idle.connected", "idle: connections established", n as f64),
        fig("idle.connect_rate", "idle: connections/s while connecting", n as f64 / connect_secs.max(1e-9)),
        fig("idle.rss_before", "idle: broker RSS before, MiB", before as f64 / (1 << 20) as f64),
        fig("idle.rss_after", "idle: broker RSS with all connected, MiB", after as f64 / (1 << 20) as f64),
        fig("idle.rss_per_conn", "idle: RSS per connection, bytes", per),
    ];
    // Give the broker time to tear the connections down before anything else is measured.
    tokio::time::sleep(Duration::from_secs(2)).await;
    Ok((figures, notes))
}
