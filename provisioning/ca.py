"""The hospital's device CA folder: make or import the CA, sign device CSRs, revoke, CRL.

A CA folder lives on an offline estates machine:

    DIR/ca.crt             the CA certificate (give it to the broker, the gateway, every station)
    DIR/ca.key             its key, PKCS#8 encrypted with the folder passphrase (mode 0600)
    DIR/crl.pem            the revocation list the broker (`crlfile`) and gateway (`trust.crl`) use
    DIR/issued.json        every certificate issued: serial, device, validity, revocation
    DIR/issued/<serial>.pem  a copy of each
    DIR/fleet-signing.key  the fleet Ed25519 key that signs remote config (encrypted like ca.key)
    DIR/fleet-signing.pub  its public key, pinned by every station

A sandbox site (`photosafe-provision sandbox`) has the same ca.crt / ca.key / crl.pem layout with
an unencrypted key, so it works as a CA folder too (commands warn about the plain key).

Device certificates: CN = SAN (DNS name) = device id, client-auth EKU only, at most
MAX_DEVICE_DAYS. Ids that are not safe MQTT topic levels and usernames (`+ # /`, NUL, anything
outside letters, digits, `.`, `_`, `-`) and the service identities are refused.

Renewal is `issue` again: a new CSR from the same key (`enrol` again) or a new one
(`enrol --new-key`). The old certificate stays valid until it expires or is revoked by serial.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID

from photosafe.protocol.topics import valid_device_id
from photosafe.provisioning import pki
from photosafe.provisioning.sandbox import BROKER_NAME, SERVICE_IDENTITIES

CA_CERT, CA_KEY, CRL, INDEX, ISSUED = "ca.crt", "ca.key", "crl.pem", "issued.json", "issued"
FLEET_KEY, FLEET_PUB = "fleet-signing.key", "fleet-signing.pub"
RESERVED_IDENTITIES = SERVICE_IDENTITIES | {BROKER_NAME}
DEFAULT_DEVICE_DAYS = 397
MAX_DEVICE_DAYS = 825
CRL_DAYS = 30
MIN_PASSPHRASE = 12
MIN_RSA_BITS = 2048
_PRIVATE, _PUBLIC = 0o600, 0o644

CaKey = pki.CaKey
Passphrase = Callable[[str], bytes]  # asked only when a key is encrypted; the argument says which


class CaError(Exception):
    """A CA folder, CSR or certificate that cannot be used as asked."""


# -- device ids -------------------------------------------------------------------------------


def device_id_problem(device_id: str, *, allow_service: bool = False) -> str | None:
    """Why `device_id` may not be a device certificate's CN, or None when it may."""
    bad = [
        name
        for ch, name in (("+", "'+'"), ("#", "'#'"), ("/", "'/'"), ("\0", "NUL"))
        if ch in device_id
    ]
    if bad:
        return (
            f"device id {device_id!r} contains {', '.join(bad)}: MQTT wildcards and separators "
            "would let it address other stations' topics"
        )
    if not valid_device_id(device_id):
        return (
            f"device id {device_id!r} is not valid: use 1-63 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    if device_id in RESERVED_IDENTITIES and not allow_service:
        return f"device id {device_id!r} is reserved for a service identity (it has its rights)"
    if allow_service and device_id not in RESERVED_IDENTITIES:
        return f"{device_id!r} is not a service identity ({', '.join(sorted(RESERVED_IDENTITIES))})"
    return None


# -- files ------------------------------------------------------------------------------------


def write_file(path: Path, data: bytes, mode: int = _PUBLIC, *, sync: bool = True) -> None:
    """Write via a temporary file created with its final mode, then rename into place."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            if sync:
                out.flush()
                os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def read_passphrase_file(path: Path) -> bytes:
    """The first line of a file (its line break removed)."""
    try:
        lines = path.read_bytes().splitlines()
    except OSError as exc:
        raise CaError(f"cannot read passphrase file {path}: {exc.strerror}") from None
    if not lines or not lines[0]:
        raise CaError(f"passphrase file {path} is empty")
    return lines[0]


def check_new_passphrase(passphrase: bytes) -> bytes:
    if len(passphrase) < MIN_PASSPHRASE:
        raise CaError(f"the passphrase must have at least {MIN_PASSPHRASE} characters")
    return passphrase


def _encrypted_pem(key: CaKey | ed25519.Ed25519PrivateKey, passphrase: bytes | None) -> bytes:
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase)
        if passphrase
        else serialization.NoEncryption()
    )
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )


def load_private_key(
    pem: bytes, where: Path, passphrase: Passphrase | bytes | None
) -> tuple[object, bool]:
    """(key, was_encrypted). Asks for the passphrase only if the key is encrypted."""
    try:
        return serialization.load_pem_private_key(pem, password=None), False
    except TypeError:
        pass  # encrypted
    except ValueError as exc:
        raise CaError(f"{where} is not a PEM private key: {exc}") from None
    if passphrase is None:
        raise CaError(f"{where} is encrypted and no passphrase was given")
    secret = passphrase if isinstance(passphrase, bytes) else passphrase(f"passphrase for {where}")
    try:
        return serialization.load_pem_private_key(pem, password=secret), True
    except ValueError:
        raise CaError(f"wrong passphrase for {where}") from None


# -- the folder -------------------------------------------------------------------------------


@dataclass(frozen=True)
class IndexEntry:
    serial: int
    device: str
    not_before: dt.datetime
    not_after: dt.datetime
    revoked_at: dt.datetime | None = None

    def valid_at(self, now: dt.datetime) -> bool:
        return self.revoked_at is None and self.not_before <= now <= self.not_after

    def to_json(self) -> dict[str, str | None]:
        return {
            "serial": f"{self.serial:x}",
            "device": self.device,
            "not_before": self.not_before.isoformat(),
            "not_after": self.not_after.isoformat(),
            "revoked_at": None if self.revoked_at is None else self.revoked_at.isoformat(),
        }

    @classmethod
    def from_json(cls, data: dict[str, str | None]) -> IndexEntry:
        def when(value: str | None) -> dt.datetime:
            return dt.datetime.fromisoformat(str(value))

        revoked = data.get("revoked_at")
        return cls(
            serial=int(str(data["serial"]), 16),
            device=str(data["device"]),
            not_before=when(data["not_before"]),
            not_after=when(data["not_after"]),
            revoked_at=None if revoked is None else when(revoked),
        )


@dataclass(frozen=True)
class DeviceCa:
    """An opened CA folder: the key is in memory for the life of one command."""

    root: Path
    key: CaKey
    cert: x509.Certificate
    key_encrypted: bool

    @property
    def crl_path(self) -> Path:
        return self.root / CRL

    def index(self) -> list[IndexEntry]:
        return read_index(self.root)


def init_ca(root: Path, name: str, passphrase: bytes, *, days: int = pki.CA_DAYS) -> DeviceCa:
    """A new P-256 device CA, its first (empty) CRL and the fleet signing key in `root`."""
    check_new_passphrase(passphrase)
    if not name.strip():
        raise CaError("the CA needs a name")
    authority = pki.new_authority(name, days=days)
    return _create(root, authority.key, authority.cert, passphrase)


def import_ca(
    root: Path, cert_pem: bytes, key_pem: bytes, passphrase: bytes, *, key_passphrase: Passphrase
) -> DeviceCa:
    """Use the hospital's existing CA: checked, then its key re-encrypted under `passphrase`."""
    check_new_passphrase(passphrase)
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
    except ValueError as exc:
        raise CaError(f"the CA certificate is not PEM X.509: {exc}") from None
    key, _ = load_private_key(key_pem, Path("the CA key"), key_passphrase)
    check_ca_pair(cert, key)
    assert isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey)
    return _create(root, key, cert, passphrase)


