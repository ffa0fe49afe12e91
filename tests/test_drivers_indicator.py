"""Indicators: one readable line per signal on a console, and a recording one for tests."""

from __future__ import annotations

import io
import threading

from photosafe.drivers.indicator import MEANINGS, Signal
from photosafe.drivers.indicator_console import ConsoleIndicator
from photosafe.drivers.indicator_simulated import RecordingIndicator


def test_every_signal_has_its_own_meaning() -> None:
    assert set(MEANINGS) == set(Signal)
    assert len(set(MEANINGS.values())) == len(Signal)


def test_console_prints_one_line_per_signal() -> None:
    out = io.StringIO()
    console = ConsoleIndicator(out)
    console.show(Signal.STORED, "capture 1234abcd filed")
    console.show(Signal.NEED_PATIENT)
    console.show(Signal.REFUSED, "wrong check digit:\nscan again")
    console.close()
    console.show(Signal.FAULT)  # after close: nothing
    assert out.getvalue().splitlines() == [
        "[STORED] capture 1234abcd filed",
        f"[NEED_PATIENT] {MEANINGS[Signal.NEED_PATIENT]}",
        "[REFUSED] wrong check digit: scan again",
    ]


def test_recording_keeps_what_was_shown_in_order() -> None:
    recording = RecordingIndicator()
    recording.show(Signal.READY)
    recording.show(Signal.SENDING, "capture 1")
    assert recording.shown == [(Signal.READY, None), (Signal.SENDING, "capture 1")]
    assert recording.signals == [Signal.READY, Signal.SENDING]
    recording.clear()
    assert recording.shown == []
    recording.close()
    recording.show(Signal.STORED)
    assert recording.closed
    assert recording.shown == []


def test_wait_for_returns_when_another_thread_shows_the_signal() -> None:
    recording = RecordingIndicator()
    recording.show(Signal.STORED)
    later = threading.Timer(0.05, recording.show, args=(Signal.STORED, "second"))
    later.start()
    assert recording.wait_for(Signal.STORED, timeout=5, count=2)
    later.join()


def test_wait_for_times_out_when_the_signal_never_comes() -> None:
    recording = RecordingIndicator()
    recording.show(Signal.SENDING)
    assert not recording.wait_for(Signal.STORED, timeout=0.05)
    assert recording.wait_for(Signal.SENDING, timeout=0)
