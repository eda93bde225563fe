"""Reads back what a scheduled export wrote, as a consumer would: its manifest.json, then every
file it lists, with pyarrow (Parquet) or the csv module, and the same files again with DuckDB.
Prints JSON for crates/corral/tests/exports.rs to compare with the source table.

  exported_files.py dir FOLDER                         # a local export's folder
  exported_files.py s3 ENDPOINT BUCKET PREFIX          # an export in an S3 bucket (moto here)
  exported_files.py mkbucket ENDPOINT BUCKET           # creates the bucket
"""

import csv
import json
import os
import sys
import tempfile

import boto3
import duckdb
import pyarrow.parquet as pq


def s3(endpoint):
    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                        aws_access_key_id="test", aws_secret_access_key="test")


def fetch(args):
    """The export's folder on local disk: as it is, or downloaded from the bucket."""
    if args[0] == "dir":
        return args[1]
    endpoint, bucket, prefix = args[1:4]
    client = s3(endpoint)
    folder = tempfile.mkdtemp()
    listed = client.list_objects_v2(Bucket=bucket, Prefix=prefix + "/")
    for item in listed.get("Contents", []):
        local = os.path.join(folder, item["Key"][len(prefix) + 1:])
        os.makedirs(os.path.dirname(local), exist_ok=True)
        client.download_file(bucket, item["Key"], local)
    return folder


def main(args):
    if args[0] == "mkbucket":
        s3(args[1]).create_bucket(Bucket=args[2])
        return {"created": args[2]}
    folder = fetch(args)
    with open(os.path.join(folder, "manifest.json")) as f:
        manifest = json.load(f)
    rows = []
    for entry in manifest["files"]:
        path = os.path.join(folder, entry["path"])
        if path.endswith(".parquet"):
            found = [[r["time"].isoformat(), r["device"], r["temperature"]] for r in pq.read_table(path).to_pylist()]
        else:
            with open(path, newline="") as f:
                found = [[r["time"], r["device"], float(r["temperature"])] for r in csv.DictReader(f)]
        assert len(found) == entry["rows"], f"{entry['path']}: manifest says {entry['rows']} rows, file has {len(found)}"
        rows.extend(found)
    paths = [os.path.join(folder, e["path"]) for e in manifest["files"]]
    reader = "read_parquet" if manifest["format"] == "parquet" else "read_csv"
    duck = duckdb.sql(f"SELECT count(*), sum(temperature) FROM {reader}({paths!r})").fetchall()[0] if paths else (0, None)
    return {
        "exported_through": manifest["exported_through"],
        "files": [e["path"] for e in manifest["files"]],
        "rows": sorted(rows),
        "duckdb": {"count": duck[0], "sum": duck[1]},
    }


print(json.dumps(main(sys.argv[1:])))
