"""The protocol test vectors, the specification against the code, and a second implementation.

(a) Our code opens each vector capture, verifies the vector ack, and refuses every negative vector
    with exactly the error class tests/vectors/vectors.json names.
(b) An independent implementation of docs/protocol.md, further down in this file, does the same.
    It is written from the document only, with cryptography's primitives (X25519 `exchange`,
    HMAC and HKDF-Expand for RFC 9180's LabeledExtract / LabeledExpand, ChaCha20Poly1305 and
    AESGCM, ECDSA and Ed25519 verify, X.509 parsing) and the standard library, and takes its
    constants from the document's constants block. It never imports photosafe.protocol.envelope
    or photosafe.protocol.ack. It is checked against RFC 9180 appendix A.1.1 and interoperates
    with our code in both directions: it opens what `seal` makes, and `open_sealed` / `verify`
    accept what it seals and signs.
(c) The constants, field tables, error table and examples in docs/protocol.md match the code and
    the vectors, so the specification cannot drift from the code silently.

The same three hold for the fleet messages (docs/protocol.md sections 18 and 19): our code
verifies the vector config message and refuses each negative config vector with the code
vectors.json names; the independent implementation verifies the config signature from the
document (it never imports photosafe.protocol.fleet); and the document's config and status
constants, field tables, refusal codes and examples match the code and the vectors.

The vectors are made by tests/vectors/make_vectors.py, which is run by hand (see its docstring).
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import inspect
import json
import re
import struct
import typing
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, hmac, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

import photosafe.protocol
from photosafe.daemon import remote_config
from photosafe.protocol import ack, canonical, envelope, errors, fleet, topics
from photosafe.protocol.ack import Receipt
from photosafe.protocol.envelope import DeviceTrust, Header
from photosafe.protocol.manifest import Manifest

REPO = Path(__file__).resolve().parent.parent
VECTORS = REPO / "tests" / "vectors"
DOC = REPO / "docs" / "protocol.md"
INDEX: dict[str, Any] = json.loads((VECTORS / "vectors.json").read_text(encoding="utf-8"))
DEVICE_ID: str = INDEX["device_id"]
OPEN_AT = dt.datetime.fromisoformat(INDEX["open_at"])
CAPTURES: list[dict[str, Any]] = INDEX["captures"]
NEGATIVE: list[dict[str, Any]] = INDEX["negative"]
OTHER_DEVICE_ID = "vector-device-02"
FLEET: dict[str, Any] = INDEX["fleet"]
CONFIGS: list[dict[str, Any]] = FLEET["configs"]
CONFIG_NEGATIVE: list[dict[str, Any]] = FLEET["negative"]
STATUSES: list[dict[str, Any]] = FLEET["statuses"]


def _vector(name: str) -> bytes:
    return (VECTORS / name).read_bytes()


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class VectorKeys:
    ca: x509.Certificate
    device_key: ec.EllipticCurvePrivateKey
    device_cert: x509.Certificate
    recipient: X25519PrivateKey
    signing: Ed25519PrivateKey


@cache
def vector_keys() -> VectorKeys:
    files = INDEX["files"]
    device_key = serialization.load_pem_private_key(_vector(files["device_key"]), None)
    recipient = serialization.load_pem_private_key(_vector(files["recipient_key"]), None)
    signing = serialization.load_pem_private_key(_vector(files["signing_key"]), None)
    assert isinstance(device_key, ec.EllipticCurvePrivateKey)
    assert isinstance(recipient, X25519PrivateKey)
    assert isinstance(signing, Ed25519PrivateKey)
    return VectorKeys(
        ca=x509.load_pem_x509_certificate(_vector(files["device_ca"])),
        device_key=device_key,
        device_cert=x509.load_pem_x509_certificate(_vector(files["device_cert"])),
        recipient=recipient,
        signing=signing,
    )


@cache
def fleet_key() -> Ed25519PrivateKey:
    key = serialization.load_pem_private_key(_vector(INDEX["files"]["fleet_key"]), None)
    assert isinstance(key, Ed25519PrivateKey)
    public = serialization.load_pem_public_key(_vector(INDEX["files"]["fleet_pub"]))
    assert isinstance(public, Ed25519PublicKey)
    assert public.public_bytes_raw() == key.public_key().public_bytes_raw()
    return key


def _crl(vector: Mapping[str, Any]) -> x509.CertificateRevocationList | None:
    return x509.load_pem_x509_crl(_vector(vector["crl"])) if "crl" in vector else None


def _now(vector: Mapping[str, Any]) -> dt.datetime:
    return dt.datetime.fromisoformat(vector["now"]) if "now" in vector else OPEN_AT


def _ids(vectors: list[dict[str, Any]], key: str) -> list[str]:
    return [str(v[key]) for v in vectors]


# ---------------------------------------------------------------------------------------------
# (a) Our code against the vectors.


def _code_open(
    sealed: bytes,
    *,
    crl: x509.CertificateRevocationList | None = None,
    now: dt.datetime = OPEN_AT,
) -> envelope.Opened:
    keys = vector_keys()
    return envelope.open_sealed(
        sealed,
        recipient_keys={envelope.key_id(keys.recipient.public_key()): keys.recipient},
        trust=DeviceTrust(keys.ca, crl),
        now=now,
    )


def _code_verify_ack(data: bytes, device: str = DEVICE_ID) -> Receipt:
    return ack.verify(data, pinned=ack.pin(vector_keys().signing.public_key()), device=device)


@pytest.mark.parametrize("vector", CAPTURES, ids=_ids(CAPTURES, "suite"))
def test_code_opens_the_vector_capture(vector: dict[str, Any]) -> None:
    sealed = _vector(vector["file"])
    assert _sha256(sealed) == vector["sha256"]
    assert len(sealed) == vector["length"]
    header = envelope.read_header(sealed)
    assert header.to_bytes().decode("ascii") == vector["header"]
    assert (header.suite, header.kid, header.device) == (
        vector["suite"],
        vector["kid"],
        vector["device_id"],
    )
    assert header.kid == envelope.key_id(vector_keys().recipient.public_key())

    opened = _code_open(sealed)
    assert opened.manifest_bytes == _vector(INDEX["manifest"]["file"])
    assert (
        _sha256(opened.manifest_bytes) == vector["manifest_sha256"] == INDEX["manifest"]["sha256"]
    )
    assert opened.image == _vector(INDEX["image"]["file"])
    assert _sha256(opened.image) == vector["image_sha256"] == INDEX["image"]["sha256"]
    assert (
        str(opened.manifest.capture_id) == vector["capture_id"] == INDEX["manifest"]["capture_id"]
    )
    assert opened.manifest.device_id == DEVICE_ID
    assert opened.device_cert == vector_keys().device_cert
    assert len(opened.signature) == vector["inner"]["signature_length"]


def test_code_verifies_the_vector_ack() -> None:
    (vector,) = INDEX["acks"]
    receipt = _code_verify_ack(_vector(vector["file"]))
    assert receipt.model_dump(mode="json") == vector["receipt"]
    assert receipt.is_stored
    assert receipt.sealed_sha256 == _sha256(_vector(vector["for_capture"]))
    assert receipt.key == vector["signing_key_id"] == INDEX["signing"]["key_id"]
    assert receipt.key == ack.signing_key_id(vector_keys().signing.public_key())


@pytest.mark.parametrize("vector", NEGATIVE, ids=_ids(NEGATIVE, "name"))
def test_code_refuses_the_negative_vector(vector: dict[str, Any]) -> None:
    expected: type[errors.ProtocolError] = getattr(errors, vector["expect"])
    data = _vector(vector["file"])
    with pytest.raises(errors.ProtocolError) as raised:
        if vector["kind"] == "capture":
            _code_open(data, crl=_crl(vector), now=_now(vector))
        else:
            _code_verify_ack(data, vector["device_id"])
    assert type(raised.value) is expected, f"{vector['why']}: got {raised.value!r}"


def _code_verify_config(data: bytes, vector: Mapping[str, Any]) -> fleet.FleetConfig:
    return fleet.verify_config(
        data,
        pinned=fleet.pin(fleet_key().public_key()),
        device=vector["device_id"],
        last_version=vector["last_version"],
    )


@pytest.mark.parametrize("vector", CONFIGS, ids=_ids(CONFIGS, "file"))
def test_code_verifies_the_vector_config(vector: dict[str, Any]) -> None:
    data = _vector(vector["file"])
    config = _code_verify_config(data, vector)
    assert config.model_dump(mode="json", exclude_none=True) == vector["config"]
    assert canonical.dumps(vector["config"]).decode("ascii") == vector["config_bytes"]
    assert config.key == FLEET["key_id"] == fleet.fleet_key_id(fleet_key().public_key())
    assert FLEET["public_raw_hex"] == fleet_key().public_key().public_bytes_raw().hex()
    assert config.device == DEVICE_ID
    assert (
        config.settings.recipient_key_id() == vector["recipient_kid"] == INDEX["recipient"]["kid"]
    )
    signed = fleet.CONFIG_CONTEXT + vector["config_bytes"].encode("ascii")
    assert signed.hex() == vector["signed_bytes_hex"]
    # Deterministic: today's code signs the same config to the same bytes.
    assert fleet.sign_config(config, fleet_key()) == data


@pytest.mark.parametrize("vector", CONFIG_NEGATIVE, ids=_ids(CONFIG_NEGATIVE, "name"))
def test_code_refuses_the_negative_config_vector(vector: dict[str, Any]) -> None:
    with pytest.raises(fleet.ConfigMessageRejected) as raised:
        _code_verify_config(_vector(vector["file"]), vector)
    assert raised.value.code == vector["expect"], f"{vector['why']}: got {raised.value!r}"


@pytest.mark.parametrize("vector", STATUSES, ids=_ids(STATUSES, "file"))
def test_code_reads_and_writes_the_vector_status(vector: dict[str, Any]) -> None:
    data = _vector(vector["file"])
    status = fleet.parse_status(data, device=vector["device_id"])
    assert status.to_bytes() == data == canonical.dumps(vector["status"])
    assert len(data) <= fleet.MAX_STATUS
    with pytest.raises(fleet.StatusInvalid):
        fleet.parse_status(data, device=OTHER_DEVICE_ID)


def test_vector_will_is_the_links_last_will() -> None:
    (will,) = [v for v in STATUSES if not v["status"]["online"]]
    assert fleet.StationStatus(device=DEVICE_ID, online=False).to_bytes() == _vector(will["file"])


# ---------------------------------------------------------------------------------------------
# (c) docs/protocol.md against the code and the vectors.


@cache
def _doc() -> str:
    return DOC.read_text(encoding="utf-8")


def _doc_block(marker: str) -> str:
    """The fenced block that follows `<!-- marker -->` in docs/protocol.md."""
    found = re.search(re.escape(f"<!-- {marker} -->") + r"\n```[a-z]*\n(.*?)\n```", _doc(), re.S)
    assert found, f"docs/protocol.md has no fenced block after <!-- {marker} -->"
    return found.group(1)


def _doc_region(marker: str) -> str:
    found = re.search(f"<!-- {marker} -->\n(.*?)<!-- /{marker} -->", _doc(), re.S)
    assert found, f"docs/protocol.md has no region <!-- {marker} --> ... <!-- /{marker} -->"
    return found.group(1)


def _doc_table_names(marker: str) -> set[str]:
    """The backticked first column of every table row inside a marked region."""
    return set(re.findall(r"^\| `([^`]+)` \|", _doc_region(marker), re.M))


@cache
def spec_constants() -> dict[str, Any]:
    """The `NAME = <JSON value>` lines of the document's constants block."""
    constants: dict[str, Any] = {}
    for line in _doc_block("spec:constants").splitlines():
        name, sep, value = line.partition(" = ")
        assert sep, f"constants line is not NAME = VALUE: {line!r}"
        constants[name.strip()] = json.loads(value)
    return constants


