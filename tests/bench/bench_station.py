"""A real station in this process, with stage stamps: the production code path, timed.

`build_station` assembles the station exactly as `photosafe run` does (config, keys, link,
outbox, delivery, workflow, loop); the benchmark passes its own camera, the simulated scanner
and button, and an indicator that stamps the time of each signal. Stamps are taken by thin
wrappers around the parts' public seams (the workflow's sender and quality gate, the link's
publish, the event queue's callbacks); nothing in the path is replaced.

Captures are driven as a clinician would: badge, wristband and consent scanned once, then one
button press per capture; each capture ends at the STORED signal, lit by the loop thread only
when the gateway's signed receipt has verified.
"""

from __future__ import annotations

import io
import os
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bench_util import BADGE, CONSENT, Stamps, wristband
from PIL import Image

from photosafe.daemon.app import Station, build_station
from photosafe.daemon.config import load_config
from photosafe.daemon.workflow import QualityGate, QualityVerdict, Sender
from photosafe.drivers.button import SimulatedButton
from photosafe.drivers.camera import CameraDetails, CameraError, GreyFrame, Still
from photosafe.drivers.camera_simulated import SimulatedCamera
from photosafe.drivers.indicator import Signal
from photosafe.drivers.scanner_simulated import SimulatedScanner
from photosafe.drivers.secret import SecretBuffer
from photosafe.protocol.manifest import Manifest

OUTCOMES = frozenset(
    {
        Signal.STORED,
        Signal.NOT_STORED,
        Signal.REFUSED,
        Signal.RETAKE,
        Signal.OUTBOX_FULL,
        Signal.FAULT,
    }
)


class BenchError(RuntimeError):
    pass


class TimingIndicator:
    """An Indicator that remembers when each signal was shown."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._shown: list[tuple[Signal, str | None, float]] = []

    def show(self, signal: Signal, detail: str | None = None) -> None:
        now = time.perf_counter()
        with self._changed:
            self._shown.append((signal, detail, now))
            self._changed.notify_all()

    def close(self) -> None:
        pass

    def position(self) -> int:
        with self._changed:
            return len(self._shown)

    def wait_for(
        self, signals: frozenset[Signal], after: int, timeout: float
    ) -> tuple[Signal, str | None, float] | None:
        """The first of `signals` shown at or after position `after`, waiting up to `timeout`."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for shown in self._shown[after:]:
                    if shown[0] in signals:
                        return shown
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._changed.wait(left)


class SizedStillCamera:
    """A Camera whose every still is one real JPEG padded to exactly `size` bytes.

    The JPEG is the simulated camera's (1600 x 1200, so the real quality gate accepts it),
    padded with COM (comment) segments of random bytes: the station's metadata strip keeps COM
    segments, so the still reaches the seal at exactly `size` bytes, and nothing on the way can
    compress it. Each capture copies the prepared bytes into a fresh SecretBuffer, as a camera
    backend would.
    """

    def __init__(self, template: bytes, width: int, height: int) -> None:
        self._template = template
        self._width, self._height = width, height
        self._bytes = template
        self._details = CameraDetails("bench: sized still", 8000, 1.5, 4.0)
        self._started = False

    @classmethod
    def from_simulated(cls, width: int = 1600, height: int = 1200) -> SizedStillCamera:
        camera = SimulatedCamera(width=width, height=height)
        camera.start()
        try:
            still = camera.capture()
            template = bytes(still.jpeg.view())
            still.jpeg.wipe()
        finally:
            camera.close()
        return cls(template, width, height)

    def set_size(self, size: int) -> None:
        self._bytes = pad_jpeg(self._template, size)

    def start(self) -> None:
        self._started = True

    def capture(self) -> Still:
        if not self._started:
            raise CameraError("the camera is not started")
        return Still(SecretBuffer(bytearray(self._bytes)), self._width, self._height, self._details)

    def preview_frame(self) -> GreyFrame | None:
        return None

    def details(self) -> CameraDetails:
        return self._details

    def close(self) -> None:
        self._started = False


