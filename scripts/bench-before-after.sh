#!/usr/bin/env bash
# Before/after benchmark: Corral at an earlier revision against Corral in the working tree, side
# by side in one sitting, on the ingest, MQTT fan-in and CoAP benchmarks, so that a refactor can
# show "no regression beyond noise against the commit before the change".
#
#   scripts/bench-before-after.sh REV [--rounds N] [--quick]
#   e.g. scripts/bench-before-after.sh HEAD~1              # 3 rounds at the benchmarks' default sizes
#        scripts/bench-before-after.sh 6fd3c3a --quick --rounds 1   # smoke test, about 2 minutes
#
# What it does:
# - installs Mosquitto and libcoap3-bin if missing (scripts/bench-deps.sh, as bench-mqtt.sh and
#   bench-coap.sh do);
# - "before": a git worktree of REV ($CORRAL_BEFORE_DIR, default /var/tmp/corral-before; created
#   if absent, moved to REV if it is clean and elsewhere, never deleted) built with
#   `cargo build --release --locked -p corral` into $CORRAL_BEFORE_TARGET (default
#   /var/tmp/corral-before-target). Cargo reuses the binary when it is up to date, and waits if
#   another build holds that target directory's lock;
# - "after": the working tree (committed or not), `cargo build --release --locked -p corral
#   -p corral-bench` into $CARGO_TARGET_DIR (default /var/tmp/corral-ci-target). That
#   corral-bench drives both sides;
# - then N rounds (default 3). In each round every benchmark runs once against each side, back to
#   back, before first in odd rounds and after first in even ones (so drift in the machine's load
#   does not always favour one side): `corral-bench ingest`, `corral-bench mqtt --scenarios
#   fan-in-qos0,fan-in-qos1` (starts Mosquitto too) and `corral-bench coap` (starts libcoap's
#   coap-server too), each with `--runs 1 --json`. Every run's JSON (stdout) and log (stderr) are
#   kept in $CORRAL_BENCH_DIR/before-after-<UTC timestamp>/ (CORRAL_BENCH_DIR defaults to
#   ./target/bench, where the servers' data directories go too), with commands.txt, runs.tsv and
#   summary.txt (the table below).
#
# --quick: short runs for a smoke test (ingest 3 s with 100 devices; mqtt --quick: 200 clients,
# 3 s per scenario; coap 2 s per case).
#
# Overrides (each skips the corresponding build): CORRAL_BEFORE_BIN, CORRAL_AFTER_BIN (corral
# binaries), CORRAL_BENCH_BIN (the corral-bench binary). With an override the revision printed
# for that side is still the one git reports, not necessarily what the binary was built from.
#
# Reading the output: one row per figure, with the median over the rounds for before and after,
# "spread" = (max - min) / median over the rounds for each side, and after/before (above 1 is
# better for every figure here: all are rates, or a rate's ratio to the peer). "vs Mosquitto" and
# "vs libcoap" rows are Corral's rate over the peer's in the same invocation, which cancels much
# of the machine's drift. The "noise yardstick" rows are the peers themselves: the same binary on
# both sides, so how far their after/before strays from 1.00, and the spreads, show how much
# difference is noise on this machine at this time. A change is "within noise" when Corral's
# after/before is no further from 1 than that. With one round there is no spread; use 3 or more
# for a claim. The exit status is 1 if any run failed (its figures are then missing).
set -euo pipefail
cd "$(dirname "$0")/.."

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }

rev=""
rounds=3
quick=0
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) rounds="${2:?--rounds needs a number}"; shift 2 ;;
    --rounds=*) rounds="${1#--rounds=}"; shift ;;
    --quick) quick=1; shift ;;
    -h|--help) usage; exit 0 ;;
    -*) echo "unknown option: $1" >&2; usage >&2; exit 2 ;;
    *)
      if [ -n "$rev" ]; then echo "one revision only (got $rev and $1)" >&2; exit 2; fi
      rev="$1"; shift ;;
  esac
done
if [ -z "$rev" ]; then usage >&2; exit 2; fi
case "$rounds" in ''|*[!0-9]*|0) echo "--rounds wants a positive integer, got '$rounds'" >&2; exit 2 ;; esac

repo="$PWD"
before_sha="$(git rev-parse --verify --quiet "$rev^{commit}")" || { echo "not a commit: $rev" >&2; exit 2; }
after_sha="$(git rev-parse HEAD)"
after_desc="$after_sha"
changed="$(git status --porcelain --untracked-files=no | wc -l)"
if [ "$changed" -gt 0 ]; then
  after_desc="$after_sha + uncommitted changes to $changed files (diff sha1 $(git diff HEAD | sha1sum | cut -c1-12))"
fi

