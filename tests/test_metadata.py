"""Every image leaves the station without EXIF, GPS, maker notes, XMP or IPTC.

JPEGs are made by Pillow with real metadata (an EXIF block with a GPS IFD and a maker note, XMP,
an ICC profile, a comment), plus segments Pillow cannot write (IPTC in APP13, an MPF index,
data after EOI) spliced in byte by byte as cameras do. The stripped image is read back with
Pillow: no metadata, the ICC profile and comment kept, every pixel identical. The workflow is
driven once with a camera that adds EXIF the way picamera2 does, and once with one that returns
garbage. A hypothesis fuzz feeds arbitrary and damaged bytes.
"""

from __future__ import annotations

import contextlib
import io
import struct
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import ExifTags, Image, ImageCms

from photosafe.daemon.metadata import ImageRejected, strip_metadata
from photosafe.daemon.quality import QualityGate
from photosafe.daemon.workflow import Workflow
from photosafe.drivers.camera import CameraDetails, GreyFrame, Still
from photosafe.drivers.camera_simulated import SimulatedCamera
from photosafe.drivers.indicator import Signal
from photosafe.drivers.indicator_simulated import RecordingIndicator
from photosafe.drivers.secret import SecretBuffer
from photosafe.protocol import cards
from photosafe.protocol.consent import Purpose, StationKind, StationProfile
from photosafe.protocol.identity import IdentityRules, classify
from photosafe.protocol.manifest import Manifest, StationRef

CANARY = b"PHOTOSAFE-METADATA-CANARY-51c2"
GPS_DATUM = b"WGS-84-PHOTOSAFE"  # a GPS tag value that occurs nowhere else
MAKER_NOTE = b"MAKERNOTE-SERIAL-0042-PHOTOSAFE"
XMP = b'<x:xmpmeta xmlns:x="adobe:ns:meta/">PHOTOSAFE-XMP</x:xmpmeta>'
ICC = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
IPTC = b"Photoshop 3.0\x008BIM\x04\x04\x00\x00\x00\x00\x00\x0c\x1c\x02\x05\x00\x08PATIENTX"


def segment(marker: int, payload: bytes) -> bytes:
    return bytes((0xFF, marker)) + struct.pack(">H", len(payload) + 2) + payload


def after_soi(jpeg: bytes, *segments: bytes) -> bytes:
    """Splices segments in right after SOI, as picamera2 splices its EXIF."""
    return jpeg[:2] + b"".join(segments) + jpeg[2:]


def scene(size: tuple[int, int] = (96, 64)) -> Image.Image:
    image = Image.new("RGB", size)
    image.putdata(
        [(x * 7 % 256, y * 5 % 256, (x * y) % 256) for y in range(size[1]) for x in range(size[0])]
    )
    return image


def exif_with_gps() -> Image.Exif:
    exif = Image.Exif()
    exif[ExifTags.Base.Make] = "PhotoSafeTestCamera"
    exif[ExifTags.Base.Model] = "/base/soc/i2c0mux/i2c@1/imx708@1a"  # as picamera2 writes it
    gps = exif.get_ifd(ExifTags.IFD.GPSInfo)
    gps[ExifTags.GPS.GPSLatitudeRef] = "N"
    gps[ExifTags.GPS.GPSLatitude] = (51.0, 30.0, 12.5)
    gps[ExifTags.GPS.GPSLongitudeRef] = "W"
    gps[ExifTags.GPS.GPSLongitude] = (0.0, 7.0, 39.0)
    gps[ExifTags.GPS.GPSMapDatum] = GPS_DATUM.decode()
    exif.get_ifd(ExifTags.IFD.Exif)[ExifTags.Base.MakerNote] = MAKER_NOTE
    return exif


def jpeg_with_everything(progressive: bool = False) -> bytes:
    out = io.BytesIO()
    scene().save(
        out,
        "JPEG",
        quality=90,
        exif=exif_with_gps(),
        xmp=XMP,
        icc_profile=ICC,
        comment=CANARY,
        progressive=progressive,
    )
    return out.getvalue()


def still_of(jpeg: bytes) -> Still:
    return Still(SecretBuffer(bytearray(jpeg)), 96, 64, CameraDetails("test"))


def stripped(jpeg: bytes) -> bytes:
    result = strip_metadata(still_of(jpeg))  # held: a dropped SecretBuffer wipes itself
    return bytes(result.jpeg.view())


def pixels(jpeg: bytes) -> bytes:
    with Image.open(io.BytesIO(jpeg)) as image:
        return image.convert("RGB").tobytes()


def headers(jpeg: bytes) -> bytes:
    """The bytes before the first scan, where the metadata segments live."""
    return jpeg[: jpeg.index(b"\xff\xda")]


