"""Seal and open: every way a sealed capture can be wrong fails `open_sealed` with its own error."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st
from keys import manifest_for, shared_pki

from photosafe.protocol import envelope
from photosafe.protocol.envelope import DeviceTrust, open_sealed, seal
from photosafe.protocol.errors import (
    BadSignature,
    CertificateExpired,
    CertificateRevoked,
    ConfigRejected,
    DecryptionFailed,
    DeviceMismatch,
    DigestMismatch,
    EnvelopeError,
    MalformedEnvelope,
    UnknownRecipientKey,
    UntrustedCertificate,
)
from photosafe.provisioning import pki

IMAGE = b"\xff\xd8\xff\xe0 fake jpeg body " + bytes(range(256)) * 4 + b"\xff\xd9"


def _seal(device_id: str = "ward-a-01", image: bytes = IMAGE, **kwargs: object) -> bytes:
    p = shared_pki()
    dev = p.device(device_id)
    return seal(
        manifest_for(image, device_id),
        image,
        device_key=dev.key,
        device_cert=dev.cert,
        recipient=p.recipient.public_key(),
        **kwargs,  # type: ignore[arg-type]
    )


def _open(sealed: bytes, trust: DeviceTrust | None = None) -> envelope.Opened:
    p = shared_pki()
    keys = {envelope.key_id(p.recipient.public_key()): p.recipient}
    return open_sealed(sealed, recipient_keys=keys, trust=trust or DeviceTrust(p.ca.cert))


@pytest.mark.parametrize("suite", [envelope.CHACHA20, envelope.AES256GCM])
def test_round_trip_returns_the_image_and_manifest(suite: envelope.SuiteName) -> None:
    sealed = _seal(suite=suite)
    opened = _open(sealed)
    assert opened.image == IMAGE
    assert opened.header.suite == suite
    assert opened.manifest.device_id == "ward-a-01"
    assert opened.manifest.patient.identifier == "9434765919"


def test_header_is_cleartext_without_patient_data() -> None:
    sealed = _seal()
    header = envelope.read_header(sealed)
    assert header.device == "ward-a-01"
    assert b"9434765919" not in sealed
    assert IMAGE[20:60] not in sealed


def test_seal_refuses_a_manifest_that_does_not_describe_the_image() -> None:
    p = shared_pki()
    dev = p.device("ward-a-01")
    with pytest.raises(ValueError, match="digest"):
        seal(
            manifest_for(IMAGE),
            IMAGE[:-1] + b"\x00",
            device_key=dev.key,
            device_cert=dev.cert,
            recipient=p.recipient.public_key(),
        )


def test_seal_does_not_alter_the_callers_buffer_and_wipes_its_own() -> None:
    buffer = bytearray(IMAGE)
    p = shared_pki()
    dev = p.device("ward-a-01")
    seal(
        manifest_for(IMAGE),
        buffer,
        device_key=dev.key,
        device_cert=dev.cert,
        recipient=p.recipient.public_key(),
    )
    assert buffer == IMAGE  # the owner wipes its own buffer (daemon side)


def test_every_single_byte_flip_fails_with_an_envelope_error() -> None:
    sealed = _seal(image=b"\xff\xd8tiny\xff\xd9")
    for i in range(len(sealed)):
        for bit in (0x01, 0x80):
            tampered = bytearray(sealed)
            tampered[i] ^= bit
            with pytest.raises(EnvelopeError):
                _open(bytes(tampered))


def test_flipped_ciphertext_byte_is_a_decryption_failure() -> None:
    sealed = bytearray(_seal())
    sealed[-5] ^= 0x40
    with pytest.raises(DecryptionFailed):
        _open(bytes(sealed))


def test_swapping_the_headers_of_two_captures_fails_decryption() -> None:
    a, b = _seal(), _seal()
    split_a = (
        len(envelope.MAGIC) + 4 + int.from_bytes(a[len(envelope.MAGIC) : len(envelope.MAGIC) + 4])
    )
    split_b = (
        len(envelope.MAGIC) + 4 + int.from_bytes(b[len(envelope.MAGIC) : len(envelope.MAGIC) + 4])
    )
    with pytest.raises(DecryptionFailed):
        _open(b[:split_b] + a[split_a:])


def test_another_devices_certificate_is_a_device_mismatch() -> None:
    p = shared_pki()
    other = p.device("ward-a-02")
    sealed = seal(
        manifest_for(IMAGE, "ward-a-01"),
        IMAGE,
        device_key=other.key,
        device_cert=other.cert,
        recipient=p.recipient.public_key(),
    )
    with pytest.raises(DeviceMismatch):
        _open(sealed)


def test_certificate_from_another_ca_is_untrusted() -> None:
    with pytest.raises(UntrustedCertificate):
        _open(_seal("foreign-01"))


def test_expired_certificate_is_refused() -> None:
    with pytest.raises(CertificateExpired):
        _open(_seal("expired-01"))


def test_revoked_certificate_is_refused() -> None:
    p = shared_pki()
    crl = pki.revocation_list(p.ca, [p.device("ward-a-01").cert.serial_number])
    with pytest.raises(CertificateRevoked):
        _open(_seal(), DeviceTrust(p.ca.cert, crl))
    # the other device is unaffected by that CRL
    assert _open(_seal("ward-a-02"), DeviceTrust(p.ca.cert, crl)).image == IMAGE


def test_crl_from_another_ca_is_refused_as_configuration() -> None:
    p = shared_pki()
    with pytest.raises(ConfigRejected):
        DeviceTrust(p.ca.cert, pki.revocation_list(p.other_ca, []))


def test_wrong_recipient_key_is_unknown_key() -> None:
    p = shared_pki()
    stranger = X25519PrivateKey.generate()
    with pytest.raises(UnknownRecipientKey):
        open_sealed(
            _seal(),
            recipient_keys={envelope.key_id(stranger.public_key()): stranger},
            trust=DeviceTrust(p.ca.cert),
        )


def test_wrong_key_under_the_right_key_id_fails_decryption() -> None:
    p = shared_pki()
    stranger = X25519PrivateKey.generate()
    with pytest.raises(DecryptionFailed):
        open_sealed(
            _seal(),
            recipient_keys={envelope.key_id(p.recipient.public_key()): stranger},
            trust=DeviceTrust(p.ca.cert),
        )


def test_rotation_opens_captures_sealed_to_old_and_new_keys() -> None:
    p = shared_pki()
    new = X25519PrivateKey.generate()
    dev = p.device("ward-a-01")
    to_new = seal(
        manifest_for(IMAGE), IMAGE, device_key=dev.key, device_cert=dev.cert,
        recipient=new.public_key(),
    )  # fmt: skip
    keys = {
        envelope.key_id(p.recipient.public_key()): p.recipient,
        envelope.key_id(new.public_key()): new,
    }
    for sealed in (_seal(), to_new):
        assert open_sealed(sealed, recipient_keys=keys, trust=DeviceTrust(p.ca.cert)).image == IMAGE


def test_signature_by_a_key_that_is_not_the_certificates_is_refused() -> None:
    p = shared_pki()
    dev = p.device("ward-a-01")
    sealed = seal(
        manifest_for(IMAGE),
        IMAGE,
        device_key=pki.new_key(),
        device_cert=dev.cert,
        recipient=p.recipient.public_key(),
    )
    with pytest.raises(BadSignature):
        _open(sealed)


def test_image_that_differs_from_its_manifest_is_a_digest_mismatch() -> None:
    """A device that signs a manifest for one image and seals another is caught."""
    p = shared_pki()
    dev = p.device("ward-a-01")
    manifest = manifest_for(IMAGE)
    # Build the sealed capture by hand, bypassing seal()'s own check.
    header = envelope.Header(
        suite=envelope.CHACHA20,
        kid=envelope.key_id(p.recipient.public_key()),
        device="ward-a-01",
        capture=manifest.capture_id,
        created=dt.datetime.now(dt.UTC),
    ).to_bytes()
    mbytes = manifest.to_bytes()
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    sig = dev.key.sign(envelope._signed_bytes(header, mbytes), ec.ECDSA(hashes.SHA256()))
    der = dev.cert.public_bytes(serialization.Encoding.DER)
    inner = (
        len(mbytes).to_bytes(4) + mbytes + len(sig).to_bytes(2) + sig + len(der).to_bytes(2) + der
        + b"another image"
    )  # fmt: skip
    ct = envelope._SUITES[envelope.CHACHA20].encrypt(inner, p.recipient.public_key(), info=header)
    with pytest.raises(DigestMismatch):
        _open(envelope.MAGIC + len(header).to_bytes(4) + header + ct)


def test_garbage_is_malformed() -> None:
    for junk in (b"", b"PSAFE", envelope.MAGIC + b"\xff\xff\xff\xff", b"x" * 100):
        with pytest.raises(MalformedEnvelope):
            _open(junk)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_open_raises_only_envelope_errors_on_arbitrary_bytes(data: bytes) -> None:
    with pytest.raises(EnvelopeError):
        _open(data)


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_open_raises_only_envelope_errors_on_mutated_captures(data: st.DataObject) -> None:
    sealed = bytearray(_SMALL)
    for _ in range(data.draw(st.integers(1, 4))):
        index = data.draw(st.integers(0, len(sealed) - 1))
        sealed[index] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(sealed)))
    candidate = bytes(sealed[:cut]) if data.draw(st.booleans()) else bytes(sealed)
    if candidate == _SMALL:
        return
    with pytest.raises(EnvelopeError):
        _open(candidate)


_SMALL = _seal(image=b"\xff\xd8small\xff\xd9")


def test_capture_ids_are_carried_in_header_and_manifest() -> None:
    capture = uuid.uuid4()
    p = shared_pki()
    dev = p.device("ward-a-01")
    sealed = seal(
        manifest_for(IMAGE, capture_id=capture), IMAGE, device_key=dev.key,
        device_cert=dev.cert, recipient=p.recipient.public_key(),
    )  # fmt: skip
    assert envelope.read_header(sealed).capture == capture
    assert _open(sealed).manifest.capture_id == capture
