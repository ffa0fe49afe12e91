"""The sealed capture: seal on the station, open and verify at the gateway.

    sealed = MAGIC | u32 header length | header | HPKE ciphertext (enc || AEAD ciphertext)

The header is canonical JSON with no patient data and goes into HPKE `info`, so changing any byte
of it breaks decryption. Inside the ciphertext:

    u32 manifest length | manifest | u16 signature length | signature | u16 certificate length |
    device certificate (DER) | image (the rest)

The signature is ECDSA P-256 / SHA-256 by the device key over SIGNATURE_CONTEXT, the header and the
manifest (which carries the image's SHA-256). docs/protocol.md specifies all of it byte for byte.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import struct
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from cryptography import x509
from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.hpke import AEAD, KDF, KEM, Suite
from cryptography.x509.oid import ExtendedKeyUsageOID
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

from photosafe.protocol import canonical
from photosafe.protocol.errors import (
    BadSignature,
    CertificateExpired,
    CertificateRevoked,
    ConfigRejected,
    DecryptionFailed,
    DeviceMismatch,
    DigestMismatch,
    MalformedEnvelope,
    ManifestInvalid,
    UnknownRecipientKey,
    UntrustedCertificate,
)
from photosafe.protocol.manifest import DeviceId, Manifest
from photosafe.protocol.wipe import zero_fill

MAGIC = b"PSAFE\x00v1"
SIGNATURE_CONTEXT = b"photosafe/v1 capture signature\x00"
MAX_HEADER = 1024
CONTENT_TYPE = "application/vnd.photosafe.sealed-capture.v1"

SuiteName = Literal["X25519-HKDF-SHA256-CHACHA20POLY1305", "X25519-HKDF-SHA256-AES256GCM"]
CHACHA20: SuiteName = "X25519-HKDF-SHA256-CHACHA20POLY1305"
AES256GCM: SuiteName = "X25519-HKDF-SHA256-AES256GCM"
_SUITES: dict[str, Suite] = {
    CHACHA20: Suite(KEM.X25519, KDF.HKDF_SHA256, AEAD.CHACHA20_POLY1305),
    AES256GCM: Suite(KEM.X25519, KDF.HKDF_SHA256, AEAD.AES_256_GCM),
}
_U32 = struct.Struct(">I")
_U16 = struct.Struct(">H")


class Header(BaseModel):
    """The cleartext header: enough to route and pick a key, nothing about the patient."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True, hide_input_in_errors=True)
    v: Literal[1] = 1
    suite: SuiteName
    kid: str = Field(pattern=r"^[0-9a-f]{16}$", description="Recipient key id.")
    device: DeviceId
    capture: uuid.UUID
    created: AwareDatetime

    def to_bytes(self) -> bytes:
        return canonical.dumps(self.model_dump(mode="json"))


