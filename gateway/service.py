"""The gateway service: take sealed captures off MQTT, open, file, and answer each one.

`CaptureHandler.handle_capture` is the whole decision, with no MQTT in it; `Gateway` wires it to
a paho client (MQTT 5, mutual TLS, a persistent session on a shared subscription, so captures
wait in the broker while every gateway is away and several gateways split the load).

Logs carry event names, device ids, capture ids, statuses and error class names; never patient
identifiers, names or bytes.
"""

from __future__ import annotations

import datetime as dt
import logging
import signal
import socket
import ssl
import threading
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType
from typing import Any

import paho.mqtt.client as mqtt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from photosafe.gateway.config import (
    DicomWebSinkSection,
    FolderSinkSection,
    GatewayConfig,
    SinkSection,
    tls_context,
)
from photosafe.gateway.sink import CaptureConflict, FolderSink, Sink, SinkRejected
from photosafe.protocol import ack, topics
from photosafe.protocol.ack import AckStatus, Receipt
from photosafe.protocol.envelope import DeviceTrust, open_sealed, read_header
from photosafe.protocol.errors import EnvelopeError

log = logging.getLogger(__name__)

ACK_CONTENT_TYPE = "application/json"
MAX_REASON = 300  # Receipt.reason's limit
STOP_GRACE_S = 5.0


@dataclass(frozen=True)
class Reply:
    """The ack to publish for one capture."""

    ack_topic: str
    ack_bytes: bytes
    correlation_data: bytes
    receipt: Receipt


def _event(level: int, name: str, **fields: object) -> None:
    """One log line per event: a stable name, then key=value; the same keys as `extra`."""
    text = " ".join([name, *(f"{k}={v}" for k, v in fields.items() if v is not None)])
    log.log(level, text, extra={"event": name, **fields})


