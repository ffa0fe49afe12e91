"""What a scanned barcode is: a patient's wristband, a staff badge, a command card, or none of them.

The wrong-patient photo is the worst hazard this product has, so identifiers are checked, not
trusted: an NHS number by its Modulus 11 check digit, a GS1 wristband (NHS DCB1077: AI 8018 GSRN =
the NHS GS1 company prefix + NHS number + GS1 check digit) by both check digits and the prefix.
Anything that looks like a patient identifier but fails a check is refused, never guessed at.

Scanners send the same wristband in several forms, all accepted here: with an AIM symbology
identifier (`]d2` GS1 DataMatrix, `]C1` GS1-128, `]Q3` GS1 QR, `]e0` GS1 DataBar) or without one,
with GS (0x1D) between element strings or a configured substitute character, or as HRI text
`(8018)…(8019)…(93)…`. Other symbology identifiers (`]C0`, `]d1`, `]Q1`, `]A0`, …) are stripped.

AI 93 (company internal information) is read back to the clinician for a second check; trusts
differ in what they put there, so the format is OUR ASSUMPTION: `SURNAME^GIVEN^YYYYMMDD`, any part
may be empty. `^` is outside GS1's character set 82 (zint warns, then encodes it), so AI 93 is
cut out before biip sees the rest. A malformed AI 93 never refuses a band: name and birth date
stay None.

Rejection reasons are sentences a person can act on and never contain the scanned text.
"""

from __future__ import annotations

import datetime
import re
import unicodedata
from dataclasses import dataclass
from typing import Literal, TypeAlias

from biip import BiipException
from biip.checksums import gs1_standard_check_digit
from biip.gs1_messages import GS1Message

from photosafe.protocol.cards import Card, CardError, is_card_text, parse_card
from photosafe.protocol.errors import ConfigRejected
from photosafe.protocol.manifest import PatientScheme

GS = "\x1d"
MAX_SCAN_LENGTH = 512
GS1_SYMBOLOGIES = frozenset({"]d2", "]C1", "]Q3", "]e0"})

_AIM = re.compile(r"\][A-Za-z][0-9A-Za-z]")
_NHS_PRINTED = re.compile(r"[0-9]{3} [0-9]{3} [0-9]{4}")
_TEN_DIGITS = re.compile(r"[0-9]{10}")
_BARE_GSRN = re.compile(r"\x1d?8018[0-9]{18}")  # some scanners pass a leading FNC1 on as GS
_HRI_START = re.compile(r"\([0-9]{2,4}\)")
# AI 93 starts a GS-separated segment, or follows the fixed-length 8018 element directly.
_AI93_SEGMENT = re.compile(r"(8018[0-9]{18})?93(.*)", re.DOTALL)
_AI93_HRI = re.compile(r"\(93\)(.*?)(?=\([0-9]{2,4}\)|\Z)", re.DOTALL)
_STAFF_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")  # as consent.BestInterestsConsent.decided_by
_SAMPLE_NHS_NUMBER = "9434765919"
# Control, format (e.g. bidi overrides), surrogate, private-use, unassigned, line/para separators.
_CONTROL = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})


@dataclass(frozen=True)
class IdentityRules:
    """How this trust's wristbands and badges look (from the station's config)."""

    nhs_gs1_company_prefix: str
    staff_pattern: str = r"STAFF-(?P<id>[0-9]{6,8})"
    mrn_pattern: str | None = None
    mrn_authority: str | None = None
    gs_substitute: str | None = None

    def __post_init__(self) -> None:
        if re.fullmatch(r"[0-9]{7}", self.nhs_gs1_company_prefix) is None:
            raise ConfigRejected("the NHS GS1 company prefix must be exactly 7 digits")
        staff = _compile(self.staff_pattern, "staff")
        if "id" not in staff.groupindex:
            raise ConfigRejected("the staff pattern needs a named group (?P<id>...) for the id")
        patterns = [("staff", staff)]
        if self.mrn_pattern is not None:
            patterns.append(("MRN", _compile(self.mrn_pattern, "MRN")))
        for what, pattern in patterns:
            # NHS numbers are tried first, so a pattern that also matches them would see a
            # mistyped NHS number refused, or worse, a valid one filed under the wrong scheme.
            if pattern.fullmatch(_SAMPLE_NHS_NUMBER):
                raise ConfigRejected(
                    f"the {what} pattern also matches 10-digit NHS numbers; "
                    "give it a prefix or a different length"
                )
        if self.mrn_authority is not None and not self.mrn_authority.strip():
            raise ConfigRejected("the MRN authority must not be blank")
        sub = self.gs_substitute
        if sub is not None and (
            len(sub) != 1 or not sub.isascii() or not sub.isprintable() or sub.isalnum()
        ):
            raise ConfigRejected("the GS substitute must be one printable ASCII symbol, e.g. '|'")
        if sub is not None and sub in " ^()":
            raise ConfigRejected("the GS substitute may not be a space, '^', '(' or ')'")


