"""systemd integration: READY=1 only once the broker link is up, STATUS lines, the watchdog.

The process test plays systemd's part as REFERENCE.md section 4 describes: an AF_UNIX datagram
socket bound as NOTIFY_SOCKET (in the abstract namespace, so nothing is created on disk), and
WATCHDOG_USEC set. The station starts while the broker is down: the watchdog is fed (the loop is
healthy) but READY=1 must wait until the broker is back and the link comes up.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from collections.abc import Iterator

import pytest
from broker import Broker
from station_runner import PHOTOSAFE, StationProcess, station_env

from photosafe.daemon.notify import Notifier, watchdog_interval
from photosafe.provisioning.site_configs import write_station_config


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_ready_once_on_the_first_link_up_with_status_lines_a_person_can_read() -> None:
    sent: list[str] = []
    notifier = Notifier(sent.append)
    notifier.starting()
    notifier.update({"outbox": 0, "step": "need-operator"}, connected=False)  # no change
    notifier.update({"outbox": 0, "step": "need-operator"}, connected=True)
    notifier.update({"outbox": 1, "step": "ready"}, connected=True)
    notifier.update({"outbox": 1, "step": "ready"}, connected=False)
    notifier.update({"outbox": 1, "step": "ready"}, connected=True)
    notifier.update({"outbox": 1, "step": "closed"}, connected=True)
    notifier.stopped({"stored": 3, "abandoned": 1})
    assert sent == [
        "STATUS=starting: camera and scanner up, connecting to the broker",
        "READY=1\nSTATUS=ready: 0 captures waiting for the record (scan a staff badge)",
        "STATUS=ready: 1 capture waiting for the record (ready to capture)",
        "STATUS=broker link down, reconnecting: 1 capture waiting for the record",
        "STATUS=ready: 1 capture waiting for the record (ready to capture)",
        "STOPPING=1\nSTATUS=stopping: 1 capture waiting for the record",
        "STATUS=stopped: abandoned 1, stored 3",
    ]


def test_the_watchdog_is_fed_at_half_its_interval() -> None:
    sent: list[str] = []
    clock = Clock()
    notifier = Notifier(sent.append, watchdog_s=5.0, clock=clock)
    for _ in range(3):  # a loop turning every 0.2 s pings once per 5 s
        notifier.heartbeat()
        clock.now += 0.2
    clock.now += 5
    notifier.heartbeat()
    assert sent == ["WATCHDOG=1", "WATCHDOG=1"]
    assert watchdog_interval({"WATCHDOG_USEC": "30000000"}) == 15.0
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}) is None
    me = str(os.getpid())
    assert watchdog_interval({"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": me}) == 1.0
    assert watchdog_interval({}) is None


def test_without_notify_socket_nothing_is_sent_and_nothing_is_imported() -> None:
    notifier = Notifier.from_environment({})
    assert not notifier.enabled
    notifier.starting()
    notifier.update({"outbox": 0, "step": "ready"}, connected=True)
    notifier.heartbeat()
    assert not notifier.ready  # it said nothing, so it claims nothing


class NotifySocket:
    """systemd's end: a datagram socket in the abstract namespace; messages kept with times."""

    def __init__(self) -> None:
        self.name = f"@photosafe-test-notify-{os.getpid()}-{time.monotonic_ns()}"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + self.name[1:])
        self.sock.settimeout(0.1)
        self.messages: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._receive, daemon=True)
        self._thread.start()

    def _receive(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            self.messages.append((time.monotonic(), data.decode()))

    def received(self, text: str) -> list[float]:
        return [at for at, message in list(self.messages) if text in message.split("\n")]

    def wait_for(self, text: str, count: int = 1, timeout: float = 15.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(self.received(text)) >= count:
                return True
            time.sleep(0.02)
        return False

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


@pytest.fixture
def notify_socket() -> Iterator[NotifySocket]:
    sock = NotifySocket()
    try:
        yield sock
    finally:
        sock.close()


def test_systemd_python_reaches_a_real_notify_socket(notify_socket: NotifySocket) -> None:
    notifier = Notifier.from_environment({"NOTIFY_SOCKET": notify_socket.name})
    os.environ["NOTIFY_SOCKET"] = notify_socket.name  # systemd-python reads the real environment
    try:
        notifier.update({"outbox": 0, "step": "need-operator"}, connected=True)
    finally:
        del os.environ["NOTIFY_SOCKET"]
    assert notifier.enabled and notifier.ready
    assert notify_socket.wait_for("READY=1", timeout=2)


def test_ready_waits_for_the_broker_and_the_watchdog_keeps_coming(
    broker: Broker, notify_socket: NotifySocket
) -> None:
    config = write_station_config(broker.site, "ward-a-01", grace_s=1)
    broker.stop()
    env = station_env(NOTIFY_SOCKET=notify_socket.name, WATCHDOG_USEC="400000")
    station = StationProcess([PHOTOSAFE, "run", "--config", config, "--simulate"], env=env)
    try:
        assert notify_socket.wait_for("WATCHDOG=1", count=2, timeout=15), station.stderr
        assert notify_socket.wait_for(
            "STATUS=starting: camera and scanner up, connecting to the broker"
        )
        assert notify_socket.received("READY=1") == []  # a healthy loop, but no broker yet
        broker_back = time.monotonic()
        broker.start()
        assert notify_socket.wait_for("READY=1", timeout=15), station.stderr
        (ready,) = notify_socket.received("READY=1")
        assert ready > broker_back
        assert station.wait_for("link.up", timeout=5)
        pings = len(notify_socket.received("WATCHDOG=1"))
        assert notify_socket.wait_for("WATCHDOG=1", count=pings + 4, timeout=5)
        station.send_signal(signal.SIGTERM)
        assert station.wait(20) == 0, station.stderr
    finally:
        station.close()
    assert notify_socket.wait_for("STOPPING=1", timeout=2)
    assert any(m.startswith("STATUS=stopped:") for _, m in notify_socket.messages)
