//! Whole-system benchmarks: load generators that drive a real `corral` process over its public
//! interfaces and report throughput, durability cost and footprint. `corral-bench --help` lists
//! the workloads; `scripts/bench-*.sh` wrap them with the build and the peers.

pub mod campaign;
pub mod coap;
pub mod coaps;
pub mod commands;
pub mod fleet;
pub mod ingest;
pub mod mqtt;
pub mod mqtts;
pub mod paced;
pub mod peers;
pub mod rules;
pub mod server;
pub mod side_by_side;
pub mod twin;
