"""PostgreSQL clients against Corral's PG door: psycopg 3 (text and binary results, server-side
parameters, prepared statements), SQLAlchemy + pandas, and the catalog queries BI tools send.

Run by crates/corral/tests/pg.rs against a server holding its fixture:
  devices truck-1, truck-2 (tenant acme) and meter-1 (tenant metro), and table `readings` with
  (temperature float, door_open bool, note text) at 2026-01-01T00:00:0{0,1,2}Z per device.

  pg_clients.py SCENARIO HOST PORT [ARGS...]    exits 1 with the reason on the first failure
"""

import datetime as dt
import decimal
import sys

import psycopg


def connect(host, port, token, user="token", **kw):
    return psycopg.connect(host=host, port=port, user=user, password=token, dbname="corral",
                           sslmode=kw.pop("sslmode", "disable"), connect_timeout=10, **kw)


def expect(what, got, want):
    if got != want:
        sys.exit(f"{what}: got {got!r}, want {want!r}")


def values(host, port, token):
    """Every common type, decoded the same from text and from binary results."""
    query = ("SELECT true AS b, CAST(7 AS SMALLINT) AS i2, CAST(8 AS INT) AS i4, CAST(9 AS BIGINT) AS i8, "
             "CAST(1.5 AS REAL) AS f4, CAST(2.25 AS DOUBLE PRECISION) AS f8, CAST(12.34 AS DECIMAL(10,2)) AS n, "
             "'héllo' AS t, CAST('2026-01-01 00:00:01.5' AS TIMESTAMP) AS ts, CAST(NULL AS TEXT) AS nothing")
    want = (True, 7, 8, 9, 1.5, 2.25, decimal.Decimal("12.34"), "héllo",
            dt.datetime(2026, 1, 1, 0, 0, 1, 500000), None)
    with connect(host, port, token) as conn:
        for binary in (False, True):
            with conn.cursor(binary=binary) as cur:
                cur.execute(query)
                expect(f"row ({'binary' if binary else 'text'})", cur.fetchone(), want)
                names = [c.name for c in cur.description]
                expect("column names", names, ["b", "i2", "i4", "i8", "f4", "f8", "n", "t", "ts", "nothing"])
        # Telemetry, with the device as a server-side parameter ($1), in both formats.
        sql = "SELECT device, time, temperature, door_open, note FROM readings WHERE device = %s ORDER BY time"
        for binary in (False, True):
            with conn.cursor(binary=binary) as cur:
                cur.execute(sql, ("truck-1",))
                rows = cur.fetchall()
                expect("truck-1 rows", len(rows), 3)
                expect("first row", rows[0], ("truck-1", dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc), 4.5, False, "ok"))
        # A join to the inventory, the point of SQL over an IoT platform.
        cur = conn.execute("SELECT d.site, count(*) AS n, avg(r.temperature) AS mean FROM readings r "
                           "JOIN devices d USING (device) GROUP BY d.site ORDER BY d.site")
        expect("readings per site", [(s, n) for s, n, _ in cur.fetchall()], [("east", 3), ("north", 3), ("south", 3)])
        # A parameter whose type only the plan knows (a timestamp compared with `time`).
        cur = conn.execute("SELECT count(*) FROM readings WHERE time > %s AND temperature > %s",
                           (dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc), 0.0))
        expect("rows after the first second", cur.fetchone()[0], 6)


def prepared(host, port, token, device_token, base_url):
    """A statement prepared once and executed again after new data lands reads the new data."""
    import urllib.request
    with connect(host, port, token) as conn:
        sql = "SELECT count(*) FROM readings WHERE device = %s"
        for _ in range(3):
            expect("before", conn.execute(sql, ("meter-1",), prepare=True).fetchone()[0], 3)
        body = b'{"ts": "2026-01-01T00:00:09Z", "temperature": 30.0, "door_open": true, "note": "late"}'
        request = urllib.request.Request(f"{base_url}/api/v1/ingest/readings", data=body, method="POST",
                                         headers={"Authorization": f"Bearer {device_token}",
                                                  "Content-Type": "application/json"})
        expect("ingest", urllib.request.urlopen(request).status, 200)
        expect("after", conn.execute(sql, ("meter-1",), prepare=True).fetchone()[0], 4)


def refusals(host, port, token, device_token):
    """Writes are refused with 25006; wrong passwords and device tokens with 28P01."""
    with connect(host, port, token) as conn:
        for statement in ("INSERT INTO readings (device, temperature) VALUES ('x', 1)",
                          "CREATE TABLE t (x INT)", "DROP TABLE devices"):
            try:
                conn.execute(statement)
                sys.exit(f"{statement!r} was not refused")
            except psycopg.errors.ReadOnlySqlTransaction as e:
                conn.rollback()
                if "read-only" not in str(e):
                    sys.exit(f"refusal of {statement!r} does not say why: {e}")
        try:
            conn.execute("SELECT nope FROM readings")
            sys.exit("an unknown column was not an error")
        except psycopg.Error as e:
            conn.rollback()
            if e.sqlstate is None or e.sqlstate.startswith("XX"):
                sys.exit(f"an unknown column is an internal error: {e.sqlstate} {e}")
        # The connection is still usable after errors.
        expect("after errors", conn.execute("SELECT 1").fetchone()[0], 1)
    for password, user in (("not-a-token", "token"), (device_token, "token"), (token, "someone-else")):
        try:
            connect(host, port, password, user=user).close()
            sys.exit(f"login as {user!r} with a wrong credential succeeded")
        except psycopg.OperationalError as e:
            if "password authentication failed" not in str(e):
                sys.exit(f"wrong credential, unclear error: {e}")


