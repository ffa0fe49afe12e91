"""A "site in a box": a device CA, a broker set-up, a gateway, a fleet signer and some stations.

`build_site` writes everything a local PhotoSafe site needs into one directory, so tests and
demos can run the real daemon and the real gateway through a real mosquitto:

    root/
      ca.crt  ca.key  crl.pem  site.json
      broker/   server.crt server.key mosquitto.conf acl
      gateway/  client.crt client.key recipient.key recipient.pub signing.key signing.pub
      fleet/    client.crt client.key
      devices/<id>/  device.crt device.key

This is a sandbox: the CA key is stored unencrypted (mode 0600) next to everything it signed,
which no real site should ever do. Private keys are written mode 0600, directories 0700.

`build_site` refuses a root that already exists and is not empty (re-read it with `load_site`, or
choose a fresh directory): rebuilding in place would silently replace a CA that stations and a
running broker may still trust. If building fails half-way, what it wrote is removed again.

The broker ACL follows DESIGN section 3. mosquitto applies `pattern` lines to every user, the
gateway and fleet identities included, so their sections start with a `deny` of their own
`%u` subtree (mosquitto checks a user's deny lines before its grants and before any pattern).
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import shutil
import socket
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, x25519

from photosafe.protocol import topics
from photosafe.provisioning.pki import (
    Authority,
    cert_pem,
    crl_pem,
    issue_client_certificate,
    issue_server_certificate,
    key_pem,
    new_authority,
    new_key,
    revocation_list,
)

GATEWAY_IDENTITY = "photosafe-gateway"  # TLS client identity (CN) of gateway processes
FLEET_IDENTITY = "photosafe-fleet"  # writes retained config to stations
BROKER_NAME = "photosafe-broker"
CA_NAME = "PhotoSafe sandbox device CA"
SERVICE_IDENTITIES = frozenset({GATEWAY_IDENTITY, FLEET_IDENTITY})

SITE_INDEX = "site.json"
SITE_FORMAT = 1
# The broker refuses a limit below 20 bytes; MQTT cannot carry a packet above 256 MiB + header.
MIN_PACKET_SIZE = 20
MAX_PACKET_SIZE = 268_435_455 + 5
DEFAULT_PACKET_SIZE = 16 * 1024 * 1024

_PRIVATE = 0o600
_PUBLIC = 0o644


class SandboxError(Exception):
    """A sandbox site that cannot be built, read or changed as asked."""


@dataclass(frozen=True)
class DeviceFiles:
    """One station's TLS identity: its id (the certificate CN), key and certificate."""

    device_id: str
    key: Path
    cert: Path


@dataclass(frozen=True)
class Site:
    """Where everything of one sandbox site lives, and where its broker listens."""

    root: Path
    host: str
    port: int
    ca_cert: Path
    ca_key: Path
    crl: Path
    broker_conf: Path
    broker_acl: Path
    broker_cert: Path
    broker_key: Path
    gateway_cert: Path  # TLS client identity
    gateway_key: Path
    recipient_key: Path  # X25519 HPKE recipient, PEM PKCS#8
    recipient_pub: Path  # PEM SubjectPublicKeyInfo
    signing_key: Path  # Ed25519 ack signing key, PEM PKCS#8
    signing_pub: Path
    fleet_cert: Path
    fleet_key: Path
    devices: tuple[DeviceFiles, ...]
    max_packet_size: int = DEFAULT_PACKET_SIZE

    def device(self, device_id: str) -> DeviceFiles:
        for files in self.devices:
            if files.device_id == device_id:
                return files
        raise KeyError(f"no device {device_id!r} in the site at {self.root}")


def build_site(
    root: Path,
    device_ids: Sequence[str],
    *,
    port: int,
    host: str = "127.0.0.1",
    max_packet_size: int = DEFAULT_PACKET_SIZE,
) -> Site:
    """Create a complete sandbox site in `root`, which must be missing or empty."""
    root = Path(root).resolve()
    _check_request(root, device_ids, port, host, max_packet_size)
    if root.exists() and any(root.iterdir()):
        raise SandboxError(
            f"{root} is not empty; a sandbox site is built only in a new or empty directory "
            "(use load_site() to re-read one built earlier)"
        )
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    site = _layout(root, host, port, tuple(device_ids), max_packet_size)
    try:
        _write_site(site)
    except BaseException:
        _empty(root)
        raise
    return site


