"""The manifest: everything that travels with one image, inside the sealed envelope only.

It is the full audit record of who took which image of whom, when, under what consent (MISSION.md
requirement 7). It never leaves the station in clear: the device signs it and seals it with the
image. The patient-safety rules that can be checked from the record alone are validators here, so
the gateway refuses a record that breaks them even if a station were wrong.
"""

from __future__ import annotations

import datetime as dt
import uuid
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from photosafe.protocol import canonical
from photosafe.protocol.consent import Consent, StationProfile, refusal_reason

_MODEL = ConfigDict(strict=True, extra="forbid", frozen=True, hide_input_in_errors=True)

StaffId = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$")]
DeviceId = Annotated[
    str, Field(min_length=1, max_length=63, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
]
Sha256Hex = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]


class PatientScheme(StrEnum):
    NHS = "nhs"
    MRN = "mrn"


class PatientRef(BaseModel):
    """Whose record the image belongs to, as read from the wristband."""

    model_config = _MODEL
    scheme: PatientScheme = Field(description="nhs: NHS number; mrn: a local record number.")
    identifier: str = Field(min_length=1, max_length=64, description="NHS number or MRN.")
    authority: str | None = Field(
        default=None, max_length=64, description="Issuer of an MRN; None for NHS numbers."
    )
    source: Literal["nhs-number", "gs1-gsrn", "mrn"] = Field(
        description="How the identifier was read: a bare NHS number, a GS1 GSRN or an MRN."
    )
    name: str | None = Field(
        default=None, max_length=200, description="Name from the wristband, for read-back."
    )
    birth_date: dt.date | None = Field(
        default=None, description="Date of birth from the wristband, for read-back."
    )

    def __repr__(self) -> str:
        return f"PatientRef(scheme={self.scheme.value}, <redacted>)"

    __str__ = __repr__


class StaffRef(BaseModel):
    model_config = _MODEL
    staff_id: StaffId = Field(description="Identifier from the staff badge.")


class StationRef(BaseModel):
    """Where the image was taken."""

    model_config = _MODEL
    device_id: DeviceId = Field(description="The station's certificate CN.")
    site: str = Field(min_length=1, max_length=100, description="Hospital site.")
    location: str = Field(min_length=1, max_length=100, description="Ward or theatre.")
    profile: StationProfile = Field(description="Station kind and its implied-consent scope.")


class Laterality(StrEnum):
    LEFT = "left"
    RIGHT = "right"
    BILATERAL = "bilateral"
    NONE = "none"


class BodySite(BaseModel):
    model_config = _MODEL
    snomed_code: str = Field(pattern=r"^[1-9][0-9]{5,17}$", description="SNOMED CT concept id.")
    label: str | None = Field(default=None, max_length=100, description="Display term.")
    laterality: Laterality = Field(description="Which side, if the site has sides.")


class ImageInfo(BaseModel):
    model_config = _MODEL
    media_type: Literal["image/jpeg"] = Field(description="The image's format.")
    width: int = Field(gt=0, le=65535, description="Pixels.")
    height: int = Field(gt=0, le=65535, description="Pixels.")
    size: int = Field(gt=0, description="Bytes of the image inside the envelope.")
    sha256: Sha256Hex = Field(description="SHA-256 of those bytes, lowercase hex.")


class QualityFigures(BaseModel):
    """What the station's quality gate measured (MISSION.md requirement 6)."""

    model_config = _MODEL
    focus: float = Field(ge=0, description="Variance of the Laplacian on a small grey image.")
    shadows_clipped: float = Field(
        ge=0, le=1, description="Fraction of pixels at or below grey 40 of 255."
    )
    highlights_clipped: float = Field(
        ge=0, le=1, description="Fraction of pixels at or above grey 248 of 255."
    )


class CameraInfo(BaseModel):
    model_config = _MODEL
    model: str = Field(max_length=100, description="Camera model.")
    exposure_time_us: int | None = Field(default=None, ge=0, description="Exposure time.")
    analogue_gain: float | None = Field(default=None, ge=0, description="Sensor gain.")
    lens_position: float | None = Field(default=None, description="Focus, dioptres.")


class Manifest(BaseModel):
    """The record of one capture. Version 1."""

    model_config = _MODEL
    version: Literal[1] = Field(default=1, description="Manifest format version.")
    capture_id: uuid.UUID = Field(description="Unique per capture; also in the header.")
    device_id: DeviceId = Field(description="Equals the header's device and the certificate.")
    captured_at: AwareDatetime = Field(description="When the shutter fired, with UTC offset.")
    station: StationRef
    patient: PatientRef
    operator: StaffRef = Field(description="Who took the image.")
    chaperone: StaffRef | None = Field(default=None, description="Present for intimate images.")
    consent: Consent
    body_site: BodySite | None = None
    intimate: bool = Field(default=False, description="An intimate image (MISSION.md rule 3).")
    patient_approved: bool = Field(
        default=False, description="The patient saw and approved the image before it was kept."
    )
    image: ImageInfo
    quality: QualityFigures | None = None
    camera: CameraInfo | None = None

    @model_validator(mode="after")
    def _safety_rules(self) -> Manifest:
        if self.station.device_id != self.device_id:
            raise ValueError("station.device_id differs from device_id")
        reason = refusal_reason(self.consent, self.station.profile)
        if reason:
            raise ValueError(reason)
        if self.intimate:
            if self.chaperone is None:
                raise ValueError("an intimate image needs a chaperone")
            if self.chaperone.staff_id == self.operator.staff_id:
                raise ValueError("the chaperone must not be the operator")
            if not self.patient_approved:
                raise ValueError("an intimate image needs the patient's approval")
        return self

    def to_bytes(self) -> bytes:
        """The canonical JSON the device signs and seals."""
        return canonical.dumps(self.model_dump(mode="json"))

    @classmethod
    def from_bytes(cls, data: bytes) -> Manifest:
        """Parse a manifest; raises pydantic.ValidationError or ValueError."""
        return cls.model_validate_json(data)