# --- peers ------------------------------------------------------------------------------------
. scripts/bench-deps.sh
install_mosquitto
install_libcoap

# --- builds -----------------------------------------------------------------------------------
build_log=()
before_dir="${CORRAL_BEFORE_DIR:-/var/tmp/corral-before}"
before_target="${CORRAL_BEFORE_TARGET:-/var/tmp/corral-before-target}"
after_target="${CARGO_TARGET_DIR:-/var/tmp/corral-ci-target}"

if [ -n "${CORRAL_BEFORE_BIN:-}" ]; then
  before_bin="$CORRAL_BEFORE_BIN"
  build_log+=("before: CORRAL_BEFORE_BIN=$before_bin (not built here)")
else
  if [ -e "$before_dir" ]; then
    wt_common="$(cd "$before_dir" && realpath "$(git rev-parse --git-common-dir 2>/dev/null)" 2>/dev/null || true)"
    if [ "$wt_common" != "$(realpath "$(git rev-parse --git-common-dir)")" ]; then
      echo "$before_dir exists but is not a worktree of this repository; set CORRAL_BEFORE_DIR" >&2
      exit 1
    fi
    if [ -n "$(git -C "$before_dir" status --porcelain --untracked-files=no)" ]; then
      echo "$before_dir has uncommitted changes, so it is not $rev; clean it or set CORRAL_BEFORE_DIR" >&2
      exit 1
    fi
    if [ "$(git -C "$before_dir" rev-parse HEAD)" != "$before_sha" ]; then
      echo "== moving the worktree $before_dir to $before_sha" >&2
      git -C "$before_dir" checkout --quiet --detach "$before_sha"
      build_log+=("git -C $before_dir checkout --detach $before_sha")
    fi
  else
    echo "== creating the worktree $before_dir at $before_sha" >&2
    git worktree add --detach "$before_dir" "$before_sha" >&2
    build_log+=("git worktree add --detach $before_dir $before_sha")
  fi
  echo "== before: cargo build in $before_dir (a no-op when $before_target is up to date; waits for another build holding its lock)" >&2
  (cd "$before_dir" && CARGO_TARGET_DIR="$before_target" cargo build --release --locked -p corral)
  before_bin="$before_target/release/corral"
  build_log+=("(cd $before_dir && CARGO_TARGET_DIR=$before_target cargo build --release --locked -p corral)")
fi

after_pkgs=()
if [ -n "${CORRAL_AFTER_BIN:-}" ]; then
  after_bin="$CORRAL_AFTER_BIN"
  build_log+=("after: CORRAL_AFTER_BIN=$after_bin (not built here)")
else
  after_pkgs+=(-p corral)
  after_bin="$after_target/release/corral"
fi
if [ -n "${CORRAL_BENCH_BIN:-}" ]; then
  bench_bin="$CORRAL_BENCH_BIN"
  build_log+=("corral-bench: CORRAL_BENCH_BIN=$bench_bin (not built here)")
else
  after_pkgs+=(-p corral-bench)
  bench_bin="$after_target/release/corral-bench"
