"""An indicator that writes one line per signal: for a developer's terminal and the demo.

It writes the detail, so give it a terminal, not a log: under systemd, stderr is the journal.
"""

from __future__ import annotations

import sys
import threading
from typing import TextIO

from photosafe.drivers.indicator import MEANINGS, Signal


class ConsoleIndicator:
    """An Indicator (see photosafe.drivers.indicator) that prints "[STORED] capture 1234 filed"."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = sys.stderr if stream is None else stream  # resolved late: pytest swaps it
        self._lock = threading.Lock()
        self._closed = False

    def show(self, signal: Signal, detail: str | None = None) -> None:
        with self._lock:
            if not self._closed:
                text = " ".join((detail or MEANINGS[signal]).split())  # one line, always
                self._stream.write(f"[{signal.name}] {text}\n")
                self._stream.flush()

    def close(self) -> None:
        with self._lock:
            self._closed = True
