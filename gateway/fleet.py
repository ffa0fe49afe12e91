"""`photosafe-gateway fleet`: the fleet's health, read from the stations' retained statuses.

The gateway identity may read every `photosafe/v1/+/status` topic (broker ACL). This connects
with a throwaway client id and a clean session (never the running gateway's own client id,
which the broker would then disconnect), collects the retained statuses for `wait` seconds,
and prints one row per station with what needs doing:

    DEVICE     STATE    LAST SEEN                 CERT DAYS  OUTBOX  CONFIG  WARNINGS
    ward-a-01  online   2026-11-25 09:30 (2m ago)       300       0  v3      -
"""

from __future__ import annotations

import datetime as dt
import os
import ssl
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TextIO

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from photosafe.gateway.config import BrokerSection, tls_context
from photosafe.protocol import topics
from photosafe.protocol.fleet import StationStatus, StatusInvalid, parse_status

CERT_WARN_DAYS = 30
CONNECT_TIMEOUT = 10.0
STATUS_SUBSCRIPTION = f"{topics.ROOT}/+/status"


class FleetError(RuntimeError):
    """The broker could not be reached, or refused us."""


class _ClosingSSLSocket(ssl.SSLSocket):
    """Closes itself when the TLS handshake fails (paho would leak it)."""

    def do_handshake(self, block: bool = False) -> None:
        try:
            super().do_handshake(block)
        except BaseException:
            self.close()
            raise


def collect(broker: BrokerSection, wait: float) -> dict[str, bytes]:
    """topic -> latest payload of every status topic, for `wait` seconds after subscribing."""
    client = mqtt.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=f"{broker.client_id}-fleet-{os.getpid()}",
        protocol=MQTTProtocolVersion.MQTTv5,
        reconnect_on_failure=False,
    )
    context = tls_context(broker)
    context.sslsocket_class = _ClosingSSLSocket
    client.tls_set_context(context)
    cond = threading.Condition()
    state: dict[str, Any] = {}
    received: dict[str, bytes] = {}

    def on_connect(c: mqtt.Client, u: Any, flags: Any, reason: Any, props: Any) -> None:
        with cond:
            state["connack"] = reason
            cond.notify_all()
        if not reason.is_failure:
            c.subscribe(STATUS_SUBSCRIPTION, qos=1)

    def on_subscribe(c: mqtt.Client, u: Any, mid: int, reasons: Any, props: Any) -> None:
        with cond:
            state["suback"] = list(reasons)
            cond.notify_all()

    def on_message(c: mqtt.Client, u: Any, message: mqtt.MQTTMessage) -> None:
        with cond:
            received[message.topic] = bytes(message.payload)

    def on_disconnect(c: mqtt.Client, u: Any, flags: Any, reason: Any, props: Any) -> None:
        with cond:
            state.setdefault("connack", reason)  # gone before any CONNACK: a refusal
            cond.notify_all()

    client.on_connect, client.on_subscribe = on_connect, on_subscribe
    client.on_message, client.on_disconnect = on_message, on_disconnect
    try:
        client.connect(broker.host, broker.port, keepalive=30, clean_start=True)
    except OSError as exc:  # ssl.SSLError included
        client._reset_sockets()
        raise FleetError(f"cannot connect to {broker.host}:{broker.port}: {exc}") from None
    client.loop_start()
    try:
        with cond:
            if not cond.wait_for(lambda: "connack" in state, CONNECT_TIMEOUT):
                raise FleetError(f"no answer from {broker.host}:{broker.port}")
            if state["connack"].is_failure:
                raise FleetError(f"the broker refused the gateway identity: {state['connack']}")
            if not cond.wait_for(lambda: "suback" in state, CONNECT_TIMEOUT):
                raise FleetError("the broker did not confirm the status subscription")
            if any(code.is_failure for code in state["suback"]):
                raise FleetError("the broker refused the status subscription (check the ACL)")
            cond.wait_for(lambda: False, wait)  # retained statuses arrive now
            return dict(received)
    finally:
        client.disconnect()
        client.loop_stop()
        client._reset_sockets()


# -- the table (pure) -------------------------------------------------------------------------


@dataclass(frozen=True)
class FleetRow:
    device: str
    status: StationStatus | None
    problem: str | None = None  # why the status could not be read

    def warnings(self, now: dt.datetime) -> list[str]:
        status = self.status
        if status is None:
            return [f"status unreadable ({self.problem})"]
        found = []
        if not status.online:
            found.append("offline")
        days = status.cert_days_left
        if days is not None and days < 0:
            found.append("certificate expired: renew now")
        elif days is not None and days < CERT_WARN_DAYS:
            found.append(f"certificate expires in {days} days: renew")
        if status.clock_synchronised is False:
            found.append("clock not synchronised")
        if status.last_error:
            found.append(f"error {status.last_error}")
        if status.config_error:
            found.append(f"config ignored: {status.config_error}")
        if status.at is not None and status.at > now + dt.timedelta(minutes=5):
            found.append("status from the future (clock?)")
        return found


def rows(messages: Mapping[str, bytes]) -> list[FleetRow]:
    found = []
    for topic, payload in messages.items():
        device = topics.device_of(topic)
        if device is None or not payload:  # an empty retained message clears a status
            continue
        try:
            found.append(FleetRow(device, parse_status(payload, device=device)))
        except StatusInvalid as exc:
            found.append(FleetRow(device, None, str(exc)))
    return sorted(found, key=lambda row: row.device)


def _age(then: dt.datetime, now: dt.datetime) -> str:
    seconds = max(0, int((now - then).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit} ago"
    return f"{seconds}s ago"


def render(table: Iterable[FleetRow], now: dt.datetime) -> str:
    header = ("DEVICE", "STATE", "LAST SEEN", "CERT DAYS", "OUTBOX", "CONFIG", "WARNINGS")
    lines: list[tuple[str, ...]] = [header]
    count = online = warned = 0
    for row in table:
        count += 1
        status = row.status
        warnings = row.warnings(now)
        warned += bool(warnings)
        if status is None:
            lines.append((row.device, "?", "-", "-", "-", "-", "; ".join(warnings)))
            continue
        online += status.online
        seen = "-" if status.at is None else f"{status.at:%Y-%m-%d %H:%M} ({_age(status.at, now)})"
        lines.append(
            (
                row.device,
                "online" if status.online else "offline",
                seen,
                "-" if status.cert_days_left is None else str(status.cert_days_left),
                "-" if status.outbox is None else str(status.outbox),
                "-" if status.config_version is None else f"v{status.config_version}",
                "; ".join(warnings) or "-",
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header) - 1)]
    right = {3, 4}  # numbers
    text = []
    for line in lines:
        cells = [
            cell.rjust(widths[i]) if i in right else cell.ljust(widths[i])
            for i, cell in enumerate(line[:-1])
        ]
        text.append("  ".join([*cells, line[-1]]).rstrip())
    text.append(
        f"{count} stations: {online} online, {count - online} offline or unknown, "
        f"{warned} with warnings"
    )
    return "\n".join(text)


def run(broker: BrokerSection, wait: float, out: TextIO) -> int:
    """The `fleet` command: 0 when the table was printed, 1 when the broker could not be read."""
    messages = collect(broker, wait)
    print(render(rows(messages), dt.datetime.now(dt.UTC)), file=out)
    return 0
