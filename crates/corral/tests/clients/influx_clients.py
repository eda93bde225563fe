"""Writes to Corral with the official InfluxDB Python clients, unchanged, as a user would.

Usage: influx_clients.py <base-url> <device-token> <api-token>
The device token writes through influxdb-client (v2 API, point objects and raw line protocol,
precision seconds; a retried write and a one-field overwrite); the API token writes through the v1 `influxdb` client (points for two
devices named by the `device` tag). The Rust test that runs this checks the rows with SQL.
"""

import sys

from influxdb import InfluxDBClient
from influxdb_client import InfluxDBClient as InfluxDBClientV2, Point, WritePrecision
from influxdb_client.client.write_api import SYNCHRONOUS

base, device_token, api_token = sys.argv[1], sys.argv[2], sys.argv[3]

with InfluxDBClientV2(url=base, token=device_token, org="acme") as client:
    write = client.write_api(write_options=SYNCHRONOUS)
    point = (
        Point("engine")
        .tag("model", "FH16")
        .field("rpm", 1450.5)
        .field("gear", 6)
        .field("running", True)
        .field("note", 'say "hi", ok')
        .time(1795255200, WritePrecision.S)
    )
    write.write(bucket="fleet", record=point, write_precision=WritePrecision.S)
    write.write(bucket="fleet", record="engine,model=FH16 rpm=1500.25,gear=7i 1795255260", write_precision=WritePrecision.S)
    # A client retrying after a timeout sends the same points again: they overwrite, as in InfluxDB.
    write.write(bucket="fleet", record=point, write_precision=WritePrecision.S)
    # A later write of one field of a point changes that field and keeps the others.
    write.write(bucket="fleet", record="engine,model=FH16 gear=8i 1795255260", write_precision=WritePrecision.S)
    # A measurement with a space, which the client escapes as `cabin\ air`.
    write.write(bucket="fleet", record=Point("cabin air").field("co2_ppm", 612.0).time(1795255200, WritePrecision.S),
                write_precision=WritePrecision.S)

host, port = base.removeprefix("http://").split(":")
v1 = InfluxDBClient(host=host, port=int(port), username="telegraf", password=api_token, database="metrics")
ok = v1.write_points(
    [
        {"measurement": "cpu", "tags": {"device": "web-1"}, "time": 1795255200000, "fields": {"usage": 12.5}},
        {"measurement": "cpu", "tags": {"device": "web-2"}, "time": 1795255200000, "fields": {"usage": 80.0}},
    ],
    time_precision="ms",
)
assert ok, "v1 write failed"
print("ok")
