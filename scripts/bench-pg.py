"""Grafana-style dashboard queries through the PostgreSQL wire protocol, Corral against PostgreSQL,
side by side (run by scripts/bench-pg.sh, which loads the same fleet into both first).

Each panel is the SQL Grafana sends after expanding $__timeGroupAlias and $__timeFilter: a time
bucket per truck (or per fleet) over the last 1 h, 24 h or 7 d of the data. Both systems are
queried by psycopg 3 over TCP, one connection each; runs alternate between them, each timed from
execute to the last row fetched. Answers are compared once (floats to 1e-6 relative): a system
that answers differently has no figure.

  bench-pg.py --corral BIN --dir PEERS_DIR [--runs N] [--json]
"""

import argparse
import json
import math
import os
import socket
import statistics
import subprocess
import sys
import time

import psycopg

TOKEN = "bench-admin-token-0123456789abcdef"  # corral-bench's, set when `peers` loaded the data


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_corral(binary, data_dir):
    port = free_port()
    log = open(os.path.join(data_dir, "bench-pg.log"), "w")
    child = subprocess.Popen(
        [binary, "serve", "--data-dir", data_dir, "--http", "127.0.0.1:0", "--mqtt", "off", "--coap", "off",
         "--pg", f"127.0.0.1:{port}", "--log", "warn"],
        env={**os.environ, "CORRAL_ADMIN_TOKEN": TOKEN}, stdout=subprocess.DEVNULL, stderr=log)
    deadline = time.monotonic() + 120
    while True:
        try:
            return child, psycopg.connect(host="127.0.0.1", port=port, user="token", password=TOKEN,
                                          dbname="corral", sslmode="disable", autocommit=True)
        except psycopg.OperationalError:
            if time.monotonic() > deadline or child.poll() is not None:
                sys.exit(f"corral did not open its PostgreSQL port; see {log.name}")
            time.sleep(0.5)


def as_postgres(args):
    return (["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []) + args


def start_postgres(pg_dir):
    bin_dir = sorted(d for d in (os.path.join("/usr/lib/postgresql", v, "bin") for v in os.listdir("/usr/lib/postgresql"))
                     if os.path.exists(os.path.join(d, "pg_ctl")))[-1]
    data, port = os.path.join(pg_dir, "data"), free_port()
    subprocess.run(as_postgres([os.path.join(bin_dir, "pg_ctl"), "start", "-w", "-l", os.path.join(pg_dir, "bench-pg.log"),
                                "-o", f"-p {port} -k {data} -c listen_addresses=127.0.0.1", "-D", data]),
                   check=True, stdout=subprocess.DEVNULL)
    conn = psycopg.connect(host="127.0.0.1", port=port, user="postgres", dbname="bench", autocommit=True)
    stop = lambda: subprocess.run(as_postgres([os.path.join(bin_dir, "pg_ctl"), "stop", "-m", "fast", "-D", data]),
                                  stdout=subprocess.DEVNULL)
    return stop, conn


def panels(end):
    """(name, Corral's SQL, PostgreSQL's SQL): Corral's truck column is `device`, PostgreSQL's `name`."""
    out = []
    for span_h, bucket_s in ((1, 60), (24, 600), (168, 3600)):
        start = end - span_h * 3600
        where = f"time BETWEEN '{iso(start)}' AND '{iso(end)}'"
        sql = ("SELECT floor(extract(epoch from time)/{b})*{b} AS \"time\", {t} AS metric, avg(velocity) AS velocity "
               "FROM readings WHERE {w} GROUP BY 1, 2 ORDER BY 1, 2")
        out.append((f"avg velocity per truck, last {span_h} h by {bucket_s // 60} min",
                    sql.format(b=bucket_s, t="device", w=where), sql.format(b=bucket_s, t="name", w=where)))
    start = end - 24 * 3600
    one = ("SELECT floor(extract(epoch from time)/60)*60 AS \"time\", avg(velocity) AS velocity, max(fuel_consumption) AS fuel "
           "FROM readings WHERE time BETWEEN '{s}' AND '{e}' AND {t} = 'truck_7' GROUP BY 1 ORDER BY 1")
    out.append(("one truck, last 24 h by 1 min", one.format(s=iso(start), e=iso(end), t="device"),
                one.format(s=iso(start), e=iso(end), t="name")))
    start = end - 168 * 3600
    fleet = ("SELECT floor(extract(epoch from time)/3600)*3600 AS \"time\", fleet AS metric, sum(fuel_consumption) AS fuel "
             "FROM readings WHERE time BETWEEN '{s}' AND '{e}' GROUP BY 1, 2 ORDER BY 1, 2")
    out.append(("fuel per fleet, last 7 d by 1 h", fleet.format(s=iso(start), e=iso(end)), fleet.format(s=iso(start), e=iso(end))))
    return out


def iso(epoch_s):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch_s))


