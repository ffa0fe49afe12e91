"""The display: a framebuffer written frame by frame, and a recording one for tests.

The framebuffer backend runs against a fake sysfs tree and a FIFO standing in for /dev/fb0
(read by a thread, frame by frame), because it refuses regular files: a misconfigured path must
never receive the patient's image. Pixel formats are checked on known colours.
"""

from __future__ import annotations

import hashlib
import io
import os
import threading
import time
from pathlib import Path

import pytest
from PIL import Image

from photosafe.daemon.workflow import ApprovalDisplay
from photosafe.drivers.backends import BackendUnavailable, display_backend
from photosafe.drivers.camera import CameraDetails, Still
from photosafe.drivers.display import Display, DisplayError
from photosafe.drivers.display_framebuffer import (
    STATUS_BACKGROUND,
    FramebufferDisplay,
    Geometry,
    read_geometry,
    to_pixels,
)
from photosafe.drivers.display_simulated import RecordingDisplay, Shown
from photosafe.drivers.secret import SecretBuffer

COLOURS = {
    "red": (255, 0, 0),
    "green": (0, 255, 0),
    "blue": (0, 0, 255),
    "white": (255, 255, 255),
    "black": (0, 0, 0),
    "odd": (0x12, 0x34, 0x56),
}


@pytest.fixture(autouse=True)
def _no_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PHOTOSAFE_DISPLAY", raising=False)


def still(colour: tuple[int, int, int], size: tuple[int, int] = (320, 240)) -> Still:
    stream = io.BytesIO()
    Image.new("RGB", size, colour).save(stream, format="JPEG", quality=95)
    return Still(SecretBuffer.from_bytesio(stream), size[0], size[1], CameraDetails("test"))


def fake_sysfs(root: Path, width: int, height: int, bits: int, stride: int | None) -> Path:
    folder = root / "sys" / "class" / "graphics" / "fb0"
    folder.mkdir(parents=True)
    (folder / "virtual_size").write_text(f"{width},{height}\n")
    (folder / "bits_per_pixel").write_text(f"{bits}\n")
    if stride is not None:
        (folder / "stride").write_text(f"{stride}\n")
    return root / "sys"


class FifoScreen:
    """A FIFO where /dev/fb0 would be, read frame by frame on a thread."""

    def __init__(self, root: Path, frame_bytes: int) -> None:
        (root / "dev").mkdir(exist_ok=True)
        self.path = root / "dev" / "fb0"
        os.mkfifo(self.path)
        self.frame_bytes = frame_bytes
        self.frames: list[bytes] = []
        self.eof = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()
        self._seen = 0

    def _read(self) -> None:
        with self.path.open("rb", buffering=0) as fifo:
            pending = b""
            while chunk := fifo.read(1 << 16):
                pending += chunk
                while len(pending) >= self.frame_bytes:
                    self.frames.append(pending[: self.frame_bytes])
                    pending = pending[self.frame_bytes :]
            assert pending == b""
        self.eof.set()

    def next_frame(self, timeout: float = 5) -> bytes:
        deadline = time.monotonic() + timeout
        while len(self.frames) <= self._seen:
            assert time.monotonic() < deadline, "no frame arrived"
            time.sleep(0.005)
        self._seen += 1
        return self.frames[self._seen - 1]


def rgb_at(frame: bytes, geometry: Geometry, x: int, y: int) -> tuple[int, int, int]:
    at = y * geometry.stride + x * geometry.bits_per_pixel // 8
    if geometry.bits_per_pixel == 32:
        blue, green, red, alpha = frame[at : at + 4]
        assert alpha == 255
        return red, green, blue
    word = int.from_bytes(frame[at : at + 2], "little")
    return (word >> 11) << 3, ((word >> 5) & 0x3F) << 2, (word & 0x1F) << 3


# -- pixel formats ------------------------------------------------------------------------------


def _row_of(colours: list[tuple[int, int, int]]) -> Image.Image:
    image = Image.new("RGB", (len(colours), 1))
    image.putdata(colours)
    return image


def test_rgb565_is_little_endian_5_6_5() -> None:
    image = _row_of(list(COLOURS.values()))
    frame = to_pixels(image, Geometry(len(COLOURS), 1, 16, 2 * len(COLOURS)))
    words = [int.from_bytes(frame[i : i + 2], "little") for i in range(0, len(frame), 2)]
    assert dict(zip(COLOURS, words, strict=True)) == {
        "red": 0xF800,
        "green": 0x07E0,
        "blue": 0x001F,
        "white": 0xFFFF,
        "black": 0x0000,
        "odd": (0x12 >> 3) << 11 | (0x34 >> 2) << 5 | 0x56 >> 3,
    }
    assert bytes(frame[:2]) == b"\x00\xf8"  # red: low byte first