class CaptureHandler:
    """Decides what becomes of one capture message. No MQTT, so tests need no broker."""

    def __init__(
        self,
        *,
        recipient_keys: dict[str, X25519PrivateKey],
        trust: DeviceTrust,
        signing_key: Ed25519PrivateKey,
        sink: Sink,
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        self._keys = recipient_keys
        self._trust = trust
        self._signing_key = signing_key
        self._sink = sink
        self._clock = clock

    def handle_capture(
        self, topic: str, payload: bytes, correlation_data: bytes | None
    ) -> Reply | None:
        """The ack for this capture, or None when there is nothing that may be acked."""
        device = topics.device_of(topic)
        if device is None or not topic.endswith("/capture"):
            _event(logging.WARNING, "capture.dropped", reason="not a capture topic")
            return None
        try:
            header = read_header(payload)
        except EnvelopeError as exc:
            # The header is unreadable, so the id comes from the MQTT correlation data.
            capture = _capture_id(correlation_data)
            if capture is None:  # no id: no station could match an ack, so none is sent
                _event(logging.WARNING, "capture.dropped", device=device, reason="no capture id")
                return None
            return self._rejected(device, capture, payload, exc)
        capture = header.capture
        if header.device != device:
            # The broker vouches for the topic's device (ACL); the header claims another.
            reason = "DeviceMismatch: the header names another device than the topic"
            return self._rejected(device, capture, payload, reason)
        try:
            opened = open_sealed(payload, recipient_keys=self._keys, trust=self._trust)
            filed = self._sink.store(opened)
        except (EnvelopeError, CaptureConflict, SinkRejected) as exc:
            return self._rejected(device, capture, payload, exc)
        except OSError as exc:
            # The record store failed: answer nothing. "rejected" would make the station give
            # up and ask for a retake (the patient may have gone); with no answer it publishes
            # the same capture again until its own expiry, and it is filed once the store is
            # back. Either way nothing claims "stored".
            _event(
                logging.ERROR,
                "capture.store_failed",
                device=device,
                capture=capture,
                error=type(exc).__name__,
                errno=exc.errno,
            )
            return None
        status = AckStatus.DUPLICATE if filed.duplicate else AckStatus.STORED
        event = "capture.duplicate" if filed.duplicate else "capture.filed"
        _event(logging.INFO, event, device=device, capture=capture, status=status.value)
        return self._reply(device, capture, payload, status, record=filed.record)

    def _rejected(
        self, device: str, capture: uuid.UUID, payload: bytes, why: Exception | str
    ) -> Reply:
        # EnvelopeError, CaptureConflict and SinkRejected messages carry no patient data.
        reason = why if isinstance(why, str) else f"{type(why).__name__}: {why}"
        _event(
            logging.WARNING,
            "capture.rejected",
            device=device,
            capture=capture,
            status="rejected",
            reason_class=reason.split(":", 1)[0],
        )
        return self._reply(device, capture, payload, AckStatus.REJECTED, reason=reason[:MAX_REASON])

    def _reply(
        self,
        device: str,
        capture: uuid.UUID,
        payload: bytes,
        status: AckStatus,
        *,
        reason: str | None = None,
        record: str | None = None,
    ) -> Reply:
        receipt = ack.make_receipt(
            signing_key=self._signing_key,
            device=device,
            capture=capture,
            sealed=payload,
            status=status,
            reason=reason,
            record=record,
            now=self._clock(),
        )
        body = ack.sign(receipt, self._signing_key)
        return Reply(topics.ack(device), body, capture.bytes, receipt)


def _capture_id(correlation_data: bytes | None) -> uuid.UUID | None:
    if correlation_data is None or len(correlation_data) != 16:
        return None
    return uuid.UUID(bytes=correlation_data)


class _ClosingSSLSocket(ssl.SSLSocket):
    """paho lets a failed TLS handshake escape without closing the socket (a leak on every
    reconnect attempt against a broker that refuses us): close it here."""

    def do_handshake(self, block: bool = False) -> None:
        try:
            super().do_handshake(block)
        except BaseException:
            self.close()
            raise


class GatewayError(RuntimeError):
    """The gateway could not connect or subscribe in time."""


def open_sink(section: SinkSection) -> Sink:
    """The record store the config names. The PACS sinks (pydicom, pynetdicom, dicomweb-client:
    the `dicom` extra) are imported only when one is configured."""
    if isinstance(section, FolderSinkSection):
        return FolderSink(section.path)
    from photosafe.gateway import sink_pacs

    if isinstance(section, DicomWebSinkSection):
        password, token = section.secrets()
        return sink_pacs.StowSink(
            section.url,
            username=section.username,
            password=password,
            token=token,
            ca_file=section.ca_file,
            timeout=section.timeout_s,
            verify=section.verify,
        )
    return sink_pacs.CStoreSink(
        section.host,
        section.port,
        section.called_aet,
        section.calling_aet,
        timeout=section.timeout_s,
        verify=section.verify,
    )


class Gateway:
    """One gateway process: a paho client around a CaptureHandler."""

    def __init__(self, config: GatewayConfig, *, sink: Sink | None = None) -> None:
        self.config = config
        material = config.material()
        self.handler = CaptureHandler(
            recipient_keys=material.recipient_keys,
            trust=material.trust,
            signing_key=material.signing_key,
            sink=sink or open_sink(config.sink),
        )
        self.counts: Counter[str] = Counter()  # statuses answered, and "unanswered"
        self._counts_lock = threading.Lock()
        self._subscribed = threading.Event()
        self._stopping = threading.Event()
        self._disconnected = threading.Event()
        self._client = self._make_client()

    def _make_client(self) -> mqtt.Client:
        broker = self.config.broker
        client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=broker.client_id,
            protocol=MQTTProtocolVersion.MQTTv5,
        )
        context = tls_context(broker)
        context.sslsocket_class = _ClosingSSLSocket
        client.tls_set_context(context)
        client.reconnect_delay_set(min_delay=1, max_delay=30)
        client.on_socket_open = _no_delay
        client.on_connect = self._on_connect
        client.on_connect_fail = lambda client, userdata: _event(
            logging.WARNING, "gateway.connect_failed", host=self.config.broker.host
        )
        client.on_subscribe = self._on_subscribe
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        return client

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self, wait: float | None = 10.0) -> None:
        """Connect in the background (paho's thread retries until the broker is there); with
        `wait`, block until the capture subscription is confirmed."""
        broker = self.config.broker
        props = _properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = broker.session_expiry_s
        # clean_start False: QoS 1 captures published while we were away wait in our session.
        self._client.connect_async(
            broker.host,
            broker.port,
            keepalive=broker.keepalive,
            clean_start=False,
            properties=props,
        )
        self._client.loop_start()
        if wait is not None and not self.wait_subscribed(wait):
            self.stop()
            raise GatewayError(f"not subscribed to the broker within {wait}s")

    def wait_subscribed(self, timeout: float) -> bool:
        """True once connected with the capture subscription in place."""
        return self._subscribed.wait(timeout)

    def stop(self) -> None:
        """Disconnect cleanly, stop paho's thread and close every socket it holds."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        self._disconnected.clear()
        if self._client.disconnect() == mqtt.MQTT_ERR_SUCCESS:
            # paho sends what is queued (acks) before the DISCONNECT; let it, then stop it.
            self._disconnected.wait(STOP_GRACE_S)
        self._client.loop_stop()
        self._client._reset_sockets()  # paho closes its wake-up pair only at garbage collection
        _event(logging.INFO, "gateway.stopped", **dict(self.counts))

    def run_forever(self) -> None:
        """Serve until SIGTERM or SIGINT (main thread only)."""
        stop = threading.Event()

        def on_signal(signum: int, frame: FrameType | None) -> None:
            stop.set()

        previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            self.start(wait=None)
            _event(logging.INFO, "gateway.started", client_id=self.config.broker.client_id)
            stop.wait()
        finally:
            self.stop()
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    # -- paho callbacks (its network thread) ----------------------------------------------------

    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.ConnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if reason_code.is_failure:
            _event(logging.ERROR, "gateway.connect_refused", reason=str(reason_code))
            return
        _event(logging.INFO, "gateway.connected", session_present=flags.session_present)
        # Subscribe on every connect: harmless with a present session, needed after it expired.
        client.subscribe(topics.gateway_capture_subscription(self.config.broker.share_group), 1)

    def _on_subscribe(
        self,
        client: mqtt.Client,
        userdata: Any,
        mid: int,
        reason_codes: list[ReasonCode],
        properties: Properties | None,
    ) -> None:
        if any(code.is_failure for code in reason_codes):
            _event(logging.ERROR, "gateway.subscribe_refused", reason=str(reason_codes[0]))
            return
        _event(logging.INFO, "gateway.subscribed", group=self.config.broker.share_group)
        self._subscribed.set()

    def _on_disconnect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.DisconnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        self._subscribed.clear()
        self._disconnected.set()
        if not self._stopping.is_set():
            _event(logging.WARNING, "gateway.disconnected", reason=str(reason_code))

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        # Runs on paho's thread, which sends the PUBACK only after this returns; filing here
        # (not in a worker) means a crash mid-filing leaves the capture unacked in our session.
        correlation = getattr(message.properties, "CorrelationData", None)
        try:
            reply = self.handler.handle_capture(message.topic, bytes(message.payload), correlation)
        except Exception as exc:  # a bug must not kill the network thread
            _event(logging.ERROR, "capture.failed", error=type(exc).__name__)
            reply = None
        if reply is None:
            self._count("unanswered")
            return
        props = _properties(PacketTypes.PUBLISH)
        props.CorrelationData = reply.correlation_data
        props.ContentType = ACK_CONTENT_TYPE
        # Always the device's own ack topic: a message's ResponseTopic is never trusted.
        info = client.publish(reply.ack_topic, reply.ack_bytes, qos=1, properties=props)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:  # queued all the same; sent after reconnect
            _event(logging.WARNING, "ack.queued", capture=reply.receipt.capture, rc=info.rc)
        self._count(reply.receipt.status.value)

    def _count(self, what: str) -> None:
        with self._counts_lock:
            self.counts[what] += 1


def _no_delay(client: mqtt.Client, userdata: Any, sock: Any) -> None:
    """Nagle costs ~40 ms per leg (REFERENCE 9); set on every (re)connect's socket."""
    if isinstance(sock, socket.socket):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _properties(packet_type: int) -> Properties:
    return Properties(packet_type)  # type: ignore[no-untyped-call]  # paho leaves it untyped
