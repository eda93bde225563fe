//! `corral-bench campaign`: a firmware campaign to a fleet of simulated devices (issue 18), and
//! what its bookkeeping costs the telemetry that keeps flowing meanwhile. One Corral per run,
//! started here on loopback; figures are medians over the runs. No peer runs this scenario (a
//! broker has no campaigns); the comparison is Corral's ingest with and without a campaign.
//!
//! Each run:
//! 1. registers N devices (CSV import) and 100 telemetry devices, uploads an artifact of random
//!    bytes (1 MiB by default; Corral signs it) and connects the fleet (`agents`);
//! 2. **ingest alone**: W HTTP writers post JSON batches (each answer a durable ack) for S seconds;
//! 3. **campaign**: creates a campaign to every device (waves 1 %, 10 %, 50 %, 100 %, concurrency
//!    C) and, while it runs, the same writers post again; the campaign's total time runs from the
//!    create request to the state `completed`;
//! 4. counts what was stored: telemetry rows against acknowledged rows, devices `succeeded`
//!    against N, notifications per device (exactly one), bytes downloaded.
//!
//! `ingest.during_over_alone` is the ingest rate during the campaign ÷ alone: the target is at
//! least 0.9. Everything shares one machine, so the fleet's downloads and SHA-256/Ed25519 checks
//! (the load generator) compete with Corral for the same cores: the server's and the generator's
//! CPU seconds are reported so the two can be told apart.

mod agents;

use crate::ingest::{Writer, count, register};
use crate::mqtt::brokers::{self, Broker, proc_cpu_seconds};
use crate::mqtt::{Run, fig};
use crate::server::ADMIN_TOKEN;
use crate::side_by_side::{self, Layout};
use anyhow::{Context, bail};
use clap::Args;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::Duration;
use tokio::time::Instant;

#[derive(Debug, Clone, Args)]
pub struct CampaignArgs {
    /// The corral binary.
    #[arg(long, default_value = "target/release/corral")]
    pub corral: PathBuf,
    /// Devices in the campaign, each connected over MQTT [default: 10000].
    #[arg(long)]
    pub devices: Option<usize>,
    /// Artifact size, KiB.
    #[arg(long, default_value_t = 1024)]
    pub artifact_kib: usize,
    /// The campaign's concurrency cap (devices between notified and final at once).
    #[arg(long, default_value_t = 1000)]
    pub concurrency: usize,
    /// The campaign's pace, devices notified per minute (`plan.max_per_minute`); none by default.
    #[arg(long)]
    pub max_per_minute: Option<u64>,
    /// Updates the simulated fleet installs at once (downloads in flight).
    #[arg(long, default_value_t = 64)]
    pub installers: usize,
    /// Concurrent telemetry writers (HTTP, 10 readings × 10 fields per request).
    #[arg(long, default_value_t = 16)]
    pub writers: usize,
    /// Seconds of ingest alone, before the campaign.
    #[arg(long, default_value_t = 15)]
    pub ingest_seconds: u64,
    /// Give up on a campaign after this many seconds.
    #[arg(long, default_value_t = 900)]
    pub timeout_seconds: u64,
    /// Runs, each on a fresh server; medians are reported [default: 3].
    #[arg(long)]
    pub runs: Option<usize>,
    /// Small sizes: 1,000 devices, 5 s of ingest alone, 1 run.
    #[arg(long)]
    pub quick: bool,
    /// Print one JSON object instead of the tables.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(args: CampaignArgs) -> anyhow::Result<()> {
    let devices = args.devices.unwrap_or(if args.quick { 1_000 } else { 10_000 }).max(1);
    let runs = args.runs.unwrap_or(if args.quick { 1 } else { 3 }).max(1);
    let ingest_seconds = if args.quick { 5 } else { args.ingest_seconds.max(1) };
    let nofile = brokers::raise_nofile((2 * devices as u64 + 2_000).min(1 << 20))?;
    if (nofile as usize) < devices + 500 {
        bail!(
            "RLIMIT_NOFILE is {nofile} and could not be raised: use --devices {} or fewer",
            (nofile as usize).saturating_sub(500)
        );
    }
    let systems = ["corral".to_string()];
    let results = side_by_side::each_run(&systems, runs, args.json, |_| one_run(&args, devices, ingest_seconds)).await;
    let layout = Layout {
        title: format!(
            "Firmware campaign: {devices} devices on MQTT, a {} KiB artifact, waves 1/10/50/100 %, concurrency {}{}, \
             {} installers; telemetry from {} HTTP writers; {runs} runs, each on a fresh server",
            args.artifact_kib,
            args.concurrency,
            args.max_per_minute.map(|n| format!(", at most {n} devices a minute")).unwrap_or_default(),
            args.installers,
            args.writers
        ),
        per_run: &[
            ("campaign.seconds", "total s"),
            ("count.succeeded", "succeeded"),
            ("count.notified_again", "notified 2×"),
            ("server.cpu", "CPU s"),
            ("server.rss_peak", "RSS MiB"),
            ("ingest.alone", "ingest r/s"),
            ("ingest.during", "during r/s"),
            ("ingest.during_over_alone", "ratio"),
        ],
        count_prefix: "count.",
        peer: "none",
        headline: &[],
        footer: vec![
            "ingest: POST /api/v1/ingest, 10 readings of 10 fields per request, every answer a durable ack; \
             ratio = rows/s during the campaign ÷ alone (target ≥ 0.9)"
                .into(),
        ],
        workload: json!({
            "devices": devices, "artifact_kib": args.artifact_kib, "concurrency": args.concurrency, "max_per_minute": args.max_per_minute,
            "installers": args.installers, "writers": args.writers, "ingest_seconds": ingest_seconds, "runs": runs,
        }),
    };
    side_by_side::print(&layout, args.json, &results);
    Ok(())
}

