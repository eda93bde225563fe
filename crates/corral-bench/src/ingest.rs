//! The ingest benchmark: many devices, each posting JSON batches of readings over HTTP, every
//! answer a durable ack (WAL fsync). Reports medians over several runs, each on a fresh server.

use crate::server::{ADMIN_TOKEN, Server, dir_bytes};
use clap::Args;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Args)]
pub struct IngestArgs {
    /// The corral binary to benchmark.
    #[arg(long, default_value = "target/release/corral")]
    pub corral: PathBuf,
    /// Simulated devices (each registered, each with its own token).
    #[arg(long, default_value_t = 1000)]
    pub devices: usize,
    /// Numeric fields per reading.
    #[arg(long, default_value_t = 10)]
    pub fields: usize,
    /// Readings per request (a JSON array).
    #[arg(long, default_value_t = 10)]
    pub batch: usize,
    /// Concurrent HTTP writers.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Seconds of load per run.
    #[arg(long, default_value_t = 20)]
    pub seconds: u64,
    /// Runs (fresh server each); the report gives medians.
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Copy)]
struct RunResult {
    rows_per_s: f64,
    values_per_s: f64,
    fsyncs_per_s: f64,
    rows_stored: u64,
    parquet_bytes_per_value: f64,
    wal_bytes_per_value: f64,
    peak_rss_mb: f64,
    errors: u64,
}

pub async fn run(args: IngestArgs) -> anyhow::Result<()> {
    let mut results = Vec::new();
    for run in 1..=args.runs {
        let r = one_run(&args, run as u64).await?;
        if !args.json {
            eprintln!(
                "run {run}: {:.0} rows/s, {:.0} values/s, {:.0} fsyncs/s, {:.2} B/value in Parquet, peak RSS {:.0} MiB, {} errors",
                r.rows_per_s, r.values_per_s, r.fsyncs_per_s, r.parquet_bytes_per_value, r.peak_rss_mb, r.errors
            );
        }
        results.push(r);
    }
    let median = |f: fn(&RunResult) -> f64| {
        let mut v: Vec<f64> = results.iter().map(f).collect();
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    };
    let summary = json!({
        "workload": { "devices": args.devices, "fields": args.fields, "batch": args.batch,
                      "concurrency": args.concurrency, "seconds": args.seconds, "runs": args.runs },
        "median": {
            "rows_per_s": median(|r| r.rows_per_s).round(),
            "values_per_s": median(|r| r.values_per_s).round(),
            "fsyncs_per_s": median(|r| r.fsyncs_per_s).round(),
            "parquet_bytes_per_value": (median(|r| r.parquet_bytes_per_value) * 100.0).round() / 100.0,
            "wal_bytes_per_value": (median(|r| r.wal_bytes_per_value) * 100.0).round() / 100.0,
            "peak_rss_mb": median(|r| r.peak_rss_mb).round(),
        },
        "rows_stored": results.iter().map(|r| r.rows_stored).collect::<Vec<_>>(),
        "errors": results.iter().map(|r| r.errors).sum::<u64>(),
    });
    if args.json {
        println!("{summary}");
    } else {
        let m = &summary["median"];
        println!(
            "corral-bench ingest: {} devices x {} fields, {} readings/request, {} writers, {} s x {} runs (medians)",
            args.devices, args.fields, args.batch, args.concurrency, args.seconds, args.runs
        );
        println!("  rows/s (durable acks)      {}", m["rows_per_s"]);
        println!("  values/s                   {}", m["values_per_s"]);
        println!("  WAL fsyncs/s               {}", m["fsyncs_per_s"]);
        println!("  Parquet bytes per value    {}", m["parquet_bytes_per_value"]);
        println!("  WAL bytes per value        {}", m["wal_bytes_per_value"]);
        println!("  peak RSS (MiB)             {}", m["peak_rss_mb"]);
        println!("  request errors             {}", summary["errors"]);
    }
    Ok(())
}

