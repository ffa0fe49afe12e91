"""Write the wire-protocol test vectors in this folder (docs/protocol.md, section 22).

Run by hand from the repository root, never by the test suite:

    .venv/bin/python tests/vectors/make_vectors.py               # every file
    .venv/bin/python tests/vectors/make_vectors.py --only fleet  # only the fleet vectors

A full run rewrites every file here. The gateway recipient key, the gateway signing key and the
device key are derived from fixed seeds, and the image, manifest, capture id and times are fixed,
so key ids, header bytes and manifest bytes come out the same each time. The CA key, certificate
serial numbers, ECDSA signatures and HPKE ephemeral keys are random, so the certificates, sealed
captures and acks change on every run: after regenerating, update the examples in
docs/protocol.md that tests/test_vectors.py compares with these files, and commit both together.

The fleet vectors (fleet signing key, signed config messages, station statuses: docs/protocol.md
sections 18, 19 and 22) are fully deterministic: the fleet key derives from a fixed seed, Ed25519
signatures are deterministic and every time is fixed. `--only fleet` rewrites just those files
and the `fleet` part of vectors.json (plus its fleet entries in `files`), leaving the CA,
certificates, captures and acks alone.

All private keys written here are TEST-ONLY and public. Never deploy them.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import hashlib
import io
import json
import struct
import uuid
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.hpke import AEAD, KDF, KEM, Suite
from PIL import Image, ImageDraw

from photosafe.protocol import ack, canonical, envelope, fleet
from photosafe.protocol.consent import ExplicitConsent, Purpose, StationKind, StationProfile
from photosafe.protocol.manifest import (
    BodySite,
    CameraInfo,
    ImageInfo,
    Laterality,
    Manifest,
    PatientRef,
    PatientScheme,
    QualityFigures,
    StaffRef,
    StationRef,
)
from photosafe.provisioning import pki

OUT = Path(__file__).resolve().parent

DEVICE_ID = "vector-device-01"
OTHER_DEVICE_ID = "vector-device-02"
CAPTURE_ID = uuid.UUID("3f2a9c1e-7b4d-4e8a-9c21-5d6e7f809a1b")
ISSUED = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)  # certificates: 2025-12-31T23:55Z ...
VALID_DAYS = 7305  # ... to 2046-01-01T00:00Z (20 years, five of them leap years)
CAPTURED_AT = dt.datetime(2026, 11, 25, 9, 30, 0, 125000, tzinfo=dt.UTC)
CREATED = dt.datetime(2026, 11, 25, 9, 30, 1, tzinfo=dt.UTC)
GATEWAY_TIME = dt.datetime(2026, 11, 25, 9, 30, 2, 250000, tzinfo=dt.UTC)
OPEN_AT = dt.datetime(2026, 11, 25, 10, 0, tzinfo=dt.UTC)
RECORD = "PS-2026-000123"
IMAGE_SIZE = (160, 120)

_U32 = struct.Struct(">I")
_U16 = struct.Struct(">H")
_B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
_HPKE_SUITES = {
    envelope.CHACHA20: Suite(KEM.X25519, KDF.HKDF_SHA256, AEAD.CHACHA20_POLY1305),
    envelope.AES256GCM: Suite(KEM.X25519, KDF.HKDF_SHA256, AEAD.AES_256_GCM),
}


def _seed(label: str) -> bytes:
    return hashlib.sha256(f"photosafe test vector, test only: {label}".encode()).digest()


def _iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


_WRITTEN: list[str] = []


def _write(name: str, data: bytes) -> str:
    (OUT / name).write_bytes(data)
    _WRITTEN.append(name)
    return name


def _raw_public(key: X25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _pkcs8(key: X25519PrivateKey | Ed25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def make_image() -> bytes:
    """A small deterministic JPEG: gradients and shapes, no EXIF."""
    width, height = IMAGE_SIZE
    img = Image.new("RGB", IMAGE_SIZE)
    img.putdata(
        [
            ((x * 255) // (width - 1), (y * 255) // (height - 1), ((x ^ y) * 7) & 0xFF)
            for y in range(height)
            for x in range(width)
        ]
    )
    draw = ImageDraw.Draw(img)
    draw.ellipse((40, 20, 120, 100), outline=(255, 255, 255), width=3)
    draw.rectangle((8, 8, 40, 30), fill=(20, 40, 200))
    draw.line((0, height - 1, width - 1, 0), fill=(0, 0, 0), width=2)
    out = io.BytesIO()
    img.save(out, format="JPEG", quality=80, optimize=False, progressive=False)
    return out.getvalue()


def make_manifest(image: bytes, device_id: str = DEVICE_ID) -> Manifest:
    return Manifest(
        capture_id=CAPTURE_ID,
        device_id=device_id,
        captured_at=CAPTURED_AT,
        station=StationRef(
            device_id=device_id,
            site="Test General Hospital",
            location="Dermatology OPD",
            profile=StationProfile(kind=StationKind.WARD),
        ),
        patient=PatientRef(
            scheme=PatientScheme.NHS,
            identifier="9990000018",  # a 999 test-range NHS number with a valid check digit
            source="nhs-number",
            name="Zoë TEST-PATIENT",  # non-ASCII on purpose: canonical JSON escapes it
            birth_date=dt.date(1970, 1, 1),
        ),
        operator=StaffRef(staff_id="N123456"),
        chaperone=StaffRef(staff_id="N654321"),
        consent=ExplicitConsent(
            purposes=(Purpose.TEACHING, Purpose.CARE), deidentified_use=True
        ),  # sorted to care, teaching
        body_site=BodySite(snomed_code="40983000", label="Upper arm", laterality=Laterality.LEFT),
        intimate=False,
        patient_approved=True,
        image=ImageInfo(
            media_type="image/jpeg",
            width=IMAGE_SIZE[0],
            height=IMAGE_SIZE[1],
            size=len(image),
            sha256=_sha256(image),
        ),
        quality=QualityFigures(focus=412.5, shadows_clipped=1.2e-05, highlights_clipped=0.0),
        camera=CameraInfo(
            model="imx708", exposure_time_us=8000, analogue_gain=1.5, lens_position=3.25
        ),
    )


@dataclasses.dataclass(frozen=True)
class Parts:
    magic: bytes
    header: bytes
    ciphertext: bytes

    @classmethod
    def of(cls, sealed: bytes) -> Parts:
        start = len(envelope.MAGIC) + 4
        (length,) = _U32.unpack_from(sealed, len(envelope.MAGIC))
        return cls(
            sealed[: len(envelope.MAGIC)], sealed[start : start + length], sealed[start + length :]
        )

    def join(self) -> bytes:
        return self.magic + _U32.pack(len(self.header)) + self.header + self.ciphertext


def hand_seal(
    *,
    header: bytes,
    manifest: bytes,
    image: bytes,
    signer: ec.EllipticCurvePrivateKey,
    cert: x509.Certificate,
    recipient: X25519PublicKey,
    suite: envelope.SuiteName = envelope.CHACHA20,
    manifest_length: int | None = None,
) -> bytes:
    """Build a sealed capture from the spec alone, for vectors `seal` rightly refuses to make."""
    signed = (
        envelope.SIGNATURE_CONTEXT
        + _U32.pack(len(header))
        + header
        + _U32.pack(len(manifest))
        + manifest
    )
    signature = signer.sign(signed, ec.ECDSA(hashes.SHA256()))
    der = cert.public_bytes(serialization.Encoding.DER)
    inner = (
        _U32.pack(len(manifest) if manifest_length is None else manifest_length)
        + manifest
        + _U16.pack(len(signature))
        + signature
        + _U16.pack(len(der))
        + der
        + image
    )
    ciphertext = _HPKE_SUITES[suite].encrypt(inner, recipient, info=header)
    return envelope.MAGIC + _U32.pack(len(header)) + header + ciphertext


def header_for(
    recipient: X25519PublicKey,
    suite: envelope.SuiteName = envelope.CHACHA20,
    device_id: str = DEVICE_ID,
) -> bytes:
    return envelope.Header(
        suite=suite,
        kid=envelope.key_id(recipient),
        device=device_id,
        capture=CAPTURE_ID,
        created=CREATED,
    ).to_bytes()


def inner_layout(sealed: bytes, recipient: X25519PrivateKey) -> dict[str, int]:
    parts = Parts.of(sealed)
    suite = json.loads(parts.header)["suite"]
    plain = _HPKE_SUITES[suite].decrypt(parts.ciphertext, recipient, info=parts.header)
    (manifest_len,) = _U32.unpack_from(plain, 0)
    offset = 4 + manifest_len
    (sig_len,) = _U16.unpack_from(plain, offset)
    offset += 2 + sig_len
    (cert_len,) = _U16.unpack_from(plain, offset)
    offset += 2 + cert_len
    return {
        "manifest_length": manifest_len,
        "signature_length": sig_len,
        "certificate_length": cert_len,
        "image_length": len(plain) - offset,
        "plaintext_length": len(plain),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument(
        "--only",
        choices=["fleet"],
        help="rewrite only these vectors (and their part of vectors.json)",
    )
    if parser.parse_args(argv).only == "fleet":
        write_fleet_only()
    else:
        write_all()
    print(f"wrote {len(_WRITTEN)} files to {OUT}")


def _recipient_key() -> X25519PrivateKey:
    return X25519PrivateKey.from_private_bytes(_seed("gateway recipient key"))


def _write_index(index: dict[str, Any]) -> None:
    _write("vectors.json", json.dumps(index, indent=2, sort_keys=True).encode() + b"\n")


def write_fleet_only() -> None:
    """The fleet vectors, merged into the existing vectors.json; nothing else changes."""
    index = json.loads((OUT / "vectors.json").read_text(encoding="utf-8"))
    files, section = fleet_vectors(_recipient_key().public_key())
    index["files"].update(files)
    index["fleet"] = section
    _write_index(index)


def write_all() -> None:
    # Keys and certificates.
    ca = pki.new_authority("PhotoSafe test-vector device CA", days=VALID_DAYS, now=ISSUED)
    foreign_ca = pki.new_authority("Some other CA", days=VALID_DAYS, now=ISSUED)
    scalar = int.from_bytes(_seed("device key")) % (_P256_ORDER - 1) + 1
    device_key = ec.derive_private_key(scalar, ec.SECP256R1())
    device_cert = pki.issue_client_certificate(
        ca, DEVICE_ID, device_key.public_key(), days=VALID_DAYS, now=ISSUED
    )
    other_key = pki.new_key()
    other_cert = pki.issue_client_certificate(
        ca, OTHER_DEVICE_ID, other_key.public_key(), days=VALID_DAYS, now=ISSUED
    )
    foreign_cert = pki.issue_client_certificate(
        foreign_ca, DEVICE_ID, device_key.public_key(), days=VALID_DAYS, now=ISSUED
    )
    crl = pki.revocation_list(ca, [device_cert.serial_number], now=ISSUED, days=VALID_DAYS)
    recipient = _recipient_key()
    signing = Ed25519PrivateKey.from_private_bytes(_seed("gateway signing key"))
    recipient_pub = recipient.public_key()

    files = {
        "device_ca": _write("device-ca.crt.pem", pki.cert_pem(ca.cert)),
        "device_key": _write("device.key.pem", pki.key_pem(device_key)),
        "device_cert": _write("device.crt.pem", pki.cert_pem(device_cert)),
        "crl_revoking_device": _write("crl-revoking-device.pem", pki.crl_pem(crl)),
        "recipient_key": _write("gateway-recipient.key.pem", _pkcs8(recipient)),
        "recipient_pub": _write(
            "gateway-recipient.pub.pem",
            recipient_pub.public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            ),
        ),
        "signing_key": _write("gateway-signing.key.pem", _pkcs8(signing)),
        "signing_pub": _write(
            "gateway-signing.pub.pem",
            signing.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            ),
        ),
    }

    # The image, the manifest and one capture per suite, made by the product's own code.
    image = make_image()
    manifest = make_manifest(image)
    manifest_bytes = manifest.to_bytes()
    files["image"] = _write("image.jpg", image)
    files["manifest"] = _write("manifest.json", manifest_bytes)
    captures: list[dict[str, Any]] = []
    sealed_by_suite: dict[str, bytes] = {}
    for suite, name in (
        (envelope.CHACHA20, "capture-chacha20.bin"),
        (envelope.AES256GCM, "capture-aes256gcm.bin"),
    ):
        sealed = envelope.seal(
            manifest,
            image,
            device_key=device_key,
            device_cert=device_cert,
            recipient=recipient_pub,
            suite=suite,
            created=CREATED,
        )
        sealed_by_suite[suite] = sealed
        _write(name, sealed)
        header = Parts.of(sealed).header
        captures.append(
            {
                "file": name,
                "suite": suite,
                "sha256": _sha256(sealed),
                "length": len(sealed),
                "header_length": len(header),
                "header": header.decode("ascii"),
                "kid": envelope.key_id(recipient_pub),
                "device_id": DEVICE_ID,
                "capture_id": str(CAPTURE_ID),
                "manifest_sha256": _sha256(manifest_bytes),
                "image_sha256": _sha256(image),
                "enc_hex": Parts.of(sealed).ciphertext[:32].hex(),
                "inner": inner_layout(sealed, recipient),
            }
        )
    chacha = sealed_by_suite[envelope.CHACHA20]
    aes = sealed_by_suite[envelope.AES256GCM]

    # The gateway's receipt for the ChaCha20 capture.
    receipt = ack.make_receipt(
        signing_key=signing,
        device=DEVICE_ID,
        capture=CAPTURE_ID,
        sealed=chacha,
        status=ack.AckStatus.STORED,
        record=RECORD,
        now=GATEWAY_TIME,
    )
    ack_bytes = ack.sign(receipt, signing)
    _write("ack-stored.json", ack_bytes)
    acks = [
        {
            "file": "ack-stored.json",
            "for_capture": "capture-chacha20.bin",
            "device_id": DEVICE_ID,
            "signing_key_id": ack.signing_key_id(signing.public_key()),
            "receipt": receipt.model_dump(mode="json"),
            "receipt_bytes": canonical.dumps(receipt.model_dump(mode="json")).decode("ascii"),
            "sig": json.loads(ack_bytes)["sig"],
        }
    ]

    negatives = _negatives(
        chacha=chacha,
        aes=aes,
        image=image,
        manifest=manifest,
        device_key=device_key,
        device_cert=device_cert,
        other_key=other_key,
        other_cert=other_cert,
        foreign_cert=foreign_cert,
        recipient=recipient,
        signing=signing,
        ack_bytes=ack_bytes,
    )

    index = {
        "format": 1,
        "about": "PhotoSafe wire protocol v1 test vectors; see docs/protocol.md. TEST-ONLY keys.",
        "generator": "tests/vectors/make_vectors.py",
        "device_id": DEVICE_ID,
        "files": files,
        "certificate": {
            "serial_hex": format(device_cert.serial_number, "x"),
            "not_before": _iso(device_cert.not_valid_before_utc),
            "not_after": _iso(device_cert.not_valid_after_utc),
        },
        "open_at": _iso(OPEN_AT),
        "recipient": {
            "kid": envelope.key_id(recipient_pub),
            "public_raw_hex": _raw_public(recipient_pub).hex(),
            "private_raw_hex": recipient.private_bytes_raw().hex(),
        },
        "signing": {
            "key_id": ack.signing_key_id(signing.public_key()),
            "public_raw_hex": signing.public_key().public_bytes_raw().hex(),
        },
        "image": {
            "file": files["image"],
            "sha256": _sha256(image),
            "size": len(image),
            "width": IMAGE_SIZE[0],
            "height": IMAGE_SIZE[1],
        },
        "manifest": {
            "file": files["manifest"],
            "sha256": _sha256(manifest_bytes),
            "length": len(manifest_bytes),
            "capture_id": str(CAPTURE_ID),
        },
        "captures": captures,
        "acks": acks,
        "negative": negatives,
    }
    fleet_files, index["fleet"] = fleet_vectors(recipient_pub)
    files.update(fleet_files)
    _write_index(index)


def _negatives(
    *,
    chacha: bytes,
    aes: bytes,
    image: bytes,
    manifest: Manifest,
    device_key: ec.EllipticCurvePrivateKey,
    device_cert: x509.Certificate,
    other_key: ec.EllipticCurvePrivateKey,
    other_cert: x509.Certificate,
    foreign_cert: x509.Certificate,
    recipient: X25519PrivateKey,
    signing: Ed25519PrivateKey,
    ack_bytes: bytes,
) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    pub = recipient.public_key()
    parts = Parts.of(chacha)
    header = json.loads(parts.header)
    manifest_bytes = manifest.to_bytes()

    def capture(name: str, data: bytes, expect: str, why: str, **extra: Any) -> None:
        out.append(
            {
                "name": name,
                "kind": "capture",
                "file": _write(f"{name}.bin", data),
                "expect": expect,
                "why": why,
                **extra,
            }
        )

    def reuse(name: str, file: str, expect: str, why: str, **extra: Any) -> None:
        out.append(
            {"name": name, "kind": "capture", "file": file, "expect": expect, "why": why, **extra}
        )

    def ack_vector(name: str, data: bytes, why: str) -> None:
        out.append(
            {
                "name": name,
                "kind": "ack",
                "file": _write(f"{name}.json", data),
                "expect": "AckError",
                "why": why,
                "device_id": DEVICE_ID,
            }
        )

    # 1. Framing and header: refused before any key is used.
    capture("neg-bad-magic", b"Q" + chacha[1:], "MalformedEnvelope", "first magic byte changed")
    capture(
        "neg-header-length-out-of-range",
        envelope.MAGIC + _U32.pack(envelope.MAX_HEADER + 1) + chacha[len(envelope.MAGIC) + 4 :],
        "MalformedEnvelope",
        "header length field is MAX_HEADER + 1",
    )
    spaced = json.dumps(header, sort_keys=True, separators=(", ", ": ")).encode()
    capture(
        "neg-header-not-canonical",
        Parts(parts.magic, spaced, parts.ciphertext).join(),
        "MalformedEnvelope",
        "same header values, re-encoded with spaces after ',' and ':'",
    )
    unknown = canonical.dumps({**header, "kid": "0000000000000000"})
    capture(
        "neg-unknown-kid",
        Parts(parts.magic, unknown, parts.ciphertext).join(),
        "UnknownRecipientKey",
        "header kid replaced by 0000000000000000",
    )
    # 2. HPKE: the header is bound as `info`, the ciphertext is authenticated.
    flipped = bytearray(chacha)
    flipped[len(chacha) - 100] ^= 0x01
    capture(
        "neg-ciphertext-flipped",
        bytes(flipped),
        "DecryptionFailed",
        "one bit flipped in the AEAD ciphertext, 100 bytes from the end",
    )
    capture(
        "neg-header-swapped",
        Parts(parts.magic, Parts.of(aes).header, parts.ciphertext).join(),
        "DecryptionFailed",
        "header of capture-aes256gcm.bin in front of the HPKE output of capture-chacha20.bin",
    )
    later = canonical.dumps({**header, "created": "2026-11-25T09:30:02Z"})
    capture(
        "neg-header-altered",
        Parts(parts.magic, later, parts.ciphertext).join(),
        "DecryptionFailed",
        "header 'created' changed by one second (still canonical, same kid and suite)",
    )
    # 3. Inner layout, certificate, signature, manifest, image: decryption succeeds.
    good_header = header_for(pub)
    capture(
        "neg-inner-truncated",
        hand_seal(
            header=good_header,
            manifest=manifest_bytes,
            image=image,
            signer=device_key,
            cert=device_cert,
            recipient=pub,
            manifest_length=len(manifest_bytes) + 10**6,
        ),
        "MalformedEnvelope",
        "manifest length field in the plaintext runs past its end",
    )
    reuse(
        "neg-certificate-expired",
        "capture-chacha20.bin",
        "CertificateExpired",
        "the good capture, opened after the certificate's notAfter",
        now="2046-06-01T00:00:00Z",
    )
    reuse(
        "neg-certificate-not-yet-valid",
        "capture-chacha20.bin",
        "CertificateExpired",
        "the good capture, opened before the certificate's notBefore",
        now="2025-06-01T00:00:00Z",
    )
    capture(
        "neg-untrusted-ca",
        envelope.seal(
            manifest,
            image,
            device_key=device_key,
            device_cert=foreign_cert,
            recipient=pub,
            created=CREATED,
        ),
        "UntrustedCertificate",
        "certificate for the right device id and key, issued by another CA",
    )
    reuse(
        "neg-certificate-revoked",
        "capture-chacha20.bin",
        "CertificateRevoked",
        "the good capture, with a CRL (signed by the device CA) that lists the device serial",
        crl="crl-revoking-device.pem",
    )
    capture(
        "neg-device-mismatch",
        envelope.seal(
            manifest,
            image,
            device_key=other_key,
            device_cert=other_cert,
            recipient=pub,
            created=CREATED,
        ),
        "DeviceMismatch",
        f"header and manifest say {DEVICE_ID}; certificate (valid, same CA) is {OTHER_DEVICE_ID}",
    )
    capture(
        "neg-bad-signature",
        envelope.seal(
            manifest,
            image,
            device_key=other_key,
            device_cert=device_cert,
            recipient=pub,
            created=CREATED,
        ),
        "BadSignature",
        "signed by a key that is not the certificate's",
    )
    unsafe = {**json.loads(manifest_bytes), "intimate": True, "chaperone": None}
    capture(
        "neg-manifest-unsafe",
        hand_seal(
            header=good_header,
            manifest=canonical.dumps(unsafe),
            image=image,
            signer=device_key,
            cert=device_cert,
            recipient=pub,
        ),
        "ManifestInvalid",
        "validly signed manifest with intimate=true and no chaperone",
    )
    other_capture = {**json.loads(manifest_bytes), "capture_id": str(uuid.UUID(int=1))}
    capture(
        "neg-manifest-capture-mismatch",
        hand_seal(
            header=good_header,
            manifest=canonical.dumps(other_capture),
            image=image,
            signer=device_key,
            cert=device_cert,
            recipient=pub,
        ),
        "ManifestInvalid",
        "validly signed manifest whose capture_id differs from the header's capture",
    )
    capture(
        "neg-digest-mismatch",
        hand_seal(
            header=good_header,
            manifest=manifest_bytes,
            image=image[:-1] + b"\x00",
            signer=device_key,
            cert=device_cert,
            recipient=pub,
        ),
        "DigestMismatch",
        "last image byte changed after the manifest recorded its SHA-256",
    )

    # 4. Acks.
    outer = json.loads(ack_bytes)
    altered = {**outer, "receipt": {**outer["receipt"], "record": "PS-2026-000124"}}
    ack_vector("neg-ack-altered", canonical.dumps(altered), "record changed after signing")
    other = ack.make_receipt(
        signing_key=signing,
        device=OTHER_DEVICE_ID,
        capture=CAPTURE_ID,
        sealed=chacha,
        status=ack.AckStatus.STORED,
        record=RECORD,
        now=GATEWAY_TIME,
    )
    ack_vector(
        "neg-ack-other-device",
        ack.sign(other, signing),
        f"validly signed, but for {OTHER_DEVICE_ID}",
    )
    stranger = Ed25519PrivateKey.from_private_bytes(_seed("unpinned signing key"))
    unpinned = ack.make_receipt(
        signing_key=stranger,
        device=DEVICE_ID,
        capture=CAPTURE_ID,
        sealed=chacha,
        status=ack.AckStatus.STORED,
        record=RECORD,
        now=GATEWAY_TIME,
    )
    ack_vector("neg-ack-unpinned-key", ack.sign(unpinned, stranger), "signed by an unpinned key")
    # Same signature bytes, but the base64 text sets the unused low bits of its last symbol.
    sig = outer["sig"]
    last = _B64.index(sig[-3])
    loose = {**outer, "sig": sig[:-3] + _B64[last | 0x0F] + sig[-2:]}
    ack_vector(
        "neg-ack-sig-not-canonical-base64",
        canonical.dumps(loose),
        "'sig' decodes to the right 64 bytes, but its last symbol has unused bits set",
    )
    return out


# -- fleet: remote config and station status (docs/protocol.md sections 18 and 19) -------------

CONFIG_ISSUED = dt.datetime(2026, 11, 25, 8, 0, tzinfo=dt.UTC)
CONFIG_VERSION = 3
STATUS_AT = dt.datetime(2026, 11, 25, 9, 31, 0, tzinfo=dt.UTC)


def vector_settings(recipient: X25519PublicKey) -> fleet.FleetSettings:
    """Location (non-ASCII on purpose), some thresholds, and the gateway key to seal to."""
    return fleet.FleetSettings.model_validate_json(
        canonical.dumps(
            {
                "location": "Dermatology OPD \u2013 Room 2",
                "thresholds": {
                    "min_focus": 120.0,
                    "max_shadows_clipped": 0.2,
                    "min_width": 1280,
                    "patient_timeout_s": 90.0,
                },
                "recipient_public_key": fleet.recipient_key_b64(recipient),
            }
        )
    )


def fleet_vectors(recipient: X25519PublicKey) -> tuple[dict[str, str], dict[str, Any]]:
    """Write the fleet files; return their `files` entries and the `fleet` part of the index."""
    fleet_key = Ed25519PrivateKey.from_private_bytes(_seed("fleet signing key"))
    stranger = Ed25519PrivateKey.from_private_bytes(_seed("unpinned fleet signing key"))
    settings = vector_settings(recipient)

    def signed(
        version: int = CONFIG_VERSION,
        device: str = DEVICE_ID,
        key: Ed25519PrivateKey = fleet_key,
    ) -> bytes:
        config = fleet.make_config(
            fleet_key=key, device=device, version=version, settings=settings, now=CONFIG_ISSUED
        )
        return fleet.sign_config(config, key)

    files = {
        "fleet_key": _write("fleet-signing.key.pem", _pkcs8(fleet_key)),
        "fleet_pub": _write(
            "fleet-signing.pub.pem",
            fleet_key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            ),
        ),
    }
    good = signed()
    outer = json.loads(good)
    configs = [
        {
            "file": _write(f"config-v{CONFIG_VERSION}.json", good),
            "device_id": DEVICE_ID,
            "last_version": 0,
            "config": outer["config"],
            "config_bytes": canonical.dumps(outer["config"]).decode("ascii"),
            "signed_bytes_hex": (fleet.CONFIG_CONTEXT + canonical.dumps(outer["config"])).hex(),
            "sig": outer["sig"],
            "recipient_kid": envelope.key_id(recipient),
        }
    ]

    negatives: list[dict[str, Any]] = []

    def negative(
        name: str,
        data: bytes | None,
        expect: str,
        why: str,
        *,
        last_version: int = 0,
        file: str | None = None,
    ) -> None:
        negatives.append(
            {
                "name": name,
                "kind": "config",
                "file": file or _write(f"{name}.json", data or b""),
                "expect": expect,
                "why": why,
                "device_id": DEVICE_ID,
                "last_version": last_version,
            }
        )

    altered = {**outer, "config": {**outer["config"], "settings": {"location": "Theatre 1"}}}
    negative(
        "neg-config-bad-signature",
        canonical.dumps(altered),
        "bad-signature",
        "settings replaced after signing (still canonical, same pinned key id)",
    )
    negative(
        "neg-config-unknown-key",
        signed(key=stranger),
        "unknown-key",
        "validly signed by a fleet key the station does not pin",
    )
    negative(
        "neg-config-other-device",
        signed(device=OTHER_DEVICE_ID),
        "wrong-device",
        f"validly signed by the pinned key, but for {OTHER_DEVICE_ID}",
    )
    negative(
        "neg-config-stale",
        signed(version=CONFIG_VERSION - 1),
        "stale",
        f"validly signed version {CONFIG_VERSION - 1}; the station has applied "
        f"version {CONFIG_VERSION}",
        last_version=CONFIG_VERSION,
    )
    negative(
        "neg-config-replayed",
        None,
        "stale",
        f"config-v{CONFIG_VERSION}.json again, after the station applied it (same version)",
        last_version=CONFIG_VERSION,
        file=configs[0]["file"],
    )
    negative(
        "neg-config-not-canonical",
        json.dumps(outer, sort_keys=True, separators=(", ", ": ")).encode("ascii"),
        "malformed",
        "the good message re-encoded with spaces after ',' and ':'",
    )

    online = fleet.StationStatus(
        device=DEVICE_ID,
        online=True,
        at=STATUS_AT,
        version="0.1.0",
        profile=StationProfile(kind=StationKind.WARD),
        cert_days_left=7000,
        clock_synchronised=True,
        outbox=0,
        config_version=CONFIG_VERSION,
        step="need-operator",
    )
    will = fleet.StationStatus(device=DEVICE_ID, online=False)
    statuses = [
        {
            "file": _write("status-online.json", online.to_bytes()),
            "what": "a running station after applying config-v3.json",
            "device_id": DEVICE_ID,
            "status": json.loads(online.to_bytes()),
        },
        {
            "file": _write("status-offline.json", will.to_bytes()),
            "what": "the last will (and what a station publishes when it stops cleanly)",
            "device_id": DEVICE_ID,
            "status": json.loads(will.to_bytes()),
        },
    ]
    section = {
        "key_id": fleet.fleet_key_id(fleet_key.public_key()),
        "public_raw_hex": fleet_key.public_key().public_bytes_raw().hex(),
        "configs": configs,
        "negative": negatives,
        "statuses": statuses,
    }
    return files, section


if __name__ == "__main__":
    main()
