//! The twin benchmark's output, laid out by [`crate::side_by_side`].

use super::{Sizes, SystemResults, TwinArgs};
use crate::side_by_side::{self, Layout};
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

pub fn print(args: &TwinArgs, sizes: &Sizes, nofile: u64, results: &[SystemResults]) {
    let layout = Layout {
        title: format!(
            "Twin desired change → device delivery: {} devices connected (QoS 1), {} changes per run at {}/s, \
             {} in flight; {} runs, each system started afresh per run",
            sizes.devices, sizes.changes, sizes.rate, sizes.in_flight, sizes.runs
        ),
        per_run: &PER_RUN,
        count_prefix: "changes.",
        peer: "mosquitto",
        headline: &[("latency.p50", "p50"), ("latency.p99", "p99")],
        footer: vec![
            "Corral: PATCH /api/v1/devices/<id>/twin/desired (admin token; 200 once durable), published retained QoS 1 by the platform".into(),
            "Mosquitto 2.0: one client publishes the same document retained QoS 1; listener on loopback, allow_anonymous true, persistence off (as shipped)".into(),
        ],
        workload: json!({
            "devices": sizes.devices, "changes": sizes.changes, "rate": sizes.rate, "in_flight": sizes.in_flight,
            "runs": sizes.runs, "drain_seconds": sizes.drain.as_secs_f64(), "rlimit_nofile": nofile,
            "mosquitto_config": "listener <port> 127.0.0.1; allow_anonymous true; persistence off (default)",
        }),
    };
    side_by_side::print(&layout, args.json, results);
}
