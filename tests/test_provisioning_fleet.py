"""Fleet from an inventory: plan, bundles, signed remote config, gateway key rotation.

Bundles are checked the way a station reads them (photosafe.daemon.config.load_config after a
real enrol / issue / install in the bundle folder). Remote config and key rotation go through a
real mosquitto and a real gateway.
"""

from __future__ import annotations

import base64
import json
import os
import stat
import time
import uuid
from pathlib import Path

import pytest
from broker import Broker
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, x25519
from keys import manifest_for
from mqtt_clients import ClientPool, capture_properties, publish, subscribe

from photosafe.daemon.config import load_config as load_station_config
from photosafe.gateway.config import load_config as load_gateway_config
from photosafe.gateway.service import Gateway
from photosafe.protocol import ack, envelope, topics
from photosafe.protocol.consent import StationKind
from photosafe.protocol.fleet import ConfigMessageRejected, pin, verify_config
from photosafe.provisioning import ca as device_ca
from photosafe.provisioning.cli import main
from photosafe.provisioning.fleet import parse_inventory
from photosafe.provisioning.sandbox import Site
from photosafe.provisioning.site_configs import gateway_config_toml

PASSPHRASE = b"correct horse battery staple"
HEADER = "device_id,site,ward_or_theatre,profile,hostname\n"
GOOD = (
    "ward-7-01,St Elsewhere,Ward 7,ward,ps-ward-7-01\n"
    'theatre-2,St Elsewhere,Theatre 2,"theatre:endoscopic;x-ray",ps-theatre-2\n'
    "clinic-1,Northgate,Dermatology OPD,theatre,ps-clinic-1.northgate.nhs.example\n"
)


def provision(*argv: str | Path) -> int:
    return main([str(a) for a in argv])


def pem_public(key: x25519.X25519PublicKey | ed25519.Ed25519PublicKey) -> bytes:
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


@pytest.fixture
def estate(tmp_path: Path) -> Path:
    """An estates machine: CA folder `ca/`, gateway public keys and `site.toml`."""
    device_ca.init_ca(tmp_path / "ca", "Test Hospital Device CA", PASSPHRASE)
    (tmp_path / "passphrase").write_bytes(PASSPHRASE + b"\n")
    keys = tmp_path / "gateway-public"
    keys.mkdir()
    (keys / "recipient.pub").write_bytes(
        pem_public(x25519.X25519PrivateKey.generate().public_key())
    )
    (keys / "signing.pub").write_bytes(
        pem_public(ed25519.Ed25519PrivateKey.generate().public_key())
    )
    (tmp_path / "site.toml").write_text(
        """\
[broker]
host = "mqtt.st-elsewhere.nhs.example"
port = 8883

[gateway]
recipient_public_key = "gateway-public/recipient.pub"
signing_public_keys = ["gateway-public/signing.pub"]
suite = "aes256gcm"

[identity]
nhs_gs1_company_prefix = "5000000"
mrn_pattern = "RX1-(?P<mrn>[0-9]{7})"
mrn_authority = "RX1"

[drivers]
camera = "picamera2"

[outbox]
expiry_s = 600
"""
    )
    return tmp_path


def inventory(folder: Path, body: str, name: str = "inventory.csv") -> Path:
    path = folder / name
    path.write_text(HEADER + body)
    return path


def bundle(estate: Path, inv: Path, out: Path | None = None) -> int:
    return provision(
        "fleet",
        "bundle",
        inv,
        "--ca",
        estate / "ca",
        "--site-config",
        estate / "site.toml",
        "--out",
        out or estate / "bundles",
    )


# -- plan ---------------------------------------------------------------------------------------


