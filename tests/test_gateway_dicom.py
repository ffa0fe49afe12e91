"""A capture as a DICOM VL Photographic Image: what the instance says, and that it is valid.

Validity is checked three ways: the module's own `validate` (required attributes, every value
against its VR, a Part 10 round trip with the JPEG intact), pydicom decoding the pixels, and
dciodvfy from Debian's dicom3tools (skipped where it is not installed). The PACS transports are
in test_gateway_pacs.py.
"""

from __future__ import annotations

import datetime as dt
import io
import re
import uuid
from pathlib import Path

import pydicom
import pytest
from photos import (
    DCIODVFY,
    HEIGHT,
    PHOTO,
    WIDTH,
    dciodvfy,
    jpeg,
    manifest,
    open_capture,
    opened,
    padded,
    seal,
)
from pydicom.encaps import generate_frames

from photosafe.gateway import cli, dicom, sink_pacs
from photosafe.gateway.config import ConfigError, load_config
from photosafe.gateway.dicom import InvalidInstance, build_instance, instance_uids, validate
from photosafe.gateway.service import open_sink
from photosafe.gateway.sink import FolderSink
from photosafe.protocol.consent import ExplicitConsent, Purpose, summary
from photosafe.protocol.manifest import BodySite, Laterality, PatientRef, PatientScheme, StationRef
from photosafe.provisioning.sandbox import Site
from photosafe.provisioning.site_configs import SinkSettings, gateway_config_toml

NHS = "9434765919"


def test_the_instance_carries_the_capture() -> None:
    patient = PatientRef(
        scheme=PatientScheme.NHS,
        identifier=NHS,
        source="gs1-gsrn",
        name="DEMO, Zoë",
        birth_date=dt.date(1970, 1, 1),
    )
    consent = ExplicitConsent(purposes=(Purpose.CARE, Purpose.TEACHING), deidentified_use=True)
    capture = opened(patient=patient, consent=consent)
    ds = build_instance(capture, software_version="9.8.7")

    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.77.1.4"
    assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.50"
    assert ds.Modality == "XC"
    # patient, with the NHS number's issuer
    assert (ds.PatientID, ds.IssuerOfPatientID, ds.TypeOfPatientID) == (NHS, "NHS", "TEXT")
    (issuer,) = ds.IssuerOfPatientIDQualifiersSequence
    assert issuer.UniversalEntityID == "2.16.840.1.113883.2.1.4.1"
    assert (issuer.UniversalEntityIDType, issuer.IdentifierTypeCode) == ("ISO", "NH")
    assert str(ds.PatientName) == "DEMO^Zoë"
    assert ds.SpecificCharacterSet == "ISO_IR 192"
    assert ds.PatientBirthDate == "19700101"
    # body site
    (region,) = ds.AnatomicRegionSequence
    assert (region.CodeValue, region.CodingSchemeDesignator, region.CodeMeaning) == (
        "14975008",
        "SCT",
        "Forearm",
    )
    assert ds.ImageLaterality == "L"
    assert ds.RecognizableVisualFeatures == "NO"
    assert ds.BurnedInAnnotation == "NO"
    # when, with the station's UTC offset
    assert ds.AcquisitionDateTime == "20260625093015.250000+0100"
    assert ds.TimezoneOffsetFromUTC == "+0100"
    assert (ds.ContentDate, ds.ContentTime) == ("20260625", "093015.250000")
    # who and where
    (operator,) = ds.OperatorIdentificationSequence
    (badge,) = operator.PersonIdentificationCodeSequence
    assert (badge.CodeValue, badge.CodingSchemeDesignator) == ("123456", "99PHOTOSAFESTAFF")
    assert ds.CodingSchemeIdentificationSequence[0].CodingSchemeDesignator == "99PHOTOSAFESTAFF"
    assert (ds.Manufacturer, ds.ManufacturerModelName) == ("PhotoSafe", "PhotoSafe ward station")
    assert (ds.DeviceSerialNumber, ds.StationName) == ("ward-a-01", "ward-a-01")
    assert ds.SoftwareVersions == "gateway 9.8.7"
    assert (ds.InstitutionName, ds.InstitutionalDepartmentName) == (
        "Test General",
        "Dermatology OPD",
    )
    # consent: readable, and machine-readable in the private block
    assert ds.ImageComments == f"Consent: {summary(consent)}."
    assert "de-identified use allowed" in ds.ImageComments
    block = ds.private_block(0x0011, "PhotoSafe 1")
    assert block[0x01].value == dicom.manifest_digest(capture)
    assert block[0x02].value == "EXPLICIT"
    assert list(block[0x03].value) == ["CARE", "TEACHING"]
    assert block[0x04].value == "YES"
    # the picture, exactly as sealed
    assert (ds.Rows, ds.Columns, ds.SamplesPerPixel) == (HEIGHT, WIDTH, 3)
    assert ds.PhotometricInterpretation == "YBR_FULL_422"
    assert ds.LossyImageCompression == "01"
    assert ds.LossyImageCompressionMethod == "ISO_10918_1"
    assert list(generate_frames(ds.PixelData, number_of_frames=1)) == [padded(PHOTO)]


