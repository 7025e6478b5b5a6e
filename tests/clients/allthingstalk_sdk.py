"""Drives Tessera with the public AllThingsTalk SDK `allthingstalk` 0.3.0 (which talks HTTP and, through
`paho-mqtt`, MQTT), unchanged: a device connects with its device token, creates its assets, publishes state over
HTTP (the SDK's setter) and over MQTT (with paho, as device firmware does), reads it back, and receives the feed and a command.

Run by the Rust test `python_clients::the_allthingstalk_sdk_works_unchanged`, which passes TESSERA_HTTP,
TESSERA_MQTT, TESSERA_DEVICE and TESSERA_TOKEN. Exits non-zero with a message on the first mismatch.
"""

import json
import os
import queue
import sys
import time

import paho.mqtt.client as paho_mqtt
from allthingstalk import Client, Device, IntegerAsset, StringAsset


def check(condition, message):
    if not condition:
        print("FAILED: " + message, file=sys.stderr)
        sys.exit(1)


class Thermostat(Device):
    temperature = IntegerAsset(minimum=-40, maximum=60)
    mode = StringAsset(kind="actuator")


def main():
    http, mqtt, device_id, token = (os.environ[name] for name in
                                    ("TESSERA_HTTP", "TESSERA_MQTT", "TESSERA_DEVICE", "TESSERA_TOKEN"))
    feed = queue.Queue()

    commands = queue.Queue()

    @Thermostat.feed.temperature
    def on_temperature(device, value, at):
        feed.put(value)

    @Thermostat.command.mode
    def on_mode(device, value, at):
        commands.put(value)

    client = Client(token, api=http, http="http://" + http, mqtt=mqtt)
    check(client.mqtt is not None, "the SDK's MQTT client connected")
    device = Thermostat(client=client, id=device_id)
    names = sorted(asset.name for asset in client.get_assets(device_id))
    check(names == ["mode", "temperature"], "the SDK created its assets: %r" % names)

    time.sleep(1)  # paho subscribes in its own thread; give the SUBSCRIBE a moment to reach the server
    device.temperature = 21
    check(device.temperature.value == 21, "read back over HTTP: %r" % device.temperature.value)
    check(feed.get(timeout=10) == 21, "the feed arrived over MQTT")

    firmware = paho_mqtt.Client()
    firmware.username_pw_set("maker:" + token, "x")
    host, port = mqtt.split(":")
    firmware.connect(host, int(port), 30)
    firmware.loop_start()
    info = firmware.publish("device/%s/asset/temperature/state" % device_id, json.dumps({"value": 23}), qos=1)
    info.wait_for_publish(timeout=10)
    check(feed.get(timeout=10) == 23, "a state published over MQTT reaches the feed")
    check(device.temperature.value == 23, "and is the asset's state over HTTP")
    device.mode = "eco"
    check(device.mode.value == "eco", "string assets keep strings")

    import requests
    sent = requests.put("http://%s/device/%s/asset/mode/command" % (http, device_id),
                        json={"value": "comfort"}, headers={"Authorization": "Bearer " + token})
    check(sent.status_code == 202, "command accepted: %s %s" % (sent.status_code, sent.text))
    check(commands.get(timeout=10) == "comfort", "the actuator received the command over MQTT")
    refused = requests.put("http://%s/device/%s/asset/temperature/command" % (http, device_id),
                           json={"value": 1}, headers={"Authorization": "Bearer " + token})
    check(refused.status_code == 400, "commands go to actuators only: %s" % refused.status_code)
    firmware.loop_stop()
    print("allthingstalk SDK: all checks passed")


if __name__ == "__main__":
    main()
