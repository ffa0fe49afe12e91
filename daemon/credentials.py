"""The station's keys and certificates, loaded and cross-checked once at start.

The device key signs every capture and is the TLS client identity; the certificate must be for
this device id and match the key; the gateway's recipient key is what captures are sealed to; the
pinned signing keys are the only ones whose receipts may say "stored".
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TypeVar

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey

from photosafe.daemon.config import ConfigError, StationConfig
from photosafe.protocol import ack, fleet

_T = TypeVar("_T")


@dataclass(frozen=True)
class StationKeys:
    device_key: ec.EllipticCurvePrivateKey
    device_cert: x509.Certificate
    recipient: X25519PublicKey
    pinned: dict[str, Ed25519PublicKey]
    fleet: dict[str, Ed25519PublicKey]  # keys whose config messages the station applies


def load_keys(config: StationConfig) -> StationKeys:
    """Load and cross-check; every problem is reported at once in a ConfigError."""
    problems: list[str] = []

    def read(where: str, path: Path) -> bytes:
        try:
            return path.read_bytes()
        except OSError as exc:
            problems.append(f"{where}: cannot read {path}: {exc.strerror}")
            return b""

    key_pem = read("broker.key_file", config.broker.key_file)
    cert_pem = read("broker.cert_file", config.broker.cert_file)
    recipient_pem = read("gateway.recipient_public_key", config.gateway.recipient_public_key)
    signing_pems = [
        (f"gateway.signing_public_keys.{i}", read(f"gateway.signing_public_keys.{i}", p))
        for i, p in enumerate(config.gateway.signing_public_keys)
    ]
    fleet_pems = [
        (f"fleet.public_keys.{i}", read(f"fleet.public_keys.{i}", p))
        for i, p in enumerate(config.fleet.public_keys)
    ]
    if problems:
        raise ConfigError(problems)

    device_key = _load(problems, "broker.key_file", lambda: _private_ec(key_pem))
    device_cert = _load(
        problems, "broker.cert_file", lambda: x509.load_pem_x509_certificate(cert_pem)
    )
    recipient = _load(problems, "gateway.recipient_public_key", lambda: _x25519(recipient_pem))
    signing = [_load(problems, where, partial(_ed25519, pem)) for where, pem in signing_pems]
    fleet_keys = [_load(problems, where, partial(_ed25519, pem)) for where, pem in fleet_pems]
    if device_key is not None and device_cert is not None:
        if device_cert.public_key() != device_key.public_key():
            problems.append("broker.cert_file: the certificate is not for this station's key")
        names = [
            a.value for a in device_cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
        ]
        if names != [config.device_id]:
            problems.append(
                f"broker.cert_file: certificate CN is not device_id {config.device_id!r}"
            )
    if problems:
        raise ConfigError(problems)
    assert device_key and device_cert and recipient and all(signing) and all(fleet_keys)
    return StationKeys(
        device_key,
        device_cert,
        recipient,
        ack.pin(*[k for k in signing if k]),
        fleet.pin(*[k for k in fleet_keys if k]),
    )


def _load(problems: list[str], where: str, load: Callable[[], _T]) -> _T | None:
    try:
        return load()
    except (ValueError, TypeError) as exc:
        problems.append(f"{where}: {exc}")
        return None


def _private_ec(pem: bytes) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
        raise ValueError("the device key must be an unencrypted EC P-256 private key")
    return key


def _x25519(pem: bytes) -> X25519PublicKey:
    key = serialization.load_pem_public_key(pem)
    if not isinstance(key, X25519PublicKey):
        raise ValueError("the gateway recipient key must be an X25519 public key")
    return key


def _ed25519(pem: bytes) -> Ed25519PublicKey:
    key = serialization.load_pem_public_key(pem)
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError("a signing key (gateway or fleet) must be an Ed25519 public key")
    return key