async fn one_run(args: &IngestArgs, seed: u64) -> anyhow::Result<RunResult> {
    let server = Server::start(&args.corral, &[])?;
    let http = reqwest::Client::builder().pool_max_idle_per_host(args.concurrency).build()?;
    let tokens = Arc::new(register(&http, &server.base, args.devices).await?);
    let fsyncs_before = metric(&http, &server.base, "corral_wal_fsyncs_total").await?;
    let wal_bytes_before = metric(&http, &server.base, "corral_wal_bytes_total").await?;
    let rows = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.seconds);
    let mut writers = Vec::new();
    for w in 0..args.concurrency {
        let writer =
            Writer { http: http.clone(), base: server.base.clone(), tokens: tokens.clone(), w, writers: args.concurrency };
        let (rows, errors, fields, batch) = (rows.clone(), errors.clone(), args.fields, args.batch);
        writers.push(tokio::spawn(async move {
            writer.run(seed * 1000 + w as u64, fields, batch, &rows, &errors, || Instant::now() < deadline).await
        }));
    }
    for w in writers {
        w.await?;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let fsyncs = metric(&http, &server.base, "corral_wal_fsyncs_total").await? - fsyncs_before;
    let wal_bytes = metric(&http, &server.base, "corral_wal_bytes_total").await? - wal_bytes_before;
    let rows_stored = count(&http, &server.base).await?;
    let peak_rss = server.peak_rss_bytes();
    let acked = rows.load(Ordering::Relaxed);
    anyhow::ensure!(rows_stored == acked, "stored {rows_stored} rows but {acked} were acknowledged");
    let data_dir = server.stop()?;
    let parquet = dir_bytes(&data_dir.path().join("store/tables"), "parquet");
    let values = (acked * args.fields as u64) as f64;
    Ok(RunResult {
        rows_per_s: acked as f64 / elapsed,
        values_per_s: values / elapsed,
        fsyncs_per_s: fsyncs / elapsed,
        rows_stored,
        parquet_bytes_per_value: parquet as f64 / values,
        wal_bytes_per_value: wal_bytes / values,
        peak_rss_mb: peak_rss as f64 / (1 << 20) as f64,
        errors: errors.load(Ordering::Relaxed),
    })
}

/// One of `writers` concurrent HTTP writers (number `w`): posts JSON batches to
/// `/api/v1/ingest`, each as the next of `tokens` in its turn, while `go()` holds; counts the rows
/// acknowledged (every answer a durable ack) and the requests that failed.
pub(crate) struct Writer {
    pub http: reqwest::Client,
    pub base: String,
    pub tokens: Arc<Vec<String>>,
    pub w: usize,
    pub writers: usize,
}

impl Writer {
    pub async fn run(&self, seed: u64, fields: usize, batch: usize, rows: &AtomicU64, errors: &AtomicU64, go: impl Fn() -> bool) {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut clock_ms: i64 = 1_767_225_600_000 + (self.w as i64) * 7; // 2026-01-01, distinct per writer
        let (url, mut d) = (format!("{}/api/v1/ingest", self.base), self.w);
        while go() {
            let body = readings(&mut rng, &mut clock_ms, fields, batch);
            let ok = self
                .http
                .post(&url)
                .bearer_auth(&self.tokens[d % self.tokens.len()])
                .header("Content-Type", "application/json")
                .body(body)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ok {
                rows.fetch_add(batch as u64, Ordering::Relaxed);
            } else {
                errors.fetch_add(1, Ordering::Relaxed);
            }
            d += self.writers;
        }
    }
}

/// A JSON array of `batch` readings, 1 s apart, each with `fields` random-walk-ish values.
pub(crate) fn readings(rng: &mut StdRng, clock_ms: &mut i64, fields: usize, batch: usize) -> String {
    let mut out = String::with_capacity(batch * fields * 24);
    out.push('[');
    for i in 0..batch {
        if i > 0 {
            out.push(',');
        }
        *clock_ms += 1000;
        out.push_str(&format!("{{\"ts\":{clock_ms}"));
        for f in 0..fields {
            out.push_str(&format!(",\"f{f}\":{:.2}", 20.0 + f as f64 + rng.random_range(-5.0..5.0)));
        }
        out.push('}');
    }
    out.push(']');
    out
}

pub(crate) async fn register(http: &reqwest::Client, base: &str, devices: usize) -> anyhow::Result<Vec<String>> {
    let mut tokens = Vec::with_capacity(devices);
    for i in 0..devices {
        let r: Value = http
            .post(format!("{base}/api/v1/devices"))
            .bearer_auth(ADMIN_TOKEN)
            .json(&json!({"id": format!("bench-{i:05}"), "profile": "bench", "site": format!("site-{}", i % 10)}))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        tokens.push(r["token"].as_str().unwrap_or_default().to_string());
    }
    Ok(tokens)
}

pub(crate) async fn metric(http: &reqwest::Client, base: &str, name: &str) -> anyhow::Result<f64> {
    let text = http.get(format!("{base}/metrics")).send().await?.text().await?;
    Ok(text.lines().find_map(|l| l.strip_prefix(name).and_then(|rest| rest.trim().parse::<f64>().ok())).unwrap_or(0.0))
}

pub(crate) async fn count(http: &reqwest::Client, base: &str) -> anyhow::Result<u64> {
    let r: Value = http
        .post(format!("{base}/api/v1/query"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"sql": "SELECT count(*) FROM telemetry"}))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    Ok(r["rows"][0][0].as_u64().unwrap_or(0))
}
