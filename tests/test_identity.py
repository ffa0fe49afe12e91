"""Scanned text to patient, staff, command or a refusal a person can act on.

Check digits are computed here independently of the module under test, and the real-symbol tests
render barcodes with zxing-cpp's writer and decode them with its reader, as the station does.
"""

from __future__ import annotations

import datetime
import re

import pytest
import zxingcpp
from hypothesis import assume, given
from hypothesis import strategies as st

from photosafe.protocol.cards import ExplicitConsentCard
from photosafe.protocol.consent import Purpose
from photosafe.protocol.errors import ConfigRejected
from photosafe.protocol.identity import (
    GS,
    MAX_SCAN_LENGTH,
    Command,
    IdentityRules,
    Patient,
    Rejected,
    Scanned,
    Staff,
    classify,
    nhs_number_problem,
)
from photosafe.protocol.manifest import PatientScheme

PREFIX = "5060000"  # an illustrative 7-digit NHS GS1 company prefix
RULES = IdentityRules(
    nhs_gs1_company_prefix=PREFIX,
    mrn_pattern=r"RX1-(?P<mrn>[0-9]{8})",
    mrn_authority="RX1",
)
KNOWN_VALID = ["9434765919", "9434765870", "4010232137", "9990000018"]
IMPOSSIBLE_STEM = "123456789"  # weighted sum % 11 == 1, so the check digit would be 10


def mod11_check(stem: str) -> int | None:
    """NHS Modulus 11, written out again here: None when no check digit can exist."""
    total = sum(int(digit) * (10 - i) for i, digit in enumerate(stem))
    check = 11 - total % 11
    return None if check == 10 else check % 11


def gs1_check(digits: str) -> str:
    """GS1 mod-10 check digit: weights 3, 1, 3, … from the right."""
    total = sum(int(d) * (3 if i % 2 == 0 else 1) for i, d in enumerate(reversed(digits)))
    return str(-total % 10)


def gsrn(nhs_number: str, prefix: str = PREFIX) -> str:
    return prefix + nhs_number + gs1_check(prefix + nhs_number)


def bump(digit: str) -> str:
    return str((int(digit) + 1) % 10)


def patient(scanned: Scanned) -> Patient:
    assert isinstance(scanned, Patient), scanned
    return scanned


def rejected(scanned: Scanned, looked_like: str) -> str:
    assert isinstance(scanned, Rejected), scanned
    assert scanned.looked_like == looked_like
    return scanned.reason


nhs_numbers = (
    st.from_regex(r"[0-9]{9}", fullmatch=True)
    .filter(lambda stem: mod11_check(stem) is not None)
    .map(lambda stem: stem + str(mod11_check(stem)))
)


# --- NHS numbers -----------------------------------------------------------------------------


@pytest.mark.parametrize("number", KNOWN_VALID)
def test_known_valid_nhs_numbers(number: str) -> None:
    assert mod11_check(number[:9]) == int(number[9])
    assert nhs_number_problem(number) is None
    found = patient(classify(number, RULES))
    assert (found.scheme, found.identifier, found.source) == (
        PatientScheme.NHS,
        number,
        "nhs-number",
    )
    assert found.authority is None


def test_printed_form_with_spaces() -> None:
    assert patient(classify("943 476 5919", RULES)).identifier == "9434765919"
    assert patient(classify("943 476 5919\r\n", RULES)).identifier == "9434765919"


@pytest.mark.parametrize("text", ["9434 765 919", "943-476-5919", "943  476 5919", " 9434765919"])
def test_other_groupings_are_not_nhs_numbers(text: str) -> None:
    assert not isinstance(classify(text, RULES), Patient)


@given(nhs_numbers)
def test_generated_valid_nhs_numbers_are_patients(number: str) -> None:
    assert patient(classify(number, RULES)).identifier == number
    spaced = f"{number[:3]} {number[3:6]} {number[6:]}"
    assert patient(classify(spaced, RULES)).identifier == number


@given(nhs_numbers, st.integers(1, 9))
def test_any_other_check_digit_is_refused(number: str, offset: int) -> None:
    wrong = number[:9] + str((int(number[9]) + offset) % 10)
    assert rejected(classify(wrong, RULES), "patient") == "NHS number check digit is wrong"