def pad_jpeg(jpeg: bytes, size: int) -> bytes:
    """`jpeg` grown to exactly `size` bytes by COM segments of random bytes after its header."""
    if jpeg[:4] != b"\xff\xd8\xff\xe0":
        raise ValueError("expected a JFIF JPEG (SOI then APP0)")
    head = 4 + int.from_bytes(jpeg[4:6])  # SOI, then the APP0 segment (its length counts itself)
    remaining = size - len(jpeg)
    if remaining < 0:
        raise ValueError(f"a still of {size} bytes is smaller than the JPEG itself")
    segments: list[bytes] = []
    while remaining:
        chunk = min(4 + 65533, remaining)  # marker, length, at most 65533 bytes of comment
        if 0 < remaining - chunk < 4:
            chunk -= 4  # leave room for a last segment of at least its own header
        segments.append(b"\xff\xfe" + (chunk - 2).to_bytes(2) + os.urandom(chunk - 4))
        remaining -= chunk
    padded = jpeg[:head] + b"".join(segments) + jpeg[head:]
    assert len(padded) == size
    return padded


class FrameStampCamera(SimulatedCamera):
    """The simulated camera, stamping when the full-size frame is rendered ("frame": a real
    camera hands over its frame here) and when the JPEG is ready ("captured"). It keeps the last
    frame so the extended floor can encode the very same pixels."""

    def __init__(self, width: int, height: int, quality: int = 90) -> None:
        super().__init__(width=width, height=height, quality=quality)
        self.quality = quality
        self.mark: Callable[[str], None] = lambda name: None  # BenchStation sets it
        self.last_frame: Image.Image | None = None

    def _render(self, size: tuple[int, int], *args: Any, **kwargs: Any) -> Image.Image:
        frame = super()._render(size, *args, **kwargs)
        if size == self._size:
            self.mark("frame")
            self.last_frame = frame
        return frame

    def capture(self) -> Still:
        still = super().capture()
        self.mark("captured")
        return still

    def encode_last(self) -> tuple[float, int]:
        """Seconds to JPEG-encode the last frame again (as capture() does), and the size."""
        if self.last_frame is None:
            raise BenchError("no frame rendered yet")
        start = time.perf_counter()
        out = io.BytesIO()
        self.last_frame.save(out, format="JPEG", quality=self.quality)
        elapsed = time.perf_counter() - start
        return elapsed, out.tell()


class _TimedSender:
    def __init__(self, inner: Sender, owner: BenchStation) -> None:
        self._inner = inner
        self._owner = owner

    def send(self, manifest: Manifest, still: Still) -> None:
        stamps = self._owner.stamps
        stamps.size = len(still.jpeg)
        stamps.mark("send")
        self._inner.send(manifest, still)
        stamps.mark("sealed")


class _TimedGate:
    def __init__(self, inner: QualityGate, owner: BenchStation) -> None:
        self._inner = inner
        self._owner = owner

    def check(self, still: Still) -> QualityVerdict:
        verdict = self._inner.check(still)
        self._owner.stamps.mark("gated")
        return verdict


class BenchStation:
    """One station built by `build_station`, its loop on a thread, driven capture by capture."""

    def __init__(self, config_path: Path, camera: SizedStillCamera | FrameStampCamera) -> None:
        self.stamps = Stamps()
        self.camera = camera
        self.indicator = TimingIndicator()
        self.scanner = SimulatedScanner()
        self.button = SimulatedButton()
        self.station: Station = build_station(
            load_config(config_path),
            camera=camera,
            scanner=self.scanner,
            indicator=self.indicator,
            button=self.button,
        )
        if isinstance(camera, FrameStampCamera):
            camera.mark = self._mark
        self.counts: dict[str, int] = {}
        self._thread: threading.Thread | None = None
        self._capture_mid: int | None = None
        self._pubacks: dict[int, float] = {}
        self._instrument()

    def _mark(self, name: str) -> None:
        self.stamps.mark(name)

    def _instrument(self) -> None:
        workflow = self.station.workflow
        workflow.sender = _TimedSender(workflow.sender, self)
        workflow.quality = _TimedGate(workflow.quality, self)
        link, events = self.station.link, self.station.events
        publish, publish_result, ack_message = (
            link.publish_capture,
            events.publish_result,
            events.ack_message,
        )

        def timed_publish(capture_id: uuid.UUID, sealed: bytes, expiry_s: int) -> int:
            self.stamps.mark("publish")
            mid = publish(capture_id, sealed, expiry_s)
            self._capture_mid = mid
            self.stamps.mark("published")
            return mid

        def timed_publish_result(mid: int, refusal: str | None) -> None:
            self._pubacks.setdefault(mid, time.perf_counter())
            publish_result(mid, refusal)

        def timed_ack(payload: bytes) -> None:
            self.stamps.mark("ack")
            ack_message(payload)

        setattr(link, "publish_capture", timed_publish)  # noqa: B010 - an instance, not the class
        setattr(events, "publish_result", timed_publish_result)  # noqa: B010
        setattr(events, "ack_message", timed_ack)  # noqa: B010

    def start(self, timeout: float = 30.0) -> None:
        """Start, wait for the broker, sign in, scan the patient and consent: READY to capture."""
        self.station.start()
        self._thread = threading.Thread(target=self._run, name="bench-station", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self.station.loop.connected:
            if time.monotonic() > deadline:
                raise BenchError("station did not connect to the broker")
            time.sleep(0.01)
        position = self.indicator.position()
        for text in (BADGE, wristband(), CONSENT):
            if not self.scanner.feed(text):
                raise BenchError("the scanner is not listening")
        ready = self.indicator.wait_for(
            frozenset({Signal.READY_TO_CAPTURE, Signal.REFUSED}), position, timeout
        )
        if ready is None or ready[0] is not Signal.READY_TO_CAPTURE:
            raise BenchError(f"station not ready to capture: {ready}")

    def _run(self) -> None:
        self.counts.update(self.station.run())

    def capture(self, timeout: float = 60.0, *, trace: bool = False) -> Stamps:
        """One button press to the STORED signal; the stamps of its stages."""
        self.stamps = Stamps(trace=trace)
        self._capture_mid = None
        position = self.indicator.position()
        self.stamps.mark("press")
        if not self.button.press():
            raise BenchError("the button is not listening")
        outcome = self.indicator.wait_for(OUTCOMES, position, timeout)
        if outcome is None:
            raise BenchError(f"no outcome within {timeout}s")
        signal, detail, shown = outcome
        if signal is not Signal.STORED:
            raise BenchError(f"capture ended {signal.name}: {detail}")
        self.stamps.times["stored"] = shown
        if trace:
            self.stamps.mark("stored-seen")  # the last peak interval (ack -> STORED)
        result = self.stamps.copy()
        if self._capture_mid is not None and self._capture_mid in self._pubacks:
            result.times["puback"] = self._pubacks.pop(self._capture_mid)
        self.stamps = Stamps()
        return result

    def stop(self, timeout: float = 30.0) -> dict[str, int]:
        if self._thread is None:
            return self.counts
        self.station.stop()
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise BenchError("station loop did not stop")
        self._thread = None
        return self.counts


E2E_STAGES: Sequence[tuple[str, str, str]] = (
    ("seal+queue", "send", "sealed"),
    ("wipe+loop to publish", "sealed", "publish"),
    ("publish call", "publish", "published"),
    ("to PUBACK", "publish", "puback"),
    ("to signed ack", "publish", "ack"),
    ("ack verify to STORED", "ack", "stored"),
)
PIPELINE_STAGES: Sequence[tuple[str, str, str]] = (
    ("JPEG encode+copy", "frame", "captured"),
    ("strip metadata+quality gate", "captured", "gated"),
    ("manifest (SHA-256)", "gated", "send"),
    *E2E_STAGES,
)
