//! The twin benchmark's output: each run's main figures, then one row per figure with each
//! system's median over the runs and the ratio Corral ÷ Mosquitto, then the remarks of every run;
//! or, with `--json`, one object holding all of it.

use super::{Sizes, SystemResults, TwinArgs};
use crate::mqtt::stats::median;
use serde_json::json;

/// The columns of the per-run table: (key, heading).
const PER_RUN: [(&str, &str); 9] = [
    ("latency.p50", "p50 ms"),
    ("latency.p99", "p99 ms"),
    ("latency.max", "max ms"),
    ("ack.p50", "ack p50"),
    ("changes.delivered", "delivered"),
    ("changes.missing", "missing"),
    ("changes.duplicates", "dups"),
    ("broker.rss_peak", "RSS MiB"),
    ("broker.cpu", "CPU s"),
];

/// Counts print as whole numbers, other figures with three significant-ish digits.
fn fmt_figure(key: &str, v: Option<f64>) -> String {
    match v {
        Some(v) if key.starts_with("changes.") && v.is_finite() => format!("{v:.0}"),
        _ => fmt(v),
    }
}

fn fmt(v: Option<f64>) -> String {
    match v {
        Some(v) if v.is_finite() && v.abs() >= 100.0 => format!("{v:.0}"),
        Some(v) if v.is_finite() && v.abs() >= 1.0 => format!("{v:.2}"),
        Some(v) if v.is_finite() => format!("{v:.3}"),
        _ => "n/a".into(),
    }
}

fn med(r: &SystemResults, key: &str) -> Option<f64> {
    r.values.get(key).and_then(|v| median(v.clone()))
}

pub fn print(args: &TwinArgs, sizes: &Sizes, nofile: u64, results: &[SystemResults]) {
    let corral = results.iter().find(|r| r.name == "corral");
    let peer = results.iter().find(|r| r.name == "mosquitto");
    let ratio = |key: &str| {
        let (c, p) = (med(corral?, key)?, med(peer?, key)?);
        (p != 0.0 && p.is_finite() && c.is_finite()).then_some(c / p)
    };
    let mut keys: Vec<(String, String)> = Vec::new();
    for r in results {
        for k in &r.order {
            if !keys.iter().any(|(key, _)| key == &k.0) {
                keys.push(k.clone());
            }
        }
    }
    if args.json {
        let workload = json!({
            "devices": sizes.devices, "changes": sizes.changes, "rate": sizes.rate, "in_flight": sizes.in_flight,
            "runs": sizes.runs, "drain_seconds": sizes.drain.as_secs_f64(), "rlimit_nofile": nofile,
            "mosquitto_config": "listener <port> 127.0.0.1; allow_anonymous true; persistence off (default)",
        });
        println!("{}", crate::mqtt::report::results_json(workload, &keys, results, ratio));
        return;
    }
    println!(
        "\nTwin desired change → device delivery: {} devices connected (QoS 1), {} changes per run at {}/s, \
         {} in flight; {} runs, each system started afresh per run",
        sizes.devices, sizes.changes, sizes.rate, sizes.in_flight, sizes.runs
    );
    let mut header = format!("{:<10} {:>4}", "system", "run");
    for (_, heading) in PER_RUN {
        header += &format!(" {heading:>10}");
    }
    println!("\n{header}\n{}", "-".repeat(header.chars().count()));
    for r in results {
        let runs = r.values.get("latency.p50").map_or(0, Vec::len);
        for i in 0..runs {
            let mut line = format!("{:<10} {:>4}", r.name, i + 1);
            for (key, _) in PER_RUN {
                line += &format!(" {:>10}", fmt_figure(key, r.values.get(key).and_then(|v| v.get(i).copied())));
            }
            println!("{line}");
        }
    }

    let mut header = format!("\n{:<58}", "median over the runs");
    for r in results {
        header += &format!(" {:>12}", r.name);
    }
    let both = corral.is_some() && peer.is_some();
    if both {
        header += &format!(" {:>12}", "corral/mosq");
    }
    println!("{header}\n{}", "-".repeat(header.chars().count() - 1));
    for (key, label) in &keys {
        let mut line = format!("{label:<58}");
        for r in results {
            line += &format!(" {:>12}", fmt_figure(key, med(r, key)));
        }
        if both {
            line += &format!(" {:>12}", fmt(ratio(key)));
        }
        println!("{line}");
    }
    if both {
        println!(
            "\nCorral ÷ Mosquitto, medians: p50 {} ×, p99 {} × (below 1 is better for Corral)",
            fmt(ratio("latency.p50")),
            fmt(ratio("latency.p99"))
        );
    }
    println!(
        "Corral: PATCH /api/v1/devices/<id>/twin/desired (admin token; 200 once durable), published retained QoS 1 by the platform"
    );
    println!(
        "Mosquitto 2.0: one client publishes the same document retained QoS 1; listener on loopback, allow_anonymous true, persistence off (as shipped)"
    );
    if results.iter().any(|r| !r.notes.is_empty()) {
        println!("\nnotes:");
        for r in results {
            for n in &r.notes {
                println!("  {}: {n}", r.name);
            }
        }
    }
}