def spec_bytes(name: str) -> bytes:
    return str(spec_constants()[name]).encode("ascii")


def spec_str(name: str) -> str:
    value = spec_constants()[name]
    assert isinstance(value, str)
    return value


def spec_int(name: str) -> int:
    value = spec_constants()[name]
    assert isinstance(value, int)
    return value


def test_doc_constants_match_the_code() -> None:
    assert spec_bytes("MAGIC") == envelope.MAGIC
    assert spec_bytes("SIGNATURE_CONTEXT") == envelope.SIGNATURE_CONTEXT
    assert spec_bytes("ACK_CONTEXT") == ack.ACK_CONTEXT
    assert spec_str("CONTENT_TYPE") == envelope.CONTENT_TYPE
    assert spec_int("MAX_HEADER") == envelope.MAX_HEADER
    assert spec_int("MAX_ACK") == ack.MAX_ACK
    assert spec_int("PROTOCOL_VERSION") == photosafe.protocol.PROTOCOL_VERSION
    assert spec_str("SUITE_CHACHA20") == envelope.CHACHA20
    assert spec_str("SUITE_AES256GCM") == envelope.AES256GCM
    assert set(typing.get_args(envelope.SuiteName)) == {envelope.CHACHA20, envelope.AES256GCM}
    assert spec_str("TOPIC_ROOT") == topics.ROOT
    for template, make in (
        ("TOPIC_CAPTURE", topics.capture),
        ("TOPIC_ACK", topics.ack),
        ("TOPIC_STATUS", topics.status),
        ("TOPIC_CONFIG", topics.config),
    ):
        assert spec_str(template).format(device="ward-7.b_1") == make("ward-7.b_1")
    assert spec_str("GATEWAY_SUBSCRIPTION").format(group="gw") == (
        topics.gateway_capture_subscription("gw")
    )
    kid_pattern = spec_str("KEY_ID_PATTERN")
    assert Header.model_json_schema()["properties"]["kid"]["pattern"] == kid_pattern
    assert Receipt.model_json_schema()["properties"]["key"]["pattern"] == kid_pattern
    # The section 3 table of byte lengths.
    assert (len(envelope.MAGIC), len(envelope.SIGNATURE_CONTEXT), len(ack.ACK_CONTEXT)) == (
        8,
        31,
        27,
    )
    assert "| `MAGIC` | `50 53 41 46 45 00 76 31` | 8 |" in _doc()


