//! The rules benchmark (issue 6), each phase on a fresh server:
//! 1. ingest rate (durable rows/s over HTTP, the `ingest` workload) with 0, 10 and 100 active
//!    rules — a mix of thresholds, conjunctions, sliding windows and site-scoped rules that are
//!    all evaluated on every row and never fire, so the cost measured is evaluation;
//! 2. publish-to-webhook latency: a steady message rate from many devices, one message in ten
//!    crossing a threshold; a receiver in this process timestamps each signed POST against the
//!    send time the message carried. Every expected webhook is counted.

use crate::ingest::{count, readings, register};
use crate::server::{ADMIN_TOKEN, Server};
use clap::Args;
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde_json::{Value, json};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Args)]
pub struct RulesArgs {
    #[arg(long, default_value = "target/release/corral")]
    pub corral: PathBuf,
    /// Rule counts to compare (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "0,10,100")]
    pub rules: Vec<usize>,
    #[arg(long, default_value_t = 200)]
    pub devices: usize,
    /// Readings per ingest request.
    #[arg(long, default_value_t = 10)]
    pub batch: usize,
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// Seconds of load per throughput run.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Runs per rule count (interleaved); the report gives medians.
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Messages per second for the latency phase (0 skips it).
    #[arg(long, default_value_t = 10_000)]
    pub rate: u64,
    #[arg(long, default_value_t = 15)]
    pub latency_seconds: u64,
    #[arg(long)]
    pub json: bool,
}

const WINDOWS: [&str; 4] = ["avg(f3) over 1m", "max(f5) over 5m", "rate(f6) over 1m", "min(f7) over tumbling 10m"];

/// `n` rules that are evaluated on every row and never match.
fn rule_set(n: usize) -> Vec<Value> {
    (0..n)
        .map(|i| {
            let (condition, scope) = match i % 4 {
                0 => (format!("f0 > {}", 1000 + i), json!({})),
                1 => (format!("f1 > {} AND f2 < -{i}", 1000 + i), json!({})),
                // Four different windows among the windowed rules (rules sharing one share its state).
                2 => (format!("{} > {}", WINDOWS[i / 4 % WINDOWS.len()], 1000 + i), json!({})),
                _ => (format!("f4 > {}", 1000 + i), json!({"site": format!("site-{}", i % 10)})),
            };
            json!({"name": format!("bench rule {i}"), "condition": condition, "scope": scope, "severity": "info"})
        })
        .collect()
}

async fn add_rules(http: &reqwest::Client, base: &str, rules: &[Value]) -> anyhow::Result<()> {
    for rule in rules {
        let r = http.post(format!("{base}/api/v1/rules")).bearer_auth(ADMIN_TOKEN).json(rule).send().await?;
        anyhow::ensure!(r.status().is_success(), "creating a rule: {}", r.text().await?);
    }
    Ok(())
}

/// One throughput run: rows/s acknowledged, and rows stored (counted afterwards by SQL).
async fn throughput(args: &RulesArgs, rules: usize, seed: u64) -> anyhow::Result<(f64, u64, u64)> {
    let server = Server::start(&args.corral, &[])?;
    let http = reqwest::Client::builder().pool_max_idle_per_host(args.concurrency).build()?;
    let tokens = Arc::new(register(&http, &server.base, args.devices).await?);
    add_rules(&http, &server.base, &rule_set(rules)).await?;
    let acked = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.seconds);
    let mut writers = Vec::new();
    for w in 0..args.concurrency {
        let (http, base, tokens, acked) = (http.clone(), server.base.clone(), tokens.clone(), acked.clone());
        let (batch, concurrency) = (args.batch, args.concurrency);
        writers.push(tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64(seed * 1000 + w as u64);
            let mut clock_ms: i64 = 1_767_225_600_000 + (w as i64) * 7;
            let mut d = w;
            while Instant::now() < deadline {
                let body = readings(&mut rng, &mut clock_ms, 10, batch);
                let r = http.post(format!("{base}/api/v1/ingest")).bearer_auth(&tokens[d % tokens.len()]).body(body).send().await;
                if r.is_ok_and(|r| r.status().is_success()) {
                    acked.fetch_add(batch as u64, Ordering::Relaxed);
                }
                d += concurrency;
            }
        }));
    }
    for w in writers {
        w.await?;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let acked = acked.load(Ordering::Relaxed);
    let stored = count(&http, &server.base).await?;
    server.stop()?;
    Ok((acked as f64 / elapsed, acked, stored))
}

