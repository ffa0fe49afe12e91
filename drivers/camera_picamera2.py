"""The Raspberry Pi camera through picamera2: stills in memory, lores frames for barcodes.

Two layers. `Picamera2Adapter` is the only code that touches picamera2 (and libcamera); it
imports them lazily, inside itself, and exposes exactly the calls this backend makes: configure
a still configuration with a lores stream, start, stop, close, autofocus, a JPEG into a BytesIO,
the lores plane of one request, and the camera's model. `Picamera2Camera` is the `Camera`
(photosafe.drivers.camera) built on any object with those calls, so it is tested against a fake
adapter on machines without libcamera (all but a Pi).

How it drives the camera (REFERENCE.md section 1):
- One still configuration (main at the configured size, a YUV420 lores stream beside it) is
  configured once and kept running: no preview-to-still mode switch per shot, which costs
  500-700 ms for the first frame.
- Where the camera has autofocus (Camera Module 3), it focuses continuously while streaming (a
  wristband held up to the lens comes into focus for the barcode scanner) and runs one autofocus
  cycle before each still. A failed cycle is logged, not fatal: the quality gate judges focus.
- Each still is encoded by picamera2 into an `io.BytesIO` with `format="jpeg"` (the fast
  simplejpeg path needs a real BytesIO, not a path: anything else would be opened as a file) and
  moved into a SecretBuffer at once. picamera2 always adds EXIF to that JPEG; the station strips
  it (photosafe.daemon.metadata) before anything else sees the image.
- A preview frame is the Y plane of one lores request: YUV420 arrives as one array of
  height * 3 / 2 rows of `stride` bytes; the first `height` rows, `width` bytes each, are the
  greyscale image.
- `details()` comes from the request metadata (ExposureTime, AnalogueGain, LensPosition) and the
  model from the camera properties.

Every call is serialised by one lock: the barcode scanner's thread polls preview frames while
the station's thread captures stills. Any failure inside picamera2 becomes a CameraError, which
the station shows as a camera fault.
"""

from __future__ import annotations

import importlib
import io
import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple, Protocol

from photosafe.drivers.camera import CameraDetails, CameraError, GreyFrame, Still
from photosafe.drivers.errors import BackendUnavailable
from photosafe.drivers.secret import SecretBuffer

__all__ = [
    "CameraAdapter",
    "Picamera2Adapter",
    "Picamera2Camera",
    "StreamSizes",
    "require_picamera2",
]

log = logging.getLogger(__name__)

PREVIEW_SCALE = 4  # the lores stream's default size: a quarter of the still in each direction
_INSTALL_HINT = (
    "on a Raspberry Pi it needs Raspberry Pi OS's python3-picamera2"
    " (apt install python3-picamera2, and a venv made with --system-site-packages)"
)
_MAX_MODEL = 100  # the manifest's camera.model limit


class StreamSizes(NamedTuple):
    """The sizes libcamera settled on (it may align what was asked for)."""

    main: tuple[int, int]
    lores: tuple[int, int]


class CameraAdapter(Protocol):
    """The calls Picamera2Camera makes: Picamera2Adapter on a Pi, a fake in the tests."""

    @property
    def model(self) -> str:
        """The sensor's name from the camera properties, e.g. "imx708"."""

    @property
    def has_autofocus(self) -> bool:
        """Whether the camera has a focus motor (Camera Module 3 does, the HQ camera not)."""

    def configure(self, main: tuple[int, int], lores: tuple[int, int], quality: int) -> StreamSizes:
        """Configures a still configuration with a YUV420 lores stream and the JPEG quality."""

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def close(self) -> None: ...

    def focus_continuously(self) -> None:
        """Autofocus keeps adjusting while streaming (only called when has_autofocus)."""

    def autofocus_cycle(self) -> bool:
        """One autofocus cycle; True if it ended focused (only called when has_autofocus)."""

    def capture_jpeg(self, out: io.BytesIO) -> Mapping[str, Any]:
        """Encodes the next main-stream frame as JPEG into `out`; returns that frame's metadata."""

    def capture_lores(self) -> tuple[memoryview, Mapping[str, Any]]:
        """The next lores frame as a 2-D byte view (rows, stride), and its metadata."""


