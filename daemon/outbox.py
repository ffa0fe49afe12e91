"""The outbox: sealed captures held in RAM until the gateway's signed receipt says "stored".

Bounded by count and bytes; a full outbox refuses a new capture (the station tells the clinician).
An entry is republished with the same capture id when no receipt arrives in time (after a
reconnect, a lost message, a gateway restart) and expires after a configured time, when the
clinician is told "not stored: retake". Nothing here touches the disk.

Single-threaded by design: the station's event loop owns it; MQTT callbacks only post events.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass, field
from enum import StrEnum
from functools import cached_property


class OutboxFull(Exception):
    """No room for another capture: by count or by bytes."""


class EntryState(StrEnum):
    SEALED = "sealed"  # waiting to be (re)published
    SENT = "sent"  # handed to the MQTT client, no PUBACK yet
    PUBLISHED = "published"  # the broker accepted it (good PUBACK); waiting for the gateway


@dataclass
class Entry:
    capture_id: uuid.UUID
    sealed: bytes
    created: float
    state: EntryState = EntryState.SEALED
    attempts: int = 0
    last_sent: float | None = None
    mid: int | None = None
    refusal: str | None = field(default=None)  # last broker refusal, for status and logs

    @property
    def size(self) -> int:
        return len(self.sealed)

    @cached_property
    def sealed_sha256(self) -> str:
        """SHA-256 of the sealed bytes, which the receipt must name. Computed once, when first
        asked: Delivery asks right after handing the capture to the link, so the hash runs while
        the bytes are on the wire instead of delaying the publish (tests/bench/README.md)."""
        return hashlib.sha256(self.sealed).hexdigest()


@dataclass(frozen=True)
class OutboxLimits:
    max_items: int
    max_bytes: int
    ack_timeout_s: float
    expiry_s: float


class Outbox:
    def __init__(self, limits: OutboxLimits) -> None:
        self.limits = limits
        self._entries: dict[uuid.UUID, Entry] = {}
        self._by_mid: dict[int, uuid.UUID] = {}

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def bytes_held(self) -> int:
        return sum(entry.size for entry in self._entries.values())

    def get(self, capture_id: uuid.UUID) -> Entry | None:
        return self._entries.get(capture_id)

    def room_for(self, size: int) -> str | None:
        """Why a capture of `size` bytes would not fit, or None when it would."""
        if len(self._entries) >= self.limits.max_items:
            return f"outbox full: {len(self._entries)} captures waiting for the gateway"
        if self.bytes_held + size > self.limits.max_bytes:
            return "outbox full: too many bytes waiting for the gateway"
        return None

    def add(self, capture_id: uuid.UUID, sealed: bytes, now: float) -> Entry:
        reason = self.room_for(len(sealed))
        if reason:
            raise OutboxFull(reason)
        if capture_id in self._entries:
            raise ValueError("capture id already in the outbox")
        entry = Entry(capture_id, sealed, created=now)
        self._entries[capture_id] = entry
        return entry

    def due(self, now: float) -> list[Entry]:
        """Entries to (re)publish now: never sent, or sent and unanswered for ack_timeout_s."""
        return [
            entry
            for entry in self._entries.values()
            if entry.state is EntryState.SEALED
            or (entry.last_sent is not None and now - entry.last_sent >= self.limits.ack_timeout_s)
        ]

    def mark_sent(self, entry: Entry, mid: int, now: float) -> None:
        if entry.mid is not None:
            self._by_mid.pop(entry.mid, None)
        entry.state, entry.mid, entry.last_sent = EntryState.SENT, mid, now
        entry.attempts += 1
        self._by_mid[mid] = entry.capture_id

    def puback(self, mid: int, refusal: str | None) -> Entry | None:
        """Record the broker's answer to a publish; a refusal puts the entry back to be retried."""
        capture_id = self._by_mid.pop(mid, None)
        entry = self._entries.get(capture_id) if capture_id else None
        if entry is None:
            return None
        entry.mid = None
        if refusal is None:
            entry.state = EntryState.PUBLISHED
        else:
            entry.state, entry.refusal = EntryState.SEALED, refusal
        return entry

    def remove(self, capture_id: uuid.UUID) -> Entry | None:
        entry = self._entries.pop(capture_id, None)
        if entry is not None and entry.mid is not None:
            self._by_mid.pop(entry.mid, None)
        return entry

    def expired(self, now: float) -> list[Entry]:
        """Remove and return the entries older than expiry_s."""
        old = [e for e in self._entries.values() if now - e.created >= self.limits.expiry_s]
        for entry in old:
            self.remove(entry.capture_id)
        return old

    def clear(self) -> list[Entry]:
        """Drop everything (shutdown); returns what was still waiting."""
        left = list(self._entries.values())
        self._entries.clear()
        self._by_mid.clear()
        return left
