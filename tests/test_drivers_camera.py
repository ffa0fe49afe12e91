"""The simulated camera: real JPEGs of a test scene, in memory, with faults and a wristband.

Stills are decoded with Pillow and barcodes with zxing-cpp, the decoder the station uses.
"""

from __future__ import annotations

import io
from collections.abc import Iterator

import pytest
import zxingcpp
from PIL import Image, ImageFilter, ImageStat

from photosafe.drivers.camera import CameraError, GreyFrame, Still
from photosafe.drivers.camera_simulated import PREVIEW_SCALE, SimulatedCamera, com_segment

CANARY = b"PHOTOSAFE-CANARY-7f3a9c21e4b04d6d"
GSRN = "8018950600012345678907"


@pytest.fixture
def camera() -> Iterator[SimulatedCamera]:
    cam = SimulatedCamera(canary=CANARY)
    cam.start()
    yield cam
    cam.close()


def _jpeg(still: Still) -> bytes:
    return bytes(still.jpeg.view())  # a test may copy plaintext: it is synthetic


def _decode(still: Still) -> Image.Image:
    image = Image.open(io.BytesIO(_jpeg(still)))
    image.load()
    return image


def _focus(image: Image.Image) -> float:
    """Variance of the Laplacian of the grey image: high when sharp, low when blurred."""
    laplacian = ImageFilter.Kernel((3, 3), [0, 1, 0, 1, -4, 1, 0, 1, 0], scale=1, offset=128)
    return float(ImageStat.Stat(image.convert("L").filter(laplacian)).var[0])


def _brightness(image: Image.Image) -> float:
    return float(ImageStat.Stat(image.convert("L")).mean[0])


def _grey(frame: GreyFrame) -> Image.Image:
    return Image.frombytes("L", (frame.width, frame.height), frame.pixels)


@pytest.mark.parametrize("size", [(1600, 1200), (640, 480)])
def test_still_is_a_jpeg_of_the_configured_size(size: tuple[int, int]) -> None:
    cam = SimulatedCamera(*size)
    cam.start()
    still = cam.capture()
    image = _decode(still)
    assert (image.format, image.mode, image.size) == ("JPEG", "RGB", size)
    assert (still.width, still.height) == size
    assert still.info.model.startswith("simulated")


def test_canary_is_in_the_jpeg_bytes_verbatim(camera: SimulatedCamera) -> None:
    still = camera.capture()
    assert com_segment(CANARY) in _jpeg(still)
    assert _decode(still).info["comment"] == CANARY


def test_no_canary_no_comment_segment() -> None:
    cam = SimulatedCamera()
    cam.start()
    jpeg = _jpeg(cam.capture())
    assert b"\xff\xfe" not in jpeg  # 0xFF is stuffed in scan data, so this is only ever COM
    assert CANARY not in jpeg


def test_repr_of_a_still_shows_no_image_bytes(camera: SimulatedCamera) -> None:
    still = camera.capture()
    assert "SecretBuffer(<" in repr(still)
    assert CANARY.decode() not in repr(still)


def test_consecutive_captures_differ_and_a_seed_repeats_its_sequence() -> None:
    first, again, other = SimulatedCamera(seed=7), SimulatedCamera(seed=7), SimulatedCamera(seed=8)
    for cam in (first, again, other):
        cam.start()
    run = [_jpeg(first.capture()) for _ in range(3)]
    assert len(set(run)) == 3
    assert [_jpeg(again.capture()) for _ in range(3)] == run
    assert _jpeg(other.capture()) not in run


def test_blur_fault_lowers_the_focus_measure(camera: SimulatedCamera) -> None:
    sharp = _focus(_decode(camera.capture()))
    camera.set_fault("blur")
    blurred = _focus(_decode(camera.capture()))
    camera.set_fault(None)
    again = _focus(_decode(camera.capture()))
    assert blurred < sharp / 4
    assert again > sharp * 0.8


def test_dark_and_overexposed_faults_shift_mean_brightness(camera: SimulatedCamera) -> None:
    normal = camera.capture()
    camera.set_fault("dark")
    dark = camera.capture()
    camera.set_fault("overexposed")
    bright = camera.capture()
    assert 60 < _brightness(_decode(normal)) < 200
    assert _brightness(_decode(dark)) < _brightness(_decode(normal)) / 3
    assert _brightness(_decode(bright)) > 240
    assert _exposure(dark) < _exposure(normal) < _exposure(bright)
    assert camera.details() == bright.info


