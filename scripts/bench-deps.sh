# Sourced, not run: the benchmark peers' install steps, shared by scripts/bench-mqtt.sh,
# scripts/bench-coap.sh and scripts/bench-before-after.sh. Each function installs its Debian
# package only when the program is missing.

# Mosquitto 2.0 (Debian `mosquitto`; needs root to install). The package starts a system broker
# on port 1883; the benchmarks start their own, so that one is stopped lest it compete for the CPU.
install_mosquitto() {
  if ! command -v mosquitto >/dev/null && [ ! -x /usr/sbin/mosquitto ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto >/dev/null
  fi
  if command -v systemctl >/dev/null && systemctl is-active --quiet mosquitto 2>/dev/null; then
    systemctl stop mosquitto || true
  fi
}

# libcoap's coap-server (Debian `libcoap3-bin`); without root, says what to install and exits.
install_libcoap() {
  if ! command -v coap-server-notls >/dev/null; then
    if [ "$(id -u)" = 0 ]; then
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libcoap3-bin
    else
      echo "missing: libcoap3-bin (sudo apt-get install libcoap3-bin)" >&2
      exit 1
    fi
  fi
}