def test_doc_fleet_constants_match_the_code() -> None:
    assert spec_bytes("CONFIG_CONTEXT") == fleet.CONFIG_CONTEXT
    assert len(fleet.CONFIG_CONTEXT) == 36
    assert "| `CONFIG_CONTEXT` | `photosafe/v1 fleet config signature` then `00` | 36 |" in _doc()
    assert spec_int("MAX_CONFIG") == fleet.MAX_CONFIG
    assert spec_int("MAX_STATUS") == fleet.MAX_STATUS
    assert spec_int("MAX_VERSION") == fleet.MAX_VERSION == 2**53 - 1
    config = fleet.FleetConfig.model_json_schema()
    assert config["properties"]["key"]["pattern"] == spec_str("KEY_ID_PATTERN")
    assert config["properties"]["version"]["maximum"] == spec_int("MAX_VERSION")
    location = fleet.FleetSettings.model_json_schema()["properties"]["location"]["anyOf"][0]
    assert location["pattern"] == spec_str("LOCATION_PATTERN")
    assert location["maxLength"] == 80
    status = fleet.StationStatus.model_json_schema()["properties"]
    for member in ("last_error", "config_error", "step"):
        assert status[member]["anyOf"][0]["pattern"] == spec_str("ERROR_CODE_PATTERN")
    assert status["version"]["anyOf"][0]["pattern"] == spec_str("SOFTWARE_VERSION_PATTERN")
    assert status["config_version"]["anyOf"][0]["maximum"] == spec_int("MAX_VERSION")
    assert f"{fleet.MAX_CONFIG} bytes (`MAX_CONFIG`)" in _doc()
    assert f"{fleet.MAX_STATUS} bytes (`MAX_STATUS`)" in _doc()


def _config_codes() -> set[str]:
    """Every ConfigMessageRejected code in verify_config, and the station's own refusals."""
    codes = set(re.findall(r'ConfigMessageRejected\(\s*"([^"]+)"', inspect.getsource(fleet)))
    codes |= set(re.findall(r'_refuse\("([^"]+)"\)', inspect.getsource(remote_config)))
    return codes


def test_doc_config_codes_are_the_codes() -> None:
    documented = _doc_table_names("errors:config")
    assert documented == _config_codes()
    assert {"no-fleet-key", "stale", "bad-signature"} <= documented
    assert {v["expect"] for v in CONFIG_NEGATIVE} <= documented
    for code in documented:  # each code names its step in the verification table
        assert re.search(rf"^\| \d+ \| .* \| `{re.escape(code)}` \|$", _doc(), re.M), code


@pytest.mark.parametrize(
    "device_id",
    ["a", "A9", "ward-a.01_x", "x" * 63, "x" * 64, "", "-lead", ".x", "a/b", "a+b", "a#", "ä"],
)
def test_doc_device_id_pattern_agrees_with_the_code(device_id: str) -> None:
    documented = re.fullmatch(spec_str("DEVICE_ID_PATTERN"), device_id) is not None
    assert topics.valid_device_id(device_id) is documented
    schema = Manifest.model_json_schema()["properties"]["device_id"]
    by_schema = (
        schema["minLength"] <= len(device_id) <= schema["maxLength"]
        and re.search(schema["pattern"], device_id) is not None
    )
    assert by_schema is documented


def _schema_paths(schema: dict[str, Any]) -> set[str]:
    """Every member path ("station.profile.kind") a pydantic JSON schema allows."""
    defs: dict[str, Any] = schema.get("$defs", {})

    def walk(node: dict[str, Any], prefix: str) -> set[str]:
        while "$ref" in node:
            node = defs[node["$ref"].rsplit("/", 1)[-1]]
        paths: set[str] = set()
        for key in ("anyOf", "oneOf", "allOf"):
            for sub in node.get(key, []):
                paths |= walk(sub, prefix)
        for name, prop in node.get("properties", {}).items():
            paths.add(prefix + name)
            paths |= walk(prop, f"{prefix}{name}.")
        return paths

    return walk(schema, "")


@pytest.mark.parametrize(
    ("marker", "model"),
    [
        ("fields:header", Header),
        ("fields:manifest", Manifest),
        ("fields:receipt", Receipt),
        ("fields:config", fleet.FleetConfig),
        ("fields:status", fleet.StationStatus),
    ],
)
def test_doc_field_tables_list_every_field_and_no_other(marker: str, model: type[Any]) -> None:
    assert _doc_table_names(marker) == _schema_paths(model.model_json_schema())


def test_doc_error_table_lists_every_envelope_error() -> None:
    documented = _doc_table_names("errors:envelope")
    assert documented == {cls.__name__ for cls in errors.EnvelopeError.__subclasses__()}
    # and every expected error in the vectors is a documented one (or AckError)
    assert {v["expect"] for v in NEGATIVE} <= documented | {"AckError"}


def test_doc_examples_are_the_vectors() -> None:
    message = "docs/protocol.md example differs from tests/vectors: update the document"
    chacha = CAPTURES[0]
    assert chacha["file"] == "capture-chacha20.bin"
    assert _doc_block("example:header").encode("ascii") == chacha["header"].encode(), message
    assert spec_canonical(json.loads(_doc_block("example:manifest"))) == _vector(
        INDEX["manifest"]["file"]
    ), message
    assert spec_canonical(json.loads(_doc_block("example:ack"))) == _vector("ack-stored.json"), (
        message
    )
    assert f"{chacha['header_length']} bytes" in _doc()
    assert f"{INDEX['manifest']['length']} bytes" in _doc()


def test_doc_fleet_examples_are_the_vectors() -> None:
    message = "docs/protocol.md example differs from tests/vectors: update the document"
    (config,) = CONFIGS
    data = _vector(config["file"])
    assert spec_canonical(json.loads(_doc_block("example:config"))) == data, message
    assert f"canonical line of\n{len(data)} bytes" in _doc(), message
    online, offline = (_vector(v["file"]) for v in STATUSES)
    assert spec_canonical(json.loads(_doc_block("example:status"))) == online, message
    assert f"canonical line of {len(online)} bytes" in _doc(), message
    assert _doc_block("example:will").encode("ascii") == offline, message
    assert f"`tests/vectors/status-offline.json`, {len(offline)} bytes" in _doc(), message


def test_doc_lists_every_config_vector() -> None:
    for vector in CONFIG_NEGATIVE:
        row = f"| `{vector['name']}` | "
        assert row in _doc(), vector["name"]
        line = _doc()[_doc().index(row) :].split("\n", 1)[0]
        assert line.endswith(f"| {vector['last_version']} | `{vector['expect']}` |"), line


def test_doc_lists_every_negative_vector() -> None:
    for vector in NEGATIVE:
        assert f"| `{vector['name']}` |" in _doc() and f"| `{vector['expect']}` |" in _doc()


def test_independent_canonical_json_is_the_codes() -> None:
    samples: list[Any] = [
        json.loads(_vector("manifest.json")),
        json.loads(_vector("ack-stored.json")),
        {"b": [1, -2, 0.5, 1e-05, 1e16, 100.0, True, None], "a": 'Zoë \U0001f600 \x7f\n"\\/'},
    ]
    for value in samples:
        assert spec_canonical(value) == canonical.dumps(value)
    assert spec_canonical({"a": "Zoë"}) == b'{"a":"Zo\\u00eb"}'


# ---------------------------------------------------------------------------------------------
# (b) An independent implementation, from docs/protocol.md only. No photosafe imports below
#     this line except in the tests that compare it with the code.


class SpecError(Exception):
    """A refusal; `name` is the error name from docs/protocol.md sections 14 and 17."""

    def __init__(self, name: str, detail: str = "") -> None:
        super().__init__(f"{name}: {detail}" if detail else name)
        self.name = name


