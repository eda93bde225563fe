//! `corral-bench twin`: how long a change of a device twin's desired document takes to reach the
//! device (issue 18), with 10,000 devices connected, side by side with Mosquitto 2.0 doing the
//! same delivery as a bare broker. Both are started here on loopback, afresh for every run (the
//! order alternates between runs); figures are medians over the runs.
//!
//! - Corral: N devices registered with one CSV import (`POST /api/v1/devices/import`), each
//!   connected with its own token (client id = user name = its id) and subscribed QoS 1 to
//!   `devices/<id>/twin/desired`. At a fixed rate an application changes one device's desired
//!   document, round-robin over the fleet, with `PATCH /api/v1/devices/<id>/twin/desired`
//!   `{"seq": k}` (at most `--in-flight` requests outstanding). Corral stores the change durably,
//!   answers 200 and publishes the new document, retained, on the device's topic.
//! - Mosquitto: the same N connections (anonymous) and subscriptions; one publisher client
//!   publishes `{"version": k, "desired": {"seq": k}}` retained, QoS 1, on the device's topic at
//!   the same rate (at most `--in-flight` unacknowledged). That is what a broker alone does for the
//!   same delivery: the ratio is what the REST path and durability cost.
//!
//! Latency = arrival at the device's connection − the clock taken just before the PATCH (or the
//! PUBLISH) is written; sender and devices share this process and its monotonic clock. Every
//! accepted change must arrive exactly once, at its device, with its `seq` (`tally`): a system
//! that drops looks fast, so delivered, missing and duplicates are counted in every run.
//!
//! Modules: `fleet` (the N device connections), `drive` (the two ways of changing desired),
//! `tally` (what arrived against what was sent), `report` (table or JSON).

mod drive;
mod fleet;
mod report;
mod tally;

use crate::mqtt::brokers::{self, Broker, proc_cpu_seconds};
use crate::mqtt::stats::percentile;
use crate::mqtt::{Figure, Run, fig};
use crate::server::ADMIN_TOKEN;
use crate::side_by_side;
use anyhow::{Context, bail};
use clap::Args;
use serde_json::Value;
use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;
use tokio::time::Instant;

/// The devices' ids: `twin-bench-00000`, ...
fn device_id(i: usize) -> String {
    format!("twin-bench-{i:05}")
}

fn desired_topic(id: &str) -> String {
    format!("devices/{id}/twin/desired")
}

#[derive(Debug, Clone, Args)]
pub struct TwinArgs {
    /// The corral binary.
    #[arg(long, default_value = "target/release/corral")]
    pub corral: PathBuf,
    /// Systems to run, comma-separated (corral, mosquitto).
    #[arg(long, default_value = "corral,mosquitto", value_delimiter = ',')]
    pub systems: Vec<String>,
    /// Connected devices, each subscribed QoS 1 to its own desired topic [default: 10000].
    #[arg(long)]
    pub devices: Option<usize>,
    /// Desired changes per run, one device after the other [default: 500].
    #[arg(long)]
    pub changes: Option<usize>,
    /// Offered rate, changes per second.
    #[arg(long, default_value_t = 50.0)]
    pub rate: f64,
    /// Changes outstanding at once: PATCH requests (Corral), unacknowledged PUBLISHes (Mosquitto).
    #[arg(long, default_value_t = 4)]
    pub in_flight: usize,
    /// Runs, each on freshly started systems; medians are reported [default: 5].
    #[arg(long)]
    pub runs: Option<usize>,
    /// Seconds to wait after the last change was acknowledged for deliveries still under way.
    #[arg(long, default_value_t = 10.0)]
    pub drain_seconds: f64,
    /// Small sizes: 1,000 devices, 100 changes, 3 runs.
    #[arg(long)]
    pub quick: bool,
    /// Print one JSON object instead of the tables.
    #[arg(long)]
    pub json: bool,
}

/// Sizes after `--quick` and explicit options are applied.
#[derive(Debug, Clone)]
pub struct Sizes {
    pub devices: usize,
    pub changes: usize,
    pub rate: f64,
    pub in_flight: usize,
    pub runs: usize,
    pub drain: Duration,
}

impl TwinArgs {
    pub fn sizes(&self) -> Sizes {
        let q = self.quick;
        Sizes {
            devices: self.devices.unwrap_or(if q { 1_000 } else { 10_000 }).max(1),
            changes: self.changes.unwrap_or(if q { 100 } else { 500 }).max(1),
            rate: if self.rate.is_finite() && self.rate > 0.0 { self.rate } else { 50.0 },
            in_flight: self.in_flight.max(1),
            runs: self.runs.unwrap_or(if q { 3 } else { 5 }).max(1),
            drain: Duration::from_secs_f64(self.drain_seconds.max(0.5)),
        }
    }
}

