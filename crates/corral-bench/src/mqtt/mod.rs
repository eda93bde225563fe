//! `corral-bench mqtt`: Corral's MQTT broker side by side with Mosquitto 2.0 (issue 4), both
//! started here on loopback and driven by the same lean tokio load generator (`conn`, `wire`):
//!
//! - `fan-in-qos0` / `fan-in-qos1`: N publishers, each on its own `devices/<id>/telemetry` (real
//!   device tokens for Corral, so the durable path), small JSON readings. QoS 0 counts what one
//!   subscriber on `devices/+/telemetry` received; QoS 1 counts PUBACKs with a window of
//!   outstanding messages per client. Corral's stored rows are counted with SQL afterwards.
//! - `fan-out`: 1 publisher, N subscribers of `bench/fanout`, QoS 0; deliveries/s.
//! - `pairs`: N publisher/subscriber pairs, each on its own topic, QoS 0; deliveries/s.
//! - `idle`: K silent connections; broker RSS (VmRSS) before and after, bytes per connection.
//! - `latency-qos0` / `latency-qos1`: a fixed offered rate to one subscriber; p50/p99/max.
//!
//! Each run starts every broker afresh (round by round, so noise hits both alike); figures are
//! medians over runs. See `scripts/bench-mqtt.sh` and docs/benchmarks.md.

pub mod brokers;
pub mod conn;
mod idle;
mod latency;
pub(crate) mod report;
pub mod stats;
mod throughput;
pub mod wire;

use brokers::Broker;
use clap::Args;
use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

pub const ALL_SCENARIOS: &str = "fan-in-qos0,fan-in-qos1,fan-out,pairs,idle,latency";

#[derive(Debug, Clone, Args)]
pub struct MqttArgs {
    /// The corral binary.
    #[arg(long, default_value = "target/release/corral")]
    pub corral: PathBuf,
    /// Brokers to run, comma-separated (corral, mosquitto).
    #[arg(long, default_value = "corral,mosquitto", value_delimiter = ',')]
    pub brokers: Vec<String>,
    /// Scenarios, comma-separated: fan-in-qos0, fan-in-qos1, fan-out, pairs, idle, latency
    /// (= latency-qos0 and latency-qos1).
    #[arg(long, default_value = ALL_SCENARIOS, value_delimiter = ',')]
    pub scenarios: Vec<String>,
    /// Publishers of fan-in, subscribers of fan-out, pairs of `pairs`.
    #[arg(long)]
    pub clients: Option<usize>,
    /// Measured seconds of each throughput scenario.
    #[arg(long)]
    pub seconds: Option<f64>,
    /// Outstanding messages per publisher (QoS 1: unacknowledged PUBLISHes; QoS 0: sent but not
    /// yet received by the subscribers, so a fast publisher cannot bury a broker in backlog).
    #[arg(long, default_value_t = 16)]
    pub window: u64,
    /// Idle connections.
    #[arg(long)]
    pub idle: Option<usize>,
    /// Offered rate of the latency scenarios, messages/s.
    #[arg(long, default_value_t = 5000)]
    pub rate: u64,
    /// Measured seconds of each latency scenario (after 1 s of warm-up).
    #[arg(long)]
    pub latency_seconds: Option<f64>,
    /// Runs (fresh broker starts); medians are reported.
    #[arg(long)]
    pub runs: Option<usize>,
    /// Small sizes for a run under two minutes: 200 clients, 3 s, 5,000 idle connections, 1 run.
    #[arg(long)]
    pub quick: bool,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    pub json: bool,
}

/// Sizes after `--quick` and explicit options are applied.
#[derive(Debug, Clone)]
pub struct Sizes {
    pub clients: usize,
    pub seconds: f64,
    pub window: u64,
    pub idle: usize,
    pub rate: u64,
    pub latency_seconds: f64,
    pub runs: usize,
}

impl MqttArgs {
    pub fn sizes(&self) -> Sizes {
        let q = self.quick;
        Sizes {
            clients: self.clients.unwrap_or(if q { 200 } else { 1000 }).max(1),
            seconds: self.seconds.unwrap_or(if q { 3.0 } else { 10.0 }),
            window: self.window.max(1),
            idle: self.idle.unwrap_or(if q { 5_000 } else { 50_000 }),
            rate: self.rate.max(1),
            latency_seconds: self.latency_seconds.unwrap_or(if q { 3.0 } else { 10.0 }),
            runs: self.runs.unwrap_or(if q { 1 } else { 3 }).max(1),
        }
    }
}

/// One measured figure of one run.
#[derive(Debug, Clone)]
pub struct Figure {
    pub key: String,
    pub label: String,
    pub value: f64,
}

/// What one run of a side-by-side benchmark gives: its figures and its remarks.
pub type Run = (Vec<Figure>, Vec<String>);

pub fn fig(key: &str, label: &str, value: f64) -> Figure {
    Figure { key: key.to_string(), label: label.to_string(), value }
}

/// All runs of one broker: figures by key (in first-seen order), remarks.
#[derive(Debug, Default)]
pub struct BrokerResults {
    pub name: String,
    pub order: Vec<(String, String)>,
    pub values: HashMap<String, Vec<f64>>,
    pub notes: Vec<String>,
}

