"""Fleet messages: the fleet-signed remote config a station obeys, and the status it reports.

Config travels on `photosafe/v1/<device>/config`, retained, so a station that was off reads the
latest one when it connects. It carries the WHOLE desired state of the settings it names (not a
delta: a retained message replaces the previous one, so a delta would be lost):

    config = canonical JSON {"config": {"v": 1, "key": <fleet key id>, "device": <id>,
                                        "version": <int, monotonic per device>,
                                        "issued_at": <ISO 8601 UTC>,
                                        "settings": {"location"?, "profile"?, "thresholds"?,
                                                     "recipient_public_key"?}},
                             "sig": base64(Ed25519(CONFIG_CONTEXT || canonical(config)))}

`verify_config` refuses, with a `ConfigMessageRejected` whose `code` the station puts in its
status: oversized or malformed bytes, an unsigned message, a key that is not pinned, a signature
that does not verify, another device's config, and a version not above the last one applied.

Status travels on `photosafe/v1/<device>/status`, retained, with a last will of `online: false`.
`StationStatus` forbids every field it does not name, and its strings are codes and versions,
never free text, so no patient data can ride in it.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
from collections.abc import Mapping
from typing import Annotated, Literal

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
)

from photosafe.protocol import canonical
from photosafe.protocol.consent import StationProfile
from photosafe.protocol.envelope import key_id
from photosafe.protocol.errors import ProtocolError
from photosafe.protocol.manifest import DeviceId

CONFIG_CONTEXT = b"photosafe/v1 fleet config signature\x00"
MAX_CONFIG = 8192
MAX_STATUS = 2048
MAX_VERSION = 2**53 - 1  # exact in every JSON implementation

_STRICT = ConfigDict(strict=True, extra="forbid", frozen=True, hide_input_in_errors=True)

KeyId = Annotated[str, Field(pattern=r"^[0-9a-f]{16}$")]
# A short machine-readable code: never free text, so it cannot carry patient data.
ErrorCode = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9._-]{0,47}$")]
Location = Annotated[str, Field(min_length=1, max_length=80, pattern=r"^[^\x00-\x1f\x7f]+$")]


class FleetError(ProtocolError):
    """Base of what this module refuses."""


class ConfigMessageRejected(FleetError):
    """A config message the station must ignore; `code` goes into its status."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class StatusInvalid(FleetError):
    """A status message that is not a well-formed station status for its topic."""


# -- remote config ----------------------------------------------------------------------------


def fleet_key_id(public_key: Ed25519PublicKey) -> str:
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def pin(*public_keys: Ed25519PublicKey) -> dict[str, Ed25519PublicKey]:
    """The pinned-key map `verify_config` takes, keyed by fleet key id."""
    return {fleet_key_id(k): k for k in public_keys}


def _x25519_b64(value: str) -> str:
    try:
        raw = base64.b64decode(value, validate=True)
    except binascii.Error:
        raise ValueError("recipient_public_key is not base64") from None
    if len(raw) != 32 or base64.b64encode(raw).decode() != value:
        raise ValueError("recipient_public_key must be 32 raw X25519 bytes, canonical base64")
    return value


RecipientKeyB64 = Annotated[str, AfterValidator(_x25519_b64)]


class Thresholds(BaseModel):
    """Quality-gate and session limits; only those named change."""

    model_config = _STRICT
    min_focus: float | None = Field(default=None, ge=0, le=100_000)
    max_shadows_clipped: float | None = Field(default=None, ge=0, le=1)
    max_highlights_clipped: float | None = Field(default=None, ge=0, le=1)
    min_width: int | None = Field(default=None, ge=64, le=20_000)
    min_height: int | None = Field(default=None, ge=64, le=20_000)
    patient_timeout_s: float | None = Field(default=None, gt=0, le=1800)


class FleetSettings(BaseModel):
    """What a fleet config may set on a station. Absent means "as in the station's file"."""

    model_config = _STRICT
    location: Location | None = Field(default=None, description="Ward or theatre name.")
    profile: StationProfile | None = Field(default=None, description="ward or theatre + cats.")
    thresholds: Thresholds | None = None
    recipient_public_key: RecipientKeyB64 | None = Field(
        default=None, description="The gateway X25519 key to seal to: raw 32 bytes, base64."
    )

    def recipient_key(self) -> X25519PublicKey | None:
        if self.recipient_public_key is None:
            return None
        return X25519PublicKey.from_public_bytes(base64.b64decode(self.recipient_public_key))

    def recipient_key_id(self) -> str | None:
        key = self.recipient_key()
        return None if key is None else key_id(key)


class FleetConfig(BaseModel):
    """One station's desired settings, version `version`."""

    model_config = _STRICT
    v: Literal[1] = 1
    key: KeyId = Field(description="Fleet signing key id.")
    device: DeviceId
    version: int = Field(ge=1, le=MAX_VERSION, description="Monotonic per device.")
    issued_at: AwareDatetime
    settings: FleetSettings


def recipient_key_b64(public_key: X25519PublicKey) -> str:
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode()


def make_config(
    *,
    fleet_key: Ed25519PrivateKey,
    device: str,
    version: int,
    settings: FleetSettings,
    now: dt.datetime | None = None,
) -> FleetConfig:
    return FleetConfig(
        key=fleet_key_id(fleet_key.public_key()),
        device=device,
        version=version,
        issued_at=(now or dt.datetime.now(dt.UTC)).replace(microsecond=0),
        settings=settings,
    )


