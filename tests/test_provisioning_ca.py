"""The device CA, enrolment on the station, revocation and renewal, through the real CLI.

The broker tests use the sandbox site's root as the CA folder (same ca.crt / ca.key / crl.pem
layout, key unencrypted), so `revoke` rewrites exactly the CRL file mosquitto's `crlfile` names.
"""

from __future__ import annotations

import datetime as dt
import os
import pwd
import re
import stat
from pathlib import Path

import pytest
from broker import Broker
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from mqtt_clients import ClientPool, connect_client

from photosafe.protocol.envelope import DeviceTrust
from photosafe.provisioning import ca as device_ca
from photosafe.provisioning import pki
from photosafe.provisioning.cli import main
from photosafe.provisioning.sandbox import Site

PASSPHRASE = "correct horse battery staple"


@pytest.fixture
def secret(tmp_path: Path) -> Path:
    path = tmp_path / "passphrase"
    path.write_text(PASSPHRASE + "\n")
    path.chmod(0o600)
    return path


@pytest.fixture
def ca_dir(tmp_path: Path, secret: Path) -> Path:
    folder = tmp_path / "ca"
    assert (
        main(["ca", "init", str(folder), "--name", "Test CA", "--passphrase-file", str(secret)])
        == 0
    )
    return folder


def provision(*argv: str | Path) -> int:
    return main([str(a) for a in argv])


def enrol_issue_install(
    station: Path, ca: Path, device_id: str, out: Path, *extra: str, new_key: bool = False
) -> x509.Certificate:
    """The whole key-never-leaves-the-station round: enrol, issue, install."""
    assert (
        provision(
            "enrol", "--device-id", device_id, "--dir", station, *(["--new-key"] if new_key else [])
        )
        == 0
    )
    assert provision("issue", station / "device.csr", "--ca", ca, "--out", out, *extra) == 0
    assert provision("install", out, "--dir", station, "--ca", ca / "ca.crt") == 0
    return x509.load_pem_x509_certificate((station / "device.crt").read_bytes())


def csr_for(common_name: str, key: object = None, san: list[str] | None = None) -> bytes:
    key = key or pki.new_key()
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    )
    if san is not None:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(n) for n in san]), critical=False
        )
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)  # type: ignore[arg-type]


def self_signed_ca(
    key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey, *, ca: bool = True, cert_sign: bool = True
) -> bytes:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Hospital Issuing CA")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=3000))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=cert_sign,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


def key_file(path: Path, key: object, password: bytes | None = None) -> Path:
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(password)
        if password
        else serialization.NoEncryption()
    )
    path.write_bytes(
        key.private_bytes(  # type: ignore[attr-defined]
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
        )
    )
    return path


# -- ca init / import ---------------------------------------------------------------------------


def test_ca_init_writes_an_encrypted_key_a_crl_and_a_fleet_key(ca_dir: Path, secret: Path) -> None:
    assert b"ENCRYPTED" in (ca_dir / "ca.key").read_bytes()
    assert b"ENCRYPTED" in (ca_dir / "fleet-signing.key").read_bytes()
    for name in ("ca.key", "fleet-signing.key"):
        assert stat.S_IMODE((ca_dir / name).stat().st_mode) == 0o600
    opened = device_ca.open_ca(ca_dir, PASSPHRASE.encode())
    assert opened.key_encrypted
    crl = x509.load_pem_x509_crl((ca_dir / "crl.pem").read_bytes())
    assert crl.is_signature_valid(opened.cert.public_key())  # type: ignore[arg-type]
    with pytest.raises(device_ca.CaError, match="wrong passphrase"):
        device_ca.open_ca(ca_dir, b"not the passphrase")
    with pytest.raises(device_ca.CaError, match="no passphrase"):
        device_ca.open_ca(ca_dir, None)


