"""Consent: what the patient (or whoever decided for them) agreed to, and whether a station may
accept it.

MISSION.md requirement 2: the record says what the image is for, whether it may be used
de-identified, and on what basis. Implied consent covers six categories of image only, and only at
a station whose profile allows them (a theatre stack, never a ward wall).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class Purpose(StrEnum):
    """What the image may be used for. Care is the patient's own treatment."""

    CARE = "care"
    TEACHING = "teaching"
    PUBLICATION = "publication"  # publication or research


class ImpliedCategory(StrEnum):
    """The only images consent to a procedure covers without separate consent."""

    INTERNAL_STRUCTURES = "internal-structures"
    PATHOLOGY_SLIDES = "pathology-slides"
    ENDOSCOPIC = "endoscopic"  # endoscopic or laparoscopic
    ORGAN_FUNCTION = "organ-function"
    ULTRASOUND = "ultrasound"
    XRAY = "x-ray"


class Relationship(StrEnum):
    """Who held parental responsibility and gave consent for a child."""

    PARENT = "parent"
    GUARDIAN = "guardian"
    OTHER = "other-parental-responsibility"


class StationKind(StrEnum):
    WARD = "ward"
    THEATRE = "theatre"


_MODEL = ConfigDict(strict=True, extra="forbid", frozen=True)
_STAFF_ID = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$")


def _sorted_unique(purposes: tuple[Purpose, ...]) -> tuple[Purpose, ...]:
    # One meaning, one byte form: the manifest is signed as canonical JSON.
    if not purposes:
        raise ValueError("at least one purpose is required")
    return tuple(sorted(set(purposes)))


class _WithPurposes(BaseModel):
    model_config = _MODEL
    purposes: tuple[Purpose, ...] = Field(
        description="What the image may be used for (sorted, unique)."
    )
    deidentified_use: bool = Field(
        description="Whether the image may be used for the purposes above once de-identified."
    )

    @field_validator("purposes")
    @classmethod
    def _purposes(cls, value: tuple[Purpose, ...]) -> tuple[Purpose, ...]:
        return _sorted_unique(value)


class ExplicitConsent(_WithPurposes):
    """The patient's own consent."""

    kind: Literal["explicit"] = "explicit"


class ParentalConsent(_WithPurposes):
    """Consent for a child who cannot consent, by a person with parental responsibility."""

    kind: Literal["parental"] = "parental"
    decided_by: Relationship = Field(description="The relationship of the person who consented.")


class BestInterestsConsent(BaseModel):
    """A documented best-interests decision for an adult who lacks capacity. Care only."""

    model_config = _MODEL
    kind: Literal["best-interests"] = "best-interests"
    purposes: tuple[Purpose, ...] = Field(
        default=(Purpose.CARE,), description="Always exactly (care,)."
    )
    deidentified_use: Literal[False] = Field(
        default=False, description="Never: a best-interests decision covers the patient's care."
    )
    decided_by: Annotated[str, _STAFF_ID] = Field(
        description="Staff id of the clinician who made and documented the decision."
    )

    @field_validator("purposes")
    @classmethod
    def _care_only(cls, value: tuple[Purpose, ...]) -> tuple[Purpose, ...]:
        if tuple(value) != (Purpose.CARE,):
            raise ValueError(
                "a best-interests decision covers care only; teaching or publication needs "
                "the patient's own consent"
            )
        return value


class ImpliedConsent(BaseModel):
    """Consent implied by consent to the procedure, for one of six image categories."""

    model_config = _MODEL
    kind: Literal["implied"] = "implied"
    category: ImpliedCategory = Field(description="Which of the six implied-consent categories.")
    purposes: tuple[Purpose, ...] = Field(
        default=(Purpose.CARE,), description="Always exactly (care,)."
    )
    deidentified_use: Literal[False] = Field(
        default=False, description="Never: implied consent covers the patient's care only."
    )

    @field_validator("purposes")
    @classmethod
    def _care_only(cls, value: tuple[Purpose, ...]) -> tuple[Purpose, ...]:
        if tuple(value) != (Purpose.CARE,):
            raise ValueError("implied consent covers care only")
        return value


AnyConsent = ExplicitConsent | ParentalConsent | BestInterestsConsent | ImpliedConsent
Consent = Annotated[AnyConsent, Field(discriminator="kind")]


class StationProfile(BaseModel):
    """What kind of station this is, which decides the consent it may accept."""

    model_config = _MODEL
    kind: StationKind = Field(description="ward (explicit consent) or theatre (may use implied).")
    implied_categories: tuple[ImpliedCategory, ...] = Field(
        default=(),
        description="Implied-consent categories this station may record; empty on a ward.",
    )

    @field_validator("implied_categories")
    @classmethod
    def _sorted(cls, value: tuple[ImpliedCategory, ...]) -> tuple[ImpliedCategory, ...]:
        return tuple(sorted(set(value)))

    @model_validator(mode="after")
    def _ward_has_no_implied(self) -> StationProfile:
        if self.kind is StationKind.WARD and self.implied_categories:
            raise ValueError("a ward station may not accept implied consent")
        return self


def refusal_reason(consent: AnyConsent, profile: StationProfile) -> str | None:
    """Why this station must not accept this consent, or None when it may."""
    if isinstance(consent, ImpliedConsent):
        if profile.kind is not StationKind.THEATRE:
            return (
                "implied consent is only accepted at a theatre station: "
                "scan an explicit consent card"
            )
        if consent.category not in profile.implied_categories:
            return (
                f"implied consent for {consent.category.value} images is not enabled at this "
                "station: scan an explicit consent card"
            )
    return None


def summary(consent: AnyConsent) -> str:
    """One line a person reads on a display or in the record: basis, purposes, de-identified use."""
    purposes = ", ".join(p.value for p in consent.purposes)
    deid = "de-identified use allowed" if consent.deidentified_use else "no de-identified use"
    basis = {
        "explicit": "patient's explicit consent",
        "parental": "consent by a person with parental responsibility",
        "best-interests": "best-interests decision",
        "implied": "implied by consent to the procedure",
    }[consent.kind]
    return f"{basis}; for {purposes}; {deid}"
