"""Delivery never lies: stored only on a verified receipt for the exact bytes we sent.

These tests drive the outbox and delivery logic with a recording publisher and real signed
receipts; the same paths run through a real broker in tests/test_station_e2e.py.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from keys import shared_pki

from photosafe.daemon.delivery import Delivery, NotStored, Stored
from photosafe.daemon.link import NotConnected
from photosafe.daemon.outbox import EntryState, Outbox, OutboxFull, OutboxLimits
from photosafe.protocol import ack
from photosafe.protocol.ack import AckStatus

DEVICE = "ward-a-01"


@dataclass
class RecordingPublisher:
    connected: bool = True
    max_payload: int = 10_000
    sent: list[tuple[uuid.UUID, bytes, int]] = field(default_factory=list)

    def publish_capture(self, capture_id: uuid.UUID, sealed: bytes, expiry_s: int) -> int:
        if not self.connected:
            raise NotConnected("down")
        self.sent.append((capture_id, sealed, expiry_s))
        return len(self.sent)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _delivery(**limits: float) -> tuple[Delivery, RecordingPublisher, Clock]:
    publisher, clock = RecordingPublisher(), Clock()
    outbox = Outbox(
        OutboxLimits(
            max_items=int(limits.get("max_items", 3)),
            max_bytes=int(limits.get("max_bytes", 1000)),
            ack_timeout_s=limits.get("ack_timeout_s", 10),
            expiry_s=limits.get("expiry_s", 60),
        )
    )
    delivery = Delivery(
        device_id=DEVICE,
        outbox=outbox,
        publisher=publisher,
        pinned=ack.pin(shared_pki().signing.public_key()),
        clock=clock,
    )
    return delivery, publisher, clock


def _receipt(
    capture_id: uuid.UUID,
    sealed: bytes,
    status: AckStatus = AckStatus.STORED,
    key: Ed25519PrivateKey | None = None,
    device: str = DEVICE,
) -> bytes:
    key = key or shared_pki().signing
    receipt = ack.make_receipt(
        signing_key=key,
        device=device,
        capture=capture_id,
        sealed=sealed,
        status=status,
        reason="tampered" if status is AckStatus.REJECTED else None,
    )
    return ack.sign(receipt, key)


def test_stored_only_after_a_verified_receipt() -> None:
    delivery, publisher, _ = _delivery()
    capture = uuid.uuid4()
    delivery.submit(capture, b"sealed-1")
    assert delivery.pump() == []
    assert publisher.sent[0][0] == capture
    delivery.publish_result(1, None)  # a good PUBACK is not "stored"
    assert delivery.outbox.get(capture).state is EntryState.PUBLISHED  # type: ignore[union-attr]
    assert delivery.ack_message(_receipt(capture, b"sealed-1")) == [Stored(capture, None, False)]
    assert delivery.pending() == 0


def test_forged_unsigned_or_foreign_receipts_change_nothing() -> None:
    delivery, _, _ = _delivery()
    capture = uuid.uuid4()
    delivery.submit(capture, b"sealed-1")
    delivery.pump()
    forged = _receipt(capture, b"sealed-1", key=Ed25519PrivateKey.generate())
    assert delivery.ack_message(forged) == []
    assert delivery.ack_message(b'{"receipt":{},"sig":""}') == []
    assert delivery.ack_message(_receipt(capture, b"sealed-1", device="ward-a-02")) == []
    assert delivery.ack_message(_receipt(capture, b"other bytes")) == []  # not what we sent
    assert delivery.ack_message(_receipt(uuid.uuid4(), b"sealed-1")) == []  # not ours
    assert delivery.pending() == 1


def test_rejected_receipt_is_not_stored_with_the_reason() -> None:
    delivery, _, _ = _delivery()
    capture = uuid.uuid4()
    delivery.submit(capture, b"sealed-1")
    delivery.pump()
    [notice] = delivery.ack_message(_receipt(capture, b"sealed-1", AckStatus.REJECTED))
    assert isinstance(notice, NotStored)
    assert "tampered" in notice.reason
    assert delivery.pending() == 0


def test_duplicate_receipt_counts_as_stored() -> None:
    delivery, _, _ = _delivery()
    capture = uuid.uuid4()
    delivery.submit(capture, b"s")
    delivery.pump()
    assert delivery.ack_message(_receipt(capture, b"s", AckStatus.DUPLICATE)) == [
        Stored(capture, None, True)
    ]


def test_full_outbox_refuses_by_count_and_by_bytes() -> None:
    delivery, _, _ = _delivery(max_items=2, max_bytes=100)
    delivery.submit(uuid.uuid4(), b"a" * 10)
    delivery.submit(uuid.uuid4(), b"b" * 10)
    with pytest.raises(OutboxFull, match="2 captures"):
        delivery.submit(uuid.uuid4(), b"c")
    delivery, _, _ = _delivery(max_items=5, max_bytes=100)
    delivery.submit(uuid.uuid4(), b"a" * 60)
    with pytest.raises(OutboxFull, match="bytes"):
        delivery.submit(uuid.uuid4(), b"b" * 60)


def test_too_large_for_the_link_is_refused_before_queueing() -> None:
    delivery, publisher, _ = _delivery(max_bytes=100_000)
    publisher.max_payload = 50
    with pytest.raises(ValueError, match="too large"):
        delivery.submit(uuid.uuid4(), b"x" * 51)
    assert delivery.pending() == 0


def test_republished_with_the_same_capture_id_when_no_receipt_arrives() -> None:
    delivery, publisher, clock = _delivery(ack_timeout_s=10, expiry_s=60)
    capture = uuid.uuid4()
    delivery.submit(capture, b"s")
    delivery.pump()
    delivery.publish_result(1, None)
    clock.now += 9
    delivery.pump()
    assert len(publisher.sent) == 1
    clock.now += 2
    delivery.pump()
    assert [c for c, _, _ in publisher.sent] == [capture, capture]
    assert publisher.sent[1][2] <= 60 - 11  # the broker drops it when we would have given up


def test_refused_puback_is_retried_and_never_stored() -> None:
    delivery, publisher, _ = _delivery()
    capture = uuid.uuid4()
    delivery.submit(capture, b"s")
    delivery.pump()
    delivery.publish_result(1, "Not authorized")
    assert delivery.outbox.get(capture).state is EntryState.SEALED  # type: ignore[union-attr]
    delivery.pump()
    assert len(publisher.sent) == 2
    assert delivery.counts["refused_publish"] == 1


def test_nothing_is_published_while_disconnected_and_everything_expires_visibly() -> None:
    delivery, publisher, clock = _delivery(expiry_s=60)
    publisher.connected = False
    capture = uuid.uuid4()
    delivery.submit(capture, b"s")
    assert delivery.pump() == []
    clock.now += 60
    [notice] = delivery.pump()
    assert notice == NotStored(capture, "not stored: no receipt from the gateway in time")
    assert publisher.sent == []


def test_a_late_receipt_after_expiry_does_not_say_stored() -> None:
    delivery, _, clock = _delivery(expiry_s=60)
    capture = uuid.uuid4()
    delivery.submit(capture, b"s")
    delivery.pump()
    clock.now += 61
    delivery.pump()
    assert delivery.ack_message(_receipt(capture, b"s")) == []


def test_abandon_reports_everything_left_as_not_stored() -> None:
    delivery, _, _ = _delivery()
    ids = [uuid.uuid4(), uuid.uuid4()]
    for capture in ids:
        delivery.submit(capture, b"s")
    notices = delivery.abandon()
    assert {n.capture_id for n in notices} == set(ids)
    assert all(isinstance(n, NotStored) for n in notices)
    assert delivery.pending() == 0
