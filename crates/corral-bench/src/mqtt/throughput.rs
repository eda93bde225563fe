//! Throughput scenarios: fan-in (QoS 0 and QoS 1), fan-out and 1:1 pairs. Every connection is set
//! up before the clock starts. QoS 0 publishers are closed-loop through a [`Credit`]: they may run
//! `window` messages ahead of what their subscribers received, so the figure is what a broker
//! sustains and delivers, not what it swallows. QoS 1 publishers keep `window` PUBLISHes
//! unacknowledged. Reported per scenario: delivered (or acknowledged) messages/s, and the CPU the
//! broker and the load generator used in the window (they share the machine's cores).

use super::conn::{Client, Login};
use super::{Ctx, Figure, fig, wire};
use crate::server::ADMIN_TOKEN;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio::task::JoinSet;

/// Messages written per `write` call by a QoS 0 publisher (at most).
const BATCH: u64 = 8;

/// Flow control of QoS 0 publishers against what their subscribers received. Deliveries that
/// do not arrive within 200 ms are written off as lost, so a broker that drops cannot stall it.
pub struct Credit {
    sent: AtomicU64,
    delivered: AtomicU64,
    lost: AtomicU64,
    /// Deliveries per message sent (subscribers per topic).
    fanout: u64,
    /// Messages allowed in flight.
    window: u64,
}

impl Credit {
    pub fn new(fanout: u64, window: u64) -> Arc<Credit> {
        Arc::new(Credit { sent: AtomicU64::new(0), delivered: AtomicU64::new(0), lost: AtomicU64::new(0), fanout, window })
    }

    pub fn delivered(&self, n: u64) {
        self.delivered.fetch_add(n, Relaxed);
    }

    /// How many more messages may be sent now (0 when the window is full).
    fn available(&self) -> u64 {
        let outstanding = (self.sent.load(Relaxed) * self.fanout)
            .saturating_sub(self.delivered.load(Relaxed) + self.lost.load(Relaxed))
            .div_ceil(self.fanout);
        self.window.saturating_sub(outstanding)
    }

