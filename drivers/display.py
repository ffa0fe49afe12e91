"""An optional screen at the station: the patient approves an intimate image on it.

Only stations with a display take intimate images: the workflow shows the captured still for
the patient's approval and clears it as soon as it is approved, discarded or the patient
context ends. A large status line says what the station wants next.

What is shown is patient imagery: a backend puts it on the screen and nowhere else (never a
file, never a log), and keeps no copy once cleared. Backends: `display_framebuffer` (the
Raspberry Pi's /dev/fb0, DSI or HDMI) and `display_simulated` (records what was shown, as
sizes, texts and hashes, for tests).
"""

from __future__ import annotations

from typing import Protocol

from photosafe.drivers.camera import Still
from photosafe.drivers.errors import DriverError

__all__ = ["Display", "DisplayError"]


class DisplayError(DriverError):
    """The display cannot be used: missing, not a display device, or an unknown pixel format."""


class Display(Protocol):
    """A screen the patient can see (it satisfies the workflow's ApprovalDisplay)."""

    def show_for_approval(self, still: Still) -> None:
        """Shows `still`, fitted to the screen, above the status line.

        The still's JPEG is read, not kept: the caller may wipe it as soon as this returns.
        """

    def show_status(self, text: str) -> None:
        """Shows `text` as the large status line, below whatever image is shown."""

    def clear(self) -> None:
        """Blanks the screen: image and status line. Idempotent."""

    def close(self) -> None:
        """Blanks the screen and releases it. Idempotent; later calls do nothing."""
