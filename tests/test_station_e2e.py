"""End to end: the real station code and the real gateway through a real mosquitto (TLS, client
certificates, the ACL). The camera and scanner are the simulated drivers; everything else is the
production code path. Each test is one "Must hold" of the delivery issue.
"""

from __future__ import annotations

import base64
import gc
import json
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from biip.checksums import gs1_standard_check_digit
from broker import Broker
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from mqtt_clients import close_client, connect_client, subscribe

from photosafe.daemon.app import SealingSender, Station, build_station
from photosafe.daemon.config import load_config as load_station_config
from photosafe.drivers.camera_simulated import SimulatedCamera
from photosafe.drivers.display_simulated import RecordingDisplay
from photosafe.drivers.indicator import Signal
from photosafe.drivers.indicator_simulated import RecordingIndicator
from photosafe.drivers.scanner_simulated import SimulatedScanner
from photosafe.gateway.config import load_config as load_gateway_config
from photosafe.gateway.service import Gateway
from photosafe.protocol import cards, fleet, topics
from photosafe.protocol.consent import Purpose
from photosafe.protocol.fleet import parse_status
from photosafe.provisioning import pki
from photosafe.provisioning.site_configs import (
    SANDBOX_NHS_PREFIX,
    write_gateway_config,
    write_station_config,
)

DEVICE = "ward-a-01"
BADGE = "STAFF-123456"
CONSENT = cards.card_text(cards.ExplicitConsentCard((Purpose.CARE,), deidentified_use=False))
CAPTURE = cards.card_text(cards.CaptureCard())


def wristband(nhs_number: str) -> str:
    stem = SANDBOX_NHS_PREFIX + nhs_number
    return f"]d28018{stem}{gs1_standard_check_digit(stem)}"


@dataclass
class RunningStation:
    station: Station
    scanner: SimulatedScanner
    indicator: RecordingIndicator
    thread: threading.Thread
    counts: dict[str, int]

    def capture(self, nhs_number: str = "9434765919") -> None:
        for text in (BADGE, wristband(nhs_number), CONSENT, CAPTURE):
            assert self.scanner.feed(text)

    def stop(self) -> dict[str, int]:
        self.station.stop()
        self.thread.join(timeout=30)
        assert not self.thread.is_alive()
        return self.counts


@dataclass
class Harness:
    broker: Broker
    records: Path
    station_toml: Path
    gateway_toml: Path
    gateways: list[Gateway]
    stations: list[RunningStation]

    def start_gateway(self) -> Gateway:
        gateway = Gateway(load_gateway_config(self.gateway_toml))
        gateway.start()
        assert gateway.wait_subscribed(10)
        self.gateways.append(gateway)
        return gateway

    def start_station(self) -> RunningStation:
        scanner, indicator = SimulatedScanner(), RecordingIndicator()
        station = build_station(
            load_station_config(self.station_toml),
            scanner=scanner,
            indicator=indicator,
            camera=SimulatedCamera(width=800, height=600),
        )
        station.start()
        counts: dict[str, int] = {}
        thread = threading.Thread(target=lambda: counts.update(station.run()), daemon=True)
        thread.start()
        assert _wait(lambda: station.loop.connected, 10)
        running = RunningStation(station, scanner, indicator, thread, counts)
        self.stations.append(running)
        return running

    def filed(self) -> list[Path]:
        return sorted(self.records.rglob("manifest.json"))


