"""Plaintext discipline: every still reads zeros on every way out, and a capture copies it little.

The pipeline is the station's own (tests/pipeline.py: the real Workflow, SimulatedCamera,
QualityGate and SealingSender with HPKE sealing into an outbox held in RAM). A recorder wraps
`SecretBuffer.__init__` and keeps every plaintext bytearray the pipeline creates (the camera's,
and any later copy such as a metadata-stripped one), so the test sees the memory itself, not what
the code claims: after each path every one of them must read as zeros.

The copy count uses tracemalloc: a snapshot at the moment each SecretBuffer is made and at the
moment HPKE is called lists the image-sized allocations alive then, with the line that made
them; the peak of each stage catches hidden temporaries (such as `bytearray[a:b] = view`, which
copies the view first). tracemalloc sees only Python's allocator, so what libjpeg, Pillow's
image memory and OpenSSL do is in docs/never-on-disk.md, from their sources.
"""

from __future__ import annotations

import random
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import pytest
from pipeline import (
    APPROVE,
    CANCEL,
    CAPTURE,
    CHAPERONE,
    CONSENT,
    DISCARD,
    INTIMATE,
    OPERATOR,
    Station,
    sealing_sender,
)
from station_runner import made_up_patient

from photosafe.drivers.camera import Still
from photosafe.drivers.camera_simulated import SimulatedCamera
from photosafe.drivers.indicator import Signal
from photosafe.drivers.secret import SecretBuffer
from photosafe.protocol import envelope

CANARY = b"never-on-disk canary \x00\x01\x02\xfe\xff"
PATIENT = made_up_patient(random.Random(6))


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Display:
    """An approval display: shows the still it is given until cleared."""

    def __init__(self) -> None:
        self.showing: Still | None = None

    def show_for_approval(self, still: Still) -> None:
        self.showing = still

    def clear(self) -> None:
        self.showing = None


@pytest.fixture
def plaintexts(monkeypatch: pytest.MonkeyPatch) -> list[bytearray]:
    """Every bytearray a SecretBuffer is made from while the test runs."""
    made: list[bytearray] = []
    original = SecretBuffer.__init__

    def recording_init(self: SecretBuffer, data: bytearray) -> None:
        original(self, data)
        made.append(data)

    monkeypatch.setattr(SecretBuffer, "__init__", recording_init)
    return made


@pytest.fixture
def camera() -> Iterator[SimulatedCamera]:
    cam = SimulatedCamera(640, 480, canary=CANARY)
    cam.start()
    yield cam
    cam.close()


def _to_approval(st: Station) -> None:
    st.scan(OPERATOR, PATIENT.wristband(), CONSENT, INTIMATE, CHAPERONE, CAPTURE)
    assert st.indicator.signals[-1] is Signal.NEED_APPROVAL


Path_ = Callable[[Station, SimulatedCamera, Clock], None]


def _sealed(st: Station, camera: SimulatedCamera, clock: Clock) -> None:
    st.scan(OPERATOR, PATIENT.wristband(), CONSENT, CAPTURE)


def _quality_refused(st: Station, camera: SimulatedCamera, clock: Clock) -> None:
    camera.set_fault("blur")
    st.scan(OPERATOR, PATIENT.wristband(), CONSENT, CAPTURE)


def _approved(st: Station, camera: SimulatedCamera, clock: Clock) -> None:
    _to_approval(st)
    st.scan(APPROVE)


def _cancelled(st: Station, camera: SimulatedCamera, clock: Clock) -> None:
    _to_approval(st)
    st.scan(CANCEL)


def _discarded(st: Station, camera: SimulatedCamera, clock: Clock) -> None:
    _to_approval(st)
    st.scan(DISCARD)


def _approval_timed_out(st: Station, camera: SimulatedCamera, clock: Clock) -> None:
    _to_approval(st)
    clock.now += 61
    st.workflow.tick()


def _shut_down(st: Station, camera: SimulatedCamera, clock: Clock) -> None:
    _to_approval(st)
    st.workflow.close()  # SIGTERM


# path, what the sender does, the signal the clinician sees last
PATHS: dict[str, tuple[Path_, dict[str, Any], Signal]] = {
    "sealed": (_sealed, {}, Signal.SENDING),
    "approved and sealed": (_approved, {}, Signal.SENDING),
    "quality refusal": (_quality_refused, {}, Signal.RETAKE),
    "cancel card": (_cancelled, {}, Signal.NEED_PATIENT),
    "discard card": (_discarded, {}, Signal.RETAKE),
    "approval timeout": (_approval_timed_out, {}, Signal.RETAKE),
    "shutdown": (_shut_down, {}, Signal.NEED_APPROVAL),
    "outbox full": (_sealed, {"max_items": 0}, Signal.OUTBOX_FULL),
    # A suite the envelope does not know: seal raises after building its plaintext.
    "seal raises": (_sealed, {"suite": "X25519-HKDF-SHA256-UNKNOWN"}, Signal.NOT_STORED),
}