def check_ca_pair(cert: x509.Certificate, key: object, now: dt.datetime | None = None) -> None:
    """Refuse a certificate that is not a current CA allowed to sign, or a key that is not its."""
    now = now or _utcnow()
    if isinstance(key, ec.EllipticCurvePrivateKey):
        if not isinstance(key.curve, ec.SECP256R1):
            raise CaError(f"CA key curve {key.curve.name} refused: use P-256 (or RSA >= 2048)")
    elif isinstance(key, rsa.RSAPrivateKey):
        if key.key_size < MIN_RSA_BITS:
            raise CaError(f"CA key RSA-{key.key_size} refused: RSA needs at least {MIN_RSA_BITS}")
    else:
        raise CaError("the CA key must be EC P-256 or RSA >= 2048")
    if cert.public_key() != key.public_key():
        raise CaError("the CA key does not belong to the CA certificate")
    try:
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        raise CaError("the certificate has no BasicConstraints: it is not a CA") from None
    if not constraints.ca:
        raise CaError("the certificate is not a CA (BasicConstraints CA:FALSE)")
    with contextlib.suppress(x509.ExtensionNotFound):
        usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
        if not (usage.key_cert_sign and usage.crl_sign):
            raise CaError("the CA's KeyUsage must allow keyCertSign and cRLSign")
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        raise CaError(f"the CA certificate is not valid now (until {cert.not_valid_after_utc})")


