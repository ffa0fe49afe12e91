"""A capture as a DICOM VL Photographic Image: built from the opened capture, checked, encoded.

    build_instance(opened) -> pydicom Dataset     (InvalidInstance if the manifest cannot make one)
    validate(dataset)      -> Part 10 bytes        (InvalidInstance if the result is not valid)

The JPEG is filed exactly as the station sealed it, encapsulated under the JPEG Baseline transfer
syntax, never decoded or re-encoded (so only baseline 8-bit SOF0 JPEGs are accepted; an odd-length
JPEG gets the one trailing zero byte DICOM requires of every fragment).

The instance carries the manifest faithfully or not at all: a value that does not fit its DICOM
value representation (a body-site label longer than a Code Meaning may be, a patient name with a
DICOM delimiter in it, a site name too long for Institution Name) raises InvalidInstance naming
the attribute, and the capture is answered `rejected` with that reason; nothing is truncated.
The dataset carries a preamble and complete file meta, so every writer (dicomweb-client's does
not enforce the file format) sends a Part 10 file.

Attributes and why (manifest field -> DICOM):

- SOP Class VL Photographic Image Storage (1.2.840.10008.5.1.4.1.1.77.1.4), Modality XC.
- StudyID = the first 16 hex digits of the capture id (what staff can match to station logs).
- Study, Series and SOP Instance UIDs are `2.25.<UUIDv5(namespace, "<capture id>/<role>")>`:
  derived from the capture id alone, so a duplicate delivery is the same instance, and a re-store
  is harmless.
- patient: PatientID = the NHS number or MRN; IssuerOfPatientID = "NHS" with an
  IssuerOfPatientIDQualifiersSequence naming the NHS number OID 2.16.840.1.113883.2.1.4.1 (ISO),
  or the MRN's authority; IdentifierTypeCode NH / MR; TypeOfPatientID TEXT. PatientName from the
  wristband ("SURNAME, Given" -> SURNAME^Given) or empty; PatientBirthDate if read, else empty.
- body_site: AnatomicRegionSequence, one SNOMED CT item (CodeValue = concept id, scheme "SCT",
  CodeMeaning = the manifest's label, else a known term, else the concept id); ImageLaterality
  L / R / B / U from left / right / bilateral / none. No body site: neither, an empty (series)
  Laterality (type 2C: unknown), and RecognizableVisualFeatures YES.
- captured_at: AcquisitionDateTime with its UTC offset, and TimezoneOffsetFromUTC; Study and
  Content Date/Time are the same moment in the same offset.
- operator: OperatorIdentificationSequence, the staff id as a code in the private coding scheme
  "99PHOTOSAFESTAFF" (declared in CodingSchemeIdentificationSequence), with the institution.
  Not OperatorsName: a staff id is not a person's name (dciodvfy flags it as one).
- station: Manufacturer "PhotoSafe", ManufacturerModelName "PhotoSafe <ward|theatre> station",
  DeviceSerialNumber = device id, SoftwareVersions = this gateway's version (manifest v1 carries
  no station software version), StationName = device id when it fits the 16 characters of SH
  (DeviceSerialNumber always has it), InstitutionName = site, InstitutionalDepartmentName =
  location.
- consent: DICOM has no consent attribute outside the clinical-trial modules (using those would
  claim the patient is in a trial), so: ImageComments (LT, shown by every viewer) carries
  `protocol.consent.summary()` (basis; purposes; whether de-identified use is allowed), and a
  private block "PhotoSafe 1" in group 0011 carries it machine-readably: consent kind, purposes,
  de-identified use YES/NO, and the SHA-256 of the signed manifest (how the PACS sinks tell a
  duplicate delivery from a capture id reused for another capture).
- RecognizableVisualFeatures YES where the body site is on the head (face, head, scalp, eye,
  eyelid, nose, mouth, cheek, ear, head and neck) or unknown, else NO; BurnedInAnnotation NO.
- image: Rows / Columns from the manifest, checked against the JPEG's frame header;
  PhotometricInterpretation YBR_FULL_422 for every colour (YCbCr) JPEG, 4:2:0, 4:2:2 or 4:4:4
  alike: the IOD's only colour value under JPEG Baseline (dciodvfy refuses RGB and YBR_FULL; the
  JPEG's frame header carries the real sampling); MONOCHROME2 for greyscale; an Adobe RGB JPEG
  (no colour transform) is refused. LossyImageCompression 01, method ISO_10918_1, with the ratio.
  ImageType ORIGINAL\\PRIMARY.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import pydicom
from pydicom import config as pydicom_config
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate, generate_frames
from pydicom.errors import InvalidDicomError
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.uid import UID, JPEGBaseline8Bit, VLPhotographicImageStorage
from pydicom.valuerep import validate_value

from photosafe.gateway import jpeg_header
from photosafe.gateway.jpeg_header import JpegError, JpegFrame
from photosafe.gateway.sink import SinkRejected
from photosafe.protocol.consent import summary
from photosafe.protocol.envelope import Opened
from photosafe.protocol.manifest import Laterality, Manifest, PatientScheme

# Never change: every UID this gateway ever made is derived under it.
UID_NAMESPACE = uuid.UUID("6b1f0c3e-2a4d-5e8f-9c71-3d5a0b7e4f21")
IMPLEMENTATION_UID = f"2.25.{uuid.uuid5(UID_NAMESPACE, 'implementation').int}"
MANUFACTURER = "PhotoSafe"
NHS_NUMBER_OID = "2.16.840.1.113883.2.1.4.1"  # HL7 UK: NHS number
STAFF_SCHEME = "99PHOTOSAFESTAFF"  # a private coding scheme ("99" prefix): badge staff ids
PRIVATE_GROUP = 0x0011
PRIVATE_CREATOR = "PhotoSafe 1"
# Element offsets in the private block (tag 0011,10xx).
PRIVATE_MANIFEST_SHA256 = 0x01
PRIVATE_CONSENT_KIND = 0x02
PRIVATE_CONSENT_PURPOSES = 0x03
PRIVATE_DEIDENTIFIED_USE = 0x04

LATERALITY = {
    Laterality.LEFT: "L",
    Laterality.RIGHT: "R",
    Laterality.BILATERAL: "B",
    Laterality.NONE: "U",
}
# SNOMED CT body structures on the head: an image of them may show who the patient is.
RECOGNISABLE_SITES = frozenset(
    {
        "69536005",  # head
        "774007",  # head and neck
        "89545001",  # face
        "41695006",  # scalp
        "371398005",  # eye region
        "80243003",  # eyelid
        "45206002",  # nose
        "123851003",  # mouth
        "60819002",  # cheek
        "117590005",  # ear
    }
)
# Code meanings for the concepts on the default body-site cards (which carry no label).
KNOWN_TERMS = {
    "69536005": "Head",
    "774007": "Head and Neck",
    "89545001": "Face",
    "41695006": "Scalp",
    "77568009": "Back",
    "14975008": "Forearm",
    "85562004": "Hand",
    "30021000": "Lower leg",
    "56459004": "Foot",
    "76853006": "Heel",
}
_FREE_TEXT_VRS = frozenset({"LT", "ST", "UT", "UR"})  # the only string VRs that may hold '\'


class InvalidInstance(SinkRejected):
    """The capture cannot make a valid DICOM instance; the message names what and why (never a
    patient value)."""


@dataclass(frozen=True)
class InstanceUids:
    study: str
    series: str
    instance: str


def instance_uids(capture: uuid.UUID) -> InstanceUids:
    """The capture's UIDs: the same capture id always gives the same instance."""

    def uid(role: str) -> str:
        return f"2.25.{uuid.uuid5(UID_NAMESPACE, f'{capture}/{role}').int}"

    return InstanceUids(uid("study"), uid("series"), uid("instance"))


