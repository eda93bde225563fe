"""What every paho-mqtt device script of the tests shares (mqtt_twin.py, mqtt_commands.py): the
device's connection (client id = user name = DEVICE, password = its token; MQTT 5 or 3.1.1; a
persistent or clean session), one whole output line at a time, and holding the connection until
the test closes stdin.
"""
import sys
import threading
import time

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

WAIT = 15
# Lines come from paho's thread, timers and the main thread: one whole line at a time.
OUT = threading.Lock()


def say(line):
    with OUT:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def code(rc):
    return getattr(rc, "value", rc)


def connect(host, port, device, token, version, persistent=False, on_message=None, inflight=20):
    """Connects and waits for the CONNACK; returns (client, result), the client None after saying
    why ("refused <reason>" or "timeout"). `result` gets "ended" once the connection is over (a
    loss is said as "disconnected <reason>"). `on_message` is set before connecting, so what a
    resumed session holds is not missed. `inflight`: QoS 1/2 publishes sent before waiting for
    their acknowledgements (paho's default is 20)."""
    v5 = version == "5"
    c = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2,
        client_id=device,
        clean_session=None if v5 else not persistent,
        protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
        reconnect_on_failure=False,
    )
    c.username_pw_set(device, token)
    c.max_inflight_messages_set(inflight)
    up, result = threading.Event(), {}

    def on_connect(c, userdata, flags, rc, props):
        result["rc"] = code(rc)
        up.set()

    def on_disconnect(c, userdata, flags, rc, props):
        # A refused CONNECT is reported as such, not as a disconnect too.
        if result.get("rc", 0) == 0 and "ended" not in result:
            result["ended"] = code(rc)
            say(f"disconnected {code(rc)}")
        up.set()

    c.on_connect, c.on_disconnect = on_connect, on_disconnect
    if on_message:
        c.on_message = on_message
    if v5:
        props = Properties(PacketTypes.CONNECT)
        if persistent:
            props.SessionExpiryInterval = 300
        c.connect(host, int(port), keepalive=30, clean_start=not persistent, properties=props)
    else:
        c.connect(host, int(port), keepalive=30)
    c.loop_start()
    if not up.wait(WAIT):
        say("timeout")
        return None, result
    if result.get("rc", 0) != 0:
        say(f"refused {result['rc']}")
        return None, result
    return c, result


def leave(c, result):
    """Disconnects cleanly without reporting it (a persistent session stays on the server)."""
    if "ended" not in result:
        result["ended"] = "left"
        c.disconnect()
        c.loop_stop()


def hold(c, result, lifetime=60):
    """Keeps the connection until stdin closes (or `lifetime` seconds), then leaves."""
    stdin_closed = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), stdin_closed.set()), daemon=True).start()
    deadline = time.monotonic() + lifetime
    while "ended" not in result and not stdin_closed.is_set() and time.monotonic() < deadline:
        time.sleep(0.02)
    leave(c, result)
