//! InfluxDB 1.x (`influxd` from the Debian `influxdb` package) in the fleet benchmark: started with
//! a generated config (HTTP and RPC on free loopback ports, meta/data/WAL under the bench dir,
//! reporting off, cache snapshot after 2 s cold so the TSM files exist when disk use is measured),
//! loaded over `/write?precision=ns`, queried in InfluxQL over `/query`.

use super::{Ctx, SystemReport, enc, free_port, load_http, time_http, wait_ready};
use serde_json::Value;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub async fn bench(ctx: &Ctx, dir: &Path) -> SystemReport {
    let mut report = SystemReport { name: "influxdb", bytes_note: "data + wal dirs after snapshot", ..Default::default() };
    match start(dir) {
        Ok((mut child, base)) => {
            if let Err(e) = run(ctx, dir, &base, &mut report).await {
                report.error = Some(format!("{e:#}"));
            }
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let _ = child.wait();
        }
        Err(e) => report.error = Some(format!("n/a: {e:#}")),
    }
    report
}

fn start(dir: &Path) -> anyhow::Result<(Child, String)> {
    let (http, rpc) = (free_port()?, free_port()?);
    let d = dir.display();
    let config = format!(
        "reporting-disabled = true\nbind-address = \"127.0.0.1:{rpc}\"\n\n[meta]\n  dir = \"{d}/meta\"\n\n\
         [data]\n  dir = \"{d}/data\"\n  wal-dir = \"{d}/wal\"\n  query-log-enabled = false\n  \
         cache-snapshot-write-cold-duration = \"2s\"\n\n[http]\n  bind-address = \"127.0.0.1:{http}\"\n  \
         log-enabled = false\n  max-body-size = 0\n\n[monitor]\n  store-enabled = false\n\n\
         [continuous_queries]\n  enabled = false\n\n[subscriber]\n  enabled = false\n"
    );
    let path = dir.join("influxdb.conf");
    std::fs::write(&path, config)?;
    let log = std::fs::File::create(dir.join("influxd.log"))?;
    let child = Command::new("influxd")
        .arg("-config")
        .arg(&path)
        .stdout(Stdio::from(log.try_clone()?))
        .stderr(Stdio::from(log))
        .spawn()
        .map_err(|e| anyhow::anyhow!("influxd: {e} (apt-get install influxdb)"))?;
    Ok((child, format!("http://127.0.0.1:{http}")))
}

async fn run(ctx: &Ctx, dir: &Path, base: &str, report: &mut SystemReport) -> anyhow::Result<()> {
    wait_ready(&ctx.http, &format!("{base}/ping"), 60).await?;
    let r = ctx.http.post(format!("{base}/query?q={}", enc("CREATE DATABASE fleet"))).send().await?;
    anyhow::ensure!(r.status().is_success(), "CREATE DATABASE: {}", r.status());
    report.load = Some(load_http(ctx, &format!("{base}/write?db=fleet&precision=ns")).await);
    // Flush: there is no flush call in 1.x; wait until the cold cache is snapshotted to TSM and
    // the WAL segments are gone (or 60 s).
    let deadline = Instant::now() + Duration::from_secs(60);
    tokio::time::sleep(Duration::from_secs(3)).await;
    while super::dir_size(&dir.join("wal")) > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    report.bytes = Some(super::dir_size(&dir.join("data")) + super::dir_size(&dir.join("wal")));
    let mut values = 0;
    for table in ["readings", "diagnostics"] {
        let (v, _) = super::timed(ctx.http.get(query_url(base, &format!("SELECT count(*) FROM \"{table}\"")))).await?;
        let row = &v["results"][0]["series"][0]["values"][0];
        values += row.as_array().into_iter().flatten().skip(1).filter_map(Value::as_u64).sum::<u64>();
    }
    report.values_stored = Some(values);
    for q in &ctx.queries {
        let r = match &q.influx {
            Err(why) => super::QueryResult { note: Some(format!("n/a: {why}")), ..Default::default() },
            Ok(iql) => {
                let url = query_url(base, iql);
                let mut r = time_http(ctx.args.runs, || ctx.http.get(&url)).await;
                if let Some(a) = r.answer.take() {
                    let v: Value = serde_json::from_str(a[0][0].as_deref().unwrap_or("null"))?;
                    if let Some(e) = v["results"][0]["error"].as_str() {
                        r = super::QueryResult { note: Some(format!("n/a: {e}")), ..Default::default() };
                    } else {
                        r.rows = Some(count_rows(&v));
                    }
                }
                r
            }
        };
        report.queries.push(r);
    }
    Ok(())
}

fn query_url(base: &str, q: &str) -> String {
    format!("{base}/query?db=fleet&epoch=ns&q={}", enc(q))
}

/// Rows over all series of the first result.
fn count_rows(v: &Value) -> usize {
    v["results"][0]["series"].as_array().into_iter().flatten().map(|s| s["values"].as_array().map_or(0, Vec::len)).sum()
}