def manifest_digest(opened: Opened) -> str:
    """SHA-256 of the signed manifest bytes, lowercase hex (64 characters)."""
    return hashlib.sha256(opened.manifest_bytes).hexdigest()


# -- the JPEG, read but never decoded (photosafe.gateway.jpeg_header) ------------------------


def read_jpeg(data: bytes) -> JpegFrame:
    """The JPEG's frame header; InvalidInstance if it is not a baseline JPEG that the JPEG
    Baseline transfer syntax can carry as it is."""
    try:
        return jpeg_header.read_jpeg(data)
    except JpegError as exc:
        raise InvalidInstance(str(exc)) from None


def _photometric(frame: JpegFrame) -> str:
    """MONOCHROME2, or YBR_FULL_422 for any YCbCr JPEG: the VL Photographic IOD allows no other
    value under JPEG Baseline (dciodvfy refuses RGB and YBR_FULL), whatever the chroma
    subsampling; the JPEG's own frame header tells decoders the real sampling."""
    if len(frame.sampling) == 1:
        return "MONOCHROME2"
    if frame.adobe_transform == 0:
        raise InvalidInstance(
            "the JPEG codes RGB without the YCbCr transform, which a VL Photographic Image "
            "in JPEG Baseline cannot carry"
        )
    return "YBR_FULL_422"


