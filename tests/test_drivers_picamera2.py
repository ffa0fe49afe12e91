"""The picamera2 camera backend, against a fake of its adapter (libcamera cannot exist on x86).

What is covered: everything `Picamera2Camera` does with the adapter. `FakeAdapter` below
implements the adapter's calls with real data: it encodes real JPEGs with Pillow (with an EXIF
block spliced in after SOI, as picamera2 does) into the BytesIO it is given and refuses anything
that is not a real `io.BytesIO` (as picamera2's fast path would open it as a file); it returns
real YUV420 lores frames shaped as picamera2's `make_array("lores")` returns them, height * 3 / 2
rows of a padded stride, with a known luma pattern (or a rendered DataMatrix) in the Y plane;
its metadata uses libcamera's keys; it keeps the camera's state (configured, running, closed)
and fails like the hardware when used out of order. So the tests check: the configuration asked
for (still size, a quarter-size lores, JPEG quality), that it is configured and started once and
kept running, autofocus (a cycle before each still, continuous in between, nothing on a camera
without autofocus or when disabled, a failed cycle logged), the JPEG moved into a SecretBuffer
with the BytesIO zeroed and closed, the Y plane cut out of a padded YUV420 frame (and decoded by
zxing-cpp through the camera scanner), details from metadata and camera properties, errors
mapped to CameraError, calls serialised across threads, and registration as "picamera2" in
drivers.backends (canary refused, picamera2's absence reported with the install hint).

What is not covered, and cannot be here: `Picamera2Adapter`'s own calls into picamera2 and
libcamera (beyond its import failing with BackendUnavailable on this machine). Whether libcamera
accepts the still + YUV420 lores configuration with buffer_count=2 and how it aligns the sizes,
the real shape and stride of lores arrays, what real metadata contains, how the Camera Module 3's
autofocus behaves, picamera2's EXIF, and all timing need a Raspberry Pi with a camera: run
`photosafe doctor` and a capture there.
"""

from __future__ import annotations

import importlib.util
import io
import logging
import struct
import threading
import time
from collections.abc import Mapping
from typing import Any

import pytest
import zxingcpp
from PIL import ExifTags, Image

from photosafe.daemon.metadata import strip_metadata
from photosafe.drivers.backends import BackendUnavailable, camera_backend
from photosafe.drivers.camera import CameraError
from photosafe.drivers.camera_picamera2 import (
    Picamera2Adapter,
    Picamera2Camera,
    StreamSizes,
)
from photosafe.drivers.scanner import Scan
from photosafe.drivers.scanner_camera import CameraScanner

STRIDE_ALIGN = 64  # lores rows are padded to this many bytes, as the ISP does
PADDING = 0xEE  # the value of padding bytes: must never reach a GreyFrame
METADATA = {"ExposureTime": 16_667, "AnalogueGain": 2.5, "LensPosition": 6.25, "Lux": 400.0}


def picamera2_exif() -> bytes:
    """An EXIF block like picamera2's: the camera-id path as the model, time, exposure, ISO."""
    exif = Image.Exif()
    exif[ExifTags.Base.Model] = "/base/soc/i2c0mux/i2c@1/imx708@1a"
    exif[ExifTags.Base.DateTime] = "2026:01:01 12:00:00"
    exif.get_ifd(ExifTags.IFD.Exif)[ExifTags.Base.ISOSpeedRatings] = 250
    return exif.tobytes()  # starts with "Exif\0\0"


def luma(x: int, y: int) -> int:
    """The fake lores Y plane: a pattern in which every row and column differs."""
    return (x * 3 + y * 7) % 200 + 20