fi
if [ ${#after_pkgs[@]} -gt 0 ]; then
  echo "== after: cargo build in $repo" >&2
  CARGO_TARGET_DIR="$after_target" cargo build --release --locked "${after_pkgs[@]}"
  build_log+=("CARGO_TARGET_DIR=$after_target cargo build --release --locked ${after_pkgs[*]}")
fi
for b in "$before_bin" "$after_bin" "$bench_bin"; do
  [ -x "$b" ] || { echo "missing binary: $b" >&2; exit 1; }
done

# --- runs -------------------------------------------------------------------------------------
export CORRAL_BENCH_DIR="${CORRAL_BENCH_DIR:-$PWD/target/bench}"
mkdir -p "$CORRAL_BENCH_DIR"
CORRAL_BENCH_DIR="$(realpath "$CORRAL_BENCH_DIR")"
results="$CORRAL_BENCH_DIR/before-after-$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$results"

if [ "$quick" = 1 ]; then
  ingest_opts=(--seconds 3 --devices 100)
  mqtt_opts=(--quick)
  coap_opts=(--seconds 2)
else
  ingest_opts=()
  mqtt_opts=()
  coap_opts=()
fi

load_start="$(cut -d' ' -f1-3 /proc/loadavg)"
started_at="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
{
  echo "before  $rev = $before_sha"
  echo "after   $after_desc"
  echo "before binary  $before_bin"
  echo "after binary   $after_bin"
  echo "corral-bench   $bench_bin"
  echo "rounds $rounds, quick $quick, nproc $(nproc), load average at start $load_start"
  echo "started $started_at"
} >"$results/meta.txt"
printf 'round\tbench\tside\tstarted\tloadavg_1m\tseconds\texit\n' >"$results/runs.tsv"
: >"$results/commands.txt"

# Words as a shell would need them, quoted only where needed (so the commands read as typed).
shell_words() {
  local out=() w
  for w in "$@"; do
    if [[ "$w" =~ ^[A-Za-z0-9_./,=:@%+-]+$ ]]; then out+=("$w"); else out+=("$(printf '%q' "$w")"); fi
  done
  echo "${out[*]}"
}

failed=0
for round in $(seq 1 "$rounds"); do
  if [ $((round % 2)) = 1 ]; then order=(before after); else order=(after before); fi
  for bench in ingest mqtt coap; do
    for side in "${order[@]}"; do
      if [ "$side" = before ]; then bin="$before_bin"; else bin="$after_bin"; fi
      case "$bench" in
        ingest) cmd=("$bench_bin" ingest --corral "$bin" --runs 1 --json ${ingest_opts[@]+"${ingest_opts[@]}"}) ;;
        mqtt) cmd=("$bench_bin" mqtt --corral "$bin" --scenarios fan-in-qos0,fan-in-qos1 --runs 1 --json ${mqtt_opts[@]+"${mqtt_opts[@]}"}) ;;
        coap) cmd=("$bench_bin" coap --corral "$bin" --runs 1 --json ${coap_opts[@]+"${coap_opts[@]}"}) ;;
      esac
      out="$results/r$round-$bench-$side"
      echo "$(shell_words "${cmd[@]}") >$(shell_words "$out.json") 2>$(shell_words "$out.log")" >>"$results/commands.txt"
      echo "== round $round/$rounds: $bench, $side" >&2
      t0="$(date +%s)"
      load="$(cut -d' ' -f1 /proc/loadavg)"
      status=0
      "${cmd[@]}" >"$out.json" 2>"$out.log" || status=$?
      if [ "$status" != 0 ]; then
        failed=1
        echo "   FAILED (exit $status); last lines of $out.log:" >&2
        tail -n 5 "$out.log" | sed 's/^/   | /' >&2
      fi
      printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$bench" "$side" "$(date -u -d "@$t0" +%H:%M:%S)" \
        "$load" "$(($(date +%s) - t0))" "$status" >>"$results/runs.tsv"
      sleep 1
    done
  done
done
load_end="$(cut -d' ' -f1-3 /proc/loadavg)"

