#!/usr/bin/env bash
# Grafana-style dashboards through the PostgreSQL wire protocol (issue 22): Corral's PG door
# against PostgreSQL holding the same fleet, both queried with psycopg, answers compared.
# Installs PostgreSQL (Debian) and psycopg (PyPI) if missing, builds release binaries, generates
# the truck fleet (default 50 trucks x 7 days), loads it into both with `corral-bench peers`
# (which also prints the fleet comparison), then runs scripts/bench-pg.py on the loaded data.
#
#   scripts/bench-pg.sh [--trucks N] [--hours H] [--runs R] [--json]
set -euo pipefail
cd "$(dirname "$0")/.."
trucks=50 hours=168 runs=5 json=()
while [ $# -gt 0 ]; do
  case "$1" in
    --trucks) trucks=$2; shift 2 ;;
    --hours) hours=$2; shift 2 ;;
    --runs) runs=$2; shift 2 ;;
    --json) json=(--json); shift ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
fi
python3 -c "import psycopg" 2>/dev/null || python3 -m pip install -q --disable-pip-version-check "psycopg[binary]==3.3.9"
cargo build --release --locked -p corral -p corral-bench
export CORRAL_BENCH_DIR="${CORRAL_BENCH_DIR:-$PWD/target/bench}"
mkdir -p "$CORRAL_BENCH_DIR"
target="${CARGO_TARGET_DIR:-target}"
"$target/release/corral-bench" fleet-gen --out "$CORRAL_BENCH_DIR/fleet" --trucks "$trucks" --hours "$hours" >&2
"$target/release/corral-bench" peers --corral "$target/release/corral" --data "$CORRAL_BENCH_DIR/fleet" \
  --systems corral,postgresql --rounds 1 --runs 1 >&2
exec python3 scripts/bench-pg.py --corral "$target/release/corral" --dir "$CORRAL_BENCH_DIR/peers" --runs "$runs" "${json[@]}"
