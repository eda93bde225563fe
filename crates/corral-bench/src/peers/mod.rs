//! `corral-bench peers`: the fleet data (from `fleet-gen`) loaded into Corral, InfluxDB 1.x,
//! VictoriaMetrics and PostgreSQL, each started here on free loopback ports with its data under
//! `$CORRAL_BENCH_DIR/peers`, with the same client concurrency and batches of line-protocol lines
//! (CSV rows and `COPY` for PostgreSQL). Reported per system: rows/s and values/s while loading,
//! values stored after the flush next to values sent, bytes on disk per value, and the median
//! latency of the six fleet queries (see `queries`). Ratios are Corral ÷ peer. Corral's answers
//! are checked against PostgreSQL's.

mod corral;
mod influx;
pub mod postgres;
pub mod queries;
mod report;
mod victoria;

use clap::Args;
use queries::{Cell, Query};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Args)]
pub struct PeersArgs {
    /// The corral binary.
    #[arg(long, default_value = "target/release/corral")]
    pub corral: PathBuf,
    /// Directory with readings.lp, diagnostics.lp, readings.csv, diagnostics.csv (from fleet-gen).
    #[arg(long, default_value = "target/bench/fleet")]
    pub data: PathBuf,
    /// Concurrent client writers, the same for every system.
    #[arg(long, default_value_t = 4)]
    pub concurrency: usize,
    /// Lines (rows) per write request / COPY.
    #[arg(long, default_value_t = 5000)]
    pub batch: usize,
    /// Timed runs per query (after one warm-up); the median is reported.
    #[arg(long, default_value_t = 5)]
    pub runs: usize,
    /// Rounds: each round starts every system afresh, loads and queries it; rates and latencies
    /// reported are medians over the rounds (the machine is shared and noisy).
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Systems to run, comma-separated.
    #[arg(long, default_value = "corral,influxdb,victoriametrics,postgresql", value_delimiter = ',')]
    pub systems: Vec<String>,
    /// Print one JSON object instead of tables.
    #[arg(long)]
    pub json: bool,
}

/// One write request's worth of data: the same rows as line protocol and as CSV.
pub struct Batch {
    pub table: &'static str,
    pub lp: String,
    pub csv: String,
    pub rows: u64,
    pub values: u64,
}

/// Everything a system's benchmark needs.
pub struct Ctx {
    pub args: PeersArgs,
    pub dir: PathBuf,
    pub batches: Arc<Vec<Batch>>,
    pub queries: Vec<Query>,
    pub rows: u64,
    pub values: u64,
    pub start_ns: i64,
    pub end_ns: i64,
    pub http: reqwest::Client,
}