@pytest.mark.parametrize("name", list(PATHS))
def test_every_plaintext_buffer_reads_zeros_afterwards(
    name: str, plaintexts: list[bytearray], camera: SimulatedCamera
) -> None:
    run, options, last = PATHS[name]
    suite = options.pop("suite", None)
    sender, delivery = sealing_sender(**options)
    if suite:
        sender.suite = cast(envelope.SuiteName, suite)
    clock, display = Clock(), Display()
    st = Station(camera, sender, display=display, clock=clock)

    run(st, camera, clock)

    assert st.indicator.signals[-1] is last, st.indicator.shown
    assert plaintexts, "the path made no capture"
    assert all(len(buffer) > 1000 for buffer in plaintexts)
    assert [i for i, buffer in enumerate(plaintexts) if any(buffer)] == []
    assert display.showing is None
    assert len(delivery.outbox) == (1 if last is Signal.SENDING else 0)


def test_a_capture_makes_three_full_plaintext_copies_and_no_hidden_ones(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    camera = SimulatedCamera(1600, 1200, canary=CANARY)  # a JPEG far larger than any chunk
    camera.start()
    sender, delivery = sealing_sender()
    st = Station(camera, sender)
    st.scan(OPERATOR, PATIENT.wristband(), CONSENT, CAPTURE)  # warm up: lazy imports
    size = delivery.outbox.bytes_held  # the sealed capture: the JPEG and ~2 KB
    delivery.outbox.clear()
    stages = Stages()
    moments: dict[str, tuple[list[str], float]] = {}

    def look(moment: str) -> None:
        """Where each image-sized allocation alive now was made, and the stage's peak so far."""
        peak = stages.peak_so_far() / size  # before the snapshot, which allocates itself
        snapshot = tracemalloc.take_snapshot()
        sites = [_made_at(t.traceback) for t in snapshot.traces if t.size >= size // 2]
        moments[moment] = (sites, peak)

    original_init = SecretBuffer.__init__

    def init(self: SecretBuffer, data: bytearray) -> None:
        original_init(self, data)
        look(f"SecretBuffer made in {stages.current}")  # it and its source are both alive

    class LookingSuite:
        def __init__(self, suite: Any) -> None:
            self.suite = suite

        def encrypt(self, *args: Any, **kwargs: Any) -> bytes:
            look("HPKE called")  # the most plaintext seal() ever holds
            return cast(bytes, self.suite.encrypt(*args, **kwargs))

    monkeypatch.setattr(SecretBuffer, "__init__", init)
    suites = envelope._SUITES  # private, but this is where seal() finds HPKE
    monkeypatch.setitem(suites, envelope.CHACHA20, LookingSuite(suites[envelope.CHACHA20]))
    stages.wrap(monkeypatch, camera, "capture")
    stages.wrap(monkeypatch, st.workflow.quality, "check")
    stages.wrap(monkeypatch, envelope, "seal")

    tracemalloc.start(40)
    try:
        st.scan(CAPTURE)
    finally:
        tracemalloc.stop()

    assert st.indicator.signals[-1] is Signal.SENDING
    sites = sorted({site for found, _ in moments.values() for site in found})
    # The Pillow encoder's BytesIO (zeroed by from_bytesio), the camera's SecretBuffer (wiped
    # after sealing) and seal's working buffer (wiped before it returns).
    assert [site.split(":")[0] for site in sites] == [
        "drivers/camera_simulated.py",
        "drivers/secret.py",
        "protocol/envelope.py",
    ], moments
    assert max(len(found) for found, _ in moments.values()) == 2, moments
    # A hidden temporary copy (freed unwiped) would raise a stage's peak by one image: capture
    # holds the BytesIO (grown by up to ~1/8) and the copy; seal only its working buffer.
    assert moments["SecretBuffer made in capture"][1] < 2.5, moments
    assert moments["HPKE called"][1] < 1.5, moments
    assert stages.peaks["check"] < 0.6 * size, stages.peaks  # read chunks, the draft decode


class Stages:
    """Wraps pipeline stages to know which one runs and the most memory it used so far."""

    def __init__(self) -> None:
        self.current = ""
        self.start = 0
        self.peaks: dict[str, int] = {}

    def peak_so_far(self) -> int:
        return tracemalloc.get_traced_memory()[1] - self.start

    def wrap(self, monkeypatch: pytest.MonkeyPatch, owner: object, name: str) -> None:
        function = getattr(owner, name)

        def run(*args: Any, **kwargs: Any) -> Any:
            self.current = name
            tracemalloc.reset_peak()
            self.start = tracemalloc.get_traced_memory()[0]
            try:
                return function(*args, **kwargs)
            finally:
                self.peaks[name] = self.peak_so_far()

        monkeypatch.setattr(owner, name, run)


def _made_at(traceback: tracemalloc.Traceback) -> str:
    """The newest frame in our own code: folder/file.py:line."""
    root = Path(__file__).resolve().parents[1]
    for frame in reversed(traceback):
        path = Path(frame.filename)
        if path.is_relative_to(root) and path.parent.name in {"drivers", "daemon", "protocol"}:
            return f"{path.parent.name}/{path.name}:{frame.lineno}"
    return "elsewhere"
