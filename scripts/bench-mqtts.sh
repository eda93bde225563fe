#!/usr/bin/env bash
# MQTTS connection set-up benchmark (issue 5): builds release binaries, then runs
# `corral-bench mqtts`: clients connecting over and over with a full TLS handshake (no
# resumption), CONNECT/CONNACK and DISCONNECT, against Corral with device tokens, Corral with
# client certificates (mTLS, a Corral CA), and Mosquitto 2.0 with TLS, side by side. Needs the
# openssl CLI and mosquitto (Debian packages).
#
#   scripts/bench-mqtts.sh [corral-bench mqtts options]   e.g. --clients 64 --runs 5 --json
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked -p corral -p corral-bench
export CORRAL_BENCH_DIR="${CORRAL_BENCH_DIR:-$PWD/target/bench}"
mkdir -p "$CORRAL_BENCH_DIR"
target="${CARGO_TARGET_DIR:-target}"
exec "$target/release/corral-bench" mqtts --corral "$target/release/corral" "$@"