# --- report -----------------------------------------------------------------------------------
{
  echo "# Corral before/after benchmark, $started_at to $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo
  echo "before: $rev = $before_sha"
  echo "after:  $after_desc"
  echo "binaries: before $before_bin ($(date -u -r "$before_bin" +%Y-%m-%dT%H:%MZ)),"
  echo "          after $after_bin ($(date -u -r "$after_bin" +%Y-%m-%dT%H:%MZ)),"
  echo "          corral-bench $bench_bin ($(date -u -r "$bench_bin" +%Y-%m-%dT%H:%MZ))"
  echo "machine: nproc $(nproc), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'),"
  echo "         load average (1/5/15 min) $load_start at start, $load_end at the end"
  echo "$rounds round(s), $([ "$quick" = 1 ] && echo "--quick sizes" || echo "the benchmarks' default sizes"), one measurement per invocation; raw results in $results"
  echo
  echo "builds:"
  for line in "${build_log[@]}"; do echo "  $line"; done
  echo "commands (round 1; later rounds differ only in the output files and, every other round, the order;"
  echo "R=$results, all of them in R/commands.txt):"
  grep "/r1-" "$results/commands.txt" | sed "s|$results/|\$R/|g; s/^/  /"
  echo
  python3 - "$results" "$rounds" <<'PY'
import json, os, statistics, sys

results, rounds = sys.argv[1], int(sys.argv[2])

def load(rnd, bench, side):
    path = os.path.join(results, f"r{rnd}-{bench}-{side}.json")
    try:
        with open(path) as f:
            text = f.read().strip()
        # The JSON object is the last line of stdout.
        return json.loads(text.splitlines()[-1]) if text else None
    except (OSError, ValueError, IndexError):
        return None

def num(v):
    return v if isinstance(v, (int, float)) and v == v else None

def ratio(a, b):
    return a / b if a is not None and b not in (None, 0) else None

def ingest(d):
    return {"ingest.rows": num(d["median"]["rows_per_s"])}

def mqtt(d):
    out = {}
    for f in d.get("figures", []):
        if f["key"] in ("fan-in-qos0.rate", "fan-in-qos1.rate"):
            q = f["key"][len("fan-in-"):len("fan-in-qos0")]
            c = num((f.get("corral") or {}).get("median"))
            m = num((f.get("mosquitto") or {}).get("median"))
            out[f"mqtt.{q}"] = c
            out[f"mqtt.{q}.peer"] = m
            out[f"mqtt.{q}.ratio"] = ratio(c, m)
    return out

def coap(d):
    out, rates = {}, {}
    for c in d.get("cases", []):
        mode = {"Confirmable": "con", "NonConfirmable": "non"}.get(c["mode"], c["mode"])
        rates[(c["server"], mode)] = num(c.get("median_msgs_per_s"))
    for mode in ("con", "non"):
        c, p = rates.get(("corral", mode)), rates.get(("libcoap", mode))
        out[f"coap.{mode}"] = c
        out[f"coap.{mode}.peer"] = p
        out[f"coap.{mode}.ratio"] = ratio(c, p)
    return out

parsers = {"ingest": ingest, "mqtt": mqtt, "coap": coap}
values = {}  # (key, side) -> [per-round values]
remarks = []
for rnd in range(1, rounds + 1):
    for bench, parse in parsers.items():
        for side in ("before", "after"):
            d = load(rnd, bench, side)
            if d is None:
                remarks.append(f"round {rnd} {bench} {side}: no result (see r{rnd}-{bench}-{side}.log)")
                continue
            for k, v in parse(d).items():
                if v is not None:
                    values.setdefault((k, side), []).append(v)
            if bench == "ingest" and d.get("errors"):
                remarks.append(f"round {rnd} ingest {side}: {d['errors']} request errors")
            if bench == "mqtt":
                for broker, notes in (d.get("notes") or {}).items():
                    for n in notes:
                        remarks.append(f"round {rnd} mqtt {side}: {broker}: {n}")
            if bench == "coap":
                for c in d.get("cases", []):
                    if c["server"] == "corral" and c.get("stored", 0) < c.get("answered", 0):
                        remarks.append(f"round {rnd} coap {side}: {c['mode']}: {c['stored']} stored of {c['answered']} acknowledged")

rows = [
    ("ingest rows/s (durable acks)", "ingest.rows"),
    ("MQTT fan-in QoS 0 msg/s", "mqtt.qos0"),
    ("MQTT fan-in QoS 0 vs Mosquitto", "mqtt.qos0.ratio"),
    ("MQTT fan-in QoS 1 msg/s", "mqtt.qos1"),
    ("MQTT fan-in QoS 1 vs Mosquitto", "mqtt.qos1.ratio"),
    ("CoAP CON readings/s", "coap.con"),
    ("CoAP CON vs libcoap", "coap.con.ratio"),
    ("CoAP NON readings/s", "coap.non"),
    ("CoAP NON vs libcoap", "coap.non.ratio"),
    None,
    ("*noise yardstick: the peers*", None),
    ("Mosquitto fan-in QoS 0 msg/s", "mqtt.qos0.peer"),
    ("Mosquitto fan-in QoS 1 msg/s", "mqtt.qos1.peer"),
    ("libcoap CON readings/s", "coap.con.peer"),
    ("libcoap NON readings/s", "coap.non.peer"),
]

def fmt(v):
    if v is None:
        return "n/a"
    return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.3f}"

def spread(vs):
    if len(vs) < 2:
        return "-"
    m = statistics.median(vs)
    return f"{100 * (max(vs) - min(vs)) / m:.1f}%" if m else "n/a"

header = f"| {'figure':<38} | {'before':>10} | {'spread':>6} | {'after':>10} | {'spread':>6} | {'after/before':>12} |"
print(header)
print("|" + "|".join("-" * (len(c)) for c in header.split("|")[1:-1]) + "|")
for row in rows:
    if row is None:
        continue
    label, key = row
    if key is None:
        print(f"| {label:<38} | {'':>10} | {'':>6} | {'':>10} | {'':>6} | {'':>12} |")
        continue
    b, a = values.get((key, "before"), []), values.get((key, "after"), [])
    mb = statistics.median(b) if b else None
    ma = statistics.median(a) if a else None
    r = ratio(ma, mb)
    print(f"| {label:<38} | {fmt(mb):>10} | {spread(b):>6} | {fmt(ma):>10} | {spread(a):>6} | {('n/a' if r is None else f'{r:.3f}'):>12} |")
print()
n = max((len(v) for v in values.values()), default=0)
print(f"medians over {n} round(s); spread = (max - min) / median over the rounds; after/before above 1 is better.")
print("'vs' rows: Corral / the peer in the same invocation. Yardstick rows: the peers, the same binary on both sides,")
print("so their after/before and the spreads show this machine's noise right now.")
if remarks:
    print("\nremarks:")
    for r in remarks:
        print(f"  {r}")
PY
} | tee "$results/summary.txt"

if [ "$failed" != 0 ]; then
  echo "some runs failed: see runs.tsv and the .log files in $results" >&2
  exit 1
fi
