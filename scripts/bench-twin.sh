#!/usr/bin/env bash
# Device twin delivery benchmark against Mosquitto 2.0 (issue 18): installs mosquitto from the
# Debian package if missing (needs root), builds release binaries, then runs `corral-bench twin`,
# which starts Corral and Mosquitto itself on free loopback ports, afresh for every run, connects
# 10,000 devices to each (QoS 1 subscribers of their own desired topic), changes desired documents
# at 50/s (Corral: REST PATCH; Mosquitto: a retained QoS 1 PUBLISH of the same document) and
# prints delivery latency p50/p99/max, what was delivered, missing or duplicated, and the medians
# with the ratio Corral ÷ Mosquitto.
#
#   scripts/bench-twin.sh [corral-bench twin options]
#   e.g. scripts/bench-twin.sh --quick                      # 1,000 devices, 100 changes, 3 runs
#        scripts/bench-twin.sh --devices 10000 --changes 500 --rate 50 --runs 5 --json
set -euo pipefail
cd "$(dirname "$0")/.."
# Installs mosquitto if missing and stops the system broker the package starts (scripts/bench-deps.sh).
. scripts/bench-deps.sh
install_mosquitto
cargo build --release --locked -p corral -p corral-bench
export CORRAL_BENCH_DIR="${CORRAL_BENCH_DIR:-$PWD/target/bench}"
mkdir -p "$CORRAL_BENCH_DIR"
target="${CARGO_TARGET_DIR:-target}"
# 10,000 connections need file descriptors in this process and in each broker: the benchmark
# raises its own RLIMIT_NOFILE (the brokers inherit it) up to the hard limit, and says so if
# that is too low for --devices.
exec "$target/release/corral-bench" twin --corral "$target/release/corral" "$@"
