"""The station's MQTT link: mutual TLS to the broker, captures out, signed receipts in.

paho-mqtt 2.x, MQTT 5, callback API version 2. Three of paho's habits shape this module
(REFERENCE.md section 2): a publish the broker refuses still looks published unless on_publish
reads the reason code; a payload over the broker's limit makes paho reconnect and resend forever,
so the size is checked here first; and without TCP_NODELAY every leg waits ~40 ms for Nagle.

Every callback runs on paho's network thread and only hands plain facts to a `LinkListener`;
the station's event loop does the thinking. Nothing here logs or sees patient data: the payloads
are sealed.
"""

from __future__ import annotations

import logging
import random
import socket
import ssl
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from photosafe.protocol import topics
from photosafe.protocol.envelope import CONTENT_TYPE
from photosafe.protocol.fleet import StationStatus

log = logging.getLogger(__name__)

# Room for the PUBLISH fixed header, topic and properties inside the broker's packet limit.
PACKET_OVERHEAD = 1024


class MessageTooLarge(Exception):
    """The capture is larger than the broker or the configuration allows."""


class NotConnected(Exception):
    """There is no broker connection to publish on."""


class LinkListener(Protocol):
    """Told what happens on the link; called on paho's thread, so implementations only post."""

    def link_up(self) -> None: ...
    def link_down(self, reason: str) -> None: ...
    def publish_result(self, mid: int, refusal: str | None) -> None: ...
    def ack_message(self, payload: bytes) -> None: ...
    def config_message(self, payload: bytes) -> None: ...


@dataclass(frozen=True)
class LinkSettings:
    device_id: str
    host: str
    port: int
    ca_file: Path
    cert_file: Path
    key_file: Path
    keepalive_s: int = 30
    max_message_bytes: int = 16 * 1024 * 1024
    reconnect_min_s: float = 0.5
    reconnect_max_s: float = 30.0
    session_expiry_s: int = 300


class _ClosingSSLSocket(ssl.SSLSocket):
    """paho lets a failed TLS handshake escape without closing the socket: a station whose
    certificate the broker refuses would leak one socket per reconnect attempt until it ran out
    of file descriptors. Close it here."""

    def do_handshake(self, block: bool = False) -> None:
        try:
            super().do_handshake(block)
        except BaseException:
            self.close()
            raise