def _compile(pattern: str, what: str) -> re.Pattern[str]:
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise ConfigRejected(
            f"the {what} pattern is not a valid regular expression: {exc}"
        ) from None


# --- What a scan can be ----------------------------------------------------------------------


@dataclass(frozen=True, repr=False)
class Patient:
    """A patient identifier. repr and str are redacted: this object must be safe to log."""

    scheme: PatientScheme
    identifier: str
    source: str  # "nhs-number" | "gs1-gsrn" | "mrn"
    authority: str | None = None
    name: str | None = None
    birth_date: datetime.date | None = None

    def __post_init__(self) -> None:
        if self.scheme is PatientScheme.NHS and nhs_number_problem(self.identifier) is not None:
            raise ValueError("an NHS patient needs a valid 10-digit NHS number")
        if not self.identifier:
            raise ValueError("a patient identifier must not be empty")

    def __repr__(self) -> str:
        return f"Patient(scheme={self.scheme.value}, source={self.source}, <redacted>)"

    __str__ = __repr__


@dataclass(frozen=True)
class Staff:
    staff_id: str


@dataclass(frozen=True)
class Command:
    card: Card


@dataclass(frozen=True)
class Rejected:
    looked_like: Literal["patient", "staff", "command", "unknown"]
    reason: str


Scanned: TypeAlias = Patient | Staff | Command | Rejected

_UNKNOWN = Rejected("unknown", "not a wristband, badge or PhotoSafe card this station knows")


# --- NHS numbers -----------------------------------------------------------------------------


def nhs_number_problem(digits: str) -> str | None:
    """None when `digits` is a valid NHS number (10 digits, Modulus 11), else the reason."""
    if _TEN_DIGITS.fullmatch(digits) is None:
        return "an NHS number has exactly 10 digits"
    total = sum(int(d) * weight for d, weight in zip(digits[:9], range(10, 1, -1), strict=True))
    check = 11 - total % 11
    if check == 10:
        return "this number can never be a valid NHS number (its check digit cannot exist)"
    if check % 11 != int(digits[9]):  # 11 means 0
        return "NHS number check digit is wrong"
    return None


def _nhs_number(body: str) -> Scanned | None:
    if _NHS_PRINTED.fullmatch(body):
        body = body.replace(" ", "")
    elif _TEN_DIGITS.fullmatch(body) is None:
        return None
    problem = nhs_number_problem(body)
    if problem is not None:
        return Rejected("patient", problem)
    return Patient(PatientScheme.NHS, body, source="nhs-number")


# --- GS1 wristbands --------------------------------------------------------------------------


def _element_strings(body: str, hri: bool) -> tuple[list[tuple[str, str]], str | None] | None:
    """(AI, value) pairs and the raw AI 93 value, or None when the text is not GS1 data."""
    ai93: str | None = None
    try:
        if hri:
            found = _AI93_HRI.search(body)
            if found is not None:
                ai93 = found.group(1).strip()
                body = body[: found.start()] + body[found.end() :]
            message = GS1Message.parse_hri(body)
        else:
            kept = []
            for segment in body.split(GS):
                found = _AI93_SEGMENT.fullmatch(segment)
                if found is not None and ai93 is None:
                    ai93 = found.group(2)
                    kept.append(found.group(1) or "")
                else:
                    kept.append(segment)
            message = GS1Message.parse(GS.join(part for part in kept if part))
    except BiipException:
        return None
    return [(es.ai.ai, es.value) for es in message.element_strings], ai93


def _read_ai93(value: str | None) -> tuple[str | None, datetime.date | None]:
    parts = value.split("^") if value is not None else []
    if len(parts) != 3:
        return None, None
    surname, given, born = (part.strip() for part in parts)
    name = ", ".join(part for part in (surname, given) if part) or None
    birth_date = None
    if re.fullmatch(r"[0-9]{8}", born):
        try:
            birth_date = datetime.date(int(born[:4]), int(born[4:6]), int(born[6:]))
        except ValueError:
            birth_date = None
    return name, birth_date


