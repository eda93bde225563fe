#!/usr/bin/env bash
# CoAP over DTLS benchmark (issue 5): sensors with pre-shared keys setting up DTLS sessions (full
# handshake + one Confirmable reading + close_notify, over and over) and sending Confirmable
# readings over open sessions, against a fresh Corral (2.04 after the fsync; rows counted by SQL
# afterwards) and libcoap's coap-server-openssl (in memory), side by side. Builds release
# binaries and installs libcoap3-bin if missing, as scripts/bench-coap.sh does.
#
#   scripts/bench-coaps.sh [corral-bench coaps options]   e.g. --clients 64 --runs 5 --json
exec "$(dirname "$0")/bench-coap.sh" --dtls "$@"
