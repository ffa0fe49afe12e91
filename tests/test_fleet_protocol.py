"""Fleet messages: the signed remote config a station obeys or ignores, and the status model."""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import json

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from photosafe.protocol import canonical
from photosafe.protocol.consent import ImpliedCategory, StationKind, StationProfile
from photosafe.protocol.envelope import key_id
from photosafe.protocol.fleet import (
    CONFIG_CONTEXT,
    MAX_CONFIG,
    ConfigMessageRejected,
    FleetSettings,
    StationStatus,
    StatusInvalid,
    Thresholds,
    make_config,
    parse_status,
    pin,
    recipient_key_b64,
    sign_config,
    verify_config,
)

FLEET = Ed25519PrivateKey.generate()
OTHER = Ed25519PrivateKey.generate()
PINNED = pin(FLEET.public_key())
DEVICE = "ward-a-01"
NOW = dt.datetime(2026, 11, 25, 9, 30, tzinfo=dt.UTC)
SETTINGS = FleetSettings(
    location="Ward 7 (Burns)",
    profile=StationProfile(kind=StationKind.THEATRE, implied_categories=(ImpliedCategory.XRAY,)),
    thresholds=Thresholds(min_focus=55.0, patient_timeout_s=90.0),
)


def message(
    version: int = 5,
    device: str = DEVICE,
    settings: FleetSettings = SETTINGS,
    key: Ed25519PrivateKey = FLEET,
) -> bytes:
    config = make_config(fleet_key=key, device=device, version=version, settings=settings, now=NOW)
    return sign_config(config, key)


def rejected(data: bytes, *, last_version: int = 0, device: str = DEVICE) -> str:
    with pytest.raises(ConfigMessageRejected) as caught:
        verify_config(data, pinned=PINNED, device=device, last_version=last_version)
    assert caught.value.reason
    return caught.value.code


def test_a_signed_config_verifies_and_carries_its_settings() -> None:
    config = verify_config(message(), pinned=PINNED, device=DEVICE, last_version=4)
    assert config.version == 5
    assert config.settings == SETTINGS
    assert config.issued_at == NOW
    outer = json.loads(message())
    assert set(outer) == {"config", "sig"}
    assert set(outer["config"]) == {"v", "key", "device", "version", "issued_at", "settings"}
    # The signature is Ed25519 over the context string and the canonical config, as documented.
    FLEET.public_key().verify(
        base64.b64decode(outer["sig"]), CONFIG_CONTEXT + canonical.dumps(outer["config"])
    )


def test_the_new_recipient_key_travels_as_raw_base64_with_its_key_id() -> None:
    recipient = X25519PrivateKey.generate().public_key()
    settings = FleetSettings(recipient_public_key=recipient_key_b64(recipient))
    config = verify_config(message(settings=settings), pinned=PINNED, device=DEVICE)
    assert config.settings.recipient_key() == recipient
    assert config.settings.recipient_key_id() == key_id(recipient)


def test_an_unsigned_config_is_ignored() -> None:
    outer = json.loads(message())
    assert rejected(canonical.dumps({"config": outer["config"]})) == "unsigned"


def test_a_config_signed_by_a_key_not_pinned_is_ignored() -> None:
    assert rejected(message(key=OTHER)) == "unknown-key"


def test_a_wrong_signature_under_the_pinned_key_id_is_ignored() -> None:
    outer = json.loads(message())
    forged = OTHER.sign(CONFIG_CONTEXT + canonical.dumps(outer["config"]))
    outer["sig"] = base64.b64encode(forged).decode()
    assert rejected(canonical.dumps(outer)) == "bad-signature"


def test_a_changed_setting_breaks_the_signature() -> None:
    outer = json.loads(message())
    outer["config"]["settings"]["location"] = "Somewhere else"
    assert rejected(canonical.dumps(outer)) == "bad-signature"


def test_another_devices_config_is_ignored() -> None:
    assert rejected(message(device="ward-a-02")) == "wrong-device"


@pytest.mark.parametrize("last", [5, 6, 1000])
def test_a_stale_or_replayed_config_is_ignored(last: int) -> None:
    assert rejected(message(version=5), last_version=last) == "stale"


def test_a_replayed_old_config_after_a_newer_one_is_ignored() -> None:
    old, new = message(version=7), message(version=8)
    applied = verify_config(new, pinned=PINNED, device=DEVICE, last_version=7)
    assert rejected(old, last_version=applied.version) == "stale"


