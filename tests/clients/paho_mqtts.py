"""Drives Tessera's MQTTS listener with paho-mqtt 1.6.1, the MQTT client most device scripts and gateways use,
unchanged: TLS with the test's CA as the only trust anchor and the host name checked, CONNECT with a device token
(AllThingsTalk style, token as user name), a QoS 1 publish acknowledged; and the same client without that CA
refused at the handshake.

Run by the Rust test `tls::paho_connects_over_mqtts_trusting_the_ca`, which passes TESSERA_MQTTS (host:port),
TESSERA_CA (a PEM file), TESSERA_DEVICE and TESSERA_TOKEN. Exits non-zero with a message on the first mismatch.
"""

import json
import os
import queue
import ssl
import sys

import paho.mqtt.client as paho_mqtt


def check(condition, message):
    if not condition:
        print("FAILED: " + message, file=sys.stderr)
        sys.exit(1)


def client(token, ca_file):
    mqtt = paho_mqtt.Client(client_id="paho-mqtts", protocol=paho_mqtt.MQTTv311)
    mqtt.username_pw_set(token, "")
    context = ssl.create_default_context(cafile=ca_file) if ca_file else ssl.create_default_context()
    mqtt.tls_set_context(context)
    return mqtt


def main():
    address, ca_file, device, token = (os.environ[name] for name in
                                       ("TESSERA_MQTTS", "TESSERA_CA", "TESSERA_DEVICE", "TESSERA_TOKEN"))
    host, port = address.rsplit(":", 1)
    # The certificate is for localhost: the name is checked, not only the chain.
    host = "localhost" if host == "127.0.0.1" else host

    events = queue.Queue()
    mqtt = client(token, ca_file)
    mqtt.on_connect = lambda _client, _userdata, _flags, code: events.put(("connack", code))
    mqtt.on_publish = lambda _client, _userdata, mid: events.put(("puback", mid))
    mqtt.connect(host, int(port), keepalive=30)
    mqtt.loop_start()
    kind, code = events.get(timeout=10)
    check(kind == "connack" and code == 0, f"CONNACK accepted, got {kind} {code}")
    published = mqtt.publish(f"device/{device}/asset/t/state", json.dumps({"value": 21}), qos=1)
    kind, mid = events.get(timeout=10)
    check(kind == "puback" and mid == published.mid, f"PUBACK of the publish, got {kind} {mid}")
    mqtt.disconnect()
    mqtt.loop_stop()

    # Without the test's CA (the system's trust store only) the handshake is refused.
    stranger = client(token, None)
    try:
        stranger.connect(host, int(port), keepalive=30)
        check(False, "a client that does not trust the CA connected")
    except ssl.SSLCertVerificationError:
        pass
    print("paho over MQTTS: ok")


main()
