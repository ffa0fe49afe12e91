"""`photosafe identify`: decode and classify as the station does, and print no more than needed.

The image tests render real symbols with zxing-cpp's writer (a GS1 DataMatrix wristband, a Code
128 badge, a QR command card) and run the command through `main([...])`, reading its JSON.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import zxingcpp
from PIL import Image

from photosafe.daemon.cli import main
from photosafe.daemon.identify import TEST_NHS_GS1_PREFIX, mask
from photosafe.protocol import cards
from photosafe.protocol.consent import Purpose

GS = "\x1d"
NHS = "9990000018"  # the NHS keeps 999 numbers for testing; check digit 8 (Modulus 11)
NAME, BORN = "TESTPATIENT^ALPHA^19800101", "19800101"


def gsrn(nhs: str, prefix: str = TEST_NHS_GS1_PREFIX) -> str:
    body = prefix + nhs
    total = sum(int(d) * (3 if i % 2 == 0 else 1) for i, d in enumerate(reversed(body)))
    return body + str(-total % 10)


BAND = gsrn(NHS)
CARD = cards.card_text(cards.ExplicitConsentCard((Purpose.CARE,), False))


def identify(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict[str, Any], str]:
    code = main(["identify", *args])
    out = capsys.readouterr()
    return code, json.loads(out.out) if out.out else {}, out.out + out.err


def assert_no_patient_data(printed: str) -> None:
    for secret in (NHS, BAND, "TESTPATIENT", "ALPHA", BORN, "1980-01-01"):
        assert secret not in printed


# --- Text, as a scanner sends it ---------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        f"]d28018{BAND}{GS}93{NAME}",
        f"]d28018{BAND}<GS>93{NAME}",
        f"]d28018{BAND}\\x1d93{NAME}",
        f"(8018){BAND}(93){NAME}",
    ],
)
def test_a_wristband_is_a_patient_masked(capsys: pytest.CaptureFixture[str], text: str) -> None:
    code, answer, printed = identify(capsys, text)
    assert code == 0
    assert answer == {
        "kind": "patient",
        "valid": True,
        "reason": None,
        "scheme": "nhs",
        "source": "gs1-gsrn",
        "identifier": "*******018",
        "name_present": True,
        "birth_date_present": True,
        "rules": answer["rules"],
    }
    assert "test rules" in answer["rules"] and TEST_NHS_GS1_PREFIX in answer["rules"]
    assert_no_patient_data(printed)


def test_a_plain_nhs_number(capsys: pytest.CaptureFixture[str]) -> None:
    code, answer, printed = identify(capsys, NHS)
    assert code == 0
    assert (answer["kind"], answer["source"], answer["identifier"]) == (
        "patient",
        "nhs-number",
        "*******018",
    )
    assert (answer["name_present"], answer["birth_date_present"]) == (False, False)
    assert_no_patient_data(printed)


def test_a_staff_badge(capsys: pytest.CaptureFixture[str]) -> None:
    code, answer, _ = identify(capsys, "STAFF-123456")
    assert code == 0
    assert {k: answer[k] for k in ("kind", "valid", "staff_id")} == {
        "kind": "staff",
        "valid": True,
        "staff_id": "123456",
    }


def test_a_command_card_shows_its_label(capsys: pytest.CaptureFixture[str]) -> None:
    code, answer, _ = identify(capsys, CARD)
    assert code == 0
    assert (answer["kind"], answer["card"]) == (
        "command",
        "Consent: explicit — care, no de-identified use",
    )


@pytest.mark.parametrize(
    ("text", "looked_like", "reason"),
    [
        (NHS[:9] + "9", "patient", "NHS number check digit is wrong"),
        (f"]d28018{BAND[:17]}{(int(BAND[17]) + 1) % 10}", "patient", "GS1 check digit is wrong"),
        (f"]d28018{gsrn(NHS, '5060000')}", "patient", "not under the NHS GS1 company prefix"),
        ("psc1:capture", "command", "upper case"),
        ("HELLO-WORLD", "unknown", "not a wristband, badge or PhotoSafe card"),
    ],
)
def test_refusals_exit_1_with_the_reason(
    capsys: pytest.CaptureFixture[str], text: str, looked_like: str, reason: str
) -> None:
    code, answer, printed = identify(capsys, text)
    assert code == 1
    assert (answer["kind"], answer["valid"], answer["looked_like"]) == (
        "rejected",
        False,
        looked_like,
    )
    assert reason in answer["reason"]
    assert_no_patient_data(printed)


def test_masking_keeps_three_characters() -> None:
    assert mask("9990000018") == "*******018"
    assert mask("RX100123456") == "********456"
    assert mask("12") == "**"


# --- Pictures ----------------------------------------------------------------------------------


def render(content: str, fmt: zxingcpp.BarcodeFormat, gs1: bool = False) -> Image.Image:
    barcode = zxingcpp.create_barcode(content, fmt, gs1=gs1)
    return Image.fromarray(zxingcpp.write_barcode_to_image(barcode, scale=6)).convert("L")


def save_side_by_side(path: Path, *symbols: Image.Image) -> Path:
    width = sum(s.width for s in symbols) + 60 * (len(symbols) + 1)
    height = max(s.height for s in symbols) + 120
    sheet = Image.new("L", (width, height), 255)
    x = 60
    for symbol in symbols:
        sheet.paste(symbol, (x, 60))
        x += symbol.width + 60
    sheet.save(path)
    return path


def test_a_photographed_gs1_datamatrix_wristband(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    band = render(f"(8018){BAND}", zxingcpp.BarcodeFormat.DataMatrix, gs1=True)
    code, answer, printed = identify(
        capsys, "--image", str(save_side_by_side(tmp_path / "band.png", band))
    )
    assert code == 0
    (found,) = answer["barcodes"]
    assert (found["format"], found["symbology"], found["kind"], found["identifier"]) == (
        "DataMatrix",
        "]d2",
        "patient",
        "*******018",
    )
    assert answer["valid"] is True and answer["reason"] is None
    assert_no_patient_data(printed)


def test_several_codes_in_one_picture(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    picture = save_side_by_side(
        tmp_path / "three.png",
        render("STAFF-654321", zxingcpp.BarcodeFormat.Code128),
        render(CARD, zxingcpp.BarcodeFormat.QRCode),
        render(f"(8018){BAND}", zxingcpp.BarcodeFormat.Code128, gs1=True),
    )
    code, answer, printed = identify(capsys, "--image", str(picture))
    assert code == 0
    found = {(b["format"], b["symbology"], b["kind"]) for b in answer["barcodes"]}
    assert found == {
        ("Code128", "]C0", "staff"),
        ("QRCode", "]Q1", "command"),
        ("Code128", "]C1", "patient"),
    }
    assert_no_patient_data(printed)


def test_a_picture_with_a_refused_code_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    wrong = f"(8018){BAND[:17]}{(int(BAND[17]) + 1) % 10}"
    picture = save_side_by_side(
        tmp_path / "bad.png", render(wrong, zxingcpp.BarcodeFormat.DataMatrix, gs1=True)
    )
    code, answer, printed = identify(capsys, "--image", str(picture))
    assert code == 1
    assert answer["barcodes"][0]["reason"] == "wristband GS1 check digit is wrong"
    assert_no_patient_data(printed)


def test_a_picture_without_a_code(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blank = tmp_path / "blank.png"
    Image.new("L", (300, 200), 255).save(blank)
    code, answer, _ = identify(capsys, "--image", str(blank))
    assert code == 1
    assert (answer["barcodes"], answer["reason"]) == ([], "no barcode found in the image")


def test_a_file_that_is_no_picture_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bogus = tmp_path / "notes.png"
    bogus.write_text("not an image")
    code, answer, printed = identify(capsys, "--image", str(bogus))
    assert (code, answer) == (2, {})
    assert "not an image" in printed


# --- The station's own rules -------------------------------------------------------------------

STATION_TOML = """
device_id = "ward-a-01"

