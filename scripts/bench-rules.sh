#!/usr/bin/env bash
# Rules benchmark (issue 6): builds release binaries, then runs `corral-bench rules`, which starts
# its own Corral on loopback for each phase: ingest rate with 0, 10 and 100 active rules (medians
# of interleaved runs; rows counted by SQL afterwards), and publish-to-webhook latency at a steady
# 10,000 messages/s against a receiver inside the benchmark.
#
#   scripts/bench-rules.sh [corral-bench rules options]   e.g. --runs 5 --rate 5000 --json
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked -p corral -p corral-bench
export CORRAL_BENCH_DIR="${CORRAL_BENCH_DIR:-$PWD/target/bench}"
mkdir -p "$CORRAL_BENCH_DIR"
target="${CARGO_TARGET_DIR:-target}"
exec "$target/release/corral-bench" rules --corral "$target/release/corral" "$@"
