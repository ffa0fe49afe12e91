"""Printed command cards: the text their barcodes carry, defined once.

A headless station is driven by scans, so consent, body site and the few actions a clinician takes
are barcodes on a printed sheet. The text is `PSC1:` then a verb and ':'-separated arguments, in
upper-case letters, digits, ':', '+' and '-' only: all of these are in QR's compact alphanumeric
mode and in Code 128's code set A, so the symbols stay small. Tokens are the upper-cased values of
the enums in `photosafe.protocol.consent`.

    PSC1:CONSENT:EXPLICIT:CARE+TEACHING:DEID
    PSC1:CONSENT:PARENTAL:CARE:NODEID:GUARDIAN
    PSC1:CONSENT:BEST-INTERESTS
    PSC1:CONSENT:IMPLIED:ENDOSCOPIC
    PSC1:BODYSITE:80248007:LEFT
    PSC1:INTIMATE   PSC1:APPROVE   PSC1:DISCARD   PSC1:CAPTURE   PSC1:CANCEL   PSC1:DONE

Errors never echo the scanned text: a mis-scanned wristband must not end up in a message.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Literal, TypeAlias, TypeVar, assert_never, get_args

from photosafe.protocol.consent import (
    ExplicitConsent,
    ImpliedCategory,
    ImpliedConsent,
    ParentalConsent,
    Purpose,
    Relationship,
)
from photosafe.protocol.errors import ProtocolError

PREFIX = "PSC1:"
MAX_CARD_LENGTH = 128
_E = TypeVar("_E", bound=StrEnum)
_T = TypeVar("_T")
_ANY_VERSION = re.compile(r"PSC[0-9]+:", re.IGNORECASE)
_ALPHABET = re.compile(r"[A-Z0-9:+-]+")

Laterality: TypeAlias = Literal["left", "right", "bilateral", "none"]
LATERALITIES: tuple[Laterality, ...] = get_args(Laterality)


class CardError(ProtocolError):
    """A command card's text is not one this station understands."""


# --- SNOMED CT concept ids -------------------------------------------------------------------
# An SCTID ends with a Verhoeff check digit, preceded by a two-digit partition id; for a concept
# that is 00 (short format) or 10 (long format). Checking both catches mistyped codes and codes
# for descriptions or relationships, which are not body sites.

_VERHOEFF_D = (
    (0, 1, 2, 3, 4, 5, 6, 7, 8, 9),
    (1, 2, 3, 4, 0, 6, 7, 8, 9, 5),
    (2, 3, 4, 0, 1, 7, 8, 9, 5, 6),
    (3, 4, 0, 1, 2, 8, 9, 5, 6, 7),
    (4, 0, 1, 2, 3, 9, 5, 6, 7, 8),
    (5, 9, 8, 7, 6, 0, 4, 3, 2, 1),
    (6, 5, 9, 8, 7, 1, 0, 4, 3, 2),
    (7, 6, 5, 9, 8, 2, 1, 0, 4, 3),
    (8, 7, 6, 5, 9, 3, 2, 1, 0, 4),
    (9, 8, 7, 6, 5, 4, 3, 2, 1, 0),
)
# Row i of the position table is the permutation below applied i times.
_VERHOEFF_P = [tuple(range(10))]
for _ in range(7):
    _VERHOEFF_P.append(tuple((1, 5, 7, 6, 2, 8, 3, 0, 9, 4)[d] for d in _VERHOEFF_P[-1]))
_VERHOEFF_INV = (0, 4, 3, 2, 1, 5, 6, 7, 8, 9)


def _verhoeff(digits: str, offset: int) -> int:
    check = 0
    for i, digit in enumerate(reversed(digits)):
        check = _VERHOEFF_D[check][_VERHOEFF_P[(i + offset) % 8][int(digit)]]
    return check


def verhoeff_check_digit(stem: str) -> str:
    """The Verhoeff check digit to append to a string of ASCII digits."""
    return str(_VERHOEFF_INV[_verhoeff(stem, 1)])


def snomed_concept_problem(code: str) -> str | None:
    """None when `code` can be a SNOMED CT concept id, else the reason it cannot."""
    if re.fullmatch(r"[1-9][0-9]{5,17}", code) is None:
        return "a SNOMED CT code is 6 to 18 digits and does not start with 0"
    if _verhoeff(code, 0) != 0:
        return "the SNOMED CT code's check digit is wrong"
    if code[-3:-1] not in ("00", "10"):
        return "the SNOMED CT code is not a concept id (a description or relationship id?)"
    return None


# --- The cards -------------------------------------------------------------------------------


def _purposes(purposes: tuple[Purpose, ...]) -> tuple[Purpose, ...]:
    # Same normal form as the consent models: one meaning, one card text.
    if not purposes:
        raise CardError("a consent card needs at least one purpose")
    return tuple(sorted({Purpose(p) for p in purposes}))


@dataclass(frozen=True)
class ExplicitConsentCard:
    purposes: tuple[Purpose, ...]
    deidentified_use: bool

    def __post_init__(self) -> None:
        object.__setattr__(self, "purposes", _purposes(self.purposes))


