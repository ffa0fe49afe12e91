"""The gateway's signed receipt, and its verification on the station.

A station may say "stored" only when a receipt that verifies under the pinned gateway signing key
says `stored` (or `duplicate`: the record already holds it) for this device, this capture id and
these exact sealed bytes.

    ack = canonical JSON {"receipt": {...},
                          "sig": base64(Ed25519(ACK_CONTEXT || canonical(receipt)))}
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import uuid
from collections.abc import Mapping
from enum import StrEnum
from typing import Annotated, Literal

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from photosafe.protocol import canonical
from photosafe.protocol.errors import AckError
from photosafe.protocol.manifest import DeviceId, Sha256Hex

ACK_CONTEXT = b"photosafe/v1 ack signature\x00"
MAX_ACK = 4096


class AckStatus(StrEnum):
    STORED = "stored"  # filed now
    DUPLICATE = "duplicate"  # filed before: the record holds it
    REJECTED = "rejected"  # not filed; `reason` says why


class Receipt(BaseModel):
    """What the gateway says became of one capture. No patient data."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True, hide_input_in_errors=True)
    v: Literal[1] = 1
    key: Annotated[str, Field(pattern=r"^[0-9a-f]{16}$")] = Field(description="Signing key id.")
    device: DeviceId = Field(description="The station the capture came from.")
    capture: uuid.UUID = Field(description="The capture id (MQTT correlation data).")
    status: AckStatus
    reason: str | None = Field(default=None, max_length=300, description="Why, if rejected.")
    record: str | None = Field(
        default=None, max_length=200, description="Opaque reference to the filed record."
    )
    sealed_sha256: Sha256Hex = Field(description="SHA-256 of the sealed bytes received.")
    gateway_time: AwareDatetime

    @property
    def is_stored(self) -> bool:
        """True when the record holds the capture: the only thing that may light "stored"."""
        return self.status in (AckStatus.STORED, AckStatus.DUPLICATE)


def signing_key_id(public_key: Ed25519PublicKey) -> str:
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def sealed_digest(sealed: bytes) -> str:
    return hashlib.sha256(sealed).hexdigest()


def make_receipt(
    *,
    signing_key: Ed25519PrivateKey,
    device: str,
    capture: uuid.UUID,
    sealed: bytes,
    status: AckStatus,
    reason: str | None = None,
    record: str | None = None,
    now: dt.datetime | None = None,
) -> Receipt:
    return Receipt(
        key=signing_key_id(signing_key.public_key()),
        device=device,
        capture=capture,
        status=status,
        reason=reason,
        record=record,
        sealed_sha256=sealed_digest(sealed),
        gateway_time=now or dt.datetime.now(dt.UTC),
    )


def sign(receipt: Receipt, signing_key: Ed25519PrivateKey) -> bytes:
    """The ack message body."""
    body = canonical.dumps(receipt.model_dump(mode="json"))
    signature = signing_key.sign(ACK_CONTEXT + body)
    return canonical.dumps(
        {"receipt": receipt.model_dump(mode="json"), "sig": base64.b64encode(signature).decode()}
    )


def verify(data: bytes, *, pinned: Mapping[str, Ed25519PublicKey], device: str) -> Receipt:
    """Check an ack's signature against the pinned gateway keys and that it is for this device."""
    if len(data) > MAX_ACK:
        raise AckError("ack is too large")
    try:
        outer = canonical.loads_canonical(data)
        if not isinstance(outer, dict) or set(outer) != {"receipt", "sig"}:
            raise ValueError("expected exactly 'receipt' and 'sig'")
        body = canonical.dumps(outer["receipt"])
        signature = base64.b64decode(outer["sig"], validate=True)
        if base64.b64encode(signature).decode() != outer["sig"]:
            raise ValueError("signature is not canonical base64")  # unused bits set
        receipt = Receipt.model_validate_json(body)
    except (ValueError, TypeError, RecursionError, binascii.Error) as exc:
        raise AckError(f"ack is malformed: {type(exc).__name__}") from exc
    public_key = pinned.get(receipt.key)
    if public_key is None:
        raise AckError(f"ack signed by key {receipt.key}, which is not pinned")
    try:
        public_key.verify(signature, ACK_CONTEXT + body)
    except InvalidSignature as exc:
        raise AckError("ack signature does not verify") from exc
    if receipt.device != device:
        raise AckError("ack is for another device")
    return receipt


def pin(*public_keys: Ed25519PublicKey) -> dict[str, Ed25519PublicKey]:
    """The pinned-key map `verify` takes, keyed by signing key id."""
    return {signing_key_id(k): k for k in public_keys}