[station]
site = "Test site"
location = "Ward A"
kind = "ward"

[identity]
nhs_gs1_company_prefix = "5060000"
mrn_pattern = "RX1-(?P<mrn>[0-9]{8})"
mrn_authority = "RX1"

[broker]
host = "broker.invalid"
ca_file = "missing-ca.pem"
cert_file = "missing-cert.pem"
key_file = "missing-key.pem"
"""


def test_config_rules_apply_and_keys_are_not_needed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "station.toml"
    config.write_text(STATION_TOML)
    code, answer, _ = identify(capsys, f"]d28018{gsrn(NHS, '5060000')}", "--config", str(config))
    assert (code, answer["kind"], answer["identifier"]) == (0, "patient", "*******018")
    assert str(config) in answer["rules"] and "test rules" not in answer["rules"]
    code, answer, _ = identify(capsys, f"]d28018{BAND}", "--config", str(config))
    assert code == 1 and "not under the NHS GS1 company prefix" in answer["reason"]
    code, answer, printed = identify(capsys, "RX1-00123456", "--config", str(config))
    assert (code, answer["scheme"], answer["source"], answer["identifier"]) == (
        0,
        "mrn",
        "mrn",
        "*****456",
    )
    assert "00123456" not in printed


@pytest.mark.parametrize(
    ("toml", "problem"),
    [
        ('[identity]\nnhs_gs1_company_prefix = "506"\n', "identity.nhs_gs1_company_prefix"),
        ('[identity]\nnhs_gs1_company_prefix = "5060000"\nstaff_pattern = "[0-9]+"\n', "named"),
        ('[identity]\nnhs_gs1_company_prefix = "5060000"\nstray = 1\n', "identity.stray"),
        ('device_id = "x"\n', "no [identity] section"),
        ("[identity\n", "station.toml"),
    ],
)
def test_unusable_config_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], toml: str, problem: str
) -> None:
    config = tmp_path / "station.toml"
    config.write_text(toml)
    code, answer, printed = identify(capsys, "STAFF-123456", "--config", str(config))
    assert (code, answer) == (2, {})
    assert problem in printed


def test_missing_config_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, printed = identify(capsys, "STAFF-123456", "--config", str(tmp_path / "none.toml"))
    assert code == 2 and "none.toml" in printed


@pytest.mark.parametrize("args", [[], ["STAFF-123456", "--image", "x.png"]])
def test_text_or_image_exactly_one(capsys: pytest.CaptureFixture[str], args: list[str]) -> None:
    code, answer, printed = identify(capsys, *args)
    assert (code, answer) == (2, {})
    assert "TEXT or --image" in printed
