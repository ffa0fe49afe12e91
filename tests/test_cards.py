"""Command cards: the text format, its exact inverse, SNOMED CT checking, labels and consent."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from photosafe.protocol import consent
from photosafe.protocol.cards import (
    LATERALITIES,
    PREFIX,
    ApproveCard,
    BestInterestsCard,
    BodySiteCard,
    CancelCard,
    CaptureCard,
    Card,
    CardError,
    DiscardCard,
    DoneCard,
    ExplicitConsentCard,
    ImpliedConsentCard,
    IntimateCard,
    ParentalConsentCard,
    card_label,
    card_text,
    is_card_text,
    parse_card,
    snomed_concept_problem,
    to_consent,
    verhoeff_check_digit,
)
from photosafe.protocol.consent import ImpliedCategory, Purpose, Relationship

# Well-known SNOMED CT concept ids; each must pass the Verhoeff and partition checks.
KNOWN_CONCEPTS = [
    "38266002",  # entire body as a whole
    "39937001",  # skin structure
    "69536005",  # head structure
    "80248007",  # a breast structure
    "22298006",  # myocardial infarction
    "73211009",  # diabetes mellitus
    "404684003",  # clinical finding
    "123037004",  # body structure
    "138875005",  # the SNOMED CT root concept
]

EXAMPLES: list[tuple[str, Card]] = [
    (
        "PSC1:CONSENT:EXPLICIT:CARE+TEACHING:DEID",
        ExplicitConsentCard((Purpose.CARE, Purpose.TEACHING), deidentified_use=True),
    ),
    ("PSC1:CONSENT:EXPLICIT:CARE:NODEID", ExplicitConsentCard((Purpose.CARE,), False)),
    (
        "PSC1:CONSENT:EXPLICIT:CARE+PUBLICATION+TEACHING:NODEID",
        ExplicitConsentCard((Purpose.TEACHING, Purpose.PUBLICATION, Purpose.CARE), False),
    ),
    (
        "PSC1:CONSENT:PARENTAL:CARE:NODEID:GUARDIAN",
        ParentalConsentCard((Purpose.CARE,), False, Relationship.GUARDIAN),
    ),
    (
        "PSC1:CONSENT:PARENTAL:CARE+TEACHING:DEID:OTHER-PARENTAL-RESPONSIBILITY",
        ParentalConsentCard((Purpose.CARE, Purpose.TEACHING), True, Relationship.OTHER),
    ),
    ("PSC1:CONSENT:BEST-INTERESTS", BestInterestsCard()),
    ("PSC1:CONSENT:IMPLIED:ENDOSCOPIC", ImpliedConsentCard(ImpliedCategory.ENDOSCOPIC)),
    ("PSC1:CONSENT:IMPLIED:X-RAY", ImpliedConsentCard(ImpliedCategory.XRAY)),
    (
        "PSC1:CONSENT:IMPLIED:INTERNAL-STRUCTURES",
        ImpliedConsentCard(ImpliedCategory.INTERNAL_STRUCTURES),
    ),
    ("PSC1:BODYSITE:80248007:LEFT", BodySiteCard("80248007", "left")),
    ("PSC1:BODYSITE:39937001:NONE", BodySiteCard("39937001", "none")),
    ("PSC1:INTIMATE", IntimateCard()),
    ("PSC1:APPROVE", ApproveCard()),
    ("PSC1:DISCARD", DiscardCard()),
    ("PSC1:CAPTURE", CaptureCard()),
    ("PSC1:CANCEL", CancelCard()),
    ("PSC1:DONE", DoneCard()),
]


@pytest.mark.parametrize(("text", "card"), EXAMPLES)
def test_examples_parse_and_print_both_ways(text: str, card: Card) -> None:
    assert parse_card(text) == card
    assert card_text(card) == text


def test_card_text_uses_only_the_compact_alphabet() -> None:
    # Upper case, digits and : + - are all in QR alphanumeric mode and Code 128 code set A.
    for text, _ in EXAMPLES:
        assert re.fullmatch(r"[A-Z0-9:+-]+", text)


# --- Verhoeff and SNOMED CT ------------------------------------------------------------------


@pytest.mark.parametrize(("stem", "digit"), [("236", "3"), ("75872", "2"), ("12345", "1")])
def test_verhoeff_published_examples(stem: str, digit: str) -> None:
    assert verhoeff_check_digit(stem) == digit


@pytest.mark.parametrize("code", KNOWN_CONCEPTS)
def test_known_snomed_concepts_pass(code: str) -> None:
    assert snomed_concept_problem(code) is None
    assert verhoeff_check_digit(code[:-1]) == code[-1]


@pytest.mark.parametrize("code", KNOWN_CONCEPTS)
def test_every_single_digit_change_fails(code: str) -> None:
    for position, original in enumerate(code):
        for digit in "0123456789":
            if digit != original:
                changed = code[:position] + digit + code[position + 1 :]
                assert snomed_concept_problem(changed) is not None, changed


@given(st.sampled_from(KNOWN_CONCEPTS), st.data())
def test_adjacent_transpositions_fail(code: str, data: st.DataObject) -> None:
    i = data.draw(st.integers(0, len(code) - 2))
    swapped = code[:i] + code[i + 1] + code[i] + code[i + 2 :]
    if swapped != code:
        assert snomed_concept_problem(swapped) is not None


@pytest.mark.parametrize(
    ("code", "reason"),
    [
        ("12345", "6 to 18 digits"),
        ("1" * 19, "6 to 18 digits"),
        ("038266002", "does not start with 0"),
        ("3826600X", "6 to 18 digits"),
        ("٣٨٢٦٦٠٠٢", "6 to 18 digits"),  # Arabic-Indic digits are not ASCII digits
        ("38266003", "check digit"),
    ],
)
def test_bad_snomed_codes(code: str, reason: str) -> None:
    problem = snomed_concept_problem(code)
    assert problem is not None
    assert reason in problem


def test_description_ids_are_not_concepts() -> None:
    # Partition 01 is a description id: a valid SCTID, but not a body site.
    description = "3826601" + verhoeff_check_digit("3826601")
    problem = snomed_concept_problem(description)
    assert problem is not None
    assert "not a concept id" in problem


# --- Refusals --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("psc1:done", "upper case"),
        ("PSC1:consent:EXPLICIT:CARE:DEID", "upper case"),
        ("PSC2:DONE", "another PhotoSafe card version"),
        ("HELLO", "not a PhotoSafe command card"),
        ("PSC1:", "unknown card"),
        ("PSC1:TELEPORT", "unknown card"),
        ("PSC1:DONE:NOW", "wrong number of parts"),
        ("PSC1:CONSENT", "unknown consent kind"),
        ("PSC1:CONSENT:VERBAL:CARE:DEID", "unknown consent kind"),
        ("PSC1:CONSENT:EXPLICIT:CARE", "PSC1:CONSENT:EXPLICIT:CARE+TEACHING:DEID"),
        ("PSC1:CONSENT:EXPLICIT:CARE:DEID:PARENT", "wrong number of parts"),
        ("PSC1:CONSENT:EXPLICIT::DEID", "unknown purpose"),
        ("PSC1:CONSENT:EXPLICIT:CARE++TEACHING:DEID", "unknown purpose"),
        ("PSC1:CONSENT:EXPLICIT:MARKETING:DEID", "unknown purpose"),
        ("PSC1:CONSENT:EXPLICIT:CARE:MAYBE", "DEID, NODEID"),
        ("PSC1:CONSENT:PARENTAL:CARE:DEID:NEIGHBOUR", "unknown relationship"),
        ("PSC1:CONSENT:BEST-INTERESTS:DR-WHO", "wrong number of parts"),
        ("PSC1:CONSENT:IMPLIED:SELFIE", "unknown category"),
        ("PSC1:CONSENT:IMPLIED", "wrong number of parts"),
        ("PSC1:BODYSITE:80248007:UP", "LEFT, RIGHT, BILATERAL, NONE"),
        ("PSC1:BODYSITE:80248008:LEFT", "check digit"),
        ("PSC1:BODYSITE:80248007", "wrong number of parts"),
        ("PSC1:DONE ", "only A-Z"),
        ("PSC1:DONE_", "only A-Z"),
        ("PSC1:" + "A" * 200, "longer than"),
    ],
)
def test_refusals_say_what_to_do(text: str, reason: str) -> None:
    with pytest.raises(CardError) as caught:
        parse_card(text)
    assert reason in str(caught.value)


def test_purposes_are_normalised_sorted_and_unique() -> None:
    card = parse_card("PSC1:CONSENT:EXPLICIT:TEACHING+CARE+TEACHING:DEID")
    assert card == ExplicitConsentCard((Purpose.CARE, Purpose.TEACHING), True)
    assert card_text(card) == "PSC1:CONSENT:EXPLICIT:CARE+TEACHING:DEID"


def test_cards_cannot_be_built_invalid() -> None:
    with pytest.raises(CardError, match="at least one purpose"):
        ExplicitConsentCard((), True)
    with pytest.raises(CardError, match="check digit"):
        BodySiteCard("80248008", "left")
    with pytest.raises(CardError, match="laterality"):
        BodySiteCard("80248007", "up")  # type: ignore[arg-type]


def test_is_card_text_recognises_any_version_and_case() -> None:
    assert is_card_text("PSC1:DONE")
    assert is_card_text("psc1:done")
    assert is_card_text("PSC7:WHATEVER")
    assert not is_card_text("PSC:DONE")
    assert not is_card_text("STAFF-123456")


# --- Labels and consent ----------------------------------------------------------------------


def test_labels() -> None:
    assert (
        card_label(ExplicitConsentCard((Purpose.CARE, Purpose.TEACHING), True))
        == "Consent: explicit — care + teaching, de-identified use allowed"
    )
    assert card_label(ParentalConsentCard((Purpose.CARE,), False, Relationship.PARENT)) == (
        "Consent: parental (parent) — care, no de-identified use"
    )
    assert "X-ray" in card_label(ImpliedConsentCard(ImpliedCategory.XRAY))
    assert "80248007" in card_label(BodySiteCard("80248007", "left"))
    labels = [card_label(card) for _, card in EXAMPLES]
    assert len(set(labels)) == len(labels)  # every card reads differently on the sheet


def test_to_consent_carries_everything() -> None:
    explicit = to_consent(ExplicitConsentCard((Purpose.TEACHING, Purpose.CARE), True))
    assert explicit == consent.ExplicitConsent(
        purposes=(Purpose.CARE, Purpose.TEACHING), deidentified_use=True
    )
    parental = to_consent(ParentalConsentCard((Purpose.CARE,), False, Relationship.GUARDIAN))
    assert isinstance(parental, consent.ParentalConsent)
    assert parental.decided_by is Relationship.GUARDIAN
    implied = to_consent(ImpliedConsentCard(ImpliedCategory.ULTRASOUND))
    assert implied == consent.ImpliedConsent(category=ImpliedCategory.ULTRASOUND)
    assert consent.summary(implied).startswith("implied by consent to the procedure")


# --- Properties ------------------------------------------------------------------------------

purposes = st.lists(st.sampled_from(Purpose), min_size=1).map(tuple)
snomed_codes = st.builds(
    lambda head, partition: head + partition + verhoeff_check_digit(head + partition),
    st.from_regex(r"[1-9][0-9]{3,14}", fullmatch=True),
    st.sampled_from(["00", "10"]),
)
cards: st.SearchStrategy[Card] = st.one_of(
    st.builds(ExplicitConsentCard, purposes, st.booleans()),
    st.builds(ParentalConsentCard, purposes, st.booleans(), st.sampled_from(Relationship)),
    st.builds(BestInterestsCard),
    st.builds(ImpliedConsentCard, st.sampled_from(ImpliedCategory)),
    st.builds(BodySiteCard, snomed_codes, st.sampled_from(LATERALITIES)),
    st.sampled_from(
        [IntimateCard(), ApproveCard(), DiscardCard(), CaptureCard(), CancelCard(), DoneCard()]
    ),
)


@given(cards)
def test_round_trip(card: Card) -> None:
    text = card_text(card)
    assert text.startswith(PREFIX)
    assert parse_card(text) == card
    assert card_text(parse_card(text)) == text
    assert card_label(card)


FRAGMENTS = [
    "PSC1:", "psc1:", "PSC2:", "CONSENT", "EXPLICIT", "PARENTAL", "IMPLIED", "BEST-INTERESTS",
    "BODYSITE", "CARE", "TEACHING", "PUBLICATION", "+", ":", "DEID", "NODEID", "PARENT",
    "X-RAY", "LEFT", "80248007", "9434765919", "DONE", "0", "-", " ", "\x1d", "é",
]  # fmt: skip
card_like_text = st.one_of(
    st.text(max_size=200),
    st.lists(st.sampled_from(FRAGMENTS), max_size=12).map("".join),
)


@given(card_like_text)
def test_parse_card_raises_only_card_error_and_never_echoes(text: str) -> None:
    try:
        card = parse_card(text)
    except CardError as exc:
        for run in re.findall(r"[0-9]{10,}", text):
            assert run not in str(exc)
    else:
        assert parse_card(card_text(card)) == card