def spec_canonical(value: Any) -> bytes:
    """Section 6."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    ).encode("ascii")


def spec_parse_canonical(data: bytes) -> Any:
    """Section 6, parsing: ASCII, JSON, and byte-identical when re-encoded. Raises ValueError."""
    value = json.loads(data.decode("ascii"))
    if spec_canonical(value) != data:
        raise ValueError("not canonical")
    return value


def _u32(n: int) -> bytes:
    return struct.pack(">I", n)


def _u16(n: int) -> bytes:
    return struct.pack(">H", n)


# --- RFC 9180, base mode (section 9) ---

_LABEL_PREFIX = b"HPKE-v1"
_AEADS: dict[int, tuple[Callable[[bytes], AESGCM | ChaCha20Poly1305], int]] = {
    1: (AESGCM, 16),  # AES-128-GCM: only for the RFC 9180 A.1.1 known-answer test
    2: (AESGCM, 32),
    3: (ChaCha20Poly1305, 32),
}
_NONCE = 12
_NENC = 32


def _suite_ids(suite: str) -> tuple[int, int, int]:
    """(kem, kdf, aead) for a header `suite`, from the document's constants."""
    aead = {
        spec_str("SUITE_CHACHA20"): spec_int("HPKE_AEAD_ID_CHACHA20POLY1305"),
        spec_str("SUITE_AES256GCM"): spec_int("HPKE_AEAD_ID_AES256GCM"),
    }[suite]
    return spec_int("HPKE_KEM_ID"), spec_int("HPKE_KDF_ID"), aead


def _labeled_extract(suite_id: bytes, salt: bytes, label: bytes, ikm: bytes) -> bytes:
    mac = hmac.HMAC(salt, hashes.SHA256())
    mac.update(_LABEL_PREFIX + suite_id + label + ikm)
    return mac.finalize()


def _labeled_expand(suite_id: bytes, prk: bytes, label: bytes, info: bytes, length: int) -> bytes:
    labeled_info = _u16(length) + _LABEL_PREFIX + suite_id + label + info
    return HKDFExpand(hashes.SHA256(), length, labeled_info).derive(prk)


def _shared_secret(kem_id: int, dh: bytes, enc: bytes, pk_rm: bytes) -> bytes:
    if dh == bytes(len(dh)):
        raise ValueError("all-zero X25519 result")
    kem_suite = b"KEM" + _u16(kem_id)
    eae_prk = _labeled_extract(kem_suite, b"", b"eae_prk", dh)
    return _labeled_expand(kem_suite, eae_prk, b"shared_secret", enc + pk_rm, 32)


def _key_schedule(
    ids: tuple[int, int, int], shared_secret: bytes, info: bytes
) -> tuple[bytes, bytes, bytes]:
    """(key, base_nonce, key_schedule_context) for base mode."""
    kem_id, kdf_id, aead_id = ids
    suite_id = b"HPKE" + _u16(kem_id) + _u16(kdf_id) + _u16(aead_id)
    psk_id_hash = _labeled_extract(suite_id, b"", b"psk_id_hash", b"")
    info_hash = _labeled_extract(suite_id, b"", b"info_hash", info)
    context = bytes([spec_int("HPKE_MODE_BASE")]) + psk_id_hash + info_hash
    secret = _labeled_extract(suite_id, shared_secret, b"secret", b"")
    key = _labeled_expand(suite_id, secret, b"key", context, _AEADS[aead_id][1])
    base_nonce = _labeled_expand(suite_id, secret, b"base_nonce", context, _NONCE)
    return key, base_nonce, context


def _raw(public_key: X25519PublicKey) -> bytes:
    return public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def spec_hpke_open(
    ids: tuple[int, int, int],
    recipient: X25519PrivateKey,
    output: bytes,
    info: bytes,
    aad: bytes = b"",
) -> bytes:
    """Open `enc || ciphertext`; raises InvalidTag or ValueError."""
    if len(output) < _NENC + 16:
        raise ValueError("HPKE output too short")
    enc, ciphertext = output[:_NENC], output[_NENC:]
    dh = recipient.exchange(X25519PublicKey.from_public_bytes(enc))
    shared = _shared_secret(ids[0], dh, enc, _raw(recipient.public_key()))
    key, nonce, _ = _key_schedule(ids, shared, info)
    return _AEADS[ids[2]][0](key).decrypt(nonce, ciphertext, aad)


def spec_hpke_seal(
    ids: tuple[int, int, int],
    recipient: X25519PublicKey,
    plaintext: bytes,
    info: bytes,
    aad: bytes = b"",
    ephemeral: X25519PrivateKey | None = None,
) -> bytes:
    ephemeral = ephemeral or X25519PrivateKey.generate()
    enc = _raw(ephemeral.public_key())
    shared = _shared_secret(ids[0], ephemeral.exchange(recipient), enc, _raw(recipient))
    key, nonce, _ = _key_schedule(ids, shared, info)
    return enc + _AEADS[ids[2]][0](key).encrypt(nonce, plaintext, aad)


# --- Opening a capture (sections 7 to 14) ---


def spec_key_id(raw_public_key: bytes) -> str:
    """Section 4."""
    return hashlib.sha256(raw_public_key).digest()[:8].hex()


_HEADER_MEMBERS = {"v", "suite", "kid", "device", "capture", "created"}
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_DATE_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)")
_STAFF_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")


def _is_device_id(value: Any) -> bool:
    return isinstance(value, str) and re.fullmatch(spec_str("DEVICE_ID_PATTERN"), value) is not None


def _spec_header(data: bytes) -> dict[str, Any]:
    """Section 8."""
    try:
        header = spec_parse_canonical(data)
    except ValueError as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise SpecError("MalformedEnvelope", "header is not canonical JSON") from exc
    valid = (
        isinstance(header, dict)
        and set(header) == _HEADER_MEMBERS
        and type(header["v"]) is int
        and header["v"] == spec_int("PROTOCOL_VERSION")
        and header["suite"] in (spec_str("SUITE_CHACHA20"), spec_str("SUITE_AES256GCM"))
        and isinstance(header["kid"], str)
        and re.fullmatch(spec_str("KEY_ID_PATTERN"), header["kid"]) is not None
        and _is_device_id(header["device"])
        and isinstance(header["capture"], str)
        and _UUID.fullmatch(header["capture"]) is not None
        and isinstance(header["created"], str)
        and _DATE_TIME.fullmatch(header["created"]) is not None
    )
    if not valid:
        raise SpecError("MalformedEnvelope", "header members")
    return typing.cast(dict[str, Any], header)


def _spec_inner(plaintext: bytes) -> tuple[bytes, bytes, bytes, bytes]:
    """Section 10."""
    try:
        (m,) = struct.unpack_from(">I", plaintext, 0)
        manifest = plaintext[4 : 4 + m]
        (s,) = struct.unpack_from(">H", plaintext, 4 + m)
        signature = plaintext[6 + m : 6 + m + s]
        (c,) = struct.unpack_from(">H", plaintext, 6 + m + s)
        cert = plaintext[8 + m + s : 8 + m + s + c]
    except struct.error as exc:
        raise SpecError("MalformedEnvelope", "inner layout") from exc
    if (len(manifest), len(signature), len(cert)) != (m, s, c):
        raise SpecError("MalformedEnvelope", "inner layout")
    return manifest, signature, cert, plaintext[8 + m + s + c :]


def _chains_to(cert: x509.Certificate, ca: x509.Certificate, now: dt.datetime) -> bool:
    """Section 12: issued directly by the CA, for client authentication."""
    ca_key = ca.public_key()
    if cert.issuer != ca.subject or not isinstance(ca_key, ec.EllipticCurvePublicKey):
        return False
    if not ca.not_valid_before_utc <= now <= ca.not_valid_after_utc:
        return False
    algorithm = cert.signature_hash_algorithm
    if algorithm is None:
        return False
    try:
        ca_key.verify(cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(algorithm))
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
        usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except (InvalidSignature, x509.ExtensionNotFound):
        return False
    return not constraints.ca and ExtendedKeyUsageOID.CLIENT_AUTH in usages


def _identities(cert: x509.Certificate) -> set[str]:
    names = {str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)}
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return names | set(san.get_values_for_type(x509.DNSName))