def load_site(root: Path) -> Site:
    """Re-read a site written by `build_site`."""
    root = Path(root).resolve()
    try:
        index = json.loads((root / SITE_INDEX).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SandboxError(f"{root} holds no sandbox site (no {SITE_INDEX})") from None
    except (OSError, ValueError) as exc:
        raise SandboxError(f"cannot read {root / SITE_INDEX}: {exc}") from exc
    if not isinstance(index, dict) or index.get("format") != SITE_FORMAT:
        raise SandboxError(f"{root / SITE_INDEX} is not a format-{SITE_FORMAT} site index")
    try:
        host, port = str(index["host"]), int(index["port"])
        devices = tuple(str(d) for d in index["devices"])
        limit = int(index["max_packet_size"])
    except (KeyError, TypeError, ValueError) as exc:
        raise SandboxError(f"{root / SITE_INDEX} is incomplete: {exc!r}") from exc
    _check_request(root, devices, port, host, limit)
    return _layout(root, host, port, devices, limit)


def revoke(site: Site, device_id: str) -> None:
    """Add the device's certificate serial to the CRL, re-signed by the CA.

    mosquitto reads the CRL when it starts: restart the broker for the revocation to bite.
    """
    files = site.device(device_id)
    serial = x509.load_pem_x509_certificate(files.cert.read_bytes()).serial_number
    current = x509.load_pem_x509_crl(site.crl.read_bytes())
    revoked = {entry.serial_number for entry in current}
    revoked.add(serial)
    _write(site.crl, crl_pem(revocation_list(_load_authority(site), revoked)), _PUBLIC)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody was listening on a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def acl_text() -> str:
    """The broker ACL (DESIGN section 3). Usernames are certificate CNs."""
    root = topics.ROOT
    return "\n".join(
        [
            "# PhotoSafe broker ACL, written by photosafe.provisioning.sandbox.",
            "# Usernames are client-certificate CNs (use_identity_as_username).",
            "# `pattern` lines apply to EVERY user, the service identities included, so each",
            "# service section first denies its own %u subtree; mosquitto checks a user's",
            "# deny lines before its grants and before any pattern line.",
            "",
            "# Gateways: read every capture and status, write every ack.",
            f"user {GATEWAY_IDENTITY}",
            f"topic deny {root}/{GATEWAY_IDENTITY}/#",
            f"topic read {root}/+/capture",
            f"topic read {root}/+/status",
            f"topic write {root}/+/ack",
            "",
            "# Fleet manager: write every station's retained config, read every status.",
            f"user {FLEET_IDENTITY}",
            f"topic deny {root}/{FLEET_IDENTITY}/#",
            f"topic write {root}/+/config",
            f"topic read {root}/+/status",
            "",
            "# Stations: write only their own capture and status, read only their own ack",
            "# and config.",
            f"pattern write {root}/%u/capture",
            f"pattern write {root}/%u/status",
            f"pattern read {root}/%u/ack",
            f"pattern read {root}/%u/config",
            "",
        ]
    )


def broker_config(site: Site) -> str:
    """mosquitto.conf for the site's broker (mosquitto 2.0: global options, then the listener)."""
    lines = [
        "# PhotoSafe sandbox broker, written by photosafe.provisioning.sandbox.",
        "per_listener_settings false",
        "persistence false",
        "log_dest stderr",
        "allow_anonymous false",
        f"acl_file {site.broker_acl}",
        "set_tcp_nodelay true",
        f"max_packet_size {site.max_packet_size}",
    ]
    if os.geteuid() == 0:
        # Started as root, mosquitto would switch to the `mosquitto` user before reading the ACL
        # and key files below, which sit in a private directory. Ignored when not root.
        lines.append("user root")
    lines += [
        "",
        f"listener {site.port} {site.host}",
        f"cafile {site.ca_cert}",
        f"certfile {site.broker_cert}",
        f"keyfile {site.broker_key}",
        f"crlfile {site.crl}",
        "require_certificate true",
        "use_identity_as_username true",
        "tls_version tlsv1.2",
        "",
    ]
    return "\n".join(lines)


def _check_request(
    root: Path, device_ids: Sequence[str], port: int, host: str, max_packet_size: int
) -> None:
    if any(ch in str(root) for ch in "\r\n\0"):
        raise SandboxError("the site directory's path must not contain line breaks")
    if not 1 <= port <= 65535:
        raise SandboxError(f"port {port} is not a TCP port (1-65535)")
    if not host or any(ch.isspace() for ch in host):
        raise SandboxError(f"host {host!r} is not a listener address")
    if not MIN_PACKET_SIZE <= max_packet_size <= MAX_PACKET_SIZE:
        raise SandboxError(
            f"max_packet_size must be {MIN_PACKET_SIZE}..{MAX_PACKET_SIZE} bytes, "
            f"not {max_packet_size}"
        )
    seen: set[str] = set()
    for device_id in device_ids:
        if not topics.valid_device_id(device_id):
            raise SandboxError(
                f"device id {device_id!r} is not valid: use 1-63 letters, digits, '.', '_' or '-'"
            )
        if device_id in SERVICE_IDENTITIES:
            raise SandboxError(
                f"device id {device_id!r} is reserved for a service identity; a station with "
                "it would get that service's broker rights"
            )
        if device_id in seen:
            raise SandboxError(f"device id {device_id!r} is listed twice")
        seen.add(device_id)


def _layout(
    root: Path, host: str, port: int, device_ids: tuple[str, ...], max_packet_size: int
) -> Site:
    broker, gateway, fleet = root / "broker", root / "gateway", root / "fleet"
    return Site(
        root=root,
        host=host,
        port=port,
        ca_cert=root / "ca.crt",
        ca_key=root / "ca.key",
        crl=root / "crl.pem",
        broker_conf=broker / "mosquitto.conf",
        broker_acl=broker / "acl",
        broker_cert=broker / "server.crt",
        broker_key=broker / "server.key",
        gateway_cert=gateway / "client.crt",
        gateway_key=gateway / "client.key",
        recipient_key=gateway / "recipient.key",
        recipient_pub=gateway / "recipient.pub",
        signing_key=gateway / "signing.key",
        signing_pub=gateway / "signing.pub",
        fleet_cert=fleet / "client.crt",
        fleet_key=fleet / "client.key",
        devices=tuple(
            DeviceFiles(
                device_id=d,
                key=root / "devices" / d / "device.key",
                cert=root / "devices" / d / "device.crt",
            )
            for d in device_ids
        ),
        max_packet_size=max_packet_size,
    )


def _write_site(site: Site) -> None:
    (site.root / "devices").mkdir(mode=0o700, exist_ok=True)
    ca = new_authority(CA_NAME)
    _write(site.ca_key, key_pem(ca.key), _PRIVATE)
    _write(site.ca_cert, cert_pem(ca.cert), _PUBLIC)
    _write(site.crl, crl_pem(revocation_list(ca)), _PUBLIC)

    broker_key = new_key()
    hostnames, addresses = ["localhost"], ["127.0.0.1"]
    try:
        if str(ipaddress.ip_address(site.host)) not in addresses:
            addresses.append(site.host)
    except ValueError:
        if site.host not in hostnames:
            hostnames.append(site.host)
    broker_cert = issue_server_certificate(
        ca, BROKER_NAME, broker_key.public_key(), hostnames=hostnames, addresses=addresses
    )
    _write(site.broker_key, key_pem(broker_key), _PRIVATE)
    _write(site.broker_cert, cert_pem(broker_cert), _PUBLIC)

    _write_client(ca, GATEWAY_IDENTITY, site.gateway_key, site.gateway_cert)
    _write_client(ca, FLEET_IDENTITY, site.fleet_key, site.fleet_cert)
    for files in site.devices:
        _write_client(ca, files.device_id, files.key, files.cert)

    recipient = x25519.X25519PrivateKey.generate()
    _write(site.recipient_key, _private_pem(recipient), _PRIVATE)
    _write(site.recipient_pub, _public_pem(recipient.public_key()), _PUBLIC)
    signing = ed25519.Ed25519PrivateKey.generate()
    _write(site.signing_key, _private_pem(signing), _PRIVATE)
    _write(site.signing_pub, _public_pem(signing.public_key()), _PUBLIC)

    _write(site.broker_acl, acl_text().encode(), _PUBLIC)
    _write(site.broker_conf, broker_config(site).encode(), _PUBLIC)
    index = {
        "format": SITE_FORMAT,
        "host": site.host,
        "port": site.port,
        "max_packet_size": site.max_packet_size,
        "devices": [files.device_id for files in site.devices],
    }
    _write(site.root / SITE_INDEX, (json.dumps(index, indent=2) + "\n").encode(), _PUBLIC)


def _write_client(ca: Authority, identity: str, key_path: Path, cert_path: Path) -> None:
    key = new_key()
    _write(key_path, key_pem(key), _PRIVATE)
    _write(cert_path, cert_pem(issue_client_certificate(ca, identity, key.public_key())), _PUBLIC)


def _load_authority(site: Site) -> Authority:
    key = serialization.load_pem_private_key(site.ca_key.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise SandboxError(f"{site.ca_key} is not the site's EC CA key")
    return Authority(key, x509.load_pem_x509_certificate(site.ca_cert.read_bytes()))


def _private_pem(key: x25519.X25519PrivateKey | ed25519.Ed25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _public_pem(key: x25519.X25519PublicKey | ed25519.Ed25519PublicKey) -> bytes:
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _write(path: Path, data: bytes, mode: int) -> None:
    """Write via a temporary file created with its final mode, then rename into place."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)
    with _cleanup_on_error(tmp):
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)


@contextlib.contextmanager
def _cleanup_on_error(tmp: Path) -> Iterator[None]:
    try:
        yield
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _empty(root: Path) -> None:
    for child in root.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)
