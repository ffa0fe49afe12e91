"""The camera scanner: real wristband symbols in simulated camera frames, decoded by zxing-cpp.

Symbols are rendered by zxing-cpp's writer (and, where the Debian `zint` CLI is installed, by
zint): a GS1 DataMatrix wristband (AI 8018 GSRN with AI 8019), a GS1-128 band and a plain
Code 128 NHS number. Each is rotated with Pillow (0, 10, 90 and 180 degrees), held up to a
`SimulatedCamera` with `show_barcode`, and read by a running `CameraScanner` from the camera's
preview frames at 800x600, 1600x1200 and 4056x3040 stills. The scans must classify as the
patient the band names. The cooldown is tested with a scripted camera that replays rendered
frames on a fake clock, so "held for three seconds" takes milliseconds and never flakes.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import zxingcpp
from PIL import Image

from photosafe.drivers.backends import BackendUnavailable, scanner_backend
from photosafe.drivers.camera import CameraDetails, CameraError, GreyFrame, Still
from photosafe.drivers.camera_simulated import SimulatedCamera
from photosafe.drivers.scanner import GS, Scan
from photosafe.drivers.scanner_camera import CameraScanner
from photosafe.protocol.identity import IdentityRules, Patient, classify

F = zxingcpp.BarcodeFormat
PREFIX = "9506000"  # GS1's example company prefix: never a real wristband
RULES = IdentityRules(nhs_gs1_company_prefix=PREFIX)


def nhs_number(stem: str) -> str:
    check = 11 - sum(int(d) * (10 - i) for i, d in enumerate(stem)) % 11
    assert check != 10
    return stem + str(check % 11)


def gsrn(nhs: str) -> str:
    body = PREFIX + nhs
    total = sum(int(d) * (3 if i % 2 == 0 else 1) for i, d in enumerate(reversed(body)))
    return body + str(-total % 10)


NHS_1, NHS_2, NHS_3 = (nhs_number(f"99900000{i}") for i in (1, 2, 3))
# (what is encoded, as zxing-cpp's writer takes it; what the scanner must deliver as wire text)
SYMBOLS: dict[str, tuple[str, F, bool, str, str]] = {
    "gs1-datamatrix": (f"(8018){gsrn(NHS_1)}(8019)1234", F.DataMatrix, True, "]d2", NHS_1),
    "gs1-128": (f"(8018){gsrn(NHS_2)}", F.Code128, True, "]C1", NHS_2),
    "code128": (NHS_3, F.Code128, False, "]C0", NHS_3),
}
WIRE = {
    "gs1-datamatrix": f"]d28018{gsrn(NHS_1)}{GS}80191234",
    "gs1-128": f"]C18018{gsrn(NHS_2)}",
    "code128": f"]C0{NHS_3}",
}


def rendered(name: str, scale: int) -> Image.Image:
    content, symbology, gs1, _, _ = SYMBOLS[name]
    symbol = zxingcpp.create_barcode(content, symbology, gs1=gs1)
    return Image.fromarray(zxingcpp.write_barcode_to_image(symbol, scale=scale))


def turned(image: Image.Image, angle: int) -> Image.Image:
    if angle % 90 == 0:
        return image.rotate(angle, expand=True)
    return image.rotate(angle, Image.Resampling.BICUBIC, expand=True, fillcolor=255)


@pytest.fixture(scope="module")
def cameras() -> Iterator[dict[tuple[int, int], SimulatedCamera]]:
    made = {}
    for size in ((800, 600), (1600, 1200), (4056, 3040)):
        made[size] = SimulatedCamera(*size, seed=4)
        made[size].start()
    yield made
    for camera in made.values():
        camera.close()


def scan_once(camera: SimulatedCamera, band: Image.Image, timeout: float = 5.0) -> list[Scan]:
    """Holds `band` up to the camera with a scanner running; the scans until the first one."""
    scans: list[Scan] = []
    arrived = threading.Event()

    def on_scan(scan: Scan) -> None:
        scans.append(scan)
        arrived.set()

    camera.show_barcode(band)
    scanner = CameraScanner(camera, interval_s=0.005, cooldown_s=1.0, slow_every=3)
    scanner.start(on_scan)
    try:
        arrived.wait(timeout)
    finally:
        scanner.stop()
        camera.show_barcode(None)
    return scans


# (symbol, zxing-cpp render scale, rotation in degrees, still size). Code 128 at 800x600 only at
# its finest scale: at a quarter of 800 pixels a longer symbol's bars are too thin to resolve (as
# a real lores stream would be); bands turned 90 degrees are laid across 35 % of the frame's
# height, so a linear symbol needs the larger stills.
CASES = [
    ("gs1-datamatrix", 3, 0, (800, 600)),
    ("gs1-datamatrix", 3, 10, (800, 600)),
    ("gs1-datamatrix", 3, 90, (800, 600)),
    ("gs1-datamatrix", 3, 180, (800, 600)),
    ("gs1-datamatrix", 1, 0, (1600, 1200)),
    ("gs1-datamatrix", 1, 180, (4056, 3040)),
    ("gs1-128", 1, 0, (1600, 1200)),
    ("gs1-128", 3, 180, (1600, 1200)),
    ("gs1-128", 3, 10, (4056, 3040)),
    ("gs1-128", 1, 90, (4056, 3040)),
    ("code128", 1, 0, (800, 600)),
    ("code128", 1, 180, (800, 600)),
    ("code128", 3, 10, (1600, 1200)),
    ("code128", 3, 90, (4056, 3040)),
]


@pytest.mark.parametrize(
    ("name", "scale", "angle", "size"),
    CASES,
    ids=[f"{n}-x{s}-{a}deg-{w}x{h}" for n, s, a, (w, h) in CASES],
)
def test_a_wristband_held_up_is_read_as_its_patient(
    cameras: dict[tuple[int, int], SimulatedCamera],
    name: str,
    scale: int,
    angle: int,
    size: tuple[int, int],
) -> None:
    scans = scan_once(cameras[size], turned(rendered(name, scale), angle))
    assert [scan.wire_text for scan in scans] == [WIRE[name]]
    scan = scans[0]
    assert (scan.symbology, scan.source) == (SYMBOLS[name][3], "camera")
    patient = classify(scan.wire_text, RULES)
    assert isinstance(patient, Patient) and patient.identifier == SYMBOLS[name][4]


@pytest.mark.skipif(shutil.which("zint") is None, reason="the zint CLI is not installed")
@pytest.mark.parametrize(
    ("arguments", "wire"),
    [
        (["-b", "71", "--gs1", "--scale=3"], "gs1-datamatrix"),
        (["-b", "16", "--scale=1"], "gs1-128"),
        (["-b", "20", "--scale=1"], "code128"),
    ],
    ids=["datamatrix", "gs1-128", "code128"],
)
def test_symbols_rendered_by_zint_are_read_too(
    cameras: dict[tuple[int, int], SimulatedCamera],
    tmp_path: Path,
    arguments: list[str],
    wire: str,
) -> None:
    data = {
        "gs1-datamatrix": f"[8018]{gsrn(NHS_1)}[8019]1234",
        "gs1-128": f"[8018]{gsrn(NHS_2)}",
        "code128": NHS_3,
    }[wire]
    png = tmp_path / "band.png"  # synthetic test data, not a patient's
    subprocess.run(["zint", *arguments, "-d", data, "-o", str(png)], check=True)
    with Image.open(png) as band:
        scans = scan_once(cameras[(1600, 1200)], band.convert("L"))
    assert [scan.wire_text for scan in scans] == [WIRE[wire]]


def test_only_the_configured_formats_are_read(
    cameras: dict[tuple[int, int], SimulatedCamera],
) -> None:
    camera = cameras[(1600, 1200)]
    qr = zxingcpp.create_barcode("PSC1:CAPTURE", F.QRCode)
    card = Image.fromarray(zxingcpp.write_barcode_to_image(qr, scale=4))
    assert [s.wire_text for s in scan_once(camera, card)] == ["]Q1PSC1:CAPTURE"]  # a default
    band = rendered("code128", 1)
    camera.show_barcode(band)
    only_datamatrix = CameraScanner(
        camera, interval_s=0.005, cooldown_s=1.0, formats=["DataMatrix"]
    )
    scans: list[Scan] = []
    only_datamatrix.start(scans.append)
    time.sleep(0.3)  # dozens of frames, slow passes included
    only_datamatrix.stop()
    camera.show_barcode(None)
    assert scans == []


# --- One band is one scan: a scripted camera on a fake clock ---------------------------------


class ScriptedCamera:
    """Replays frames, one per preview_frame() call, each 0.1 s later on the fake clock."""

    STEP = 0.1

    def __init__(self, frames: list[GreyFrame | None]) -> None:
        self.frames = list(frames)
        self.now = 0.0
        self.done = threading.Event()
        self.lock = threading.Lock()

    def clock(self) -> float:
        with self.lock:
            return self.now

    def preview_frame(self) -> GreyFrame | None:
        with self.lock:
            if not self.frames:
                self.done.set()
                return None
            self.now += self.STEP
            return self.frames.pop(0)

    def start(self) -> None: ...

    def capture(self) -> Still:
        raise CameraError("a scripted camera takes no stills")

    def details(self) -> CameraDetails:
        return CameraDetails("scripted")

    def close(self) -> None: ...


@pytest.fixture(scope="module")
def frames(cameras: dict[tuple[int, int], SimulatedCamera]) -> dict[str, GreyFrame]:
    """Preview frames of nothing, of band 1, of band 3 and of both held side by side."""
    camera = cameras[(4056, 3040)]
    both = Image.new("L", (700, 200), 255)
    both.paste(rendered("gs1-datamatrix", 2), (20, 40))
    both.paste(rendered("code128", 1), (300, 50))
    shown: dict[str, GreyFrame] = {}
    for name, band in (
        ("empty", None),
        ("band1", rendered("gs1-datamatrix", 3)),
        ("band3", rendered("code128", 1)),
        ("both", both),
    ):
        camera.show_barcode(band)
        shown[name] = camera.preview_frame()
    camera.show_barcode(None)
    return shown


def replay(script: list[tuple[str, int]], frames: dict[str, GreyFrame]) -> list[str]:
    """Runs a scanner (cooldown 1 s of fake time) over the script; the wire texts delivered."""
    camera = ScriptedCamera([frames[name] for name, count in script for _ in range(count)])
    scans: list[Scan] = []
    scanner = CameraScanner(
        camera, interval_s=0.001, cooldown_s=1.0, slow_every=3, clock=camera.clock
    )
    scanner.start(scans.append)
    assert camera.done.wait(10)
    scanner.stop()
    return [scan.wire_text for scan in scans]


def test_a_band_held_in_view_is_one_scan(frames: dict[str, GreyFrame]) -> None:
    # Five seconds in view, with two frames in which it is not read (a hand moving).
    script = [("band1", 20), ("empty", 2), ("band1", 28), ("empty", 5)]
    assert replay(script, frames) == [WIRE["gs1-datamatrix"]]


def test_the_same_band_again_after_the_cooldown_is_a_second_scan(
    frames: dict[str, GreyFrame],
) -> None:
    script = [("band1", 5), ("empty", 12), ("band1", 5), ("empty", 8), ("band1", 5)]
    assert replay(script, frames) == [WIRE["gs1-datamatrix"]] * 2  # the 0.8 s gap is too short


def test_a_second_band_is_a_second_scan(frames: dict[str, GreyFrame]) -> None:
    # Band 1 is out of view for 0.5 s only (less than the cooldown): it is not read again.
    script = [("band1", 10), ("band3", 5), ("both", 10), ("band1", 5)]
    assert replay(script, frames) == [WIRE["gs1-datamatrix"], WIRE["code128"]]


def test_two_bands_in_one_frame_are_two_scans(frames: dict[str, GreyFrame]) -> None:
    assert sorted(replay([("both", 10)], frames)) == sorted(
        [WIRE["gs1-datamatrix"], WIRE["code128"]]
    )


# --- Starting, stopping and a camera that fails ----------------------------------------------


def test_scans_stop_with_stop_and_resume_with_start(
    cameras: dict[tuple[int, int], SimulatedCamera],
) -> None:
    camera = cameras[(800, 600)]
    camera.show_barcode(rendered("gs1-datamatrix", 3))
    scanner = CameraScanner(camera, interval_s=0.005, cooldown_s=0.5)
    first: list[Scan] = []
    second: list[Scan] = []
    try:
        scanner.start(first.append)
        _wait_for(lambda: len(first) == 1)
        scanner.stop()
        scanner.stop()  # idempotent
        time.sleep(0.05)
        assert len(first) == 1
        scanner.start(second.append)  # a fresh start: the band in view is read again
        _wait_for(lambda: len(second) == 1)
    finally:
        scanner.stop()
        camera.show_barcode(None)


def test_stop_from_the_callback_does_not_deadlock(
    cameras: dict[tuple[int, int], SimulatedCamera],
) -> None:
    camera = cameras[(800, 600)]
    camera.show_barcode(rendered("gs1-datamatrix", 3))
    scanner = CameraScanner(camera, interval_s=0.005, cooldown_s=0.5)
    scans: list[Scan] = []

    def stop_on_scan(scan: Scan) -> None:
        scans.append(scan)
        scanner.stop()

    try:
        scanner.start(stop_on_scan)
        _wait_for(lambda: len(scans) == 1)
        time.sleep(0.05)
        assert len(scans) == 1
    finally:
        scanner.stop()
        camera.show_barcode(None)


def test_a_camera_not_started_yet_is_waited_for(caplog: pytest.LogCaptureFixture) -> None:
    camera = SimulatedCamera(800, 600, seed=2)
    camera.show_barcode(rendered("gs1-datamatrix", 3))
    scans: list[Scan] = []
    scanner = CameraScanner(camera, interval_s=0.005, cooldown_s=0.5)
    with caplog.at_level(logging.INFO, logger="photosafe.drivers.scanner_camera"):
        scanner.start(scans.append)
        time.sleep(0.05)
        camera.start()
        _wait_for(lambda: len(scans) == 1)
        scanner.stop()
    camera.close()
    messages = [record.getMessage() for record in caplog.records]
    assert messages[:2] == ["camera_scanner.no_frames", "camera_scanner.frames_again"]
    assert messages.count("camera_scanner.no_frames") == 1  # logged once, not every frame


@pytest.mark.parametrize(
    "options",
    [
        {"interval_s": 0},
        {"slow_every": 0},
        {"interval_s": 0.5, "cooldown_s": 1.0, "slow_every": 5},
        {"formats": []},
        {"formats": ["NoSuchFormat"]},
    ],
)
def test_bad_options_are_refused(options: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        CameraScanner(SimulatedCamera(), **options)  # type: ignore[arg-type]


def test_registered_as_camera_and_given_the_station_camera(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("PHOTOSAFE_SCANNER", raising=False)
    camera = SimulatedCamera()
    assert isinstance(scanner_backend("camera", camera=camera, cooldown_s=2.0), CameraScanner)
    with pytest.raises(BackendUnavailable, match="needs the station's camera"):
        scanner_backend("camera")
    monkeypatch.setenv("PHOTOSAFE_SCANNER", "camera")  # a development override gets it too
    assert isinstance(scanner_backend("simulated", camera=camera), CameraScanner)


def _wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)
