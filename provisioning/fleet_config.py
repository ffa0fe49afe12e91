"""Remote config for stations: sign it with the fleet key, rotate the gateway key, publish.

The CA folder keeps, per station, the last config version and the whole desired settings in
`fleet-state.json`. A change merges into them and the result is signed as the next version: the
retained message on a config topic always carries everything the fleet has set, because it
replaces the one before. Versions are max(previous + 1, Unix time in seconds), so they keep rising
even if the state file is lost.

Gateway recipient-key rotation (`rotate-gateway-key`):
  1. a new X25519 key `recipient-<kid>.key` / `.pub` is made in the gateway folder; old keys stay;
  2. the operator adds the new key to the gateway's `keys.recipient_keys` and restarts it, so the
     gateway can open captures sealed to either key;
  3. the signed config messages (one per station, `recipient_public_key` = the new key) are
     published retained with `fleet publish`; stations seal to the new key from then on;
  4. old keys are removed from the gateway only after the longest station outbox expiry (and the
     gateway's broker session expiry) has passed: captures queued before the switch are sealed
     to the old key.
"""

from __future__ import annotations

import datetime as dt
import json
import ssl
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, x25519
from pydantic import ValidationError

from photosafe.protocol import topics
from photosafe.protocol.envelope import key_id
from photosafe.protocol.fleet import (
    FleetSettings,
    make_config,
    recipient_key_b64,
    sign_config,
)
from photosafe.provisioning.ca import CaError, write_file

STATE = "fleet-state.json"
KEY_INDEX = "recipient-keys.json"
MESSAGE_SUFFIX = ".config.json"


# -- signed config ----------------------------------------------------------------------------


