"""Signals on the station's screen as well as its lights: the status line of a display station.

Wraps the station's indicator (lights and buzzer, or the console) so every signal also becomes
the display's large status line: its detail, or the signal's plain meaning. Details are written
for the clinician and never carry patient identifiers or names (see drivers/indicator.py).
"""

from __future__ import annotations

from photosafe.drivers.display import Display
from photosafe.drivers.indicator import MEANINGS, Indicator, Signal


class DisplayedIndicator:
    """An Indicator that shows each signal on `indicator` and on `display`'s status line."""

    def __init__(self, indicator: Indicator, display: Display) -> None:
        self._indicator = indicator
        self._display = display

    def show(self, signal: Signal, detail: str | None = None) -> None:
        self._indicator.show(signal, detail)
        self._display.show_status(detail or MEANINGS[signal])

    def close(self) -> None:
        self._indicator.close()  # the display is the station's to close
