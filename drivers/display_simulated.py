"""A display that remembers what it showed, for tests: sizes, texts and hashes, never pixels.

An image shown for approval is recorded as its size and the SHA-256 of its JPEG, so a test can
tell which capture was shown and that it was cleared, while no copy of the image (or of its
pixels) exists here, and nothing is written anywhere.
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass
from typing import Literal

from photosafe.drivers.camera import Still

__all__ = ["RecordingDisplay", "Shown"]


@dataclass(frozen=True)
class Shown:
    """One thing the display did."""

    what: Literal["approval", "status", "clear", "close"]
    width: int | None = None
    height: int | None = None
    sha256: str | None = None  # of the still's JPEG
    text: str | None = None


class RecordingDisplay:
    """A Display (see photosafe.drivers.display) that records every call, in order."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._shown: list[Shown] = []
        self._image: Shown | None = None
        self._status: str | None = None
        self._closed = False

    def show_for_approval(self, still: Still) -> None:
        digest = hashlib.sha256(still.jpeg.view()).hexdigest()  # reads in place: no copy
        self._record(Shown("approval", still.width, still.height, sha256=digest))

    def show_status(self, text: str) -> None:
        self._record(Shown("status", text=text))

    def clear(self) -> None:
        self._record(Shown("clear"))

    def close(self) -> None:
        with self._changed:
            if not self._closed:
                self._record_locked(Shown("close"))
                self._closed = True

    @property
    def shown(self) -> list[Shown]:
        """Everything done so far, oldest first (a copy)."""
        with self._changed:
            return list(self._shown)

    @property
    def image(self) -> Shown | None:
        """The approval image on the screen now, None if none is."""
        with self._changed:
            return self._image

    @property
    def status(self) -> str | None:
        """The status line on the screen now."""
        with self._changed:
            return self._status

    @property
    def closed(self) -> bool:
        return self._closed

    def wait_for(self, what: str, timeout: float, count: int = 1) -> bool:
        """True once `what` ("approval", "clear", ...) has happened `count` times in all."""
        with self._changed:
            return self._changed.wait_for(
                lambda: sum(s.what == what for s in self._shown) >= count, timeout
            )

    def _record(self, shown: Shown) -> None:
        with self._changed:
            if not self._closed:
                self._record_locked(shown)

    def _record_locked(self, shown: Shown) -> None:
        self._shown.append(shown)
        if shown.what == "approval":
            self._image = shown
        elif shown.what == "status":
            self._status = shown.text
        else:
            self._image = self._status = None
        self._changed.notify_all()
