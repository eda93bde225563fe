#!/usr/bin/env bash
# MQTT broker benchmark against Mosquitto 2.0 (issue 4): installs mosquitto from the Debian package
# if missing (needs root), builds release binaries, then runs `corral-bench mqtt`, which starts
# Corral and Mosquitto itself on free loopback ports (Mosquitto with a minimal config: one
# listener, allow_anonymous true, persistence off as shipped) and prints a table of medians.
#
#   scripts/bench-mqtt.sh [corral-bench mqtt options]
#   e.g. scripts/bench-mqtt.sh --quick
#        scripts/bench-mqtt.sh --scenarios fan-in-qos0,fan-in-qos1,idle,latency --idle 50000 --runs 3 --json
set -euo pipefail
cd "$(dirname "$0")/.."
# Installs mosquitto if missing and stops the system broker the package starts (scripts/bench-deps.sh).
. scripts/bench-deps.sh
install_mosquitto
cargo build --release --locked -p corral -p corral-bench
export CORRAL_BENCH_DIR="${CORRAL_BENCH_DIR:-$PWD/target/bench}"
mkdir -p "$CORRAL_BENCH_DIR"
target="${CARGO_TARGET_DIR:-target}"
# Many idle connections need file descriptors; the benchmark raises its own limit (and its
# brokers inherit it), which needs root or a high enough hard limit.
exec "$target/release/corral-bench" mqtt --corral "$target/release/corral" "$@"