impl BrokerResults {
    pub(crate) fn add(&mut self, figures: Vec<Figure>) {
        for f in figures {
            if !self.values.contains_key(&f.key) {
                self.order.push((f.key.clone(), f.label.clone()));
            }
            self.values.entry(f.key).or_default().push(f.value);
        }
    }
}

/// What a scenario gets: the broker, the sizes, Corral's registered devices.
pub struct Ctx<'a> {
    pub broker: &'a Broker,
    pub sizes: &'a Sizes,
    pub devices: &'a [(String, String)],
    pub http: &'a reqwest::Client,
}

pub async fn run(args: MqttArgs) -> anyhow::Result<()> {
    let sizes = args.sizes();
    let mut scenarios: Vec<String> = Vec::new();
    for s in &args.scenarios {
        match s.as_str() {
            "latency" => scenarios.extend(["latency-qos0".to_string(), "latency-qos1".to_string()]),
            "fan-in-qos0" | "fan-in-qos1" | "fan-out" | "pairs" | "idle" | "latency-qos0" | "latency-qos1" => {
                scenarios.push(s.clone())
            }
            other => anyhow::bail!("unknown scenario {other} (known: {ALL_SCENARIOS}, latency-qos0, latency-qos1)"),
        }
    }
    // Idle last: tens of thousands of connections closing must not disturb the other figures.
    scenarios.sort_by_key(|s| s == "idle");
    let mut sizes = sizes;
    let nofile = brokers::raise_nofile((2 * sizes.idle as u64 + 20_000).min(1 << 20))?;
    // This process and each broker (which inherits the limit) hold one descriptor per idle
    // connection; without CAP_SYS_RESOURCE the hard limit caps them.
    let idle_cap = (nofile as usize).saturating_sub(1_000);
    let mut run_notes = Vec::new();
    if sizes.idle > idle_cap && scenarios.iter().any(|s| s == "idle") {
        run_notes.push(format!(
            "idle: RLIMIT_NOFILE could only be raised to {nofile} (no CAP_SYS_RESOURCE): {idle_cap} idle connections instead of {}",
            sizes.idle
        ));
        sizes.idle = idle_cap;
    }
    for n in &run_notes {
        eprintln!("note: {n}");
    }
    let http = reqwest::Client::new();
    let mut results: Vec<BrokerResults> =
        args.brokers.iter().map(|b| BrokerResults { name: b.clone(), notes: run_notes.clone(), ..Default::default() }).collect();
    for run in 1..=sizes.runs {
        for res in results.iter_mut() {
            if !args.json {
                eprintln!("== run {run}/{}: {}", sizes.runs, res.name);
            }
            let broker = match res.name.as_str() {
                "corral" => Broker::corral(&args.corral),
                "mosquitto" => Broker::mosquitto(),
                other => anyhow::bail!("unknown broker {other}"),
            };
            let mut broker = match broker {
                Ok(b) => b,
                Err(e) => {
                    res.notes.push(format!("run {run}: start failed: {e:#}"));
                    continue;
                }
            };
            tokio::time::sleep(Duration::from_millis(500)).await;
            let needs_devices = scenarios.iter().any(|s| s.starts_with("fan-in") || s.starts_with("latency"));
            let devices =
                if broker.name == "corral" && needs_devices { broker.register(&http, sizes.clients).await? } else { Vec::new() };
            for (i, scenario) in scenarios.iter().enumerate() {
                if scenario == "idle" && i > 0 {
                    // A fresh broker: memory the others left in its allocator would hide the cost.
                    broker.stop();
                    broker = match res.name.as_str() {
                        "corral" => Broker::corral(&args.corral)?,
                        _ => Broker::mosquitto()?,
                    };
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                let ctx = Ctx { broker: &broker, sizes: &sizes, devices: &devices, http: &http };
                let outcome = match scenario.as_str() {
                    "fan-in-qos0" => throughput::fan_in(&ctx, 0).await,
                    "fan-in-qos1" => throughput::fan_in(&ctx, 1).await,
                    "fan-out" => throughput::fan_out(&ctx).await,
                    "pairs" => throughput::pairs(&ctx).await,
                    "idle" => idle::run(&ctx).await,
                    "latency-qos0" => latency::run(&ctx, 0).await,
                    "latency-qos1" => latency::run(&ctx, 1).await,
                    _ => unreachable!(),
                };
                match outcome {
                    Ok((figures, notes)) => {
                        if !args.json {
                            for f in &figures {
                                eprintln!("   {:<52} {:>14.1}", f.label, f.value);
                            }
                        }
                        res.add(figures);
                        res.notes.extend(notes.into_iter().map(|n| format!("run {run}: {scenario}: {n}")));
                    }
                    Err(e) => res.notes.push(format!("run {run}: {scenario} failed: {e:#}")),
                }
                if !broker.alive() {
                    res.notes.push(format!("run {run}: broker exited during {scenario}"));
                    break;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            broker.stop();
        }
    }
    report::print(&args, &sizes, nofile, &results);
    Ok(())
}