/// Every run of one system: figures by key (in first-seen order) and remarks, kept as the MQTT
/// benchmark keeps them.
pub use crate::mqtt::BrokerResults as SystemResults;

pub async fn run(args: TwinArgs) -> anyhow::Result<()> {
    let sizes = args.sizes();
    for s in &args.systems {
        if !matches!(s.as_str(), "corral" | "mosquitto") {
            bail!("unknown system {s} (known: corral, mosquitto)");
        }
    }
    // This process and each broker hold one descriptor per device connection.
    let nofile = brokers::raise_nofile((2 * sizes.devices as u64 + 2_000).min(1 << 20))?;
    if (nofile as usize) < sizes.devices + 500 {
        bail!(
            "RLIMIT_NOFILE is {nofile} and could not be raised (no CAP_SYS_RESOURCE): use --devices {} or fewer, \
             or raise the hard limit (ulimit -Hn)",
            (nofile as usize).saturating_sub(500)
        );
    }
    let http = reqwest::Client::new();
    let results =
        side_by_side::each_run(&args.systems, sizes.runs, args.json, |system| run_once(system, &args, &sizes, &http)).await;
    report::print(&args, &sizes, nofile, &results);
    Ok(())
}

/// One run of one system: start it, register and connect the fleet, change desired documents at
/// the offered rate, collect the deliveries, stop it.
async fn run_once(system: String, args: &TwinArgs, sizes: &Sizes, http: &reqwest::Client) -> anyhow::Result<Run> {
    let broker = match system.as_str() {
        "corral" => Broker::corral(&args.corral)?,
        _ => Broker::mosquitto()?,
    };
    let outcome = measure(&broker, sizes, http).await;
    broker.finish(outcome)
}

async fn measure(broker: &Broker, sizes: &Sizes, http: &reqwest::Client) -> anyhow::Result<Run> {
    tokio::time::sleep(Duration::from_millis(500)).await;
    let ids: Vec<String> = (0..sizes.devices).map(device_id).collect();
    let mut setup = Vec::new();
    let started = Instant::now();
    let tokens = match broker.http.as_deref() {
        Some(base) => Some(import_devices(http, base, &ids).await?),
        None => None,
    };
    if tokens.is_some() {
        setup.push(fig("setup.register", &format!("{} devices registered (CSV import), s", ids.len()), secs(started)));
    }
    let base = Instant::now();
    let mut fleet = fleet::Fleet::connect(broker.mqtt, &ids, tokens.as_deref(), base).await?;
    setup.push(fig("setup.connect", &format!("{} devices connected and subscribed, s", ids.len()), secs(base)));
    // Let the connection storm's after-effects (sessions, presence) settle; what the broker
    // burns meanwhile is its idle cost with the fleet connected.
    let (idle_from, idle_cpu) = (Instant::now(), broker.cpu_seconds());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle_pct = 100.0 * (broker.cpu_seconds() - idle_cpu) / secs(idle_from);
    setup.push(fig("broker.idle_cpu", "broker CPU while the fleet is idle, % of a core", idle_pct));

    let cpu_before = (broker.cpu_seconds(), proc_cpu_seconds("/proc/self/stat"));
    let drive::Sent { changes, mut notes } = match broker.http.as_deref() {
        Some(url) => drive::rest(http, url, &ids, sizes, base).await,
        None => drive::mqtt(broker.mqtt, &ids, sizes, base).await?,
    };
    let accepted = changes.iter().filter(|c| c.acked_ns.is_some()).count();
    let arrivals = fleet.collect(accepted, sizes.drain).await;
    let cpu = (broker.cpu_seconds() - cpu_before.0, proc_cpu_seconds("/proc/self/stat") - cpu_before.1);
    let peak_rss = crate::server::proc_status_bytes(broker.pid(), "VmHWM");
    let closed = fleet.closed();
    fleet.close().await;

    let t = tally::tally(&changes, &arrivals);
    notes.extend(t.notes());
    notes.extend(slowest(&t, &changes));
    if closed > 0 {
        notes.push(format!("{closed} device connections were closed by the broker during the run"));
    }
    let mut figures = figures(&t, &changes, accepted, peak_rss, cpu);
    figures.extend(setup);
    Ok((figures, notes))
}

fn secs(since: Instant) -> f64 {
    since.elapsed().as_secs_f64().max(1e-9)
}