# -- building ---------------------------------------------------------------------------------


def build_instance(opened: Opened, *, software_version: str | None = None) -> Dataset:
    """The VL Photographic Image for this capture (not yet validated: see `validate`)."""
    manifest = opened.manifest
    frame = read_jpeg(opened.image)
    if (frame.width, frame.height) != (manifest.image.width, manifest.image.height):
        raise InvalidInstance("the manifest's image size differs from the JPEG's frame header")
    uids = instance_uids(opened.header.capture)
    ds = Dataset()
    _put(ds, "SpecificCharacterSet", "ISO_IR 192")  # UTF-8: names may be in any script
    _put(ds, "SOPClassUID", VLPhotographicImageStorage)
    _put(ds, "SOPInstanceUID", uids.instance)
    _put(ds, "StudyInstanceUID", uids.study)
    _put(ds, "SeriesInstanceUID", uids.series)
    _put(ds, "Modality", "XC")
    _patient(ds, manifest)
    _times(ds, manifest.captured_at)
    for keyword in ("ReferringPhysicianName", "AccessionNumber", "PatientSex"):
        _put(ds, keyword, "")
    _put(ds, "StudyID", opened.header.capture.hex[:16])
    _put(ds, "StudyDescription", "Clinical photography")
    _put(ds, "SeriesNumber", "1")
    _put(ds, "InstanceNumber", "1")
    _put(ds, "ImageType", ["ORIGINAL", "PRIMARY"])
    _put(ds, "PatientOrientation", "")
    _put(ds, "AcquisitionContextSequence", Sequence())
    _equipment(ds, manifest, software_version or _our_version())
    _operator(ds, manifest)
    _body_site(ds, manifest)
    _consent(ds, opened)
    _pixels(ds, manifest, frame, opened.image)
    ds.file_meta = _file_meta(uids.instance)
    ds.preamble = b"\x00" * 128
    return ds


def _patient(ds: Dataset, manifest: Manifest) -> None:
    patient = manifest.patient
    _put(ds, "PatientID", patient.identifier)
    _put(ds, "TypeOfPatientID", "TEXT")
    qualifiers = Dataset()
    if patient.scheme is PatientScheme.NHS:
        _put(ds, "IssuerOfPatientID", "NHS")
        _put(qualifiers, "UniversalEntityID", NHS_NUMBER_OID)
        _put(qualifiers, "UniversalEntityIDType", "ISO")
        _put(qualifiers, "IdentifierTypeCode", "NH")
    else:
        if patient.authority is None:
            raise InvalidInstance("an MRN without its issuing authority")
        _put(ds, "IssuerOfPatientID", patient.authority)
        _put(qualifiers, "IdentifierTypeCode", "MR")
    _put(ds, "IssuerOfPatientIDQualifiersSequence", Sequence([qualifiers]))
    _put(ds, "PatientName", _person_name(patient.name))
    _put(
        ds, "PatientBirthDate", patient.birth_date.strftime("%Y%m%d") if patient.birth_date else ""
    )


def _person_name(name: str | None) -> str:
    """ "SURNAME, Given" (how the wristband reader writes it) -> "SURNAME^Given"."""
    if not name:
        return ""
    if any(ch in name for ch in "^=\\"):
        raise InvalidInstance("PatientName: the wristband name holds a DICOM delimiter (^ = \\)")
    family, comma, given = name.partition(", ")
    return f"{family.strip()}^{given.strip()}" if comma else name.strip()


def _times(ds: Dataset, when: dt.datetime) -> None:
    offset = when.utcoffset() or dt.timedelta(0)
    minutes = int(offset.total_seconds()) // 60
    sign = "-" if minutes < 0 else "+"
    zone = f"{sign}{abs(minutes) // 60:02d}{abs(minutes) % 60:02d}"
    date, time = when.strftime("%Y%m%d"), when.strftime("%H%M%S.%f")
    _put(ds, "AcquisitionDateTime", f"{date}{time}{zone}")
    _put(ds, "TimezoneOffsetFromUTC", zone)
    for prefix in ("Study", "Content"):
        _put(ds, f"{prefix}Date", date)
        _put(ds, f"{prefix}Time", time)


