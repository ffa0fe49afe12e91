"""The capture button: a press calls back. Stations without one capture from a command card.

The Pi backend (with the hardware-drivers work) is a gpiozero Button, whose `when_pressed` runs
on gpiozero's own thread; so callbacks come from any thread: hand them to a queue.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol


class Button(Protocol):
    def start(self, on_press: Callable[[], None]) -> None:
        """Starts calling `on_press` for each press. Presses while stopped are lost."""

    def stop(self) -> None:
        """Stops calling back. Idempotent; `start()` may be called again."""


class SimulatedButton:
    """A Button pressed by calling `press()`: the callback runs on the caller's thread."""

    def __init__(self) -> None:
        self._on_press: Callable[[], None] | None = None

    def start(self, on_press: Callable[[], None]) -> None:
        self._on_press = on_press

    def stop(self) -> None:
        self._on_press = None

    def press(self) -> bool:
        """One press. False if nobody listened (the button was stopped)."""
        on_press = self._on_press
        if on_press is None:
            return False
        on_press()
        return True


class NoButton:
    """The Button of a station that has none: it never calls back."""

    def start(self, on_press: Callable[[], None]) -> None:
        pass

    def stop(self) -> None:
        pass