def run(conn, sql):
    started = time.perf_counter()
    rows = conn.execute(sql).fetchall()
    return (time.perf_counter() - started) * 1000, rows


def same(a, b):
    if len(a) != len(b):
        return f"{len(a)} rows against {len(b)}"
    for i, (x, y) in enumerate(zip(a, b)):
        for u, v in zip(x, y):
            if isinstance(u, (int, float)) or isinstance(v, (int, float)) or hasattr(u, "as_tuple"):
                u, v = float(u), float(v)
                if not math.isclose(u, v, rel_tol=1e-6, abs_tol=1e-9):
                    return f"row {i}: {x} against {y}"
            elif u != v:
                return f"row {i}: {x} against {y}"
    return None


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--corral", required=True)
    p.add_argument("--dir", required=True, help="corral-bench peers' directory, with corral/ and postgresql/")
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    child, corral = start_corral(args.corral, os.path.join(args.dir, "corral"))
    stop_pg, postgres = start_postgres(os.path.join(args.dir, "postgresql"))
    try:
        end_pg = postgres.execute("SELECT extract(epoch from max(time)) FROM readings").fetchone()[0]
        end = int(math.ceil(float(end_pg) / 10) * 10)
        counts = [c.execute("SELECT count(*) FROM readings").fetchone()[0] for c in (corral, postgres)]
        results = []
        for name, corral_sql, pg_sql in panels(end):
            _, a = run(corral, corral_sql)  # warm-up, and the answers to compare
            _, b = run(postgres, pg_sql)
            differs = same(a, b)
            times = {"corral": [], "postgresql": []}
            for _ in range(args.runs):
                times["corral"].append(run(corral, corral_sql)[0])
                times["postgresql"].append(run(postgres, pg_sql)[0])
            med = {k: statistics.median(v) for k, v in times.items()}
            results.append({"panel": name, "rows": len(a), "corral_ms": med["corral"], "postgresql_ms": med["postgresql"],
                            "ratio": med["corral"] / med["postgresql"], "answers_differ": differs})
        if args.json:
            print(json.dumps({"rows_stored": {"corral": counts[0], "postgresql": counts[1]}, "panels": results}))
            return
        print(f"readings stored: corral {counts[0]:,}, postgresql {counts[1]:,}; medians of {args.runs} alternating runs, psycopg over TCP")
        print(f"{'panel':<46} {'rows':>6} {'corral ms':>10} {'postgres ms':>12} {'corral/pg':>10}  answers")
        for r in results:
            verdict = "equal" if r["answers_differ"] is None else f"DIFFER: {r['answers_differ']}"
            print(f"{r['panel']:<46} {r['rows']:>6} {r['corral_ms']:>10.1f} {r['postgresql_ms']:>12.1f} {r['ratio']:>10.2f}  {verdict}")
    finally:
        child.terminate()
        child.wait()
        stop_pg()


if __name__ == "__main__":
    main()