#[derive(Debug, Clone, Default)]
pub struct LoadResult {
    pub seconds: f64,
    pub rows: u64,
    pub values: u64,
    pub failed_batches: u64,
    pub first_error: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct QueryResult {
    pub median_ms: Option<f64>,
    /// Why there is no figure, or a remark on it.
    pub note: Option<String>,
    pub rows: Option<usize>,
    /// Corral and PostgreSQL: the answer, for the cross-check.
    pub answer: Option<Vec<Vec<Cell>>>,
}

#[derive(Debug, Clone, Default)]
pub struct SystemReport {
    pub name: &'static str,
    pub error: Option<String>,
    pub load: Option<LoadResult>,
    pub rows_stored: Option<u64>,
    pub values_stored: Option<u64>,
    pub bytes: Option<u64>,
    pub bytes_note: &'static str,
    pub queries: Vec<QueryResult>,
}

pub async fn run(args: PeersArgs) -> anyhow::Result<()> {
    let dir = crate::server::bench_tmp().join("peers");
    let (batches, start_ns, end_ns) = read_batches(&args.data, args.batch)?;
    let rows = batches.iter().map(|b| b.rows).sum();
    let values = batches.iter().map(|b| b.values).sum();
    let ctx = Ctx {
        queries: queries::fleet_queries(start_ns, end_ns),
        http: reqwest::Client::builder().pool_max_idle_per_host(args.concurrency * 2).build()?,
        batches: Arc::new(batches),
        args,
        dir,
        rows,
        values,
        start_ns,
        end_ns,
    };
    let systems = ctx.args.systems.clone();
    let mut rounds: Vec<Vec<SystemReport>> = vec![Vec::new(); systems.len()];
    // Round by round rather than system by system, so a noisy minute hurts every system alike.
    for round in 1..=ctx.args.rounds.max(1) {
        for (i, system) in systems.iter().enumerate() {
            let sdir = ctx.dir.join(system);
            let _ = std::fs::remove_dir_all(&sdir);
            std::fs::create_dir_all(&sdir)?;
            if !ctx.args.json {
                eprintln!("== round {round}: {system}");
            }
            let report = match system.as_str() {
                "corral" => corral::bench(&ctx, &sdir).await,
                "influxdb" => influx::bench(&ctx, &sdir).await,
                "victoriametrics" => victoria::bench(&ctx, &sdir).await,
                "postgresql" => postgres::bench(&ctx, &sdir).await,
                other => anyhow::bail!("unknown system {other}"),
            };
            if let Some(e) = &report.error {
                eprintln!("{system}: {e}");
            }
            rounds[i].push(report);
        }
    }
    let reports: Vec<SystemReport> = rounds.into_iter().map(combine).collect();
    report::print(&ctx, &reports);
    Ok(())
}

/// One system's rounds as one report: the load of the round with the median rate, per query the
/// median of the rounds' medians, and the fewest values any round stored (a system that dropped
/// data in one round must not hide it behind another).
fn combine(mut runs: Vec<SystemReport>) -> SystemReport {
    if let Some(failed) = runs.iter().position(|r| r.error.is_some()) {
        return runs.swap_remove(failed);
    }
    let rate = |r: &SystemReport| r.load.as_ref().map_or(0.0, |l| l.values as f64 / l.seconds.max(1e-9));
    runs.sort_by(|a, b| rate(a).total_cmp(&rate(b)));
    let min_stored = |f: fn(&SystemReport) -> Option<u64>| runs.iter().filter_map(f).min();
    let (rows_stored, values_stored) = (min_stored(|r| r.rows_stored), min_stored(|r| r.values_stored));
    let queries: Vec<QueryResult> = (0..runs[0].queries.len())
        .map(|q| {
            let mut result = runs[0].queries[q].clone();
            result.median_ms = median(runs.iter().filter_map(|r| r.queries.get(q)?.median_ms).collect());
            result
        })
        .collect();
    let middle = runs.len() / 2;
    let mut report = runs.swap_remove(middle);
    (report.rows_stored, report.values_stored, report.queries) = (rows_stored, values_stored, queries);
    report
}

/// The LP and CSV files cut into batches of `batch` rows (readings, then diagnostics), and the
/// time span `[first, last + 10 s)`.
fn read_batches(dir: &Path, batch: usize) -> anyhow::Result<(Vec<Batch>, i64, i64)> {
    let mut out = Vec::new();
    let (mut min, mut max) = (i64::MAX, i64::MIN);
    for table in ["readings", "diagnostics"] {
        let lp = std::fs::read_to_string(dir.join(format!("{table}.lp")))
            .map_err(|e| anyhow::anyhow!("{}/{table}.lp: {e} (run corral-bench fleet-gen first)", dir.display()))?;
        let csv = std::fs::read_to_string(dir.join(format!("{table}.csv")))?;
        let lp_lines: Vec<&str> = lp.lines().collect();
        let csv_lines: Vec<&str> = csv.lines().skip(1).collect();
        anyhow::ensure!(lp_lines.len() == csv_lines.len(), "{table}: LP and CSV row counts differ");
        for (l, c) in lp_lines.chunks(batch.max(1)).zip(csv_lines.chunks(batch.max(1))) {
            let mut values = 0;
            for line in l {
                values += line.split(' ').nth(1).map_or(0, |f| f.split(',').count() as u64);
                let t: i64 = line.rsplit(' ').next().unwrap_or("").parse()?;
                (min, max) = (min.min(t), max.max(t));
            }
            out.push(Batch { table, lp: l.join("\n") + "\n", csv: c.join("\n") + "\n", rows: l.len() as u64, values });
        }
    }
    anyhow::ensure!(!out.is_empty(), "no rows in {}", dir.display());
    Ok((out, min, max + crate::fleet::INTERVAL_NS))
}

/// POST every batch's line protocol to `url` from `concurrency` writers; a batch counts once the
/// answer is a success.
pub async fn load_http(ctx: &Ctx, url: &str) -> LoadResult {
    let next = Arc::new(AtomicUsize::new(0));
    let (rows, values, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let first_error = Arc::new(std::sync::Mutex::new(None::<String>));
    let started = Instant::now();
    let mut writers = Vec::new();
    for _ in 0..ctx.args.concurrency {
        let (http, url, batches) = (ctx.http.clone(), url.to_string(), ctx.batches.clone());
        let (next, rows, values, failed, first_error) =
            (next.clone(), rows.clone(), values.clone(), failed.clone(), first_error.clone());
        writers.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(b) = batches.get(i) else { break };
                let err = match http.post(&url).body(b.lp.clone()).send().await {
                    Ok(r) if r.status().is_success() => None,
                    Ok(r) => Some(format!("{}: {}", r.status(), r.text().await.unwrap_or_default())),
                    Err(e) => Some(e.to_string()),
                };
                match err {
                    None => {
                        rows.fetch_add(b.rows, Ordering::Relaxed);
                        values.fetch_add(b.values, Ordering::Relaxed);
                    }
                    Some(e) => {
                        failed.fetch_add(1, Ordering::Relaxed);
                        first_error.lock().unwrap().get_or_insert(e);
                    }
                }
            }
        }));
    }
    for w in writers {
        let _ = w.await;
    }
    LoadResult {
        seconds: started.elapsed().as_secs_f64(),
        rows: rows.load(Ordering::Relaxed),
        values: values.load(Ordering::Relaxed),
        failed_batches: failed.load(Ordering::Relaxed),
        first_error: first_error.lock().unwrap().take(),
    }
}

