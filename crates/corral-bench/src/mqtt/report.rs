//! The MQTT benchmark's output: one row per figure with each broker's median over the runs and
//! the ratio Corral ÷ Mosquitto, then the remarks of every run; or one JSON object.

use super::stats::median;
use super::{BrokerResults, MqttArgs, Sizes};
use serde_json::{Value, json};

fn fmt(v: Option<f64>) -> String {
    match v {
        None => "n/a".into(),
        Some(v) if v.is_nan() => "n/a".into(),
        Some(v) if v.abs() >= 100.0 => format!("{v:.0}"),
        Some(v) if v.abs() >= 1.0 => format!("{v:.2}"),
        Some(v) => format!("{v:.3}"),
    }
}

pub fn print(args: &MqttArgs, sizes: &Sizes, nofile: u64, results: &[BrokerResults]) {
    let mut keys: Vec<(String, String)> = Vec::new();
    for r in results {
        for k in &r.order {
            if !keys.iter().any(|(key, _)| key == &k.0) {
                keys.push(k.clone());
            }
        }
    }
    let med = |r: &BrokerResults, key: &str| r.values.get(key).and_then(|v| median(v.clone()));
    let corral = results.iter().find(|r| r.name == "corral");
    let peer = results.iter().find(|r| r.name == "mosquitto");
    let ratio = |key: &str| {
        let (c, p) = (med(corral?, key)?, med(peer?, key)?);
        (p != 0.0 && p.is_finite() && c.is_finite()).then_some(c / p)
    };
    let workload = json!({
        "clients": sizes.clients, "seconds": sizes.seconds, "window": sizes.window, "idle": sizes.idle,
        "rate": sizes.rate, "latency_seconds": sizes.latency_seconds, "runs": sizes.runs,
        "scenarios": args.scenarios, "rlimit_nofile": nofile,
        "mosquitto_config": "listener <port> 127.0.0.1; allow_anonymous true; persistence off (default)",
    });
    if args.json {
        println!("{}", results_json(workload, &keys, results, ratio));
        return;
    }
    println!(
        "\nMQTT benchmark: {} clients, {} s per throughput scenario, window {}, {} idle connections, \
         latency at {} msg/s for {} s; medians of {} runs (fresh broker each run)",
        sizes.clients, sizes.seconds, sizes.window, sizes.idle, sizes.rate, sizes.latency_seconds, sizes.runs
    );
    let mut header = format!("{:<56}", "figure");
    for r in results {
        header += &format!(" {:>14}", r.name);
    }
    if corral.is_some() && peer.is_some() {
        header += &format!(" {:>14}", "corral/mosq");
    }
    println!("{header}");
    println!("{}", "-".repeat(header.chars().count()));
    for (key, label) in &keys {
        let mut line = format!("{label:<56}");
        for r in results {
            line += &format!(" {:>14}", fmt(med(r, key)));
        }
        if corral.is_some() && peer.is_some() {
            line += &format!(" {:>14}", fmt(ratio(key)));
        }
        println!("{line}");
    }
    println!("\nratio Corral ÷ Mosquitto: above 1 is better for rates, below 1 for latency and RSS");
    println!(
        "Mosquitto 2.0: listener on loopback, allow_anonymous true, persistence off (as shipped): QoS 1 is acknowledged from memory;"
    );
    println!(
        "Corral: fan-in and latency publish as registered devices (QoS 1 PUBACK after WAL fsync); fan-out, pairs and idle use --mqtt-allow-anonymous"
    );
    let any_notes = results.iter().any(|r| !r.notes.is_empty());
    if any_notes {
        println!("\nnotes:");
        for r in results {
            for n in &r.notes {
                println!("  {}: {}", r.name, n);
            }
        }
    }
}

/// The `--json` document of a side-by-side run: the workload, each figure's median and runs per
/// system with its ratio Corral ÷ Mosquitto, and each system's remarks.
pub(crate) fn results_json(
    workload: Value,
    keys: &[(String, String)],
    results: &[BrokerResults],
    ratio: impl Fn(&str) -> Option<f64>,
) -> Value {
    let figures: Vec<Value> = keys
        .iter()
        .map(|(key, label)| {
            let mut o = json!({"key": key, "label": label, "corral_over_mosquitto": ratio(key)});
            for r in results {
                let median = r.values.get(key.as_str()).and_then(|v| median(v.clone()));
                o[&r.name] = json!({"median": median, "runs": r.values.get(key.as_str())});
            }
            o
        })
        .collect();
    let notes: serde_json::Map<String, Value> = results.iter().map(|r| (r.name.clone(), json!(r.notes))).collect();
    json!({"workload": workload, "figures": figures, "notes": notes})
}
