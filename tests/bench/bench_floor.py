"""The floor: the least a capture of N bytes can cost on this machine, broker and TLS set-up.

    HPKE seal of N bytes (the station's suite) + one ECDSA P-256 signature
    + a raw paho MQTT 5 QoS 1 publish over mutual TLS (TCP_NODELAY both ends)
    + a subscriber in another process that answers with a small QoS 1 message
    = time until the answer is in this process (stamped on paho's thread).

The floor client uses a sandbox device of its own and publishes on that device's *status* topic
(not retained): the ACL lets the gateway identity read it and the real gateway does not subscribe
to it, so floor and capture rounds can alternate on one broker while the gateway runs.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from bench_util import Stamps, spawn, terminate
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey
from cryptography.hazmat.primitives.hpke import Suite
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from photosafe.daemon.link import no_delay, tls_context
from photosafe.protocol import topics
from photosafe.provisioning.sandbox import Site

HERE = Path(__file__).resolve().parent
SIGNED_BYTES = 1200  # about a header and a manifest: what the device key signs
ANSWER_TIMEOUT_S = 30.0


class FloorError(RuntimeError):
    pass


def _properties(packet_type: int) -> Properties:
    return Properties(packet_type)  # type: ignore[no-untyped-call]


class Responder:
    """bench_responder.py in its own process, answering the floor device's messages."""

    def __init__(self, site: Site, device_id: str, log: Path) -> None:
        self.proc = spawn(
            [
                sys.executable,
                HERE / "bench_responder.py",
                "--host",
                site.host,
                "--port",
                str(site.port),
                "--ca",
                site.ca_cert,
                "--cert",
                site.gateway_cert,
                "--key",
                site.gateway_key,
                "--subscribe",
                f"$share/bench-floor/{topics.status(device_id)}",
                "--answer-to",
                topics.ack(device_id),
                "--client-id",
                "bench-floor-responder",
            ],
            stdin=subprocess.PIPE,
            log=log,
        )
        self._log = log

    def wait_ready(self, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self._log.read_text(errors="replace") if self._log.exists() else ""
            if "ready" in text:
                return
            if "refused" in text or self.proc.poll() is not None:
                break
            time.sleep(0.02)
        raise FloorError(f"floor responder not ready:\n{self._log.read_text(errors='replace')}")

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        terminate(self.proc)


@dataclass
class _Waiting:
    correlation: bytes
    done: threading.Event
    stamps: Stamps


class FloorClient:
    """The publishing side of the floor, in this process (where the station runs too)."""

    def __init__(
        self,
        site: Site,
        device_id: str,
        *,
        suite: Suite,
        recipient: X25519PublicKey,
    ) -> None:
        files = site.device(device_id)
        key = serialization.load_pem_private_key(files.key.read_bytes(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise FloorError("the floor device key is not an EC key")
        self._key = key
        self._suite = suite
        self._recipient = recipient
        self._device = device_id
        self._topic = topics.status(device_id)
        self._info = f"photosafe-bench-floor|{device_id}".encode()
        self._signed = os.urandom(SIGNED_BYTES)
        self._payloads: dict[int, bytes] = {}
        self._waiting: _Waiting | None = None
        self._subscribed = threading.Event()
        self._client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=f"{device_id}-floor",
            protocol=MQTTProtocolVersion.MQTTv5,
        )
        self._client.tls_set_context(tls_context(site.ca_cert, files.cert, files.key))
        self._client.on_socket_open = no_delay
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_publish = self._on_publish
        self._client.on_message = self._on_message
        self._client.connect(site.host, site.port, keepalive=30)
        self._client.loop_start()
        if not self._subscribed.wait(15):
            self.close()
            raise FloorError("floor client did not connect and subscribe")

    def payload(self, size: int) -> bytes:
        """Random (incompressible) bytes of `size`, made once per size, outside any timing."""
        if size not in self._payloads:
            self._payloads[size] = os.urandom(size)
        return self._payloads[size]

    def forget(self, size: int) -> None:
        self._payloads.pop(size, None)

    def measure(self, size: int, *, properties: bool = True) -> Stamps:
        """One floor round for `size` bytes; stamps: start, sealed, published, puback, answer.

        With `properties` (the floor proper) the message carries the four MQTT 5 properties a
        capture carries (content type, response topic, correlation data, expiry); without, it
        shows what those cost paho's receive path.
        """
        payload = self.payload(size)
        stamps = Stamps()
        correlation = uuid.uuid4().bytes if properties else b""
        waiting = _Waiting(correlation, threading.Event(), stamps)
        self._waiting = waiting
        stamps.mark("start")
        self._key.sign(self._signed, ec.ECDSA(hashes.SHA256()))
        sealed = self._suite.encrypt(payload, self._recipient, info=self._info)
        stamps.mark("sealed")
        props: Properties | None = None
        if properties:
            props = _properties(PacketTypes.PUBLISH)
            props.ContentType = "application/octet-stream"
            props.ResponseTopic = topics.ack(self._device)
            props.CorrelationData = correlation
            props.MessageExpiryInterval = 60
        stamps.mark("publish")
        info = self._client.publish(self._topic, sealed, qos=1, properties=props)
        stamps.mark("published")
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            raise FloorError(f"floor publish refused by the client: {info.rc}")
        if not waiting.done.wait(ANSWER_TIMEOUT_S):
            raise FloorError(f"no answer to the floor message within {ANSWER_TIMEOUT_S}s")
        self._waiting = None
        return stamps

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    # paho's thread

    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.ConnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        client.subscribe(topics.ack(self._device), qos=1)

    def _on_subscribe(
        self,
        client: mqtt.Client,
        userdata: Any,
        mid: int,
        reason_codes: list[ReasonCode],
        properties: Properties | None,
    ) -> None:
        if not any(code.is_failure for code in reason_codes):
            self._subscribed.set()

    def _on_publish(
        self,
        client: mqtt.Client,
        userdata: Any,
        mid: int,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        waiting = self._waiting
        if waiting is not None:
            waiting.stamps.mark("puback")

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        waiting = self._waiting
        correlation = getattr(message.properties, "CorrelationData", b"")
        if waiting is not None and correlation == waiting.correlation:
            waiting.stamps.mark("answer")
            waiting.done.set()


FLOOR_STAGES = (
    ("seal+sign", "start", "sealed"),
    ("publish call", "publish", "published"),
    ("to PUBACK", "publish", "puback"),
    ("to answer", "publish", "answer"),
)


def floor_seconds(stamps: Stamps) -> float:
    total = stamps.between("start", "answer")
    if total is None:
        raise FloorError("floor round without an answer")
    return total
