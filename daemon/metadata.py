"""Every image leaves the station without EXIF, GPS, maker notes, XMP or IPTC (issue 5, rule 6).

picamera2 writes EXIF into every JPEG it encodes (the camera-id path as the model, the time,
exposure and ISO), and other cameras add GPS positions, serial numbers and maker notes. None of
it belongs in a clinical record, where the manifest says what matters. `strip_metadata` removes
it by walking the JPEG's marker segments, without decoding or re-encoding: the compressed image
data, and so every pixel, is unchanged.

What stays, segment by segment:
- SOI, the frame and scan headers, quantisation and Huffman tables, restart intervals and every
  other segment that says how to decode the image, and the compressed data itself;
- APP0 when it is a JFIF header ("JFIF\\0"; a JFXX thumbnail extension goes);
- APP2 when it is an ICC colour profile ("ICC_PROFILE\\0"; an MPF multi-picture index goes);
- APP14 when it is Adobe's ("Adobe"): its colour-transform flag changes how the pixels decode;
- COM comments (the simulated camera's never-on-disk canary lives in one);
- EOI, which ends the image.

What goes: APP1 (EXIF, with its GPS IFD and maker notes, and XMP), APP13 (Photoshop IRB and
IPTC), every other APPn, and anything after EOI (where MPF and some phones append more images).

The walk follows the whole file, not only the headers before the first scan: a progressive JPEG
has tables, and may have APPn segments, between its scans. Inside compressed data a 0xFF byte is
always followed by 0x00 (stuffing) or a restart marker, so the next other marker is found with
one regular-expression search over a view, never a copy.

Anything that is not a well-formed JPEG (no SOI, a segment running past the end, a scan before
a frame header, no EOI) raises ImageRejected, whose message says what was wrong and never
carries image bytes.
"""

from __future__ import annotations

import re
from dataclasses import replace

from photosafe.drivers.camera import Still
from photosafe.drivers.secret import SecretBuffer

__all__ = ["ImageRejected", "strip_metadata"]

SOI, EOI, SOS, COM = 0xD8, 0xD9, 0xDA, 0xFE
APP0, APP2, APP14 = 0xE0, 0xE2, 0xEE
# Start-of-frame markers: C0-CF except DHT (C4), JPG (C8) and DAC (CC).
_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
# Markers that stand alone, with no length: TEM and RST0-7 (and SOI and EOI, handled apart).
_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})
# The APPn segments kept, by the identifier their payload starts with.
_KEPT_APPS = {APP0: b"JFIF\x00", APP2: b"ICC_PROFILE\x00", APP14: b"Adobe"}
# The next marker after compressed data: 0xFF then anything but stuffing, RSTn or fill.
_NEXT_MARKER = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")


class ImageRejected(Exception):
    """The image is not a well-formed JPEG, so its metadata cannot be removed safely."""


def strip_metadata(still: Still) -> Still:
    """The same image without its metadata. Takes ownership of `still`.

    When there is something to remove, the result is a new Still whose new SecretBuffer holds
    the stripped JPEG, and `still`'s buffer is wiped. When there is nothing to remove, `still`
    itself comes back untouched: no second plaintext copy is made for nothing. Anything that is
    not a well-formed JPEG raises ImageRejected, and `still`'s buffer is wiped.
    """
    view = still.jpeg.view()
    try:
        ranges = _kept_ranges(view)
    except ImageRejected:
        still.jpeg.wipe()
        raise
    if ranges == [(0, len(view))]:
        return still
    try:
        stripped = bytearray(sum(end - start for start, end in ranges))
        # Write through a memoryview: `bytearray[a:b] = view` would first copy the view into a
        # temporary that is freed unwiped (the same trap seal() avoids).
        target = memoryview(stripped)
        at = 0
        for start, end in ranges:
            target[at : at + end - start] = view[start:end]
            at += end - start
        target.release()
        return replace(still, jpeg=SecretBuffer(stripped))
    finally:
        still.jpeg.wipe()


def _kept_ranges(data: memoryview) -> list[tuple[int, int]]:
    """The byte ranges of `data` to keep, in order, adjacent ones merged."""
    size = len(data)
    if size < 4 or data[0] != 0xFF or data[1] != SOI:
        raise ImageRejected("not a JPEG: it does not start with SOI")
    ranges: list[tuple[int, int]] = [(0, 2)]

    def keep(start: int, end: int) -> None:
        if ranges[-1][1] == start:
            ranges[-1] = (ranges[-1][0], end)
        else:
            ranges.append((start, end))

    framed = False
    pos = 2
    while True:  # the headers, up to the first scan
        marker, pos = _marker_at(data, pos)
        code = data[marker + 1]
        if code == SOS and not framed:
            raise ImageRejected("a scan comes before the frame header (SOF)")
        if code in _STANDALONE or code in (0x00, SOI, EOI):
            raise ImageRejected(f"marker 0x{code:02X} where a header segment was expected")
        framed = framed or code in _SOF
        end = _segment_end(data, marker)
        if _kept(data, code, marker, end):
            keep(marker, end)
        pos = end
        if code == SOS:
            break
    while True:  # compressed data, and whatever comes between scans
        found = _NEXT_MARKER.search(data, pos)
        if found is None:
            raise ImageRejected("the image data has no end (EOI)")
        marker = found.start()
        keep(pos, marker)
        code = data[marker + 1]
        if code == EOI:
            keep(marker, marker + 2)
            return ranges  # anything after EOI is not part of the image
        if code == SOI:
            raise ImageRejected("SOI inside the image data")
        if code in _STANDALONE:  # TEM: a marker with no segment
            keep(marker, marker + 2)
            pos = marker + 2
            continue
        end = _segment_end(data, marker)
        if _kept(data, code, marker, end):
            keep(marker, end)
        pos = end


def _marker_at(data: memoryview, pos: int) -> tuple[int, int]:
    """The marker at `pos` after any 0xFF fill bytes: (index of its 0xFF, index after its code)."""
    if pos >= len(data) or data[pos] != 0xFF:
        raise ImageRejected(f"no marker at byte {pos}: the header segments are broken")
    while pos + 1 < len(data) and data[pos + 1] == 0xFF:
        pos += 1  # fill bytes
    if pos + 1 >= len(data):
        raise ImageRejected("the file ends inside a marker")
    return pos, pos + 2


def _segment_end(data: memoryview, marker: int) -> int:
    """Where the segment whose marker starts at `marker` ends (its length counts itself)."""
    if marker + 4 > len(data):
        raise ImageRejected(f"the file ends inside the segment at byte {marker}")
    length = data[marker + 2] << 8 | data[marker + 3]
    end = marker + 2 + length
    if length < 2 or end > len(data):
        raise ImageRejected(f"the segment at byte {marker} has a bad length ({length})")
    return end


def _kept(data: memoryview, code: int, marker: int, end: int) -> bool:
    """Whether a segment stays: not an APPn, or one of the APPn kinds that describe pixels."""
    if not 0xE0 <= code <= 0xEF:
        return True
    identifier = _KEPT_APPS.get(code)
    payload = marker + 4
    return identifier is not None and data[payload : payload + len(identifier)] == identifier