def test_exif_and_gps_leave_with_neither() -> None:
    original = jpeg_with_everything()
    assert b"Exif\x00\x00" in original and GPS_DATUM in original  # the test's premise
    result = stripped(original)
    with Image.open(io.BytesIO(result)) as image:
        assert "exif" not in image.info
        assert dict(image.getexif()) == {}
        assert dict(image.getexif().get_ifd(ExifTags.IFD.GPSInfo)) == {}
        assert "xmp" not in image.info
        assert image.info["icc_profile"] == ICC
        assert image.info["comment"] == CANARY
    assert b"Exif\x00\x00" not in result
    assert GPS_DATUM not in result and MAKER_NOTE not in result
    assert b"\x88\x25" not in headers(result) and b"\x25\x88" not in headers(result)  # GPS IFD
    assert b"http://ns.adobe.com/xap" not in result and b"PHOTOSAFE-XMP" not in result
    assert pixels(result) == pixels(original)


def test_only_whole_metadata_segments_go() -> None:
    original = jpeg_with_everything()
    result = stripped(original)
    exif = segment(0xE1, exif_with_gps().tobytes())  # starts with "Exif\\0\\0"
    xmp = segment(0xE1, b"http://ns.adobe.com/xap/1.0/\x00" + XMP)
    assert len(original) - len(result) == len(exif) + len(xmp)
    assert result[:2] == b"\xff\xd8" and result.endswith(b"\xff\xd9")


def test_iptc_mpf_jfxx_other_apps_and_trailing_data_go() -> None:
    plain = io.BytesIO()
    scene().save(plain, "JPEG", quality=90, comment=CANARY)
    original = plain.getvalue()
    spliced = (
        after_soi(
            original,
            segment(0xED, IPTC),  # APP13: Photoshop IRB with IPTC
            segment(0xE2, b"MPF\x00II*\x00"),  # APP2 that is a multi-picture index, not ICC
            segment(0xE0, b"JFXX\x00\x10THUMBNAIL"),  # a JFIF extension thumbnail
            segment(0xE9, b"VENDOR-SECRET"),
            segment(0xEF, b""),
        )
        + b"TRAILING-SECOND-IMAGE"
    )
    result = stripped(spliced)
    assert result == original
    for leftover in (b"PATIENTX", b"MPF\x00", b"JFXX", b"VENDOR-SECRET", b"TRAILING"):
        assert leftover not in result


def test_pixel_describing_segments_stay() -> None:
    plain = io.BytesIO()
    scene().save(plain, "JPEG", quality=90)
    adobe = segment(0xEE, b"Adobe\x00\x64\x00\x00\x00\x00\x01")  # colour transform: YCbCr
    original = after_soi(plain.getvalue(), adobe, segment(0xFE, CANARY))
    assert stripped(original) == original


def test_metadata_between_progressive_scans_goes_too() -> None:
    original = jpeg_with_everything(progressive=True)
    second_scan = original.index(b"\xff\xda", original.index(b"\xff\xda") + 2)
    sneaky = segment(0xE1, exif_with_gps().tobytes())
    spliced = original[:second_scan] + sneaky + original[second_scan:]
    result = stripped(spliced)
    assert b"Exif\x00\x00" not in result and GPS_DATUM not in result
    assert pixels(result) == pixels(original)


def test_fill_bytes_before_a_marker_are_accepted() -> None:
    plain = io.BytesIO()
    scene().save(plain, "JPEG", quality=90)
    original = plain.getvalue()
    filled = original[:2] + b"\xff\xff" + original[2:]  # optional 0xFF fill before a marker
    assert pixels(stripped(filled)) == pixels(original)


def test_a_jpeg_with_nothing_to_remove_comes_back_as_it_is() -> None:
    plain = io.BytesIO()
    scene().save(plain, "JPEG", quality=90, icc_profile=ICC, comment=CANARY)
    still = still_of(plain.getvalue())
    assert strip_metadata(still) is still  # no second plaintext copy for nothing
    assert not still.jpeg.wiped and bytes(still.jpeg.view()) == plain.getvalue()


def test_the_old_buffer_is_wiped_and_a_new_one_returned() -> None:
    still = still_of(jpeg_with_everything())
    result = strip_metadata(still)
    assert still.jpeg.wiped
    assert result.jpeg is not still.jpeg and not result.jpeg.wiped
    assert (result.width, result.height, result.info) == (still.width, still.height, still.info)


WHOLE = jpeg_with_everything()
MALFORMED = {
    "empty": b"",
    "not a JPEG": b"\x89PNG\r\n\x1a\n" + b"\x00" * 40,
    "SOI only": b"\xff\xd8",
    "segment runs past the end": b"\xff\xd8\xff\xe0\x40\x00JFIF\x00",
    "segment length below 2": b"\xff\xd8\xff\xe0\x00\x01\xff\xd9",
    "no marker after a segment": b"\xff\xd8\xff\xfe\x00\x04ab" + b"junk",
    "scan before any frame header": b"\xff\xd8\xff\xda\x00\x02\x00\x00\xff\xd9",
    "EOI before any scan": b"\xff\xd8\xff\xfe\x00\x03a\xff\xd9",
    "cut off in the headers": WHOLE[:300],
    "cut off in the image data": WHOLE[:-100],
    "a second SOI in the image data": WHOLE[:-2] + b"\xff\xd8\xff\xd9",
}


