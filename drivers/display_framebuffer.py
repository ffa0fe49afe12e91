"""The Linux framebuffer as the station's Display: /dev/fb0 on a Raspberry Pi (DSI or HDMI).

The screen's geometry comes from sysfs (/sys/class/graphics/fb0/virtual_size, bits_per_pixel
and stride). Frames are drawn with Pillow: the image fitted to the screen above a large status
line, converted to the framebuffer's pixel format (16 bits: RGB565; 32 bits: XRGB8888, stored
as B, G, R, X bytes) and written to the device from its first byte.

The shown image is patient imagery, and the device path comes from configuration: the path is
opened for writing only, never created, and refused unless it is a character device (a FIFO is
accepted too, for tests), so a misconfigured path can never put an image into a file. Frame
buffers in memory are zeroed after each write; the fitted image is kept only while shown (to
redraw the status line) and blanked when cleared.

Keep the kernel's text console off this framebuffer, or its cursor draws over the image. The
service user needs the `video` group.
"""

from __future__ import annotations

import os
import stat
import threading
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageChops, ImageDraw, ImageFont, ImageOps

from photosafe.drivers.camera import Still
from photosafe.drivers.display import DisplayError

__all__ = ["FramebufferDisplay", "Geometry", "read_geometry", "to_pixels"]

BACKGROUND = (0, 0, 0)
STATUS_BACKGROUND = (32, 32, 32)
STATUS_TEXT = (255, 255, 255)
_FORMATS = {16: "RGB565", 32: "XRGB8888"}


@dataclass(frozen=True)
class Geometry:
    width: int
    height: int
    bits_per_pixel: int
    stride: int  # bytes from one row to the next

    @property
    def frame_bytes(self) -> int:
        return self.stride * self.height

    @property
    def pixel_format(self) -> str:
        return _FORMATS[self.bits_per_pixel]


def read_geometry(sysfs_dir: Path) -> Geometry:
    """The framebuffer's geometry from its sysfs folder (e.g. /sys/class/graphics/fb0)."""
    try:
        width, height = (int(v) for v in (sysfs_dir / "virtual_size").read_text().split(","))
        bits = int((sysfs_dir / "bits_per_pixel").read_text())
        stride_file = sysfs_dir / "stride"
        stride = int(stride_file.read_text()) if stride_file.exists() else width * bits // 8
    except (OSError, ValueError) as exc:
        raise DisplayError(
            f"cannot read the framebuffer's geometry from {sysfs_dir}: {exc}"
        ) from None
    if bits not in _FORMATS:
        raise DisplayError(
            f"the framebuffer has {bits} bits per pixel; supported are 16 (RGB565) "
            "and 32 (XRGB8888)"
        )
    if width < 1 or height < 1 or stride < width * bits // 8:
        raise DisplayError(
            f"the framebuffer's geometry makes no sense: {width}x{height}, stride {stride}"
        )
    return Geometry(width, height, bits, stride)


_R_HIGH = [v & 0xF8 for v in range(256)]
_G_HIGH = [v >> 5 for v in range(256)]
_G_LOW = [(v << 3) & 0xE0 for v in range(256)]
_B_LOW = [v >> 3 for v in range(256)]


def to_pixels(image: Image.Image, geometry: Geometry) -> bytearray:
    """`image` (RGB, the screen's size) in the framebuffer's pixel format, rows `stride` apart."""
    if geometry.bits_per_pixel == 16:
        red, green, blue = image.split()
        high = ImageChops.add(red.point(_R_HIGH), green.point(_G_HIGH))  # RRRRRGGG
        low = ImageChops.add(green.point(_G_LOW), blue.point(_B_LOW))  # GGGBBBBB
        packed = Image.merge("LA", (low, high)).tobytes()  # little-endian 16-bit words
    else:
        packed = image.convert("RGBA").tobytes("raw", "BGRA")  # XRGB8888, X (alpha) = 255
    row = geometry.width * geometry.bits_per_pixel // 8
    if row == geometry.stride:
        return bytearray(packed)
    frame = bytearray(geometry.frame_bytes)
    for y in range(geometry.height):
        frame[y * geometry.stride : y * geometry.stride + row] = packed[y * row : (y + 1) * row]
    return frame


