//! The output of a benchmark that runs Corral and one peer side by side, afresh per run: each
//! run's main figures, then one row per figure with each system's median over the runs and the
//! ratio Corral ÷ peer, the headline ratios and the remarks of every run; or, with `--json`, one
//! object holding all of it (the shape `mqtt::report::results_json` gives every such benchmark).

use crate::mqtt::BrokerResults;
use crate::mqtt::stats::median;
use serde_json::Value;

/// How one benchmark's results are laid out.
pub struct Layout<'a> {
    /// The first line: what was measured, with the workload's sizes.
    pub title: String,
    /// The columns of the per-run table: (key, heading). The first key counts the runs.
    pub per_run: &'a [(&'a str, &'a str)],
    /// Keys starting with this are counts, printed as whole numbers.
    pub count_prefix: &'a str,
    /// The peer's name in the results (`mosquitto`, ...).
    pub peer: &'a str,
    /// Figures whose ratio is the result: (key, short name), printed on the headline.
    pub headline: &'a [(&'a str, &'a str)],
    /// Lines after the headline: how each system was driven and configured.
    pub footer: Vec<String>,
    /// The workload, for `--json`.
    pub workload: Value,
}

fn fmt(v: Option<f64>) -> String {
    match v {
        Some(v) if v.is_finite() && v.abs() >= 100.0 => format!("{v:.0}"),
        Some(v) if v.is_finite() && v.abs() >= 1.0 => format!("{v:.2}"),
        Some(v) if v.is_finite() => format!("{v:.3}"),
        _ => "n/a".into(),
    }
}

fn med(r: &BrokerResults, key: &str) -> Option<f64> {
    r.values.get(key).and_then(|v| median(v.clone()))
}

pub fn print(layout: &Layout, json: bool, results: &[BrokerResults]) {
    let figure = |key: &str, v: Option<f64>| match v {
        Some(v) if key.starts_with(layout.count_prefix) && v.is_finite() => format!("{v:.0}"),
        _ => fmt(v),
    };
    let corral = results.iter().find(|r| r.name == "corral");
    let peer = results.iter().find(|r| r.name == layout.peer);
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
    if json {
        println!("{}", crate::mqtt::report::results_json(layout.workload.clone(), &keys, results, ratio));
        return;
    }
    println!("\n{}", layout.title);
    let mut header = format!("{:<10} {:>4}", "system", "run");
    for (_, heading) in layout.per_run {
        header += &format!(" {heading:>10}");
    }
    println!("\n{header}\n{}", "-".repeat(header.chars().count()));
    let runs_key = layout.per_run.first().map_or("", |(k, _)| *k);
    for r in results {
        for i in 0..r.values.get(runs_key).map_or(0, Vec::len) {
            let mut line = format!("{:<10} {:>4}", r.name, i + 1);
            for (key, _) in layout.per_run {
                line += &format!(" {:>10}", figure(key, r.values.get(*key).and_then(|v| v.get(i).copied())));
            }
            println!("{line}");
        }
    }

    let both = corral.is_some() && peer.is_some();
    let mut header = format!("\n{:<58}", "median over the runs");
    for r in results {
        header += &format!(" {:>12}", r.name);
    }
    if both {
        header += &format!(" {:>12}", format!("corral/{}", &layout.peer[..layout.peer.len().min(4)]));
    }
    println!("{header}\n{}", "-".repeat(header.chars().count() - 1));
    for (key, label) in &keys {
        let mut line = format!("{label:<58}");
        for r in results {
            line += &format!(" {:>12}", figure(key, med(r, key)));
        }
        if both {
            line += &format!(" {:>12}", fmt(ratio(key)));
        }
        println!("{line}");
    }
    if both {
        let ratios: Vec<String> = layout.headline.iter().map(|(k, name)| format!("{name} {} ×", fmt(ratio(k)))).collect();
        println!("\nCorral ÷ {}, medians: {} (below 1 is better for Corral)", layout.peer, ratios.join(", "));
    }
    for line in &layout.footer {
        println!("{line}");
    }
    if results.iter().any(|r| !r.notes.is_empty()) {
        println!("\nnotes:");
        for r in results {
            for n in &r.notes {
                println!("  {}: {n}", r.name);
            }
        }
    }
}

/// Runs `one(system)` for every system, `runs` times, alternating the order between runs (so a
/// slow phase of the shared machine does not always hit one side), and keeps each run's figures
/// and remarks; a failed run is a remark. Progress goes to stderr unless `quiet`.
pub async fn each_run<F, Fut>(systems: &[String], runs: usize, quiet: bool, mut one: F) -> Vec<BrokerResults>
where
    F: FnMut(String) -> Fut,
    Fut: Future<Output = anyhow::Result<crate::mqtt::Run>>,
{
    let mut results: Vec<BrokerResults> =
        systems.iter().map(|s| BrokerResults { name: s.clone(), ..Default::default() }).collect();
    for run in 1..=runs {
        let mut order: Vec<usize> = (0..results.len()).collect();
        if run % 2 == 0 {
            order.reverse();
        }
        for i in order {
            let res = &mut results[i];
            if !quiet {
                eprintln!("== run {run}/{runs}: {}", res.name);
            }
            match Box::pin(one(res.name.clone())).await {
                Ok((figures, notes)) => {
                    if !quiet {
                        for f in &figures {
                            eprintln!("   {:<60} {:>12.3}", f.label, f.value);
                        }
                        for n in &notes {
                            eprintln!("   note: {n}");
                        }
                    }
                    res.add(figures);
                    res.notes.extend(notes.into_iter().map(|n| format!("run {run}: {n}")));
                }
                Err(e) => {
                    eprintln!("   run {run} of {} failed: {e:#}", res.name);
                    res.notes.push(format!("run {run}: failed: {e:#}"));
                }
            }
        }
    }
    results
}
