"""A device's side of tracked commands over MQTT, with paho-mqtt, driven by
crates/corral/tests/commands_mqtt.rs. The client connects as the device (client id = user name =
DEVICE, password = its token) and prints simple lines the test asserts on; every wait is bounded
and prints "timeout" when it runs out.

    python3 mqtt_commands.py device HOST PORT DEVICE TOKEN VERSION SESSION ANSWER_AFTER STATUS
        VERSION is "5" or "311"; SESSION is "clean" or "persistent" (MQTT 5: session expiry
        300 s; 3.1.1: clean session off). Subscribes to devices/DEVICE/commands/+ at QoS 1 and
        prints "subscribed <granted>". For every command received (paho acknowledges it when the
        callback returns) prints
            command <command-id> <name> <payload as compact JSON> <response topic or -> <correlation or ->
        then, ANSWER_AFTER seconds later, unless STATUS is "none", answers it: on the response
        topic and with the correlation data it received (MQTT 5), else on
        devices/DEVICE/commands/<command-id>/response, with
        {"status": STATUS, "payload": {"done": <name>}}, and prints "answered <command-id> <topic>".
        Runs until stdin closes; then disconnects cleanly (a persistent session stays).
"""
import json
import sys
import threading

from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from mqtt_device import code, connect, hold, say


def device(host, port, device_id, token, version, session, answer_after, status):
    def answer(client, command_id, name, topic, correlation):
        body = json.dumps({"status": status, "payload": {"done": name}})
        props = None
        if correlation is not None:
            props = Properties(PacketTypes.PUBLISH)
            props.CorrelationData = correlation
        client.publish(topic, body, qos=1, properties=props)
        say(f"answered {command_id} {topic}")

    def on_message(c, userdata, m):
        command_id = m.topic.rsplit("/", 1)[-1]
        body = json.loads(m.payload)
        response_topic = getattr(m.properties, "ResponseTopic", None) if m.properties else None
        correlation = getattr(m.properties, "CorrelationData", None) if m.properties else None
        payload = json.dumps(body.get("payload"), sort_keys=True, separators=(",", ":"))
        say(f"command {command_id} {body.get('name')} {payload} {response_topic or '-'} "
            f"{correlation.decode() if correlation else '-'}")
        if body.get("id") != command_id:
            say(f"mismatch {body.get('id')} {command_id}")
        if status == "none":
            return
        topic = response_topic or f"devices/{device_id}/commands/{command_id}/response"
        timer = threading.Timer(float(answer_after), answer, (c, command_id, body.get("name"), topic, correlation))
        timer.daemon = True
        timer.start()

    c, result = connect(host, port, device_id, token, version, session == "persistent", on_message)
    if c is None:
        return
    c.on_subscribe = lambda c, u, mid, rcs, p: say("subscribed " + " ".join(str(code(r)) for r in rcs))
    c.subscribe(f"devices/{device_id}/commands/+", qos=1)
    hold(c, result, lifetime=90)


if __name__ == "__main__":
    mode, args = sys.argv[1], sys.argv[2:]
    if mode == "device":
        device(*args)
    else:
        sys.exit(f"unknown mode {mode}")