class FakeAdapter:
    """Implements CameraAdapter with real JPEGs and real YUV420 planes; keeps camera state."""

    def __init__(
        self,
        *,
        autofocus: bool = True,
        focus_succeeds: bool = True,
        fail: str | None = None,
        barcode: Image.Image | None = None,
    ) -> None:
        self._autofocus = autofocus
        self.focus_succeeds = focus_succeeds
        self.fail = fail  # the name of a call that raises, as the hardware might
        self.barcode = barcode
        self.calls: list[str] = []
        self.configured: tuple[tuple[int, int], tuple[int, int], int] | None = None
        self.running = False
        self.closed = False
        self.outputs: list[io.BytesIO] = []
        self.in_call = threading.Lock()  # taken during each call: overlap means no serialising
        self.overlapped = False

    def _call(self, name: str) -> None:
        if not self.in_call.acquire(blocking=False):
            self.overlapped = True
            self.in_call.acquire()
        try:
            time.sleep(0.001)  # a frame's worth of waiting, so overlaps would show
            self.calls.append(name)
            if self.closed:
                raise RuntimeError("Camera is closed")
            if name == self.fail:
                raise RuntimeError(f"simulated failure in {name}")
        finally:
            self.in_call.release()

    @property
    def model(self) -> str:
        return "imx708"

    @property
    def has_autofocus(self) -> bool:
        return self._autofocus

    def configure(self, main: tuple[int, int], lores: tuple[int, int], quality: int) -> StreamSizes:
        self._call("configure")
        self.configured = (main, lores, quality)
        return StreamSizes(main, lores)

    def start(self) -> None:
        self._call("start")
        if self.configured is None:
            raise RuntimeError("Camera has not been configured")
        self.running = True

    def stop(self) -> None:
        self._call("stop")
        self.running = False

    def close(self) -> None:
        self._call("close")
        self.closed = True

    def focus_continuously(self) -> None:
        assert self._autofocus, "AfMode set on a camera without autofocus"
        self._call("focus_continuously")

    def autofocus_cycle(self) -> bool:
        assert self._autofocus, "autofocus cycle on a camera without autofocus"
        self._call("autofocus_cycle")
        return self.focus_succeeds

    def capture_jpeg(self, out: io.BytesIO) -> Mapping[str, Any]:
        if type(out) is not io.BytesIO:
            raise AssertionError("picamera2 would open() anything but a real BytesIO as a file")
        self._call("capture_jpeg")
        self._check_running()
        assert self.configured is not None
        (width, height), _, quality = self.configured
        image = Image.new("RGB", (width, height), (190, 140, 110))
        encoded = io.BytesIO()
        image.save(encoded, "JPEG", quality=quality)
        jpeg = encoded.getvalue()
        exif = picamera2_exif()  # picamera2 splices its EXIF in after SOI
        out.write(jpeg[:2] + b"\xff\xe1" + struct.pack(">H", len(exif) + 2) + exif + jpeg[2:])
        self.outputs.append(out)
        return dict(METADATA)

    def capture_lores(self) -> tuple[memoryview, Mapping[str, Any]]:
        self._call("capture_lores")
        self._check_running()
        assert self.configured is not None
        width, height = self.configured[1]
        stride = -(-width // STRIDE_ALIGN) * STRIDE_ALIGN
        frame = bytearray([PADDING]) * (stride * height * 3 // 2)
        y_plane = self._y_plane(width, height)
        for row in range(height):
            frame[row * stride : row * stride + width] = y_plane[row * width : (row + 1) * width]
        frame[stride * height :] = bytes([128]) * (stride * height // 2)  # U and V: grey
        return memoryview(frame).cast("B", (height * 3 // 2, stride)), dict(METADATA)

    def _y_plane(self, width: int, height: int) -> bytes:
        if self.barcode is None:
            return bytes(luma(x, y) for y in range(height) for x in range(width))
        canvas = Image.new("L", (width, height), 230)
        canvas.paste(self.barcode, ((width - self.barcode.width) // 2, 10))
        return canvas.tobytes()

    def _check_running(self) -> None:
        if not self.running:
            raise RuntimeError("Camera must be started")


def make(adapter: FakeAdapter, **options: Any) -> Picamera2Camera:
    options.setdefault("width", 640)
    options.setdefault("height", 480)
    return Picamera2Camera(adapter_factory=lambda: adapter, **options)


def started(adapter: FakeAdapter, **options: Any) -> Picamera2Camera:
    camera = make(adapter, **options)
    camera.start()
    return camera


def test_start_configures_a_still_configuration_with_lores_once_and_keeps_it_running() -> None:
    adapter = FakeAdapter()
    camera = started(adapter, width=1600, height=1200, quality=85)
    camera.start()  # idempotent
    assert adapter.configured == ((1600, 1200), (400, 300), 85)
    assert adapter.calls == ["configure", "start", "focus_continuously"]
    for _ in range(3):
        camera.capture().jpeg.wipe()
        camera.preview_frame()
    assert adapter.calls.count("configure") == 1 and adapter.calls.count("start") == 1
    assert "stop" not in adapter.calls  # no switch between modes per shot
    camera.close()


def test_the_adapter_is_created_only_when_the_camera_starts() -> None:
    made: list[FakeAdapter] = []

    def factory() -> FakeAdapter:
        made.append(FakeAdapter())
        return made[-1]

    camera = Picamera2Camera(adapter_factory=factory, width=640, height=480)
    assert made == []  # constructing claims no camera
    camera.start()
    camera.start()
    assert len(made) == 1
    camera.close()


def test_a_still_is_a_jpeg_in_a_secret_buffer_and_the_bytesio_is_wiped() -> None:
    adapter = FakeAdapter()
    camera = started(adapter, width=800, height=600)
    still = camera.capture()
    with Image.open(io.BytesIO(bytes(still.jpeg.view()))) as image:
        assert (image.format, image.size) == ("JPEG", (800, 600))
        assert "exif" in image.info  # as picamera2's own JPEGs have
    assert (still.width, still.height) == (800, 600)
    [out] = adapter.outputs
    assert out.closed  # SecretBuffer.from_bytesio zeroed its buffer and closed it
    clean = strip_metadata(still)  # what the station does next: picamera2's EXIF goes
    assert b"Exif\x00\x00" not in bytes(clean.jpeg.view())
    clean.jpeg.wipe()
    camera.close()


def test_details_come_from_the_request_metadata_and_camera_properties() -> None:
    adapter = FakeAdapter()
    camera = make(adapter)
    assert camera.details().model == "picamera2"  # not started: the sensor is not known yet
    camera.start()
    assert camera.details().model == "imx708 (picamera2)"
    still = camera.capture()
    assert (
        still.info.model,
        still.info.exposure_time_us,
        still.info.analogue_gain,
        still.info.lens_position,
    ) == ("imx708 (picamera2)", 16_667, 2.5, 6.25)
    assert camera.details() == still.info
    still.jpeg.wipe()
    camera.close()


def test_missing_metadata_is_none_not_a_guess() -> None:
    class Bare(FakeAdapter):
        def capture_jpeg(self, out: io.BytesIO) -> Mapping[str, Any]:
            super().capture_jpeg(out)
            return {"ExposureTime": "n/a"}

    camera = started(Bare(autofocus=False))
    still = camera.capture()
    assert (still.info.exposure_time_us, still.info.analogue_gain, still.info.lens_position) == (
        None,
        None,
        None,
    )
    still.jpeg.wipe()
    camera.close()


def test_autofocus_cycles_before_each_still_and_runs_continuously_between() -> None:
    adapter = FakeAdapter()
    camera = started(adapter)
    camera.capture().jpeg.wipe()
    assert adapter.calls[3:] == ["autofocus_cycle", "focus_continuously", "capture_jpeg"]
    camera.close()


@pytest.mark.parametrize(
    ("has_autofocus", "enabled"), [(False, True), (True, False)], ids=["fixed-focus", "disabled"]
)
def test_no_autofocus_calls_without_a_focus_motor_or_when_disabled(
    has_autofocus: bool, enabled: bool
) -> None:
    adapter = FakeAdapter(autofocus=has_autofocus)
    camera = started(adapter, autofocus=enabled)
    camera.capture().jpeg.wipe()
    assert adapter.calls == ["configure", "start", "capture_jpeg"]
    camera.close()


def test_a_failed_autofocus_cycle_is_logged_and_the_still_taken(
    caplog: pytest.LogCaptureFixture,
) -> None:
    camera = started(FakeAdapter(focus_succeeds=False))
    with caplog.at_level(logging.WARNING, logger="photosafe.drivers.camera_picamera2"):
        still = camera.capture()
    assert [r.getMessage() for r in caplog.records] == ["camera.autofocus_failed"]
    still.jpeg.wipe()
    camera.close()


def test_the_preview_frame_is_the_lores_y_plane_without_padding_or_chroma() -> None:
    adapter = FakeAdapter()
    camera = started(adapter, width=1000, height=760)  # lores 250 x 190: rows padded to 256
    frame = camera.preview_frame()
    assert (frame.width, frame.height) == (250, 190)
    assert frame.pixels == bytes(luma(x, y) for y in range(190) for x in range(250))
    assert PADDING not in frame.pixels
    camera.close()


def test_an_explicit_lores_size_is_used() -> None:
    adapter = FakeAdapter()
    camera = started(adapter, width=1600, height=1200, lores_size=(640, 480))
    assert adapter.configured == ((1600, 1200), (640, 480), 90)
    assert camera.preview_frame().width == 640
    camera.close()


def test_a_wristband_in_the_lores_frames_is_scanned() -> None:
    symbol = zxingcpp.create_barcode(
        "(8018)950600012345678907", zxingcpp.BarcodeFormat.DataMatrix, gs1=True
    )
    band = Image.fromarray(zxingcpp.write_barcode_to_image(symbol, scale=4))
    camera = started(FakeAdapter(barcode=band), width=1000, height=760)
    scans: list[Scan] = []
    scanner = CameraScanner(camera, interval_s=0.01, cooldown_s=1.0)
    scanner.start(scans.append)
    deadline = time.monotonic() + 5
    while not scans and time.monotonic() < deadline:
        time.sleep(0.01)
    scanner.stop()
    camera.close()
    assert [(s.symbology, s.text, s.source) for s in scans] == [
        ("]d2", "8018950600012345678907", "camera")
    ]


def test_a_lores_frame_smaller_than_configured_is_an_error() -> None:
    class Short(FakeAdapter):
        def capture_lores(self) -> tuple[memoryview, Mapping[str, Any]]:
            return memoryview(bytearray(100)).cast("B", (10, 10)), {}

    camera = started(Short())
    with pytest.raises(CameraError, match="smaller than"):
        camera.preview_frame()
    camera.close()


def test_nothing_works_before_start_or_after_close() -> None:
    adapter = FakeAdapter()
    camera = make(adapter)
    with pytest.raises(CameraError, match="not started"):
        camera.capture()
    with pytest.raises(CameraError, match="not started"):
        camera.preview_frame()
    camera.start()
    camera.close()
    camera.close()  # idempotent
    assert adapter.calls[-2:] == ["stop", "close"] and adapter.closed
    for call in (camera.capture, camera.preview_frame, camera.start):
        with pytest.raises(CameraError, match="closed"):
            call()


@pytest.mark.parametrize("failing", ["capture_jpeg", "autofocus_cycle"])
def test_a_hardware_failure_in_a_capture_is_a_camera_error(failing: str) -> None:
    adapter = FakeAdapter(fail=failing)
    camera = started(adapter)
    with pytest.raises(CameraError, match=f"capture failed: RuntimeError: .*{failing}"):
        camera.capture()
    camera.close()


def test_a_hardware_failure_in_a_preview_is_a_camera_error() -> None:
    camera = started(FakeAdapter(fail="capture_lores"))
    with pytest.raises(CameraError, match="preview frame failed"):
        camera.preview_frame()
    camera.close()


def test_a_camera_that_fails_to_start_is_released() -> None:
    adapter = FakeAdapter(fail="start")
    camera = make(adapter)
    with pytest.raises(CameraError, match="did not start"):
        camera.start()
    assert adapter.closed
    with pytest.raises(CameraError, match="not started"):
        camera.capture()


def test_calls_from_the_scanner_and_station_threads_are_serialised() -> None:
    adapter = FakeAdapter()
    camera = started(adapter)

    def previews() -> None:
        for _ in range(30):
            camera.preview_frame()

    thread = threading.Thread(target=previews)
    thread.start()
    for _ in range(5):
        camera.capture().jpeg.wipe()
    thread.join()
    camera.close()
    assert not adapter.overlapped


@pytest.mark.parametrize(
    "options",
    [{"width": 32}, {"quality": 0}, {"quality": 101}, {"lores_size": (4000, 300)}],
)
def test_bad_options_are_refused(options: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        make(FakeAdapter(), **options)


# --- Registration in drivers.backends ------------------------------------------------------------


def test_registered_as_picamera2(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PHOTOSAFE_CAMERA", raising=False)
    adapter = FakeAdapter()
    # build_station passes width, height and quality to every camera backend (a canary only to
    # the simulated one).
    camera = camera_backend(
        "picamera2",
        adapter_factory=lambda: adapter,
        width=640,
        height=480,
        quality=90,
    )
    assert isinstance(camera, Picamera2Camera)
    camera.start()
    assert adapter.configured == ((640, 480), (160, 120), 90)
    camera.close()


def test_a_canary_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PHOTOSAFE_CAMERA", raising=False)
    with pytest.raises(BackendUnavailable, match="canary is for the simulated camera only"):
        camera_backend("picamera2", adapter_factory=FakeAdapter, canary=b"CANARY-0123456789")


@pytest.mark.skipif(
    importlib.util.find_spec("picamera2") is not None, reason="picamera2 is installed here"
)
def test_without_picamera2_the_backend_says_how_to_get_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PHOTOSAFE_CAMERA", raising=False)
    with pytest.raises(BackendUnavailable, match="python3-picamera2"):
        camera_backend("picamera2", width=640, height=480)
    with pytest.raises(BackendUnavailable, match="picamera2 cannot be imported"):
        Picamera2Adapter()
