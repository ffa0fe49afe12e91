"""Signed receipts: only a receipt under the pinned key, for this device, says stored."""

from __future__ import annotations

import base64
import json
import uuid

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st
from keys import shared_pki

from photosafe.protocol import ack
from photosafe.protocol.ack import AckStatus
from photosafe.protocol.errors import AckError

SEALED = b"PSAFE\x00v1 pretend sealed bytes"


def _signed(status: AckStatus = AckStatus.STORED, device: str = "ward-a-01", **kw: object) -> bytes:
    key = kw.pop("key", shared_pki().signing)
    assert isinstance(key, Ed25519PrivateKey)
    receipt = ack.make_receipt(
        signing_key=key,
        device=device,
        capture=uuid.UUID(int=7),
        sealed=SEALED,
        status=status,
        **kw,  # type: ignore[arg-type]
    )
    return ack.sign(receipt, key)


def _verify(data: bytes, device: str = "ward-a-01") -> ack.Receipt:
    return ack.verify(data, pinned=ack.pin(shared_pki().signing.public_key()), device=device)


@pytest.mark.parametrize(
    ("status", "stored"),
    [(AckStatus.STORED, True), (AckStatus.DUPLICATE, True), (AckStatus.REJECTED, False)],
)
def test_valid_receipt_verifies_and_says_whether_the_record_holds_it(
    status: AckStatus, stored: bool
) -> None:
    receipt = _verify(_signed(status, reason="bad" if status is AckStatus.REJECTED else None))
    assert receipt.status is status
    assert receipt.is_stored is stored
    assert receipt.capture == uuid.UUID(int=7)
    assert receipt.sealed_sha256 == ack.sealed_digest(SEALED)


def test_receipt_signed_by_an_unpinned_key_is_refused() -> None:
    with pytest.raises(AckError, match="not pinned"):
        _verify(_signed(key=Ed25519PrivateKey.generate()))


def test_forged_receipt_under_the_pinned_key_id_is_refused() -> None:
    outer = json.loads(_signed(AckStatus.REJECTED, reason="nope"))
    outer["receipt"]["status"] = "stored"
    outer["receipt"]["reason"] = None
    forged = json.dumps(outer, sort_keys=True, separators=(",", ":")).encode()
    with pytest.raises(AckError, match="signature"):
        _verify(forged)


def test_unsigned_receipt_is_refused() -> None:
    outer = json.loads(_signed())
    outer["sig"] = base64.b64encode(bytes(64)).decode()
    with pytest.raises(AckError):
        _verify(json.dumps(outer, sort_keys=True, separators=(",", ":")).encode())
    with pytest.raises(AckError):
        _verify(json.dumps({"receipt": outer["receipt"]}).encode())


def test_receipt_for_another_device_is_refused() -> None:
    with pytest.raises(AckError, match="another device"):
        _verify(_signed(device="ward-a-02"))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=5000))
def test_verify_raises_only_ack_errors_on_arbitrary_bytes(data: bytes) -> None:
    with pytest.raises(AckError):
        _verify(data)


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_any_mutation_of_a_signed_receipt_is_refused(data: st.DataObject) -> None:
    good = _signed()
    index = data.draw(st.integers(0, len(good) - 1))
    value = data.draw(st.integers(0, 255).filter(lambda v: v != good[index]))
    mutated = good[:index] + bytes([value]) + good[index + 1 :]
    with pytest.raises(AckError):
        _verify(mutated)