def test_ca_init_asks_twice_at_a_prompt_and_refuses_weak_or_differing_passphrases(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    answers = iter([PASSPHRASE, PASSPHRASE, "short", PASSPHRASE, PASSPHRASE + "x"])
    monkeypatch.setattr("getpass.getpass", lambda prompt="": next(answers))
    assert provision("ca", "init", tmp_path / "a") == 0
    assert provision("ca", "init", tmp_path / "b") == 1
    assert "at least 12 characters" in capsys.readouterr().err
    assert provision("ca", "init", tmp_path / "c") == 1
    assert "differ" in capsys.readouterr().err
    assert not (tmp_path / "b").exists() and not (tmp_path / "c").exists()


def test_ca_init_refuses_a_folder_that_is_not_empty(ca_dir: Path, secret: Path) -> None:
    assert provision("ca", "init", ca_dir, "--passphrase-file", secret) == 1


def test_the_hospitals_rsa_ca_is_imported_and_signs_device_certificates(
    tmp_path: Path, secret: Path
) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    (tmp_path / "h.crt").write_bytes(self_signed_ca(key))
    key_file(tmp_path / "h.key", key, b"hospital-key-pass")
    (tmp_path / "kp").write_text("hospital-key-pass\n")
    folder = tmp_path / "imported"
    assert (
        provision(
            "ca",
            "import",
            folder,
            "--cert",
            tmp_path / "h.crt",
            "--key",
            tmp_path / "h.key",
            "--key-passphrase-file",
            tmp_path / "kp",
            "--passphrase-file",
            secret,
        )
        == 0
    )
    assert b"ENCRYPTED" in (folder / "ca.key").read_bytes()
    station = tmp_path / "station"
    cert = enrol_issue_install(
        station, folder, "ward-9-01", tmp_path / "w.crt", "--passphrase-file", str(secret)
    )
    cert.verify_directly_issued_by(
        x509.load_pem_x509_certificate((tmp_path / "h.crt").read_bytes())
    )
    assert provision("revoke", "ward-9-01", "--ca", folder, "--passphrase-file", secret) == 0
    ca_cert = x509.load_pem_x509_certificate((folder / "ca.crt").read_bytes())
    crl = x509.load_pem_x509_crl((folder / "crl.pem").read_bytes())
    trust = DeviceTrust(ca_cert, crl)  # what the gateway loads: CRL signed by this CA
    assert trust.crl is not None
    assert crl.get_revoked_certificate_by_serial_number(cert.serial_number) is not None


@pytest.mark.parametrize(
    ("make_key", "options", "message"),
    [
        (lambda: rsa.generate_private_key(public_exponent=65537, key_size=1024), {}, "RSA-1024"),
        (lambda: ec.generate_private_key(ec.SECP384R1()), {}, "secp384r1"),
        (pki.new_key, {"ca": False}, "not a CA"),
        (pki.new_key, {"cert_sign": False}, "keyCertSign"),
    ],
)
def test_import_refuses_a_ca_that_may_not_sign_or_is_weak(
    tmp_path: Path,
    secret: Path,
    make_key: object,
    options: dict[str, bool],
    message: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    key = make_key()  # type: ignore[operator]
    (tmp_path / "h.crt").write_bytes(self_signed_ca(key, **options))
    key_file(tmp_path / "h.key", key)
    code = provision(
        "ca",
        "import",
        tmp_path / "x",
        "--cert",
        tmp_path / "h.crt",
        "--key",
        tmp_path / "h.key",
        "--passphrase-file",
        secret,
    )
    assert code == 1
    assert message in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_import_refuses_a_key_that_is_not_the_certificates(tmp_path: Path, secret: Path) -> None:
    (tmp_path / "h.crt").write_bytes(self_signed_ca(pki.new_key()))
    key_file(tmp_path / "h.key", pki.new_key())
    with pytest.raises(device_ca.CaError, match="does not belong"):
        device_ca.import_ca(
            tmp_path / "x",
            (tmp_path / "h.crt").read_bytes(),
            (tmp_path / "h.key").read_bytes(),
            PASSPHRASE.encode(),
            key_passphrase=lambda prompt: b"",
        )


# -- issue --------------------------------------------------------------------------------------


def test_issued_certificates_name_the_device_for_client_auth_only(
    ca_dir: Path, secret: Path, tmp_path: Path
) -> None:
    (tmp_path / "d.csr").write_bytes(csr_for("ward-3-02", san=["ward-3-02"]))
    out = tmp_path / "d.crt"
    assert (
        provision(
            "issue",
            tmp_path / "d.csr",
            "--ca",
            ca_dir,
            "--days",
            "30",
            "--out",
            out,
            "--passphrase-file",
            secret,
        )
        == 0
    )
    cert = x509.load_pem_x509_certificate(out.read_bytes())
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "ward-3-02"
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert list(san) == [x509.DNSName("ward-3-02")]
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert (
        dt.timedelta(days=29)
        < cert.not_valid_after_utc - cert.not_valid_before_utc
        <= dt.timedelta(days=31)
    )
    index = device_ca.read_index(ca_dir)
    assert [(e.device, e.serial) for e in index] == [("ward-3-02", cert.serial_number)]
    assert (ca_dir / "issued" / f"{cert.serial_number:x}.pem").read_bytes() == out.read_bytes()


@pytest.mark.parametrize(
    ("common_name", "san", "message"),
    [
        ("ward+1", None, "'+'"),
        ("ward/1", None, "'/'"),
        ("#", None, "'#'"),
        ("ward\x001", None, "NUL"),
        ("ward 1", None, "not valid"),
        ("photosafe-gateway", None, "reserved"),
        ("photosafe-fleet", None, "reserved"),
        ("ward-1", ["ward-2"], "SAN"),
    ],
)
def test_issue_refuses_ids_that_could_address_other_topics_or_services(
    ca_dir: Path, common_name: str, san: list[str] | None, message: str
) -> None:
    opened = device_ca.open_ca(ca_dir, PASSPHRASE.encode())
    with pytest.raises(device_ca.CaError, match=re.escape(message)):
        device_ca.issue(opened, csr_for(common_name, san=san))
    assert device_ca.read_index(ca_dir) == []


def test_issue_refuses_long_lifetimes_and_non_p256_device_keys(ca_dir: Path) -> None:
    opened = device_ca.open_ca(ca_dir, PASSPHRASE.encode())
    with pytest.raises(device_ca.CaError, match="825"):
        device_ca.issue(opened, csr_for("ward-1"), days=826)
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    with pytest.raises(device_ca.CaError, match="P-256"):
        device_ca.issue(opened, csr_for("ward-1", key=rsa_key))
    with pytest.raises(device_ca.CaError, match="not a PEM"):
        device_ca.issue(opened, b"-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n")


def test_a_certificate_never_outlives_its_ca(tmp_path: Path, secret: Path) -> None:
    assert (
        provision("ca", "init", tmp_path / "short", "--days", "20", "--passphrase-file", secret)
        == 0
    )
    opened = device_ca.open_ca(tmp_path / "short", PASSPHRASE.encode())
    issued = device_ca.issue(opened, csr_for("ward-1"))
    assert issued.shortened
    assert issued.cert.not_valid_after_utc == opened.cert.not_valid_after_utc


def test_a_service_identity_is_issued_only_when_asked_for(ca_dir: Path) -> None:
    opened = device_ca.open_ca(ca_dir, PASSPHRASE.encode())
    issued = device_ca.issue(opened, csr_for("photosafe-gateway"), allow_service=True)
    assert issued.device_id == "photosafe-gateway"
    with pytest.raises(device_ca.CaError, match="not a service identity"):
        device_ca.issue(opened, csr_for("ward-1"), allow_service=True)


# -- enrol / install ----------------------------------------------------------------------------


def test_enrol_makes_a_private_p256_key_and_a_csr_naming_the_device(tmp_path: Path) -> None:
    station = tmp_path / "station"
    me = pwd.getpwuid(os.geteuid()).pw_name
    assert provision("enrol", "--device-id", "ward-4-01", "--dir", station, "--owner", me) == 0
    key_path = station / "device.key"
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    assert key_path.stat().st_uid == os.geteuid()
    key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp256r1"
    csr = x509.load_pem_x509_csr((station / "device.csr").read_bytes())
    assert csr.public_key() == key.public_key()
    assert device_ca.read_csr((station / "device.csr").read_bytes())[1] == "ward-4-01"
    before = key_path.read_bytes()
    assert provision("enrol", "--device-id", "ward-4-01", "--dir", station) == 0
    assert key_path.read_bytes() == before  # a second enrol keeps the key (renewal)


def test_enrol_refuses_bad_ids_and_unknown_owners(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert provision("enrol", "--device-id", "ward/1", "--dir", tmp_path / "s") == 1
    assert (
        provision(
            "enrol",
            "--device-id",
            "ward-1",
            "--dir",
            tmp_path / "s",
            "--owner",
            "no-such-user-here",
        )
        == 1
    )
    err = capsys.readouterr().err
    assert "'/'" in err and "no user" in err
    assert not (tmp_path / "s" / "device.key").exists()


def test_install_writes_only_a_certificate_that_fits_this_station(
    ca_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    station = tmp_path / "station"
    assert provision("enrol", "--device-id", "ward-5-01", "--dir", station) == 0
    key = serialization.load_pem_private_key((station / "device.key").read_bytes(), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    opened = device_ca.open_ca(ca_dir, PASSPHRASE.encode())
    other_ca = pki.new_authority("Another CA")
    long_ago = dt.datetime.now(dt.UTC) - dt.timedelta(days=400)
    wrong = {
        "another key": device_ca.issue(opened, csr_for("ward-5-01")).cert,
        "another CA": pki.issue_client_certificate(other_ca, "ward-5-01", key.public_key()),
        "another device": device_ca.issue(opened, csr_for("ward-5-02", key=key)).cert,
        "expired": device_ca.issue(
            opened, csr_for("ward-5-01", key=key), days=30, now=long_ago
        ).cert,
        "server auth": pki.issue_server_certificate(
            pki.Authority(opened.key, opened.cert),
            "ward-5-01",
            key.public_key(),
            hostnames=["ward-5-01"],
            addresses=[],
        ),
    }
    expected = {
        "another key": "not for this station's key",
        "another CA": "not issued by the CA",
        "another device": "not this station",
        "expired": "not valid now",
        "server auth": "not for TLS client authentication",
    }
    for case, cert in wrong.items():
        path = tmp_path / f"{case}.crt"
        path.write_bytes(pki.cert_pem(cert))
        assert provision("install", path, "--dir", station, "--ca", ca_dir / "ca.crt") == 1, case
        assert expected[case] in capsys.readouterr().err, case
        assert not (station / "device.crt").exists()


# -- revoke / renew / crl -----------------------------------------------------------------------


def test_revoke_a_sandbox_certificate_file_and_resign_the_crl(
    site: Site, capsys: pytest.CaptureFixture[str]
) -> None:
    cert_path = site.device("ward-a-02").cert
    assert provision("revoke", "--cert", cert_path, "--ca", site.root) == 0
    assert "not encrypted" in capsys.readouterr().err  # the sandbox key is plain: said so
    serial = x509.load_pem_x509_certificate(cert_path.read_bytes()).serial_number
    first = x509.load_pem_x509_crl(site.crl.read_bytes())
    assert first.get_revoked_certificate_by_serial_number(serial) is not None
    assert provision("ca", "crl", site.root, "--days", "60") == 0
    again = x509.load_pem_x509_crl(site.crl.read_bytes())
    assert again.get_revoked_certificate_by_serial_number(serial) is not None
    assert again.next_update_utc is not None and first.next_update_utc is not None
    assert again.next_update_utc > first.next_update_utc
    assert provision("revoke", "ward-a-01", "--ca", site.root) == 1  # not in the index
    assert "--cert" in capsys.readouterr().err


def test_renew_lists_certificates_due(
    ca_dir: Path, secret: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    opened = device_ca.open_ca(ca_dir, PASSPHRASE.encode())
    device_ca.issue(opened, csr_for("ward-6-01"), days=10)
    device_ca.issue(opened, csr_for("ward-6-02"), days=300)
    assert provision("renew", "--ca", ca_dir, "--within", "30") == 0
    out = capsys.readouterr().out
    assert "ward-6-01: expires" in out and "ward-6-02" not in out
    assert "enrol --device-id ID" in out  # the procedure is printed too


def test_a_revoked_device_is_refused_at_connect(
    broker: Broker, mqtt_clients: ClientPool, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    site = broker.site
    station = tmp_path / "station"
    cert = enrol_issue_install(station, site.root, "ward-b-07", tmp_path / "b07.crt")
    client, recorder = connect_client(site, station / "device.crt", station / "device.key", "b07")
    mqtt_clients.track(client)
    assert recorder.wait_connect().accepted

    assert provision("revoke", "ward-b-07", "--ca", site.root) == 0
    assert f"{cert.serial_number:x}" in capsys.readouterr().out
    crl = x509.load_pem_x509_crl(site.crl.read_bytes())  # the broker's crlfile
    assert crl.get_revoked_certificate_by_serial_number(cert.serial_number) is not None
    broker.restart()

    client, recorder = connect_client(site, station / "device.crt", station / "device.key", "b07-2")
    mqtt_clients.track(client)
    assert not recorder.wait_connect().accepted
    assert "certificate verify failed" in broker.log(run=True)
    mqtt_clients.connect("ward-a-01")  # everyone else still connects


def test_a_renewed_certificate_connects_and_the_old_one_can_be_ended(
    broker: Broker, mqtt_clients: ClientPool, tmp_path: Path
) -> None:
    site = broker.site
    station = tmp_path / "station"
    first = enrol_issue_install(station, site.root, "ward-c-01", tmp_path / "c1.crt")
    old_cert, old_key = tmp_path / "old.crt", tmp_path / "old.key"
    old_cert.write_bytes((station / "device.crt").read_bytes())
    old_key.write_bytes((station / "device.key").read_bytes())
    old_key.chmod(0o600)

    # Renewal with a new key: the station keeps working on the old pair until install.
    second = enrol_issue_install(station, site.root, "ward-c-01", tmp_path / "c2.crt", new_key=True)
    assert second.serial_number != first.serial_number
    assert second.public_key() != first.public_key()
    assert not (station / "device.key.next").exists()
    client, recorder = connect_client(
        site, station / "device.crt", station / "device.key", "c1-new"
    )
    mqtt_clients.track(client)
    assert recorder.wait_connect().accepted

    assert (
        provision("revoke", "ward-c-01", "--serial", f"{first.serial_number:x}", "--ca", site.root)
        == 0
    )
    broker.restart()
    client, recorder = connect_client(site, station / "device.crt", station / "device.key", "c1-b")
    mqtt_clients.track(client)
    assert recorder.wait_connect().accepted  # the renewed certificate still connects
    client, recorder = connect_client(site, old_cert, old_key, "c1-old")
    mqtt_clients.track(client)
    assert not recorder.wait_connect().accepted  # the old one, revoked by serial, does not