@pytest.mark.parametrize("number", KNOWN_VALID)
def test_check_digit_off_by_one(number: str) -> None:
    reason = rejected(classify(number[:9] + bump(number[9]), RULES), "patient")
    assert reason == "NHS number check digit is wrong"


@pytest.mark.parametrize("last", "0123456789")
def test_remainder_ten_can_never_be_valid(last: str) -> None:
    assert mod11_check(IMPOSSIBLE_STEM) is None
    reason = rejected(classify(IMPOSSIBLE_STEM + last, RULES), "patient")
    assert "can never be a valid NHS number" in reason


@pytest.mark.parametrize("text", ["943476591", "94347659190"])
def test_nearly_nhs_lengths_are_refused_as_patient(text: str) -> None:
    reason = rejected(classify(text, RULES), "patient")
    assert "10 digits" in reason
    assert text not in reason


@pytest.mark.parametrize("text", ["94347659", "943476591900"])
def test_other_digit_strings_are_unknown(text: str) -> None:
    rejected(classify(text, RULES), "unknown")


def test_a_configured_mrn_pattern_wins_over_the_length_guess() -> None:
    rules = IdentityRules(PREFIX, mrn_pattern=r"[0-9]{9}", mrn_authority="X")
    assert patient(classify("943476591", rules)).scheme is PatientScheme.MRN


@pytest.mark.parametrize("text", ["", "943476591X", "٩٤٣٤٧٦٥٩١٩", "94347659190"])
def test_nhs_number_problem_needs_ten_ascii_digits(text: str) -> None:
    assert nhs_number_problem(text) == "an NHS number has exactly 10 digits"


# --- GS1 wristbands (DCB1077) ----------------------------------------------------------------

BAND = gsrn("9434765919")


@pytest.mark.parametrize(
    "text",
    [
        f"]d28018{BAND}",
        f"]d28018{BAND}{GS}80191234{GS}93DOE^JOHN^19800101",
        f"]d28018{BAND}93DOE^JOHN^19800101",  # no GS needed after the fixed-length 8018
        f"]C18018{BAND}{GS}80191234",
        f"]Q38018{BAND}",
        f"]e08018{BAND}",
        f"8018{BAND}",  # bare element string, no symbology identifier
        f"8018{BAND}{GS}80191234{GS}93DOE^JOHN^19800101",
        f"{GS}8018{BAND}",  # a leading FNC1 passed through as GS
        f"(8018){BAND}",
        f"(8018){BAND}(8019)1234(93)DOE^JOHN^19800101",
        f"(8018) {BAND} (8019) 1234",
        f"]d28018{BAND}\n",
    ],
)
def test_wristband_forms(text: str) -> None:
    found = patient(classify(text, RULES))
    assert (found.scheme, found.identifier, found.source) == (
        PatientScheme.NHS,
        "9434765919",
        "gs1-gsrn",
    )


@pytest.mark.parametrize("substitute", ["|", "~", "@"])
def test_configured_gs_substitute(substitute: str) -> None:
    rules = IdentityRules(PREFIX, gs_substitute=substitute)
    text = f"]d28018{BAND}{substitute}80191234{substitute}93DOE^JOHN^19800101"
    found = patient(classify(text, rules))
    assert (found.identifier, found.name) == ("9434765919", "DOE, JOHN")
    # Without the setting the same scan is not valid GS1 data, and is refused, not guessed.
    assert "damaged or misprinted" in rejected(classify(text, RULES), "patient")


@pytest.mark.parametrize(
    ("ai93", "name", "born"),
    [
        ("DOE^JOHN^19800101", "DOE, JOHN", datetime.date(1980, 1, 1)),
        ("O'BRIEN^MARY ANN^20010203", "O'BRIEN, MARY ANN", datetime.date(2001, 2, 3)),
        ("SMITH-JONES^^", "SMITH-JONES", None),
        ("^^20200229", None, datetime.date(2020, 2, 29)),
        ("DOE^JOHN^19800132", "DOE, JOHN", None),  # no 32nd of January
        ("DOE^JOHN^1980", "DOE, JOHN", None),
        ("DOE JOHN 19800101", None, None),  # not our format: ignored, band still good
        ("DOE^JOHN^19800101^X", None, None),
        ("", None, None),
    ],
)
def test_ai93_read_back_never_refuses_the_band(
    ai93: str, name: str | None, born: datetime.date | None
) -> None:
    for text in (f"]d28018{BAND}{GS}93{ai93}", f"(8018){BAND}(93){ai93}"):
        found = patient(classify(text, RULES))
        assert (found.identifier, found.name, found.birth_date) == ("9434765919", name, born)