def test_xrgb8888_is_blue_green_red_then_opaque() -> None:
    image = _row_of(list(COLOURS.values()))
    frame = to_pixels(image, Geometry(len(COLOURS), 1, 32, 4 * len(COLOURS)))
    pixels = [bytes(frame[i : i + 4]) for i in range(0, len(frame), 4)]
    assert dict(zip(COLOURS, pixels, strict=True)) == {
        "red": b"\x00\x00\xff\xff",
        "green": b"\x00\xff\x00\xff",
        "blue": b"\xff\x00\x00\xff",
        "white": b"\xff\xff\xff\xff",
        "black": b"\x00\x00\x00\xff",
        "odd": b"\x56\x34\x12\xff",
    }


def test_rows_are_padded_to_the_stride() -> None:
    image = Image.new("RGB", (3, 2), COLOURS["white"])
    frame = to_pixels(image, Geometry(3, 2, 16, 8))
    assert bytes(frame) == (b"\xff" * 6 + b"\0\0") * 2


def test_geometry_comes_from_sysfs(tmp_path: Path) -> None:
    sysfs = fake_sysfs(tmp_path, 800, 480, 16, 1600)
    assert read_geometry(sysfs / "class/graphics/fb0") == Geometry(800, 480, 16, 1600)
    (sysfs / "class/graphics/fb0/stride").unlink()  # older kernels: packed rows
    assert read_geometry(sysfs / "class/graphics/fb0").stride == 1600


def test_unsupported_or_missing_geometry_is_refused(tmp_path: Path) -> None:
    sysfs = fake_sysfs(tmp_path, 800, 480, 24, None)
    with pytest.raises(DisplayError, match="24 bits per pixel"):
        read_geometry(sysfs / "class/graphics/fb0")
    with pytest.raises(DisplayError, match="cannot read the framebuffer's geometry"):
        read_geometry(tmp_path / "nowhere")


# -- the framebuffer display --------------------------------------------------------------------


@pytest.mark.parametrize(("bits", "stride"), [(32, 64 * 4), (16, 64 * 2 + 32)])
def test_frames_show_the_image_fitted_and_a_status_line_then_blank(
    tmp_path: Path, bits: int, stride: int
) -> None:
    sysfs = fake_sysfs(tmp_path, 64, 48, bits, stride)
    geometry = Geometry(64, 48, bits, stride)
    screen = FifoScreen(tmp_path, geometry.frame_bytes)
    display = FramebufferDisplay(screen.path, sysfs_root=sysfs)
    assert display.geometry == geometry
    blank = screen.next_frame()  # blanked when made
    assert {rgb_at(blank, geometry, x, y) for x in range(64) for y in range(48)} == {(0, 0, 0)}

    display.show_status("show the patient: approve or discard")
    status = screen.next_frame()
    assert rgb_at(status, geometry, 0, 10) == (0, 0, 0)
    strip = {rgb_at(status, geometry, x, 46) for x in range(64)}
    assert _near(STATUS_BACKGROUND, strip) and len(strip) == 1
    text = {rgb_at(status, geometry, x, y) for x in range(64) for y in range(41, 48)}
    assert any(min(pixel) > 200 for pixel in text)  # white letters

    picture = still(COLOURS["red"], (320, 240))
    display.show_for_approval(picture)
    picture.jpeg.wipe()  # the caller may wipe at once: the display kept no reference
    shown = screen.next_frame()
    assert _near((255, 0, 0), {rgb_at(shown, geometry, 32, 20)})
    assert rgb_at(shown, geometry, 0, 20) == (0, 0, 0)  # 4:3 in 64x41: black side bars
    assert rgb_at(shown, geometry, 0, 46) == rgb_at(status, geometry, 0, 46)  # status kept

    display.clear()
    assert screen.next_frame() == blank
    display.close()
    assert screen.next_frame() == blank
    assert screen.eof.wait(5)
    display.close()
    display.show_status("after close: nothing")
    assert sorted(p.name for p in (tmp_path / "dev").iterdir()) == ["fb0"]  # nothing else


def test_a_tall_image_is_fitted_by_height(tmp_path: Path) -> None:
    sysfs = fake_sysfs(tmp_path, 64, 48, 32, None)
    geometry = Geometry(64, 48, 32, 256)
    screen = FifoScreen(tmp_path, geometry.frame_bytes)
    display = FramebufferDisplay(screen.path, sysfs_root=sysfs, status_fraction=0.3)
    screen.next_frame()
    display.show_for_approval(still(COLOURS["blue"], (90, 360)))
    frame = screen.next_frame()
    row = [rgb_at(frame, geometry, x, 18) for x in range(64)]
    lit = [x for x, pixel in enumerate(row) if pixel != (0, 0, 0)]
    assert lit == list(range(28, 36))  # the status line takes 16 rows: 1:4 in 64x32 is 8x32
    assert _near((0, 0, 255), {row[32]})
    display.close()


