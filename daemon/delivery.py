"""Delivery that never lies: a capture is "stored" only on the gateway's signed receipt.

Joins the outbox, the link and receipt verification. Runs on the station's event loop thread;
the link's callbacks arrive here as events. Each call returns the notices the station must show:
`Stored` only for a receipt that verifies under a pinned key, names this device, a capture in the
outbox and the exact sealed bytes we sent; `NotStored` when the gateway rejected it, it expired,
or it can never be sent.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from photosafe.daemon.link import MessageTooLarge, NotConnected
from photosafe.daemon.outbox import Entry, Outbox
from photosafe.protocol import ack
from photosafe.protocol.errors import AckError

log = logging.getLogger(__name__)


class Publisher(Protocol):
    """What delivery needs of the link (MqttLink in the station, a fake-free broker in tests)."""

    @property
    def connected(self) -> bool: ...
    @property
    def max_payload(self) -> int: ...
    def publish_capture(self, capture_id: uuid.UUID, sealed: bytes, expiry_s: int) -> int: ...


@dataclass(frozen=True)
class Stored:
    capture_id: uuid.UUID
    record: str | None
    duplicate: bool


@dataclass(frozen=True)
class NotStored:
    capture_id: uuid.UUID
    reason: str


Notice = Stored | NotStored


class Delivery:
    def __init__(
        self,
        *,
        device_id: str,
        outbox: Outbox,
        publisher: Publisher,
        pinned: Mapping[str, Ed25519PublicKey],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.device_id = device_id
        self.outbox = outbox
        self._publisher = publisher
        self._pinned = dict(pinned)
        self._clock = clock
        self.counts = {"stored": 0, "not_stored": 0, "republished": 0, "refused_publish": 0}

    def too_large(self, size: int) -> str | None:
        """Why a sealed capture of `size` bytes cannot be sent at all, or None."""
        if size > self._publisher.max_payload:
            return f"image too large to send ({size} bytes; limit {self._publisher.max_payload})"
        return None

    def submit(self, capture_id: uuid.UUID, sealed: bytes) -> None:
        """Queue a sealed capture; the next pump() sends it. Raises OutboxFull or ValueError."""
        reason = self.too_large(len(sealed))
        if reason:
            raise ValueError(reason)
        self.outbox.add(capture_id, sealed, self._clock())
        log.info("capture.queued", extra={"capture_id": str(capture_id), "bytes": len(sealed)})

    def pump(self) -> list[Notice]:
        """Expire what is too old, then (re)publish what is due. Call on every tick."""
        now = self._clock()
        notices: list[Notice] = []
        for entry in self.outbox.expired(now):
            notices.append(
                self._not_stored(entry, "not stored: no receipt from the gateway in time")
            )
        if not self._publisher.connected:
            return notices
        for entry in self.outbox.due(now):
            remaining = self.outbox.limits.expiry_s - (now - entry.created)
            try:
                mid = self._publisher.publish_capture(
                    entry.capture_id, entry.sealed, int(max(1, remaining))
                )
            except NotConnected:
                break  # the link went down between the check and the publish
            except MessageTooLarge as exc:  # the broker lowered its limit since submit
                self.outbox.remove(entry.capture_id)
                notices.append(self._not_stored(entry, f"not stored: {exc}"))
                continue
            if entry.attempts:
                self.counts["republished"] += 1
                log.info(
                    "capture.republished",
                    extra={"capture_id": str(entry.capture_id), "attempt": entry.attempts + 1},
                )
            self.outbox.mark_sent(entry, mid, now)
            _ = entry.sealed_sha256  # hashed now, while paho sends the bytes, not before
        return notices

    def publish_result(self, mid: int, refusal: str | None) -> None:
        entry = self.outbox.puback(mid, refusal)
        if entry is not None and refusal is not None:
            self.counts["refused_publish"] += 1
            log.warning(
                "capture.publish_refused",
                extra={"capture_id": str(entry.capture_id), "reason": refusal},
            )

    def ack_message(self, payload: bytes) -> list[Notice]:
        """Verify a receipt; only a good one for a capture we hold changes anything."""
        try:
            receipt = ack.verify(payload, pinned=self._pinned, device=self.device_id)
        except AckError as exc:
            log.warning("ack.ignored", extra={"reason": str(exc)})
            return []
        entry = self.outbox.get(receipt.capture)
        if entry is None:
            log.info("ack.unmatched", extra={"capture_id": str(receipt.capture)})
            return []
        if receipt.sealed_sha256 != entry.sealed_sha256:
            log.warning("ack.digest_mismatch", extra={"capture_id": str(receipt.capture)})
            return []
        self.outbox.remove(entry.capture_id)
        if receipt.is_stored:
            self.counts["stored"] += 1
            log.info(
                "capture.stored",
                extra={"capture_id": str(entry.capture_id), "status": receipt.status.value},
            )
            return [Stored(entry.capture_id, receipt.record, receipt.status.value == "duplicate")]
        return [self._not_stored(entry, f"not stored: gateway rejected it ({receipt.reason})")]

    def pending(self) -> int:
        return len(self.outbox)

    def abandon(self) -> list[Notice]:
        """Shutdown: drop whatever is still waiting; each is reported not stored."""
        return [self._not_stored(e, "not stored: station shut down") for e in self.outbox.clear()]

    def _not_stored(self, entry: Entry, reason: str) -> NotStored:
        self.counts["not_stored"] += 1
        log.warning(
            "capture.not_stored", extra={"capture_id": str(entry.capture_id), "reason": reason}
        )
        return NotStored(entry.capture_id, reason)
