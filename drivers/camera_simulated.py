"""A camera that renders a clinical test scene with Pillow, for tests, the demo and development.

It behaves like the Pi camera wherever the station can tell: stills are JPEGs encoded straight
into memory, preview frames are greyscale at a quarter of the resolution, nothing works until
`start()` or after `close()`, and every frame differs a little (sensor grain) while
a given seed always gives the same sequence of frames.

The scene is what a clinical photographer frames: a patch of skin (mottled tones with a fine
texture), a darker lesion-like blotch, a millimetre ruler along the bottom edge and reference
colour squares in a corner. `show_barcode()` holds a wristband up to the lens until cleared, and
`set_fault()` makes the next frames blurred, dark or blown out, for the quality gate;
`blur_every=n` makes every nth still out of focus (for a station run in another process).

The canary: when given, its bytes are written verbatim into every still's JPEG as a COM
(comment) segment, so they occur in the plaintext JPEG and in every copy of it, and nowhere else
the camera produces. The never-on-disk tests search files, memory and strace output for them.
The camera object itself holds the canary, so a search of this process's memory also finds that
copy; search for `com_segment(canary)` to count copies of the image only.
"""

from __future__ import annotations

import io
import math
import random
import struct
import threading
from typing import Literal, NamedTuple

from PIL import Image, ImageChops, ImageDraw, ImageFilter, ImageFont

from photosafe.drivers.camera import CameraDetails, CameraError, GreyFrame, Still
from photosafe.drivers.secret import SecretBuffer

Fault = Literal["blur", "dark", "overexposed"]

PREVIEW_SCALE = 4
FIELD_OF_VIEW_MM = 100  # the frame's width, which sets the ruler's pixels per millimetre
MAX_CANARY = 65533  # a JPEG segment's length field counts itself: 65535 - 2

_MODEL = "simulated (Pillow test scene)"
# Exposure time (µs), analogue gain and lens position (dioptres) as the metadata would report
# them, and the brightness gain each fault applies to the scene.
_EXPOSURES: dict[Fault | None, tuple[int, float, float, float]] = {
    None: (8_000, 1.5, 4.0, 1.0),
    "blur": (8_000, 1.5, 0.5, 1.0),
    "dark": (1_000, 1.0, 4.0, 0.2),
    "overexposed": (66_000, 8.0, 4.0, 2.8),
}
_SKIN_TONES = ((224, 172, 140), (198, 140, 110), (236, 192, 160), (170, 118, 90))
_LESION = (104, 62, 46)
# ColorChecker squares (sRGB): white, neutrals, black, red, green, blue, yellow.
_PATCH = (
    (243, 243, 242),
    (160, 160, 160),
    (85, 85, 85),
    (52, 52, 52),
    (175, 54, 60),
    (70, 148, 73),
    (56, 61, 150),
    (231, 199, 31),
)
# Noise cells are counted per frame, not per pixel, so stills and previews show the same skin.
_COARSE_CELLS = (24, 18)
_MEDIUM_CELLS = (96, 72)


def com_segment(canary: bytes) -> bytes:
    """The JPEG COM segment that carries `canary` in each still: marker, length, bytes."""
    return b"\xff\xfe" + struct.pack(">H", len(canary) + 2) + canary