def read_state(ca_dir: Path) -> dict[str, dict[str, Any]]:
    try:
        data = json.loads((ca_dir / STATE).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise CaError(f"cannot read {ca_dir / STATE}: {exc}") from None
    devices = data.get("devices") if isinstance(data, dict) else None
    if not isinstance(devices, dict):
        raise CaError(f"{ca_dir / STATE} is damaged")
    return devices


def _merge(old: Mapping[str, Any], change: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(old)
    for name, value in change.items():
        if name == "thresholds" and isinstance(value, dict):
            merged[name] = {**merged.get(name, {}), **value}
        else:
            merged[name] = value
    return merged


def sign_updates(
    ca_dir: Path,
    fleet_key: ed25519.Ed25519PrivateKey,
    devices: Iterable[str],
    change: Mapping[str, Any],
    *,
    now: dt.datetime | None = None,
) -> dict[str, bytes]:
    """Merge `change` into each station's settings and sign the next version for each."""
    now = now or dt.datetime.now(dt.UTC)
    state = read_state(ca_dir)
    messages: dict[str, bytes] = {}
    for device in devices:
        entry = state.get(device, {"version": 0, "settings": {}})
        try:
            settings = FleetSettings.model_validate_json(
                json.dumps(_merge(entry["settings"], change))
            )
        except ValidationError as exc:
            fields = ", ".join(".".join(map(str, e["loc"])) for e in exc.errors())
            raise CaError(f"settings for {device} are not valid: {fields}") from None
        version = max(int(entry["version"]) + 1, int(now.timestamp()))
        config = make_config(
            fleet_key=fleet_key, device=device, version=version, settings=settings, now=now
        )
        messages[device] = sign_config(config, fleet_key)
        state[device] = {
            "version": version,
            "settings": settings.model_dump(mode="json", exclude_none=True),
        }
    body = {"format": 1, "devices": state}
    write_file(ca_dir / STATE, (json.dumps(body, indent=1, sort_keys=True) + "\n").encode())
    return messages


def write_messages(out: Path, messages: Mapping[str, bytes]) -> list[Path]:
    out.mkdir(mode=0o755, parents=True, exist_ok=True)
    paths = []
    for device, body in messages.items():
        path = out / f"{device}{MESSAGE_SUFFIX}"
        write_file(path, body)
        paths.append(path)
    return paths


# -- gateway recipient-key rotation -----------------------------------------------------------


@dataclass(frozen=True)
class Rotation:
    kid: str
    key: Path
    public: Path
    public_key: x25519.X25519PublicKey
    kept: dict[str, Path]  # earlier keys (kid -> file) the gateway must keep for now

    def change(self) -> dict[str, str]:
        return {"recipient_public_key": recipient_key_b64(self.public_key)}


def gateway_recipient_keys(gateway_dir: Path) -> dict[str, Path]:
    """Every unencrypted X25519 private key (PEM) in the gateway folder, by key id."""
    found: dict[str, Path] = {}
    for path in sorted(gateway_dir.glob("*.key")):
        try:
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        except (OSError, ValueError, TypeError):
            continue
        if isinstance(key, x25519.X25519PrivateKey):
            found[key_id(key.public_key())] = path
    return found


def rotate_gateway_key(gateway_dir: Path, *, now: dt.datetime | None = None) -> Rotation:
    """A new recipient key beside the old ones, recorded in recipient-keys.json."""
    now = now or dt.datetime.now(dt.UTC)
    if not gateway_dir.is_dir():
        raise CaError(f"{gateway_dir} is not a folder")
    kept = gateway_recipient_keys(gateway_dir)
    key = x25519.X25519PrivateKey.generate()
    kid = key_id(key.public_key())
    key_path, pub_path = gateway_dir / f"recipient-{kid}.key", gateway_dir / f"recipient-{kid}.pub"
    write_file(
        key_path,
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
        0o600,
    )
    write_file(
        pub_path,
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
    )
    try:
        index = json.loads((gateway_dir / KEY_INDEX).read_text(encoding="utf-8"))["keys"]
    except (OSError, ValueError, KeyError, TypeError):
        index = []
    known = {item.get("kid") for item in index if isinstance(item, dict)}
    index += [
        {"kid": k, "file": p.name, "created_at": None} for k, p in kept.items() if k not in known
    ]
    index.append({"kid": kid, "file": key_path.name, "created_at": now.isoformat()})
    write_file(gateway_dir / KEY_INDEX, (json.dumps({"keys": index}, indent=1) + "\n").encode())
    return Rotation(kid, key_path, pub_path, key.public_key(), kept)


# -- publishing -------------------------------------------------------------------------------


def read_messages(folder: Path) -> dict[str, bytes]:
    """device -> signed config body, from files `fleet config` / `rotate-gateway-key` wrote."""
    messages = {}
    for path in sorted(folder.glob(f"*{MESSAGE_SUFFIX}")):
        device = path.name.removesuffix(MESSAGE_SUFFIX)
        if topics.valid_device_id(device):
            messages[device] = path.read_bytes()
    return messages


class _ClosingSSLSocket(ssl.SSLSocket):
    """Closes itself when the TLS handshake fails (paho would leak it)."""

    def do_handshake(self, block: bool = False) -> None:
        try:
            super().do_handshake(block)
        except BaseException:
            self.close()
            raise


def publish_configs(
    messages: Mapping[str, bytes],
    *,
    host: str,
    port: int,
    ca_file: Path,
    cert_file: Path,
    key_file: Path,
    client_id: str = "photosafe-fleet-publish",
    timeout: float = 10.0,
) -> dict[str, int]:
    """Publish each message retained at QoS 1 as the fleet identity; PUBACK reason per device."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_verify_locations(cafile=ca_file)
    context.load_cert_chain(certfile=cert_file, keyfile=key_file)
    context.sslsocket_class = _ClosingSSLSocket
    client = mqtt.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=MQTTProtocolVersion.MQTTv5,
        reconnect_on_failure=False,
    )
    client.tls_set_context(context)
    done = threading.Condition()
    connected: list[bool] = []
    acks: dict[int, int] = {}

    def on_connect(c: Any, u: Any, f: Any, reason: Any, p: Any) -> None:
        with done:
            connected.append(not reason.is_failure)
            done.notify_all()

    def on_publish(c: Any, u: Any, mid: int, reason: Any, p: Any) -> None:
        with done:
            acks[mid] = reason.value
            done.notify_all()

    def on_disconnect(c: Any, u: Any, flags: Any, reason: Any, p: Any) -> None:
        with done:
            connected.append(False)  # before a CONNACK: refused; after: the waits below time out
            done.notify_all()

    client.on_connect, client.on_publish = on_connect, on_publish
    client.on_disconnect = on_disconnect
    try:
        client.connect(host, port, keepalive=30)
    except OSError as exc:
        client._reset_sockets()  # paho keeps its socket pair otherwise
        raise CaError(f"cannot connect to {host}:{port}: {exc}") from None
    client.loop_start()
    try:
        with done:
            if not done.wait_for(lambda: connected, timeout) or not connected[0]:
                raise CaError(f"the broker at {host}:{port} refused the fleet identity")
        mids = {
            client.publish(topics.config(d), body, qos=1, retain=True).mid: d
            for d, body in messages.items()
        }
        with done:
            if not done.wait_for(lambda: set(mids) <= set(acks), timeout):
                raise CaError("the broker did not acknowledge every config in time")
        return {device: acks[mid] for mid, device in mids.items()}
    finally:
        client.disconnect()
        client.loop_stop()
        client._reset_sockets()
