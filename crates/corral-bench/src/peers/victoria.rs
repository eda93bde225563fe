//! VictoriaMetrics (single node, Debian `victoria-metrics`) in the fleet benchmark: started with
//! `-retentionPeriod=100y` (it silently drops samples older than its retention while answering
//! 204, and the fleet data may lie in the past), its response cache off so every query is
//! computed, loaded over its InfluxDB `/write` endpoint (each field becomes the series
//! `<measurement>_<field>` with the tags as labels), flushed with `/internal/force_flush`, and
//! queried in MetricsQL with instant queries at the end of the data. Bytes on disk are counted
//! after a graceful stop: right after `force_flush` recent parts may still be in memory (a first
//! version of this benchmark measured 0.11 bytes per value that way; after the stop it is ~1).
//! Counted: `data/` and `indexdb/`; not `cache/`, which holds caches VictoriaMetrics rebuilds.

use super::{Ctx, QueryResult, SystemReport, enc, free_port, load_http, time_http, wait_ready};
use serde_json::Value;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

pub async fn bench(ctx: &Ctx, dir: &Path) -> SystemReport {
    let mut report =
        SystemReport { name: "victoriametrics", bytes_note: "data/ + indexdb/ after a graceful stop", ..Default::default() };
    let port = match free_port() {
        Ok(p) => p,
        Err(e) => return SystemReport { error: Some(e.to_string()), ..report },
    };
    let data = dir.join("data");
    let log = std::fs::File::create(dir.join("victoria-metrics.log"));
    let child = log.and_then(|log| {
        Command::new("victoria-metrics")
            .arg(format!("-storageDataPath={}", data.display()))
            .arg(format!("-httpListenAddr=127.0.0.1:{port}"))
            .args(["-retentionPeriod=100y", "-search.disableCache", "-loggerLevel=ERROR"])
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .spawn()
    });
    let mut child = match child {
        Ok(c) => c,
        Err(e) => return SystemReport { error: Some(format!("n/a: victoria-metrics: {e}")), ..report },
    };
    let base = format!("http://127.0.0.1:{port}");
    if let Err(e) = run(ctx, &base, &mut report).await {
        report.error = Some(format!("{e:#}"));
    }
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let _ = child.wait();
    if report.error.is_none() {
        report.bytes = Some(super::dir_size(&data.join("data")) + super::dir_size(&data.join("indexdb")));
    }
    report
}

async fn run(ctx: &Ctx, base: &str, report: &mut SystemReport) -> anyhow::Result<()> {
    wait_ready(&ctx.http, &format!("{base}/health"), 60).await?;
    report.load = Some(load_http(ctx, &format!("{base}/write?db=fleet")).await);
    let r = ctx.http.get(format!("{base}/internal/force_flush")).send().await?;
    anyhow::ensure!(r.status().is_success(), "force_flush: {}", r.status());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let span_s = (ctx.end_ns - ctx.start_ns) / 1_000_000_000;
    let count = format!("sum(count_over_time({{__name__=~\"(readings|diagnostics)_.+\"}}[{span_s}s]))");
    let (v, _) = super::timed(ctx.http.get(query_url(base, &count, ctx.end_ns as f64 / 1e9 - 0.001))).await?;
    let stored = v["data"]["result"][0]["value"][1].as_str().and_then(|s| s.parse::<f64>().ok()).unwrap_or(0.0);
    report.values_stored = Some(stored as u64);
    for q in &ctx.queries {
        let r = match &q.victoria {
            Err(why) => QueryResult { note: Some(format!("n/a: {why}")), ..Default::default() },
            Ok((mql, time)) => {
                let url = query_url(base, mql, *time);
                let mut r = time_http(ctx.args.runs, || ctx.http.get(&url)).await;
                if let Some(a) = r.answer.take() {
                    let v: Value = serde_json::from_str(a[0][0].as_deref().unwrap_or("null"))?;
                    r.rows = Some(v["data"]["result"].as_array().map_or(0, Vec::len));
                }
                r
            }
        };
        report.queries.push(r);
    }
    Ok(())
}

fn query_url(base: &str, q: &str, time: f64) -> String {
    format!("{base}/api/v1/query?query={}&time={time:.3}", enc(q))
}
