"""The quality gate: is this image good enough for its clinical purpose? (MISSION.md rule 6)

The gate measures three figures on a small greyscale copy of the still and checks a minimum
resolution. The thresholds come from the station; the figures go into the manifest
(`QualityFigures`) whether the image passes or not.

The analysis image: the JPEG is decoded in draft mode (libjpeg scales by 1/2, 1/4 or 1/8 while
decoding, so a 12 MP still costs tens of milliseconds), converted to grey (ITU-R 601 luma) and
resized (bicubic) to `ANALYSIS_WIDTH` = 640 pixels wide, keeping the aspect ratio. Stills are
only ever scaled down: the gate refuses stills narrower than its minimum width (640) before it
measures anything. Every figure is measured on this 640-pixel-wide image, so the same scene gives
comparable figures whatever the camera's resolution.

The figures:
- `focus`: the variance of the 4-neighbour Laplacian (0 1 0 / 1 -4 1 / 0 1 0) of the analysis
  image, in grey levels squared, each Laplacian value clamped to -128..127. Blur removes the fine
  detail the Laplacian responds to: low means out of focus.
- `shadows_clipped`: the fraction of analysis pixels at or below grey level `SHADOW_LEVEL` = 40
  (of 255), about three stops or more below middle grey: deep shadow in which skin shows no
  usable detail. Well-exposed clinical photographs have little of it; an underexposed one is
  mostly made of it.
- `highlights_clipped`: the fraction of analysis pixels at or above grey level
  `HIGHLIGHT_LEVEL` = 248 (of 255): blown-out white with no detail left.

The checks, in this order (the first failure is the reason the operator hears):
1. width and height at least the minimum ("resolution below ...");
2. `shadows_clipped` above its maximum: "too dark";
3. `highlights_clipped` above its maximum: "overexposed";
4. `focus` below its minimum: "out of focus".
Exposure comes before focus because a badly exposed frame's focus figure means little (its
detail is crushed or lost) and the remedy the operator needs is the exposure.

Default thresholds, from the simulated camera's scenes at 640x480 to 4056x3040 (see
tests/test_quality.py): sharp frames measure a focus of about 300 to 470, blurred ones 30 to 55,
so the minimum is 100; good frames have about 1 % of pixels in deep shadow and none blown out,
dark frames (a fifth of the light) 60 to 90 % in deep shadow and overexposed ones over 90 %
blown out, so both maxima are 25 %. A frame filled by very dark skin and exposed for a bright
background can also measure as "too dark": the remedy is the same (expose for the skin).

Decoding makes copies of (downscaled) pixels that Python cannot wipe; they are small and freed at
once. The JPEG itself is read through a view, not copied.
"""

from __future__ import annotations

from dataclasses import dataclass

from PIL import Image, ImageFilter, ImageStat

from photosafe.daemon.workflow import QualityVerdict
from photosafe.drivers.camera import Still
from photosafe.protocol.manifest import QualityFigures

_LAPLACIAN = ImageFilter.Kernel((3, 3), [0, 1, 0, 1, -4, 1, 0, 1, 0], scale=1, offset=128)
ANALYSIS_WIDTH = 640
SHADOW_LEVEL = 40  # at or below: deep shadow
HIGHLIGHT_LEVEL = 248  # at or above: blown out


@dataclass(frozen=True)
class QualityThresholds:
    min_focus: float = 100.0
    max_shadows_clipped: float = 0.25
    max_highlights_clipped: float = 0.25
    min_width: int = 640
    min_height: int = 480


def measure(still: Still) -> QualityFigures:
    """Focus and clipping figures of a still, from a small greyscale decode."""
    with Image.open(still.jpeg.reader()) as image:
        # JPEG draft mode decodes at 1/2, 1/4 or 1/8 scale directly: fast and small.
        image.draft("L", (ANALYSIS_WIDTH, ANALYSIS_WIDTH * image.height // image.width))
        grey = image.convert("L")
    if grey.width > ANALYSIS_WIDTH:
        size = (ANALYSIS_WIDTH, max(1, ANALYSIS_WIDTH * grey.height // grey.width))
        grey = grey.resize(size, Image.Resampling.BICUBIC)
    edges = grey.filter(_LAPLACIAN)
    focus = ImageStat.Stat(edges).var[0]
    histogram = grey.histogram()
    total = grey.width * grey.height
    return QualityFigures(
        focus=round(focus, 2),
        shadows_clipped=round(sum(histogram[: SHADOW_LEVEL + 1]) / total, 4),
        highlights_clipped=round(sum(histogram[HIGHLIGHT_LEVEL:]) / total, 4),
    )


class QualityGate:
    def __init__(self, thresholds: QualityThresholds = QualityThresholds()) -> None:
        self.thresholds = thresholds

    def check(self, still: Still) -> QualityVerdict:
        t = self.thresholds
        if still.width < t.min_width or still.height < t.min_height:
            return QualityVerdict(None, f"retake: resolution below {t.min_width}x{t.min_height}")
        figures = measure(still)
        if figures.shadows_clipped > t.max_shadows_clipped:
            return QualityVerdict(figures, "retake: the image is too dark")
        if figures.highlights_clipped > t.max_highlights_clipped:
            return QualityVerdict(figures, "retake: the image is overexposed")
        if figures.focus < t.min_focus:
            return QualityVerdict(figures, "retake: the image is out of focus")
        return QualityVerdict(figures, None)
