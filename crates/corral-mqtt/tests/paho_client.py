"""Scenarios run by tests/clients.rs with the real paho-mqtt 2.x client.

usage: paho_client.py <scenario> <port> <311|5>
Exits 0 on success; prints what went wrong and exits 1 otherwise.
"""
import sys
import threading
import time

import paho.mqtt.client as mqtt
from paho.mqtt.properties import Properties
from paho.mqtt.packettypes import PacketTypes

scenario, port, version = sys.argv[1], int(sys.argv[2]), sys.argv[3]
PROTO = mqtt.MQTTv5 if version == "5" else mqtt.MQTTv311
TIMEOUT = 10


def fail(msg):
    print("FAIL:", msg)
    sys.exit(1)


def client(cid, user=None, password=None, clean=True):
    kw = {}
    if PROTO == mqtt.MQTTv311:
        kw["clean_session"] = clean
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=cid, protocol=PROTO, **kw)
    if user:
        c.username_pw_set(user, password)
    c.messages = []
    c.got = threading.Condition()
    c.acks = {}
    c.subacks = {}

    def on_message(cl, ud, msg):
        with c.got:
            c.messages.append(msg)
            c.got.notify_all()

    def on_publish(cl, ud, mid, rc, props):
        with c.got:
            c.acks[mid] = rc
            c.got.notify_all()

    def on_subscribe(cl, ud, mid, rcs, props):
        with c.got:
            c.subacks[mid] = rcs
            c.got.notify_all()

    c.on_message = on_message
    c.on_publish = on_publish
    c.on_subscribe = on_subscribe
    connected = threading.Event()
    c.connack = None

    def on_connect(cl, ud, flags, rc, props):
        c.connack = rc
        connected.set()

    c.on_connect = on_connect
    if PROTO == mqtt.MQTTv5:
        c.connect("127.0.0.1", port, keepalive=30, clean_start=clean)
    else:
        c.connect("127.0.0.1", port, keepalive=30)
    c.loop_start()
    if not connected.wait(TIMEOUT):
        fail(f"{cid}: no CONNACK")
    return c


def wait_for(c, pred, what):
    deadline = time.time() + TIMEOUT
    with c.got:
        while not pred():
            left = deadline - time.time()
            if left <= 0:
                fail(f"timed out waiting for {what}; messages={[(m.topic, m.payload) for m in c.messages]} acks={c.acks} subacks={c.subacks}")
            c.got.wait(left)


def subscribe(c, topic, qos):
    res, mid = c.subscribe(topic, qos)
    wait_for(c, lambda: mid in c.subacks, f"SUBACK {topic}")
    return c.subacks[mid]


def rc_value(rc):
    return rc.value if hasattr(rc, "value") else rc


def pubsub():
    sub = client("paho-sub")
    for qos in (0, 1, 2):
        rcs = subscribe(sub, f"paho/q{qos}", qos)
        if rc_value(rcs[0]) != qos:
            fail(f"granted {rcs} for qos {qos}")
    pub = client("paho-pub")
    for qos in (0, 1, 2):
        for i in range(20):
            info = pub.publish(f"paho/q{qos}", f"{qos}-{i}", qos=qos)
            info.wait_for_publish(TIMEOUT)
    wait_for(sub, lambda: len(sub.messages) == 60, "60 messages")
    got = sorted(m.payload.decode() for m in sub.messages)
    want = sorted(f"{q}-{i}" for q in (0, 1, 2) for i in range(20))
    if got != want:
        fail(f"got {got}")
    for m in sub.messages:
        if m.qos != int(m.topic[-1]):
            fail(f"{m.topic} delivered with qos {m.qos}")
    pub.disconnect()
    sub.disconnect()


def acl():
    dev = client("dev1", "dev1", "pw1")
    rcs = subscribe(dev, "devices/dev2/#", 1)
    want = 0x87 if PROTO == mqtt.MQTTv5 else 0x80
    if rc_value(rcs[0]) != want:
        fail(f"SUBACK {rcs}, want {want:#x}")
    info = dev.publish("devices/dev2/commands/x", "x", qos=1)
    info.wait_for_publish(TIMEOUT)
    wait_for(dev, lambda: info.mid in dev.acks, "PUBACK")
    got = rc_value(dev.acks[info.mid])
    want = 0x87 if PROTO == mqtt.MQTTv5 else 0
    if got != want:
        fail(f"PUBACK reason {got}, want {want:#x}")
    # An allowed platform publish is acknowledged.
    info = dev.publish("devices/dev1/telemetry", '{"t":1}', qos=1)
    info.wait_for_publish(TIMEOUT)
    if rc_value(dev.acks[info.mid]) != 0:
        fail(f"telemetry PUBACK {dev.acks[info.mid]}")
    dev.disconnect()