def _equipment(ds: Dataset, manifest: Manifest, software_version: str) -> None:
    station = manifest.station
    _put(ds, "Manufacturer", MANUFACTURER)
    _put(ds, "ManufacturerModelName", f"PhotoSafe {station.profile.kind.value} station")
    _put(ds, "DeviceSerialNumber", station.device_id)
    _put(ds, "SoftwareVersions", f"gateway {software_version}")
    if len(station.device_id) <= 16:  # SH; DeviceSerialNumber carries longer ids in full
        _put(ds, "StationName", station.device_id)
    _put(ds, "InstitutionName", station.site)
    _put(ds, "InstitutionalDepartmentName", station.location)


def _operator(ds: Dataset, manifest: Manifest) -> None:
    staff = manifest.operator.staff_id
    scheme = Dataset()
    _put(scheme, "CodingSchemeDesignator", STAFF_SCHEME)
    _put(scheme, "CodingSchemeName", "Staff badge identifiers")
    _put(scheme, "CodingSchemeResponsibleOrganization", manifest.station.site)
    _put(ds, "CodingSchemeIdentificationSequence", Sequence([scheme]))
    person = Dataset()
    _put(person, "PersonIdentificationCodeSequence", Sequence([_code(staff, STAFF_SCHEME, staff)]))
    _put(person, "InstitutionName", manifest.station.site)
    _put(ds, "OperatorIdentificationSequence", Sequence([person]))


def _body_site(ds: Dataset, manifest: Manifest) -> None:
    site = manifest.body_site
    if site is None:
        _put(ds, "Laterality", "")  # type 2C: the side is unknown, and said to be
        _put(ds, "RecognizableVisualFeatures", "YES")  # unknown: assume the worst
        return
    meaning = site.label or KNOWN_TERMS.get(site.snomed_code, site.snomed_code)
    _put(ds, "AnatomicRegionSequence", Sequence([_code(site.snomed_code, "SCT", meaning)]))
    _put(ds, "ImageLaterality", LATERALITY[site.laterality])
    recognisable = site.snomed_code in RECOGNISABLE_SITES
    _put(ds, "RecognizableVisualFeatures", "YES" if recognisable else "NO")


def _consent(ds: Dataset, opened: Opened) -> None:
    consent = opened.manifest.consent
    _put(ds, "ImageComments", f"Consent: {summary(consent)}.")
    block = ds.private_block(PRIVATE_GROUP, PRIVATE_CREATOR, create=True)
    for offset, vr, value in (
        (PRIVATE_MANIFEST_SHA256, "LO", manifest_digest(opened)),
        (PRIVATE_CONSENT_KIND, "CS", consent.kind.upper().replace("-", "_")),
        (PRIVATE_CONSENT_PURPOSES, "CS", [p.value.upper() for p in consent.purposes]),
        (PRIVATE_DEIDENTIFIED_USE, "CS", "YES" if consent.deidentified_use else "NO"),
    ):
        ds.add(_element(block.get_tag(offset), vr, value, f"private {offset:#04x}"))


def _pixels(ds: Dataset, manifest: Manifest, frame: JpegFrame, jpeg: bytes) -> None:
    samples = len(frame.sampling)
    _put(ds, "Rows", manifest.image.height)
    _put(ds, "Columns", manifest.image.width)
    _put(ds, "SamplesPerPixel", samples)
    _put(ds, "PhotometricInterpretation", _photometric(frame))
    if samples > 1:
        _put(ds, "PlanarConfiguration", 0)
    for keyword, value in (("BitsAllocated", 8), ("BitsStored", 8), ("HighBit", 7)):
        _put(ds, keyword, value)
    _put(ds, "PixelRepresentation", 0)
    _put(ds, "BurnedInAnnotation", "NO")
    _put(ds, "LossyImageCompression", "01")
    ratio = manifest.image.width * manifest.image.height * samples / len(jpeg)
    _put(ds, "LossyImageCompressionRatio", f"{ratio:.4g}")
    _put(ds, "LossyImageCompressionMethod", "ISO_10918_1")
    ds.add(DataElement(0x7FE00010, "OB", encapsulate([jpeg]), is_undefined_length=True))


def _file_meta(instance: str) -> FileMetaDataset:
    """Complete, so that any `dcmwrite` (dicomweb-client's does not enforce the file format)
    writes a Part 10 file: the group length is recomputed on every write."""
    meta = FileMetaDataset()
    meta.FileMetaInformationGroupLength = 0
    meta.FileMetaInformationVersion = b"\x00\x01"
    meta.MediaStorageSOPClassUID = VLPhotographicImageStorage
    meta.MediaStorageSOPInstanceUID = UID(instance)
    meta.TransferSyntaxUID = JPEGBaseline8Bit
    meta.ImplementationClassUID = UID(IMPLEMENTATION_UID)
    meta.ImplementationVersionName = "PHOTOSAFE_1"
    return meta


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    _put(item, "CodeValue", value)
    _put(item, "CodingSchemeDesignator", scheme)
    _put(item, "CodeMeaning", meaning)
    return item


