#!/usr/bin/env bash
# Ingest benchmark: builds release binaries, then runs `corral-bench ingest` (each run starts a
# fresh corral on port 0 in a data directory under $CORRAL_BENCH_DIR, default ./target/bench).
# Extra arguments go to corral-bench, e.g. `scripts/bench-ingest.sh --runs 5 --seconds 30`.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked -p corral -p corral-bench
export CORRAL_BENCH_DIR="${CORRAL_BENCH_DIR:-$PWD/target/bench}"
mkdir -p "$CORRAL_BENCH_DIR"
target="${CARGO_TARGET_DIR:-target}"
exec "$target/release/corral-bench" ingest --corral "$target/release/corral" "$@"
