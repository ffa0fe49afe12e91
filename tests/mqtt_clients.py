"""Test-only paho clients that record what the broker actually said.

Every client speaks MQTT 5 with callback API version 2 over mutual TLS, sets TCP_NODELAY after
connecting (REFERENCE 9), and never reconnects by itself, so a refusal stays a refusal. A
`Recorder` keeps the CONNACK, each PUBACK reason code by message id (paho's `is_published()`
says True even for a refused publish: REFERENCE 2, pitfall 1), SUBACKs and received messages.
"""

from __future__ import annotations

import queue
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from photosafe.protocol.envelope import CONTENT_TYPE
from photosafe.provisioning.sandbox import Site

WAIT = 5.0  # longest a test waits for something that should happen
QUIET = 0.3  # how long a test listens for something that should not happen

_T = TypeVar("_T")


class _ClosingSSLSocket(ssl.SSLSocket):
    """Closes itself when the TLS handshake fails.

    paho's `_ssl_wrap_socket` lets a failed `do_handshake()` escape without closing the socket,
    which leaks it (a ResourceWarning, an error under `filterwarnings = error`).
    """

    def do_handshake(self, block: bool = False) -> None:
        try:
            super().do_handshake(block)
        except BaseException:
            self.close()
            raise


def tls_context(ca: Path, cert: Path | None = None, key: Path | None = None) -> ssl.SSLContext:
    """Verify the broker against `ca` (hostname included); present `cert` if given."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_verify_locations(cafile=ca)
    if cert is not None:
        context.load_cert_chain(certfile=cert, keyfile=key)
    context.sslsocket_class = _ClosingSSLSocket
    return context


@dataclass(frozen=True)
class ConnectResult:
    """How a connection attempt ended: a CONNACK, or no CONNACK and why."""

    reason_code: ReasonCode | None
    properties: Properties | None
    error: str | None = None

    @property
    def accepted(self) -> bool:
        return self.reason_code is not None and not self.reason_code.is_failure


class Recorder:
    """Thread-safe record of one client's callbacks (they all run on paho's network thread)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self.connect: ConnectResult | None = None
        self.pubacks: dict[int, ReasonCode] = {}
        self.subacks: dict[int, list[ReasonCode]] = {}
        self.disconnects: list[ReasonCode] = []
        self.messages: queue.Queue[mqtt.MQTTMessage] = queue.Queue()

    def attach(self, client: mqtt.Client) -> None:
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message

    # -- waiting ------------------------------------------------------------------------------

    def wait_connect(self, timeout: float = WAIT) -> ConnectResult:
        """The CONNACK (or the failure that replaced it)."""
        return self._wait(lambda: self.connect, timeout, "a CONNACK")

    def wait_puback(self, mid: int, timeout: float = WAIT) -> ReasonCode:
        return self._wait(lambda: self.pubacks.get(mid), timeout, f"PUBACK for mid {mid}")

    def wait_suback(self, mid: int, timeout: float = WAIT) -> list[ReasonCode]:
        return self._wait(lambda: self.subacks.get(mid), timeout, f"SUBACK for mid {mid}")

    def get(self, timeout: float = WAIT) -> mqtt.MQTTMessage:
        """The next message received; fails the test if none arrives in time."""
        try:
            return self.messages.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no message arrived within {timeout}s") from None

    def until(self, sentinel: bytes, timeout: float = WAIT) -> list[mqtt.MQTTMessage]:
        """Everything received before a message whose payload is `sentinel`.

        The broker delivers to one client in publish order, so a sentinel published after the
        messages under test proves that any of them that were going to arrive have arrived:
        no guessing how long to listen for something that should not come.
        """
        received: list[mqtt.MQTTMessage] = []
        deadline = time.monotonic() + timeout
        while True:
            message = self.get(max(deadline - time.monotonic(), 0.0))
            if message.payload == sentinel:
                return received
            received.append(message)

    def drain(self, quiet: float = QUIET) -> list[mqtt.MQTTMessage]:
        """Everything received, waiting until nothing new has come for `quiet` seconds."""
        received: list[mqtt.MQTTMessage] = []
        while True:
            try:
                received.append(self.messages.get(timeout=quiet))
            except queue.Empty:
                return received

    def _wait(self, probe: Callable[[], _T | None], timeout: float, what: str) -> _T:
        deadline = time.monotonic() + timeout
        with self._cond:
            while (value := probe()) is None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"no {what} within {timeout}s")
                self._cond.wait(remaining)
            return value

    # -- callbacks (paho's network thread) ----------------------------------------------------

    def connect_failed(self, error: str) -> None:
        self._set_connect(ConnectResult(None, None, error))

    def _set_connect(self, result: ConnectResult) -> None:
        with self._cond:
            if self.connect is None:
                self.connect = result
            self._cond.notify_all()

    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.ConnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        self._set_connect(ConnectResult(reason_code, properties))

    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        self.connect_failed("connection failed")

    def _on_disconnect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.DisconnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        with self._cond:
            self.disconnects.append(reason_code)
        self.connect_failed(f"disconnected before CONNACK: {reason_code}")

    def _on_publish(
        self,
        client: mqtt.Client,
        userdata: Any,
        mid: int,
        reason_code: ReasonCode,
        properties: Properties,
    ) -> None:
        with self._cond:
            self.pubacks[mid] = reason_code
            self._cond.notify_all()

    def _on_subscribe(
        self,
        client: mqtt.Client,
        userdata: Any,
        mid: int,
        reason_codes: list[ReasonCode],
        properties: Properties | None,
    ) -> None:
        with self._cond:
            self.subacks[mid] = list(reason_codes)
            self._cond.notify_all()

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        self.messages.put(message)