def _exposure(still: Still) -> int:
    assert still.info.exposure_time_us is not None
    return still.info.exposure_time_us


def test_unknown_fault_is_refused(camera: SimulatedCamera) -> None:
    with pytest.raises(ValueError, match="fault"):
        camera.set_fault("smudge")  # type: ignore[arg-type]


def test_capture_needs_start_and_fails_after_close() -> None:
    cam = SimulatedCamera(320, 240)
    with pytest.raises(CameraError, match="not started"):
        cam.capture()
    with pytest.raises(CameraError, match="not started"):
        cam.preview_frame()
    cam.start()
    cam.start()  # idempotent
    cam.capture()
    cam.close()
    cam.close()  # idempotent
    with pytest.raises(CameraError, match="closed"):
        cam.capture()
    with pytest.raises(CameraError, match="closed"):
        cam.start()


def test_preview_frame_is_a_quarter_scale_grey_frame(camera: SimulatedCamera) -> None:
    frame = camera.preview_frame()
    assert (frame.width, frame.height) == (1600 // PREVIEW_SCALE, 1200 // PREVIEW_SCALE)
    assert len(frame.pixels) == frame.width * frame.height
    assert 60 < _brightness(_grey(frame)) < 200


def test_grey_frame_checks_its_size() -> None:
    with pytest.raises(ValueError, match="width \\* height"):
        GreyFrame(4, 4, bytes(15))


def _symbol(content: str, fmt: zxingcpp.BarcodeFormat, scale: int = 4) -> Image.Image:
    barcode = zxingcpp.create_barcode(content, fmt, gs1=content.startswith("("))
    return Image.fromarray(zxingcpp.write_barcode_to_image(barcode, scale=scale))


def _read(image: Image.Image, fmt: zxingcpp.BarcodeFormat) -> tuple[str, str] | None:
    found = zxingcpp.read_barcode(
        image, formats=zxingcpp.BarcodeFormats(fmt), text_mode=zxingcpp.TextMode.Plain
    )
    return None if found is None else (found.text, found.symbology_identifier)


WRISTBANDS = {
    # name: (content to encode, format, (decoded text, AIM symbology identifier))
    "gs1-datamatrix": (
        f"({GSRN[:4]}){GSRN[4:]}(8019)1234",
        zxingcpp.BarcodeFormat.DataMatrix,
        (f"{GSRN}\x1d80191234", "]d2"),
    ),
    "gs1-128": (f"({GSRN[:4]}){GSRN[4:]}", zxingcpp.BarcodeFormat.Code128, (GSRN, "]C1")),
    "code128-mrn": ("MRN-00123456", zxingcpp.BarcodeFormat.Code128, ("MRN-00123456", "]C0")),
    "qr": ("MRN-00123456", zxingcpp.BarcodeFormat.QRCode, ("MRN-00123456", "]Q1")),
}


@pytest.fixture(scope="module")
def barcode_camera() -> Iterator[SimulatedCamera]:
    cam = SimulatedCamera()
    cam.start()
    yield cam
    cam.close()


@pytest.mark.parametrize("scale", range(1, 7))
@pytest.mark.parametrize("name", WRISTBANDS)
def test_a_shown_wristband_decodes_from_the_preview(
    barcode_camera: SimulatedCamera, name: str, scale: int
) -> None:
    content, fmt, expected = WRISTBANDS[name]
    barcode_camera.show_barcode(_symbol(content, fmt, scale))
    try:
        assert _read(_grey(barcode_camera.preview_frame()), fmt) == expected
    finally:
        barcode_camera.show_barcode(None)


def test_a_shown_wristband_is_in_the_still_until_cleared(camera: SimulatedCamera) -> None:
    content, fmt, expected = WRISTBANDS["gs1-datamatrix"]
    camera.show_barcode(_symbol(content, fmt))
    assert _read(_decode(camera.capture()), fmt) == expected
    camera.show_barcode(None)
    assert _read(_grey(camera.preview_frame()), fmt) is None
    assert _read(_decode(camera.capture()), fmt) is None
