//! PostgreSQL (Debian `postgresql`) in the fleet benchmark: a cluster made here with `initdb` and
//! started with `pg_ctl` as the `postgres` user (when run as root) in a directory under the bench
//! dir, on a free loopback port, default durability (`fsync`, `synchronous_commit` on). Schema as
//! in TSBS's TimescaleDB loader without the extension: tag columns on each table, indexes on
//! (name, time DESC), (fleet, time DESC) and (time DESC). Loaded with `COPY ... FROM STDIN CSV`,
//! one `psql` per client writer, one COPY (own transaction) per batch; then CHECKPOINT and ANALYZE.
//! Queries through `psql` with `\timing` (server round trip, not process start-up).

use super::queries::Cell;
use super::{Ctx, LoadResult, QueryResult, SystemReport, free_port};
use anyhow::Context;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

const SCHEMA: &str = "
CREATE TABLE readings (time timestamptz NOT NULL, name text, fleet text, driver text, model text,
  device_version text, load_capacity double precision, fuel_capacity double precision,
  nominal_fuel_consumption double precision, latitude double precision, longitude double precision,
  elevation double precision, velocity double precision, heading double precision,
  grade double precision, fuel_consumption double precision);
CREATE TABLE diagnostics (time timestamptz NOT NULL, name text, fleet text, driver text, model text,
  device_version text, load_capacity double precision, fuel_capacity double precision,
  nominal_fuel_consumption double precision, fuel_state double precision,
  current_load double precision, status bigint);
CREATE INDEX ON readings (name, time DESC);
CREATE INDEX ON readings (fleet, time DESC);
CREATE INDEX ON readings (time DESC);
CREATE INDEX ON diagnostics (name, time DESC);
CREATE INDEX ON diagnostics (fleet, time DESC);
CREATE INDEX ON diagnostics (time DESC);
";
const NULL: &str = "\u{1}NULL\u{1}";

struct Pg {
    bin: PathBuf,
    data: PathBuf,
    port: u16,
}

pub async fn bench(ctx: &Ctx, dir: &Path) -> SystemReport {
    let mut report =
        SystemReport { name: "postgresql", bytes_note: "pg_total_relation_size of both tables", ..Default::default() };
    let pg = match start(dir) {
        Ok(pg) => pg,
        Err(e) => return SystemReport { error: Some(format!("n/a: {e:#}")), ..report },
    };
    if let Err(e) = run(ctx, &pg, &mut report) {
        report.error = Some(format!("{e:#}"));
    }
    let _ = as_postgres(&pg.bin.join("pg_ctl")).args(["stop", "-m", "fast", "-D"]).arg(&pg.data).stdout(Stdio::null()).status();
    report
}

