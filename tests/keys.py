"""Test identities built with the real provisioning PKI, made once per test session."""

from __future__ import annotations

import datetime as dt
import hashlib
import uuid
from dataclasses import dataclass
from functools import cache

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from photosafe.protocol.consent import ExplicitConsent, Purpose, StationKind, StationProfile
from photosafe.protocol.manifest import (
    ImageInfo,
    Manifest,
    PatientRef,
    PatientScheme,
    StaffRef,
    StationRef,
)
from photosafe.provisioning import pki


@dataclass(frozen=True)
class Device:
    device_id: str
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate


@dataclass(frozen=True)
class Pki:
    ca: pki.Authority
    other_ca: pki.Authority
    devices: dict[str, Device]
    recipient: X25519PrivateKey
    signing: Ed25519PrivateKey

    def device(self, device_id: str) -> Device:
        return self.devices[device_id]


def _device(ca: pki.Authority, device_id: str, **kwargs: object) -> Device:
    key = pki.new_key()
    cert = pki.issue_client_certificate(ca, device_id, key.public_key(), **kwargs)  # type: ignore[arg-type]
    return Device(device_id, key, cert)


@cache
def shared_pki() -> Pki:
    ca = pki.new_authority("Test Hospital Device CA")
    other = pki.new_authority("Some Other CA")
    long_ago = dt.datetime.now(dt.UTC) - dt.timedelta(days=800)
    devices = {
        "ward-a-01": _device(ca, "ward-a-01"),
        "ward-a-02": _device(ca, "ward-a-02"),
        "expired-01": _device(ca, "expired-01", days=30, now=long_ago),
        "foreign-01": _device(other, "foreign-01"),
    }
    return Pki(ca, other, devices, X25519PrivateKey.generate(), Ed25519PrivateKey.generate())


def manifest_for(
    image: bytes, device_id: str = "ward-a-01", capture_id: uuid.UUID | None = None
) -> Manifest:
    return Manifest(
        capture_id=capture_id or uuid.uuid4(),
        device_id=device_id,
        captured_at=dt.datetime(2026, 11, 25, 9, 30, tzinfo=dt.UTC),
        station=StationRef(
            device_id=device_id,
            site="Test General",
            location="Dermatology OPD",
            profile=StationProfile(kind=StationKind.WARD),
        ),
        patient=PatientRef(scheme=PatientScheme.NHS, identifier="9434765919", source="nhs-number"),
        operator=StaffRef(staff_id="123456"),
        consent=ExplicitConsent(purposes=(Purpose.CARE,), deidentified_use=False),
        image=ImageInfo(
            media_type="image/jpeg",
            width=64,
            height=48,
            size=len(image),
            sha256=hashlib.sha256(image).hexdigest(),
        ),
    )
