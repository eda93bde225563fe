//! `corral-bench commands`: the round trip of a tracked command (issue 18) — an application asks
//! over REST, the device gets it over MQTT, answers, and the application has the answer — side by
//! side with Mosquitto 2.0 carrying a bare request and its answer between two clients. Both are
//! started here on loopback, afresh for every run (the order alternates); figures are medians.
//!
//! - Corral: N devices registered (CSV import), each connected with its token and subscribed QoS 1
//!   to `devices/<id>/commands/+`. The application sends `POST /api/v1/devices/<id>/commands`
//!   `{"name": "ping", "payload": {"seq": k}, "wait": 10}`; Corral records the command durably,
//!   publishes it, records `sent`, `delivered` (the device's PUBACK) and the device's answer, and
//!   then answers the request with the finished command.
//! - Mosquitto: the same N devices (anonymous); one application client subscribed QoS 1 to
//!   `devices/+/commands/+/response` publishes each command QoS 1 and waits for the answer.
//!
//! The devices (`devices`) answer at once in both. Round trip = the answer at the application −
//! the clock just before the request was written, one process and clock for all. A round trip
//! counts only when the answer carries the command's own `seq`; commands the devices received
//! more than once are counted as duplicates.

mod devices;
mod drive;

use crate::mqtt::brokers::{self, Broker, proc_cpu_seconds};
use crate::mqtt::stats::percentile;
use crate::mqtt::{Run, fig};
use crate::server;
use crate::side_by_side::{self, Layout};
use anyhow::bail;
use clap::Args;
use serde_json::json;
use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;
use tokio::time::Instant;

