#!/usr/bin/env bash
# Fleet benchmark against InfluxDB 1.x, VictoriaMetrics and PostgreSQL (issue 3): installs the
# peers from Debian packages if missing (needs root), builds release binaries, generates the
# deterministic truck fleet, then runs `corral-bench peers`, which starts every system itself on
# loopback with its data under $CORRAL_BENCH_DIR (default ./target/bench).
#
#   scripts/bench-peers.sh [--trucks N] [--hours H] [--seed S] [other corral-bench peers options]
#   e.g. scripts/bench-peers.sh --trucks 20 --hours 2 --concurrency 4 --json
set -euo pipefail
cd "$(dirname "$0")/.."
gen=()
peers=()
while [ $# -gt 0 ]; do
  case "$1" in
    --trucks|--hours|--seed|--start) gen+=("$1" "$2"); shift 2 ;;
    *) peers+=("$1"); shift ;;
  esac
done
missing=()
command -v influxd >/dev/null || missing+=(influxdb)
command -v victoria-metrics >/dev/null || missing+=(victoria-metrics)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
cargo build --release --locked -p corral -p corral-bench
export CORRAL_BENCH_DIR="${CORRAL_BENCH_DIR:-$PWD/target/bench}"
mkdir -p "$CORRAL_BENCH_DIR"
target="${CARGO_TARGET_DIR:-target}"
"$target/release/corral-bench" fleet-gen --out "$CORRAL_BENCH_DIR/fleet" "${gen[@]}" >&2
exec "$target/release/corral-bench" peers --corral "$target/release/corral" --data "$CORRAL_BENCH_DIR/fleet" "${peers[@]}"