def _create(root: Path, key: CaKey, cert: x509.Certificate, passphrase: bytes) -> DeviceCa:
    root = Path(root)
    if root.exists() and any(root.iterdir()):
        raise CaError(f"{root} is not empty; a CA folder is made only in a new or empty folder")
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    (root / ISSUED).mkdir(mode=0o700, exist_ok=True)
    write_file(root / CA_KEY, _encrypted_pem(key, passphrase), _PRIVATE)
    write_file(root / CA_CERT, pki.cert_pem(cert))
    ca = DeviceCa(root, key, cert, key_encrypted=True)
    _write_index(root, [])
    write_crl(ca)
    create_fleet_key(root, passphrase)
    return ca


def open_ca(root: Path, passphrase: Passphrase | bytes | None) -> DeviceCa:
    root = Path(root)
    try:
        cert = x509.load_pem_x509_certificate((root / CA_CERT).read_bytes())
        key_pem = (root / CA_KEY).read_bytes()
    except FileNotFoundError as exc:
        raise CaError(f"{root} is not a CA folder: {exc.filename} is missing") from None
    except ValueError as exc:
        raise CaError(f"{root / CA_CERT}: {exc}") from None
    key, encrypted = load_private_key(key_pem, root / CA_KEY, passphrase)
    check_ca_pair(cert, key)
    assert isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey)
    return DeviceCa(root, key, cert, key_encrypted=encrypted)


