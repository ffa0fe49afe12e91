"""No patient data in logs: not in any log record, not in any journal field.

systemd's JournalHandler stores every attribute of a record (every `extra=` key) as a journal
field, so the station's journal handler sits behind `AllowListFilter`. The main test drives the
whole station in this process (the real workflow, delivery, MQTT link and a real gateway through a
real mosquitto) with made-up patients: GS1 wristbands carrying names and birth dates (AI 93), a
printed NHS number, a wristband with a wrong check digit, captures, a patient context that
expires. Every record any logger emits is kept raw (all its attributes, its formatted message and
traceback); the journal handler sends to a fake whose first parameter is named MESSAGE (as
journal.send's: `msg` would collide with the record's own attribute). Neither may contain a
patient's number, name or birth date.
"""

from __future__ import annotations

import io
import logging
import os
import random
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from broker import Broker
from station_runner import CAPTURE, CONSENT, made_up_patient, staff_badge

from photosafe.daemon import logs
from photosafe.daemon.app import build_station
from photosafe.daemon.config import load_config as load_station_config
from photosafe.drivers.camera_simulated import SimulatedCamera
from photosafe.drivers.indicator import Signal
from photosafe.drivers.indicator_simulated import RecordingIndicator
from photosafe.drivers.scanner_simulated import SimulatedScanner
from photosafe.gateway.config import load_config as load_gateway_config
from photosafe.gateway.service import Gateway
from photosafe.provisioning.site_configs import write_gateway_config, write_station_config

# Fields JournalHandler adds itself (the rest of an entry comes from the record).
JOURNAL_OWN = frozenset(
    {
        "PRIORITY", "LOGGER", "THREAD_NAME", "PROCESS_NAME", "CODE_FILE", "CODE_LINE",
        "CODE_FUNC", "SYSLOG_IDENTIFIER", "MESSAGE",
    }
)  # fmt: skip


class FakeJournal:
    def __init__(self) -> None:
        self.entries: list[dict[str, object]] = []

    def send(self, MESSAGE: str, **fields: object) -> None:  # journal.send's own name
        self.entries.append({"MESSAGE": MESSAGE, **fields})