def test_plan_accepts_a_good_inventory(estate: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert provision("fleet", "plan", inventory(estate, GOOD)) == 0
    out = capsys.readouterr().out
    assert "3 stations, no problems" in out
    assert "St Elsewhere: 2 stations (1 ward, 1 theatre)" in out
    stations = parse_inventory(HEADER + GOOD)
    assert [s.line for s in stations] == [2, 3, 4]
    assert stations[1].profile.kind is StationKind.THEATRE
    assert [c.value for c in stations[1].profile.implied_categories] == ["endoscopic", "x-ray"]


def test_plan_reports_every_bad_row_with_its_line_and_bundle_writes_nothing(
    estate: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    body = (
        "ward-7-01,St Elsewhere,Ward 7,ward,ps-ward-7-01\n"  # 2: fine
        "ward-7-01,St Elsewhere,Ward 7,ward,ps-ward-7-99\n"  # 3: duplicate id
        "ward+7,St Elsewhere,Ward 7,ward,ps-ward-7-02\n"  # 4: wildcard
        "ward/#,St Elsewhere,Ward 7,ward,ps-ward-7-03\n"  # 5: separator and wildcard
        "ward-7-04,St Elsewhere,Ward 7,kitchen,ps-ward-7-04\n"  # 6: unknown profile
        "ward-7-05,St Elsewhere,,ward,ps-ward-7-05\n"  # 7: missing ward
        "ward-7-06,St Elsewhere,Ward 7,ward,-bad-host-\n"  # 8: bad hostname
        "\n"  # 9: blank lines are skipped
        "theatre-9,St Elsewhere,Theatre 9,theatre:tattoos,ps-theatre-9\n"  # 10: unknown category
        "ward-7-07,St Elsewhere,Ward 7,ward:x-ray,ps-ward-7-07\n"  # 11: ward with implied
        "photosafe-gateway,St Elsewhere,Ward 7,ward,ps-gw\n"  # 12: reserved identity
        "WARD-7-01,St Elsewhere,Ward 7,ward,ps-ward-7-08\n"  # 13: differs only in case
        "ward-7-09,St Elsewhere,Ward 7,ward,ps-ward-7-01\n"  # 14: duplicate hostname
        "ward-7-10,St Elsewhere,Ward 7\n"  # 15: missing cells
    )
    inv = inventory(estate, body)
    assert provision("fleet", "plan", inv) == 1
    err = capsys.readouterr().err
    expected = {
        3: "duplicate device id 'ward-7-01' (first on line 2",
        4: "contains '+'",
        5: "contains '#', '/'",
        6: "unknown profile 'kitchen'",
        7: "ward or theatre is missing",
        8: "hostname '-bad-host-' is not valid",
        10: "unknown implied-consent category tattoos",
        11: "a ward station may not accept implied consent",
        12: "reserved for a service identity",
        13: "duplicate device id 'WARD-7-01' (first on line 2",
        14: "duplicate hostname 'ps-ward-7-01' (first on line 2)",
        15: "3 cells, the header names 5",
    }
    lines = [line for line in err.splitlines() if line.startswith(f"{inv}:")]
    assert sorted({int(line.split(":")[1]) for line in lines}) == sorted(expected)
    for number, text in expected.items():
        assert any(line.startswith(f"{inv}:{number}: ") and text in line for line in lines), text
    assert "12 problem(s); nothing written" in err

    assert bundle(estate, inv) == 1
    assert not (estate / "bundles").exists()


def test_a_bad_header_or_unreadable_site_config_is_reported(
    estate: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = estate / "bad.csv"
    bad.write_text("device,site,ward\nward-1,X,Y\n")
    assert provision("fleet", "plan", bad) == 1
    assert "missing device_id, ward_or_theatre, profile, hostname" in capsys.readouterr().err
    (estate / "site.toml").write_text('[broker]\nhots = "x"\n')
    assert bundle(estate, inventory(estate, GOOD)) == 1
    err = capsys.readouterr().err
    assert "broker.hots" in err and "gateway" in err
    assert not (estate / "bundles").exists()


# -- bundle -------------------------------------------------------------------------------------


def test_a_bundle_holds_everything_but_the_key_and_checks_after_enrolment(
    estate: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert bundle(estate, inventory(estate, GOOD)) == 0
    assert "3 bundles: 3 created, 0 updated, 0 unchanged" in capsys.readouterr().out
    folder = estate / "bundles" / "theatre-2"
    assert sorted(p.name for p in folder.iterdir()) == [
        "INSTALL.txt",
        "ca.crt",
        "fleet.pub",
        "hostname",
        "recipient.pub",
        "signing-1.pub",
        "station.toml",
    ]
    assert (folder / "fleet.pub").read_bytes() == (estate / "ca" / "fleet-signing.pub").read_bytes()
    assert (folder / "hostname").read_text() == "ps-theatre-2\n"
    assert not list(folder.glob("*.key"))  # the key is made on the station, never here

    # The bundle folder plays /etc/photosafe: enrol, issue on the CA machine, install.
    credentials = folder / "credentials"
    assert provision("enrol", "--device-id", "theatre-2", "--dir", credentials) == 0
    assert (
        provision(
            "issue",
            credentials / "device.csr",
            "--ca",
            estate / "ca",
            "--out",
            estate / "t2.crt",
            "--passphrase-file",
            estate / "passphrase",
        )
        == 0
    )
    assert (
        provision("install", estate / "t2.crt", "--dir", credentials, "--ca", folder / "ca.crt")
        == 0
    )
    config = load_station_config(folder / "station.toml")
    assert config.device_id == "theatre-2"
    assert (config.station.site, config.station.location) == ("St Elsewhere", "Theatre 2")
    assert config.station.kind is StationKind.THEATRE
    assert [c.value for c in config.station.implied_categories] == ["endoscopic", "x-ray"]
    assert (config.broker.host, config.broker.port) == ("mqtt.st-elsewhere.nhs.example", 8883)
    assert config.broker.key_file == credentials / "device.key"
    assert config.gateway.suite == "aes256gcm"
    assert config.identity.mrn_authority == "RX1"
    assert (config.drivers.camera, config.outbox.expiry_s) == ("picamera2", 600)
    # Under the systemd unit the key comes from $CREDENTIALS_DIRECTORY (LoadCredential=).
    handed = estate / "run-credentials"
    handed.mkdir()
    (handed / "device.key").write_bytes((credentials / "device.key").read_bytes())
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(handed))
    assert load_station_config(folder / "station.toml").broker.key_file == handed / "device.key"


def test_bundling_again_is_idempotent_and_reports_what_changed(
    estate: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inv = inventory(estate, GOOD)
    assert bundle(estate, inv) == 0
    toml = estate / "bundles" / "ward-7-01" / "station.toml"
    before = toml.stat().st_mtime_ns
    capsys.readouterr()
    assert bundle(estate, inv) == 0
    assert "3 bundles: 0 created, 0 updated, 3 unchanged" in capsys.readouterr().out
    assert toml.stat().st_mtime_ns == before

    inventory(estate, GOOD.replace("Ward 7,", "Ward 7 (Burns),") + "ward-8-01,X,Ward 8,ward,ps-8\n")
    assert bundle(estate, inv) == 0
    assert "4 bundles: 1 created, 1 updated, 2 unchanged" in capsys.readouterr().out
    assert 'location = "Ward 7 (Burns)"' in toml.read_text()

    inventory(estate, GOOD.splitlines(keepends=True)[0])
    assert bundle(estate, inv) == 0
    out = capsys.readouterr().out
    assert "1 bundles: 0 created, 1 updated, 0 unchanged" in out
    assert "3 folder(s) for stations no longer in the inventory" in out


def test_five_hundred_stations_plan_and_bundle_in_a_few_seconds(
    estate: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = "".join(
        f"ward-{i:03d},Site {i % 3},Ward {i % 40},"
        + ("theatre:ultrasound" if i % 7 == 0 else "ward")
        + f",ps-{i:03d}\n"
        for i in range(500)
    )
    inv = inventory(estate, rows)
    started = time.monotonic()
    assert provision("fleet", "plan", inv) == 0
    assert bundle(estate, inv) == 0
    elapsed = time.monotonic() - started
    captured = capsys.readouterr()
    assert "500 bundles: 500 created" in captured.out
    assert "bundling: 500/500" in captured.err  # the progress bar (plain text, not a terminal)
    assert len([line for line in captured.err.splitlines() if line.startswith("bundling")]) <= 11
    assert elapsed < 5, f"500 stations took {elapsed:.1f}s"
    assert len(list((estate / "bundles").iterdir())) == 500

    started = time.monotonic()
    assert bundle(estate, inv) == 0
    assert time.monotonic() - started < 5
    assert "0 created, 0 updated, 500 unchanged" in capsys.readouterr().out


def test_bundle_needs_the_fleet_key_and_says_how_to_make_it(
    site: Site, estate: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert bundle(estate, inventory(estate, GOOD)) == 0
    capsys.readouterr()
    inv = inventory(estate, GOOD)
    assert (
        provision(
            "fleet",
            "bundle",
            inv,
            "--ca",
            site.root,
            "--site-config",
            estate / "site.toml",
            "--out",
            estate / "other",
        )
        == 1
    )
    assert f"ca fleet-key {site.root}" in capsys.readouterr().err
    assert not (estate / "other").exists()
    assert provision("ca", "fleet-key", site.root) == 0
    assert (
        provision(
            "fleet",
            "bundle",
            inv,
            "--ca",
            site.root,
            "--site-config",
            estate / "site.toml",
            "--out",
            estate / "other",
        )
        == 0
    )


# -- signed remote config and key rotation -----------------------------------------------------


def fleet_pins(ca_dir: Path) -> dict[str, ed25519.Ed25519PublicKey]:
    public = serialization.load_pem_public_key((ca_dir / "fleet-signing.pub").read_bytes())
    assert isinstance(public, ed25519.Ed25519PublicKey)
    return pin(public)


def test_fleet_config_signs_the_whole_desired_state_with_rising_versions(estate: Path) -> None:
    ca_dir, out = estate / "ca", estate / "messages"
    secret = estate / "passphrase"
    assert (
        provision(
            "fleet",
            "config",
            "--ca",
            ca_dir,
            "--device",
            "ward-7-01",
            "--location",
            "Ward 7 (Burns)",
            "--out",
            out,
            "--passphrase-file",
            secret,
        )
        == 0
    )
    first = verify_config(
        (out / "ward-7-01.config.json").read_bytes(), pinned=fleet_pins(ca_dir), device="ward-7-01"
    )
    assert (
        provision(
            "fleet",
            "config",
            "--ca",
            ca_dir,
            "--device",
            "ward-7-01",
            "--threshold",
            "min_focus=55",
            "--profile",
            "theatre:x-ray",
            "--out",
            out,
            "--passphrase-file",
            secret,
        )
        == 0
    )
    second = verify_config(
        (out / "ward-7-01.config.json").read_bytes(),
        pinned=fleet_pins(ca_dir),
        device="ward-7-01",
        last_version=first.version,
    )
    assert second.version > first.version
    assert second.settings.location == "Ward 7 (Burns)"  # kept: the message is the whole state
    assert second.settings.thresholds is not None
    assert second.settings.thresholds.min_focus == 55
    assert second.settings.profile is not None
    assert second.settings.profile.kind is StationKind.THEATRE
    assert (
        provision(
            "fleet",
            "config",
            "--ca",
            ca_dir,
            "--device",
            "ward-7-01",
            "--profile",
            "ward:x-ray",
            "--out",
            out,
            "--passphrase-file",
            secret,
        )
        == 1
    )


def test_rotation_makes_a_new_key_keeps_the_old_and_tells_every_station(
    site: Site, estate: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert provision("ca", "fleet-key", site.root) == 0
    old_id = envelope.key_id(_public_x25519(site.recipient_pub))
    assert "outbox expiry" in _help("rotate-gateway-key", capsys)
    out = site.root / "messages"
    assert (
        provision(
            "rotate-gateway-key",
            "--dir",
            site.root / "gateway",
            "--ca",
            site.root,
            "--device",
            "ward-a-01",
            "--device",
            "theatre-1",
            "--out",
            out,
        )
        == 0
    )
    printed = capsys.readouterr().out
    index = json.loads((site.root / "gateway" / "recipient-keys.json").read_text())["keys"]
    assert [k["kid"] for k in index][:1] == [old_id]
    new_id = index[-1]["kid"]
    assert new_id != old_id and f"keep the old key(s) {old_id}" in printed
    new_key = site.root / "gateway" / f"recipient-{new_id}.key"
    assert stat.S_IMODE(new_key.stat().st_mode) == 0o600
    assert site.recipient_key.exists()  # the old key stays
    for device in ("ward-a-01", "theatre-1"):
        config = verify_config(
            (out / f"{device}.config.json").read_bytes(),
            pinned=fleet_pins(site.root),
            device=device,
        )
        assert config.settings.recipient_key_id() == new_id


def _help(command: str, capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit):
        provision(command, "--help")
    return " ".join(capsys.readouterr().out.split())


def _public_x25519(path: Path) -> x25519.X25519PublicKey:
    key = serialization.load_pem_public_key(path.read_bytes())
    assert isinstance(key, x25519.X25519PublicKey)
    return key


def test_published_config_reaches_the_station_retained_and_a_replay_is_ignored(
    broker: Broker, mqtt_clients: ClientPool, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    site = broker.site
    assert provision("ca", "fleet-key", site.root) == 0
    pins = fleet_pins(site.root)
    publish_args: list[str | Path] = [
        "--host",
        site.host,
        "--port",
        str(site.port),
        "--ca-file",
        site.ca_cert,
        "--cert",
        site.fleet_cert,
        "--key",
        site.fleet_key,
    ]
    old, new = tmp_path / "old", tmp_path / "new"
    assert (
        provision(
            "fleet",
            "config",
            "--ca",
            site.root,
            "--device",
            "ward-a-01",
            "--location",
            "Ward 1",
            "--out",
            old,
        )
        == 0
    )
    assert (
        provision(
            "fleet",
            "config",
            "--ca",
            site.root,
            "--device",
            "ward-a-01",
            "--location",
            "Ward 2",
            "--out",
            new,
        )
        == 0
    )
    assert provision("fleet", "publish", new, *publish_args) == 0

    client, recorder = mqtt_clients.connect("ward-a-01")  # connects after: retained delivery
    assert not subscribe(client, recorder, topics.config("ward-a-01"))[0].is_failure
    message = recorder.get()
    assert message.retain
    applied = verify_config(bytes(message.payload), pinned=pins, device="ward-a-01")
    assert applied.settings.location == "Ward 2"

    assert provision("fleet", "publish", old, *publish_args) == 0  # an old message, replayed
    replay = recorder.get()
    with pytest.raises(ConfigMessageRejected) as caught:
        verify_config(
            bytes(replay.payload), pinned=pins, device="ward-a-01", last_version=applied.version
        )
    assert caught.value.code == "stale"
    # Publishing as a station is refused per message; a broker we cannot trust, at connect.
    station = site.device("ward-a-02")
    as_station = [*publish_args[:-4], "--cert", station.cert, "--key", station.key]
    assert provision("fleet", "publish", new, *as_station) == 1
    assert "refused by the broker (reason code 0x87)" in capsys.readouterr().err
    wrong_ca = [*publish_args[:4], "--ca-file", site.fleet_cert, *publish_args[6:]]
    assert provision("fleet", "publish", new, *wrong_ca) == 1
    assert "cannot connect" in capsys.readouterr().err
    # A station cannot write config, not even its own: only the fleet identity may.
    assert (
        publish(client, recorder, topics.config("ward-a-01"), bytes(replay.payload), retain=True)
        == 0x87
    )


def test_after_rotation_captures_sealed_to_the_old_and_the_new_key_are_both_filed(
    broker: Broker, mqtt_clients: ClientPool, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    site = broker.site
    assert provision("ca", "fleet-key", site.root) == 0
    assert (
        provision(
            "rotate-gateway-key",
            "--dir",
            site.root / "gateway",
            "--ca",
            site.root,
            "--device",
            "ward-a-01",
            "--out",
            tmp_path / "messages",
        )
        == 0
    )
    new_key = next((site.root / "gateway").glob("recipient-*.key"))
    # Step 1 of the runbook: the gateway lists the new key and keeps the old one.
    records = tmp_path / "records"
    records.mkdir()
    text = gateway_config_toml(site, records).replace(
        f'recipient_keys = ["{site.recipient_key}"]',
        f'recipient_keys = ["{new_key}", "{site.recipient_key}"]',
    )
    (tmp_path / "gateway.toml").write_text(text)
    gateway = Gateway(load_gateway_config(tmp_path / "gateway.toml"))
    gateway.start()
    try:
        config = verify_config(
            (tmp_path / "messages" / "ward-a-01.config.json").read_bytes(),
            pinned=fleet_pins(site.root),
            device="ward-a-01",
        )
        new_public = config.settings.recipient_key()
        assert new_public is not None
        old_public = _public_x25519(site.recipient_pub)
        files = site.device("ward-a-01")
        device_key = serialization.load_pem_private_key(files.key.read_bytes(), None)
        assert isinstance(device_key, ec.EllipticCurvePrivateKey)
        cert = x509.load_pem_x509_certificate(files.cert.read_bytes())
        client, recorder = mqtt_clients.connect("ward-a-01")
        subscribe(client, recorder, topics.ack("ward-a-01"))
        signing = serialization.load_pem_public_key(site.signing_pub.read_bytes())
        assert isinstance(signing, ed25519.Ed25519PublicKey)
        image = b"\xff\xd8 rotation test " + os.urandom(64) + b"\xff\xd9"
        captures = []
        for recipient in (old_public, new_public):  # queued before the switch, then after
            capture = uuid.uuid4()
            sealed = envelope.seal(
                manifest_for(image, "ward-a-01", capture),
                image,
                device_key=device_key,
                device_cert=cert,
                recipient=recipient,
            )
            props = capture_properties(
                response_topic=topics.ack("ward-a-01"), correlation=capture.bytes
            )
            assert (
                publish(
                    client, recorder, topics.capture("ward-a-01"), sealed, properties=props
                ).value
                == 0
            )
            receipt = ack.verify(
                bytes(recorder.get().payload), pinned=ack.pin(signing), device="ward-a-01"
            )
            assert (receipt.capture, receipt.status) == (capture, ack.AckStatus.STORED)
            captures.append(str(capture))
        assert sorted(p.name for p in (records / "by-capture").iterdir()) == sorted(captures)
        assert envelope.key_id(new_public) != envelope.key_id(old_public)
        assert (
            base64.b64decode(config.settings.recipient_public_key or "")
            == new_public.public_bytes_raw()
        )
    finally:
        gateway.stop()
