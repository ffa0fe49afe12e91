"""End to end: the real station code and the real gateway through a real mosquitto (TLS, client
certificates, the ACL). The camera and scanner are the simulated drivers; everything else is the
production code path. Each test is one "Must hold" of the delivery issue.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from biip.checksums import gs1_standard_check_digit
from broker import Broker
from mqtt_clients import close_client, connect_client, subscribe

from photosafe.daemon.app import Station, build_station
from photosafe.daemon.config import load_config as load_station_config
from photosafe.drivers.camera_simulated import SimulatedCamera
from photosafe.drivers.display_simulated import RecordingDisplay
from photosafe.drivers.indicator import Signal
from photosafe.drivers.indicator_simulated import RecordingIndicator
from photosafe.drivers.scanner_simulated import SimulatedScanner
from photosafe.gateway.config import load_config as load_gateway_config
from photosafe.gateway.service import Gateway
from photosafe.protocol import cards, topics
from photosafe.protocol.consent import Purpose
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
        assert statuses[-1] == {"online": False}
        assert statuses[-2]["step"] == "closed"
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
    assert not station.indicator.wait_for(Signal.STORED, 0.5)  # nothing sent before approval
    assert station.scanner.feed(approve)
    assert station.indicator.wait_for(Signal.STORED, 10)
    [manifest_path] = harness.filed()
    manifest = json.loads(manifest_path.read_bytes())
    assert manifest["intimate"] is True and manifest["patient_approved"] is True
    assert manifest["chaperone"] == {"staff_id": "654321"}