@dataclass(frozen=True)
class ParentalConsentCard:
    purposes: tuple[Purpose, ...]
    deidentified_use: bool
    decided_by: Relationship

    def __post_init__(self) -> None:
        object.__setattr__(self, "purposes", _purposes(self.purposes))


@dataclass(frozen=True)
class BestInterestsCard:
    """The decision-maker's staff badge is scanned next; the card itself carries nothing."""


@dataclass(frozen=True)
class ImpliedConsentCard:
    category: ImpliedCategory


@dataclass(frozen=True)
class BodySiteCard:
    snomed_code: str
    laterality: Laterality

    def __post_init__(self) -> None:
        # Validated here too, so card_text can never print a card parse_card refuses.
        problem = snomed_concept_problem(self.snomed_code)
        if problem is not None:
            raise CardError(problem)
        if self.laterality not in LATERALITIES:
            raise CardError("laterality must be left, right, bilateral or none")


@dataclass(frozen=True)
class IntimateCard:
    """The image is intimate: a chaperone's badge and the patient's approval are required."""


@dataclass(frozen=True)
class ApproveCard:
    """The patient approved the image shown to them."""


@dataclass(frozen=True)
class DiscardCard:
    """Throw the last image away unsent."""


@dataclass(frozen=True)
class CaptureCard:
    """Take the picture."""


@dataclass(frozen=True)
class CancelCard:
    """Clear the patient and everything recorded for them."""


@dataclass(frozen=True)
class DoneCard:
    """Finished with this patient."""


SimpleCard: TypeAlias = (
    IntimateCard | ApproveCard | DiscardCard | CaptureCard | CancelCard | DoneCard
)
ConsentCard: TypeAlias = ExplicitConsentCard | ParentalConsentCard | ImpliedConsentCard
Card: TypeAlias = ConsentCard | BestInterestsCard | BodySiteCard | SimpleCard

# verb -> (card, label printed under its barcode)
_SIMPLE: dict[str, tuple[type[SimpleCard], str]] = {
    "INTIMATE": (IntimateCard, "Intimate image: scan the chaperone's badge next"),
    "APPROVE": (ApproveCard, "Patient approves the image"),
    "DISCARD": (DiscardCard, "Discard the image"),
    "CAPTURE": (CaptureCard, "Capture"),
    "CANCEL": (CancelCard, "Cancel: clear this patient"),
    "DONE": (DoneCard, "Done with this patient"),
}
_VERB = {kind: verb for verb, (kind, _) in _SIMPLE.items()}
_DEID = {"DEID": True, "NODEID": False}
_DEID_TOKEN = {value: token for token, value in _DEID.items()}
_LATERALITY: dict[str, Laterality] = {side.upper(): side for side in LATERALITIES}


def _token(member: StrEnum) -> str:
    return member.value.upper()


def _tokens(kind: type[_E]) -> dict[str, _E]:
    return {_token(member): member for member in kind}


# --- Text to card ----------------------------------------------------------------------------


def is_card_text(text: str) -> bool:
    """True when the text claims to be a command card (any version, any case)."""
    return _ANY_VERSION.match(text) is not None


def _lookup(table: dict[str, _T], token: str, what: str) -> _T:
    if token not in table:
        raise CardError(f"unknown {what}; expected one of {', '.join(table)}")
    return table[token]


def _args(args: list[str], count: int, example: str) -> list[str]:
    if len(args) != count:
        raise CardError(f"this card has the wrong number of parts; a valid one reads {example}")
    return args


def _parse_purposes(token: str) -> tuple[Purpose, ...]:
    return _purposes(tuple(_lookup(_tokens(Purpose), p, "purpose") for p in token.split("+")))


def _parse_deid(token: str) -> bool:
    return _lookup(_DEID, token, "de-identified use")


def _parse_consent(args: list[str]) -> Card:
    kind, rest = (args[0], args[1:]) if args else ("", [])
    if kind == "EXPLICIT":
        purposes, deid = _args(rest, 2, "PSC1:CONSENT:EXPLICIT:CARE+TEACHING:DEID")
        return ExplicitConsentCard(_parse_purposes(purposes), _parse_deid(deid))
    if kind == "PARENTAL":
        purposes, deid, who = _args(rest, 3, "PSC1:CONSENT:PARENTAL:CARE:NODEID:PARENT")
        relationship = _lookup(_tokens(Relationship), who, "relationship")
        return ParentalConsentCard(_parse_purposes(purposes), _parse_deid(deid), relationship)
    if kind == "BEST-INTERESTS":
        _args(rest, 0, "PSC1:CONSENT:BEST-INTERESTS")
        return BestInterestsCard()
    if kind == "IMPLIED":
        (category,) = _args(rest, 1, "PSC1:CONSENT:IMPLIED:ENDOSCOPIC")
        return ImpliedConsentCard(_lookup(_tokens(ImpliedCategory), category, "category"))
    raise CardError("unknown consent kind; expected EXPLICIT, PARENTAL, BEST-INTERESTS or IMPLIED")


