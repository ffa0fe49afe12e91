"""Green, amber and red LEDs and a buzzer on GPIO: the headless station's Indicator.

Every Signal has its own pattern (`PATTERNS`), told apart by colour, rhythm and sound:

- green is "good": steady when the station is ready to capture, a 2 s glow when a capture is
  stored, a heartbeat when idle; amber is "scan something" (its rhythm says what is wanted, and
  green beside it says the operator is signed in); red is "not done" and stays lit until the
  next signal, because a failure must not be missed by someone who looked away.
- the buzzer chirps for an accepted scan, beeps once for stored, twice for "attention" (new
  patient, retake), long for refused, long twice for not stored; it never sounds forever.

A few signals are followed at once by the next prompt (NEW_PATIENT by "scan a consent card"),
which would replace them before anyone saw them: a pattern's `hold_s` keeps it showing that
long, and the signals shown meanwhile follow in order (only the latest plain prompt is kept).

Blinking and beeping are gpiozero's own `blink()`/`beep()` on its background threads. gpiozero
is imported only when a GpioIndicator is made; tests pass a `gpiozero.pins.mock.MockFactory`.
"""

from __future__ import annotations

import logging
import threading
import time
import warnings
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from photosafe.drivers.errors import BackendUnavailable
from photosafe.drivers.indicator import Signal

__all__ = ["PATTERNS", "Blink", "GpioIndicator", "Pattern", "claim_pins"]

_log = logging.getLogger(__name__)
T = TypeVar("T")


def claim_pins(make: Callable[[], T]) -> T:
    """Runs `make` (which creates gpiozero devices), turning "no GPIO here" into BackendUnavailable.

    gpiozero tries its pin libraries in turn and warns about each that fails; those warnings
    are logged (as "gpio.pin_factory_fallback") or, when none worked, become the error message.
    """
    from gpiozero.exc import BadPinFactory, NativePinFactoryFallback, PinFactoryFallback

    fallbacks = (PinFactoryFallback, NativePinFactoryFallback)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            made = make()
        except BadPinFactory as exc:
            tried = "; ".join(str(w.message) for w in caught if issubclass(w.category, fallbacks))
            raise BackendUnavailable(
                f"gpiozero found no GPIO pins on this machine ({exc}"
                + (f": {tried})" if tried else ")")
                + "; on a Raspberry Pi install lgpio (sudo apt install python3-lgpio)"
            ) from None
    for warning in caught:
        if issubclass(warning.category, fallbacks):
            _log.warning("gpio.pin_factory_fallback", extra={"reason": str(warning.message)})
        else:
            warnings.warn(warning.message, warning.category, stacklevel=2)
    return made


@dataclass(frozen=True)
class Blink:
    """On for `on_s`, off for `off_s`, `n` times (None: until the next signal)."""

    on_s: float
    off_s: float
    n: int | None = None

    @property
    def duration_s(self) -> float | None:
        return None if self.n is None else self.n * (self.on_s + self.off_s)


Part = bool | Blink  # off, steady on, or a rhythm


@dataclass(frozen=True)
class Pattern:
    green: Part = False
    amber: Part = False
    red: Part = False
    buzzer: Blink | None = None
    hold_s: float = 0.0  # shown at least this long before a following signal replaces it


# Light rhythms.
HEARTBEAT = Blink(0.1, 1.9)
SLOW = Blink(1.0, 1.0)
MEDIUM = Blink(0.5, 0.5)
FAST = Blink(0.15, 0.15)
# Buzzer phrases.
CHIRP = Blink(0.05, 0.0, 1)
BEEP = Blink(0.15, 0.0, 1)
DOUBLE = Blink(0.15, 0.1, 2)
TRIPLE = Blink(0.15, 0.1, 3)
LONG = Blink(1.0, 0.0, 1)
LONG_DOUBLE = Blink(0.6, 0.3, 2)

PATTERNS: dict[Signal, Pattern] = {
    Signal.READY: Pattern(green=HEARTBEAT),
    Signal.NEED_OPERATOR: Pattern(amber=SLOW),
    Signal.NEED_PATIENT: Pattern(green=True, amber=SLOW, buzzer=CHIRP),
    Signal.NEED_CONSENT: Pattern(green=True, amber=MEDIUM, buzzer=CHIRP),
    Signal.NEED_CHAPERONE: Pattern(green=True, amber=FAST, buzzer=CHIRP),
    Signal.NEED_APPROVAL: Pattern(green=MEDIUM, amber=True, buzzer=DOUBLE),
    Signal.NEW_PATIENT: Pattern(amber=Blink(0.15, 0.15, 5), buzzer=DOUBLE, hold_s=1.5),
    Signal.CONTEXT_EXPIRED: Pattern(amber=True, buzzer=LONG, hold_s=1.0),
    Signal.READY_TO_CAPTURE: Pattern(green=True, buzzer=CHIRP),
    Signal.CAPTURING: Pattern(green=Blink(0.1, 0.0, 1)),
    Signal.RETAKE: Pattern(amber=True, red=MEDIUM, buzzer=DOUBLE),
    Signal.SENDING: Pattern(green=MEDIUM),
    Signal.STORED: Pattern(green=Blink(2.0, 0.0, 1), buzzer=BEEP),
    Signal.NOT_STORED: Pattern(red=FAST, buzzer=LONG_DOUBLE),
    Signal.REFUSED: Pattern(red=True, buzzer=LONG),
    Signal.OUTBOX_FULL: Pattern(amber=True, red=True, buzzer=TRIPLE),
    Signal.FAULT: Pattern(amber=SLOW, red=SLOW, buzzer=LONG_DOUBLE),
}
"""What each signal looks and sounds like; every pattern differs from every other."""

