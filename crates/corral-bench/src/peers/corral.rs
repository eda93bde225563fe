//! Corral in the fleet benchmark: line protocol at `/write?device_tag=name` with the admin token
//! (each truck is a device; every 204 is a durable ack), then SIGTERM (the buffer is persisted to
//! Parquet), bytes on disk measured, and a restart on the same data directory for the counts and
//! the queries, which therefore read what was persisted.

use super::queries::corral_rows;
use super::{Ctx, SystemReport, load_http, time_http};
use crate::server::{ADMIN_TOKEN, spawn, terminate};
use serde_json::{Value, json};
use std::path::Path;

pub async fn bench(ctx: &Ctx, dir: &Path) -> SystemReport {
    let mut report = SystemReport { name: "corral", bytes_note: "data dir after SIGTERM", ..Default::default() };
    if let Err(e) = run(ctx, dir, &mut report).await {
        report.error = Some(format!("{e:#}"));
    }
    report
}

async fn run(ctx: &Ctx, dir: &Path, report: &mut SystemReport) -> anyhow::Result<()> {
    let (mut child, base) = spawn(&ctx.args.corral, dir, &[])?;
    let url = format!("{base}/write?db=fleet&precision=ns&u=bench&p={ADMIN_TOKEN}&device_tag=name");
    let load = load_http(ctx, &url).await;
    report.load = Some(load);
    terminate(&mut child)?;
    report.bytes = Some(super::dir_size(dir));
    let (mut child, base) = spawn(&ctx.args.corral, dir, &[])?;
    let result = queries(ctx, &base, report).await;
    terminate(&mut child)?;
    result
}

async fn queries(ctx: &Ctx, base: &str, report: &mut SystemReport) -> anyhow::Result<()> {
    let count = |fields: &[&str]| fields.iter().map(|f| format!("count({f})")).collect::<Vec<_>>().join(" + ");
    let (mut rows, mut values) = (0, 0);
    for (table, fields) in [("readings", &crate::fleet::READINGS[..]), ("diagnostics", &crate::fleet::DIAGNOSTICS[..])] {
        let sql = format!("SELECT count(*), {} FROM {table}", count(fields));
        let v = sql_once(ctx, base, &sql).await?;
        rows += v["rows"][0][0].as_u64().unwrap_or(0);
        values += v["rows"][0][1].as_u64().unwrap_or(0);
    }
    (report.rows_stored, report.values_stored) = (Some(rows), Some(values));
    for q in &ctx.queries {
        let url = format!("{base}/api/v1/query");
        let mut r = time_http(ctx.args.runs, || {
            ctx.http.post(&url).bearer_auth(ADMIN_TOKEN).json(&json!({"sql": q.corral, "limit": 100000}))
        })
        .await;
        if let Some(a) = r.answer.take() {
            let v: Value = serde_json::from_str(a[0][0].as_deref().unwrap_or("null"))?;
            let rows = corral_rows(&v);
            if v["truncated"].as_bool() == Some(true) {
                r.note = Some("answer truncated".into());
            }
            r.rows = Some(rows.len());
            r.answer = Some(rows);
        }
        report.queries.push(r);
    }
    Ok(())
}

async fn sql_once(ctx: &Ctx, base: &str, sql: &str) -> anyhow::Result<Value> {
    let req = ctx.http.post(format!("{base}/api/v1/query")).bearer_auth(ADMIN_TOKEN).json(&json!({"sql": sql}));
    Ok(super::timed(req).await?.0)
}