def require_picamera2() -> None:
    """Raises BackendUnavailable, saying how to install it, when picamera2 cannot be imported."""
    try:
        importlib.import_module("picamera2")
    except ImportError as exc:
        raise BackendUnavailable(f"picamera2 cannot be imported ({exc}); {_INSTALL_HINT}") from exc


class Picamera2Adapter:
    """picamera2 itself, reduced to the calls in CameraAdapter. Opening it claims the camera."""

    def __init__(self, camera_num: int = 0) -> None:
        require_picamera2()
        from picamera2 import Picamera2

        # libcamera's Python bindings come with picamera2 on Raspberry Pi OS; imported by name so
        # that type checking works on machines that do not have them.
        self._controls: Any = importlib.import_module("libcamera").controls
        try:
            self._camera: Any = Picamera2(camera_num)
        except (RuntimeError, IndexError) as exc:  # "No camera number 0 found"
            raise CameraError(f"no camera {camera_num}: {exc}") from exc

    @property
    def model(self) -> str:
        return str(self._camera.camera_properties.get("Model", "unknown"))

    @property
    def has_autofocus(self) -> bool:
        return "AfMode" in self._camera.camera_controls

    def configure(self, main: tuple[int, int], lores: tuple[int, int], quality: int) -> StreamSizes:
        config = self._camera.create_still_configuration(
            main={"size": main},
            lores={"size": lores, "format": "YUV420"},
            buffer_count=2,  # one for the application, one being filled: frames keep coming
        )
        self._camera.configure(config)
        self._camera.options["quality"] = quality
        configured = self._camera.camera_configuration()
        (main_w, main_h), (lores_w, lores_h) = (configured[s]["size"] for s in ("main", "lores"))
        return StreamSizes((int(main_w), int(main_h)), (int(lores_w), int(lores_h)))

    def start(self) -> None:
        self._camera.start()

    def stop(self) -> None:
        self._camera.stop()

    def close(self) -> None:
        self._camera.close()

    def focus_continuously(self) -> None:
        self._camera.set_controls({"AfMode": self._controls.AfModeEnum.Continuous})

    def autofocus_cycle(self) -> bool:
        return bool(self._camera.autofocus_cycle())

    def capture_jpeg(self, out: io.BytesIO) -> Mapping[str, Any]:
        metadata: Mapping[str, Any] = self._camera.capture_file(out, format="jpeg")
        return metadata

    def capture_lores(self) -> tuple[memoryview, Mapping[str, Any]]:
        with self._camera.captured_request() as request:
            plane = request.make_array("lores")  # a copy: the request goes back to the camera
            metadata: Mapping[str, Any] = request.get_metadata()
        return memoryview(plane), metadata