def tenant(host, port, token, tenant_id):
    """A tenant-scoped token sees only its tenant's devices and rows, in every table and the catalog."""
    with connect(host, port, token, user="acme-viewer") as conn:
        devices = [r[0] for r in conn.execute("SELECT device FROM devices ORDER BY device")]
        expect("devices", devices, ["truck-1", "truck-2"])
        seen = [r[0] for r in conn.execute("SELECT DISTINCT device FROM readings ORDER BY device")]
        expect("devices in readings", seen, ["truck-1", "truck-2"])
        expect("meter-1's rows", conn.execute("SELECT count(*) FROM readings WHERE device = %s",
                                              ("meter-1",)).fetchone()[0], 0)
        tenants = [r[0] for r in conn.execute("SELECT DISTINCT tenant FROM devices")]
        expect("tenants", tenants, [tenant_id])


def pandas_read(host, port, token):
    import pandas
    import sqlalchemy
    engine = sqlalchemy.create_engine(f"postgresql+psycopg://token:{token}@{host}:{port}/corral")
    frame = pandas.read_sql("SELECT device, temperature FROM readings WHERE device = 'truck-2' ORDER BY time", engine)
    expect("pandas columns", list(frame.columns), ["device", "temperature"])
    expect("pandas values", frame["temperature"].tolist(), [6.5, 7.5, 8.5])
    frame = pandas.read_sql(sqlalchemy.text("SELECT count(*) AS n FROM devices WHERE site = :site"), engine,
                            params={"site": "north"})
    expect("pandas with a bound parameter", int(frame["n"][0]), 1)
    with engine.connect() as conn:
        expect("has_table", sqlalchemy.inspect(conn).has_table("readings"), True)
        expect("has_table, missing", sqlalchemy.inspect(conn).has_table("nothing_here"), False)


def limits(host, port, token):
    """A statement ends at the client's statement_timeout or its cancel request (57014), and a
    result longer than the row limit fails (54000); the connection goes on serving."""
    import threading
    import time
    slow = "SELECT count(*) FROM generate_series(1, 50000000000)"
    with connect(host, port, token) as conn:
        conn.execute("SET statement_timeout = '300ms'")
        started = time.monotonic()
        try:
            conn.execute(slow)
            sys.exit("a statement outlived statement_timeout")
        except psycopg.errors.QueryCanceled:
            conn.rollback()
        if time.monotonic() - started > 20:
            sys.exit("statement_timeout took more than 20 s to cut the statement")
        conn.execute("SET statement_timeout = 0")
        threading.Timer(0.5, conn.cancel).start()
        try:
            conn.execute(slow)
            sys.exit("a cancel request did not stop the statement")
        except psycopg.errors.QueryCanceled:
            conn.rollback()
        try:
            conn.execute("SELECT * FROM generate_series(1, 1000)").fetchall()
            sys.exit("1,000 rows passed a limit of 100")
        except psycopg.errors.ProgramLimitExceeded as e:
            conn.rollback()
            if "max_query_rows" not in str(e):
                sys.exit(f"the row limit's error does not name its setting: {e}")
        expect("after the limits", conn.execute("SELECT count(*) FROM devices").fetchone()[0], 3)


def tls(host, port, token, ca_file):
    with connect(host, port, token, sslmode="verify-ca", sslrootcert=ca_file) as conn:
        expect("over TLS", conn.execute("SELECT count(*) FROM devices").fetchone()[0], 3)
        expect("TLS in use", conn.info.pgconn.ssl_in_use, True)


def no_tls(host, port, token):
    try:
        connect(host, port, token, sslmode="disable").close()
        sys.exit("a token was accepted without TLS")
    except psycopg.OperationalError as e:
        if "sslmode=require" not in str(e):
            sys.exit(f"no TLS, unclear error: {e}")


def tools(host, port, token):
    """Every recorded catalog query of Grafana, Metabase, pgjdbc, DBeaver, SQLAlchemy and psycopg,
    byte for byte and over the protocol the tool uses, answers without an error."""
    from psycopg.pq import ExecStatus
    from pg_tool_queries import QUERIES
    failed = []
    with connect(host, port, token, autocommit=True) as conn:
        pg = conn.pgconn
        for tool, what, sql, params, must_contain in QUERIES:
            if params is None:
                result = pg.exec_(sql.encode())
            else:
                result = pg.exec_params(sql.encode(), [p.encode() for p in params])
            if result.status not in (ExecStatus.TUPLES_OK, ExecStatus.COMMAND_OK, ExecStatus.EMPTY_QUERY):
                message = (result.error_message or b"").decode(errors="replace").strip()
                failed.append(f"{tool}: {what}: {message}")
                continue
            cells = [(result.get_value(r, c) or b"").decode(errors="replace")
                     for r in range(result.ntuples) for c in range(result.nfields)]
            exact = must_contain is not None and must_contain.startswith("=")
            if must_contain is not None and not any(
                cell == must_contain[1:] if exact else must_contain in cell for cell in cells
            ):
                failed.append(f"{tool}: {what}: no row holds {must_contain!r} ({result.ntuples} rows)")
    print(f"{len(QUERIES) - len(failed)} of {len(QUERIES)} tool queries answered")
    if failed:
        sys.exit("\n".join(failed))


def main():
    scenario, host, port, *args = sys.argv[1:]
    scenarios = {"values": values, "prepared": prepared, "refusals": refusals, "tenant": tenant,
                 "pandas": pandas_read, "tls": tls, "no_tls": no_tls, "tools": tools, "limits": limits}
    scenarios[scenario](host, int(port), *args)
    print("ok")


if __name__ == "__main__":
    main()
