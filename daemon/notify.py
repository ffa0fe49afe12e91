"""Telling systemd how the station is: readiness (Type=notify), a status line, the watchdog.

Messages go through systemd-python's `systemd.daemon.notify`. Without `NOTIFY_SOCKET` (not run by
systemd, or not as Type=notify) nothing is sent and systemd-python is not even imported.

- `READY=1`, once: the camera and scanner have started and the broker link has come up for the
  first time (the station loop's first LinkUp).
- `STATUS=`: a line for a person reading `systemctl status photosafe`, e.g.
  "ready: 0 captures waiting for the record (scan a staff badge)". No patient data, ever.
- `WATCHDOG=1`: called on every turn of the station loop, sent at most every half of
  `WATCHDOG_USEC`. The loop turns at least every 0.2 s while it is healthy; a loop stuck in a
  driver, a capture or a seal stops the pings, and systemd restarts the station (WatchdogSec=).
- `STOPPING=1`: SIGTERM closed the station; it waits for outstanding receipts, then exits.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping

log = logging.getLogger(__name__)

Send = Callable[[str], object]

_STARTING = "starting: camera and scanner up, connecting to the broker"
_STEP_TEXT = {
    "need-operator": "scan a staff badge",
    "need-patient": "scan the patient's wristband",
    "need-consent": "scan a consent card",
    "need-decider": "scan the deciding clinician's badge",
    "need-chaperone": "scan the chaperone's badge",
    "ready": "ready to capture",
    "need-approval": "waiting for the patient's approval",
}


def watchdog_interval(environ: Mapping[str, str] = os.environ) -> float | None:
    """Half of WATCHDOG_USEC in seconds, when the watchdog is meant for this process."""
    try:
        usec = int(environ.get("WATCHDOG_USEC", "0"))
        pid = int(environ.get("WATCHDOG_PID", "0"))
    except ValueError:
        return None
    if usec <= 0 or (pid and pid != os.getpid()):
        return None
    return usec / 2 / 1_000_000


def _waiting(count: object) -> str:
    return f"{count} capture{'' if count == 1 else 's'} waiting for the record"


class Notifier:
    """sd_notify for the station loop; every method does nothing when `send` is None."""

    def __init__(
        self,
        send: Send | None,
        *,
        watchdog_s: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._send = send
        self._watchdog_s = watchdog_s
        self._clock = clock
        self._last_ping: float | None = None
        self._last_status: str | None = None
        self.ready = False
        self.stopping = False

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] = os.environ) -> Notifier:
        if not environ.get("NOTIFY_SOCKET"):
            return cls(None)
        try:
            from systemd.daemon import notify
        except ImportError:
            log.error(
                "notify.unavailable",
                extra={"reason": "NOTIFY_SOCKET is set but systemd-python is not installed "
                "(install photosafe[systemd]): systemd will not hear that the station is ready"},
            )  # fmt: skip
            return cls(None)
        return cls(notify, watchdog_s=watchdog_interval(environ))

    @property
    def enabled(self) -> bool:
        return self._send is not None

    def starting(self) -> None:
        """The camera and scanner are up; the broker link is not yet."""
        if self._send is not None:
            self._notify(f"STATUS={_STARTING}", _STARTING)

    def update(self, status: Mapping[str, object], *, connected: bool) -> None:
        """The station's status changed: say so, and READY=1 on the first link-up."""
        if self._send is None:
            return
        step, waiting = str(status.get("step", "")), _waiting(status.get("outbox", 0))
        if step == "closed":
            text = f"stopping: {waiting}"
            if not self.stopping:
                self.stopping = True
                self._notify(f"STOPPING=1\nSTATUS={text}", text)
                return
        elif connected:
            text = f"ready: {waiting} ({_STEP_TEXT.get(step, step)})"
            if not self.ready:
                self.ready = True
                self._notify(f"READY=1\nSTATUS={text}", text)
                return
        elif self.ready:
            text = f"broker link down, reconnecting: {waiting}"
        else:
            text = _STARTING
        if text != self._last_status:
            self._notify(f"STATUS={text}", text)

    def heartbeat(self) -> None:
        """One turn of a healthy station loop: WATCHDOG=1 when half the watchdog time is up."""
        if self._send is None or self._watchdog_s is None:
            return
        now = self._clock()
        if self._last_ping is None or now - self._last_ping >= self._watchdog_s:
            self._last_ping = now
            self._send("WATCHDOG=1")

    def stopped(self, counts: Mapping[str, int]) -> None:
        """The last status line before exit: what happened to the captures."""
        if self._send is not None:
            text = ", ".join(f"{name} {count}" for name, count in sorted(counts.items()))
            self._notify(f"STATUS=stopped: {text}", text)

    def _notify(self, message: str, status: str) -> None:
        assert self._send is not None
        self._last_status = status
        self._send(message)