def _gsrn_problem(gsrns: set[str], rules: IdentityRules) -> str | None:
    if len(gsrns) > 1:
        return "this wristband carries two different GSRNs: do not use it"
    gsrn = next(iter(gsrns))
    if str(gs1_standard_check_digit(gsrn[:17])) != gsrn[17]:  # biip does not check it
        return "wristband GS1 check digit is wrong"
    if gsrn[:7] != rules.nhs_gs1_company_prefix:
        return (
            "this wristband's GSRN is not under the NHS GS1 company prefix configured for this "
            "trust"
        )
    problem = nhs_number_problem(gsrn[7:17])
    return None if problem is None else f"the wristband's NHS number is invalid: {problem}"


def _wristband(body: str, hri: bool, rules: IdentityRules) -> Scanned:
    if not hri and rules.gs_substitute is not None:
        body = body.replace(rules.gs_substitute, GS)
    parsed = _element_strings(body, hri)
    if parsed is None:
        if body.lstrip(GS).startswith(("8018", "(8018)")):
            return Rejected(
                "patient", "the wristband barcode is damaged or misprinted (not valid GS1 data)"
            )
        return Rejected("unknown", "this GS1 barcode could not be read as GS1 data")
    elements, ai93 = parsed
    gsrns = {value for ai, value in elements if ai == "8018"}
    if not gsrns:
        return Rejected(
            "unknown", "this GS1 barcode carries no patient GSRN (AI 8018): it is not a wristband"
        )
    problem = _gsrn_problem(gsrns, rules)
    if problem is not None:
        return Rejected("patient", problem)
    nhs_number = next(iter(gsrns))[7:17]
    name, birth_date = _read_ai93(ai93)
    return Patient(
        PatientScheme.NHS, nhs_number, source="gs1-gsrn", name=name, birth_date=birth_date
    )


# --- Staff badges and local MRNs -------------------------------------------------------------


def _staff(body: str, rules: IdentityRules) -> Scanned | None:
    found = re.fullmatch(rules.staff_pattern, body)
    if found is None:
        return None
    staff_id = found.group("id")
    if staff_id is None or _STAFF_ID.fullmatch(staff_id) is None:
        return Rejected("staff", "the staff id on this badge is empty or has unexpected characters")
    return Staff(staff_id)


def _mrn(body: str, rules: IdentityRules) -> Scanned | None:
    if rules.mrn_pattern is None:
        return None
    found = re.fullmatch(rules.mrn_pattern, body)
    if found is None:
        return None
    mrn = found.group("mrn") if "mrn" in found.re.groupindex else None
    mrn = mrn or found.group(0)
    if not mrn:
        return Rejected("patient", "this hospital number barcode is empty")
    return Patient(PatientScheme.MRN, mrn, source="mrn", authority=rules.mrn_authority)


# --- The one entry point ---------------------------------------------------------------------


def _scan_problem(text: str) -> str | None:
    if not text:
        return "the scan was empty"
    if len(text) > MAX_SCAN_LENGTH:
        return f"the scan is longer than {MAX_SCAN_LENGTH} characters"
    if any(ch != GS and unicodedata.category(ch) in _CONTROL for ch in text):
        return "the scan contains control or invisible characters: check the scanner's settings"
    return None


def _command(body: str) -> Scanned:
    try:
        return Command(parse_card(body))
    except CardError as exc:
        return Rejected("command", str(exc))


def classify(text: str, rules: IdentityRules) -> Scanned:
    """What a scanned text is. Never raises: anything unusable comes back as Rejected."""
    for ending in ("\r\n", "\n", "\r"):
        if text.endswith(ending):
            text = text[: -len(ending)]
            break
    problem = _scan_problem(text)
    if problem is not None:
        return Rejected("unknown", problem)
    symbology, body = ("", text) if _AIM.match(text) is None else (text[:3], text[3:])

    # Order matters: card text is unambiguous, then the checked patient forms, then patterns.
    if is_card_text(body):
        return _command(body)
    hri = _HRI_START.match(body) is not None
    if symbology in GS1_SYMBOLOGIES or hri or _BARE_GSRN.match(body):
        return _wristband(body, hri, rules)
    scanned = _nhs_number(body) or _staff(body, rules) or _mrn(body, rules)
    if scanned is not None:
        return scanned
    if body.isascii() and body.isdigit() and len(body) in (9, 11):
        return Rejected("patient", f"an NHS number has 10 digits, this barcode has {len(body)}")
    return _UNKNOWN
