"""Lights, buzzer and capture button on gpiozero's own MockFactory pins.

Assertions are on what the pins did (MockPin.states: each change with the time since the one
before), not on calls: a pattern is right when the pin history is. Each test makes its own
MockFactory and passes it to the devices, so no global pin factory is touched.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator

import pytest
from gpiozero.pins.mock import MockFactory, MockPin

from photosafe.drivers.backends import button_backend, indicator_backend
from photosafe.drivers.button_gpio import GpioButton
from photosafe.drivers.errors import BackendUnavailable
from photosafe.drivers.indicator import Signal
from photosafe.drivers.indicator_gpio import PATTERNS, Blink, GpioIndicator, Part

GREEN, AMBER, RED, BUZZER, BUTTON = 17, 27, 22, 18, 5
History = list[tuple[float, bool]]


@pytest.fixture(autouse=True)
def _no_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    for variable in ("PHOTOSAFE_INDICATOR", "PHOTOSAFE_BUTTON"):
        monkeypatch.delenv(variable, raising=False)


@pytest.fixture
def pins() -> Iterator[MockFactory]:
    factory = MockFactory()
    try:
        yield factory
    finally:
        factory.close()


def pin(factory: MockFactory, number: int) -> MockPin:
    found: MockPin = factory.pin(number)
    return found


def station(factory: MockFactory) -> GpioIndicator:
    indicator = GpioIndicator(pin_factory=factory)
    for number in (GREEN, AMBER, RED, BUZZER):
        pin(factory, number).clear_states()
    return indicator


def states(factory: MockFactory, number: int) -> list[bool]:
    return [bool(s.state) for s in pin(factory, number).states]


def expected(part: Part | None, window_s: float) -> History:
    """The pin history `part` gives from an all-off start, changes up to `window_s` only."""
    history: History = [(0.0, False)]
    if part is True:
        history.append((0.0, True))
    if not isinstance(part, Blink):
        return history
    t, last, cycles = 0.0, 0.0, 0
    while t < window_s and (part.n is None or cycles < part.n):
        history.append((t - last, True))
        last, t = t, t + part.on_s
        if t >= window_s:
            break
        if part.off_s or cycles + 1 == part.n:
            history.append((t - last, False))
            last = t
        t += part.off_s
        cycles += 1
    return history


# -- the pattern table --------------------------------------------------------------------------


def test_every_signal_has_its_own_pattern_and_no_sound_is_endless() -> None:
    assert set(PATTERNS) == set(Signal)
    looks = [(p.green, p.amber, p.red, p.buzzer) for p in PATTERNS.values()]
    assert len(set(looks)) == len(looks)
    assert all(p.buzzer is None or p.buzzer.n is not None for p in PATTERNS.values())
    failures = (Signal.NOT_STORED, Signal.REFUSED, Signal.OUTBOX_FULL, Signal.FAULT)
    for signal in failures:  # a failure shows red until the next signal, whoever looked away
        red = PATTERNS[signal].red
        assert red is True or (isinstance(red, Blink) and red.n is None), signal
        assert PATTERNS[signal].green is False, signal


def test_every_pattern_plays_on_the_pins_as_declared() -> None:
    """All seventeen at once, each on its own board, for 1.6 s."""
    window = 1.6
    boards = {signal: MockFactory() for signal in Signal}
    try:
        indicators = {signal: station(boards[signal]) for signal in Signal}
        for signal, indicator in indicators.items():
            for number in (GREEN, AMBER, RED, BUZZER):
                pin(boards[signal], number).clear_states()
            indicator.show(signal)
        time.sleep(window)
        for indicator in indicators.values():
            indicator.close()
        for signal, board in boards.items():
            pattern = PATTERNS[signal]
            parts = zip(
                (GREEN, AMBER, RED, BUZZER),
                (pattern.green, pattern.amber, pattern.red, pattern.buzzer),
                strict=True,
            )
            for number, part in parts:
                want = expected(part, window - 0.1)
                history = pin(board, number).states[: len(want)]
                assert len(history) == len(want), (signal, number, history, want)
                pin(board, number).assert_states_and_times(want)
    finally:
        for board in boards.values():
            board.close()


def test_stored_glows_green_for_two_seconds_with_one_short_beep(pins: MockFactory) -> None:
    indicator = station(pins)
    indicator.show(Signal.STORED, "capture 1234abcd stored")
    time.sleep(2.3)
    pin(pins, GREEN).assert_states_and_times([(0, False), (0, True), (2.0, False)])
    pin(pins, BUZZER).assert_states_and_times([(0, False), (0, True), (0.15, False)])
    assert len(pin(pins, GREEN).states) == 3 and len(pin(pins, BUZZER).states) == 3
    assert states(pins, AMBER) == states(pins, RED) == [False]
    indicator.close()


def test_not_stored_flashes_red_until_the_next_signal_with_a_long_double_beep(
    pins: MockFactory,
) -> None:
    indicator = station(pins)
    indicator.show(Signal.NOT_STORED, "capture 1234abcd not stored: retake")
    time.sleep(2.0)
    pin(pins, BUZZER).assert_states_and_times(
        [(0, False), (0, True), (0.6, False), (0.3, True), (0.6, False)]
    )
    assert len(pin(pins, BUZZER).states) == 5
    red = states(pins, RED)
    assert len(red) >= 12 and red[:4] == [False, True, False, True]  # still going
    indicator.show(Signal.NEED_PATIENT)
    assert not pin(pins, RED).state and pin(pins, GREEN).state
    indicator.close()


def test_refused_is_steady_red_and_a_long_beep(pins: MockFactory) -> None:
    indicator = station(pins)
    indicator.show(Signal.READY_TO_CAPTURE)
    indicator.show(Signal.REFUSED, "intimate images need a display")
    time.sleep(1.2)
    pin(pins, RED).assert_states_and_times([(0, False), (0, True)])
    assert states(pins, GREEN) == [False, True, False]  # ready, then not
    assert states(pins, BUZZER)[-2:] == [True, False]
    assert pin(pins, BUZZER).states[-1].timestamp == pytest.approx(1.0, abs=0.05)
    indicator.close()


def test_a_new_patient_is_held_long_enough_to_be_seen_before_the_next_prompt(
    pins: MockFactory,
) -> None:
    indicator = station(pins)
    indicator.show(Signal.NEW_PATIENT, "new patient: previous consent and site cleared")
    indicator.show(Signal.NEED_CONSENT)  # what the workflow shows next, at once
    time.sleep(0.5)
    assert states(pins, GREEN) == [False]  # the consent prompt waits
    time.sleep(1.6)
    flashes = [(0, False), (0, True)] + [(0.15, False), (0.15, True)] * 4 + [(0.15, False)]
    amber = pin(pins, AMBER)
    amber.assert_states_and_times([*flashes, (0.15, True), (0.5, False)])  # then consent
    pin(pins, GREEN).assert_states_and_times([(0, False), (1.5, True)])
    pin(pins, BUZZER).assert_states_and_times(
        [(0, False), (0, True), (0.15, False), (0.1, True), (0.15, False), (1.1, True)]
    )
    indicator.close()


def test_prompts_superseded_during_a_hold_are_skipped(pins: MockFactory) -> None:
    indicator = station(pins)
    indicator.show(Signal.NEW_PATIENT)
    indicator.show(Signal.NEED_CONSENT)
    indicator.show(Signal.READY_TO_CAPTURE)  # implied consent: straight to ready
    time.sleep(1.8)
    assert states(pins, GREEN) == [False, True]
    assert len(states(pins, AMBER)) == 11  # the five flashes only: no consent blinking
    indicator.close()


def test_close_turns_everything_off_releases_the_pins_and_ignores_later_signals(
    pins: MockFactory,
) -> None:
    indicator = station(pins)
    indicator.show(Signal.FAULT)
    indicator.close()
    indicator.close()
    indicator.show(Signal.OUTBOX_FULL)
    time.sleep(0.2)
    assert not any(pin(pins, n).state for n in (GREEN, AMBER, RED, BUZZER))
    assert states(pins, RED) == [False, True, False]
    GpioIndicator(pin_factory=pins).close()  # the pins are free again


def test_a_station_without_buzzer_and_other_pins(pins: MockFactory) -> None:
    indicator = GpioIndicator(5, 6, 13, None, pin_factory=pins)
    indicator.show(Signal.REFUSED)
    assert pin(pins, 13).state and not pin(pins, 5).state
    assert states(pins, BUZZER) == [False]  # never claimed
    indicator.close()


def test_active_low_leds_are_driven_low_to_light(pins: MockFactory) -> None:
    indicator = GpioIndicator(active_high=False, pin_factory=pins)
    indicator.show(Signal.READY_TO_CAPTURE)
    assert pin(pins, GREEN).state is False and pin(pins, RED).state is True
    indicator.close()


def test_a_pattern_table_must_cover_every_signal(pins: MockFactory) -> None:
    with pytest.raises(ValueError, match="no pattern for"):
        GpioIndicator(patterns={Signal.READY: PATTERNS[Signal.READY]}, pin_factory=pins)


# -- the button ---------------------------------------------------------------------------------


def test_pressing_the_button_calls_back_only_while_started(pins: MockFactory) -> None:
    presses: queue.Queue[str] = queue.Queue()
    button = GpioButton(BUTTON, bounce_time=None, pin_factory=pins)
    switch = pin(pins, BUTTON)
    assert switch.state  # pulled up: released
    switch.drive_low()  # pressed before start: nobody listens
    switch.drive_high()
    button.start(lambda: presses.put(threading.current_thread().name))
    switch.drive_low()
    switch.drive_high()
    presses.get(timeout=2)
    button.stop()
    switch.drive_low()
    switch.drive_high()
    button.start(lambda: presses.put("again"))
    switch.drive_low()
    assert presses.get(timeout=2) == "again"
    switch.drive_high()
    time.sleep(0.05)
    assert presses.empty()
    button.close()
    button.close()
    GpioButton(BUTTON, pin_factory=pins).close()  # the pin is free again


# -- backend selection --------------------------------------------------------------------------


def test_gpiozero_backends_are_registered(pins: MockFactory) -> None:
    indicator = indicator_backend("gpiozero", pin_factory=pins)
    assert isinstance(indicator, GpioIndicator)
    button = button_backend("gpiozero", pin=26, bounce_time=0.02, pin_factory=pins)
    assert isinstance(button, GpioButton)
    indicator.close()
    button.close()


def test_without_gpio_the_backends_say_what_is_missing() -> None:
    """This machine has no GPIO (an x86 VM): gpiozero's own default pin factory fails."""
    with pytest.raises(BackendUnavailable, match="gpiozero found no GPIO pins") as caught:
        indicator_backend("gpiozero")
    assert "python3-lgpio" in str(caught.value)
    with pytest.raises(BackendUnavailable, match="gpiozero found no GPIO pins"):
        button_backend("gpiozero")