def test_an_mrn_names_its_authority_and_a_missing_name_stays_empty() -> None:
    patient = PatientRef(scheme=PatientScheme.MRN, identifier="A/7", authority="RX1", source="mrn")
    ds = build_instance(opened(patient=patient))
    assert (ds.PatientID, ds.IssuerOfPatientID) == ("A/7", "RX1")
    (issuer,) = ds.IssuerOfPatientIDQualifiersSequence
    assert issuer.IdentifierTypeCode == "MR"
    assert "UniversalEntityID" not in issuer
    assert (ds.PatientName, ds.PatientBirthDate) == ("", "")


def test_uids_come_from_the_capture_id_alone() -> None:
    capture = uuid.uuid4()
    first = build_instance(open_capture(seal(manifest(capture=capture))))
    again = build_instance(open_capture(seal(manifest(capture=capture))))  # sealed afresh
    other = build_instance(opened())
    uids = instance_uids(capture)
    for ds in (first, again):
        assert (ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID) == (
            uids.study,
            uids.series,
            uids.instance,
        )
    assert len({uids.study, uids.series, uids.instance, other.SOPInstanceUID}) == 4
    for uid in (uids.study, uids.series, uids.instance):
        assert re.fullmatch(r"2\.25\.(0|[1-9][0-9]*)", uid)
        assert len(uid) <= 64
    assert validate(first) == validate(again)  # a duplicate delivery is byte for byte the same


@pytest.mark.parametrize(
    ("side", "code"),
    [
        (Laterality.LEFT, "L"),
        (Laterality.RIGHT, "R"),
        (Laterality.BILATERAL, "B"),
        (Laterality.NONE, "U"),
    ],
)
def test_laterality(side: Laterality, code: str) -> None:
    site = BodySite(snomed_code="85562004", laterality=side)
    assert build_instance(opened(body_site=site)).ImageLaterality == code


@pytest.mark.parametrize(
    ("code", "recognisable", "meaning"),
    [
        ("89545001", "YES", "Face"),
        ("69536005", "YES", "Head"),
        ("41695006", "YES", "Scalp"),
        ("45206002", "YES", "45206002"),  # nose: no label, no known term: the code itself
        ("14975008", "NO", "Forearm"),
        ("56459004", "NO", "Foot"),
    ],
)
def test_recognisable_features_where_the_site_is_on_the_head(
    code: str, recognisable: str, meaning: str
) -> None:
    site = BodySite(snomed_code=code, laterality=Laterality.NONE)
    ds = build_instance(opened(body_site=site))
    assert ds.RecognizableVisualFeatures == recognisable
    assert ds.AnatomicRegionSequence[0].CodeMeaning == meaning


def test_without_a_body_site_the_image_is_assumed_recognisable() -> None:
    ds = build_instance(opened(body_site=None))
    assert "AnatomicRegionSequence" not in ds
    assert "ImageLaterality" not in ds
    assert ds.Laterality == ""  # the series' side: present, and unknown
    assert ds.RecognizableVisualFeatures == "YES"
    validate(ds)