/// The figures of one run; `cpu` is (broker, load generator) CPU seconds from the first change
/// to the end of the deliveries.
fn figures(t: &tally::Tally, changes: &[drive::Change], accepted: usize, peak_rss: u64, cpu: (f64, f64)) -> Vec<Figure> {
    let ms = |sorted: &[u64], q: f64| percentile(sorted, q).map_or(f64::NAN, |ns| ns as f64 / 1e6);
    let mut acks: Vec<u64> = changes.iter().filter_map(|c| Some(c.acked_ns?.saturating_sub(c.sent_ns))).collect();
    acks.sort_unstable();
    let lag_ms = changes.iter().map(|c| c.sent_ns.saturating_sub(c.due_ns)).max().unwrap_or(0) as f64 / 1e6;
    let n = changes.len();
    // The rate the changes went out at: first to last send.
    let span_ns = changes.last().zip(changes.first()).map_or(0, |(l, f)| l.sent_ns.saturating_sub(f.sent_ns));
    let rate = if n > 1 && span_ns > 0 { (n - 1) as f64 / (span_ns as f64 / 1e9) } else { f64::NAN };
    vec![
        fig("latency.p50", "change → device, p50 ms", ms(&t.latencies_ns, 50.0)),
        fig("latency.p99", "change → device, p99 ms", ms(&t.latencies_ns, 99.0)),
        fig("latency.max", "change → device, max ms", ms(&t.latencies_ns, 100.0)),
        fig("ack.p50", "change acknowledged (200 / PUBACK), p50 ms", ms(&acks, 50.0)),
        fig("ack.p99", "change acknowledged (200 / PUBACK), p99 ms", ms(&acks, 99.0)),
        fig("changes.accepted", &format!("changes accepted of {n} sent"), accepted as f64),
        fig("changes.delivered", "delivered exactly once, at its device", t.delivered as f64),
        fig("changes.missing", "missing (never arrived)", t.missing as f64),
        fig("changes.superseded", "superseded (a later change arrived instead)", t.superseded as f64),
        fig("changes.duplicates", "duplicate deliveries", t.duplicates as f64),
        fig("changes.misrouted", "delivered to another device", t.misrouted as f64),
        fig("rate.achieved", "changes/s sent", rate),
        fig("send.lag_max", "send behind schedule, max ms", lag_ms),
        fig("broker.rss_peak", "peak RSS (VmHWM), MiB", peak_rss as f64 / (1 << 20) as f64),
        fig("broker.cpu", "broker CPU s, first change to last delivery", cpu.0),
        fig("broker.cpu_per_change", "broker CPU per change, ms", 1e3 * cpu.0 / accepted.max(1) as f64),
        fig("bench.cpu", "load generator CPU s, same span", cpu.1),
    ]
}

/// The three slowest deliveries, when over 4 × p50 (and 4 ms), with their acknowledgement time:
/// whether the delay came before the answer (the store, the request) or after it (the publish).
fn slowest(t: &tally::Tally, changes: &[drive::Change]) -> Vec<String> {
    let p50 = percentile(&t.latencies_ns, 50.0).unwrap_or(0);
    let ms = |ns: u64| ns as f64 / 1e6;
    t.slowest
        .iter()
        .filter(|(_, ns)| *ns > 4 * p50.max(1_000_000))
        .filter_map(|&(seq, ns)| {
            let c = changes.get(seq.checked_sub(1)? as usize)?;
            let ack = c.acked_ns.map_or(f64::NAN, |a| ms(a.saturating_sub(c.sent_ns)));
            let late = ms(c.sent_ns.saturating_sub(c.due_ns));
            Some(format!(
                "slow: seq {seq} (device {}) arrived after {:.1} ms; acknowledged after {ack:.1} ms, sent {late:.1} ms behind schedule, at {:.3} s",
                c.device,
                ms(ns),
                c.sent_ns as f64 / 1e9
            ))
        })
        .collect()
}

/// Registers `ids` with Corral's CSV import (10,000 lines per request, the import's limit) and
/// returns their tokens in the same order.
pub(crate) async fn import_devices(http: &reqwest::Client, base: &str, ids: &[String]) -> anyhow::Result<Vec<String>> {
    let mut tokens: HashMap<String, String> = HashMap::with_capacity(ids.len());
    for chunk in ids.chunks(10_000) {
        let mut csv = String::from("id\n");
        for id in chunk {
            csv.push_str(id);
            csv.push('\n');
        }
        let answer: Value = http
            .post(format!("{base}/api/v1/devices/import"))
            .bearer_auth(ADMIN_TOKEN)
            .header(reqwest::header::CONTENT_TYPE, "text/csv")
            .body(csv)
            .send()
            .await?
            .error_for_status()
            .context("CSV import of the devices")?
            .json()
            .await?;
        if let Some(first) = answer["rejected"].as_array().and_then(|r| r.first()) {
            bail!("the CSV import rejected devices, first: {first}");
        }
        for a in answer["accepted"].as_array().context("no `accepted` in the import answer")? {
            let (Some(id), Some(token)) = (a["id"].as_str(), a["token"].as_str()) else {
                bail!("an accepted device without id or token: {a}");
            };
            tokens.insert(id.to_string(), token.to_string());
        }
    }
    ids.iter().map(|id| tokens.remove(id).with_context(|| format!("no token for {id}"))).collect()
}
