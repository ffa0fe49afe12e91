"""The quality gate: is this image good enough for its clinical purpose? (MISSION.md rule 6)

Three figures, measured on a small greyscale decode so the gate costs milliseconds, not a full
decode: focus (variance of a Laplacian: low means blurred), and the fractions of pixels clipped to
black and to white (under- and over-exposure), plus a minimum resolution. Thresholds come from the
station config; the figures travel in the manifest whether the image passes or not.

Decoding makes copies of (downscaled) pixels that Python cannot wipe; they are small and freed at
once. The JPEG itself is read through a view, not copied.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

from PIL import Image, ImageFilter, ImageStat

from photosafe.daemon.workflow import QualityVerdict
from photosafe.drivers.camera import Still
from photosafe.protocol.manifest import QualityFigures

_LAPLACIAN = ImageFilter.Kernel((3, 3), [0, 1, 0, 1, -4, 1, 0, 1, 0], scale=1, offset=128)
_ANALYSIS_WIDTH = 640


@dataclass(frozen=True)
class QualityThresholds:
    min_focus: float = 40.0
    max_shadows_clipped: float = 0.25
    max_highlights_clipped: float = 0.25
    min_width: int = 640
    min_height: int = 480


class _ViewReader(io.RawIOBase):
    """A read-only file over a memoryview, so Pillow reads the JPEG without a full copy."""

    def __init__(self, view: memoryview) -> None:
        self._view = view
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: len(self._view)}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def tell(self) -> int:
        return self._pos

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        chunk = self._view[self._pos : self._pos + len(buffer)]
        buffer[: len(chunk)] = chunk
        self._pos += len(chunk)
        return len(chunk)


def measure(still: Still) -> QualityFigures:
    """Focus and clipping figures of a still, from a small greyscale decode."""
    with Image.open(io.BufferedReader(_ViewReader(still.jpeg.view()))) as image:
        # JPEG draft mode decodes at 1/2, 1/4 or 1/8 scale directly: fast and small.
        image.draft("L", (_ANALYSIS_WIDTH, _ANALYSIS_WIDTH * image.height // image.width))
        grey = image.convert("L")
    if grey.width > _ANALYSIS_WIDTH:
        grey = grey.resize((_ANALYSIS_WIDTH, _ANALYSIS_WIDTH * grey.height // grey.width))
    edges = grey.filter(_LAPLACIAN)
    focus = ImageStat.Stat(edges).var[0]
    histogram = grey.histogram()
    total = grey.width * grey.height
    return QualityFigures(
        focus=round(focus, 2),
        shadows_clipped=round(sum(histogram[:8]) / total, 4),
        highlights_clipped=round(sum(histogram[248:]) / total, 4),
    )


class QualityGate:
    def __init__(self, thresholds: QualityThresholds = QualityThresholds()) -> None:
        self.thresholds = thresholds

    def check(self, still: Still) -> QualityVerdict:
        t = self.thresholds
        if still.width < t.min_width or still.height < t.min_height:
            return QualityVerdict(None, f"retake: resolution below {t.min_width}x{t.min_height}")
        figures = measure(still)
        if figures.focus < t.min_focus:
            return QualityVerdict(figures, "retake: the image is out of focus")
        if figures.shadows_clipped > t.max_shadows_clipped:
            return QualityVerdict(figures, "retake: the image is too dark")
        if figures.highlights_clipped > t.max_highlights_clipped:
            return QualityVerdict(figures, "retake: the image is overexposed")
        return QualityVerdict(figures, None)