def test_gs1_check_digit_off_by_one() -> None:
    bad = BAND[:17] + bump(BAND[17])
    for text in (f"]d28018{bad}", f"(8018){bad}", f"8018{bad}"):
        assert rejected(classify(text, RULES), "patient") == "wristband GS1 check digit is wrong"


def test_valid_gs1_check_digit_around_a_bad_nhs_number() -> None:
    band = gsrn("943476591" + bump("9"))  # GS1 check digit right, Modulus 11 wrong
    reason = rejected(classify(f"]d28018{band}", RULES), "patient")
    assert reason == "the wristband's NHS number is invalid: NHS number check digit is wrong"
    impossible = gsrn(IMPOSSIBLE_STEM + "0")
    reason = rejected(classify(f"]d28018{impossible}", RULES), "patient")
    assert "can never be a valid NHS number" in reason


def test_other_company_prefix_is_not_an_nhs_number() -> None:
    reason = rejected(classify(f"]d28018{gsrn('9434765919', '5069999')}", RULES), "patient")
    assert "not under the NHS GS1 company prefix" in reason


@pytest.mark.parametrize(
    ("text", "looked_like", "reason"),
    [
        (f"]d28018{BAND[:-1]}", "patient", "damaged or misprinted"),
        (f"(8018){BAND[:-1]}", "patient", "damaged or misprinted"),
        (f"]d28018{BAND}{GS}8018{gsrn('9434765870')}", "patient", "two different GSRNs"),
        ("]d20109501101020917", "unknown", "no patient GSRN"),
        ("(01)09501101020917(17)250101", "unknown", "no patient GSRN"),
        ("]d2", "unknown", "no patient GSRN"),
        ("]C1HELLO", "unknown", "could not be read as GS1 data"),
    ],
)
def test_gs1_refusals(text: str, looked_like: str, reason: str) -> None:
    assert reason in rejected(classify(text, RULES), looked_like)


def test_the_same_gsrn_twice_is_one_patient() -> None:
    assert patient(classify(f"]d28018{BAND}{GS}8018{BAND}", RULES)).identifier == "9434765919"


@given(nhs_numbers, st.sampled_from(["]d2", "]C1", "]Q3", "]e0", ""]))
def test_generated_wristbands(number: str, symbology: str) -> None:
    found = patient(classify(f"{symbology}8018{gsrn(number)}{GS}80191", RULES))
    assert (found.identifier, found.source) == (number, "gs1-gsrn")


# --- Staff, MRN, commands and the order of checks --------------------------------------------


def test_staff_badges() -> None:
    assert classify("STAFF-1234567", RULES) == Staff("1234567")
    assert classify("]C0STAFF-123456", RULES) == Staff("123456")
    assert not isinstance(classify("STAFF-12345", RULES), Staff)
    rules = IdentityRules(PREFIX, staff_pattern=r"EMP(?P<id>[A-Z0-9]{4,10})")
    assert classify("EMPAB12", rules) == Staff("AB12")


def test_staff_id_must_be_safe_to_record() -> None:
    rules = IdentityRules(PREFIX, staff_pattern=r"S(?P<id>.+)")
    assert classify("SAB12", rules) == Staff("AB12")
    assert "unexpected characters" in rejected(classify("SA B", rules), "staff")


def test_mrn() -> None:
    found = patient(classify("RX1-00123456", RULES))
    assert (found.scheme, found.identifier, found.authority, found.source) == (
        PatientScheme.MRN,
        "00123456",
        "RX1",
        "mrn",
    )
    whole = IdentityRules(PREFIX, mrn_pattern=r"H[0-9]{6}")
    assert patient(classify("H123456", whole)).identifier == "H123456"
    assert patient(classify("H123456", whole)).authority is None