/// GET or POST and time the whole round trip including reading the body; JSON answer.
pub async fn timed(req: reqwest::RequestBuilder) -> anyhow::Result<(Value, f64)> {
    let t = Instant::now();
    let r = req.send().await?;
    let status = r.status();
    let body = r.text().await?;
    let ms = t.elapsed().as_secs_f64() * 1e3;
    anyhow::ensure!(status.is_success(), "{status}: {}", body.chars().take(300).collect::<String>());
    Ok((serde_json::from_str(&body)?, ms))
}

pub fn median(mut v: Vec<f64>) -> Option<f64> {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied()
}

pub use crate::server::free_port;

/// Poll `url` until it answers a success, up to `secs`.
pub async fn wait_ready(http: &reqwest::Client, url: &str, secs: u64) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if http.get(url).send().await.is_ok_and(|r| r.status().is_success()) {
            return Ok(());
        }
        anyhow::ensure!(Instant::now() < deadline, "{url} did not answer within {secs} s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Disk space allocated to the files under `dir` (what `du` reports; preallocated sparse files
/// count only their written blocks).
pub fn dir_size(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            match entry.metadata() {
                Ok(m) if m.is_dir() => stack.push(entry.path()),
                Ok(m) => total += std::os::unix::fs::MetadataExt::blocks(&m) * 512,
                Err(_) => {}
            }
        }
    }
    total
}

/// Percent-encoding for a query string value.
pub fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Time `runs` executions (after one warm-up) of an HTTP query built by `req`.
pub async fn time_http<F>(runs: usize, mut req: F) -> QueryResult
where
    F: FnMut() -> reqwest::RequestBuilder,
{
    let mut times = Vec::new();
    let mut first = None;
    for i in 0..=runs {
        match timed(req()).await {
            Ok((v, ms)) => {
                if i == 0 {
                    first = Some(v);
                } else {
                    times.push(ms);
                }
            }
            Err(e) => return QueryResult { note: Some(format!("n/a: {e}")), ..Default::default() },
        }
    }
    QueryResult { median_ms: median(times), answer: first.map(|v| vec![vec![Some(v.to_string())]]), ..Default::default() }
}
