#!/usr/bin/env python3
"""Console performance with a large inventory (issue 7): registers N devices (default 100,000)
in a fresh Corral through the CSV import API, then times, as the console asks them, the
inventory's first page, a sorted page, filtered searches, and the delay from an acknowledged
reading to its live event on the device page's stream. Medians of several runs.

    scripts/bench-console.sh [--devices 100000] [--runs 11]
"""
import argparse, http.client, json, os, re, statistics, subprocess, sys, tempfile, threading, time

TOKEN = "bench-admin-token-0123456789"


def start(corral):
    data = tempfile.mkdtemp(prefix="corral-console-bench-")
    env = dict(os.environ, CORRAL_ADMIN_TOKEN=TOKEN, CORRAL_LOG="warn,corral::serve=info")
    proc = subprocess.Popen([corral, "serve", "--http", "127.0.0.1:0", "--mqtt", "off", "--coap", "off", "--coaps", "off",
                             "--data-dir", data], env=env, stderr=subprocess.PIPE, text=True)
    for line in proc.stderr:
        m = re.search(r"listening proto=http addr=(\S+)", line)
        if m:
            threading.Thread(target=lambda: [None for _ in proc.stderr], daemon=True).start()
            host, port = m.group(1).rsplit(":", 1)
            return proc, host, int(port)
    sys.exit("corral did not start")


def call(host, port, method, path, body=None, headers=None):
    conn = http.client.HTTPConnection(host, port, timeout=600)
    h = {"Authorization": f"Bearer {TOKEN}", **(headers or {})}
    started = time.perf_counter()
    conn.request(method, path, body=body, headers=h)
    response = conn.getresponse()
    data = response.read()
    took = time.perf_counter() - started
    conn.close()
    if response.status >= 300:
        sys.exit(f"{method} {path}: {response.status} {data[:200]!r}")
    return took, data


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--corral", required=True)
    ap.add_argument("--devices", type=int, default=100_000)
    ap.add_argument("--runs", type=int, default=11)
    args = ap.parse_args()
    proc, host, port = start(args.corral)
    try:
        sites = [f"site-{i:02}" for i in range(40)]
        profiles = ["reefer", "pump", "hvac", "meter", "truck"]
        started = time.perf_counter()
        for chunk in range(0, args.devices, 10_000):
            lines = ["id,profile,site,tenant,tags,attributes"]
            for i in range(chunk, min(chunk + 10_000, args.devices)):
                lines.append(f"dev-{i:06},{profiles[i % 5]},{sites[i % 40]},{'acme' if i % 3 else 'globex'},fleet;{'cold' if i % 7 == 0 else 'warm'},\"{{\"\"serial\"\": \"\"SN{i}\"\"}}\"")
            _, out = call(host, port, "POST", "/api/v1/devices/import", "\n".join(lines) + "\n", {"Content-Type": "text/csv"})
            report = json.loads(out)
            assert not report["rejected"], report["rejected"][:3]
        print(f"registered {args.devices:,} devices in {time.perf_counter() - started:.1f} s")
        queries = {
            "first page (50, by id)": "/api/v1/devices?limit=50&offset=0",
            "sorted page (site, descending)": "/api/v1/devices?limit=50&offset=0&sort=site&desc=true",
            "page 1000 by id": "/api/v1/devices?limit=50&offset=50000",
            "filter site + status": "/api/v1/devices?limit=50&offset=0&site=site-07&status=active",
            "filter tenant + profile + tag": "/api/v1/devices?limit=50&offset=0&tenant=acme&profile=pump&tag=cold",
            "text search (q=SN4242)": "/api/v1/devices?limit=50&offset=0&q=sn4242",
        }
        results = {}
        for name, path in queries.items():
            times = [call(host, port, "GET", path)[0] * 1000 for _ in range(args.runs)]
            results[name] = statistics.median(times)
            print(f"{name:34} median {results[name]:7.1f} ms   (min {min(times):.1f}, max {max(times):.1f}, {args.runs} runs)")
        # The overview's heaviest question, asked once per refresh: every grouping of the devices.
        overview = json.dumps({"sql": "SELECT status, profile, site, tenant, online, count(*) AS n, grouping(status), grouping(profile), "
                               "grouping(site), grouping(tenant), grouping(online) FROM devices "
                               "GROUP BY GROUPING SETS ((status), (profile), (site), (tenant), (status, online))"})
        times = [call(host, port, "POST", "/api/v1/query", overview, {"Content-Type": "application/json"})[0] * 1000 for _ in range(args.runs)]
        print(f"{'overview: all groupings (one SQL)':34} median {statistics.median(times):7.1f} ms   (min {min(times):.1f}, max {max(times):.1f}, {args.runs} runs)")
        # Live: open the device's stream, post a reading, time until its event arrives.
        _, out = call(host, port, "POST", "/api/v1/devices", json.dumps({"id": "live-1"}), {"Content-Type": "application/json"})
        device_token = json.loads(out)["token"]
        delays = []
        for _ in range(args.runs):
            stream = http.client.HTTPConnection(host, port, timeout=10)
            stream.request("GET", "/api/v1/devices/live-1/live", headers={"Authorization": f"Bearer {TOKEN}"})
            response = stream.getresponse()
            time.sleep(0.05)
            acked = {}
            def post():
                conn = http.client.HTTPConnection(host, port, timeout=10)
                conn.request("POST", "/api/v1/ingest", body='{"temperature": 5}', headers={"Authorization": f"Bearer {device_token}", "Content-Type": "application/json"})
                conn.getresponse().read()
                acked["at"] = time.perf_counter()
            threading.Thread(target=post).start()
            while True:
                line = response.fp.readline().decode()
                if line.startswith("data:"):
                    arrived = time.perf_counter()
                    break
            while "at" not in acked:
                time.sleep(0.001)
            delays.append((arrived - acked["at"]) * 1000)
            stream.close()
        print(f"{'live event after the ack':34} median {statistics.median(delays):7.1f} ms   (negative: the event came before the HTTP answer was read)")
    finally:
        proc.terminate()
        proc.wait()


main()