def test_commands() -> None:
    scanned = classify("]Q1PSC1:CONSENT:EXPLICIT:CARE+TEACHING:DEID", RULES)
    assert scanned == Command(ExplicitConsentCard((Purpose.CARE, Purpose.TEACHING), True))
    assert "wrong number of parts" in rejected(classify("PSC1:DONE:NOW", RULES), "command")
    assert "Caps Lock" in rejected(classify("psc1:done", RULES), "command")


def test_commands_come_before_any_pattern() -> None:
    greedy = IdentityRules(PREFIX, staff_pattern=r"P(?P<id>[A-Z0-9:]+)", mrn_pattern=r"P.*")
    assert isinstance(classify("PSC1:DONE", greedy), Command)


def test_anything_else_is_unknown() -> None:
    for text in ("hello", "]C0", "]A0ABC", "RX1-1234"):
        assert rejected(classify(text, RULES), "unknown") == (
            "not a wristband, badge or PhotoSafe card this station knows"
        )


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "empty"),
        ("\r\n", "empty"),
        ("9434765919\n\n", "control"),
        ("9434765919\t", "control"),
        ("STAFF-123456\x00", "control"),
        ("STAFF-\u202e654321", "control"),  # a right-to-left override hides what it says
        ("9" * (MAX_SCAN_LENGTH + 1), "longer than"),
    ],
)
def test_unusable_scans(text: str, reason: str) -> None:
    assert reason in rejected(classify(text, RULES), "unknown")


# --- Rules -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ({"nhs_gs1_company_prefix": "506000"}, "7 digits"),
        ({"nhs_gs1_company_prefix": "50600001"}, "7 digits"),
        ({"nhs_gs1_company_prefix": "506000٠"}, "7 digits"),
        ({"staff_pattern": "STAFF-("}, "not a valid regular expression"),
        ({"staff_pattern": "STAFF-[0-9]+"}, "(?P<id>"),
        ({"mrn_pattern": "[0-9"}, "not a valid regular expression"),
        ({"mrn_pattern": "[0-9]{8,10}"}, "also matches 10-digit NHS numbers"),
        ({"staff_pattern": "(?P<id>[0-9]+)"}, "also matches 10-digit NHS numbers"),
        ({"mrn_authority": " "}, "blank"),
        ({"gs_substitute": "||"}, "one printable ASCII symbol"),
        ({"gs_substitute": "A"}, "one printable ASCII symbol"),
        ({"gs_substitute": "1"}, "one printable ASCII symbol"),
        ({"gs_substitute": "\x1e"}, "one printable ASCII symbol"),
        ({"gs_substitute": "^"}, "'^'"),
        ({"gs_substitute": "("}, "'('"),
    ],
)
def test_rules_refuse_unusable_settings(kwargs: dict[str, str], reason: str) -> None:
    settings = {"nhs_gs1_company_prefix": PREFIX, **kwargs}
    with pytest.raises(ConfigRejected) as caught:
        IdentityRules(**settings)
    assert reason in str(caught.value)


# --- Real symbols: zxing-cpp writes, zxing-cpp reads -----------------------------------------


def scan(content: str, barcode_format: zxingcpp.BarcodeFormat, gs1: bool = False) -> str:
    """What a scanner with AIM identifiers on sends for a printed symbol."""
    symbol = zxingcpp.create_barcode(content, barcode_format, gs1=gs1)
    image = zxingcpp.write_barcode_to_image(symbol, scale=4)
    result = zxingcpp.read_barcode(image, text_mode=zxingcpp.TextMode.Plain)
    assert result is not None
    return result.symbology_identifier + result.text


@pytest.mark.parametrize(
    ("barcode_format", "symbology"),
    [
        (zxingcpp.BarcodeFormat.DataMatrix, "]d2"),
        (zxingcpp.BarcodeFormat.Code128, "]C1"),
        (zxingcpp.BarcodeFormat.QRCode, "]Q3"),
    ],
)
def test_real_gs1_wristbands(barcode_format: zxingcpp.BarcodeFormat, symbology: str) -> None:
    text = scan(f"(8018){BAND}(8019)1234(93)DOE^JOHN^19800101", barcode_format, gs1=True)
    assert text.startswith(symbology) and GS in text
    found = patient(classify(text, RULES))
    assert (found.identifier, found.name, found.birth_date) == (
        "9434765919",
        "DOE, JOHN",
        datetime.date(1980, 1, 1),
    )


