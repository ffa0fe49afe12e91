"""The quality gate against the simulated camera's sharp, blurred, dark and blown-out stills.

Real JPEGs from `SimulatedCamera` at three resolutions (800x600, 1600x1200 and the HQ camera's
4056x3040), several scenes (seeds) at the smaller two, measured and judged by the real gate.
Besides the verdicts, the tests hold the margins: every figure is well clear of its threshold,
so a small change in the scene or the JPEG encoder does not flip a verdict.
"""

from __future__ import annotations

import io
from collections.abc import Iterator

import pytest
from PIL import Image, ImageFilter

from photosafe.daemon.quality import QualityGate, QualityThresholds, measure
from photosafe.daemon.workflow import QualityVerdict
from photosafe.drivers.camera import Still
from photosafe.drivers.camera_simulated import Fault, SimulatedCamera
from photosafe.drivers.secret import SecretBuffer

SIZES = [(800, 600), (1600, 1200), (4056, 3040)]
SEEDS = {(800, 600): (0, 1, 2, 3), (1600, 1200): (0, 1, 2, 3), (4056, 3040): (1,)}
EXPECTED: dict[Fault | None, str | None] = {
    None: None,
    "blur": "retake: the image is out of focus",
    "dark": "retake: the image is too dark",
    "overexposed": "retake: the image is overexposed",
}
DEFAULTS = QualityThresholds()


@pytest.fixture(scope="module")
def stills() -> Iterator[dict[tuple[int, int, int, Fault | None], Still]]:
    """One still per size, seed and fault (the 12 MP scene is rendered once: ~2 s)."""
    taken: dict[tuple[int, int, int, Fault | None], Still] = {}
    for width, height in SIZES:
        for seed in SEEDS[(width, height)]:
            camera = SimulatedCamera(width, height, seed=seed)
            camera.start()
            for fault in EXPECTED:
                camera.set_fault(fault)
                taken[(width, height, seed, fault)] = camera.capture()
            camera.close()
    yield taken
    for still in taken.values():
        still.jpeg.wipe()


CASES = [
    (width, height, seed, fault)
    for width, height in SIZES
    for seed in SEEDS[(width, height)]
    for fault in EXPECTED
]


@pytest.mark.parametrize(("width", "height", "seed", "fault"), CASES)
def test_the_gate_judges_each_simulated_fault(
    stills: dict[tuple[int, int, int, Fault | None], Still],
    width: int,
    height: int,
    seed: int,
    fault: Fault | None,
) -> None:
    verdict = QualityGate().check(stills[(width, height, seed, fault)])
    assert verdict.problem == EXPECTED[fault]
    assert verdict.figures is not None  # recorded in the manifest, pass or fail


@pytest.mark.parametrize(("width", "height", "seed", "fault"), CASES)
def test_every_figure_is_well_clear_of_its_threshold(
    stills: dict[tuple[int, int, int, Fault | None], Still],
    width: int,
    height: int,
    seed: int,
    fault: Fault | None,
) -> None:
    figures = measure(stills[(width, height, seed, fault)])
    if fault == "blur":
        assert figures.focus < DEFAULTS.min_focus / 1.5
    elif fault is None:
        assert figures.focus > DEFAULTS.min_focus * 2.5
    if fault == "dark":
        assert figures.shadows_clipped > DEFAULTS.max_shadows_clipped * 2
    else:
        assert figures.shadows_clipped < DEFAULTS.max_shadows_clipped / 10
    if fault == "overexposed":
        assert figures.highlights_clipped > DEFAULTS.max_highlights_clipped * 3
    else:
        assert figures.highlights_clipped < DEFAULTS.max_highlights_clipped / 10


def test_focus_is_measured_on_one_scale_whatever_the_resolution(
    stills: dict[tuple[int, int, int, Fault | None], Still],
) -> None:
    sharp = [measure(stills[(w, h, 1, None)]).focus for w, h in SIZES]
    blurred = [measure(stills[(w, h, 1, "blur")]).focus for w, h in SIZES]
    assert max(sharp) / min(sharp) < 1.6
    assert min(sharp) / max(blurred) > 4


def _jpeg(image: Image.Image) -> Still:
    out = io.BytesIO()
    image.save(out, "JPEG", quality=90)
    return Still(SecretBuffer.from_bytesio(out), image.width, image.height, _DETAILS)


_DETAILS = SimulatedCamera().details()


def _decoded(still: Still) -> Image.Image:
    with Image.open(io.BytesIO(bytes(still.jpeg.view()))) as image:
        return image.convert("RGB")


def test_exposure_is_judged_before_focus(
    stills: dict[tuple[int, int, int, Fault | None], Still],
) -> None:
    # Dark and out of focus: the operator hears about the light, the thing to fix first.
    blurred = _decoded(stills[(800, 600, 0, "blur")])
    dark_and_blurred = blurred.point([round(v * 0.2) for v in range(256)] * 3)
    assert QualityGate().check(_jpeg(dark_and_blurred)).problem == EXPECTED["dark"]
    bright_and_blurred = blurred.point([min(255, round(v * 2.8)) for v in range(256)] * 3)
    assert QualityGate().check(_jpeg(bright_and_blurred)).problem == EXPECTED["overexposed"]


def test_a_gaussian_blur_of_a_sharp_frame_is_out_of_focus(
    stills: dict[tuple[int, int, int, Fault | None], Still],
) -> None:
    sharp = _decoded(stills[(1600, 1200, 2, None)])
    for radius in (3, 6):
        verdict = QualityGate().check(_jpeg(sharp.filter(ImageFilter.GaussianBlur(radius))))
        assert verdict.problem == EXPECTED["blur"], radius


def test_a_small_still_is_refused_before_measuring() -> None:
    camera = SimulatedCamera(320, 240)
    camera.start()
    verdict = QualityGate().check(camera.capture())
    camera.close()
    assert verdict == QualityVerdict(None, "retake: resolution below 640x480")


def test_thresholds_come_from_the_station(
    stills: dict[tuple[int, int, int, Fault | None], Still],
) -> None:
    sharp = stills[(800, 600, 0, None)]
    strict = QualityGate(QualityThresholds(min_focus=10_000))
    assert strict.check(sharp).problem == EXPECTED["blur"]
    lenient = QualityGate(QualityThresholds(max_shadows_clipped=1.0, min_focus=1.0))
    assert lenient.check(stills[(800, 600, 0, "dark")]).problem is None