def v5_features():
    if PROTO != mqtt.MQTTv5:
        return
    sub = client("paho-v5-sub")
    props = Properties(PacketTypes.SUBSCRIBE)
    props.SubscriptionIdentifier = 7
    res, mid = sub.subscribe("v5/#", options=mqtt.SubscribeOptions(qos=1), properties=props)
    wait_for(sub, lambda: mid in sub.subacks, "SUBACK")
    sub2 = client("paho-v5-shared-a")
    sub3 = client("paho-v5-shared-b")
    subscribe(sub2, "$share/grp/v5/#", 0)
    subscribe(sub3, "$share/grp/v5/#", 0)
    pub = client("paho-v5-pub")
    pprops = Properties(PacketTypes.PUBLISH)
    pprops.UserProperty = ("trace", "abc")
    pprops.ContentType = "application/json"
    pprops.ResponseTopic = "v5/reply"
    pprops.CorrelationData = b"\x01\x02"
    pprops.MessageExpiryInterval = 60
    for i in range(10):
        pub.publish("v5/data", "{}", qos=1, properties=pprops).wait_for_publish(TIMEOUT)
    wait_for(sub, lambda: len(sub.messages) == 10, "10 messages")
    m = sub.messages[0]
    p = m.properties
    if p.UserProperty != [("trace", "abc")] or p.ContentType != "application/json":
        fail(f"properties not forwarded: {p}")
    if p.ResponseTopic != "v5/reply" or p.CorrelationData != b"\x01\x02":
        fail(f"request/response properties not forwarded: {p}")
    if p.SubscriptionIdentifier != [7]:
        fail(f"subscription identifier {p.SubscriptionIdentifier}")
    if not (0 < p.MessageExpiryInterval <= 60):
        fail(f"expiry {p.MessageExpiryInterval}")
    wait_for(sub2, lambda: len(sub2.messages) + len(sub3.messages) >= 10, "shared")
    time.sleep(0.3)
    if (len(sub2.messages), len(sub3.messages)) != (5, 5):
        fail(f"shared split {len(sub2.messages)}/{len(sub3.messages)}")
    for c in (pub, sub, sub2, sub3):
        c.disconnect()


def persistent():
    sub = client("paho-persist", clean=False) if PROTO == mqtt.MQTTv311 else None
    if PROTO == mqtt.MQTTv5:
        sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="paho-persist", protocol=PROTO)
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 300
        done = threading.Event()
        sub.on_connect = lambda *a: done.set()
        sub.connect("127.0.0.1", port, clean_start=False, properties=props)
        sub.loop_start()
        done.wait(TIMEOUT)
        sub.subscribe("persist/#", 1)
        time.sleep(0.3)
    else:
        subscribe(sub, "persist/#", 1)
    sub.disconnect()
    sub.loop_stop()
    time.sleep(0.2)
    pub = client("paho-persist-pub")
    for i in range(5):
        pub.publish("persist/x", f"offline-{i}", qos=1).wait_for_publish(TIMEOUT)
    pub.disconnect()
    if PROTO == mqtt.MQTTv5:
        again = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="paho-persist", protocol=PROTO)
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 300
        got = []
        ev = threading.Event()
        state = {}

        def on_connect(cl, ud, flags, rc, p):
            state["present"] = flags.session_present

        def on_message(cl, ud, msg):
            got.append(msg.payload.decode())
            if len(got) == 5:
                ev.set()

        again.on_connect = on_connect
        again.on_message = on_message
        again.connect("127.0.0.1", port, clean_start=False, properties=props)
    else:
        again = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="paho-persist", protocol=PROTO, clean_session=False)
        got = []
        ev = threading.Event()
        state = {}

        def on_connect(cl, ud, flags, rc, p):
            state["present"] = flags.session_present

        def on_message(cl, ud, msg):
            got.append(msg.payload.decode())
            if len(got) == 5:
                ev.set()

        again.on_connect = on_connect
        again.on_message = on_message
        again.connect("127.0.0.1", port)
    again.loop_start()
    if not ev.wait(TIMEOUT):
        fail(f"queued messages not delivered: {got}")
    if not state.get("present"):
        fail("session_present not set")
    if got != [f"offline-{i}" for i in range(5)]:
        fail(f"got {got}")
    again.disconnect()


{"pubsub": pubsub, "acl": acl, "v5": v5_features, "persistent": persistent}[scenario]()
print("OK")