@pytest.mark.parametrize(
    ("image", "samples", "photometric"),
    [
        (jpeg(), 3, "YBR_FULL_422"),  # 4:2:0, Pillow's default
        (jpeg(subsampling=1), 3, "YBR_FULL_422"),  # 4:2:2
        (jpeg(subsampling=0), 3, "YBR_FULL_422"),  # 4:4:4: still the IOD's only colour value
        (jpeg(mode="L"), 1, "MONOCHROME2"),
    ],
)
def test_the_jpeg_decodes_as_the_photo_from_the_file(
    image: bytes, samples: int, photometric: str
) -> None:
    ds = build_instance(opened(image))
    assert (ds.SamplesPerPixel, ds.PhotometricInterpretation) == (samples, photometric)
    back = pydicom.dcmread(io.BytesIO(validate(ds)))
    assert list(generate_frames(back.PixelData, number_of_frames=1)) == [padded(image)]
    pixels = back.pixel_array
    assert pixels.shape[:2] == (HEIGHT, WIDTH)
    if samples == 3:  # red, through the YCbCr round trip
        red, green, blue = (int(v) for v in pixels[HEIGHT // 2, WIDTH // 2])
        assert red > 240 and green < 15 and blue < 15


@pytest.mark.skipif(DCIODVFY is None, reason="dciodvfy (Debian dicom3tools) is not installed")
@pytest.mark.parametrize(
    "capture",
    [
        pytest.param(opened, id="nhs-420"),
        pytest.param(lambda: opened(jpeg(subsampling=0)), id="444"),
        pytest.param(lambda: opened(jpeg(mode="L")), id="grey"),
        pytest.param(
            lambda: opened(
                body_site=None,
                patient=PatientRef(
                    scheme=PatientScheme.MRN, identifier="12345678", authority="X", source="mrn"
                ),
            ),
            id="mrn-no-site",
        ),
    ],
)
def test_dciodvfy_finds_no_error(capture: object, tmp_path: Path) -> None:
    assert callable(capture)
    assert dciodvfy(validate(build_instance(capture())), tmp_path) == []


# -- what cannot make a valid instance ---------------------------------------------------------


def _station(**changes: str) -> StationRef:
    return StationRef.model_validate({**opened().manifest.station.model_dump(), **changes})


@pytest.mark.parametrize(
    ("capture", "expected"),
    [
        pytest.param(
            lambda: opened(
                body_site=BodySite(
                    snomed_code="14975008", label="L" * 80, laterality=Laterality.LEFT
                )
            ),
            "CodeMeaning (LO): The value length (80) exceeds the maximum length of 64",
            id="label-too-long",
        ),
        pytest.param(
            lambda: opened(station=_station(site="Saint " * 15)),
            "InstitutionName (LO): The value length (90) exceeds",
            id="site-too-long",
        ),
        pytest.param(
            lambda: opened(
                patient=PatientRef(
                    scheme=PatientScheme.NHS, identifier=NHS, source="nhs-number", name="A^B"
                )
            ),
            "PatientName: the wristband name holds a DICOM delimiter",
            id="name-delimiter",
        ),
        pytest.param(
            lambda: opened(b"\xff\xd8\xff\xe0 not really a JPEG \xff\xd9"),
            "the JPEG's marker segments are broken",
            id="not-a-jpeg",
        ),
        pytest.param(
            lambda: opened(jpeg(progressive=True)),
            "the JPEG is not baseline (SOF2)",
            id="progressive",
        ),
        pytest.param(
            lambda: opened(jpeg(), image=manifest().image.model_copy(update={"width": 640})),
            "the manifest's image size differs from the JPEG's frame header",
            id="size-mismatch",
        ),
    ],
)
def test_a_capture_that_cannot_make_a_valid_instance_says_why(
    capture: object, expected: str
) -> None:
    assert callable(capture)
    with pytest.raises(InvalidInstance) as raised:
        validate(build_instance(capture()))
    assert expected in str(raised.value)
    assert "LLLL" not in str(raised.value)  # the value itself (it may be patient data) is not


def test_an_rgb_jpeg_without_the_colour_transform_is_refused() -> None:
    # An Adobe APP14 segment with transform 0 marks the components as R, G, B.
    adobe = b"\xff\xee\x00\x0eAdobe\x00\x64\x00\x00\x00\x00\x00"
    image = PHOTO[:2] + adobe + PHOTO[2:]
    with pytest.raises(InvalidInstance, match="RGB without the YCbCr transform"):
        build_instance(opened(image))


def test_validate_refuses_a_dataset_missing_a_required_attribute() -> None:
    ds = build_instance(opened())
    del ds.PatientID
    ds.Manufacturer = ""
    with pytest.raises(InvalidInstance, match="missing or empty: PatientID, Manufacturer"):
        validate(ds)


# -- the gateway config's PACS sinks -----------------------------------------------------------


def _config(site: Site, tmp_path: Path, sink: SinkSettings) -> Path:
    path = tmp_path / "gateway.toml"
    path.write_text(gateway_config_toml(site, tmp_path, sink=sink))
    return path


def test_a_dicomweb_sink_with_basic_auth_from_the_credentials_directory(
    site: Site, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "pacs-password").write_text("s3cret\n")
    (credentials / "pacs-password").chmod(0o600)
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(credentials))
    path = _config(
        site,
        tmp_path,
        {
            "kind": "dicomweb",
            "url": "http://127.0.0.1:8042/dicom-web",
            "username": "photosafe",
            "password_file": "pacs-password",  # found in the credentials directory
            "timeout_s": 7.5,
        },
    )
    config = load_config(path)
    assert config.sink.kind == "dicomweb"
    assert config.sink.secrets() == ("s3cret", None)
    sink = open_sink(config.sink)
    assert isinstance(sink, sink_pacs.StowSink)
    assert sink.url == "http://127.0.0.1:8042/dicom-web"
    assert sink.verify
    assert cli.main(["check-config", "--config", str(path)]) == 0
    out = capsys.readouterr().out
    assert "records   dicomweb STOW-RS http://127.0.0.1:8042/dicom-web (basic auth" in out
    assert "s3cret" not in out


def test_a_dimse_sink(site: Site, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _config(
        site,
        tmp_path,
        {"kind": "dimse", "host": "pacs.local", "called_aet": "MAINPACS", "verify": False},
    )
    sink = open_sink(load_config(path).sink)
    assert isinstance(sink, sink_pacs.CStoreSink)
    assert (sink.host, sink.port, sink.called_aet, sink.calling_aet) == (
        "pacs.local",
        104,
        "MAINPACS",
        "PHOTOSAFE",
    )
    assert not sink.verify
    assert cli.main(["check-config", "--config", str(path)]) == 0
    assert "dimse C-STORE MAINPACS@pacs.local:104 as PHOTOSAFE" in capsys.readouterr().out


def test_a_sink_without_a_kind_is_still_a_folder(site: Site, tmp_path: Path) -> None:
    path = _config(site, tmp_path, {"path": str(tmp_path)})
    assert isinstance(open_sink(load_config(path).sink), FolderSink)


@pytest.mark.parametrize(
    ("sink", "problem"),
    [
        ({"kind": "pacs"}, "sink: kind must be folder, dicomweb or dimse"),
        ({"kind": "dicomweb"}, "sink.url: Field required"),
        ({"kind": "dicomweb", "url": "ftp://pacs/"}, "sink.url: String should match pattern"),
        (
            {"kind": "dicomweb", "url": "https://user:pw@pacs/dw"},
            "sink.url: String should match pattern",
        ),
        (
            {"kind": "dicomweb", "url": "http://pacs/dw", "username": "u"},
            "sink: username and password_file go together",
        ),
        (
            {"kind": "dicomweb", "url": "http://pacs/dw", "token_file": "nowhere"},
            "sink.token_file: ",
        ),
        (
            {"kind": "dimse", "host": "pacs", "called_aet": "A\\B"},
            "sink.called_aet: String should match pattern",
        ),
        (
            {"kind": "dimse", "host": "pacs", "called_aet": "SEVENTEEN-LETTERS"},
            "sink.called_aet: String should match pattern",
        ),
        ({"kind": "dimse", "called_aet": "PACS"}, "sink.host: Field required"),
        ({"kind": "dimse", "host": "pacs", "called_aet": "P", "port": 0}, "sink.port: "),
        ({"kind": "dimse", "host": "pacs", "called_aet": "P", "path": "/x"}, "sink.path: Extra"),
    ],
)
def test_sink_problems_name_their_place(
    site: Site, tmp_path: Path, sink: SinkSettings, problem: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        load_config(_config(site, tmp_path, sink))
    assert any(p.startswith(problem) for p in raised.value.problems), raised.value.problems