def test_real_gs1_wristband_with_a_bad_check_digit() -> None:
    text = scan(f"(8018){BAND[:17]}{bump(BAND[17])}", zxingcpp.BarcodeFormat.DataMatrix, gs1=True)
    assert rejected(classify(text, RULES), "patient") == "wristband GS1 check digit is wrong"


def test_real_code128_mrn_badge_and_card() -> None:
    code128 = zxingcpp.BarcodeFormat.Code128
    mrn = scan("RX1-00123456", code128)
    assert mrn.startswith("]C0")
    assert patient(classify(mrn, RULES)).identifier == "00123456"
    assert classify(scan("STAFF-1234567", code128), RULES) == Staff("1234567")
    card = classify(scan("PSC1:CONSENT:EXPLICIT:CARE:NODEID", code128), RULES)
    assert card == Command(ExplicitConsentCard((Purpose.CARE,), False))


def test_real_plain_datamatrix_nhs_number() -> None:
    text = scan("9434765919", zxingcpp.BarcodeFormat.DataMatrix)
    assert text.startswith("]d1")
    assert patient(classify(text, RULES)).source == "nhs-number"


# --- Properties: never raises, never leaks ---------------------------------------------------

FRAGMENTS = [
    "]d2", "]C1", "]C0", "]Q3", "8018", "8019", "93", "(8018)", "(93)", "(", ")", GS, "|", "^",
    "9434765919", "943 476 5919", PREFIX, BAND, "0", "7", " ", "\n", "\r", "PSC1:", "DONE",
    "STAFF-", "RX1-", "1234", "é", "\x00",
]  # fmt: skip
scans = st.one_of(
    st.text(max_size=600),
    st.lists(st.sampled_from(FRAGMENTS), max_size=16).map("".join),
    st.from_regex(r"(\]d2|\(8018\)|8018)?[0-9]{0,30}([\x1d|(][0-9]{2,4}\)?[0-9A-Z^]{0,12})*"),
)
LENIENT = IdentityRules(PREFIX, mrn_pattern=r"RX1-(?P<mrn>[0-9]*)", gs_substitute="|")


@given(scans)
def test_classify_never_raises_and_never_echoes(text: str) -> None:
    for rules in (RULES, LENIENT):
        scanned = classify(text, rules)
        assert isinstance(scanned, Patient | Staff | Command | Rejected)
        if isinstance(scanned, Rejected):
            for start in range(len(text) - 9):
                run = text[start : start + 10]
                if run.isascii() and run.isdigit():
                    assert run not in scanned.reason


@given(
    nhs_numbers,
    st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ-' ", min_size=1, max_size=20),
    st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ-' ", min_size=1, max_size=20),
    st.dates(datetime.date(1900, 1, 1), datetime.date(2030, 12, 31)),
)
def test_patient_repr_and_str_are_redacted(
    number: str, surname: str, given: str, born: datetime.date
) -> None:
    assume(surname.strip() and given.strip())
    found = patient(classify(f"]d28018{gsrn(number)}{GS}93{surname}^{given}^{born:%Y%m%d}", RULES))
    assert found.name == f"{surname.strip()}, {given.strip()}"
    assert found.birth_date == born
    for shown in (repr(found), str(found), f"{found}", f"{[found]}"):
        assert number not in shown
        assert found.name not in shown
        assert born.isoformat() not in shown and f"{born:%Y%m%d}" not in shown
        assert re.fullmatch(
            r"Patient\(scheme=nhs, source=gs1-gsrn, <redacted>\)", shown.strip("[]")
        )


def test_patient_refuses_an_invalid_nhs_number() -> None:
    with pytest.raises(ValueError, match="valid 10-digit NHS number"):
        Patient(PatientScheme.NHS, "9434765918", source="nhs-number")
