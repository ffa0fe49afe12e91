"""A JPEG's frame header, read but never decoded: what the gateway needs to file the JPEG as it is.

    read_jpeg(data) -> JpegFrame   (JpegError if it is not a baseline 8-bit JPEG)

The marker segments are walked up to the frame header (SOF); an Adobe APP14 segment on the way
says whether the colour transform is off. Only baseline 8-bit (SOF0) greyscale or three-component
JPEGs are accepted: the gateway files JPEGs as they are and never re-encodes them.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["JpegError", "JpegFrame", "read_jpeg"]

_BASELINE_SOF = 0xC0
_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}  # DHT, JPG, DAC are not SOFs
_SOS, _APP14 = 0xDA, 0xEE


class JpegError(ValueError):
    """The bytes are not a JPEG the gateway can file as it is; the message says why."""


@dataclass(frozen=True)
class JpegFrame:
    """What a JPEG's frame header (SOF) says, and whether an Adobe marker disables YCbCr."""

    width: int
    height: int
    sampling: tuple[tuple[int, int], ...]  # (horizontal, vertical) per component
    adobe_transform: int | None


def read_jpeg(data: bytes) -> JpegFrame:
    """Walk the JPEG's marker segments up to its frame header; JpegError if it is not a
    baseline JPEG that the JPEG Baseline transfer syntax can carry as it is."""
    if data[:2] != b"\xff\xd8":
        raise JpegError("the image is not a JPEG (no start-of-image marker)")
    pos, adobe = 2, None
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            raise JpegError("the JPEG's marker segments are broken")
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        length = int.from_bytes(data[pos + 2 : pos + 4], "big")
        segment = data[pos + 4 : pos + 2 + length]
        if length < 2 or len(segment) != length - 2:
            raise JpegError("the JPEG's marker segments are broken")
        if marker == _APP14 and segment[:5] == b"Adobe" and len(segment) >= 12:
            adobe = segment[11]
        elif marker in _SOF_MARKERS:
            return _frame(marker, segment, adobe)
        elif marker == _SOS:
            break
        pos += 2 + length
    raise JpegError("the JPEG has no frame header")


def _frame(marker: int, segment: bytes, adobe: int | None) -> JpegFrame:
    if marker != _BASELINE_SOF:
        raise JpegError(
            f"the JPEG is not baseline (SOF{marker - 0xC0}); the gateway files JPEGs as they "
            "are and does not re-encode them"
        )
    precision, components = segment[0], segment[5] if len(segment) > 5 else 0
    if precision != 8 or components not in (1, 3) or len(segment) < 6 + 3 * components:
        raise JpegError("the JPEG is neither 8-bit greyscale nor 8-bit three-component")
    sampling = tuple(
        (segment[7 + 3 * i] >> 4, segment[7 + 3 * i] & 0x0F) for i in range(components)
    )
    return JpegFrame(
        width=int.from_bytes(segment[3:5], "big"),
        height=int.from_bytes(segment[1:3], "big"),
        sampling=sampling,
        adobe_transform=adobe,
    )