class SimulatedCamera:
    """A Camera (see photosafe.drivers.camera) that photographs a rendered test scene."""

    def __init__(
        self,
        width: int = 1600,
        height: int = 1200,
        canary: bytes | None = None,
        quality: int = 90,
        seed: int = 0,
        *,
        blur_every: int | None = None,
    ) -> None:
        if width < 64 or height < 64:
            raise ValueError("the simulated camera needs at least 64 x 64 pixels")
        if not 1 <= quality <= 95:
            raise ValueError("JPEG quality must be 1 to 95")
        if canary is not None and not 0 < len(canary) <= MAX_CANARY:
            raise ValueError(f"a canary must be 1 to {MAX_CANARY} bytes")
        self._size = (width, height)
        self._preview_size = (width // PREVIEW_SCALE, height // PREVIEW_SCALE)
        self._canary = canary
        self._quality = quality
        self._seed = seed
        self._lock = threading.Lock()
        self._started = False
        self._closed = False
        self._fault: Fault | None = None
        self._blur_every = blur_every
        self._barcode: Image.Image | None = None
        self._stills = 0
        self._previews = 0
        self._details = _details(None)
        self._scenes: dict[tuple[int, int], _Scene] = {}

    def start(self) -> None:
        """Renders the scene at still and preview size: slow, like a real camera's start."""
        with self._lock:
            if self._closed:
                raise CameraError("the camera was closed")
            for size in (self._size, self._preview_size):
                if size not in self._scenes:
                    self._scenes[size] = _scene(size, self._seed)
            self._started = True

    def capture(self) -> Still:
        with self._lock:
            self._check_running()
            self._stills += 1
            fault = self._fault
            if self._blur_every and self._stills % self._blur_every == 0:
                fault = "blur"
            frame = self._render(self._size, f"{self._seed}:still:{self._stills}", fault)
            self._details = _details(fault)
            # Pillow writes 64 KiB chunks into the BytesIO; from_bytesio copies it once and zeroes
            # it: one live copy. Freed chunks may linger in the heap (see drivers.secret).
            out = io.BytesIO()
            frame.save(out, format="JPEG", quality=self._quality, comment=self._canary)
            jpeg = SecretBuffer.from_bytesio(out)
            return Still(jpeg, frame.width, frame.height, self._details)

    def preview_frame(self) -> GreyFrame:
        with self._lock:
            self._check_running()
            self._previews += 1
            frame = self._render(
                self._preview_size, f"{self._seed}:preview:{self._previews}", self._fault
            )
            grey = frame.convert("L")
            return GreyFrame(grey.width, grey.height, grey.tobytes())

    def details(self) -> CameraDetails:
        with self._lock:
            return self._details

    def close(self) -> None:
        with self._lock:
            self._started = False
            self._closed = True
            self._scenes.clear()

    def set_fault(self, fault: Fault | None) -> None:
        """From the next frame on: out of focus, underexposed, overexposed, or (None) fine."""
        if fault not in _EXPOSURES:
            raise ValueError(f"unknown camera fault {fault!r}")
        with self._lock:
            self._fault = fault

    def show_barcode(self, image: Image.Image | None) -> None:
        """Holds a rendered barcode (a wristband) in view of every frame until called with None.

        The symbol is scaled to fill most of the frame's width, as a wristband held to the lens.
        At the default size every zxing-cpp rendering (scale 1 to 6) of a GS1 DataMatrix, QR code
        or Code 128 wristband decodes from the preview; at 800 x 600 and below the preview is too
        coarse for Code 128, as a real low-resolution stream would be.
        """
        with self._lock:
            # Printed ink and paper under a lens are not pure black and white (and the grain
            # needs headroom): 16..240.
            self._barcode = None if image is None else image.convert("L").point(_levels(16, 240))

    def _check_running(self) -> None:
        if self._closed:
            raise CameraError("the camera was closed")
        if not self._started:
            raise CameraError("the camera is not started")

    def _render(self, size: tuple[int, int], frame_seed: str, fault: Fault | None) -> Image.Image:
        # Optics first (wristband in view, focus), then the sensor (grain), then exposure.
        scene = self._scenes[size]
        rng = _random(frame_seed)
        blur = fault == "blur"
        frame = scene.blurred if blur else scene.sharp
        if self._barcode is not None:
            frame = scene.sharp.copy()
            _hold_up(frame, self._barcode)
            frame = _defocus(frame) if blur else frame
        grain = scene.grain
        # Grain at a random offset is what makes each frame differ. Scene values stay within
        # 4..251 and grain within ±3, so the fast modulo add never wraps.
        left, top = rng.randrange(grain.width - size[0]), rng.randrange(grain.height - size[1])
        frame = ImageChops.add_modulo(frame, grain.crop((left, top, left + size[0], top + size[1])))
        gain = _EXPOSURES[fault][3]
        if gain != 1.0:
            frame = frame.point([min(255, round(v * gain)) for v in range(256)] * 3)
        return frame


def _random(seed: int | str) -> random.Random:
    return random.Random(seed)  # noqa: S311 - a reproducible test scene, not a secret


def _details(fault: Fault | None) -> CameraDetails:
    exposure, gain, lens, _ = _EXPOSURES[fault]
    return CameraDetails(_MODEL, exposure, gain, lens)


def _levels(low: int, high: int) -> list[int]:
    """A lookup table that squeezes 0..255 into low..high."""
    return [low + v * (high - low) // 255 for v in range(256)]


class _Scene(NamedTuple):
    sharp: Image.Image  # values 4..251
    blurred: Image.Image  # the same out of focus
    grain: Image.Image  # a little larger than the scene, cropped at random for each frame


def _defocus(image: Image.Image) -> Image.Image:
    """Out of focus: shrunk, blurred, enlarged; several times faster than a full-size blur."""
    small = (max(1, image.width // 8), max(1, image.height // 8))
    blurred = image.resize(small, Image.Resampling.BICUBIC).filter(ImageFilter.GaussianBlur(1.2))
    return blurred.resize(image.size, Image.Resampling.BICUBIC)


def _scene(size: tuple[int, int], seed: int) -> _Scene:
    """The static scene at `size` (values 4..251), and the sensor grain.

    The grain holds signed values ±3 in modulo-256 form (255 is -1) for ImageChops.add_modulo,
    which is several times faster than the clipping ImageChops.add.
    """
    width, height = size
    rng = _random(seed)  # the same draws at every size: stills and previews match
    pixels = _random(f"{seed}:{size}")  # per-pixel noise: its draws depend on the size
    mottle = ImageChops.add(
        _smooth_noise(rng, size, _COARSE_CELLS, 9),
        _smooth_noise(rng, size, _MEDIUM_CELLS, 4),
        1.0,
        -128,
    )
    texture = Image.frombytes("L", size, pixels.randbytes(width * height)).point(_levels(118, 138))
    texture = texture.filter(ImageFilter.GaussianBlur(max(0.6, width / 2500)))
    mottle = ImageChops.add(mottle, texture, 1.0, -128)
    redness = ImageChops.add(mottle, _smooth_noise(rng, size, _COARSE_CELLS, 10), 1.0, -128)
    skin = Image.new("RGB", size, rng.choice(_SKIN_TONES))
    scene = ImageChops.add(skin, Image.merge("RGB", (redness, mottle, mottle)), 1.0, -128)
    _draw_lesion(scene, rng)
    _draw_ruler(scene)
    _draw_colour_patch(scene)
    grain_size = (width + 61, height + 47)
    grain = Image.frombytes("RGB", grain_size, pixels.randbytes(grain_size[0] * grain_size[1] * 3))
    signed = [(v * 7 // 256 - 3) % 256 for v in range(256)]
    sharp = scene.point(_levels(4, 251) * 3)
    return _Scene(sharp, _defocus(sharp), grain.point(signed * 3))


def _smooth_noise(
    rng: random.Random, size: tuple[int, int], cells: tuple[int, int], spread: float
) -> Image.Image:
    """Gaussian noise around 128 on a coarse grid, upscaled smoothly: blotches, not speckle."""
    values = bytes(
        min(255, max(0, round(rng.gauss(128, spread)))) for _ in range(cells[0] * cells[1])
    )
    return Image.frombytes("L", cells, values).resize(size, Image.Resampling.BICUBIC)


def _draw_lesion(scene: Image.Image, rng: random.Random) -> None:
    """A darker, irregular, soft-edged blotch right of centre, darkest inside: ellipses, blurred."""
    width, height = scene.size
    rx, ry = width * 0.07, width * 0.05
    box = (round(width * 0.62 - 2 * rx), round(height * 0.55 - 2 * ry))
    mask = Image.new("L", (round(4 * rx), round(4 * ry)), 0)
    draw = ImageDraw.Draw(mask)
    for shade, reach in ((150, 1.0), (150, 1.0), (150, 1.0), (200, 0.6), (235, 0.35)):
        cx, cy = 2 * rx + rng.uniform(-0.3, 0.3) * rx, 2 * ry + rng.uniform(-0.3, 0.3) * ry
        sx, sy = rng.uniform(0.6, 1.0) * rx * reach, rng.uniform(0.6, 1.0) * ry * reach
        draw.ellipse((cx - sx, cy - sy, cx + sx, cy + sy), fill=shade)
    mask = mask.filter(ImageFilter.GaussianBlur(max(1.0, width / 300)))
    scene.paste(_LESION, box, mask)


def _draw_ruler(scene: Image.Image) -> None:
    """A light strip along the bottom edge with mm, 5 mm and cm ticks and cm numbers."""
    width, height = scene.size
    px_per_mm = width / FIELD_OF_VIEW_MM
    top = round(height * 0.9)
    strip = height - top
    tick = max(1, round(px_per_mm / 6))
    font = ImageFont.load_default(size=max(6, strip // 3))
    draw = ImageDraw.Draw(scene)
    draw.rectangle((0, top, width, height), fill=(238, 234, 222))
    for mm in range(FIELD_OF_VIEW_MM - 4):
        x = round((mm + 2) * px_per_mm)
        length = strip * (0.5 if mm % 10 == 0 else 0.35 if mm % 5 == 0 else 0.2)
        draw.rectangle((x, top, x + tick - 1, top + length), fill=(25, 25, 25))
        if mm % 10 == 0:
            draw.text(
                (x + 2 * tick, top + strip * 0.5), str(mm // 10), fill=(25, 25, 25), font=font
            )


def _draw_colour_patch(scene: Image.Image) -> None:
    """Two rows of reference colour squares on a black card in the top-right corner."""
    width, _ = scene.size
    side = max(2, round(width * 0.04))
    gap = max(1, side // 6)
    columns = math.ceil(len(_PATCH) / 2)
    left = width - gap - columns * (side + gap) - gap
    draw = ImageDraw.Draw(scene)
    draw.rectangle((left, gap, width - gap, gap + 2 * (side + gap) + gap), fill=(20, 20, 20))
    for index, colour in enumerate(_PATCH):
        x = left + gap + (index % columns) * (side + gap)
        y = 2 * gap + (index // columns) * (side + gap)
        draw.rectangle((x, y, x + side - 1, y + side - 1), fill=colour)


def _hold_up(frame: Image.Image, barcode: Image.Image) -> None:
    """Lays a wristband across the upper frame, its barcode as large as fits: held to the lens."""
    width, height = frame.size
    scale = min(0.9 * width / barcode.width, 0.35 * height / barcode.height)
    if scale >= 1:  # whole pixels per module keep the symbol crisp, as a sharp lens would
        scale = math.floor(scale)
    size = (max(1, round(barcode.width * scale)), max(1, round(barcode.height * scale)))
    resample = Image.Resampling.NEAREST if scale >= 1 else Image.Resampling.BOX
    top = round(height * 0.1)
    band = (0, top - size[1] // 8, width, top + size[1] + size[1] // 8)
    ImageDraw.Draw(frame).rectangle(band, fill=(232, 234, 236))  # the wristband across the frame
    frame.paste(barcode.resize(size, resample), ((width - size[0]) // 2, top))
