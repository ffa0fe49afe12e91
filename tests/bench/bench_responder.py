"""The floor's far end, run as its own process like a gateway: answer each message, do nothing else.

    python tests/bench/bench_responder.py --host H --port P --ca CA --cert C --key K \
        --subscribe TOPIC --answer-to TOPIC --client-id ID

A paho MQTT 5 client over mutual TLS with TCP_NODELAY (set on socket open, as the gateway does)
holding a QoS 1 shared subscription. For every message it receives it publishes, at QoS 1, a
small answer (the size of a signed receipt) echoing the correlation data: the least any gateway
must do. Prints "ready" once subscribed; exits on SIGTERM or when stdin closes.
"""

from __future__ import annotations

import argparse
import signal
import socket
import ssl
import sys
import threading
from types import FrameType
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

ANSWER = b"a" * 450  # about the size of a signed receipt


def main() -> int:
    parser = argparse.ArgumentParser()
    for name in ("host", "ca", "cert", "key", "subscribe", "answer-to", "client-id"):
        parser.add_argument(f"--{name}", required=True)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()

    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=args.ca)
    context.load_cert_chain(args.cert, args.key)
    client = mqtt.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=args.client_id,
        protocol=MQTTProtocolVersion.MQTTv5,
    )
    client.tls_set_context(context)

    def on_socket_open(client: mqtt.Client, userdata: Any, sock: Any) -> None:
        if isinstance(sock, socket.socket):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def on_connect(
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.ConnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        client.subscribe(args.subscribe, qos=1)

    def on_subscribe(
        client: mqtt.Client,
        userdata: Any,
        mid: int,
        reason_codes: list[ReasonCode],
        properties: Properties | None,
    ) -> None:
        print("ready" if not any(c.is_failure for c in reason_codes) else "refused", flush=True)

    def on_message(client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        props.CorrelationData = getattr(message.properties, "CorrelationData", b"")
        props.ContentType = "application/json"
        client.publish(args.answer_to, ANSWER, qos=1, properties=props)

    client.on_socket_open = on_socket_open
    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_message = on_message
    client.connect(args.host, args.port, keepalive=30)
    client.loop_start()

    def read_stdin() -> None:
        sys.stdin.read()
        stop.set()

    threading.Thread(target=read_stdin, daemon=True).start()
    stop.wait()
    client.disconnect()
    client.loop_stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
