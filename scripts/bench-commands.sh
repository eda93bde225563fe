#!/usr/bin/env bash
# Tracked command round trip against Mosquitto 2.0 (issue 18): installs mosquitto from the
# Debian package if missing (needs root), builds release binaries, then runs
# `corral-bench commands`, which starts Corral and Mosquitto itself on free loopback ports, afresh
# for every run, connects 1,000 answering devices to each, sends commands at 50/s (Corral: REST
# POST with "wait"; Mosquitto: a QoS 1 request and a QoS 1 answer between two clients) and prints
# the round trip p50/p99/max, what was answered or received twice, and the medians with the ratio
# Corral ÷ Mosquitto.
#
#   scripts/bench-commands.sh [corral-bench commands options]
#   e.g. scripts/bench-commands.sh --quick                  # 100 devices, 200 commands, 3 runs
#        scripts/bench-commands.sh --devices 1000 --commands 1000 --rate 50 --runs 5 --json
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/bench-deps.sh
install_mosquitto
cargo build --release --locked -p corral -p corral-bench
export CORRAL_BENCH_DIR="${CORRAL_BENCH_DIR:-$PWD/target/bench}"
mkdir -p "$CORRAL_BENCH_DIR"
target="${CARGO_TARGET_DIR:-target}"
exec "$target/release/corral-bench" commands --corral "$target/release/corral" "$@"
