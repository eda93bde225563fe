"""paho-mqtt scenarios of the tenant-isolation attack regressions (issue 16), driven by
crates/corral/tests/tenant_isolation.rs. Each prints simple lines the test asserts on; every wait
is bounded and prints "timeout" when it runs out.

    python3 mqtt_attacks.py hold HOST PORT CLIENT_ID USER PASSWORD VERSION [TOPIC...]
        Connects with a persistent session (MQTT 5: clean start off, session expiry 300 s;
        3.1.1: clean session off), subscribes to each TOPIC at QoS 1 and stays connected.
        Prints "connected 0" or "refused <reason>", "subscribed <granted...>", "message <topic>
        <payload>" per message, and "disconnected <reason>" if the server ends the connection.
        When stdin closes it prints "still-connected", disconnects cleanly (the session stays on
        the server) and exits. Gives up after 60 s with "timeout".
    python3 mqtt_attacks.py attack HOST PORT CLIENT_ID USER PASSWORD VERSION
        Connects like `hold` (a session resume, not a fresh start) but subscribes to nothing:
        "refused <reason>", or "connected 0" then "message ..." for whatever the resumed session
        delivers within 1.5 s.
    python3 mqtt_attacks.py publish HOST PORT CLIENT_ID USER PASSWORD VERSION TOPIC PAYLOAD RETAIN
        One QoS 1 publish (RETAIN is "retain" or "-"): "puback <reason>", "refused <reason>",
        "disconnected <reason>" when the server ends the connection instead, or "timeout".
    python3 mqtt_attacks.py listen HOST PORT CLIENT_ID USER PASSWORD SECONDS TOPIC...
        MQTT 5, fresh session: subscribes to each TOPIC at QoS 1, prints "subscribed
        <granted...>", then "message <topic> <payload>" per message (retained ones included)
        for SECONDS, then "done".

Reasons are paho's MQTT 5 reason codes; paho reports a 3.1.1 CONNACK return code as its MQTT 5
equivalent (2, identifier rejected, as 133).
"""
import sys
import threading
import time

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

CONNECT_WAIT = 5
LIFETIME = 60


def say(line):
    print(line, flush=True)


def code(rc):
    return getattr(rc, "value", rc)


def client(client_id, user, password, version, persistent):
    """A client that never reconnects by itself: a refused or ended connection stays ended."""
    v5 = version == "5"
    c = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2,
        client_id=client_id,
        clean_session=None if v5 else not persistent,
        protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
        reconnect_on_failure=False,
    )
    if user:
        c.username_pw_set(user, password)
    return c


def connect(c, host, port, version, persistent):
    if version == "5":
        props = Properties(PacketTypes.CONNECT)
        if persistent:
            props.SessionExpiryInterval = 300
        c.connect(host, int(port), keepalive=30, clean_start=not persistent, properties=props)
    else:
        c.connect(host, int(port), keepalive=30)
    c.loop_start()


def session(host, port, client_id, user, password, version, topics):
    """Connects with a persistent session and reports what happens; returns (client, ended, up).
    `ended` is set once the connection is refused or lost (reported once), `up` once accepted."""
    c = client(client_id, user, password, version, persistent=True)
    ended, up = threading.Event(), threading.Event()

    def on_connect(c, userdata, flags, rc, props):
        if code(rc) != 0:
            say(f"refused {code(rc)}")
            ended.set()
            return
        say("connected 0")
        for topic in topics:
            c.subscribe(topic, qos=1)
        up.set()

    def on_subscribe(c, userdata, mid, rcs, props):
        say("subscribed " + " ".join(str(code(r)) for r in rcs))

    def on_message(c, userdata, message):
        say(f"message {message.topic} {message.payload.decode('utf-8', 'replace')}")

    def on_disconnect(c, userdata, flags, rc, props):
        if not ended.is_set():
            ended.set()
            say(f"disconnected {code(rc)}")

    c.on_connect, c.on_subscribe, c.on_message, c.on_disconnect = on_connect, on_subscribe, on_message, on_disconnect
    connect(c, host, port, version, persistent=True)
    return c, ended, up


def leave(c, ended):
    """Disconnects cleanly without reporting it (the session stays on the server)."""
    ended.set()
    c.disconnect()
    c.loop_stop()


def hold(host, port, client_id, user, password, version, *topics):
    c, ended, _ = session(host, port, client_id, user, password, version, topics)
    stdin_closed = threading.Event()

    def watch_stdin():
        sys.stdin.read()
        stdin_closed.set()

    threading.Thread(target=watch_stdin, daemon=True).start()
    deadline = time.monotonic() + LIFETIME
    while not ended.is_set() and not stdin_closed.is_set() and time.monotonic() < deadline:
        time.sleep(0.02)
    if not ended.is_set():
        say("still-connected" if stdin_closed.is_set() and c.is_connected() else "timeout")
    leave(c, ended)


def attack(host, port, client_id, user, password, version):
    c, ended, up = session(host, port, client_id, user, password, version, ())
    deadline = time.monotonic() + CONNECT_WAIT
    while not ended.is_set() and not up.is_set() and time.monotonic() < deadline:
        time.sleep(0.02)
    if up.is_set():
        ended.wait(1.5)  # whatever a resumed session holds arrives now
    elif not ended.is_set():
        say("timeout")
    leave(c, ended)


def publish(host, port, client_id, user, password, version, topic, payload, retain):
    c = client(client_id, user, password, version, persistent=False)
    done = threading.Event()

    def report(line):
        if not done.is_set():
            done.set()
            say(line)

    def on_connect(c, userdata, flags, rc, props):
        if code(rc) != 0:
            report(f"refused {code(rc)}")
        else:
            c.publish(topic, payload, qos=1, retain=retain == "retain")

    c.on_connect = on_connect
    c.on_publish = lambda c, userdata, mid, rc, props: report(f"puback {code(rc)}")
    c.on_disconnect = lambda c, userdata, flags, rc, props: report(f"disconnected {code(rc)}")
    connect(c, host, port, version, persistent=False)
    if not done.wait(10):
        report("timeout")
    c.disconnect()
    c.loop_stop()


def listen(host, port, client_id, user, password, seconds, *topics):
    c = client(client_id, user, password, "5", persistent=False)
    subscribed, ended = threading.Event(), threading.Event()

    def on_connect(c, userdata, flags, rc, props):
        if code(rc) != 0:
            say(f"refused {code(rc)}")
            ended.set()
        else:
            c.subscribe([(t, 1) for t in topics])

    def on_subscribe(c, userdata, mid, rcs, props):
        say("subscribed " + " ".join(str(code(r)) for r in rcs))
        subscribed.set()

    def on_disconnect(c, userdata, flags, rc, props):
        if not ended.is_set():
            ended.set()
            say(f"disconnected {code(rc)}")

    c.on_connect, c.on_subscribe, c.on_disconnect = on_connect, on_subscribe, on_disconnect
    c.on_message = lambda c, userdata, m: say(f"message {m.topic} {m.payload.decode('utf-8', 'replace')}")
    connect(c, host, port, "5", persistent=False)
    deadline = time.monotonic() + CONNECT_WAIT
    while not subscribed.is_set() and not ended.is_set() and time.monotonic() < deadline:
        time.sleep(0.02)
    if subscribed.is_set():
        ended.wait(float(seconds))
        if not ended.is_set():
            say("done")
    elif not ended.is_set():
        say("timeout")
    ended.set()
    c.disconnect()
    c.loop_stop()


if __name__ == "__main__":
    {"hold": hold, "attack": attack, "publish": publish, "listen": listen}[sys.argv[1]](*sys.argv[2:])
