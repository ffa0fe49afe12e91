"""The running station: drivers, workflow, delivery and the MQTT link around one event loop.

Every input (a scan, the capture button, a link event, a receipt, a stop request) becomes an
event on one queue, handled in order on one thread; driver and paho threads only post. After each
event the loop expires the patient context, (re)publishes what is due and shows what delivery
says: "stored" only for a verified receipt, "not stored: retake" for anything that failed.

On stop (SIGTERM): take no more captures, wait up to the grace period for outstanding receipts,
report what is left as not stored, log the counts (no patient data) and return.
"""

from __future__ import annotations

import logging
import queue
import time
from collections.abc import Callable
from dataclasses import dataclass

from photosafe.daemon.delivery import Delivery, Notice, NotStored, Stored
from photosafe.daemon.link import LinkListener
from photosafe.daemon.workflow import Workflow
from photosafe.drivers.indicator import Indicator, Signal
from photosafe.drivers.scanner import Scan
from photosafe.protocol.identity import IdentityRules, classify

log = logging.getLogger(__name__)
TICK_S = 0.2


@dataclass(frozen=True)
class ScanEvent:
    scan: Scan


@dataclass(frozen=True)
class ScanRefusedEvent:
    reason: str  # the scanner's code (garbled, overlong, ...); never the scanned text


@dataclass(frozen=True)
class ButtonEvent:
    pass


@dataclass(frozen=True)
class LinkUp:
    pass


@dataclass(frozen=True)
class LinkDown:
    reason: str


@dataclass(frozen=True)
class PublishResult:
    mid: int
    refusal: str | None


@dataclass(frozen=True)
class AckEvent:
    payload: bytes


@dataclass(frozen=True)
class ConfigEvent:
    payload: bytes


@dataclass(frozen=True)
class StopEvent:
    pass


Event = (
    ScanEvent
    | ScanRefusedEvent
    | ButtonEvent
    | LinkUp
    | LinkDown
    | PublishResult
    | AckEvent
    | ConfigEvent
    | StopEvent
)


class EventQueue(LinkListener):
    """Where every thread posts; implements LinkListener for the MQTT link."""

    def __init__(self) -> None:
        self._queue: queue.Queue[Event] = queue.Queue()

    def post(self, event: Event) -> None:
        self._queue.put(event)

    def get(self, timeout: float) -> Event | None:
        try:
            return self._queue.get(timeout=timeout)
        except queue.Empty:
            return None

    def scan(self, scan: Scan) -> None:
        self.post(ScanEvent(scan))

    def scan_refused(self, reason: str) -> None:
        """The scanner read something that is not a usable scan (a hardware scanner's refusal)."""
        self.post(ScanRefusedEvent(reason))

    def press(self) -> None:
        self.post(ButtonEvent())

    def stop(self) -> None:
        self.post(StopEvent())

    def link_up(self) -> None:
        self.post(LinkUp())

    def link_down(self, reason: str) -> None:
        self.post(LinkDown(reason))

    def publish_result(self, mid: int, refusal: str | None) -> None:
        self.post(PublishResult(mid, refusal))

    def ack_message(self, payload: bytes) -> None:
        self.post(AckEvent(payload))

    def config_message(self, payload: bytes) -> None:
        self.post(ConfigEvent(payload))


class StationLoop:
    def __init__(
        self,
        *,
        events: EventQueue,
        workflow: Workflow,
        delivery: Delivery,
        indicator: Indicator,
        rules: IdentityRules,
        grace_s: float,
        status: Callable[[dict[str, object]], None] = lambda status: None,
        heartbeat: Callable[[], None] = lambda: None,
        on_config: Callable[[bytes], None] = lambda payload: None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.events = events
        self.workflow = workflow
        self.delivery = delivery
        self.indicator = indicator
        self.rules = rules
        self.grace_s = grace_s
        self._publish_status = status
        self._heartbeat = heartbeat  # every turn of a healthy loop (systemd's watchdog)
        self._on_config = on_config  # a fleet config message (daemon/remote_config.py)
        self._clock = clock
        self.connected = False
        self.stopping_since: float | None = None
        self.last_error: str | None = None  # a short code for the fleet status, never free text

    def run(self) -> dict[str, int]:
        """Handle events until stopped and drained; returns the delivery counts."""
        self.indicator.show(Signal.NEED_OPERATOR, "scan your staff badge")
        while True:
            event = self.events.get(TICK_S)
            if event is not None:
                self.handle(event)
            self.workflow.tick()
            self._show(self.delivery.pump())
            self._heartbeat()
            if self.stopping_since is not None and (
                self.delivery.pending() == 0 or self._clock() - self.stopping_since >= self.grace_s
            ):
                break
        left = self.delivery.abandon()
        self._show(left)
        counts = {**self.delivery.counts, "abandoned": len(left)}
        log.info("station.stopped", extra={f"count_{k}": v for k, v in counts.items()})
        return counts

    def handle(self, event: Event) -> None:
        match event:
            case ScanEvent(scan):
                self.workflow.scan(classify(scan.wire_text, self.rules))
            case ScanRefusedEvent(reason):
                log.info("scan.refused", extra={"reason": reason})
                self.indicator.show(Signal.REFUSED, f"scan not read ({reason}): scan again")
            case ButtonEvent():
                self.workflow.press()
            case LinkUp():
                self.connected = True
                self._status()
            case LinkDown(reason):
                self.connected = False
                self.last_error = "link-down"
                log.info("station.link_down", extra={"reason": reason})
                self._status()
            case PublishResult(mid, refusal):
                self.delivery.publish_result(mid, refusal)
                if refusal is not None:
                    self.last_error = "publish-refused"
                    self._status()
            case AckEvent(payload):
                self._show(self.delivery.ack_message(payload))
            case ConfigEvent(payload):
                self._on_config(payload)
                self._status()
            case StopEvent():
                if self.stopping_since is None:
                    self.stopping_since = self._clock()
                    self.workflow.close()
                    log.info("station.stopping", extra={"pending": self.delivery.pending()})
                    self._status()

    def _show(self, notices: list[Notice]) -> None:
        for notice in notices:
            short = str(notice.capture_id)[:8]
            if isinstance(notice, Stored):
                self.indicator.show(Signal.STORED, f"capture {short} stored in the record")
            elif isinstance(notice, NotStored):
                self.last_error = "not-stored"
                self.indicator.show(Signal.NOT_STORED, f"capture {short} {notice.reason}: retake")
        if notices:
            self._status()

    def _status(self) -> None:
        self._publish_status(
            {
                "outbox": self.delivery.pending(),
                "step": self.workflow.step.value,
                "last_error": self.last_error,
            }
        )