def test_an_unreadable_image_is_a_display_error_and_the_screen_stays_as_it_was(
    tmp_path: Path,
) -> None:
    sysfs = fake_sysfs(tmp_path, 16, 16, 16, None)
    screen = FifoScreen(tmp_path, 16 * 16 * 2)
    display = FramebufferDisplay(screen.path, sysfs_root=sysfs)
    screen.next_frame()
    broken = Still(SecretBuffer(bytearray(b"\xff\xd8 not a JPEG")), 16, 16, CameraDetails("t"))
    with pytest.raises(DisplayError, match="the image cannot be shown"):
        display.show_for_approval(broken)
    display.close()
    assert screen.eof.wait(5)
    assert len(screen.frames) == 2  # the blank at start and at close, nothing between


def test_a_regular_file_is_refused_and_left_untouched(tmp_path: Path) -> None:
    sysfs = fake_sysfs(tmp_path, 64, 48, 32, None)
    (tmp_path / "dev").mkdir()
    target = tmp_path / "dev" / "fb0"
    target.write_bytes(b"not a screen")
    with pytest.raises(DisplayError, match="refusing to write the patient's image to a file"):
        FramebufferDisplay(target, sysfs_root=sysfs)
    assert target.read_bytes() == b"not a screen"
    link = tmp_path / "dev" / "fb1"
    link.symlink_to(target)
    (sysfs / "class/graphics/fb1").symlink_to(sysfs / "class/graphics/fb0")
    with pytest.raises(DisplayError, match="not a framebuffer device"):
        FramebufferDisplay(link, sysfs_root=sysfs)
    target.unlink()
    with pytest.raises(DisplayError, match="does not exist"):
        FramebufferDisplay(target, sysfs_root=sysfs)
    assert not target.exists()  # never created


def _near(colour: tuple[int, int, int], seen: set[tuple[int, int, int]]) -> bool:
    return all(max(abs(a - b) for a, b in zip(colour, pixel, strict=True)) <= 12 for pixel in seen)


# -- the recording display and backend selection ------------------------------------------------


def test_recording_display_records_sizes_texts_and_hashes_only() -> None:
    display = RecordingDisplay()
    picture = still(COLOURS["green"], (160, 120))
    digest = hashlib.sha256(picture.jpeg.view()).hexdigest()
    display.show_status("show the patient: approve or discard")
    display.show_for_approval(picture)
    assert display.image == Shown("approval", 160, 120, sha256=digest)
    assert display.status == "show the patient: approve or discard"
    display.clear()
    assert display.image is None and display.status is None
    assert display.wait_for("clear", timeout=0)
    display.close()
    display.close()
    display.show_status("after close")
    assert [s.what for s in display.shown] == ["status", "approval", "clear", "close"]
    assert display.closed
    assert all(len(repr(s)) < 200 for s in display.shown)  # sizes and hashes, no pixels


def test_both_displays_satisfy_the_workflows_approval_display(tmp_path: Path) -> None:
    recording: ApprovalDisplay = RecordingDisplay()
    as_display: Display = RecordingDisplay()
    assert recording is not as_display
    sysfs = fake_sysfs(tmp_path, 16, 16, 16, None)
    screen = FifoScreen(tmp_path, 16 * 16 * 2)
    framebuffer: ApprovalDisplay = FramebufferDisplay(screen.path, sysfs_root=sysfs)
    framebuffer.clear()
    assert isinstance(framebuffer, FramebufferDisplay)
    framebuffer.close()


def test_display_backends_by_name_and_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert isinstance(display_backend("simulated"), RecordingDisplay)
    regular = tmp_path / "fb0"
    regular.write_bytes(b"")
    with pytest.raises(DisplayError, match="not a framebuffer device"):
        display_backend("framebuffer", device=regular, sysfs_root=tmp_path)
    with pytest.raises(BackendUnavailable, match="known displays are framebuffer, simulated"):
        display_backend("hdmi")
    monkeypatch.setenv("PHOTOSAFE_DISPLAY", "simulated")
    assert isinstance(display_backend("framebuffer"), RecordingDisplay)


def test_displayed_indicator_puts_every_signal_on_the_status_line() -> None:
    from photosafe.drivers.indicator import MEANINGS, Signal
    from photosafe.drivers.indicator_display import DisplayedIndicator
    from photosafe.drivers.indicator_simulated import RecordingIndicator

    lights, screen = RecordingIndicator(), RecordingDisplay()
    indicator = DisplayedIndicator(lights, screen)
    indicator.show(Signal.NEED_PATIENT, "scan the patient's wristband")
    assert screen.status == "scan the patient's wristband"
    indicator.show(Signal.READY)
    assert screen.status == MEANINGS[Signal.READY]
    assert lights.signals == [Signal.NEED_PATIENT, Signal.READY]
    indicator.close()
    assert lights.closed and not screen.closed  # the station closes its display itself