@pytest.mark.parametrize("name", MALFORMED)
def test_malformed_jpeg_is_rejected_and_wiped(name: str) -> None:
    still = still_of(MALFORMED[name])
    with pytest.raises(ImageRejected):
        strip_metadata(still)
    assert still.jpeg.wiped


SMALL_JPEG = stripped(WHOLE)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_arbitrary_bytes_raise_only_image_rejected(data: bytes) -> None:
    for candidate in (data, b"\xff\xd8" + data, b"\xff\xd8\xff" + data):
        with contextlib.suppress(ImageRejected):
            strip_metadata(still_of(candidate))


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, len(SMALL_JPEG) - 1), st.integers(0, 255)), max_size=6),
    st.integers(0, len(SMALL_JPEG)),
)
def test_damaged_jpegs_raise_only_image_rejected(changes: list[tuple[int, int]], keep: int) -> None:
    damaged = bytearray(SMALL_JPEG)
    for index, value in changes:
        damaged[index] = value
    try:
        result = strip_metadata(still_of(bytes(damaged[:keep])))
    except ImageRejected:
        return
    data = bytes(result.jpeg.view())
    assert data.startswith(b"\xff\xd8") and data.endswith(b"\xff\xd9")


# --- In the workflow ----------------------------------------------------------------------------


class ExifAddingCamera:
    """The simulated camera with EXIF and GPS spliced in after SOI, as picamera2 does."""

    def __init__(self, garbage: bool = False) -> None:
        self.camera = SimulatedCamera(640, 480, canary=CANARY)
        self.garbage = garbage
        self.originals: list[bytes] = []
        self.stills: list[Still] = []

    def start(self) -> None:
        self.camera.start()

    def capture(self) -> Still:
        still = self.camera.capture()
        original = bytes(still.jpeg.view())
        still.jpeg.wipe()
        self.originals.append(original)
        exif = segment(0xE1, exif_with_gps().tobytes())
        data = b"not a JPEG at all" if self.garbage else after_soi(original, exif)
        spliced = Still(SecretBuffer(bytearray(data)), still.width, still.height, still.info)
        self.stills.append(spliced)
        return spliced

    def preview_frame(self) -> GreyFrame:
        return self.camera.preview_frame()

    def details(self) -> CameraDetails:
        return self.camera.details()

    def close(self) -> None:
        self.camera.close()


class KeepingSender:
    def __init__(self) -> None:
        self.sent: list[tuple[Manifest, bytes]] = []

    def send(self, manifest: Manifest, still: Still) -> None:
        self.sent.append((manifest, bytes(still.jpeg.view())))


def nhs_number(stem: str) -> str:
    check = 11 - sum(int(d) * (10 - i) for i, d in enumerate(stem)) % 11
    return stem + str(check % 11)


@pytest.fixture
def station() -> Iterator[tuple[Workflow, ExifAddingCamera, KeepingSender, RecordingIndicator]]:
    camera = ExifAddingCamera()
    camera.start()
    sender, indicator = KeepingSender(), RecordingIndicator()
    workflow = Workflow(
        station=StationRef(
            device_id="ward-test-01",
            site="Test site",
            location="Test",
            profile=StationProfile(kind=StationKind.WARD),
        ),
        indicator=indicator,
        camera=camera,
        quality=QualityGate(),
        sender=sender,
    )
    rules = IdentityRules(nhs_gs1_company_prefix="9506000")
    consent = cards.card_text(cards.ExplicitConsentCard((Purpose.CARE,), False))
    for text in ("STAFF-100001", nhs_number("999000001"), consent):
        workflow.scan(classify(text, rules))
    yield workflow, camera, sender, indicator
    camera.close()


def test_the_workflow_sends_the_image_without_exif(
    station: tuple[Workflow, ExifAddingCamera, KeepingSender, RecordingIndicator],
) -> None:
    workflow, camera, sender, indicator = station
    workflow.press()
    assert indicator.signals[-2:] == [Signal.CAPTURING, Signal.SENDING]
    [(manifest, jpeg)] = sender.sent
    assert b"Exif\x00\x00" not in jpeg and GPS_DATUM not in jpeg
    assert jpeg == camera.originals[0]  # only the spliced EXIF went: JFIF and canary stayed
    assert manifest.image.size == len(jpeg)
    assert camera.stills[0].jpeg.wiped


def test_a_malformed_image_is_a_fault_and_nothing_is_sent(
    station: tuple[Workflow, ExifAddingCamera, KeepingSender, RecordingIndicator],
) -> None:
    workflow, camera, sender, indicator = station
    camera.garbage = True
    workflow.press()
    assert indicator.signals[-2:] == [Signal.CAPTURING, Signal.FAULT]
    assert "SOI" in (indicator.shown[-1][1] or "")
    assert sender.sent == []
    assert camera.stills[0].jpeg.wiped
