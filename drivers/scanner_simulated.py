"""A scanner you feed: for tests (`feed`) and the demo (`feed_lines` from a file or stdin).

`feed()` delivers synchronously, on the caller's thread, so a test knows the station has the
scan when `feed()` returns; `feed_lines()` delivers from a background thread, as the evdev
backend will. Either way the station puts scans onto its own event queue, so which thread calls
`on_scan` does not matter to it. Like a scanner nobody listens to, scans fed while the scanner is
stopped are dropped.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TextIO

from photosafe.drivers.scanner import GS, Scan

SOURCE = "simulated"
# How a GS (0x1D) separator is typed into a text file: as the Python escape or as zxing's form.
GS_ESCAPES = ("\\x1d", "\\x1D", "<GS>")


def unescape(line: str) -> str:
    """One line of a scan file as the scan it stands for: GS escapes replaced, no line ending."""
    text = line.rstrip("\r\n")
    for escape in GS_ESCAPES:
        text = text.replace(escape, GS)
    return text


class SimulatedScanner:
    """A Scanner (see photosafe.drivers.scanner) that reads what it is fed."""

    def __init__(self) -> None:
        self._on_scan: Callable[[Scan], None] | None = None
        self._stopped = threading.Event()  # set by the next stop(), for feed_lines threads

    def start(self, on_scan: Callable[[Scan], None]) -> None:
        self._on_scan = on_scan

    def stop(self) -> None:
        self._on_scan = None
        self._stopped.set()
        self._stopped = threading.Event()

    def feed(self, text: str) -> bool:
        """Reads one barcode (an AIM prefix like "]d2" is split off). False if nobody listened."""
        on_scan = self._on_scan  # one read: stop() on another thread cannot split it
        if on_scan is None:
            return False
        on_scan(Scan.from_wire(text, SOURCE))
        return True

    def feed_lines(self, stream: TextIO) -> threading.Thread:
        """Feeds each line of `stream` as one scan, from a daemon thread, until EOF or stop().

        Call it after start(): lines fed while stopped are dropped. Blank lines and lines
        starting with "#" are skipped, so a demo script can carry comments. A thread blocked
        reading stdin notices stop() only at the next line (or ends with the process).
        """
        stopped = self._stopped

        def read() -> None:
            for line in stream:
                if stopped.is_set():
                    return
                text = unescape(line)
                if text and not text.startswith("#"):
                    self.feed(text)

        thread = threading.Thread(target=read, name="simulated-scanner", daemon=True)
        thread.start()
        return thread
