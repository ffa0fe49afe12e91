"""`photosafe-gateway fleet`: stations' retained statuses, read through a real mosquitto."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import pytest
from broker import Broker
from mqtt_clients import ClientPool, publish

from photosafe.gateway.cli import main
from photosafe.gateway.config import load_config
from photosafe.gateway.fleet import FleetRow, render, rows
from photosafe.gateway.service import Gateway
from photosafe.protocol import topics
from photosafe.protocol.consent import ImpliedCategory, StationKind, StationProfile
from photosafe.protocol.fleet import StationStatus
from photosafe.provisioning.sandbox import Site, build_site, free_port
from photosafe.provisioning.site_configs import gateway_config_toml

DEVICES = ("ward-a-01", "ward-a-02", "theatre-1", "clinic-9")
NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)


@pytest.fixture
def site(tmp_path: Path) -> Site:
    """Four stations (this module's own site, replacing conftest's three)."""
    return build_site(tmp_path / "site", DEVICES, port=free_port())


@pytest.fixture
def gateway_toml(broker: Broker, tmp_path: Path) -> Path:
    records = tmp_path / "records"
    records.mkdir()
    path = tmp_path / "gateway.toml"
    path.write_text(gateway_config_toml(broker.site, records))
    return path


def statuses() -> dict[str, bytes]:
    healthy = StationStatus(
        device="ward-a-01",
        online=True,
        at=NOW - dt.timedelta(minutes=2),
        version="0.1.0",
        profile=StationProfile(kind=StationKind.WARD),
        cert_days_left=300,
        clock_synchronised=True,
        outbox=0,
        config_version=3,
    )
    troubled = StationStatus(
        device="ward-a-02",
        online=True,
        at=NOW - dt.timedelta(seconds=20),
        profile=StationProfile(
            kind=StationKind.THEATRE, implied_categories=(ImpliedCategory.XRAY,)
        ),
        cert_days_left=12,
        clock_synchronised=False,
        outbox=4,
        last_error="broker-refused",
        config_error="bad-signature",
    )
    gone = StationStatus(device="theatre-1", online=False)  # the last will
    return {
        "ward-a-01": healthy.to_bytes(),
        "ward-a-02": troubled.to_bytes(),
        "theatre-1": gone.to_bytes(),
        "clinic-9": b'{"device":"clinic-9","online":true,"patient":"9434765919"}',
    }


def test_the_fleet_table_shows_every_station_and_what_needs_doing(
    broker: Broker,
    mqtt_clients: ClientPool,
    gateway_toml: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for device, payload in statuses().items():
        client, recorder = mqtt_clients.connect(device)
        assert publish(client, recorder, topics.status(device), payload, retain=True) == 0x10
    mqtt_clients.close_all()  # retained: the statuses outlive the connections

    # A running gateway is not disturbed: the fleet command uses its own client id.
    gateway = Gateway(load_config(gateway_toml))
    gateway.start()
    try:
        assert main(["fleet", "--config", str(gateway_toml), "--wait", "0.5"]) == 0
        assert gateway._client.is_connected()
    finally:
        gateway.stop()
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].split() == [
        "DEVICE",
        "STATE",
        "LAST",
        "SEEN",
        "CERT",
        "DAYS",
        "OUTBOX",
        "CONFIG",
        "WARNINGS",
    ]
    table = {line.split()[0]: line for line in lines[1:-1]}
    assert list(table) == sorted(DEVICES)
    assert table["ward-a-01"].split()[1] == "online"
    # NOW is taken at import: in a long suite run more minutes pass before this line.
    assert re.search(r"\(\d+m ago\)", table["ward-a-01"])
    assert table["ward-a-01"].split()[-4:] == ["300", "0", "v3", "-"]
    troubled = table["ward-a-02"]
    for warning in (
        "certificate expires in 12 days: renew",
        "clock not synchronised",
        "error broker-refused",
        "config ignored: bad-signature",
    ):
        assert warning in troubled
    assert table["theatre-1"].split()[1:3] == ["offline", "-"]
    assert table["theatre-1"].endswith("offline")
    assert "status unreadable" in table["clinic-9"]  # extra fields are refused, never shown
    assert "9434765919" not in out
    assert lines[-1] == "4 stations: 2 online, 2 offline or unknown, 3 with warnings"


def test_fleet_says_so_when_the_broker_cannot_be_reached(
    broker: Broker, gateway_toml: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broker.stop()
    assert main(["fleet", "--config", str(gateway_toml), "--wait", "0.1"]) == 1
    assert "photosafe-gateway fleet: cannot connect" in capsys.readouterr().err


def test_rows_skip_cleared_statuses_and_foreign_topics() -> None:
    found = rows(
        {
            topics.status("ward-a-01"): StationStatus(device="ward-a-01", online=True).to_bytes(),
            topics.status("ward-a-02"): b"",  # a cleared retained status
            "photosafe/v1/ward-a-03/status/extra": b"{}",
            topics.status("ward-a-04"): StationStatus(device="ward-a-01", online=True).to_bytes(),
        }
    )
    assert [(row.device, row.status is None) for row in found] == [
        ("ward-a-01", False),
        ("ward-a-04", True),  # names another device than its topic: unreadable
    ]


def test_warnings_cover_expired_certificates_and_clocks_ahead() -> None:
    status = StationStatus(
        device="ward-a-01",
        online=True,
        at=NOW + dt.timedelta(hours=2),
        cert_days_left=-3,
    )
    warnings = FleetRow("ward-a-01", status).warnings(NOW)
    assert warnings == ["certificate expired: renew now", "status from the future (clock?)"]
    text = render([FleetRow("ward-a-01", status)], NOW)
    assert "1 stations: 1 online, 0 offline or unknown, 1 with warnings" in text
