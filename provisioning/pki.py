"""The hospital's small device PKI: a CA, device and service certificates, a revocation list.

Device certificates carry the device id both as CN (mosquitto's `use_identity_as_username` makes it
the MQTT username the ACL is written against) and as a SAN (cryptography's client verifier refuses
a client certificate without one). Keys are EC P-256 because secure elements hold P-256 keys.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from photosafe.protocol.topics import valid_device_id

DEVICE_CERT_DAYS = 397
CA_DAYS = 3650
CRL_DAYS = 7


# A hospital's existing CA may hold an RSA key; everything we make ourselves is P-256.
CaKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


class PkiError(Exception):
    """A certificate request that must not be signed."""


@dataclass(frozen=True)
class Authority:
    """A CA key and its self-signed certificate."""

    key: CaKey
    cert: x509.Certificate


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def new_key() -> ec.EllipticCurvePrivateKey:
    """A fresh P-256 key (device, broker, gateway or CA)."""
    return ec.generate_private_key(ec.SECP256R1())


def new_authority(
    common_name: str, *, days: int = CA_DAYS, now: dt.datetime | None = None
) -> Authority:
    """A self-signed CA that may sign end-entity certificates and CRLs, nothing deeper."""
    now = now or _utcnow()
    key = new_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return Authority(key, cert)


def certificate_request(
    key: ec.EllipticCurvePrivateKey, device_id: str
) -> x509.CertificateSigningRequest:
    """The CSR a station makes for its own key, so the key never leaves the device."""
    _check_identity(device_id)
    return (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, device_id)]))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(device_id)]), critical=False)
        .sign(key, hashes.SHA256())
    )


def issue_client_certificate(
    ca: Authority,
    identity: str,
    public_key: ec.EllipticCurvePublicKey,
    *,
    days: int = DEVICE_CERT_DAYS,
    not_after: dt.datetime | None = None,
    now: dt.datetime | None = None,
) -> x509.Certificate:
    """A TLS client certificate for a device (or the gateway): CN = SAN = identity.

    Valid for `days`, or until `not_after` when given (a CA never issues past its own expiry).
    """
    _check_identity(identity)
    now = now or _utcnow()
    return (
        _end_entity(ca, identity, public_key, now, not_after or now + dt.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(identity)]), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(ca.key, hashes.SHA256())
    )


def issue_server_certificate(
    ca: Authority,
    common_name: str,
    public_key: ec.EllipticCurvePublicKey,
    *,
    hostnames: Sequence[str] = ("localhost",),
    addresses: Sequence[str] = ("127.0.0.1",),
    days: int = DEVICE_CERT_DAYS,
    now: dt.datetime | None = None,
) -> x509.Certificate:
    """A TLS server certificate for the broker."""
    now = now or _utcnow()
    names: list[x509.GeneralName] = [x509.DNSName(h) for h in hostnames]
    names += [x509.IPAddress(ipaddress.ip_address(a)) for a in addresses]
    return (
        _end_entity(ca, common_name, public_key, now, now + dt.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca.key, hashes.SHA256())
    )


def revocation_list(
    ca: Authority,
    revoked: Iterable[int] | Mapping[int, dt.datetime] = (),
    *,
    now: dt.datetime | None = None,
    days: int = CRL_DAYS,
) -> x509.CertificateRevocationList:
    """A CRL naming the revoked serial numbers (with their revocation dates, if given)."""
    now = now or _utcnow()
    dates = dict(revoked) if isinstance(revoked, Mapping) else dict.fromkeys(revoked, now)
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca.cert.subject)
        .last_update(now - dt.timedelta(minutes=5))
        .next_update(now + dt.timedelta(days=days))
        .add_extension(authority_key_id(ca), critical=False)
    )
    for serial in sorted(dates):
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder()
            .serial_number(serial)
            .revocation_date(dates[serial])
            .build()
        )
    return builder.sign(ca.key, hashes.SHA256())


def authority_key_id(ca: Authority) -> x509.AuthorityKeyIdentifier:
    """The CA's key identifier as its certificate states it (an imported CA's may differ)."""
    try:
        ski = ca.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    except x509.ExtensionNotFound:
        return x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key())
    return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)


def key_pem(key: CaKey, passphrase: bytes | None = None) -> bytes:
    """PKCS#8 PEM, encrypted when a passphrase is given."""
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase)
        if passphrase
        else serialization.NoEncryption()
    )
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def crl_pem(crl: x509.CertificateRevocationList) -> bytes:
    return crl.public_bytes(serialization.Encoding.PEM)


def _check_identity(identity: str) -> None:
    if not valid_device_id(identity):
        raise PkiError(
            f"refusing identity {identity!r}: use 1-63 letters, digits, '.', '_' or '-' "
            "(MQTT wildcards and separators would let it address other devices' topics)"
        )


def _end_entity(
    ca: Authority,
    common_name: str,
    public_key: ec.EllipticCurvePublicKey,
    now: dt.datetime,
    not_after: dt.datetime,
) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca.cert.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=True,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(authority_key_id(ca), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )
