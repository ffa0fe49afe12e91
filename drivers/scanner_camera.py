"""A barcode scanner that reads wristbands and cards from the camera's low-resolution frames.

A background thread polls `camera.preview_frame()` every `interval_s` and decodes it with
zxing-cpp (REFERENCE.md section 5):
- only the formats a station meets (GS1 DataMatrix wristbands, Code 128 and GS1-128 bands and
  badges, QR command cards by default), which keeps a decode to a few milliseconds;
- the fast path on every frame: no rotation, no inversion, in the frame's own resolution and
  downscaled. It reads an upright or slightly skewed symbol;
- when the fast path finds nothing, at most every `slow_every`-th frame a slower pass that also
  tries 90/180/270 degree rotations and light-on-dark symbols: a band held upside down or on its
  side is read within about `slow_every * interval_s` seconds;
- text as zxing's Plain mode (GS1 separators as GS, 0x1D) with its AIM symbology identifier,
  which is what a keyboard-wedge scanner sends: `Scan(text, "]d2", "camera")`.

A band held in view for several seconds is one scan: a text is delivered again only after it has
been out of view (not decoded in any frame) for `cooldown_s`. Two different bands are two scans.
The scanner remembers a text only as a keyed digest, and only until its cooldown has passed.

Preview frames are images of the patient: they are decoded and dropped, never kept or logged.
A camera error (not started yet, closed, a hardware fault) is logged once when it starts and
once when frames come back; the thread keeps polling until `stop()`.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from photosafe.drivers.camera import Camera, GreyFrame
from photosafe.drivers.errors import CameraError
from photosafe.drivers.scanner import Scan

if TYPE_CHECKING:  # zxing-cpp is imported when a scanner is made (drivers import it lazily)
    import zxingcpp

__all__ = ["DEFAULT_FORMATS", "SOURCE", "CameraScanner", "decode"]

log = logging.getLogger(__name__)

SOURCE = "camera"
DEFAULT_FORMATS: tuple[str, ...] = ("DataMatrix", "Code128", "QRCode")


def decode(frame: GreyFrame, formats: zxingcpp.BarcodeFormats, *, slow: bool) -> list[Scan]:
    """Every symbol of `formats` zxing-cpp finds in `frame` (the slow pass also rotates)."""
    import zxingcpp

    image = memoryview(frame.pixels).cast("B", (frame.height, frame.width))
    results = zxingcpp.read_barcodes(
        image,
        formats=formats,
        try_rotate=slow,
        try_invert=slow,
        text_mode=zxingcpp.TextMode.Plain,
    )
    return [Scan.from_wire(result.symbology_identifier + result.text, SOURCE) for result in results]


class CameraScanner:
    """A Scanner (see photosafe.drivers.scanner) that decodes the camera's preview frames."""

    def __init__(
        self,
        camera: Camera,
        *,
        interval_s: float = 0.1,
        cooldown_s: float = 3.0,
        formats: Sequence[str | zxingcpp.BarcodeFormat] = DEFAULT_FORMATS,
        slow_every: int = 5,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if interval_s <= 0:
            raise ValueError("the polling interval must be positive")
        if slow_every < 1:
            raise ValueError("slow_every must be at least 1")
        if cooldown_s <= interval_s * slow_every:
            # Otherwise a band readable only by the slow pass would be "gone" between passes.
            raise ValueError("the cooldown must be longer than interval_s * slow_every")
        if not formats:
            raise ValueError("give at least one barcode format")
        import zxingcpp

        self._camera = camera
        self._interval = interval_s
        self._cooldown = cooldown_s
        self._formats = zxingcpp.BarcodeFormats([_format(name) for name in formats])
        self._slow_every = slow_every
        self._clock = clock
        self._key = os.urandom(16)  # for the digests of texts in view: no text is kept
        self._lock = threading.Lock()
        self._on_scan: Callable[[Scan], None] | None = None
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, on_scan: Callable[[Scan], None]) -> None:
        with self._lock:
            self._on_scan = on_scan
            if self._thread is not None:
                return
            self._stopping = threading.Event()
            self._thread = threading.Thread(
                target=self._run, args=(self._stopping,), name="camera-scanner", daemon=True
            )
            self._thread.start()

    def stop(self) -> None:
        with self._lock:
            self._on_scan = None
            thread, self._thread = self._thread, None
            self._stopping.set()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)

    def _run(self, stopping: threading.Event) -> None:
        seen: dict[bytes, float] = {}  # digest of a text in view -> when it was last decoded
        since_slow = self._slow_every  # frames since the last slow pass: the first may be slow
        failing = False
        while not stopping.wait(self._interval):
            try:
                frame = self._camera.preview_frame()
            except CameraError as exc:
                if not failing:
                    log.warning("camera_scanner.no_frames", extra={"error": str(exc)})
                failing = True
                continue
            if failing:
                log.info("camera_scanner.frames_again")
                failing = False
            if frame is None:
                continue
            try:
                scans = decode(frame, self._formats, slow=False)
                since_slow += 1
                if not scans and since_slow >= self._slow_every:
                    scans = decode(frame, self._formats, slow=True)
                    since_slow = 0
                del frame
                self._deliver(scans, seen)
            except Exception:  # a decoder or listener bug must not end scanning for good
                log.exception("camera_scanner.failed")

    def _deliver(self, scans: list[Scan], seen: dict[bytes, float]) -> None:
        now = self._clock()
        for digest in [d for d, last in seen.items() if now - last >= self._cooldown]:
            del seen[digest]  # out of view for the cooldown: it may be scanned again
        for scan in scans:
            digest = hashlib.blake2b(
                scan.wire_text.encode("utf-8", "surrogatepass"), key=self._key, digest_size=16
            ).digest()
            fresh = digest not in seen
            seen[digest] = now
            on_scan = self._on_scan  # one read: stop() on another thread cannot split it
            if fresh and on_scan is not None:
                log.info("camera_scanner.scanned", extra={"symbology": scan.symbology})
                on_scan(scan)


def _format(name: str | zxingcpp.BarcodeFormat) -> zxingcpp.BarcodeFormat:
    import zxingcpp

    if isinstance(name, zxingcpp.BarcodeFormat):
        return name
    try:
        return zxingcpp.barcode_format_from_str(name)
    except ValueError as exc:
        raise ValueError(f"unknown barcode format {name!r}") from exc
