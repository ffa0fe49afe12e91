"""How the station answers the person in front of it: lights, a buzzer, an optional display.

Each Signal is one thing the clinician must be able to tell apart, by colour, blink pattern and
tone on a headless station (the gpiozero backend comes with the hardware-drivers work). STORED
is lit only by the gateway's signed ack; NEW_PATIENT is distinct from NEED_PATIENT because a
wristband silently replacing the previous patient is how wrong-patient photos happen.

The detail: a short text for the person at the station (a capture id, a reason). It is never
logged, by any backend. Callers must not put patient identifiers or names in it.
"""

from __future__ import annotations

from enum import StrEnum, auto
from typing import Protocol


class Signal(StrEnum):
    READY = auto()
    NEED_OPERATOR = auto()
    NEED_PATIENT = auto()
    NEED_CONSENT = auto()
    NEW_PATIENT = auto()
    CONTEXT_EXPIRED = auto()
    READY_TO_CAPTURE = auto()
    CAPTURING = auto()
    RETAKE = auto()
    NEED_CHAPERONE = auto()
    NEED_APPROVAL = auto()
    SENDING = auto()
    STORED = auto()
    NOT_STORED = auto()
    REFUSED = auto()
    OUTBOX_FULL = auto()
    FAULT = auto()


MEANINGS: dict[Signal, str] = {
    Signal.READY: "ready: scan your staff badge",
    Signal.NEED_OPERATOR: "scan your staff badge first",
    Signal.NEED_PATIENT: "scan the patient's wristband",
    Signal.NEED_CONSENT: "scan a consent card",
    Signal.NEW_PATIENT: "new patient: the previous patient was cleared",
    Signal.CONTEXT_EXPIRED: "patient details expired: scan the wristband again",
    Signal.READY_TO_CAPTURE: "ready to capture",
    Signal.CAPTURING: "capturing",
    Signal.RETAKE: "image not usable: retake",
    Signal.NEED_CHAPERONE: "scan the chaperone's badge",
    Signal.NEED_APPROVAL: "the patient must approve the image",
    Signal.SENDING: "sending to the record",
    Signal.STORED: "stored in the record",
    Signal.NOT_STORED: "NOT stored: take it again",
    Signal.REFUSED: "refused",
    Signal.OUTBOX_FULL: "outbox full: captures refused until it drains",
    Signal.FAULT: "fault: station needs attention",
}
"""What each signal tells the clinician, for text backends and the operations guide."""


class Indicator(Protocol):
    """Shows one signal at a time; a new signal replaces the one before."""

    def show(self, signal: Signal, detail: str | None = None) -> None:
        """Shows `signal`, with `detail` for the person at the station (never logged).

        Does nothing after close(): a station shutting down may still report.
        """

    def close(self) -> None:
        """Turns everything off and releases the hardware. Idempotent."""