class RawRecords(logging.Handler):
    """Keeps every attribute of every record as it arrives, before any filter strips it."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[dict[str, Any]] = []

    def emit(self, record: logging.LogRecord) -> None:
        kept = dict(record.__dict__)
        kept["(message)"] = record.getMessage()
        if record.exc_info:
            kept["(traceback)"] = logging.Formatter().formatException(record.exc_info)
        self.records.append(kept)


@pytest.fixture
def captured_logs() -> Iterator[tuple[RawRecords, FakeJournal]]:
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    raw, journal = RawRecords(), FakeJournal()
    # Order matters: the filter strips records in place, so the raw copy is taken first.
    root.handlers[:] = [raw, logs.journal_handler(journal.send)]
    root.setLevel(logging.DEBUG)
    try:
        yield raw, journal
    finally:
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)


def _wait(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return False


def test_a_whole_day_at_the_station_leaves_no_patient_data_in_logs_or_journal(
    broker: Broker, tmp_path: Path, captured_logs: tuple[RawRecords, FakeJournal]
) -> None:
    raw, journal = captured_logs
    rng = random.Random()
    patients = [made_up_patient(rng) for _ in range(4)]
    bad_number = patients[2].nhs_number[:9] + str((int(patients[2].nhs_number[9]) + 1) % 10)
    needles = [n.decode() for p in patients for n in p.needles()]
    needles += [patients[1].printed_number(), bad_number]
    needles += [p.born.strftime("%Y%m%d") for p in patients]
    site = broker.site
    records = tmp_path / "records"
    gateway = Gateway(load_gateway_config(write_gateway_config(site, records)))
    gateway.start()
    scanner, indicator = SimulatedScanner(), RecordingIndicator()
    station = build_station(
        load_station_config(
            write_station_config(site, "ward-a-01", patient_timeout_s=1.0, grace_s=2)
        ),
        scanner=scanner,
        indicator=indicator,
        camera=SimulatedCamera(640, 480),
    )
    station.start()
    thread = threading.Thread(target=station.run, daemon=True)
    thread.start()
    try:
        assert _wait(lambda: station.loop.connected, 10)
        for text in (
            staff_badge(rng),
            patients[0].wristband(),
            CONSENT,
            CAPTURE,
            CAPTURE,
            patients[1].printed_number(),  # replaces the first patient
            CONSENT,
            CAPTURE,
            bad_number,  # refused: and it ends the second patient's context
            patients[3].wristband(),
            CONSENT,
            CAPTURE,
        ):
            assert scanner.feed(text)
        assert indicator.wait_for(Signal.STORED, 15, count=4)
        assert indicator.wait_for(Signal.CONTEXT_EXPIRED, 5)
        assert scanner.feed(CAPTURE)  # refused: no patient
    finally:
        station.stop()
        thread.join(20)
        gateway.stop()
    assert not thread.is_alive()
    assert Signal.REFUSED in indicator.signals
    manifests = b"".join(path.read_bytes() for path in records.rglob("manifest.json"))
    assert patients[0].surname.encode() in manifests  # the names were read, and are filed

    events = {record["msg"] for record in raw.records}
    assert {"capture.sealed", "patient.replaced", "scan.refused", "patient.expired"} <= events
    assert {"capture.stored", "station.stopped"} <= events
    leaked = [
        (record["msg"], key, needle)
        for record in raw.records
        for key, value in record.items()
        for needle in needles
        if needle in repr(value)
    ]
    assert leaked == []

    assert len(journal.entries) == len(raw.records)
    leaked = [
        (entry["MESSAGE"], key, needle)
        for entry in journal.entries
        for key, value in entry.items()
        for needle in needles
        if needle in str(value)
    ]
    assert leaked == []
    for entry in journal.entries:
        extra = {k for k in entry if k not in JOURNAL_OWN and k not in logs._LOGGING_OWN}
        assert {k for k in extra if not logs.allowed_field(k)} == set(), entry


def test_the_journal_gets_only_allow_listed_fields_whatever_a_caller_passes() -> None:
    journal = FakeJournal()
    log = logging.getLogger("photosafe.test.careless")
    log.propagate = False
    # A handler before it formats the record, which leaves `message` (with the args) behind.
    log.addHandler(logging.StreamHandler(io.StringIO()))
    log.addHandler(logs.journal_handler(journal.send))
    log.setLevel(logging.INFO)
    try:
        try:
            raise ValueError("patient 9434765919 SMITH^JOHN")
        except ValueError:
            log.exception(
                "capture.failed %s",
                "9434765919",
                extra={"patient": "9434765919", "patient_name": "SMITH, JOHN", "capture_id": "c-1"},
            )
    finally:
        log.handlers.clear()
        log.propagate = True
    (entry,) = journal.entries
    assert "9434765919" not in repr(entry) and "SMITH" not in repr(entry)
    assert entry["MESSAGE"] == "capture.failed %s capture_id=c-1 exc_type=ValueError"
    assert entry["capture_id"] == "c-1" and entry["exc_type"] == "ValueError"
    assert "patient" not in entry and "patient_name" not in entry and "message" not in entry
    assert entry["SYSLOG_IDENTIFIER"] == "photosafe"
    assert entry["args"] == () and entry["exc_info"] is None and entry["exc_text"] is None


def test_logs_go_to_the_journal_only_when_systemd_runs_the_station() -> None:
    read, write = os.pipe()
    try:
        info = os.fstat(write)
        here = f"{info.st_dev}:{info.st_ino}"
        assert logs.under_journal({"JOURNAL_STREAM": here}, write)
        # A variable inherited from a parent whose stderr was the journal: ours is not.
        assert not logs.under_journal({"JOURNAL_STREAM": "1:2", "INVOCATION_ID": "x"}, write)
        assert logs.under_journal({"INVOCATION_ID": "0123abcd"}, write)
        assert not logs.under_journal({}, write)
    finally:
        os.close(read)
        os.close(write)

    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    try:
        logs.setup_logging(environ={"INVOCATION_ID": "0123abcd"})
        (handler,) = root.handlers
        assert type(handler).__name__ == "JournalHandler"
        assert any(isinstance(f, logs.AllowListFilter) for f in handler.filters)
        logs.setup_logging(environ={})
        (handler,) = root.handlers
        assert isinstance(handler, logging.StreamHandler)
        assert isinstance(handler.formatter, logs.AllowListFormatter)
    finally:
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)