def _put(ds: Dataset, keyword: str, value: Any) -> None:
    tag = tag_for_keyword(keyword)
    assert tag is not None, keyword
    ds.add(_element(tag, dictionary_VR(tag), value, keyword))


def _element(tag: int, vr: str, value: Any, name: str) -> DataElement:
    """A data element whose value is checked against its VR now (pydicom would only warn)."""
    _check(vr, value, name)
    return DataElement(tag, vr, value, validation_mode=pydicom_config.RAISE)


def _check(vr: str, value: Any, name: str) -> None:
    if isinstance(value, list | MultiValue):
        for single in value:
            _check(vr, single, name)
        return
    if vr in ("IS", "DS", "PN") and not isinstance(value, str):
        value = str(value)  # pydicom's IS / DS / PersonName, as they will be written
    if isinstance(value, str) and "\\" in value and vr not in _FREE_TEXT_VRS:
        raise InvalidInstance(f"{name} ({vr}): a backslash would split the value in two")
    try:
        validate_value(vr, value, pydicom_config.RAISE)
    except ValueError as exc:
        raise InvalidInstance(f"{name} ({vr}): {_redacted(str(exc), value)}") from None


def _redacted(message: str, value: Any) -> str:
    """pydicom's reason without the value itself (it may be patient data) or its help link."""
    message = message.split(" Please see ", 1)[0]
    if isinstance(value, str) and value:
        message = message.replace(repr(value), "<value>").replace(value, "<value>")
    return message


def _our_version() -> str:
    try:
        return version("photosafe")
    except PackageNotFoundError:  # pragma: no cover - always installed in practice
        return "unknown"


# -- validation -------------------------------------------------------------------------------

# Type 1 (present, not empty) and type 2 (present) attributes of the IOD's modules that we fill.
REQUIRED = (
    "SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID", "Modality",
    "PatientID", "ImageType", "Rows", "Columns", "SamplesPerPixel", "PhotometricInterpretation",
    "BitsAllocated", "BitsStored", "HighBit", "PixelRepresentation", "ContentDate",
    "ContentTime", "Manufacturer", "PixelData",
)  # fmt: skip
REQUIRED_PRESENT = (
    "PatientName", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
    "ReferringPhysicianName", "StudyID", "AccessionNumber", "SeriesNumber", "InstanceNumber",
    "PatientOrientation", "AcquisitionContextSequence", "LossyImageCompression",
)  # fmt: skip


def validate(ds: Dataset) -> bytes:
    """Check the instance and return it as a DICOM Part 10 file; InvalidInstance if it fails:
    a required attribute missing or empty, a value its VR does not allow, or an encoding that
    does not read back as the same instance with the same JPEG."""
    missing = [k for k in REQUIRED if k not in ds or ds[k].is_empty]
    missing += [k for k in REQUIRED_PRESENT if k not in ds]
    if missing:
        raise InvalidInstance(f"required attributes missing or empty: {', '.join(missing)}")
    for element in _walk(ds):
        if element.tag != 0x7FE00010 and element.VR != "SQ":
            _check(element.VR, element.value, element.keyword or str(element.tag))
    out = io.BytesIO()
    try:
        pydicom.dcmwrite(out, ds)  # as the transports write it: no format enforced
        back = pydicom.dcmread(io.BytesIO(out.getvalue()))  # not forced: must be Part 10
        frames = list(generate_frames(back.PixelData, number_of_frames=1))
    except (InvalidDicomError, ValueError, TypeError, AttributeError, KeyError) as exc:
        raise InvalidInstance(f"the instance does not encode: {type(exc).__name__}") from None
    same = all(back.get(k) == ds.get(k) for k in ("SOPInstanceUID", "PatientID", "Rows"))
    if not same or frames != list(generate_frames(ds.PixelData, number_of_frames=1)):
        raise InvalidInstance("the encoded instance does not read back as built")
    meta = back.file_meta
    if meta.get("TransferSyntaxUID") != JPEGBaseline8Bit or not all(
        k in meta for k in ("FileMetaInformationGroupLength", "FileMetaInformationVersion")
    ):
        raise InvalidInstance("the encoded instance lost its file meta information")
    return out.getvalue()


def _walk(ds: Dataset) -> Iterable[DataElement]:
    for element in ds:
        yield element
        if element.VR == "SQ":
            for item in element.value:
                yield from _walk(item)
