"""A real mosquitto for tests: one subprocess per sandbox site, on the site's loopback port."""

from __future__ import annotations

import contextlib
import re
import shutil
import signal
import socket
import subprocess
import time
from typing import IO

from photosafe.provisioning.sandbox import Site

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
START_TIMEOUT = 5.0
STOP_TIMEOUT = 5.0
_RUNNING = re.compile(r"mosquitto version \S+ running")


class BrokerError(RuntimeError):
    """The broker did not start, or died."""


class Broker:
    """`mosquitto -c <site conf>`; its stderr goes to `<site>/broker/mosquitto.log`."""

    def __init__(self, site: Site) -> None:
        self.site = site
        self.log_path = site.root / "broker" / "mosquitto.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._log_start = 0  # where the current run's output begins in the log file

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    def start(self, timeout: float = START_TIMEOUT) -> None:
        """Start mosquitto and wait until it accepts TCP connections on the site's port."""
        if self.running:
            raise BrokerError("broker already running")
        self._close_log()
        self._log = self.log_path.open("ab")
        self._log_start = self._log.tell()
        self._proc = subprocess.Popen(
            [MOSQUITTO, "-c", str(self.site.broker_conf)],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=self._log,
            cwd=self.site.root,
        )
        deadline = time.monotonic() + timeout
        while True:
            if self._proc.poll() is not None:
                code = self._proc.returncode
                self._reap()
                raise BrokerError(f"mosquitto exited with {code} on start:\n{self.log(run=True)}")
            # "running" is logged once the listener is bound; the TCP probe alone could be
            # answered by whoever else holds the port.
            if _RUNNING.search(self.log(run=True)) and _accepts(self.site.host, self.site.port):
                return
            if time.monotonic() > deadline:
                self.kill()
                raise BrokerError(
                    f"mosquitto not listening after {timeout}s:\n{self.log(run=True)}"
                )
            time.sleep(0.01)

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """SIGTERM and wait (SIGKILL if it does not go)."""
        if self._proc is None:
            return
        if self._proc.poll() is None:
            self._proc.send_signal(signal.SIGTERM)
            try:
                self._proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(timeout)
        self._reap()

    def kill(self) -> None:
        """SIGKILL: the broker vanishes without a goodbye to its clients."""
        if self._proc is None:
            return
        if self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait(STOP_TIMEOUT)
        self._reap()

    def restart(self, timeout: float = START_TIMEOUT) -> None:
        """Stop, then start on the same port (retrying while the port is still busy)."""
        self.stop()
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.start(timeout=max(deadline - time.monotonic(), 0.5))
                return
            except BrokerError as exc:
                if "Address already in use" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def log(self, *, run: bool = False) -> str:
        """What the broker wrote to stderr: since the first start, or (`run`) the latest."""
        try:
            data = self.log_path.read_bytes()
        except FileNotFoundError:
            return ""
        return data[self._log_start if run else 0 :].decode("utf-8", errors="replace")

    def _reap(self) -> None:
        self._proc = None
        self._close_log()

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None


def _accepts(host: str, port: int) -> bool:
    try:
        conn = socket.create_connection((host, port), timeout=0.2)
    except OSError:
        return False
    with contextlib.closing(conn):
        return True