def _parse_body_site(args: list[str]) -> Card:
    code, side = _args(args, 2, "PSC1:BODYSITE:80248007:LEFT")
    return BodySiteCard(code, _lookup(_LATERALITY, side, "laterality"))


def parse_card(text: str) -> Card:
    """The card a scanned text stands for; raises CardError with a reason a person can act on."""
    if not text.startswith(PREFIX):
        if text[: len(PREFIX)].upper() == PREFIX:
            raise CardError("card text must be upper case: check the scanner's Caps Lock setting")
        if is_card_text(text):
            raise CardError("this card is for another PhotoSafe card version: print a new sheet")
        raise CardError("not a PhotoSafe command card (its text starts with PSC1:)")
    if len(text) > MAX_CARD_LENGTH:
        raise CardError(f"card text is longer than {MAX_CARD_LENGTH} characters")
    if _ALPHABET.fullmatch(text) is None:
        if text != text.upper():
            raise CardError("card text must be upper case: check the scanner's Caps Lock setting")
        raise CardError("card text may hold only A-Z, 0-9, ':', '+' and '-'")
    verb, *args = text[len(PREFIX) :].split(":")
    if verb == "CONSENT":
        return _parse_consent(args)
    if verb == "BODYSITE":
        return _parse_body_site(args)
    if verb in _SIMPLE:
        _args(args, 0, f"{PREFIX}{verb}")
        return _SIMPLE[verb][0]()
    raise CardError(f"unknown card; this station knows CONSENT, BODYSITE, {', '.join(_SIMPLE)}")


# --- Card to text, label and consent ---------------------------------------------------------


def card_text(card: Card) -> str:
    """The text to print in the card's barcode; parse_card(card_text(c)) == c."""
    match card:
        case ExplicitConsentCard(purposes, deid):
            body = f"CONSENT:EXPLICIT:{_purposes_token(purposes)}:{_DEID_TOKEN[deid]}"
        case ParentalConsentCard(purposes, deid, who):
            body = f"CONSENT:PARENTAL:{_purposes_token(purposes)}:{_DEID_TOKEN[deid]}:{_token(who)}"
        case BestInterestsCard():
            body = "CONSENT:BEST-INTERESTS"
        case ImpliedConsentCard(category):
            body = f"CONSENT:IMPLIED:{_token(category)}"
        case BodySiteCard(code, laterality):
            body = f"BODYSITE:{code}:{laterality.upper()}"
        case _:
            body = _VERB[type(card)]
    return PREFIX + body


def _purposes_token(purposes: tuple[Purpose, ...]) -> str:
    return "+".join(_token(p) for p in purposes)


_CATEGORY_LABEL = {
    ImpliedCategory.INTERNAL_STRUCTURES: "internal organs or structures",
    ImpliedCategory.PATHOLOGY_SLIDES: "pathology slides",
    ImpliedCategory.ENDOSCOPIC: "endoscopic or laparoscopic",
    ImpliedCategory.ORGAN_FUNCTION: "recording of organ function",
    ImpliedCategory.ULTRASOUND: "ultrasound",
    ImpliedCategory.XRAY: "X-ray",
}
_RELATIONSHIP_LABEL = {
    Relationship.PARENT: "parent",
    Relationship.GUARDIAN: "guardian",
    Relationship.OTHER: "other person with parental responsibility",
}


def _scope(purposes: tuple[Purpose, ...], deidentified_use: bool) -> str:
    deid = "de-identified use allowed" if deidentified_use else "no de-identified use"
    return f"{' + '.join(p.value for p in purposes)}, {deid}"


def card_label(card: Card) -> str:
    """The human-readable line printed under the card's barcode."""
    match card:
        case ExplicitConsentCard(purposes, deid):
            return f"Consent: explicit — {_scope(purposes, deid)}"
        case ParentalConsentCard(purposes, deid, who):
            return f"Consent: parental ({_RELATIONSHIP_LABEL[who]}) — {_scope(purposes, deid)}"
        case BestInterestsCard():
            return "Consent: best-interests decision — care only; scan the decision-maker's badge"
        case ImpliedConsentCard(category):
            return f"Consent: implied — {_CATEGORY_LABEL[category]} images, care only"
        case BodySiteCard(code, laterality):
            return f"Body site: SNOMED CT {code}, laterality {laterality}"
        case _:
            return _SIMPLE[_VERB[type(card)]][1]


def to_consent(card: ConsentCard) -> ExplicitConsent | ParentalConsent | ImpliedConsent:
    """The consent record a consent card stands for (best-interests needs a badge too)."""
    match card:
        case ExplicitConsentCard(purposes, deid):
            return ExplicitConsent(purposes=purposes, deidentified_use=deid)
        case ParentalConsentCard(purposes, deid, who):
            return ParentalConsent(purposes=purposes, deidentified_use=deid, decided_by=who)
        case ImpliedConsentCard(category):
            return ImpliedConsent(category=category)
        case _:
            assert_never(card)
