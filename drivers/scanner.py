"""The barcode scanner as the station sees it: a source of Scans, delivered to a callback.

The Pi backend (with the hardware-drivers work) reads a USB keyboard-wedge scanner through evdev,
grabbed exclusively, one scan per Enter; the scanner is configured to send the AIM symbology
identifier first and Ctrl+] for GS. Barcodes decoded from camera frames are Scans too.

A Scan's text is patient data (an NHS number, a wristband): its repr leaves the text out, and it
is never logged.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

GS = "\x1d"
_AIM = re.compile(r"\][A-Za-z][0-9A-Za-z]")


@dataclass(frozen=True)
class Scan:
    """One barcode read: its text without the AIM prefix, and the AIM identifier if known."""

    text: str = field(repr=False)
    symbology: str | None  # e.g. "]d2" (GS1 DataMatrix), "]C0" (Code 128)
    source: str  # which reader: "simulated", "camera", an input device path

    @classmethod
    def from_wire(cls, raw: str, source: str) -> Scan:
        """Splits what a scanner sent into the AIM identifier (if it starts with one) and text."""
        if _AIM.match(raw):
            return cls(raw[3:], raw[:3], source)
        return cls(raw, None, source)

    @property
    def wire_text(self) -> str:
        """The text with its AIM prefix put back: what identity.classify expects."""
        return (self.symbology or "") + self.text


class Scanner(Protocol):
    """A barcode reader. It calls `on_scan` from its own thread: hand the scan to a queue."""

    def start(self, on_scan: Callable[[Scan], None]) -> None:
        """Starts delivering scans to `on_scan`. Scans read while stopped are dropped."""

    def stop(self) -> None:
        """Stops delivering scans. Idempotent; `start()` may be called again."""
