#!/usr/bin/env bash
# Console performance with 100,000 devices (issue 7): inventory pages and filtered searches as
# the console asks them, and the delay of a device page's live update. Release build.
#
#   scripts/bench-console.sh [--devices 100000] [--runs 11]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked -p corral
target="${CARGO_TARGET_DIR:-target}"
exec python3 scripts/bench-console.py --corral "$target/release/corral" "$@"
