"""Enrolment on the station: the device key is made here and never leaves.

    photosafe-provision enrol --device-id ID --dir DIR     DIR/device.key (0600) + DIR/device.csr
    (estates machine)  photosafe-provision issue DIR/device.csr --ca CA --out device.crt
    photosafe-provision install device.crt --dir DIR --ca ca.crt       DIR/device.crt

Running `enrol` again keeps the key and writes a fresh CSR (a renewal with the same key).
`enrol --new-key` makes DIR/device.key.next and a CSR for it; the station keeps working with its
current key and certificate until `install` receives a certificate for the new key, then moves
the new key into place. `install` writes nothing unless the certificate matches a key here,
chains to the CA, names this device (CN and SAN), is for TLS client authentication and is valid.
"""

from __future__ import annotations

import datetime as dt
import os
import pwd
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from photosafe.provisioning import pki
from photosafe.provisioning.ca import device_id_problem, write_file

KEY, NEXT_KEY, CSR, CERT = "device.key", "device.key.next", "device.csr", "device.crt"
_T = TypeVar("_T")


class EnrolError(Exception):
    """Enrolment or installation refused; nothing was written."""


@dataclass(frozen=True)
class Enrolled:
    device_id: str
    key: Path  # the key the CSR is for
    csr: Path
    reused_key: bool


@dataclass(frozen=True)
class Installed:
    device_id: str
    cert: Path
    not_after: dt.datetime
    new_key: bool  # device.key.next moved into place


def enrol(
    device_id: str,
    root: Path,
    *,
    owner: str | None = None,
    new_key: bool = False,
    allow_service: bool = False,
) -> Enrolled:
    """Make (or reuse) this station's P-256 key and write a CSR naming `device_id`."""
    problem = device_id_problem(device_id, allow_service=allow_service)
    if problem:
        raise EnrolError(problem)
    ids = _owner_ids(owner)
    root = Path(root)
    root.mkdir(mode=0o755, parents=True, exist_ok=True)
    current = root / KEY
    if current.exists() and not new_key:
        key, key_path, reused = _load_key(current), current, True
    else:
        key_path = root / NEXT_KEY if current.exists() else current
        key = pki.new_key()
        key_path.unlink(missing_ok=True)  # an unused device.key.next from an earlier run
        _write_key(key_path, key, ids)
        reused = False
    csr = pki.certificate_request(key, device_id)
    write_file(root / CSR, csr.public_bytes(serialization.Encoding.PEM))
    return Enrolled(device_id, key_path, root / CSR, reused)


def install(
    cert_path: Path, root: Path, ca_cert_path: Path, *, now: dt.datetime | None = None
) -> Installed:
    """Check the certificate from the CA against this station, then write it atomically."""
    now = now or dt.datetime.now(dt.UTC)
    root = Path(root)
    cert = _read(cert_path, x509.load_pem_x509_certificate, "a PEM certificate")
    ca = _read(ca_cert_path, x509.load_pem_x509_certificate, "a PEM CA certificate")
    csr = _read(root / CSR, x509.load_pem_x509_csr, f"the CSR (run enrol first in {root})")
    names = csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    device_id = str(names[0].value) if names else ""

    candidates = [root / NEXT_KEY, root / KEY]
    matching = [
        p for p in candidates if p.exists() and _load_key(p).public_key() == cert.public_key()
    ]
    if not matching:
        raise EnrolError(f"the certificate is not for this station's key ({root / KEY})")
    key_path = matching[0]
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        raise EnrolError(f"the certificate was not issued by the CA in {ca_cert_path}") from None
    cns = [a.value for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    if cns != [device_id]:
        raise EnrolError(f"the certificate names {cns}, not this station ({device_id!r})")
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        raise EnrolError("the certificate lacks a SAN or an extended key usage") from None
    if list(san) != [x509.DNSName(device_id)]:
        raise EnrolError(f"the certificate's SAN is not exactly DNS:{device_id}")
    if ExtendedKeyUsageOID.CLIENT_AUTH not in eku:
        raise EnrolError("the certificate is not for TLS client authentication")
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        raise EnrolError(
            f"the certificate is not valid now ({cert.not_valid_before_utc} to "
            f"{cert.not_valid_after_utc}): check the station's clock, or issue a new one"
        )
    try:
        PolicyBuilder().store(Store([ca])).time(now).build_client_verifier().verify(cert, [])
    except VerificationError as exc:
        raise EnrolError(f"the certificate does not verify for a client: {exc}") from None

    write_file(root / CERT, pki.cert_pem(cert))
    if key_path.name == NEXT_KEY:
        os.replace(key_path, root / KEY)
    return Installed(device_id, root / CERT, cert.not_valid_after_utc, key_path.name == NEXT_KEY)


def _owner_ids(owner: str | None) -> tuple[int, int] | None:
    if owner is None:
        return None
    try:
        entry = pwd.getpwnam(owner)
    except KeyError:
        raise EnrolError(f"no user {owner!r} on this machine") from None
    if os.geteuid() != 0 and entry.pw_uid != os.geteuid():
        raise EnrolError(f"giving the key to {owner!r} needs root (run enrol with sudo)")
    return entry.pw_uid, entry.pw_gid


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey, ids: tuple[int, int] | None) -> None:
    write_file(path, pki.key_pem(key), 0o600)
    if ids is not None and os.geteuid() == 0:
        os.chown(path, *ids)


def _load_key(path: Path) -> ec.EllipticCurvePrivateKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise EnrolError(f"cannot read the station key {path}: {exc}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise EnrolError(f"{path} is not an EC key")
    return key


def _read(path: Path, load: Callable[[bytes], _T], what: str) -> _T:
    try:
        return load(path.read_bytes())
    except OSError as exc:
        raise EnrolError(f"cannot read {path}: {exc.strerror}") from None
    except ValueError:
        raise EnrolError(f"{path} is not {what}") from None