def read_index(root: Path) -> list[IndexEntry]:
    try:
        data = json.loads((root / INDEX).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return []  # a sandbox site, or a folder that has issued nothing yet
    except (OSError, ValueError) as exc:
        raise CaError(f"cannot read {root / INDEX}: {exc}") from None
    try:
        return [IndexEntry.from_json(item) for item in data["certificates"]]
    except (KeyError, TypeError, ValueError) as exc:
        raise CaError(f"{root / INDEX} is damaged: {exc!r}") from None


def _write_index(root: Path, entries: Iterable[IndexEntry]) -> None:
    body = {"format": 1, "certificates": [e.to_json() for e in entries]}
    write_file(root / INDEX, (json.dumps(body, indent=1) + "\n").encode())


# -- issuing ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Issued:
    cert: x509.Certificate
    device_id: str
    still_valid: tuple[IndexEntry, ...]  # this device's earlier certificates (a renewal)
    shortened: bool  # capped at the CA's own expiry


def read_csr(pem: bytes) -> tuple[x509.CertificateSigningRequest, str]:
    """The CSR and its device id, after every check that needs no CA."""
    try:
        csr = x509.load_pem_x509_csr(pem)
    except ValueError as exc:
        raise CaError(f"not a PEM certificate signing request: {exc}") from None
    if not csr.is_signature_valid:
        raise CaError("the CSR's signature does not verify (altered, or not made by its key)")
    names = csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if len(names) != 1 or not isinstance(names[0].value, str):
        raise CaError("the CSR must name exactly one CN (the device id)")
    device_id = names[0].value
    with contextlib.suppress(x509.ExtensionNotFound):
        san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        if list(san) != [x509.DNSName(device_id)]:
            raise CaError(f"the CSR's SAN must be exactly DNS:{device_id} (its CN)")
    public_key = csr.public_key()
    if not (
        isinstance(public_key, ec.EllipticCurvePublicKey) and public_key.curve.name == "secp256r1"
    ):
        raise CaError("device keys must be EC P-256 (what secure elements hold)")
    return csr, device_id


def issue(
    ca: DeviceCa,
    csr_pem: bytes,
    *,
    days: int = DEFAULT_DEVICE_DAYS,
    allow_service: bool = False,
    now: dt.datetime | None = None,
) -> Issued:
    """Sign a device CSR; record it in the index and the `issued/` folder."""
    if not 1 <= days <= MAX_DEVICE_DAYS:
        raise CaError(f"--days must be 1..{MAX_DEVICE_DAYS}, not {days}")
    csr, device_id = read_csr(csr_pem)
    problem = device_id_problem(device_id, allow_service=allow_service)
    if problem:
        raise CaError(problem)
    now = now or _utcnow()
    not_after = now + dt.timedelta(days=days)
    shortened = not_after > ca.cert.not_valid_after_utc
    not_after = min(not_after, ca.cert.not_valid_after_utc)
    public_key = csr.public_key()
    assert isinstance(public_key, ec.EllipticCurvePublicKey)
    cert = pki.issue_client_certificate(
        pki.Authority(ca.key, ca.cert), device_id, public_key, not_after=not_after, now=now
    )
    entries = ca.index()
    earlier = tuple(e for e in entries if e.device == device_id and e.valid_at(now))
    entry = IndexEntry(
        cert.serial_number, device_id, cert.not_valid_before_utc, cert.not_valid_after_utc
    )
    (ca.root / ISSUED).mkdir(mode=0o700, exist_ok=True)
    write_file(ca.root / ISSUED / f"{cert.serial_number:x}.pem", pki.cert_pem(cert))
    _write_index(ca.root, [*entries, entry])
    return Issued(cert, device_id, earlier, shortened)


# -- revocation -------------------------------------------------------------------------------


def revoke(
    ca: DeviceCa,
    device_id: str | None = None,
    *,
    serial: int | None = None,
    cert: x509.Certificate | None = None,
    now: dt.datetime | None = None,
    crl_days: int = CRL_DAYS,
) -> list[int]:
    """Revoke a device's certificates (all, or one by serial or file); rewrite the CRL.

    Returns the serials newly revoked. A certificate file this CA issued outside the index
    (a sandbox station) is revoked by `cert`.
    """
    now = now or _utcnow()
    entries = ca.index()
    serials: set[int] = set()
    if cert is not None:
        if cert.issuer != ca.cert.subject or not _signed_by(cert, ca):
            raise CaError("that certificate was not issued by this CA")
        serials.add(cert.serial_number)
    else:
        chosen = [
            e
            for e in entries
            if (device_id is None or e.device == device_id)
            and (serial is None or e.serial == serial)
        ]
        if not chosen:
            raise CaError(
                f"no certificate for {device_id or 'that serial'} in {ca.root / INDEX}"
                + ("" if serial is not None else "; revoke a certificate file with --cert")
            )
        serials.update(e.serial for e in chosen)
    already = _crl_entries(ca)
    new = sorted(s for s in serials if s not in already)
    updated = [
        replace(e, revoked_at=now) if e.serial in serials and e.revoked_at is None else e
        for e in entries
    ]
    _write_index(ca.root, updated)
    write_crl(ca, extra={s: now for s in new}, now=now, days=crl_days)
    return new


def write_crl(
    ca: DeviceCa,
    *,
    extra: dict[int, dt.datetime] | None = None,
    now: dt.datetime | None = None,
    days: int = CRL_DAYS,
) -> x509.CertificateRevocationList:
    """(Re-)sign the CRL: what it listed, what the index says is revoked, and `extra`."""
    now = now or _utcnow()
    revoked = _crl_entries(ca)
    for entry in ca.index():
        if entry.revoked_at is not None:
            revoked.setdefault(entry.serial, entry.revoked_at)
    for serial, when in (extra or {}).items():
        revoked.setdefault(serial, when)
    crl = pki.revocation_list(pki.Authority(ca.key, ca.cert), revoked, now=now, days=days)
    write_file(ca.crl_path, pki.crl_pem(crl))
    return crl


def _crl_entries(ca: DeviceCa) -> dict[int, dt.datetime]:
    try:
        crl = x509.load_pem_x509_crl(ca.crl_path.read_bytes())
    except FileNotFoundError:
        return {}
    except ValueError as exc:
        raise CaError(f"{ca.crl_path} is not a PEM CRL: {exc}") from None
    if not crl.is_signature_valid(ca.key.public_key()):
        raise CaError(f"{ca.crl_path} is not signed by this CA; refusing to extend it")
    return {e.serial_number: e.revocation_date_utc for e in crl}


def _signed_by(cert: x509.Certificate, ca: DeviceCa) -> bool:
    try:
        cert.verify_directly_issued_by(ca.cert)
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True


# -- the fleet signing key --------------------------------------------------------------------


def create_fleet_key(root: Path, passphrase: bytes | None) -> ed25519.Ed25519PublicKey:
    """The Ed25519 key that signs remote config; stations pin fleet-signing.pub."""
    path = Path(root) / FLEET_KEY
    if path.exists():
        raise CaError(f"{path} exists; a fleet key is never replaced in place")
    key = ed25519.Ed25519PrivateKey.generate()
    write_file(path, _encrypted_pem(key, passphrase), _PRIVATE)
    public = key.public_key()
    write_file(
        Path(root) / FLEET_PUB,
        public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
    )
    return public


def load_fleet_key(root: Path, passphrase: Passphrase | bytes | None) -> ed25519.Ed25519PrivateKey:
    path = Path(root) / FLEET_KEY
    try:
        pem = path.read_bytes()
    except FileNotFoundError:
        raise CaError(
            f"{path} is missing: make one with `photosafe-provision ca fleet-key {root}`"
        ) from None
    key, _ = load_private_key(pem, path, passphrase)
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise CaError(f"{path} is not an Ed25519 key")
    return key


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)