def _wait(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return False


@pytest.fixture
def harness(broker: Broker, tmp_path: Path) -> Iterator[Harness]:
    site = broker.site
    records = tmp_path / "records"
    station_toml = write_station_config(
        site, DEVICE, ack_timeout_s=1.5, expiry_s=6, grace_s=4, patient_timeout_s=60
    )
    h = Harness(broker, records, station_toml, write_gateway_config(site, records), [], [])
    try:
        yield h
    finally:
        for running in h.stations:
            if running.thread.is_alive():
                running.stop()
        for gateway in h.gateways:
            gateway.stop()


def test_capture_is_stored_only_after_the_gateways_signed_ack(harness: Harness) -> None:
    station = harness.start_station()
    station.capture()
    # No gateway yet: the broker takes the capture, but nothing may say stored.
    assert station.indicator.wait_for(Signal.SENDING, 10)
    assert not station.indicator.wait_for(Signal.STORED, 1.0)
    harness.start_gateway()
    assert station.indicator.wait_for(Signal.STORED, 10)
    assert len(harness.filed()) == 1
    assert station.stop()["stored"] == 1


def test_broker_restart_with_captures_in_flight_files_each_exactly_once(harness: Harness) -> None:
    harness.start_gateway()
    station = harness.start_station()
    numbers = ["9434765919", "9434765870", "4010232137"]
    for number in numbers:
        station.capture(number)
    harness.broker.kill()
    harness.broker.restart()
    assert station.indicator.wait_for(Signal.STORED, 20, count=len(numbers))
    manifests = harness.filed()
    assert len(manifests) == len(numbers)
    assert len({m.parent.name for m in manifests}) == len(numbers)
    assert Signal.NOT_STORED not in station.indicator.signals
    assert station.stop()["stored"] == len(numbers)


def test_gateway_down_captures_pend_then_expire_visibly(harness: Harness) -> None:
    station = harness.start_station()
    station.capture()
    assert station.indicator.wait_for(Signal.NOT_STORED, 15)
    assert Signal.STORED not in station.indicator.signals
    detail = next(d for s, d in station.indicator.shown if s is Signal.NOT_STORED)
    assert detail is not None and "retake" in detail
    assert station.station.loop.last_error == "not-stored"  # what the fleet status reports
    assert station.stop()["not_stored"] == 1


def test_gateway_returning_within_the_expiry_files_the_pending_capture(harness: Harness) -> None:
    station = harness.start_station()
    station.capture()
    assert station.indicator.wait_for(Signal.SENDING, 10)
    assert not station.indicator.wait_for(Signal.STORED, 2.0)
    harness.start_gateway()
    assert station.indicator.wait_for(Signal.STORED, 10)
    assert len(harness.filed()) == 1


def test_stop_waits_for_acks_then_reports_what_was_not_stored(harness: Harness) -> None:
    station = harness.start_station()
    station.capture()
    assert station.indicator.wait_for(Signal.SENDING, 10)
    counts = station.stop()  # no gateway: the grace period passes, the capture is abandoned
    assert counts["abandoned"] == 1
    assert station.indicator.wait_for(Signal.NOT_STORED, 0)
    assert harness.filed() == []


def test_status_is_retained_online_and_offline_with_no_patient_data(harness: Harness) -> None:
    site = harness.broker.site
    station = harness.start_station()
    station.capture()
    assert station.indicator.wait_for(Signal.SENDING, 10)
    watcher, seen = connect_client(site, site.gateway_cert, site.gateway_key, "status-watch")
    try:
        subscribe(watcher, seen, topics.status(DEVICE))
        online = json.loads(seen.get().payload)
        assert online["online"] is True and online["device"] == DEVICE
        station.stop()
        statuses = [online]
        while statuses[-1].get("online") is not False:
            statuses.append(json.loads(seen.get().payload))  # fails after 5 s of silence
        assert statuses[-1] == {"v": 1, "device": DEVICE, "online": False}
        assert statuses[-2]["step"] == "closed"
        for status in statuses:  # every one parses as the strict status model
            parse_status(json.dumps(status).encode(), device=DEVICE)
        assert online["cert_days_left"] > 300 and online["profile"]["kind"] == "ward"
        assert all("9434765919" not in json.dumps(status) for status in statuses)
    finally:
        close_client(watcher)


def test_intimate_capture_on_a_display_station_needs_chaperone_and_approval(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PHOTOSAFE_DRIVERS__DISPLAY", "simulated")
    harness.start_gateway()
    station = harness.start_station()
    display = station.station.display
    assert isinstance(display, RecordingDisplay)
    intimate = cards.card_text(cards.IntimateCard())
    approve = cards.card_text(cards.ApproveCard())
    for text in (BADGE, wristband("9434765919"), CONSENT, intimate, "STAFF-654321", CAPTURE):
        assert station.scanner.feed(text)
    assert station.indicator.wait_for(Signal.NEED_APPROVAL, 10)
    assert display.status == "show the patient: approve or discard"  # on the patient's screen
    assert not station.indicator.wait_for(Signal.STORED, 0.5)  # nothing sent before approval
    assert station.scanner.feed(approve)
    assert station.indicator.wait_for(Signal.STORED, 10)
    [manifest_path] = harness.filed()
    manifest = json.loads(manifest_path.read_bytes())
    assert manifest["intimate"] is True and manifest["patient_approved"] is True
    assert manifest["chaperone"] == {"staff_id": "654321"}


# -- fleet-signed remote config (issue 7, station side) ---------------------------------------


def _pin_fleet_key(harness: Harness, tmp_path: Path) -> Ed25519PrivateKey:
    key = Ed25519PrivateKey.generate()
    public = tmp_path / "fleet.pub"
    public.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    text = harness.station_toml.read_text()
    harness.station_toml.write_text(text + f'\n[fleet]\npublic_keys = ["{public}"]\n')
    return key


def _publish_config(harness: Harness, payload: bytes) -> None:
    site = harness.broker.site
    client, recorder = connect_client(site, site.fleet_cert, site.fleet_key, "fleet-test")
    try:
        info = client.publish(topics.config(DEVICE), payload, qos=1, retain=True)
        assert not recorder.wait_puback(info.mid).is_failure
    finally:
        close_client(client)


def _config(key: Ed25519PrivateKey, version: int, **settings: object) -> bytes:
    config = fleet.make_config(
        fleet_key=key,
        device=DEVICE,
        version=version,
        settings=fleet.FleetSettings(**settings),  # type: ignore[arg-type]
    )
    return fleet.sign_config(config, key)


class StatusWatch:
    """The station's retained status as the gateway identity sees it."""

    def __init__(self, harness: Harness) -> None:
        site = harness.broker.site
        self.client, self._recorder = connect_client(
            site, site.gateway_cert, site.gateway_key, "status-watch"
        )
        subscribe(self.client, self._recorder, topics.status(DEVICE))
        self.last: dict[str, Any] = {}

    def latest(self) -> dict[str, Any]:
        for message in self._recorder.drain(quiet=0.05):
            self.last = json.loads(message.payload)
        return self.last


@pytest.fixture
def status_watch(harness: Harness) -> Iterator[Callable[[], StatusWatch]]:
    watches: list[StatusWatch] = []

    def start() -> StatusWatch:
        watches.append(StatusWatch(harness))
        return watches[-1]

    yield start
    for watch in watches:
        close_client(watch.client)


def test_signed_config_changes_location_and_reports_its_version(
    harness: Harness, tmp_path: Path, status_watch: Callable[[], StatusWatch]
) -> None:
    key = _pin_fleet_key(harness, tmp_path)
    harness.start_gateway()
    station = harness.start_station()
    watch = status_watch()
    _publish_config(harness, _config(key, 7, location="Plastics clinic 2"))
    assert _wait(lambda: station.station.workflow.station.location == "Plastics clinic 2", 10)
    assert _wait(lambda: watch.latest().get("config_version") == 7, 10)
    station.capture()
    assert station.indicator.wait_for(Signal.STORED, 10)
    [manifest] = harness.filed()
    assert json.loads(manifest.read_bytes())["station"]["location"] == "Plastics clinic 2"


@pytest.mark.parametrize("attack", ["unsigned", "wrong key", "replayed old version"])
def test_unsigned_wrongly_signed_or_replayed_config_is_ignored(
    harness: Harness, tmp_path: Path, attack: str
) -> None:
    key = _pin_fleet_key(harness, tmp_path)
    station = harness.start_station()
    _publish_config(harness, _config(key, 5, location="Ward 5"))
    assert _wait(lambda: station.station.workflow.station.location == "Ward 5", 10)
    bad = {
        "unsigned": json.dumps({"config": {"device": DEVICE, "version": 9}}).encode(),
        "wrong key": _config(Ed25519PrivateKey.generate(), 9, location="Evil ward"),
        "replayed old version": _config(key, 4, location="Old ward"),
    }[attack]
    _publish_config(harness, bad)
    remote = station.station.remote
    expected = {
        "unsigned": {"unsigned", "malformed"},
        "wrong key": {"unknown-key"},
        "replayed old version": {"stale"},
    }[attack]
    assert _wait(lambda: remote.error is not None, 10)
    assert remote.error in expected
    assert station.station.workflow.station.location == "Ward 5"
    assert remote.version == 5


def test_gateway_key_rotation_files_captures_sealed_to_old_and_new_keys(
    harness: Harness, tmp_path: Path
) -> None:
    site = harness.broker.site
    key = _pin_fleet_key(harness, tmp_path)
    station = harness.start_station()
    station.capture("9434765919")  # sealed to the old key; no gateway yet, so it waits
    assert station.indicator.wait_for(Signal.SENDING, 10)
    new_key = X25519PrivateKey.generate()
    new_key_path = tmp_path / "recipient-new.key"
    new_key_path.write_bytes(
        new_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    new_key_path.chmod(0o600)
    raw = new_key.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    _publish_config(harness, _config(key, 2, recipient_public_key=base64.b64encode(raw).decode()))
    assert _wait(lambda: station.station.remote.version == 2, 10)
    station.capture("9434765870")  # sealed to the new key
    assert station.indicator.wait_for(Signal.SENDING, 10, count=2)
    text = harness.gateway_toml.read_text()
    harness.gateway_toml.write_text(
        text.replace(
            f"recipient_keys = [{json.dumps(str(site.recipient_key))}]",
            f"recipient_keys = [{json.dumps(str(new_key_path))}, "
            f"{json.dumps(str(site.recipient_key))}]",
        )
    )
    harness.start_gateway()
    sender = station.station.workflow.sender
    assert isinstance(sender, SealingSender)
    assert sender.keys.recipient == new_key.public_key()  # the second capture used the new key
    harness.start_gateway()
    assert station.indicator.wait_for(Signal.STORED, 15, count=2)
    assert len(harness.filed()) == 2


def test_a_scanner_refusal_is_shown_as_refused_and_changes_nothing(harness: Harness) -> None:
    station = harness.start_station()
    assert station.scanner.feed(BADGE)
    station.station.events.scan_refused("garbled")  # what the evdev scanner reports
    assert station.indicator.wait_for(Signal.REFUSED, 5)
    detail = next(d for s, d in station.indicator.shown if s is Signal.REFUSED)
    assert detail == "scan not read (garbled): scan again"
    assert station.station.workflow.step.value == "need-patient"


def test_a_station_whose_tls_handshake_fails_retries_without_leaking_sockets(
    harness: Harness, tmp_path: Path
) -> None:
    """The station does not trust the broker (another CA): every handshake fails on the
    station's side, and every attempt's socket must be closed, or a misconfigured station would
    run out of file descriptors."""
    other_ca = tmp_path / "other-ca.crt"
    other_ca.write_bytes(pki.cert_pem(pki.new_authority("Another hospital").cert))
    text = harness.station_toml.read_text()
    harness.station_toml.write_text(
        text.replace(json.dumps(str(harness.broker.site.ca_cert)), json.dumps(str(other_ca)))
    )
    station = build_station(
        load_station_config(harness.station_toml),
        scanner=SimulatedScanner(),
        indicator=RecordingIndicator(),
        camera=SimulatedCamera(width=800, height=600),
    )
    before = len(os.listdir("/proc/self/fd"))
    station.link.start()
    time.sleep(3)  # several attempts: the sandbox config reconnects within 0.2-5 s
    assert not station.link.connected
    station.link.stop()
    gc.collect()
    assert len(os.listdir("/proc/self/fd")) <= before + 1


def test_the_station_socket_has_tcp_nodelay(harness: Harness) -> None:
    """Without it every MQTT leg waits ~40 ms for Nagle (REFERENCE.md section 9)."""
    station = harness.start_station()
    sock = station.station.link._client.socket()
    assert isinstance(sock, socket.socket)
    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