class Picamera2Camera:
    """A Camera (see photosafe.drivers.camera) on a Raspberry Pi camera module."""

    def __init__(
        self,
        adapter_factory: Callable[[], CameraAdapter] = Picamera2Adapter,
        *,
        width: int = 4056,
        height: int = 3040,
        quality: int = 90,
        autofocus: bool = True,
        lores_size: tuple[int, int] | None = None,
    ) -> None:
        if width < 64 or height < 64:
            raise ValueError("a still needs at least 64 x 64 pixels")
        if not 1 <= quality <= 100:
            raise ValueError("JPEG quality must be 1 to 100")
        lores = lores_size or (width // PREVIEW_SCALE, height // PREVIEW_SCALE)
        if not (16 <= lores[0] <= width and 16 <= lores[1] <= height):
            raise ValueError("the lores stream must be at least 16 x 16 and no larger than a still")
        self._factory = adapter_factory
        self._asked = StreamSizes((width, height), (lores[0] & ~1, lores[1] & ~1))
        self._quality = quality
        self._autofocus = autofocus
        self._lock = threading.Lock()
        self._adapter: CameraAdapter | None = None
        self._sizes = self._asked
        self._closed = False
        self._details = CameraDetails("picamera2")

    def start(self) -> None:
        """Opens the camera, configures the still + lores configuration and starts streaming."""
        with self._lock:
            if self._closed:
                raise CameraError("the camera was closed")
            if self._adapter is not None:
                return
            adapter = self._factory()
            try:
                self._sizes = adapter.configure(self._asked.main, self._asked.lores, self._quality)
                adapter.start()
                if self._focuses(adapter):
                    adapter.focus_continuously()
            except Exception as exc:
                _close_quietly(adapter)
                raise CameraError(f"the camera did not start: {_describe(exc)}") from exc
            self._adapter = adapter
            self._details = CameraDetails(_model(adapter.model))
            log.info("camera.started", extra={"model": self._details.model})

    def capture(self) -> Still:
        with self._lock:
            adapter = self._running()
            out = io.BytesIO()
            try:
                if self._focuses(adapter):
                    if not adapter.autofocus_cycle():
                        log.warning("camera.autofocus_failed")
                    adapter.focus_continuously()  # the cycle left it in single-shot mode
                metadata = adapter.capture_jpeg(out)
            except Exception as exc:
                SecretBuffer.from_bytesio(out).wipe()  # whatever was written: zeroed, closed
                raise CameraError(f"capture failed: {_describe(exc)}") from exc
            jpeg = SecretBuffer.from_bytesio(out)
            if len(jpeg) == 0:
                raise CameraError("capture failed: the camera wrote no JPEG")
            self._details = self._from_metadata(metadata)
            width, height = self._sizes.main
            return Still(jpeg, width, height, self._details)

    def preview_frame(self) -> GreyFrame:
        with self._lock:
            adapter = self._running()
            try:
                plane, metadata = adapter.capture_lores()
            except Exception as exc:
                raise CameraError(f"preview frame failed: {_describe(exc)}") from exc
            self._details = self._from_metadata(metadata)
            width, height = self._sizes.lores
            return GreyFrame(width, height, _y_plane(plane, width, height))

    def details(self) -> CameraDetails:
        with self._lock:
            return self._details

    def close(self) -> None:
        with self._lock:
            self._closed = True
            adapter, self._adapter = self._adapter, None
            if adapter is not None:
                _close_quietly(adapter)
                log.info("camera.closed")

    def _running(self) -> CameraAdapter:
        if self._closed:
            raise CameraError("the camera was closed")
        if self._adapter is None:
            raise CameraError("the camera is not started")
        return self._adapter

    def _focuses(self, adapter: CameraAdapter) -> bool:
        return self._autofocus and adapter.has_autofocus

    def _from_metadata(self, metadata: Mapping[str, Any]) -> CameraDetails:
        exposure = metadata.get("ExposureTime")
        gain = metadata.get("AnalogueGain")
        lens = metadata.get("LensPosition")
        return CameraDetails(
            self._details.model,
            int(exposure) if isinstance(exposure, int | float) else None,
            float(gain) if isinstance(gain, int | float) else None,
            float(lens) if isinstance(lens, int | float) else None,
        )


def _y_plane(plane: memoryview, width: int, height: int) -> bytes:
    """The first `height` rows of `width` bytes of a YUV420 frame: its luma, row padding dropped."""
    if plane.ndim != 2 or plane.itemsize != 1:
        raise CameraError(f"the lores frame is not a 2-D byte array (shape {plane.shape})")
    shape = plane.shape or (0, 0)
    rows, stride = shape[0], shape[1]
    if rows < height or stride < width:
        raise CameraError(f"the lores frame ({stride} x {rows}) is smaller than {width} x {height}")
    flat = plane.cast("B") if plane.c_contiguous else memoryview(plane.tobytes())
    if stride == width:
        return flat[: width * height].tobytes()
    return b"".join(flat[row * stride : row * stride + width] for row in range(height))


def _model(name: str) -> str:
    return f"{name} (picamera2)"[:_MAX_MODEL]


def _describe(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}"


def _close_quietly(adapter: CameraAdapter) -> None:
    """Stops and closes; a camera that fails to stop is still closed (and the failure logged)."""
    for step in (adapter.stop, adapter.close):
        try:
            step()
        except Exception as exc:
            log.warning("camera.release_failed", extra={"error": _describe(exc)})