def connect_client(
    site: Site,
    cert: Path | None,
    key: Path | None,
    client_id: str,
    *,
    ca: Path | None = None,
    username: str | None = None,
    keepalive: int = 30,
) -> tuple[mqtt.Client, Recorder]:
    """Connect (blocking for TCP + TLS + CONNECT), then run paho's loop in its thread.

    `cert`/`key` None connects without a client certificate; `ca` replaces the site CA as the
    trust anchor for the broker. A TLS or socket failure is recorded, not raised: see
    `Recorder.wait_connect()`. Always hand the client to `close_client()` afterwards.
    """
    client = mqtt.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=MQTTProtocolVersion.MQTTv5,
        reconnect_on_failure=False,
    )
    recorder = Recorder()
    recorder.attach(client)
    client.tls_set_context(tls_context(ca or site.ca_cert, cert, key))
    if username is not None:
        client.username_pw_set(username, "not-a-password")
    try:
        client.connect(site.host, site.port, keepalive=keepalive)
    except OSError as exc:  # ssl.SSLError included
        recorder.connect_failed(f"{type(exc).__name__}: {exc}")
        return client, recorder
    sock = client.socket()
    if isinstance(sock, socket.socket):  # an SSLSocket is one
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    client.loop_start()
    return client, recorder


def close_client(client: mqtt.Client) -> None:
    """Disconnect, stop the network thread and close every socket the client holds."""
    client.disconnect()
    client.loop_stop()
    # paho closes its wake-up socket pair only in __del__; do it now, not at garbage collection.
    client._reset_sockets()


def publish(
    client: mqtt.Client,
    recorder: Recorder,
    topic: str,
    payload: bytes,
    *,
    qos: int = 1,
    retain: bool = False,
    properties: Properties | None = None,
    timeout: float = WAIT,
) -> ReasonCode:
    """Publish at QoS 1 and return the PUBACK reason code the broker sent."""
    info = client.publish(topic, payload, qos=qos, retain=retain, properties=properties)
    return recorder.wait_puback(info.mid, timeout)


def subscribe(
    client: mqtt.Client, recorder: Recorder, topic: str, *, qos: int = 1, timeout: float = WAIT
) -> list[ReasonCode]:
    """Subscribe and return the SUBACK reason codes."""
    result, mid = client.subscribe(topic, qos=qos)
    assert result == mqtt.MQTT_ERR_SUCCESS, f"subscribe not sent: {result}"
    assert mid is not None
    return recorder.wait_suback(mid, timeout)


def capture_properties(
    *,
    content_type: str = CONTENT_TYPE,
    response_topic: str,
    correlation: bytes,
    expiry: int = 300,
) -> Properties:
    props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    props.ContentType = content_type
    props.ResponseTopic = response_topic
    props.CorrelationData = correlation
    props.MessageExpiryInterval = expiry
    return props


def prop(properties: Properties | None, name: str) -> Any:
    """An MQTT 5 property by name, or None (paho sets them as untyped dynamic attributes)."""
    return getattr(properties, name, None)


@dataclass
class ClientPool:
    """Connects identities of one site by name and closes every client it made."""

    site: Site
    clients: list[mqtt.Client]

    def connect(
        self,
        identity: str,
        client_id: str | None = None,
        *,
        expect_accept: bool = True,
        username: str | None = None,
    ) -> tuple[mqtt.Client, Recorder]:
        """`identity`: a device id, "gateway" or "fleet". Waits for the CONNACK."""
        cert, key = self.files(identity)
        client, recorder = connect_client(
            self.site, cert, key, client_id or f"{identity}-{len(self.clients)}", username=username
        )
        self.clients.append(client)
        if expect_accept:
            result = recorder.wait_connect()
            assert result.accepted, f"{identity} was refused: {result}"
        return client, recorder

    def files(self, identity: str) -> tuple[Path, Path]:
        if identity == "gateway":
            return self.site.gateway_cert, self.site.gateway_key
        if identity == "fleet":
            return self.site.fleet_cert, self.site.fleet_key
        device = self.site.device(identity)
        return device.cert, device.key

    def track(self, client: mqtt.Client) -> None:
        self.clients.append(client)

    def close_all(self) -> None:
        while self.clients:
            close_client(self.clients.pop())
