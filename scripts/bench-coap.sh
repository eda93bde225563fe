#!/usr/bin/env bash
# CoAP benchmark (issue 5): builds release binaries, installs libcoap3-bin if missing (its
# coap-server is the peer), then runs `corral-bench coap`: many sensors, one JSON reading per
# message, Confirmable and Non-confirmable, against a fresh Corral (2.04 after the fsync; rows
# counted by SQL afterwards) and libcoap's coap-server (PUT /example_data, in memory), side by side.
#
#   scripts/bench-coap.sh [corral-bench coap options]   e.g. --clients 200 --runs 5 --json
#
# With --dtls first it runs `corral-bench coaps` instead, against coap-server-openssl (see
# scripts/bench-coaps.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
workload=coap
if [ "${1:-}" = --dtls ]; then
  workload=coaps
  shift
fi
# Installs libcoap3-bin if missing (scripts/bench-deps.sh).
. scripts/bench-deps.sh
install_libcoap
cargo build --release --locked -p corral -p corral-bench
export CORRAL_BENCH_DIR="${CORRAL_BENCH_DIR:-$PWD/target/bench}"
mkdir -p "$CORRAL_BENCH_DIR"
target="${CARGO_TARGET_DIR:-target}"
exec "$target/release/corral-bench" "$workload" --corral "$target/release/corral" "$@"
