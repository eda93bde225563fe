#!/usr/bin/env bash
# Firmware campaign benchmark (issue 18): builds release binaries, then runs `corral-bench
# campaign`, which starts Corral on free loopback ports (afresh for every run), registers and
# connects 10,000 simulated devices over MQTT, uploads a 1 MiB artifact, measures telemetry ingest
# alone, then runs a campaign to every device (each downloads, checks SHA-256 and the Ed25519
# signature, and reports each step) with the same ingest going on, and prints the campaign's
# total time, server CPU and peak RSS, what every device did, and ingest during ÷ alone.
# No peer is installed: the comparison is Corral's ingest with and without a campaign.
#
#   scripts/bench-campaign.sh [corral-bench campaign options]
#   e.g. scripts/bench-campaign.sh --quick                  # 1,000 devices, 1 run
#        scripts/bench-campaign.sh --devices 10000 --artifact-kib 1024 --runs 3 --json
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked -p corral -p corral-bench
export CORRAL_BENCH_DIR="${CORRAL_BENCH_DIR:-$PWD/target/bench}"
mkdir -p "$CORRAL_BENCH_DIR"
target="${CARGO_TARGET_DIR:-target}"
exec "$target/release/corral-bench" campaign --corral "$target/release/corral" "$@"