def tls_context(ca_file: Path, cert_file: Path, key_file: Path) -> ssl.SSLContext:
    """Mutual TLS: verify the broker against the hospital CA, present our own certificate."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca_file))
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(str(cert_file), str(key_file))
    context.sslsocket_class = _ClosingSSLSocket
    return context


class MqttLink:
    def __init__(self, settings: LinkSettings, listener: LinkListener) -> None:
        self.settings = settings
        self._listener = listener
        self._broker_max_packet: int | None = None
        self._attempt = 0
        self._status = StationStatus(device=settings.device_id, online=True)
        self._client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=settings.device_id,
            protocol=MQTTProtocolVersion.MQTTv5,
        )
        self._client.tls_set_context(
            tls_context(settings.ca_file, settings.cert_file, settings.key_file)
        )
        self._client.will_set(
            topics.status(settings.device_id), self._offline(), qos=1, retain=True
        )
        self._client.reconnect_delay_set(1, int(max(1, settings.reconnect_max_s)))
        self._client.on_socket_open = no_delay
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_publish = self._on_publish
        self._client.on_message = self._on_message

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Connect in the background; reconnects by itself until stop()."""
        properties = _properties(PacketTypes.CONNECT)
        # Keep the session (and its ack subscription) across short outages.
        properties.SessionExpiryInterval = self.settings.session_expiry_s
        self._client.connect_async(
            self.settings.host,
            self.settings.port,
            keepalive=self.settings.keepalive_s,
            clean_start=False,
            properties=properties,
        )
        self._client.loop_start()

    def stop(self) -> None:
        """Say offline (retained), disconnect cleanly, stop the network thread."""
        if self._client.is_connected():
            info = self._client.publish(
                topics.status(self.settings.device_id), self._offline(), qos=1, retain=True
            )
            info.wait_for_publish(timeout=2)
        self._client.disconnect()
        self._client.loop_stop()
        self._client._reset_sockets()  # paho closes its wake-up pair only at garbage collection

    @property
    def connected(self) -> bool:
        return self._client.is_connected()

    @property
    def max_payload(self) -> int:
        """The largest capture this link sends: our limit or the broker's, whichever is less."""
        limit = self.settings.max_message_bytes
        if self._broker_max_packet:
            limit = min(limit, self._broker_max_packet - PACKET_OVERHEAD)
        return limit

    # -- sending -----------------------------------------------------------------------------

    def publish_capture(self, capture_id: uuid.UUID, sealed: bytes, expiry_s: int) -> int:
        """Publish a sealed capture at QoS 1; returns the mid that publish_result will report."""
        if len(sealed) > self.max_payload:
            raise MessageTooLarge(
                f"capture is {len(sealed)} bytes; the limit is {self.max_payload} bytes"
            )
        if not self._client.is_connected():
            raise NotConnected("not connected to the broker")
        properties = _properties(PacketTypes.PUBLISH)
        properties.ContentType = CONTENT_TYPE
        properties.ResponseTopic = topics.ack(self.settings.device_id)
        properties.CorrelationData = capture_id.bytes
        properties.MessageExpiryInterval = max(1, expiry_s)
        info = self._client.publish(
            topics.capture(self.settings.device_id), sealed, qos=1, properties=properties
        )
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            # paho keeps it queued and would send it after a reconnect; we republish ourselves.
            raise NotConnected(f"publish not accepted by the client: {mqtt.error_string(info.rc)}")
        return info.mid

    def publish_status(self, status: StationStatus) -> None:
        """Retained station status (its model admits no patient data); repeated on reconnect."""
        self._status = status
        if self._client.is_connected():
            self._client.publish(
                topics.status(self.settings.device_id), status.to_bytes(), qos=1, retain=True
            )

    # -- paho callbacks (network thread) -----------------------------------------------------

    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.ConnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if reason_code.is_failure:
            log.warning("link.refused", extra={"reason": str(reason_code)})
            return
        self._attempt = 0
        self._broker_max_packet = getattr(properties, "MaximumPacketSize", None)
        client.subscribe(
            [(topics.ack(self.settings.device_id), 1), (topics.config(self.settings.device_id), 1)]
        )
        client.publish(
            topics.status(self.settings.device_id), self._status.to_bytes(), qos=1, retain=True
        )
        log.info("link.up", extra={"session_present": bool(flags.session_present)})
        self._listener.link_up()

    def _on_disconnect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.DisconnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        # Jittered exponential backoff: paho doubles from min_delay, so set both ends ourselves.
        self._attempt += 1
        ceiling = min(
            self.settings.reconnect_max_s, self.settings.reconnect_min_s * 2**self._attempt
        )
        delay = random.uniform(ceiling / 2, ceiling)  # noqa: S311 - jitter, not a secret
        client.reconnect_delay_set(delay, delay)  # type: ignore[arg-type]  # floats work
        log.info("link.down", extra={"reason": str(reason_code), "retry_s": round(delay, 2)})
        self._listener.link_down(str(reason_code))

    def _on_publish(
        self,
        client: mqtt.Client,
        userdata: Any,
        mid: int,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        # A refused publish (0x87 not authorised, 0x97 quota...) still arrives here as "published".
        refusal = str(reason_code) if reason_code.is_failure else None
        self._listener.publish_result(mid, refusal)

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        if message.topic == topics.ack(self.settings.device_id):
            self._listener.ack_message(bytes(message.payload))
        elif message.topic == topics.config(self.settings.device_id):
            self._listener.config_message(bytes(message.payload))

    def _offline(self) -> bytes:
        return StationStatus(device=self.settings.device_id, online=False).to_bytes()


def no_delay(client: mqtt.Client, userdata: Any, sock: Any) -> None:
    """paho's on_socket_open: TCP_NODELAY on every (re)connect's socket, before CONNECT is sent.

    Without it each leg waits ~40 ms for Nagle (REFERENCE.md section 9)."""
    if isinstance(sock, socket.socket):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _properties(packet_type: int) -> Properties:
    return Properties(packet_type)  # type: ignore[no-untyped-call]  # paho's class is untyped
