#!/usr/bin/env bash
# The whole test suite. Tests drive the real server with real clients, so this first installs
# what they use when it is missing: curl, gzip, jq, openssl, iproute2, mosquitto-clients,
# libcoap3-bin (coap-client, plain and DTLS), postgresql-client (psql) and nats-server (Debian
# packages; the rules crate publishes actions to a real nats-server), libssl-dev and pkg-config
# (the build links OpenSSL for DTLS), the official InfluxDB Python clients, paho-mqtt, aiocoap,
# cbor2 and cryptography (PyPI; the firmware agent verifies Ed25519 signatures), psycopg,
# SQLAlchemy and pandas (PyPI) and node-postgres (npm) for the PostgreSQL door, pyarrow and DuckDB
# (PyPI) to read exports back, and schemathesis (PyPI) to fuzz the REST API against its OpenAPI
# document. The disk-full test mounts a small tmpfs and the OpenAPI fuzzing runs the server in a
# network namespace, so both need root.
# Extra arguments go to `cargo test`, e.g. `scripts/test.sh -p corral --test crash`.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v curl >/dev/null || need+=(curl)
command -v gzip >/dev/null || need+=(gzip)
# jq: the docs' curl examples use it, and a test runs them as printed.
command -v jq >/dev/null || need+=(jq)
command -v mosquitto_pub >/dev/null || need+=(mosquitto-clients)
command -v openssl >/dev/null || need+=(openssl)
# ip and ss: tests that run the server on its default ports do so in a network namespace.
command -v ip >/dev/null && command -v ss >/dev/null || need+=(iproute2)
command -v coap-client-notls >/dev/null || need+=(libcoap3-bin)
command -v psql >/dev/null || need+=(postgresql-client)
command -v pkg-config >/dev/null || need+=(pkg-config)
pkg-config --exists openssl 2>/dev/null || need+=(libssl-dev)
test -x /usr/bin/chromium || need+=(chromium)
# Debian puts nats-server in /usr/sbin, which is not on a normal user's PATH.
{ command -v nats-server || test -x /usr/sbin/nats-server; } >/dev/null || need+=(nats-server)
if ((${#need[@]})); then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
  else
    echo "missing: ${need[*]} (install them, e.g. sudo apt-get install ${need[*]})" >&2
    exit 1
  fi
fi
python3 -c "import influxdb_client, influxdb, paho.mqtt, aiocoap, cbor2, cryptography" 2>/dev/null ||
  python3 -m pip install -q --disable-pip-version-check influxdb-client==1.50.0 influxdb==5.3.2 paho-mqtt==2.1.0 \
    aiocoap==0.4.17 cbor2==6.2.1 cryptography==48.0.0
python3 -c "import psycopg, sqlalchemy, pandas, pyarrow, duckdb" 2>/dev/null ||
  python3 -m pip install -q --disable-pip-version-check "psycopg[binary]==3.3.9" sqlalchemy==2.1.9 pandas==3.1.2 \
    pyarrow==26.0.1 duckdb==2.0.1
# A local S3 server for the scheduled exports' tests, and the client that reads back what they wrote.
python3 -c "import moto.server, boto3" 2>/dev/null ||
  python3 -m pip install -q --disable-pip-version-check "moto[server]==5.2.6" boto3==1.44.18
# Property-based tests of the REST API against its own OpenAPI document.
python3 -c "import schemathesis" 2>/dev/null ||
  python3 -m pip install -q --disable-pip-version-check schemathesis==4.32.5

browser=crates/corral/tests/browser
test -d "$browser/node_modules/playwright-core" || npm ci --prefix "$browser" --no-audit --no-fund --loglevel=error
node=crates/corral/tests/clients/node
test -d "$node/node_modules/pg" || npm ci --prefix "$node" --no-audit --no-fund --loglevel=error

cargo test --workspace --locked "$@"