def test_non_canonical_oversized_and_malformed_messages_are_ignored() -> None:
    pretty = json.dumps(json.loads(message()), indent=1).encode()
    assert rejected(pretty) == "malformed"
    assert rejected(b"x" * (MAX_CONFIG + 1)) == "too-large"
    assert rejected(b"[]") == "malformed"
    outer = json.loads(message())
    outer["sig"] = outer["sig"][:-4]
    assert rejected(canonical.dumps(outer)) == "malformed"


def test_a_signed_but_invalid_config_is_ignored() -> None:
    outer = json.loads(message())
    outer["config"]["settings"]["recipient_public_key"] = base64.b64encode(b"short").decode()
    outer["config"]["settings"]["patient_name"] = "never"
    outer["sig"] = base64.b64encode(
        FLEET.sign(CONFIG_CONTEXT + canonical.dumps(outer["config"]))
    ).decode()
    assert rejected(canonical.dumps(outer)) == "invalid"


def test_a_ward_profile_with_implied_consent_cannot_be_built() -> None:
    with pytest.raises(ValueError, match="ward"):
        FleetSettings.model_validate_json(
            '{"profile": {"kind": "ward", "implied_categories": ["x-ray"]}}'
        )


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=600))
def test_arbitrary_bytes_raise_only_config_rejections(data: bytes) -> None:
    with pytest.raises(ConfigMessageRejected):
        verify_config(data, pinned=PINNED, device=DEVICE)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_any_single_byte_change_is_refused(data: st.DataObject) -> None:
    original = message()
    index = data.draw(st.integers(0, len(original) - 1))
    value = data.draw(st.integers(0, 255).filter(lambda b: b != original[index]))
    changed = original[:index] + bytes([value]) + original[index + 1 :]
    with pytest.raises(ConfigMessageRejected):
        verify_config(changed, pinned=PINNED, device=DEVICE)


@settings(max_examples=200, deadline=None)
@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=20),
        lambda inner: (
            st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
        ),
        max_leaves=20,
    )
)
def test_arbitrary_json_raises_only_config_rejections(value: object) -> None:
    for candidate in (value, {"config": value, "sig": "AA=="}, {"config": value}):
        with pytest.raises(ConfigMessageRejected):
            verify_config(canonical.dumps(candidate), pinned=PINNED, device=DEVICE)


# -- status -----------------------------------------------------------------------------------


def test_a_full_status_round_trips_and_a_will_is_a_status_too() -> None:
    status = StationStatus(
        device=DEVICE,
        online=True,
        at=NOW,
        version="0.1.0",
        profile=StationProfile(kind=StationKind.WARD),
        cert_days_left=120,
        clock_synchronised=True,
        outbox=2,
        last_error="broker-refused",
        config_version=5,
        config_error="stale",
    )
    assert parse_status(status.to_bytes(), device=DEVICE) == status
    will = StationStatus(device=DEVICE, online=False)
    assert will.to_bytes() == b'{"device":"ward-a-01","online":false,"v":1}'
    assert parse_status(will.to_bytes(), device=DEVICE) == will
    # What the station's link publishes today parses too (its will names no device).
    assert not parse_status(b'{"online":false}', device=DEVICE).online
    today = b'{"device":"ward-a-01","online":true,"outbox":0,"step":"need-operator"}'
    assert parse_status(today, device=DEVICE).step == "need-operator"


@pytest.mark.parametrize(
    "payload",
    [
        b'{"device":"ward-a-01","online":true,"patient":"9434765919"}',  # no extra fields
        b'{"device":"ward-a-01","online":true,"last_error":"NHS 943 476 5919"}',  # codes only
        b'{"device":"ward-a-01","online":"yes"}',
        b'{"device":"ward-a-02","online":true}',  # another device's topic
        b'{"device":"ward-a-01","online":false,"step":"Need Patient"}',  # codes only
        b"offline",
        b"",
    ],
)
def test_anything_but_a_station_status_is_refused(payload: bytes) -> None:
    with pytest.raises(StatusInvalid):
        parse_status(payload, device=DEVICE)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_status_bytes_raise_only_status_invalid(data: bytes) -> None:
    with contextlib.suppress(StatusInvalid):  # anything else escaping fails the test
        parse_status(data, device=DEVICE)