fn as_postgres(program: &Path) -> Command {
    if unsafe { libc::geteuid() } == 0 {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

fn pg_bin() -> anyhow::Result<PathBuf> {
    let mut bins: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .context("/usr/lib/postgresql (apt-get install postgresql)")?
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|b| b.join("initdb").exists())
        .collect();
    bins.sort();
    bins.pop().context("no initdb under /usr/lib/postgresql/*/bin")
}

fn start(dir: &Path) -> anyhow::Result<Pg> {
    let bin = pg_bin()?;
    let data = dir.join("data");
    std::fs::create_dir_all(&data)?;
    if unsafe { libc::geteuid() } == 0 {
        let ok = Command::new("chown").args(["-R", "postgres:"]).arg(dir).status()?.success();
        anyhow::ensure!(ok, "chown postgres {}", dir.display());
    }
    let out = as_postgres(&bin.join("initdb"))
        .args(["-U", "postgres", "--auth=trust", "--no-locale", "-E", "UTF8", "-D"])
        .arg(&data)
        .output()?;
    anyhow::ensure!(out.status.success(), "initdb: {}", String::from_utf8_lossy(&out.stderr));
    let port = free_port()?;
    let opts = format!("-p {port} -k {} -c listen_addresses=127.0.0.1", data.display());
    let out = as_postgres(&bin.join("pg_ctl"))
        .args(["start", "-w", "-l"])
        .arg(dir.join("postgres.log"))
        .args(["-o", &opts, "-D"])
        .arg(&data)
        .output()?;
    anyhow::ensure!(out.status.success(), "pg_ctl start: {}", String::from_utf8_lossy(&out.stderr));
    let pg = Pg { bin, data, port };
    psql(&pg, "postgres", "CREATE DATABASE bench")?;
    psql(&pg, "bench", SCHEMA)?;
    Ok(pg)
}

fn psql_cmd(pg: &Pg, db: &str) -> Command {
    let mut c = Command::new(pg.bin.join("psql"));
    c.args(["-X", "-q", "-h", "127.0.0.1", "-U", "postgres", "-v", "ON_ERROR_STOP=1", "-p"])
        .arg(pg.port.to_string())
        .args(["-d", db])
        .env("PGTZ", "UTC");
    c
}

/// Runs `sql`; returns unaligned output, fields separated by U+001F, NULL as [`NULL`].
fn psql(pg: &Pg, db: &str, sql: &str) -> anyhow::Result<String> {
    let out = psql_cmd(pg, db).args(["-At", "-F", "\u{1f}", "-P"]).arg(format!("null={NULL}")).args(["-c", sql]).output()?;
    anyhow::ensure!(out.status.success(), "psql: {}", String::from_utf8_lossy(&out.stderr));
    Ok(String::from_utf8(out.stdout)?)
}

fn run(ctx: &Ctx, pg: &Pg, report: &mut SystemReport) -> anyhow::Result<()> {
    report.load = Some(load(ctx, pg));
    psql(pg, "bench", "CHECKPOINT")?;
    psql(pg, "bench", "ANALYZE")?;
    let size = psql(pg, "bench", "SELECT pg_total_relation_size('readings') + pg_total_relation_size('diagnostics')")?;
    report.bytes = Some(size.trim().parse()?);
    let count = |f: &[&str]| f.iter().map(|f| format!("count({f})")).collect::<Vec<_>>().join(" + ");
    let (mut rows, mut values) = (0, 0);
    for (table, fields) in [("readings", &crate::fleet::READINGS[..]), ("diagnostics", &crate::fleet::DIAGNOSTICS[..])] {
        let out = psql(pg, "bench", &format!("SELECT count(*), {} FROM {table}", count(fields)))?;
        let mut it = out.trim().split('\u{1f}').map(|x| x.parse::<u64>().unwrap_or(0));
        rows += it.next().unwrap_or(0);
        values += it.next().unwrap_or(0);
    }
    (report.rows_stored, report.values_stored) = (Some(rows), Some(values));
    for q in &ctx.queries {
        report.queries.push(
            query(pg, &q.postgres, ctx.args.runs)
                .unwrap_or_else(|e| QueryResult { note: Some(format!("n/a: {e:#}")), ..Default::default() }),
        );
    }
    Ok(())
}

fn load(ctx: &Ctx, pg: &Pg) -> LoadResult {
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..ctx.args.concurrency)
        .map(|_| {
            let (next, batches) = (next.clone(), ctx.batches.clone());
            let mut cmd = psql_cmd(pg, "bench");
            std::thread::spawn(move || -> (u64, u64, u64, Option<String>) {
                let mut child = match cmd.args(["-f", "-"]).stdin(Stdio::piped()).stderr(Stdio::piped()).spawn() {
                    Ok(c) => c,
                    Err(e) => return (0, 0, 1, Some(e.to_string())),
                };
                let mut stdin = child.stdin.take().expect("piped");
                let (mut rows, mut values, mut sent) = (0, 0, 0);
                while let Some(b) = batches.get(next.fetch_add(1, Ordering::Relaxed)) {
                    let text = format!("COPY {} FROM STDIN WITH (FORMAT csv);\n{}\\.\n", b.table, b.csv);
                    if stdin.write_all(text.as_bytes()).is_err() {
                        break;
                    }
                    (rows, values, sent) = (rows + b.rows, values + b.values, sent + 1);
                }
                drop(stdin);
                match child.wait_with_output() {
                    Ok(o) if o.status.success() => (rows, values, 0, None),
                    Ok(o) => (0, 0, sent, Some(String::from_utf8_lossy(&o.stderr).into_owned())),
                    Err(e) => (0, 0, sent, Some(e.to_string())),
                }
            })
        })
        .collect();
    let mut r = LoadResult::default();
    for w in workers {
        let (rows, values, failed, err) = w.join().unwrap_or((0, 0, 1, Some("writer panicked".into())));
        (r.rows, r.values, r.failed_batches) = (r.rows + rows, r.values + values, r.failed_batches + failed);
        if r.first_error.is_none() {
            r.first_error = err;
        }
    }
    r.seconds = started.elapsed().as_secs_f64();
    r
}

/// The answer once, then `runs` timed executions (after a warm-up) in one psql session.
fn query(pg: &Pg, sql: &str, runs: usize) -> anyhow::Result<QueryResult> {
    let answer: Vec<Vec<Cell>> = psql(pg, "bench", sql)?
        .lines()
        .map(|l| l.split('\u{1f}').map(|c| if c == NULL { None } else { Some(c.to_string()) }).collect())
        .collect();
    let script = format!("\\o /dev/null\n{sql};\n\\timing on\n{}", format!("{sql};\n").repeat(runs));
    let mut child = psql_cmd(pg, "bench").args(["-f", "-"]).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn()?;
    child.stdin.take().expect("piped").write_all(script.as_bytes())?;
    let out = child.wait_with_output()?;
    anyhow::ensure!(out.status.success(), "psql timing run failed");
    let times: Vec<f64> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.strip_prefix("Time: ")?.split_whitespace().next()?.parse().ok())
        .collect();
    anyhow::ensure!(times.len() == runs, "expected {runs} timings from psql, got {}", times.len());
    Ok(QueryResult { median_ms: super::median(times), rows: Some(answer.len()), answer: Some(answer), note: None })
}