async fn one_run(args: &CampaignArgs, n: usize, ingest_seconds: u64) -> anyhow::Result<Run> {
    let server = Broker::corral(&args.corral)?;
    let outcome = measure(&server, args, n, ingest_seconds).await;
    server.finish(outcome)
}

async fn measure(server: &Broker, args: &CampaignArgs, n: usize, ingest_seconds: u64) -> anyhow::Result<Run> {
    let base = server.http.clone().context("corral has an HTTP listener")?;
    let http = reqwest::Client::builder().pool_max_idle_per_host(args.writers + 8).build()?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let ids: Vec<String> = (0..n).map(|i| format!("camp-{i:05}")).collect();
    let tokens = crate::twin::import_devices(&http, &base, &ids).await?;
    let telemetry = Arc::new(register(&http, &base, 100).await?);
    let mut image = vec![0u8; args.artifact_kib << 10];
    StdRng::seed_from_u64(18).fill(&mut image[..]);
    let artifact: Value = http
        .post(format!("{base}/api/v1/artifacts?name=bench-fw&version=2.0.0"))
        .bearer_auth(ADMIN_TOKEN)
        .body(image)
        .send()
        .await?
        .error_for_status()
        .context("uploading the artifact")?
        .json()
        .await?;
    let key: Value =
        http.get(format!("{base}/api/v1/artifacts/signing-key")).bearer_auth(ADMIN_TOKEN).send().await?.json().await?;
    let key = key["public_key"].as_str().context("no public_key")?;
    let agents = agents::Agents::connect(server.mqtt, &base, &ids, &tokens, key, args.installers).await?;
    let mut notes = Vec::new();

    // Ingest alone.
    let rows = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let writers = ingest(&http, &base, &telemetry, args.writers, rows.clone(), stop.clone());
    let cpu_alone = server.cpu_seconds();
    tokio::time::sleep(Duration::from_secs(ingest_seconds)).await;
    let alone = rows.load(Relaxed) as f64 / ingest_seconds as f64;
    let cpu_alone = (server.cpu_seconds() - cpu_alone) / ingest_seconds as f64;

    // The campaign, with the same ingest going on.
    let (cpu0, gen0, rows0) = (server.cpu_seconds(), proc_cpu_seconds("/proc/self/stat"), rows.load(Relaxed));
    let started = Instant::now();
    let mut plan = json!({"waves": ["1%", "10%", "50%", "100%"], "concurrency": args.concurrency});
    if let Some(pace) = args.max_per_minute {
        plan["max_per_minute"] = json!(pace);
    }
    let created: Value = http
        .post(format!("{base}/api/v1/campaigns"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"name": "bench", "artifact": artifact["id"], "target": {"where": "device LIKE 'camp-%'"}, "plan": plan}))
        .send()
        .await?
        .error_for_status()
        .context("creating the campaign")?
        .json()
        .await?;
    let id = created["id"].as_str().context("no campaign id")?.to_string();
    let deadline = started + Duration::from_secs(args.timeout_seconds);
    let progress = loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let p: Value = http.get(format!("{base}/api/v1/campaigns/{id}")).bearer_auth(ADMIN_TOKEN).send().await?.json().await?;
        if !matches!(p["state"].as_str(), Some("running" | "draft")) || Instant::now() > deadline {
            break p;
        }
    };
    let seconds = started.elapsed().as_secs_f64();
    let during = (rows.load(Relaxed) - rows0) as f64 / seconds;
    let (cpu, gen_cpu) = (server.cpu_seconds() - cpu0, proc_cpu_seconds("/proc/self/stat") - gen0);
    stop.store(true, Relaxed);
    for w in writers {
        let _ = w.await;
    }
    if progress["state"] != "completed" {
        notes.push(format!("the campaign ended {} after {seconds:.0} s: {}", progress["state"], progress["reason"]));
    }
    let stored = count(&http, &base).await?;
    let acked = rows.load(Relaxed);
    if stored != acked {
        notes.push(format!("telemetry: {acked} rows acknowledged, {stored} stored"));
    }
    let c = &agents.counts;
    let succeeded = progress["states"]["succeeded"].as_u64().unwrap_or(0);
    let figures = vec![
        fig("campaign.seconds", &format!("campaign to {n} devices, create → completed, s"), seconds),
        fig("count.succeeded", "devices succeeded (the campaign's count)", succeeded as f64),
        fig("count.installed", "devices that installed (the fleet's count)", c.installed.load(Relaxed) as f64),
        fig("count.refused", "updates the fleet refused (size, SHA-256, signature)", c.refused.load(Relaxed) as f64),
        fig("count.notified", "devices notified", c.notified.load(Relaxed) as f64),
        fig("count.notified_again", "notifications beyond a device's first", c.notified_again.load(Relaxed) as f64),
        fig("download.mib", "MiB downloaded", c.bytes.load(Relaxed) as f64 / (1 << 20) as f64),
        fig("server.cpu", "server CPU s during the campaign", cpu),
        fig("server.cpu_alone", "server CPU s per s, ingest alone", cpu_alone),
        // What the rows written meanwhile would have cost at ingest alone's CPU per row: the rest
        // is the campaign's (its downloads, reports and bookkeeping).
        fig(
            "server.cpu_campaign",
            "server CPU s for the campaign (beyond its rows' ingest cost)",
            cpu - cpu_alone / alone.max(1e-9) * during * seconds,
        ),
        fig(
            "server.rss_peak",
            "server peak RSS (VmHWM), MiB",
            crate::server::proc_status_bytes(server.pid(), "VmHWM") as f64 / (1 << 20) as f64,
        ),
        fig("bench.cpu", "load generator CPU s (fleet + writers), same span", gen_cpu),
        fig("ingest.alone", "telemetry rows/s, ingest alone", alone),
        fig("ingest.during", "telemetry rows/s during the campaign", during),
        fig("ingest.during_over_alone", "during ÷ alone (target ≥ 0.9)", during / alone.max(1e-9)),
        fig("count.rows_lost", "telemetry rows acknowledged but not stored", acked.saturating_sub(stored) as f64),
    ];
    if c.closed.load(Relaxed) > 0 {
        notes.push(format!("{} device connections were closed by the server", c.closed.load(Relaxed)));
    }
    agents.close().await;
    Ok((figures, notes))
}

/// `writers` tasks posting telemetry (10 readings of 10 fields a request) until `stop`; acked
/// rows in `rows`.
fn ingest(
    http: &reqwest::Client,
    base: &str,
    tokens: &Arc<Vec<String>>,
    writers: usize,
    rows: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..writers)
        .map(|w| {
            let writer = Writer { http: http.clone(), base: base.to_string(), tokens: tokens.clone(), w, writers };
            let (rows, stop) = (rows.clone(), stop.clone());
            tokio::spawn(async move { writer.run(w as u64, 10, 10, &rows, &AtomicU64::new(0), || !stop.load(Relaxed)).await })
        })
        .collect()
}