def key_id(public_key: X25519PublicKey) -> str:
    """Recipient key id: the first 8 bytes of SHA-256 over the raw public key, in hex."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def seal(
    manifest: Manifest,
    image: bytes | bytearray | memoryview,
    *,
    device_key: ec.EllipticCurvePrivateKey,
    device_cert: x509.Certificate,
    recipient: X25519PublicKey,
    suite: SuiteName = CHACHA20,
    created: dt.datetime | None = None,
) -> bytes:
    """Sign and encrypt one capture for the gateway holding `recipient`'s private key.

    Plaintext copies: the caller's `image` buffer (the caller wipes it) and one working bytearray
    here, wiped before return. HPKE reads that buffer in place and writes only ciphertext. The
    parts are written through a memoryview: `bytearray[a:b] = view` would first copy the view
    into a hidden temporary bytearray, freed without being wiped (tests/test_plaintext.py).
    """
    view = memoryview(image).cast("B")
    if (
        manifest.image.size != len(view)
        or hashlib.sha256(view).hexdigest() != manifest.image.sha256
    ):
        raise ValueError("manifest image size or digest does not match the image being sealed")
    header = Header(
        suite=suite,
        kid=key_id(recipient),
        device=manifest.device_id,
        capture=manifest.capture_id,
        created=created or dt.datetime.now(dt.UTC),
    ).to_bytes()
    manifest_bytes = manifest.to_bytes()
    signature = device_key.sign(_signed_bytes(header, manifest_bytes), ec.ECDSA(hashes.SHA256()))
    cert_der = device_cert.public_bytes(serialization.Encoding.DER)

    plaintext = bytearray(
        _U32.size
        + len(manifest_bytes)
        + _U16.size
        + len(signature)
        + _U16.size
        + len(cert_der)
        + len(view)
    )
    out = memoryview(plaintext)
    try:
        offset = 0
        for part in (
            _U32.pack(len(manifest_bytes)), manifest_bytes,
            _U16.pack(len(signature)), signature,
            _U16.pack(len(cert_der)), cert_der,
            view,
        ):  # fmt: skip
            out[offset : offset + len(part)] = part
            offset += len(part)
        ciphertext = _SUITES[suite].encrypt(plaintext, recipient, info=header)
    finally:
        zero_fill(out)
        out.release()
        del plaintext  # freed before the message is assembled: one image-sized buffer fewer
    return MAGIC + _U32.pack(len(header)) + header + ciphertext


@dataclass(frozen=True)
class DeviceTrust:
    """What the gateway trusts: the device CA and its current revocation list."""

    ca: x509.Certificate
    crl: x509.CertificateRevocationList | None = None

    def __post_init__(self) -> None:
        if self.crl is not None and not self.crl.is_signature_valid(self.ca.public_key()):  # type: ignore[arg-type]
            raise ConfigRejected("the revocation list is not signed by the device CA")


@dataclass(frozen=True)
class Opened:
    """A verified capture. `image` is plaintext: file it and let it go."""

    header: Header
    manifest: Manifest
    manifest_bytes: bytes
    signature: bytes
    device_cert: x509.Certificate
    image: bytes


def read_header(sealed: bytes) -> Header:
    """Parse the cleartext header only (routing, key choice, replies to unreadable captures)."""
    return _split(sealed)[0]


def open_sealed(
    sealed: bytes,
    *,
    recipient_keys: Mapping[str, X25519PrivateKey],
    trust: DeviceTrust,
    now: dt.datetime | None = None,
) -> Opened:
    """Decrypt and verify a sealed capture; every failure raises its own EnvelopeError."""
    header, header_bytes, ciphertext = _split(sealed)
    key = recipient_keys.get(header.kid)
    if key is None:
        raise UnknownRecipientKey(f"capture sealed to recipient key {header.kid}, not held here")
    try:
        plaintext = _SUITES[header.suite].decrypt(ciphertext, key, info=header_bytes)
    except (InvalidTag, ValueError) as exc:
        raise DecryptionFailed(
            "decryption failed: wrong recipient key, or the header or ciphertext was altered"
        ) from exc

    manifest_bytes, signature, cert_der, image = _split_inner(plaintext)
    cert = _verified_certificate(cert_der, header.device, trust, now or dt.datetime.now(dt.UTC))
    public_key = cert.public_key()
    if not isinstance(public_key, ec.EllipticCurvePublicKey) or not isinstance(
        public_key.curve, ec.SECP256R1
    ):
        raise UntrustedCertificate("device certificate key is not EC P-256")
    try:
        public_key.verify(
            signature, _signed_bytes(header_bytes, manifest_bytes), ec.ECDSA(hashes.SHA256())
        )
    except InvalidSignature as exc:
        raise BadSignature("device signature over header and manifest does not verify") from exc

    try:
        manifest = Manifest.from_bytes(manifest_bytes)
    except (ValidationError, ValueError) as exc:
        raise ManifestInvalid(f"manifest is not valid: {_first_error(exc)}") from exc
    if manifest.to_bytes() != manifest_bytes:
        # Another JSON parser must not read a different record (duplicate keys, other forms).
        raise ManifestInvalid("manifest is not in canonical form")
    if manifest.capture_id != header.capture or manifest.device_id != header.device:
        raise ManifestInvalid("manifest capture id or device differs from the header")
    if (
        manifest.image.size != len(image)
        or hashlib.sha256(image).hexdigest() != manifest.image.sha256
    ):
        raise DigestMismatch("image size or SHA-256 differs from the manifest")
    return Opened(header, manifest, manifest_bytes, signature, cert, image)


def _signed_bytes(header: bytes, manifest: bytes) -> bytes:
    return SIGNATURE_CONTEXT + _U32.pack(len(header)) + header + _U32.pack(len(manifest)) + manifest


def _split(sealed: bytes) -> tuple[Header, bytes, memoryview]:
    if len(sealed) < len(MAGIC) + _U32.size or not sealed.startswith(MAGIC):
        raise MalformedEnvelope("not a PhotoSafe sealed capture (bad magic)")
    (length,) = _U32.unpack_from(sealed, len(MAGIC))
    start = len(MAGIC) + _U32.size
    if not 0 < length <= MAX_HEADER or start + length > len(sealed):
        raise MalformedEnvelope("header length is out of range")
    header_bytes = sealed[start : start + length]
    try:
        header = Header.model_validate_json(header_bytes)
    except (ValueError, RecursionError) as exc:  # ValidationError is a ValueError
        raise MalformedEnvelope(f"header is not valid: {_first_error(exc)}") from exc
    if header.to_bytes() != header_bytes:  # one meaning, one byte form
        raise MalformedEnvelope("header is not in canonical form")
    # A view, not a slice: the ciphertext can be megabytes, and HPKE reads a view as well.
    return header, header_bytes, memoryview(sealed)[start + length :]


def _split_inner(plaintext: bytes) -> tuple[bytes, bytes, bytes, bytes]:
    try:
        (manifest_len,) = _U32.unpack_from(plaintext, 0)
        offset = _U32.size
        manifest = plaintext[offset : offset + manifest_len]
        offset += manifest_len
        (sig_len,) = _U16.unpack_from(plaintext, offset)
        offset += _U16.size
        signature = plaintext[offset : offset + sig_len]
        offset += sig_len
        (cert_len,) = _U16.unpack_from(plaintext, offset)
        offset += _U16.size
        cert_der = plaintext[offset : offset + cert_len]
        offset += cert_len
    except struct.error as exc:
        raise MalformedEnvelope("inner layout is truncated") from exc
    if len(manifest) != manifest_len or len(signature) != sig_len or len(cert_der) != cert_len:
        raise MalformedEnvelope("inner layout is truncated")
    return manifest, signature, cert_der, plaintext[offset:]


def _verified_certificate(
    der: bytes, device_id: str, trust: DeviceTrust, now: dt.datetime
) -> x509.Certificate:
    try:
        cert = x509.load_der_x509_certificate(der)
    except ValueError as exc:
        raise MalformedEnvelope("device certificate is not valid DER") from exc
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        raise CertificateExpired(
            f"device certificate valid {cert.not_valid_before_utc:%Y-%m-%d} to "
            f"{cert.not_valid_after_utc:%Y-%m-%d}, not now"
        )
    try:
        verifier = PolicyBuilder().store(Store([trust.ca])).time(now).build_client_verifier()
        verifier.verify(cert, [])
    except (VerificationError, ValueError) as exc:
        raise UntrustedCertificate(
            f"device certificate does not chain to the device CA: {exc}"
        ) from exc
    if trust.crl is not None and trust.crl.get_revoked_certificate_by_serial_number(
        cert.serial_number
    ):
        raise CertificateRevoked(f"device certificate serial {cert.serial_number:x} is revoked")
    try:
        usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        usage = None
    if usage is None or ExtendedKeyUsageOID.CLIENT_AUTH not in usage:
        raise UntrustedCertificate("device certificate lacks the client-authentication usage")
    if _identities(cert) != {device_id}:
        raise DeviceMismatch("device certificate identity differs from the header's device")
    return cert


def _identities(cert: x509.Certificate) -> set[str]:
    """CN and DNS SANs: both must name the one device."""
    names = {str(a.value) for a in cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)}
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names.update(san.get_values_for_type(x509.DNSName))
    except x509.ExtensionNotFound:
        pass
    return names


def _first_error(exc: BaseException) -> str:
    if isinstance(exc, ValidationError):
        errors = exc.errors()
        if errors:
            where = ".".join(str(part) for part in errors[0]["loc"]) or "(root)"
            return f"{where}: {errors[0]['msg']}"
    return type(exc).__name__
