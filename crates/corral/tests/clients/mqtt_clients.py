"""paho-mqtt scenarios the whole-server MQTT tests drive (crates/corral/tests/mqtt.rs).

    python3 mqtt_clients.py watch HOST PORT CLIENT_ID USER PASSWORD VERSION
        Connects (VERSION 5 or 311), subscribes to devices/<CLIENT_ID>/commands/#, prints
        "connected <reason>" then, when the server disconnects it, "disconnected <reason>".
    python3 mqtt_clients.py publish HOST PORT CLIENT_ID USER PASSWORD VERSION TOPIC PAYLOAD [CONTENT_TYPE]
        Publishes one QoS 1 message and prints "puback <reason>" (v5 reason code; 0 on 3.1.1)
        or "refused <reason>" when the CONNECT is refused, or "closed" when the server drops
        the connection instead of acknowledging.

With MQTT_TRANSPORT=websockets in the environment, clients connect over WebSocket to
ws://HOST:PORT/mqtt (PORT is then the HTTP listener). With MQTT_TLS=CAFILE[,CERTFILE,KEYFILE]
they connect over TLS, trusting CAFILE, presenting the client certificate if given; an empty USER
sends no user name or password (the certificate says who the client is).
"""
import os
import sys
import threading

import paho.mqtt.client as mqtt
from paho.mqtt.properties import Properties
from paho.mqtt.packettypes import PacketTypes


def client(client_id, user, password, version):
    proto = mqtt.MQTTv5 if version == "5" else mqtt.MQTTv311
    transport = os.environ.get("MQTT_TRANSPORT", "tcp")
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=proto, transport=transport)
    if transport == "websockets":
        c.ws_set_options(path="/mqtt")
    tls = os.environ.get("MQTT_TLS")
    if tls:
        ca, *identity = tls.split(",")
        c.tls_set(ca_certs=ca, certfile=identity[0] if identity else None, keyfile=identity[1] if identity else None)
    if user:
        c.username_pw_set(user, password)
    return c


def code(rc):
    return getattr(rc, "value", rc)


def watch(host, port, client_id, user, password, version):
    c = client(client_id, user, password, version)
    done = threading.Event()

    def on_connect(c, userdata, flags, rc, props):
        print(f"connected {code(rc)}", flush=True)
        if code(rc) == 0:
            c.subscribe(f"devices/{client_id}/commands/#", qos=1)
        else:
            done.set()

    def on_disconnect(c, userdata, flags, rc, props):
        print(f"disconnected {code(rc)}", flush=True)
        done.set()

    c.on_connect = on_connect
    c.on_disconnect = on_disconnect
    c.connect(host, int(port), keepalive=30)
    c.loop_start()
    done.wait(60)
    c.loop_stop()


def publish(host, port, client_id, user, password, version, topic, payload, content_type=None):
    c = client(client_id, user, password, version)
    result = {}
    done = threading.Event()

    def on_connect(c, userdata, flags, rc, props):
        if code(rc) != 0:
            result["out"] = f"refused {code(rc)}"
            done.set()
            return
        props = None
        if content_type and version == "5":
            props = Properties(PacketTypes.PUBLISH)
            props.ContentType = content_type
        c.publish(topic, payload, qos=1, properties=props)

    def on_publish(c, userdata, mid, rc, props):
        result["out"] = f"puback {code(rc)}"
        done.set()

    def on_disconnect(c, userdata, flags, rc, props):
        result.setdefault("out", "closed")
        done.set()

    c.on_connect = on_connect
    c.on_publish = on_publish
    c.on_disconnect = on_disconnect
    c.connect(host, int(port), keepalive=30)
    c.loop_start()
    done.wait(20)
    c.disconnect()
    c.loop_stop()
    print(result.get("out", "timeout"), flush=True)


if __name__ == "__main__":
    {"watch": watch, "publish": publish}[sys.argv[1]](*sys.argv[2:])
