//! The fleet benchmark's output: a table per metric with every system's figure and the ratio
//! Corral ÷ peer, the MATCH/MISMATCH check of Corral's answers against PostgreSQL's, or JSON.

use super::queries::compare;
use super::{Ctx, SystemReport};
use serde_json::{Value, json};

fn load_rate(r: &SystemReport, values: bool) -> Option<f64> {
    let l = r.load.as_ref()?;
    (l.seconds > 0.0 && l.rows > 0).then(|| if values { l.values as f64 } else { l.rows as f64 } / l.seconds)
}

fn bytes_per_value(r: &SystemReport) -> Option<f64> {
    let values = r.values_stored.filter(|v| *v > 0)?;
    Some(r.bytes? as f64 / values as f64)
}

/// MATCH / MISMATCH (why) / n/a for each query.
fn checks(reports: &[SystemReport], n: usize) -> Vec<String> {
    let find = |name| reports.iter().find(|r| r.name == name);
    (0..n)
        .map(|i| {
            let a = find("corral").and_then(|r| r.queries.get(i)).and_then(|q| q.answer.clone());
            let b = find("postgresql").and_then(|r| r.queries.get(i)).and_then(|q| q.answer.clone());
            match (a, b) {
                (Some(a), Some(b)) => match compare(a, b) {
                    Ok(rows) => format!("MATCH ({rows} rows)"),
                    Err(why) => format!("MISMATCH: {why}"),
                },
                _ => "n/a (no answer from corral or postgresql)".into(),
            }
        })
        .collect()
}

fn fmt(v: Option<f64>, decimals: usize) -> String {
    v.map_or("n/a".into(), |v| format!("{v:.decimals$}"))
}

pub fn print(ctx: &Ctx, reports: &[SystemReport]) {
    let checks = checks(reports, ctx.queries.len());
    let corral = reports.iter().find(|r| r.name == "corral");
    let ratio = |f: &dyn Fn(&SystemReport) -> Option<f64>, peer: &SystemReport| -> Option<f64> {
        let (c, p) = (f(corral?)?, f(peer)?);
        (p > 0.0).then_some(c / p)
    };
    if ctx.args.json {
        let systems: Vec<Value> = reports
            .iter()
            .map(|r| {
                let l = r.load.clone().unwrap_or_default();
                json!({
                    "system": r.name, "error": r.error,
                    "load": {"seconds": l.seconds, "rows": l.rows, "values": l.values, "failed_batches": l.failed_batches, "first_error": l.first_error},
                    "rows_per_s": load_rate(r, false), "values_per_s": load_rate(r, true),
                    "rows_sent": ctx.rows, "values_sent": ctx.values,
                    "rows_stored": r.rows_stored, "values_stored": r.values_stored,
                    "bytes": r.bytes, "bytes_measured": r.bytes_note, "bytes_per_value": bytes_per_value(r),
                    "queries": ctx.queries.iter().zip(&r.queries).enumerate().map(|(i, (q, m))| json!({
                        "query": q.name, "median_ms": m.median_ms, "rows": m.rows, "note": m.note,
                        "corral_over_this": ratio(&|s: &SystemReport| s.queries.get(i)?.median_ms, r),
                    })).collect::<Vec<_>>(),
                    "corral_over_this": {
                        "rows_per_s": ratio(&|s| load_rate(s, false), r),
                        "values_per_s": ratio(&|s| load_rate(s, true), r),
                        "bytes_per_value": ratio(&bytes_per_value, r),
                    },
                })
            })
            .collect();
        let checks: Vec<Value> =
            ctx.queries.iter().zip(&checks).map(|(q, c)| json!({"query": q.name, "corral_vs_postgresql": c})).collect();
        println!(
            "{}",
            json!({"workload": {"rows": ctx.rows, "values": ctx.values, "concurrency": ctx.args.concurrency,
                   "batch": ctx.args.batch, "query_runs": ctx.args.runs, "rounds": ctx.args.rounds}, "systems": systems, "checks": checks})
        );
        return;
    }
    println!(
        "\nfleet benchmark: {} rows / {} values sent, {} client writers, {} rows per request; medians of {} rounds \
         (each a fresh start, load and queries); query latency per round = median of {} runs",
        ctx.rows, ctx.values, ctx.args.concurrency, ctx.args.batch, ctx.args.rounds, ctx.args.runs
    );
    let peers: Vec<&SystemReport> = reports.iter().filter(|r| r.name != "corral").collect();
    let mut header = format!("{:<66}", "metric");
    for r in reports {
        header += &format!(" {:>16}", r.name);
    }
    for p in &peers {
        header += &format!(" {:>14}", format!("C/{}", short(p.name)));
    }
    println!("{header}");
    println!("{}", "-".repeat(header.chars().count()));
    let row = |label: &str, f: &dyn Fn(&SystemReport) -> Option<f64>, dec: usize| {
        let mut line = format!("{label:<66}");
        for r in reports {
            line += &format!(" {:>16}", fmt(f(r), dec));
        }
        for p in &peers {
            line += &format!(" {:>14}", fmt(ratio(f, p), 2));
        }
        println!("{line}");
    };
    row("rows/s ingested (higher is better)", &|r| load_rate(r, false), 0);
    row("values/s ingested (higher is better)", &|r| load_rate(r, true), 0);
    row("values stored (sent: see header)", &|r| r.values_stored.map(|v| v as f64), 0);
    row("rows stored", &|r| r.rows_stored.map(|v| v as f64), 0);
    row("failed write batches", &|r| r.load.as_ref().map(|l| l.failed_batches as f64), 0);
    row("bytes on disk per value (lower is better)", &bytes_per_value, 2);
    for (i, q) in ctx.queries.iter().enumerate() {
        row(&format!("ms: {}", q.name), &|r| r.queries.get(i).and_then(|m| m.median_ms), 2);
    }
    println!("\nratios are Corral ÷ peer: above 1 is better for rows/s and values/s; below 1 is better for bytes and ms");
    println!("\nCorral's answers vs PostgreSQL's (sorted rows, floats within 1e-6):");
    for (i, (q, c)) in ctx.queries.iter().zip(&checks).enumerate() {
        let rows: Vec<String> = reports
            .iter()
            .map(|r| {
                format!("{} {}", short(r.name), r.queries.get(i).and_then(|m| m.rows).map_or("n/a".into(), |n| n.to_string()))
            })
            .collect();
        println!("  {:<66} {c}; answer rows: {}", q.name, rows.join(", "));
    }
    println!("\nnotes:");
    for r in reports {
        println!("  {}: bytes = {}", r.name, r.bytes_note);
        if let Some(e) = &r.error {
            println!("  {}: ERROR {e}", r.name);
        }
        if let Some(l) = &r.load
            && l.rows != ctx.rows
        {
            println!(
                "  {}: {} of {} rows acknowledged; first error: {}",
                r.name,
                l.rows,
                ctx.rows,
                l.first_error.as_deref().unwrap_or("-")
            );
        }
        if r.values_stored.is_some_and(|v| v != ctx.values) {
            println!("  {}: stored {} values of {} sent", r.name, r.values_stored.unwrap_or(0), ctx.values);
        }
        for (q, m) in ctx.queries.iter().zip(&r.queries) {
            if let Some(n) = &m.note {
                println!("  {}: {}: {}", r.name, q.name, n.chars().take(200).collect::<String>());
            }
        }
    }
}

fn short(name: &str) -> &str {
    match name {
        "influxdb" => "influx",
        "victoriametrics" => "vm",
        "postgresql" => "pg",
        other => other,
    }
}
