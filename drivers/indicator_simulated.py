"""An indicator that remembers what it showed, for tests: `wait_for(Signal.STORED, 5)`."""

from __future__ import annotations

import threading

from photosafe.drivers.indicator import Signal


class RecordingIndicator:
    """An Indicator (see photosafe.drivers.indicator) that records every (signal, detail)."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._shown: list[tuple[Signal, str | None]] = []
        self._closed = False

    def show(self, signal: Signal, detail: str | None = None) -> None:
        with self._changed:
            if not self._closed:
                self._shown.append((signal, detail))
                self._changed.notify_all()

    def close(self) -> None:
        with self._changed:
            self._closed = True

    @property
    def shown(self) -> list[tuple[Signal, str | None]]:
        """Everything shown so far, oldest first (a copy)."""
        with self._changed:
            return list(self._shown)

    @property
    def signals(self) -> list[Signal]:
        """The signals shown so far, oldest first."""
        return [signal for signal, _ in self.shown]

    @property
    def closed(self) -> bool:
        return self._closed

    def wait_for(self, signal: Signal, timeout: float, count: int = 1) -> bool:
        """True once `signal` has been shown `count` times in all; False after `timeout` s."""
        with self._changed:
            return self._changed.wait_for(
                lambda: sum(shown is signal for shown, _ in self._shown) >= count, timeout
            )

    def clear(self) -> None:
        """Forgets what was shown (wait_for counts from here)."""
        with self._changed:
            self._shown.clear()