#[derive(Debug, Clone, Args)]
pub struct CommandsArgs {
    /// The corral binary.
    #[arg(long, default_value = "target/release/corral")]
    pub corral: PathBuf,
    /// Systems to run, comma-separated (corral, mosquitto).
    #[arg(long, default_value = "corral,mosquitto", value_delimiter = ',')]
    pub systems: Vec<String>,
    /// Connected devices that answer commands [default: 1000].
    #[arg(long)]
    pub devices: Option<usize>,
    /// Commands per run, one device after the other [default: 1000].
    #[arg(long)]
    pub commands: Option<usize>,
    /// Offered rate, commands per second.
    #[arg(long, default_value_t = 50.0)]
    pub rate: f64,
    /// Commands outstanding (sent, not yet answered) at once.
    #[arg(long, default_value_t = 4)]
    pub in_flight: usize,
    /// Runs, each on freshly started systems; medians are reported [default: 5].
    #[arg(long)]
    pub runs: Option<usize>,
    /// Small sizes: 100 devices, 200 commands, 3 runs.
    #[arg(long)]
    pub quick: bool,
    /// Print one JSON object instead of the tables.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone)]
pub struct Sizes {
    pub devices: usize,
    pub commands: usize,
    pub rate: f64,
    pub in_flight: usize,
    pub runs: usize,
}

impl CommandsArgs {
    pub fn sizes(&self) -> Sizes {
        let q = self.quick;
        Sizes {
            devices: self.devices.unwrap_or(if q { 100 } else { 1_000 }).max(1),
            commands: self.commands.unwrap_or(if q { 200 } else { 1_000 }).max(1),
            rate: if self.rate.is_finite() && self.rate > 0.0 { self.rate } else { 50.0 },
            in_flight: self.in_flight.max(1),
            runs: self.runs.unwrap_or(if q { 3 } else { 5 }).max(1),
        }
    }
}

pub async fn run(args: CommandsArgs) -> anyhow::Result<()> {
    let sizes = args.sizes();
    for s in &args.systems {
        if !matches!(s.as_str(), "corral" | "mosquitto") {
            bail!("unknown system {s} (known: corral, mosquitto)");
        }
    }
    let nofile = brokers::raise_nofile((2 * sizes.devices as u64 + 2_000).min(1 << 20))?;
    if (nofile as usize) < sizes.devices + 500 {
        bail!(
            "RLIMIT_NOFILE is {nofile} and could not be raised: use --devices {} or fewer",
            (nofile as usize).saturating_sub(500)
        );
    }
    // Each Corral command waits for two fsynced commits (the command, then the answer).
    let (fsync_p50, fsync_p99) = server::fsync_latency_ms(200)?;
    let http = reqwest::Client::new();
    let results =
        side_by_side::each_run(&args.systems, sizes.runs, args.json, |system| run_once(system, &args, &sizes, &http)).await;
    let layout = Layout {
        title: format!(
            "Command round trip (request → device → answer → requester): {} devices connected (QoS 1), {} commands \
             per run at {}/s, {} in flight; {} runs, each system started afresh per run",
            sizes.devices, sizes.commands, sizes.rate, sizes.in_flight, sizes.runs
        ),
        per_run: &[
            ("trip.p50", "p50 ms"),
            ("trip.p99", "p99 ms"),
            ("trip.max", "max ms"),
            ("commands.answered", "answered"),
            ("commands.duplicates", "dups"),
            ("broker.rss_peak", "RSS MiB"),
            ("broker.cpu", "CPU s"),
        ],
        count_prefix: "commands.",
        peer: "mosquitto",
        headline: &[("trip.p50", "p50"), ("trip.p99", "p99")],
        footer: vec![
            "Corral: POST /api/v1/devices/<id>/commands with \"wait\": 10 (admin token); the command and its answer fsynced (commands.db), sent/delivered committed without".into(),
            "Mosquitto 2.0: one application client publishes the command QoS 1 and hears the answer QoS 1; set_tcp_nodelay true, persistence off (as shipped)".into(),
            format!(
                "This disk: fsync of a 4 KiB append p50 {fsync_p50:.3} ms, p99 {fsync_p99:.3} ms; a Corral command waits for two \
                 (its record, its answer), so about {:.2} ms of its p50 is the disk's",
                2.0 * fsync_p50
            ),
        ],
        workload: json!({
            "devices": sizes.devices, "commands": sizes.commands, "rate": sizes.rate, "in_flight": sizes.in_flight,
            "runs": sizes.runs, "rlimit_nofile": nofile, "fsync_ms": {"p50": fsync_p50, "p99": fsync_p99},
            "mosquitto_config": "listener <port> 127.0.0.1; allow_anonymous true; set_tcp_nodelay true; persistence off (default)",
        }),
    };
    side_by_side::print(&layout, args.json, &results);
    Ok(())
}

async fn run_once(system: String, args: &CommandsArgs, sizes: &Sizes, http: &reqwest::Client) -> anyhow::Result<Run> {
    let broker = match system.as_str() {
        "corral" => Broker::corral(&args.corral)?,
        // Shipped with Nagle's algorithm on, Mosquitto holds the answer's small write behind the
        // command's unacknowledged one for a delayed ACK (~20 ms here); the peer gets its best setting.
        _ => Broker::mosquitto_with("set_tcp_nodelay true\n")?,
    };
    let outcome = measure(&broker, sizes, http).await;
    broker.finish(outcome)
}

async fn measure(broker: &Broker, sizes: &Sizes, http: &reqwest::Client) -> anyhow::Result<Run> {
    tokio::time::sleep(Duration::from_millis(500)).await;
    let ids: Vec<String> = (0..sizes.devices).map(|i| format!("cmd-bench-{i:05}")).collect();
    let tokens = match broker.http.as_deref() {
        Some(base) => Some(crate::twin::import_devices(http, base, &ids).await?),
        None => None,
    };
    let mut devices = devices::Devices::connect(broker.mqtt, &ids, tokens.as_deref()).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let base = Instant::now();
    let cpu_before = (broker.cpu_seconds(), proc_cpu_seconds("/proc/self/stat"));
    let drive::Sent { trips, mut notes } = match broker.http.as_deref() {
        Some(url) => drive::rest(http, url, &ids, sizes, base).await,
        None => drive::mqtt(broker.mqtt, &ids, sizes, base).await?,
    };
    tokio::time::sleep(devices::GRACE).await;
    let cpu = (broker.cpu_seconds() - cpu_before.0, proc_cpu_seconds("/proc/self/stat") - cpu_before.1);
    let peak_rss = server::proc_status_bytes(broker.pid(), "VmHWM");
    let received = devices.received();
    if devices.closed() > 0 {
        notes.push(format!("{} device connections were closed by the broker", devices.closed()));
    }
    devices.close().await;

    let mut times: HashMap<u64, u64> = HashMap::new();
    for seq in &received {
        *times.entry(*seq).or_default() += 1;
    }
    let duplicates: u64 = times.values().map(|n| n.saturating_sub(1)).sum();
    let mut trip_ns: Vec<u64> = trips.iter().filter_map(|t| Some(t.answered_ns?.saturating_sub(t.sent_ns))).collect();
    trip_ns.sort_unstable();
    let ms = |q: f64| percentile(&trip_ns, q).map_or(f64::NAN, |ns| ns as f64 / 1e6);
    let lag_ms = trips.iter().map(|t| t.sent_ns.saturating_sub(t.due_ns)).max().unwrap_or(0) as f64 / 1e6;
    let answered = trip_ns.len() as u64;
    Ok((
        vec![
            fig("trip.p50", "round trip, p50 ms", ms(50.0)),
            fig("trip.p99", "round trip, p99 ms", ms(99.0)),
            fig("trip.max", "round trip, max ms", ms(100.0)),
            fig("commands.answered", &format!("answered with their own seq, of {}", trips.len()), answered as f64),
            fig("commands.received", "received by the devices", received.len() as f64),
            fig("commands.duplicates", "received by a device more than once", duplicates as f64),
            fig("send.lag_max", "send behind schedule, max ms", lag_ms),
            fig("broker.rss_peak", "peak RSS (VmHWM), MiB", peak_rss as f64 / (1 << 20) as f64),
            fig("broker.cpu", "broker CPU s, first command to last answer", cpu.0),
            fig("broker.cpu_per_command", "broker CPU per command, ms", 1e3 * cpu.0 / answered.max(1) as f64),
            fig("bench.cpu", "load generator CPU s, same span", cpu.1),
        ],
        notes,
    ))
}