/// The latency phase: (p50 ms, p99 ms, webhooks received, webhooks expected, achieved msg/s).
async fn latency(args: &RulesArgs) -> anyhow::Result<(f64, f64, u64, u64, f64)> {
    let received: Arc<Mutex<Vec<f64>>> = Arc::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let hook = format!("http://{}/hook", listener.local_addr()?);
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post({
            let received = received.clone();
            move |body: axum::body::Bytes| async move {
                let now_us = chrono::Utc::now().timestamp_micros() as f64;
                if let Ok(event) = serde_json::from_slice::<Value>(&body)
                    && let Some(sent) = event["alarm"]["last_values"]["sent_us"].as_f64()
                {
                    received.lock().unwrap().push((now_us - sent) / 1000.0);
                }
                "ok"
            }
        }),
    );
    let receiver = tokio::spawn(async move { axum::serve(listener, app).await });
    let server = Server::start(&args.corral, &["--webhook-allow".into(), "127.0.0.1".into()])?;
    let http = reqwest::Client::builder().pool_max_idle_per_host(256).build()?;
    let tokens = Arc::new(register(&http, &server.base, args.devices).await?);
    add_rules(
        &http,
        &server.base,
        &[json!({"name": "hot", "condition": "temperature > 50", "severity": "major",
        "actions": [{"type": "webhook", "url": hook}]})],
    )
    .await?;
    let senders = 64usize.min(args.devices);
    let per_sender = Duration::from_secs_f64(senders as f64 / args.rate as f64);
    let (expected, sent) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let deadline = Instant::now() + Duration::from_secs(args.latency_seconds);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for s in 0..senders {
        let (http, base, tokens, expected, sent) =
            (http.clone(), server.base.clone(), tokens.clone(), expected.clone(), sent.clone());
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(per_sender);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            // Each sender owns the devices s, s + senders, ...; each device alternates hot and cool
            // every tenth message, so every hot message raises one alarm (and one webhook).
            let devices: Vec<usize> = (s..tokens.len()).step_by(senders).collect();
            let mut k = 0u64;
            while Instant::now() < deadline {
                tick.tick().await;
                let d = devices[(k as usize) % devices.len()];
                let round = k / devices.len() as u64;
                let hot = round.is_multiple_of(10);
                let body =
                    json!({"temperature": if hot { 60.0 } else { 40.0 }, "sent_us": chrono::Utc::now().timestamp_micros()});
                let r = http.post(format!("{base}/api/v1/ingest")).bearer_auth(&tokens[d]).json(&body).send().await;
                if r.is_ok_and(|r| r.status().is_success()) {
                    sent.fetch_add(1, Ordering::Relaxed);
                    if hot {
                        expected.fetch_add(1, Ordering::Relaxed);
                    }
                }
                k += 1;
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    let rate = sent.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64();
    let expected = expected.load(Ordering::Relaxed);
    let drain = Instant::now() + Duration::from_secs(30);
    while (received.lock().unwrap().len() as u64) < expected && Instant::now() < drain {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    server.stop()?;
    receiver.abort();
    let mut ms = received.lock().unwrap().clone();
    ms.sort_by(|a, b| a.total_cmp(b));
    let q = |p: f64| ms.get(((ms.len() as f64 - 1.0) * p).round() as usize).copied().unwrap_or(f64::NAN);
    Ok((q(0.5), q(0.99), ms.len() as u64, expected, rate))
}

pub async fn run(args: RulesArgs) -> anyhow::Result<()> {
    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); args.rules.len()];
    let mut lost = Vec::new();
    for run in 0..args.runs {
        for (i, &n) in args.rules.iter().enumerate() {
            let (rate, acked, stored) = throughput(&args, n, run as u64 + 1).await?;
            if !args.json {
                eprintln!("run {}: {n} rules: {rate:.0} rows/s ({acked} acked, {stored} stored)", run + 1);
            }
            if stored != acked {
                lost.push(json!({"rules": n, "acked": acked, "stored": stored}));
            }
            rates[i].push(rate);
        }
    }
    let median = |v: &[f64]| {
        let mut v = v.to_vec();
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    };
    let base = median(&rates[0]);
    let throughput: Vec<Value> = args
        .rules
        .iter()
        .zip(&rates)
        .map(|(n, r)| json!({"rules": n, "rows_per_s": median(r).round(), "ratio_to_first": (median(r) / base * 1000.0).round() / 1000.0}))
        .collect();
    let latency = if args.rate > 0 {
        let (p50, p99, got, expected, achieved) = latency(&args).await?;
        json!({"target_msg_per_s": args.rate, "achieved_msg_per_s": achieved.round(), "webhooks_received": got,
               "webhooks_expected": expected, "p50_ms": (p50 * 100.0).round() / 100.0, "p99_ms": (p99 * 100.0).round() / 100.0})
    } else {
        Value::Null
    };
    let summary = json!({"throughput": throughput, "acked_not_stored": lost, "webhook_latency": latency,
        "workload": {"devices": args.devices, "batch": args.batch, "concurrency": args.concurrency, "seconds": args.seconds, "runs": args.runs}});
    if args.json {
        println!("{summary}");
        return Ok(());
    }
    println!(
        "corral-bench rules: {} devices, {} readings x 10 fields per request, {} writers, {} s x {} runs (medians)",
        args.devices, args.batch, args.concurrency, args.seconds, args.runs
    );
    for t in &throughput {
        println!(
            "  {:>4} rules  {:>10} rows/s   {:.3} x the first",
            t["rules"],
            t["rows_per_s"],
            t["ratio_to_first"].as_f64().unwrap_or(0.0)
        );
    }
    if !lost.is_empty() {
        println!("  ACKED BUT NOT STORED: {lost:?}");
    }
    if !latency.is_null() {
        println!(
            "  webhook latency at {} msg/s (achieved {}): p50 {} ms, p99 {} ms; {} of {} webhooks received",
            latency["target_msg_per_s"],
            latency["achieved_msg_per_s"],
            latency["p50_ms"],
            latency["p99_ms"],
            latency["webhooks_received"],
            latency["webhooks_expected"]
        );
    }
    Ok(())
}
