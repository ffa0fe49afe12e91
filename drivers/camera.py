"""The camera as the station sees it: JPEG stills in memory and greyscale frames for barcodes.

The shape follows picamera2 on a Raspberry Pi (its backend comes with the hardware-drivers work):
a still configuration kept running, `capture_file(BytesIO, format="jpeg")` for the still, the
lores stream's Y plane as the greyscale preview, and the request metadata (ExposureTime,
AnalogueGain, LensPosition) as `CameraDetails`.

A still is plaintext patient imagery: it lives only in a SecretBuffer that the station wipes
after sealing. Preview frames are low-resolution images of the patient too: decode them for
barcodes and drop them; never store, send or log them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from photosafe.drivers.errors import CameraError
from photosafe.drivers.secret import SecretBuffer

__all__ = ["Camera", "CameraDetails", "CameraError", "GreyFrame", "Still"]


@dataclass(frozen=True)
class CameraDetails:
    """What the camera reports about itself and its last exposure (None: not known)."""

    model: str
    exposure_time_us: int | None = None
    analogue_gain: float | None = None
    lens_position: float | None = None  # dioptres, as libcamera reports it


@dataclass(frozen=True)
class Still:
    """One captured photograph: a JPEG held only in memory, and how it was taken."""

    jpeg: SecretBuffer
    width: int
    height: int
    info: CameraDetails


@dataclass(frozen=True)
class GreyFrame:
    """A low-resolution 8-bit greyscale frame, row by row, for the barcode decoder."""

    width: int
    height: int
    pixels: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if len(self.pixels) != self.width * self.height:
            raise ValueError("a grey frame needs exactly width * height pixels")


class Camera(Protocol):
    """A still camera. Calls may come from different threads; backends serialise them."""

    def start(self) -> None:
        """Powers up and starts streaming, so that captures are quick. Idempotent."""

    def capture(self) -> Still:
        """One full-resolution JPEG, in memory only. Raises CameraError if not started."""

    def preview_frame(self) -> GreyFrame | None:
        """The latest low-resolution greyscale frame, None if none is ready yet.

        Raises CameraError if not started.
        """

    def details(self) -> CameraDetails:
        """The model and the most recent exposure settings."""

    def close(self) -> None:
        """Stops the camera and releases it. Idempotent; the camera cannot be started again."""
