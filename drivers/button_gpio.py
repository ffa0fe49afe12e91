"""The capture button on a GPIO pin: a gpiozero Button, pressed by pulling the pin to ground.

gpiozero calls `when_pressed` on its own thread (hand the press to a queue, as the station
does). The pin is claimed when the GpioButton is made, so a wrong pin fails at start-up, and
released by `close()`. gpiozero is imported only here; tests pass a MockFactory.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from photosafe.drivers.indicator_gpio import claim_pins

__all__ = ["GpioButton"]


class GpioButton:
    """A Button (see photosafe.drivers.button) wired from `pin` to ground (internal pull-up).

    `bounce_time` (seconds) ignores the contact bounce after a press; `pull_up=False` is for a
    button wired to 3.3 V with a pull-down. The default pin is GPIO5, the operations guide's.
    """

    def __init__(
        self,
        pin: int | str = 5,
        bounce_time: float | None = 0.05,
        *,
        pull_up: bool = True,
        pin_factory: Any = None,
    ) -> None:
        from gpiozero import Button

        self._button = claim_pins(
            lambda: Button(pin, pull_up=pull_up, bounce_time=bounce_time, pin_factory=pin_factory)
        )
        self._on_press: Callable[[], None] | None = None
        self._button.when_pressed = self._pressed

    def start(self, on_press: Callable[[], None]) -> None:
        self._on_press = on_press

    def stop(self) -> None:
        self._on_press = None

    def close(self) -> None:
        """Stops and releases the pin. Idempotent."""
        self._on_press = None
        self._button.close()

    def _pressed(self) -> None:
        on_press = self._on_press  # one read: stop() may clear it meanwhile
        if on_press is not None:
            on_press()