def _spec_certificate(
    der: bytes,
    device: str,
    ca: x509.Certificate,
    crl: x509.CertificateRevocationList | None,
    now: dt.datetime,
) -> ec.EllipticCurvePublicKey:
    """Section 14, steps 7 to 12."""
    try:
        cert = x509.load_der_x509_certificate(der)
    except ValueError as exc:
        raise SpecError("MalformedEnvelope", "certificate DER") from exc
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        raise SpecError("CertificateExpired")
    if not _chains_to(cert, ca, now):
        raise SpecError("UntrustedCertificate")
    if crl is not None and crl.get_revoked_certificate_by_serial_number(cert.serial_number):
        raise SpecError("CertificateRevoked")
    if _identities(cert) != {device}:
        raise SpecError("DeviceMismatch")
    key = cert.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise SpecError("UntrustedCertificate", "key is not P-256")
    return key


def _spec_manifest_problem(manifest: Any) -> str | None:
    """Section 13, the members a gateway must read and the safety rules of 13.1."""
    if not isinstance(manifest, dict):
        return "not an object"
    required = {"capture_id", "device_id", "captured_at", "station", "patient", "operator"}
    required |= {"consent", "image"}
    optional = {"version", "chaperone", "body_site", "intimate", "patient_approved"}
    optional |= {"quality", "camera"}
    if not required <= set(manifest) <= required | optional:
        return "members"
    if manifest.get("version", 1) != 1 or type(manifest.get("version", 1)) is not int:
        return "version"
    if not _is_device_id(manifest["device_id"]) or not isinstance(manifest["capture_id"], str):
        return "ids"
    station, consent, image = manifest["station"], manifest["consent"], manifest["image"]
    if station.get("device_id") != manifest["device_id"]:
        return "rule 1: station.device_id"
    profile = station["profile"]
    categories = profile.get("implied_categories", [])
    kind = consent.get("kind")
    if kind == "implied" and (
        profile["kind"] != "theatre" or consent["category"] not in categories
    ):
        return "rule 2: implied consent at this station"
    if profile["kind"] == "ward" and categories:
        return "rule 3: ward with implied categories"
    if kind in ("implied", "best-interests") and (
        consent.get("purposes", ["care"]) != ["care"] or consent.get("deidentified_use", False)
    ):
        return "rule 4: care only"
    if kind in ("explicit", "parental") and not consent.get("purposes"):
        return "rule 5: purposes"
    if kind not in ("explicit", "parental", "implied", "best-interests"):
        return "consent.kind"
    if manifest.get("intimate", False):
        chaperone = manifest.get("chaperone")
        if not isinstance(chaperone, dict) or not _STAFF_ID.fullmatch(chaperone["staff_id"]):
            return "rule 6: chaperone"
        if chaperone["staff_id"] == manifest["operator"]["staff_id"]:
            return "rule 6: chaperone is the operator"
        if manifest.get("patient_approved") is not True:
            return "rule 6: patient approval"
    if not (
        image.get("media_type") == "image/jpeg"
        and type(image.get("size")) is int
        and image["size"] >= 1
        and re.fullmatch(r"[0-9a-f]{64}", str(image.get("sha256"))) is not None
    ):
        return "image"
    return None


@dataclass(frozen=True)
class SpecOpened:
    header: dict[str, Any]
    manifest_bytes: bytes
    manifest: dict[str, Any]
    image: bytes