def sign_config(config: FleetConfig, fleet_key: Ed25519PrivateKey) -> bytes:
    """The retained config message body."""
    if config.key != fleet_key_id(fleet_key.public_key()):
        raise ValueError("the config names another fleet key than the one signing it")
    body = _config_json(config)
    signature = fleet_key.sign(CONFIG_CONTEXT + canonical.dumps(body))
    return canonical.dumps({"config": body, "sig": base64.b64encode(signature).decode()})


def verify_config(
    data: bytes,
    *,
    pinned: Mapping[str, Ed25519PublicKey],
    device: str,
    last_version: int = 0,
) -> FleetConfig:
    """The config to apply, or ConfigMessageRejected saying why to ignore it."""
    if len(data) > MAX_CONFIG:
        raise ConfigMessageRejected("too-large", f"config message over {MAX_CONFIG} bytes")
    try:
        outer = canonical.loads_canonical(data)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise ConfigMessageRejected(
            "malformed", f"not canonical JSON: {type(exc).__name__}"
        ) from None
    if not isinstance(outer, dict) or "config" not in outer:
        raise ConfigMessageRejected("malformed", "expected an object with 'config' and 'sig'")
    if "sig" not in outer:
        raise ConfigMessageRejected("unsigned", "config message carries no signature")
    if set(outer) != {"config", "sig"} or not isinstance(outer["config"], dict):
        raise ConfigMessageRejected("malformed", "expected exactly 'config' and 'sig'")
    signature = _signature(outer["sig"])
    body = canonical.dumps(outer["config"])
    key = outer["config"].get("key")
    public_key = pinned.get(key) if isinstance(key, str) else None
    if public_key is None:
        raise ConfigMessageRejected("unknown-key", "config signed by a fleet key not pinned here")
    try:
        public_key.verify(signature, CONFIG_CONTEXT + body)
    except InvalidSignature:
        raise ConfigMessageRejected("bad-signature", "config signature does not verify") from None
    try:
        config = FleetConfig.model_validate_json(body)
    except ValidationError as exc:
        fields = ", ".join(sorted({".".join(map(str, e["loc"])) for e in exc.errors()}))
        raise ConfigMessageRejected("invalid", f"signed config is not valid: {fields}") from None
    if config.device != device:
        raise ConfigMessageRejected("wrong-device", "config is for another device")
    if config.version <= last_version:
        raise ConfigMessageRejected(
            "stale", f"config version {config.version} is not newer than {last_version}"
        )
    return config


def _config_json(config: FleetConfig) -> dict[str, object]:
    return config.model_dump(mode="json", exclude_none=True)


def _signature(value: object) -> bytes:
    if not isinstance(value, str):
        raise ConfigMessageRejected("malformed", "signature is not a string")
    try:
        signature = base64.b64decode(value, validate=True)
    except binascii.Error:
        raise ConfigMessageRejected("malformed", "signature is not base64") from None
    if len(signature) != 64 or base64.b64encode(signature).decode() != value:
        raise ConfigMessageRejected("malformed", "signature is not 64 bytes in canonical base64")
    return signature


# -- station status ---------------------------------------------------------------------------

SoftwareVersion = Annotated[str, Field(pattern=r"^[0-9A-Za-z][0-9A-Za-z.+_-]{0,39}$")]


class StationStatus(BaseModel):
    """A station's retained health report. Every field but `online` is optional, so the last
    will (`online: false`, set before the connection exists) is a status too."""

    model_config = _STRICT
    v: Literal[1] = 1
    device: DeviceId | None = Field(default=None, description="If given, the topic's device.")
    online: bool
    at: AwareDatetime | None = Field(default=None, description="When this status was made.")
    version: SoftwareVersion | None = Field(default=None, description="photosafe version.")
    profile: StationProfile | None = None
    cert_days_left: int | None = Field(default=None, ge=-100_000, le=100_000)
    clock_synchronised: bool | None = None
    outbox: int | None = Field(default=None, ge=0, le=100_000, description="Captures queued.")
    last_error: ErrorCode | None = Field(default=None, description="Latest error code.")
    config_version: int | None = Field(default=None, ge=0, le=MAX_VERSION)
    config_error: ErrorCode | None = Field(
        default=None, description="Why the latest config message was ignored, if it was."
    )
    step: ErrorCode | None = Field(default=None, description="Workflow step, e.g. ready.")

    def to_bytes(self) -> bytes:
        return canonical.dumps(self.model_dump(mode="json", exclude_none=True))


def parse_status(data: bytes, *, device: str) -> StationStatus:
    """A status read from `device`'s status topic; StatusInvalid if it is anything else."""
    if len(data) > MAX_STATUS:
        raise StatusInvalid(f"status over {MAX_STATUS} bytes")
    try:
        status = StationStatus.model_validate_json(data)
    except (ValidationError, ValueError, RecursionError) as exc:
        raise StatusInvalid(f"not a station status: {type(exc).__name__}") from None
    if status.device is not None and status.device != device:
        raise StatusInvalid("status names another device than its topic")
    return status
