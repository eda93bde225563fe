"""A device's side of the twin over MQTT, with paho-mqtt, driven by crates/corral/tests/twin_devices.rs.
Every client connects as the device (client id = user name = DEVICE, password = its token) and
prints simple lines the test asserts on; every wait is bounded and prints "timeout" when it runs out.

    python3 mqtt_twin.py desired HOST PORT DEVICE TOKEN VERSION SESSION
        VERSION is "5" or "311"; SESSION is "clean" or "persistent" (MQTT 5: session expiry
        300 s; 3.1.1: clean session off). Subscribes to devices/DEVICE/twin/desired at QoS 1 and
        prints "subscribed <granted>", then "desired <version> <desired as compact JSON>" per
        message, until stdin closes; then disconnects cleanly (a persistent session stays).
    python3 mqtt_twin.py report HOST PORT DEVICE TOKEN VERSION PATCH
        One QoS 1 publish of PATCH on devices/DEVICE/twin/reported: "puback <reason>", or
        "disconnected <reason>" when the server ends the connection instead (3.1.1 has no
        negative PUBACK).
    python3 mqtt_twin.py burst HOST PORT DEVICE TOKEN VERSION N
        N QoS 1 publishes on devices/DEVICE/twin/reported, back to back without waiting for their
        PUBACKs, the k-th {"step": k, "progress": {"state": "step-k"}}; prints "pubacks <count>".
    python3 mqtt_twin.py publish HOST PORT DEVICE TOKEN VERSION TOPIC PAYLOAD
        One QoS 1 publish anywhere: "puback <reason>" or "disconnected <reason>".
    python3 mqtt_twin.py get HOST PORT DEVICE TOKEN VERSION REQUEST [RESPONSE_TOPIC CORRELATION]
        Subscribes to devices/DEVICE/twin/# and publishes REQUEST on devices/DEVICE/twin/get; with
        RESPONSE_TOPIC (MQTT 5) asks for the answer there with CORRELATION as correlation data.
        Prints "answer <topic> <correlation or -> <payload>" for the first message that is neither
        the desired document nor the request itself.

Reasons are paho's MQTT 5 reason codes.
"""
import json
import sys
import threading
import time

from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from mqtt_device import WAIT, code, connect, hold, leave, say


def desired(host, port, device, token, version, session):
    def on_message(c, userdata, m):
        doc = json.loads(m.payload)
        say(f"desired {doc['version']} {json.dumps(doc['desired'], sort_keys=True, separators=(',', ':'))}")

    c, result = connect(host, port, device, token, version, session == "persistent", on_message)
    if c is None:
        return
    c.on_subscribe = lambda c, u, mid, rcs, p: say("subscribed " + " ".join(str(code(r)) for r in rcs))
    c.subscribe(f"devices/{device}/twin/desired", qos=1)
    hold(c, result)


def publish(host, port, device, token, version, topic, payload):
    c, result = connect(host, port, device, token, version)
    if c is None:
        return
    acked = threading.Event()

    def on_publish(c, userdata, mid, rc, props):
        say(f"puback {code(rc)}")
        acked.set()

    c.on_publish = on_publish
    c.publish(topic, payload, qos=1)
    deadline = time.monotonic() + WAIT
    while not acked.is_set() and "ended" not in result and time.monotonic() < deadline:
        time.sleep(0.02)
    if not acked.is_set() and "ended" not in result:
        say("timeout")
    leave(c, result)


def burst(host, port, device, token, version, n):
    n, acked, done = int(n), [], threading.Event()
    c, result = connect(host, port, device, token, version, inflight=n)
    if c is None:
        return

    def on_publish(c, userdata, mid, rc, props):
        acked.append(mid)
        if len(acked) == n:
            done.set()

    c.on_publish = on_publish
    for k in range(1, n + 1):
        c.publish(f"devices/{device}/twin/reported", json.dumps({"step": k, "progress": {"state": f"step-{k}"}}), qos=1)
    done.wait(WAIT)
    say(f"pubacks {len(acked)}")
    leave(c, result)


def get(host, port, device, token, version, request, response_topic=None, correlation=None):
    c, result = connect(host, port, device, token, version)
    if c is None:
        return
    answered, subscribed = threading.Event(), threading.Event()

    def on_message(c, userdata, m):
        # Its own request comes back too (3.1.1 has no no-local): not an answer.
        if m.topic.endswith(("/twin/desired", "/twin/get")) or answered.is_set():
            return
        data = getattr(m.properties, "CorrelationData", None) if m.properties else None
        say(f"answer {m.topic} {data.decode() if data else '-'} {m.payload.decode()}")
        answered.set()

    c.on_message = on_message
    c.on_subscribe = lambda *args: subscribed.set()
    c.subscribe(f"devices/{device}/twin/#", qos=1)
    subscribed.wait(WAIT)
    props = None
    if response_topic:
        props = Properties(PacketTypes.PUBLISH)
        props.ResponseTopic = response_topic
        props.CorrelationData = correlation.encode()
    c.publish(f"devices/{device}/twin/get", request, qos=1, properties=props)
    if not answered.wait(WAIT):
        say("timeout")
    leave(c, result)


if __name__ == "__main__":
    mode, args = sys.argv[1], sys.argv[2:]
    if mode == "desired":
        desired(*args)
    elif mode == "report":
        publish(*args[:5], f"devices/{args[2]}/twin/reported", args[5])
    elif mode == "burst":
        burst(*args)
    elif mode == "publish":
        publish(*args)
    elif mode == "get":
        get(*args)
    else:
        sys.exit(f"unknown mode {mode}")