class FramebufferDisplay:
    """A Display (see photosafe.drivers.display) on a Linux framebuffer device.

    `sysfs_root` is where sysfs is mounted (tests give a fake tree); the geometry is read from
    `<sysfs_root>/class/graphics/<device name>`. `status_fraction` of the screen's height is
    the status line. The screen is blanked when the display is made.
    """

    def __init__(
        self,
        device: str | Path = "/dev/fb0",
        *,
        sysfs_root: str | Path = "/sys",
        status_fraction: float = 0.15,
    ) -> None:
        self._device = Path(device)
        self._fd: int | None = _open_device(self._device)  # refuse a wrong path before all else
        try:
            self.geometry = read_geometry(Path(sysfs_root) / "class/graphics" / self._device.name)
        except BaseException:
            os.close(self._fd)
            raise
        g = self.geometry
        self._status_height = max(16, min(g.height // 2, round(g.height * status_fraction)))
        self._image_box = (g.width, g.height - self._status_height)
        self._lock = threading.Lock()
        self._image: Image.Image | None = None  # the fitted still, while shown
        self._status = ""
        self._seekable = stat.S_ISCHR(os.fstat(self._fd).st_mode)
        self._draw()

    def show_for_approval(self, still: Still) -> None:
        fitted = _fit(still, self._image_box)
        with self._lock:
            if self._fd is None:
                _blank(fitted)
                return
            if self._image is not None:
                _blank(self._image)
            self._image = fitted
            self._draw()

    def show_status(self, text: str) -> None:
        with self._lock:
            if self._fd is not None:
                self._status = " ".join(text.split())
                self._draw()

    def clear(self) -> None:
        with self._lock:
            if self._fd is not None:
                self._forget()
                self._draw()

    def close(self) -> None:
        with self._lock:
            if self._fd is None:
                return
            self._forget()
            try:
                self._draw()
            finally:
                os.close(self._fd)
                self._fd = None

    def _forget(self) -> None:
        if self._image is not None:
            _blank(self._image)
            self._image = None
        self._status = ""

    def _draw(self) -> None:
        g = self.geometry
        canvas = Image.new("RGB", (g.width, g.height), BACKGROUND)
        try:
            if self._image is not None:
                box_w, box_h = self._image_box
                x = (box_w - self._image.width) // 2
                y = (box_h - self._image.height) // 2
                canvas.paste(self._image, (x, y))
            if self._status:
                self._draw_status(canvas)
            frame = to_pixels(canvas, g)
        finally:
            _blank(canvas)
        try:
            self._write(frame)
        finally:
            frame[:] = bytes(len(frame))

    def _draw_status(self, canvas: Image.Image) -> None:
        top = canvas.height - self._status_height
        draw = ImageDraw.Draw(canvas)
        draw.rectangle((0, top, canvas.width, canvas.height), fill=STATUS_BACKGROUND)
        margin = max(2, self._status_height // 8)
        size = max(8, self._status_height * 3 // 5)
        text = self._status
        while True:
            font = ImageFont.load_default(size=size)
            left, upper, right, lower = draw.textbbox((0, 0), text, font=font)
            if right - left <= canvas.width - 2 * margin:
                break
            if size > 12:
                size = size * 9 // 10
            elif len(text) > 4:
                text = text[: max(1, len(text) * 9 // 10 - 3)] + "..."
            else:
                break
        x = (canvas.width - (right - left)) // 2 - left
        y = top + (self._status_height - (lower - upper)) // 2 - upper
        draw.text((x, y), text, font=font, fill=STATUS_TEXT)

    def _write(self, frame: bytearray) -> None:
        assert self._fd is not None
        if self._seekable:
            os.lseek(self._fd, 0, os.SEEK_SET)
        view = memoryview(frame)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]


def _open_device(path: Path) -> int:
    """Opens `path` for writing only, refusing anything that is not a device (or a FIFO)."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise DisplayError(
            f"{path} does not exist: no framebuffer (is the display connected?)"
        ) from None
    if not (stat.S_ISCHR(mode) or stat.S_ISFIFO(mode)):
        raise DisplayError(
            f"{path} is not a framebuffer device: refusing to write the patient's image to a file"
        )
    # No O_CREAT: nothing is ever created; no O_TRUNC: nothing is ever truncated.
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC | os.O_NOCTTY)
    mode = os.fstat(fd).st_mode  # what was opened, in case the path changed meanwhile
    if not (stat.S_ISCHR(mode) or stat.S_ISFIFO(mode)):
        os.close(fd)
        raise DisplayError(f"{path} changed into something that is not a device: refused")
    return fd


def _fit(still: Still, box: tuple[int, int]) -> Image.Image:
    """The still decoded at (about) screen size and fitted inside `box`, keeping its aspect."""
    try:
        with Image.open(still.jpeg.reader(), formats=["JPEG"]) as jpeg:
            jpeg.draft("RGB", box)  # libjpeg decodes at 1/2, 1/4 or 1/8 scale: fast, less copy
            decoded = jpeg.convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise DisplayError(f"the image cannot be shown: {type(exc).__name__}") from None
    fitted = ImageOps.contain(decoded, box)
    if fitted is not decoded:
        _blank(decoded)
    return fitted


def _blank(image: Image.Image) -> None:
    """Overwrites an image's pixels in place, so patient imagery does not linger in memory."""
    image.paste(0, (0, 0, image.width, image.height))