def spec_open(
    sealed: bytes,
    *,
    recipients: Mapping[str, X25519PrivateKey],
    ca: x509.Certificate,
    crl: x509.CertificateRevocationList | None = None,
    now: dt.datetime,
) -> SpecOpened:
    """Section 14, in order."""
    magic = spec_bytes("MAGIC")
    if len(sealed) < len(magic) + 4 or sealed[: len(magic)] != magic:  # 1
        raise SpecError("MalformedEnvelope", "magic")
    (length,) = struct.unpack_from(">I", sealed, len(magic))
    start = len(magic) + 4
    if not 1 <= length <= spec_int("MAX_HEADER") or start + length > len(sealed):  # 2
        raise SpecError("MalformedEnvelope", "header length")
    header_bytes = sealed[start : start + length]
    header = _spec_header(header_bytes)  # 3
    recipient = recipients.get(header["kid"])
    if recipient is None:  # 4
        raise SpecError("UnknownRecipientKey")
    try:  # 5
        plaintext = spec_hpke_open(
            _suite_ids(header["suite"]), recipient, sealed[start + length :], header_bytes
        )
    except (InvalidTag, ValueError) as exc:
        raise SpecError("DecryptionFailed") from exc
    manifest_bytes, signature, cert_der, image = _spec_inner(plaintext)  # 6
    device_key = _spec_certificate(cert_der, header["device"], ca, crl, now)  # 7 to 12
    signed = (
        spec_bytes("SIGNATURE_CONTEXT")
        + _u32(len(header_bytes)) + header_bytes
        + _u32(len(manifest_bytes)) + manifest_bytes
    )  # fmt: skip
    try:  # 13
        device_key.verify(signature, signed, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature as exc:
        raise SpecError("BadSignature") from exc
    try:  # 14
        manifest = spec_parse_canonical(manifest_bytes)
    except ValueError as exc:
        raise SpecError("ManifestInvalid", "not canonical JSON") from exc
    problem = _spec_manifest_problem(manifest)
    if problem:
        raise SpecError("ManifestInvalid", problem)
    same_capture = uuid.UUID(manifest["capture_id"]) == uuid.UUID(header["capture"])
    if not same_capture or manifest["device_id"] != header["device"]:  # 15
        raise SpecError("ManifestInvalid", "differs from the header")
    if len(image) != manifest["image"]["size"] or _sha256(image) != manifest["image"]["sha256"]:
        raise SpecError("DigestMismatch")  # 16
    return SpecOpened(header, manifest_bytes, manifest, image)


def spec_seal(
    *,
    manifest: bytes,
    image: bytes,
    device_key: ec.EllipticCurvePrivateKey,
    device_cert_der: bytes,
    recipient: X25519PublicKey,
    suite: str,
    device: str,
    capture: str,
    created: str,
) -> bytes:
    """Sections 7 to 11, station side."""
    header = spec_canonical(
        {
            "v": spec_int("PROTOCOL_VERSION"),
            "suite": suite,
            "kid": spec_key_id(_raw(recipient)),
            "device": device,
            "capture": capture,
            "created": created,
        }
    )
    signed = spec_bytes("SIGNATURE_CONTEXT") + _u32(len(header)) + header
    signature = device_key.sign(signed + _u32(len(manifest)) + manifest, ec.ECDSA(hashes.SHA256()))
    inner = (
        _u32(len(manifest)) + manifest
        + _u16(len(signature)) + signature
        + _u16(len(device_cert_der)) + device_cert_der
        + image
    )  # fmt: skip
    output = spec_hpke_seal(_suite_ids(suite), recipient, inner, header)
    return spec_bytes("MAGIC") + _u32(len(header)) + header + output


# --- Acks (sections 16 and 17) ---

_RECEIPT_MEMBERS = {"v", "key", "device", "capture", "status", "reason", "record"}
_RECEIPT_MEMBERS |= {"sealed_sha256", "gateway_time"}


def spec_sign_ack(receipt: dict[str, Any], signing_key: Ed25519PrivateKey) -> bytes:
    signature = signing_key.sign(spec_bytes("ACK_CONTEXT") + spec_canonical(receipt))
    return spec_canonical({"receipt": receipt, "sig": base64.b64encode(signature).decode()})


def spec_verify_ack(
    data: bytes, *, pinned: Mapping[str, Ed25519PublicKey], device: str
) -> dict[str, Any]:
    """Section 17, steps 1 to 7. Raises SpecError("AckError")."""
    if len(data) > spec_int("MAX_ACK"):
        raise SpecError("AckError", "too large")
    try:
        outer = spec_parse_canonical(data)
        if not isinstance(outer, dict) or set(outer) != {"receipt", "sig"}:
            raise ValueError("members")
        receipt, sig = outer["receipt"], outer["sig"]
        if not isinstance(sig, str):
            raise ValueError("sig is not a string")
        signature = base64.b64decode(sig, validate=True)
        if base64.b64encode(signature).decode() != sig:
            raise ValueError("sig is not canonical base64")
    except (ValueError, binascii.Error) as exc:
        raise SpecError("AckError", "malformed") from exc
    valid = (
        isinstance(receipt, dict)
        and set(receipt) == _RECEIPT_MEMBERS
        and receipt["v"] == 1
        and receipt["status"] in ("stored", "duplicate", "rejected")
        and _is_device_id(receipt["device"])
        and isinstance(receipt["key"], str)
        and re.fullmatch(spec_str("KEY_ID_PATTERN"), receipt["key"]) is not None
        and re.fullmatch(r"[0-9a-f]{64}", str(receipt["sealed_sha256"])) is not None
    )
    if not valid:
        raise SpecError("AckError", "receipt members")
    public_key = pinned.get(receipt["key"])
    if public_key is None:
        raise SpecError("AckError", "key not pinned")
    try:
        public_key.verify(signature, spec_bytes("ACK_CONTEXT") + spec_canonical(receipt))
    except InvalidSignature as exc:
        raise SpecError("AckError", "signature") from exc
    if receipt["device"] != device:
        raise SpecError("AckError", "another device")
    return typing.cast(dict[str, Any], receipt)


def _spec_pin(*keys: Ed25519PublicKey) -> dict[str, Ed25519PublicKey]:
    return {spec_key_id(k.public_bytes_raw()): k for k in keys}


def _spec_recipients() -> dict[str, X25519PrivateKey]:
    key = vector_keys().recipient
    return {spec_key_id(_raw(key.public_key())): key}


def _spec_open_vector(
    sealed: bytes,
    *,
    crl: x509.CertificateRevocationList | None = None,
    now: dt.datetime = OPEN_AT,
) -> SpecOpened:
    if crl is not None:  # section 12: the gateway checks the CRL's signature when it loads it
        ca_key = vector_keys().ca.public_key()
        assert isinstance(ca_key, ec.EllipticCurvePublicKey)
        assert crl.is_signature_valid(ca_key)
    return spec_open(sealed, recipients=_spec_recipients(), ca=vector_keys().ca, crl=crl, now=now)


# --- tests of the independent implementation ---

# RFC 9180 appendix A.1.1: DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, AES-128-GCM, base mode.
_RFC_A11 = {
    "skEm": "52c4a758a802cd8b936eceea314432798d5baf2d7e9235dc084ab1b9cfa2f736",
    "skRm": "4612c550263fc8ad58375df3f557aac531d26850903e55a9f23f21d8534e8ac8",
    "pkRm": "3948cfe0ad1ddb695d780e59077195da6c56506b027329794ab02bca80815c4d",
    "enc": "37fda3567bdbd628e88668c3c8d7e97d1d1253b6d4ea6d44c150f741f1bf4431",
    "info": "4f6465206f6e2061204772656369616e2055726e",
    "shared_secret": "fe0e18c9f024ce43799ae393c7e8fe8fce9d218875e8227b0187c04e7d2ea1fc",
    "key_schedule_context": "00725611c9d98c07c03f60095cd32d400d8347d45ed67097bbad50fc56da742d"
    "07cb6cffde367bb0565ba28bb02c90744a20f5ef37f30523526106f637abb05449",
    "key": "4531685d41d65f03dc48f6b8302c05b0",
    "base_nonce": "56d890e5accaaf011cff4b7d",
    "pt": "4265617574792069732074727574682c20747275746820626561757479",
    "aad": "436f756e742d30",
    "ct": "f938558b5d72f1a23810b4be2ab4f84331acc02fc97babc53a52ae8218a355a9"
    "6d8770ac83d07bea87e13c512a",
}


def test_independent_hpke_matches_rfc_9180_a_1_1() -> None:
    v = {k: bytes.fromhex(h) for k, h in _RFC_A11.items()}
    ids = (0x0020, 0x0001, 0x0001)
    recipient = X25519PrivateKey.from_private_bytes(v["skRm"])
    assert _raw(recipient.public_key()) == v["pkRm"]
    dh = recipient.exchange(X25519PublicKey.from_public_bytes(v["enc"]))
    shared = _shared_secret(ids[0], dh, v["enc"], v["pkRm"])
    assert shared == v["shared_secret"]
    key, nonce, context = _key_schedule(ids, shared, v["info"])
    assert (key, nonce, context) == (v["key"], v["base_nonce"], v["key_schedule_context"])
    assert spec_hpke_open(ids, recipient, v["enc"] + v["ct"], v["info"], v["aad"]) == v["pt"]
    ephemeral = X25519PrivateKey.from_private_bytes(v["skEm"])
    sealed = spec_hpke_seal(
        ids, recipient.public_key(), v["pt"], v["info"], v["aad"], ephemeral=ephemeral
    )
    assert sealed == v["enc"] + v["ct"]


@pytest.mark.parametrize("vector", CAPTURES, ids=_ids(CAPTURES, "suite"))
def test_independent_implementation_opens_the_vector_capture(vector: dict[str, Any]) -> None:
    sealed = _vector(vector["file"])
    opened = _spec_open_vector(sealed)
    length = vector["header_length"]
    assert sealed[12 : 12 + length].decode("ascii") == vector["header"]
    assert sealed[12 + length : 44 + length].hex() == vector["enc_hex"]
    assert opened.header["kid"] == vector["kid"] == INDEX["recipient"]["kid"]
    assert opened.header["capture"] == vector["capture_id"]
    assert opened.manifest_bytes == _vector(INDEX["manifest"]["file"])
    assert _sha256(opened.manifest_bytes) == vector["manifest_sha256"]
    assert opened.image == _vector(INDEX["image"]["file"])
    assert _sha256(opened.image) == vector["image_sha256"]
    inner = vector["inner"]
    assert len(sealed) - 12 - length - 32 - 16 == inner["plaintext_length"]
    assert inner["manifest_length"] == len(opened.manifest_bytes)
    assert inner["image_length"] == len(opened.image)


def test_independent_implementation_verifies_the_vector_ack() -> None:
    (vector,) = INDEX["acks"]
    data = _vector(vector["file"])
    pinned = _spec_pin(vector_keys().signing.public_key())
    receipt = spec_verify_ack(data, pinned=pinned, device=DEVICE_ID)
    assert receipt == vector["receipt"]
    assert spec_canonical(receipt).decode("ascii") == vector["receipt_bytes"]
    assert receipt["sealed_sha256"] == _sha256(_vector(vector["for_capture"]))  # section 17, 8
    assert receipt["key"] == vector["signing_key_id"]
    assert (
        INDEX["signing"]["public_raw_hex"]
        == vector_keys().signing.public_key().public_bytes_raw().hex()
    )
    assert data.decode("ascii").startswith('{"receipt":' + vector["receipt_bytes"] + ',"sig":"')


@pytest.mark.parametrize("vector", NEGATIVE, ids=_ids(NEGATIVE, "name"))
def test_independent_implementation_refuses_with_the_same_error(vector: dict[str, Any]) -> None:
    data = _vector(vector["file"])
    with pytest.raises(SpecError) as raised:
        if vector["kind"] == "capture":
            _spec_open_vector(data, crl=_crl(vector), now=_now(vector))
        else:
            pinned = _spec_pin(vector_keys().signing.public_key())
            spec_verify_ack(data, pinned=pinned, device=vector["device_id"])
    assert raised.value.name == vector["expect"], f"{vector['why']}: got {raised.value}"


@pytest.mark.parametrize("suite", [envelope.CHACHA20, envelope.AES256GCM])
def test_independent_implementation_opens_what_seal_makes_now(suite: envelope.SuiteName) -> None:
    """Fresh output of today's code, not only the stored vectors."""
    keys = vector_keys()
    manifest = Manifest.from_bytes(_vector("manifest.json"))
    image = _vector("image.jpg")
    sealed = envelope.seal(
        manifest,
        image,
        device_key=keys.device_key,
        device_cert=keys.device_cert,
        recipient=keys.recipient.public_key(),
        suite=suite,
    )
    opened = _spec_open_vector(sealed, now=dt.datetime.now(dt.UTC))
    assert opened.header["suite"] == suite
    assert opened.manifest_bytes == manifest.to_bytes()
    assert opened.image == image


@pytest.mark.parametrize("suite", [envelope.CHACHA20, envelope.AES256GCM])
def test_code_opens_what_the_independent_implementation_seals(suite: str) -> None:
    keys = vector_keys()
    capture = str(uuid.uuid4())
    manifest = spec_canonical({**json.loads(_vector("manifest.json")), "capture_id": capture})
    sealed = spec_seal(
        manifest=manifest,
        image=_vector("image.jpg"),
        device_key=keys.device_key,
        device_cert_der=keys.device_cert.public_bytes(serialization.Encoding.DER),
        recipient=keys.recipient.public_key(),
        suite=suite,
        device=DEVICE_ID,
        capture=capture,
        created="2026-11-25T09:45:00Z",
    )
    opened = _code_open(sealed)
    assert opened.header.suite == suite
    assert str(opened.header.capture) == capture
    assert opened.manifest_bytes == manifest
    assert opened.image == _vector("image.jpg")

    # The independent gateway's receipt for it verifies on the station.
    receipt = {
        "v": 1,
        "key": spec_key_id(keys.signing.public_key().public_bytes_raw()),
        "device": DEVICE_ID,
        "capture": capture,
        "status": "duplicate",
        "reason": None,
        "record": "PS-ü-1",
        "sealed_sha256": _sha256(sealed),
        "gateway_time": "2026-11-25T09:45:01.5+01:00",
    }
    verified = _code_verify_ack(spec_sign_ack(receipt, keys.signing))
    assert verified.is_stored
    assert str(verified.capture) == capture
    assert verified.sealed_sha256 == _sha256(sealed)
    assert verified.record == "PS-ü-1"


def test_code_ack_verifies_in_the_independent_implementation() -> None:
    keys = vector_keys()
    body = ack.sign(
        ack.make_receipt(
            signing_key=keys.signing,
            device=DEVICE_ID,
            capture=uuid.uuid4(),
            sealed=b"sealed bytes",
            status=ack.AckStatus.REJECTED,
            reason="DecryptionFailed: Zoë's header was altered",
        ),
        keys.signing,
    )
    receipt = spec_verify_ack(body, pinned=_spec_pin(keys.signing.public_key()), device=DEVICE_ID)
    assert receipt["status"] == "rejected"
    assert receipt["sealed_sha256"] == _sha256(b"sealed bytes")


# --- Remote config (section 18), independently: no photosafe.protocol.fleet below ---

_CONFIG_MEMBERS = {"v", "key", "device", "version", "issued_at", "settings"}
_SETTINGS_MEMBERS = {"location", "profile", "thresholds", "recipient_public_key"}
_THRESHOLDS = {
    "min_focus": (float, 0, 100_000),
    "max_shadows_clipped": (float, 0, 1),
    "max_highlights_clipped": (float, 0, 1),
    "min_width": (int, 64, 20_000),
    "min_height": (int, 64, 20_000),
    "patient_timeout_s": (float, 0, 1800),  # above 0
}


def spec_sign_config(config: dict[str, Any], fleet_signing_key: Ed25519PrivateKey) -> bytes:
    """Section 18.3."""
    signature = fleet_signing_key.sign(spec_bytes("CONFIG_CONTEXT") + spec_canonical(config))
    return spec_canonical({"config": config, "sig": base64.b64encode(signature).decode()})


def _spec_config_problem(config: dict[str, Any]) -> str | None:
    """Section 18.2, the table: the member that is wrong, or None."""
    if set(config) != _CONFIG_MEMBERS:
        return "members"
    version = config["version"]
    if config["v"] != 1 or type(config["v"]) is not int:
        return "v"
    if type(version) is not int or not 1 <= version <= spec_int("MAX_VERSION"):
        return "version"
    if not _is_device_id(config["device"]):
        return "device"
    try:
        issued = dt.datetime.fromisoformat(config["issued_at"])
    except (TypeError, ValueError):
        return "issued_at"
    if issued.tzinfo is None:
        return "issued_at"
    settings = config["settings"]
    if not isinstance(settings, dict) or not set(settings) <= _SETTINGS_MEMBERS:
        return "settings"
    settings = {name: value for name, value in settings.items() if value is not None}
    location = settings.get("location", "x")
    if not (
        isinstance(location, str)
        and len(location) <= 80
        and re.fullmatch(spec_str("LOCATION_PATTERN"), location)
    ):
        return "settings.location"
    thresholds = settings.get("thresholds", {})
    if not isinstance(thresholds, dict) or not set(thresholds) <= set(_THRESHOLDS):
        return "settings.thresholds"
    for name, value in thresholds.items():
        kind, low, high = _THRESHOLDS[name]
        allowed = (int, float) if kind is float else (int,)
        if value is None:
            continue
        if type(value) not in allowed or not low <= value <= high:
            return f"settings.thresholds.{name}"
        if name == "patient_timeout_s" and value <= 0:
            return f"settings.thresholds.{name}"
    if "recipient_public_key" in settings:
        text = settings["recipient_public_key"]
        try:
            raw = base64.b64decode(text, validate=True) if isinstance(text, str) else b""
        except binascii.Error:
            raw = b""
        if len(raw) != 32 or base64.b64encode(raw).decode() != text:
            return "settings.recipient_public_key"
    profile = settings.get("profile", {"kind": "ward"})
    if not isinstance(profile, dict) or profile.get("kind") not in ("ward", "theatre"):
        return "settings.profile"
    if profile["kind"] == "ward" and profile.get("implied_categories"):
        return "settings.profile.implied_categories"
    return None


def spec_verify_config(
    data: bytes,
    *,
    pinned: Mapping[str, Ed25519PublicKey],
    device: str,
    last_version: int = 0,
) -> dict[str, Any]:
    """Section 18.4, steps 3 to 13; SpecError(code) names the step that failed."""
    if len(data) > spec_int("MAX_CONFIG"):  # 3
        raise SpecError("too-large")
    try:  # 4
        outer = spec_parse_canonical(data)
    except ValueError as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise SpecError("malformed", "not canonical JSON") from exc
    if not isinstance(outer, dict) or "config" not in outer:  # 5
        raise SpecError("malformed", "no config")
    if "sig" not in outer:  # 6
        raise SpecError("unsigned")
    if set(outer) != {"config", "sig"} or not isinstance(outer["config"], dict):  # 7
        raise SpecError("malformed", "members")
    config, sig = outer["config"], outer["sig"]
    try:  # 8
        signature = base64.b64decode(sig, validate=True) if isinstance(sig, str) else b""
    except binascii.Error:
        signature = b""
    if len(signature) != 64 or base64.b64encode(signature).decode() != sig:
        raise SpecError("malformed", "sig")
    key = config.get("key")
    public_key = pinned.get(key) if isinstance(key, str) else None
    if public_key is None:  # 9
        raise SpecError("unknown-key")
    try:  # 10
        public_key.verify(signature, spec_bytes("CONFIG_CONTEXT") + spec_canonical(config))
    except InvalidSignature as exc:
        raise SpecError("bad-signature") from exc
    problem = _spec_config_problem(config)
    if problem or re.fullmatch(spec_str("KEY_ID_PATTERN"), str(key)) is None:  # 11
        raise SpecError("invalid", problem or "key")
    if config["device"] != device:  # 12
        raise SpecError("wrong-device")
    if config["version"] <= last_version:  # 13
        raise SpecError("stale")
    return typing.cast(dict[str, Any], config)


def _spec_fleet_pin() -> dict[str, Ed25519PublicKey]:
    return _spec_pin(fleet_key().public_key())  # fleet key id: section 18.3 = section 4


@pytest.mark.parametrize("vector", CONFIGS, ids=_ids(CONFIGS, "file"))
def test_independent_implementation_verifies_the_vector_config(vector: dict[str, Any]) -> None:
    data = _vector(vector["file"])
    config = spec_verify_config(
        data,
        pinned=_spec_fleet_pin(),
        device=vector["device_id"],
        last_version=vector["last_version"],
    )
    assert config == vector["config"]
    assert config["key"] == FLEET["key_id"]
    assert spec_key_id(bytes.fromhex(FLEET["public_raw_hex"])) == FLEET["key_id"]
    body = spec_canonical(config)
    assert data.decode("ascii").startswith('{"config":' + body.decode("ascii") + ',"sig":"')
    assert (spec_bytes("CONFIG_CONTEXT") + body).hex() == vector["signed_bytes_hex"]
    raw = base64.b64decode(config["settings"]["recipient_public_key"])
    assert spec_key_id(raw) == vector["recipient_kid"]
    assert spec_sign_config(config, fleet_key()) == data  # Ed25519 is deterministic
    # A station that applied it refuses the same message again (section 18.5).
    with pytest.raises(SpecError, match="stale"):
        spec_verify_config(
            data, pinned=_spec_fleet_pin(), device=DEVICE_ID, last_version=config["version"]
        )


@pytest.mark.parametrize("vector", CONFIG_NEGATIVE, ids=_ids(CONFIG_NEGATIVE, "name"))
def test_independent_implementation_refuses_the_config_with_the_same_code(
    vector: dict[str, Any],
) -> None:
    with pytest.raises(SpecError) as raised:
        spec_verify_config(
            _vector(vector["file"]),
            pinned=_spec_fleet_pin(),
            device=vector["device_id"],
            last_version=vector["last_version"],
        )
    assert raised.value.name == vector["expect"], f"{vector['why']}: got {raised.value}"


_CONFIG_CASES: list[tuple[str, Callable[[dict[str, Any]], bytes], str]] = [
    ("too large", lambda o: b" " * 8193, "too-large"),
    ("not ascii", lambda o: spec_canonical(o).replace(b"Room", "R\u00f6om".encode()), "malformed"),
    ("array", lambda o: b"[]", "malformed"),
    ("unsigned", lambda o: spec_canonical({"config": o["config"]}), "unsigned"),
    ("extra member", lambda o: spec_canonical({**o, "x": 1}), "malformed"),
    ("sig not base64", lambda o: spec_canonical({**o, "sig": "!" * 88}), "malformed"),
    ("sig short", lambda o: spec_canonical({**o, "sig": o["sig"][:84] + "===="}), "malformed"),
    (
        "key not a string",
        lambda o: spec_canonical({**o, "config": {**o["config"], "key": 7}}),
        "unknown-key",
    ),
]


@pytest.mark.parametrize(
    ("change", "expect"),
    [(c[1], c[2]) for c in _CONFIG_CASES],
    ids=[c[0] for c in _CONFIG_CASES],
)
def test_code_and_independent_refuse_altered_configs_alike(
    change: Callable[[dict[str, Any]], bytes], expect: str
) -> None:
    data = change(json.loads(_vector(CONFIGS[0]["file"])))
    with pytest.raises(fleet.ConfigMessageRejected) as by_code:
        fleet.verify_config(data, pinned=fleet.pin(fleet_key().public_key()), device=DEVICE_ID)
    with pytest.raises(SpecError) as by_spec:
        spec_verify_config(data, pinned=_spec_fleet_pin(), device=DEVICE_ID)
    assert by_code.value.code == by_spec.value.name == expect


@pytest.mark.parametrize(
    ("settings", "valid"),
    [
        ({"thresholds": {"min_width": 1280.0}}, False),
        ({"thresholds": {"min_focus": 120}}, True),
        ({"thresholds": {"patient_timeout_s": 0.0}}, False),
        ({"thresholds": {"max_shadows_clipped": 1.5}}, False),
        ({"location": "Ward\n7"}, False),
        ({"location": "x" * 81}, False),
        ({"location": "Zo\u00eb ward"}, True),
        ({"profile": {"kind": "ward", "implied_categories": ["x-ray"]}}, False),
        ({"profile": {"kind": "theatre", "implied_categories": ["x-ray"]}}, True),
        ({"recipient_public_key": base64.b64encode(bytes(31)).decode()}, False),
        ({"colour": "red"}, False),
        ({}, True),
    ],
)
def test_code_and_independent_agree_on_signed_settings(
    settings: dict[str, Any], valid: bool
) -> None:
    """The independent signer's messages: the code applies what the document allows."""
    config = {
        "v": 1,
        "key": spec_key_id(fleet_key().public_key().public_bytes_raw()),
        "device": DEVICE_ID,
        "version": 1795593600,
        "issued_at": "2026-11-25T09:00:00+01:00",
        "settings": settings,
    }
    data = spec_sign_config(config, fleet_key())
    pinned = fleet.pin(fleet_key().public_key())
    if valid:
        assert spec_verify_config(data, pinned=_spec_fleet_pin(), device=DEVICE_ID) == config
        verified = fleet.verify_config(data, pinned=pinned, device=DEVICE_ID)
        assert verified.version == config["version"]
    else:
        for verify in (
            lambda: spec_verify_config(data, pinned=_spec_fleet_pin(), device=DEVICE_ID),
            lambda: fleet.verify_config(data, pinned=pinned, device=DEVICE_ID),
        ):
            with pytest.raises((SpecError, fleet.ConfigMessageRejected)) as raised:
                verify()
            assert getattr(raised.value, "code", getattr(raised.value, "name", "")) == "invalid"


def test_independent_implementation_verifies_what_the_fleet_manager_signs_now() -> None:
    """Fresh output of today's code (make_config + sign_config), not only the stored vector."""
    settings = fleet.FleetSettings(
        location="Theatre 2",
        recipient_public_key=fleet.recipient_key_b64(vector_keys().recipient.public_key()),
    )
    config = fleet.make_config(
        fleet_key=fleet_key(), device=DEVICE_ID, version=1795593601, settings=settings
    )
    data = fleet.sign_config(config, fleet_key())
    verified = spec_verify_config(data, pinned=_spec_fleet_pin(), device=DEVICE_ID, last_version=3)
    assert verified["settings"] == {
        "location": "Theatre 2",
        "recipient_public_key": settings.recipient_public_key,
    }
    assert verified["issued_at"].endswith("Z")