_MAX_WAITING = 8  # signals queued behind held ones; older plain prompts are dropped first


class GpioIndicator:
    """An Indicator (see photosafe.drivers.indicator) on three LEDs and an active buzzer.

    Pins are BCM numbers or any gpiozero pin name; `buzzer=None` for a station without one.
    The defaults are the wiring in the operations guide: GPIO17 green, GPIO27 amber, GPIO22
    red, GPIO18 buzzer. Raises BackendUnavailable on a machine without GPIO, and gpiozero's own
    errors for a bad or busy pin.
    """

    def __init__(
        self,
        green: int | str = 17,
        amber: int | str = 27,
        red: int | str = 22,
        buzzer: int | str | None = 18,
        *,
        active_high: bool = True,
        patterns: dict[Signal, Pattern] | None = None,
        pin_factory: Any = None,
    ) -> None:
        from gpiozero import LED, Buzzer

        self._patterns = dict(PATTERNS if patterns is None else patterns)
        missing = set(Signal) - set(self._patterns)
        if missing:
            raise ValueError(f"no pattern for {', '.join(sorted(missing))}")
        made: list[Any] = []

        def make() -> None:
            for pin in (green, amber, red):
                made.append(LED(pin, active_high=active_high, pin_factory=pin_factory))
            if buzzer is not None:
                made.append(Buzzer(buzzer, active_high=active_high, pin_factory=pin_factory))

        try:
            claim_pins(make)
        except BaseException:
            for device in made:
                device.close()
            raise
        self._lights = made[:3]
        self._buzzer = made[3] if buzzer is not None else None
        self._lock = threading.Lock()
        self._closed = False
        self._held_until = 0.0
        self._waiting: deque[Signal] = deque()
        self._timer: threading.Timer | None = None

    def show(self, signal: Signal, detail: str | None = None) -> None:
        """Shows `signal` now, or after a held pattern's hold (the detail is not shown)."""
        with self._lock:
            if self._closed:
                return
            if time.monotonic() < self._held_until:
                self._wait(signal)
            else:
                self._play(signal)

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self._timer is not None:
                self._timer.cancel()
            self._waiting.clear()
            devices = [*self._lights, *([self._buzzer] if self._buzzer is not None else [])]
        for device in devices:
            device.off()
            device.close()

    def _wait(self, signal: Signal) -> None:
        """Queues `signal` behind the held pattern; a newer signal supersedes waiting prompts."""
        kept = [s for s in self._waiting if self._patterns[s].hold_s > 0]
        self._waiting = deque([*kept, signal][-_MAX_WAITING:])
        if self._timer is None:
            self._schedule()

    def _schedule(self) -> None:
        delay = max(0.0, self._held_until - time.monotonic())
        self._timer = threading.Timer(delay, self._next)
        self._timer.daemon = True
        self._timer.start()

    def _next(self) -> None:
        with self._lock:
            self._timer = None
            if self._closed or not self._waiting:
                return
            self._play(self._waiting.popleft())
            if self._waiting:
                self._schedule()

    def _play(self, signal: Signal) -> None:
        pattern = self._patterns[signal]
        self._held_until = time.monotonic() + pattern.hold_s
        lights = zip(self._lights, (pattern.green, pattern.amber, pattern.red), strict=True)
        rhythms: list[tuple[Any, Blink]] = []
        for light, part in lights:  # steady parts first, so no old rhythm outlives its signal
            if isinstance(part, Blink):
                rhythms.append((light, part))
            elif part:
                light.on()
            else:
                light.off()
        buzzer = self._buzzer
        if buzzer is not None and pattern.buzzer is None:
            buzzer.off()
        for light, rhythm in rhythms:
            light.blink(rhythm.on_s, rhythm.off_s, rhythm.n, background=True)
        if buzzer is not None and pattern.buzzer is not None:
            beep = pattern.buzzer
            buzzer.beep(beep.on_s, beep.off_s, beep.n, background=True)
