"""Reads a Parquet export back with pyarrow and with DuckDB and prints what each found, as JSON,
for crates/corral/tests/export.rs to compare with the source query.

  export_check.py FILE.parquet
"""

import json
import sys

import duckdb
import pyarrow.parquet as pq

path = sys.argv[1]
table = pq.read_table(path)
rows = table.to_pylist()
duck = duckdb.sql(f"SELECT count(*), sum(temperature), min(device), max(time) FROM read_parquet('{path}')").fetchall()[0]
print(json.dumps({
    "columns": table.column_names,
    "types": [str(t) for t in table.schema.types],
    "rows": [[r["device"], r["temperature"]] for r in rows],
    "duckdb": {"count": duck[0], "sum": duck[1], "min_device": duck[2], "max_time": str(duck[3])},
}))