    /// Waits until up to `want` messages may be sent, takes them and returns how many (0 once
    /// `deadline` passed).
    async fn acquire(&self, want: u64, deadline: Instant) -> u64 {
        let (mut seen, mut since) = (self.delivered.load(Relaxed), Instant::now());
        loop {
            if Instant::now() >= deadline {
                return 0;
            }
            let n = self.available().min(want);
            if n > 0 {
                self.sent.fetch_add(n, Relaxed);
                return n;
            }
            let now = self.delivered.load(Relaxed);
            if now != seen {
                (seen, since) = (now, Instant::now());
            } else if since.elapsed() > Duration::from_millis(200) {
                let outstanding = (self.sent.load(Relaxed) * self.fanout).saturating_sub(now + self.lost.load(Relaxed));
                self.lost.fetch_add(outstanding, Relaxed);
                since = Instant::now();
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
}

/// A subscriber that counts PUBLISHes into `credit` until `stop`.
fn spawn_counter(set: &mut JoinSet<anyhow::Result<u64>>, mut client: Client, credit: Arc<Credit>, stop: Arc<AtomicBool>) {
    set.spawn(async move {
        let mut total = 0;
        while !stop.load(Relaxed) {
            let mut n = 0;
            let read = client.rx.read(&mut client.stream, |kind, _, _| n += (kind == wire::PUBLISH) as u64);
            match tokio::time::timeout(Duration::from_millis(100), read).await {
                Ok(Ok(true)) => {}
                Ok(Ok(false)) => anyhow::bail!("subscriber disconnected by the broker"),
                Ok(Err(e)) => return Err(e),
                Err(_) => {}
            }
            credit.delivered(n);
            total += n;
        }
        Ok(total)
    });
}

/// A QoS 0 publisher on `topic`, closed-loop on `credit`, until `deadline`.
fn spawn_qos0_publisher(
    set: &mut JoinSet<anyhow::Result<u64>>,
    mut client: Client,
    topic: String,
    credit: Arc<Credit>,
    deadline: Instant,
) {
    set.spawn(async move {
        let (mut out, mut payload, mut seq) = (Vec::with_capacity(1024), Vec::with_capacity(64), 0u64);
        loop {
            let n = credit.acquire(BATCH, deadline).await;
            if n == 0 {
                return Ok(seq);
            }
            out.clear();
            for _ in 0..n {
                payload.clear();
                payload.extend_from_slice(br#"{"temperature":21.5,"seq":"#);
                wire::put_u64(&mut payload, seq);
                payload.push(b'}');
                wire::put_publish(&mut out, topic.as_bytes(), 0, 0, &payload);
                seq += 1;
            }
            match tokio::time::timeout_at(deadline.into(), client.stream.write_all(&out)).await {
                Ok(r) => r?,
                Err(_) => return Ok(seq),
            }
        }
    });
}

/// A QoS 1 publisher keeping `window` PUBLISHes unacknowledged until `deadline`, then waiting for
/// the rest of its PUBACKs. Returns (acknowledged by the deadline, acknowledged in all, sent).
async fn qos1_publisher(mut client: Client, topic: String, window: u64, deadline: Instant) -> anyhow::Result<(u64, u64, u64)> {
    let (mut out, mut payload) = (Vec::with_capacity(2048), Vec::with_capacity(64));
    let (mut sent, mut acked, mut in_window, mut inflight, mut next_id) = (0u64, 0u64, 0u64, 0u64, 1u16);
    let drain_until = deadline + Duration::from_secs(30);
    loop {
        let open = Instant::now() < deadline;
        if open && inflight < window {
            out.clear();
            while inflight < window {
                payload.clear();
                payload.extend_from_slice(br#"{"temperature":21.5,"seq":"#);
                wire::put_u64(&mut payload, sent);
                payload.push(b'}');
                wire::put_publish(&mut out, topic.as_bytes(), 1, next_id, &payload);
                next_id = next_id.checked_add(1).unwrap_or(1);
                (inflight, sent) = (inflight + 1, sent + 1);
            }
            client.stream.write_all(&out).await?;
        }
        if !open && inflight == 0 {
            return Ok((in_window, acked, sent));
        }
        let mut n = 0;
        let read = client.rx.read(&mut client.stream, |kind, _, _| n += (kind == wire::PUBACK) as u64);
        match tokio::time::timeout_at(drain_until.into(), read).await {
            Ok(Ok(true)) => {}
            Ok(Ok(false)) => anyhow::bail!("publisher disconnected by the broker after {acked} PUBACKs"),
            Ok(Err(e)) => return Err(e),
            Err(_) => anyhow::bail!("{inflight} PUBACKs missing 30 s after the end"),
        }
        (inflight, acked) = (inflight.saturating_sub(n), acked + n);
        if Instant::now() <= deadline {
            in_window += n;
        }
    }
}

/// Client CPU seconds (this process) so far.
fn self_cpu() -> f64 {
    super::brokers::proc_cpu_seconds("/proc/self/stat")
}

struct Window {
    started: Instant,
    broker_cpu: f64,
    client_cpu: f64,
}

fn open_window(ctx: &Ctx<'_>) -> Window {
    Window { started: Instant::now(), broker_cpu: ctx.broker.cpu_seconds(), client_cpu: self_cpu() }
}

fn cpu_figures(ctx: &Ctx<'_>, w: &Window, prefix: &str, seconds: f64) -> Vec<Figure> {
    vec![
        fig(
            &format!("{prefix}.broker_cpu"),
            &format!("{prefix}: broker CPU, % of one core"),
            100.0 * (ctx.broker.cpu_seconds() - w.broker_cpu) / seconds,
        ),
        fig(
            &format!("{prefix}.client_cpu"),
            &format!("{prefix}: load generator CPU, % of one core"),
            100.0 * (self_cpu() - w.client_cpu) / seconds,
        ),
    ]
}

fn login<'a>(ctx: &'a Ctx<'_>, i: usize) -> (String, Login<'a>) {
    match ctx.devices.get(i) {
        Some((id, token)) => (id.clone(), Login::Device(token)),
        None => (format!("mqtt-bench-{i:05}"), Login::Anonymous),
    }
}

async fn join(set: &mut JoinSet<anyhow::Result<u64>>) -> anyhow::Result<u64> {
    let mut total = 0;
    while let Some(r) = set.join_next().await {
        total += r??;
    }
    Ok(total)
}

pub async fn fan_in(ctx: &Ctx<'_>, qos: u8) -> anyhow::Result<(Vec<Figure>, Vec<String>)> {
    let (n, seconds) = (ctx.sizes.clients, ctx.sizes.seconds);
    let prefix = format!("fan-in-qos{qos}");
    let addr = ctx.broker.mqtt;
    let mut clients = Vec::with_capacity(n);
    for i in 0..n {
        let (id, login) = login(ctx, i);
        clients.push((format!("devices/{id}/telemetry"), Client::connect(addr, &id, login).await?));
    }
    let stored_before = if ctx.broker.http.is_some() { ctx.broker.stored_rows(ctx.http).await? } else { 0 };
    let mut notes = Vec::new();
    let mut figures;
    let (delivered_or_acked, sent);
    if qos == 0 {
        let sub_login = if ctx.broker.http.is_some() { Login::Token(ADMIN_TOKEN) } else { Login::Anonymous };
        let mut sub = Client::connect(addr, "mqtt-bench-fanin-sub", sub_login).await?;
        sub.subscribe("devices/+/telemetry", 0).await?;
        let (credit, stop) = (Credit::new(1, ctx.sizes.window * n as u64), Arc::new(AtomicBool::new(false)));
        let mut subs = JoinSet::new();
        spawn_counter(&mut subs, sub, credit.clone(), stop.clone());
        let w = open_window(ctx);
        let deadline = w.started + Duration::from_secs_f64(seconds);
        let mut pubs = JoinSet::new();
        for (topic, client) in clients {
            spawn_qos0_publisher(&mut pubs, client, topic, credit.clone(), deadline);
        }
        sent = join(&mut pubs).await?;
        let received = credit.delivered.load(Relaxed);
        figures = cpu_figures(ctx, &w, &prefix, seconds);
        tokio::time::sleep(Duration::from_millis(500)).await;
        stop.store(true, Relaxed);
        let received_all = join(&mut subs).await?;
        delivered_or_acked = received_all;
        figures.insert(
            0,
            fig(&format!("{prefix}.rate"), &format!("{prefix}: msg/s received by the subscriber"), received as f64 / seconds),
        );
        figures.push(fig(&format!("{prefix}.sent"), &format!("{prefix}: messages sent"), sent as f64));
        figures.push(fig(
            &format!("{prefix}.received"),
            &format!("{prefix}: messages received by the subscriber"),
            received_all as f64,
        ));
        if received_all < sent {
            notes.push(format!("subscriber received {received_all} of {sent} messages sent"));
        }
    } else {
        let w = open_window(ctx);
        let deadline = w.started + Duration::from_secs_f64(seconds);
        let mut set = JoinSet::new();
        for (topic, client) in clients {
            set.spawn(qos1_publisher(client, topic, ctx.sizes.window, deadline));
        }
        let (mut in_window, mut acked, mut total_sent) = (0, 0, 0);
        while let Some(r) = set.join_next().await {
            let (a, b, c) = r??;
            (in_window, acked, total_sent) = (in_window + a, acked + b, total_sent + c);
        }
        figures = cpu_figures(ctx, &w, &prefix, seconds);
        figures.insert(
            0,
            fig(&format!("{prefix}.rate"), &format!("{prefix}: msg/s acknowledged (PUBACK)"), in_window as f64 / seconds),
        );
        figures.push(fig(&format!("{prefix}.acked"), &format!("{prefix}: messages acknowledged"), acked as f64));
        (delivered_or_acked, sent) = (acked, total_sent);
    }
    if ctx.broker.http.is_some() {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let stored = ctx.broker.stored_rows(ctx.http).await?.saturating_sub(stored_before);
        figures.push(fig(&format!("{prefix}.stored"), &format!("{prefix}: rows stored (SQL count)"), stored as f64));
        if qos == 1 && stored != delivered_or_acked {
            notes.push(format!("MISMATCH: {delivered_or_acked} acknowledged but {stored} rows stored"));
        }
        if qos == 0 && stored < sent {
            notes.push(format!("{stored} rows stored of {sent} QoS 0 messages sent"));
        }
    }
    Ok((figures, notes))
}

/// QoS 0 fan-out: one publisher, `clients` subscribers of one topic.
pub async fn fan_out(ctx: &Ctx<'_>) -> anyhow::Result<(Vec<Figure>, Vec<String>)> {
    let (n, seconds) = (ctx.sizes.clients, ctx.sizes.seconds);
    // One publisher only: it may run 16 windows ahead, or the figure is bound by round trips.
    let credit = Credit::new(n as u64, ctx.sizes.window * 16);
    let stop = Arc::new(AtomicBool::new(false));
    let mut subs = JoinSet::new();
    for i in 0..n {
        let mut c = Client::connect(ctx.broker.mqtt, &format!("mqtt-bench-fanout-{i}"), Login::Anonymous).await?;
        c.subscribe("bench/fanout", 0).await?;
        spawn_counter(&mut subs, c, credit.clone(), stop.clone());
    }
    let publisher = Client::connect(ctx.broker.mqtt, "mqtt-bench-fanout-pub", Login::Anonymous).await?;
    let w = open_window(ctx);
    let deadline = w.started + Duration::from_secs_f64(seconds);
    let mut pubs = JoinSet::new();
    spawn_qos0_publisher(&mut pubs, publisher, "bench/fanout".into(), credit.clone(), deadline);
    let sent = join(&mut pubs).await?;
    let delivered = credit.delivered.load(Relaxed);
    let mut figures = cpu_figures(ctx, &w, "fan-out", seconds);
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Relaxed);
    let all = join(&mut subs).await?;
    figures.insert(0, fig("fan-out.rate", "fan-out: deliveries/s", delivered as f64 / seconds));
    figures.push(fig("fan-out.sent", "fan-out: messages published", sent as f64));
    let mut notes = Vec::new();
    if all < sent * n as u64 {
        notes.push(format!("{all} deliveries of {} expected", sent * n as u64));
    }
    Ok((figures, notes))
}

/// QoS 0 pairs: `clients` publishers, each with its own subscriber on its own topic.
pub async fn pairs(ctx: &Ctx<'_>) -> anyhow::Result<(Vec<Figure>, Vec<String>)> {
    let (n, seconds) = (ctx.sizes.clients, ctx.sizes.seconds);
    let stop = Arc::new(AtomicBool::new(false));
    let (mut subs, mut publishers, mut credits) = (JoinSet::new(), Vec::new(), Vec::new());
    for i in 0..n {
        let topic = format!("bench/pair/{i}");
        let mut s = Client::connect(ctx.broker.mqtt, &format!("mqtt-bench-pair-sub-{i}"), Login::Anonymous).await?;
        s.subscribe(&topic, 0).await?;
        let credit = Credit::new(1, ctx.sizes.window);
        spawn_counter(&mut subs, s, credit.clone(), stop.clone());
        let p = Client::connect(ctx.broker.mqtt, &format!("mqtt-bench-pair-pub-{i}"), Login::Anonymous).await?;
        publishers.push((topic, p));
        credits.push(credit);
    }
    let w = open_window(ctx);
    let deadline = w.started + Duration::from_secs_f64(seconds);
    let mut pubs = JoinSet::new();
    for ((topic, p), credit) in publishers.into_iter().zip(&credits) {
        spawn_qos0_publisher(&mut pubs, p, topic, credit.clone(), deadline);
    }
    let sent = join(&mut pubs).await?;
    let delivered: u64 = credits.iter().map(|c| c.delivered.load(Relaxed)).sum();
    let mut figures = cpu_figures(ctx, &w, "pairs", seconds);
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Relaxed);
    let all = join(&mut subs).await?;
    figures.insert(0, fig("pairs.rate", "pairs: deliveries/s", delivered as f64 / seconds));
    let mut notes = Vec::new();
    if all < sent {
        notes.push(format!("{all} deliveries of {sent} sent"));
    }
    Ok((figures, notes))
}
