"""What the gateway answers to each capture, decided without MQTT (CaptureHandler)."""

from __future__ import annotations

import logging
import uuid
from pathlib import Path

import pytest
from keys import manifest_for, shared_pki

from photosafe.gateway.service import CaptureHandler, Reply
from photosafe.gateway.sink import BY_CAPTURE, Filed, FolderSink
from photosafe.protocol import ack, envelope, topics
from photosafe.protocol.ack import AckStatus, Receipt
from photosafe.protocol.envelope import DeviceTrust, Opened
from photosafe.provisioning import pki

IMAGE = b"\xff\xd8\xff\xe0 clinical image " + bytes(range(256)) * 2 + b"\xff\xd9"
NHS = "9434765919"  # the patient in keys.manifest_for


def seal(device_id: str = "ward-a-01", capture: uuid.UUID | None = None) -> bytes:
    p = shared_pki()
    dev = p.device(device_id)
    return envelope.seal(
        manifest_for(IMAGE, device_id, capture or uuid.uuid4()),
        IMAGE,
        device_key=dev.key,
        device_cert=dev.cert,
        recipient=p.recipient.public_key(),
    )


def handler(root: Path, *, revoked: tuple[str, ...] = (), sink: object = None) -> CaptureHandler:
    p = shared_pki()
    crl = pki.revocation_list(p.ca, [p.device(d).cert.serial_number for d in revoked])
    return CaptureHandler(
        recipient_keys={envelope.key_id(p.recipient.public_key()): p.recipient},
        trust=DeviceTrust(p.ca.cert, crl),
        signing_key=p.signing,
        sink=sink or FolderSink(root),  # type: ignore[arg-type]
    )


def verified(reply: Reply | None, device: str = "ward-a-01") -> Receipt:
    """The receipt as the station will see it: signature checked under the pinned key."""
    assert reply is not None
    assert reply.ack_topic == topics.ack(device)
    receipt = ack.verify(
        reply.ack_bytes, pinned=ack.pin(shared_pki().signing.public_key()), device=device
    )
    assert receipt == reply.receipt
    assert reply.correlation_data == receipt.capture.bytes
    return receipt


def filed(root: Path) -> list[Path]:
    return list((root / BY_CAPTURE).iterdir()) if (root / BY_CAPTURE).exists() else []


CAPTURE_TOPIC = topics.capture("ward-a-01")


def test_a_good_capture_is_stored_and_acked(tmp_path: Path) -> None:
    capture = uuid.uuid4()
    sealed = seal(capture=capture)
    receipt = verified(handler(tmp_path).handle_capture(CAPTURE_TOPIC, sealed, capture.bytes))
    assert receipt.status is AckStatus.STORED
    assert receipt.is_stored
    assert receipt.capture == capture
    assert receipt.sealed_sha256 == ack.sealed_digest(sealed)
    assert receipt.record == f"folder:{capture}"
    assert (tmp_path / f"nhs-{NHS}" / str(capture) / "image.jpg").read_bytes() == IMAGE


def test_a_replay_is_acked_duplicate_and_filed_once(tmp_path: Path) -> None:
    h, sealed = handler(tmp_path), seal()
    first = verified(h.handle_capture(CAPTURE_TOPIC, sealed, None))
    again = verified(h.handle_capture(CAPTURE_TOPIC, sealed, None))
    assert (first.status, again.status) == (AckStatus.STORED, AckStatus.DUPLICATE)
    assert again.is_stored
    assert len(filed(tmp_path)) == 1


def test_a_tampered_capture_is_rejected_with_a_reason_and_not_filed(tmp_path: Path) -> None:
    sealed = bytearray(seal())
    sealed[-10] ^= 0x01
    receipt = verified(handler(tmp_path).handle_capture(CAPTURE_TOPIC, bytes(sealed), None))
    assert receipt.status is AckStatus.REJECTED
    assert not receipt.is_stored
    assert receipt.reason is not None
    assert receipt.reason.startswith("DecryptionFailed: ")
    assert receipt.record is None
    assert filed(tmp_path) == []


def test_a_revoked_device_is_rejected(tmp_path: Path) -> None:
    h = handler(tmp_path, revoked=("ward-a-01",))
    receipt = verified(h.handle_capture(CAPTURE_TOPIC, seal(), None))
    assert receipt.status is AckStatus.REJECTED
    assert receipt.reason is not None
    assert receipt.reason.startswith("CertificateRevoked: ")
    assert filed(tmp_path) == []
    # the CRL names one device only
    other = verified(
        h.handle_capture(topics.capture("ward-a-02"), seal("ward-a-02"), None), "ward-a-02"
    )
    assert other.status is AckStatus.STORED


def test_a_capture_whose_header_names_another_device_is_rejected(tmp_path: Path) -> None:
    # ward-a-02's capture arrives on ward-a-01's topic: the broker vouches for the topic.
    capture = uuid.uuid4()
    reply = handler(tmp_path).handle_capture(CAPTURE_TOPIC, seal("ward-a-02", capture), None)
    receipt = verified(reply, "ward-a-01")  # answered to the publisher, not the claimed device
    assert receipt.status is AckStatus.REJECTED
    assert receipt.capture == capture
    assert receipt.reason is not None
    assert receipt.reason.startswith("DeviceMismatch: ")
    assert filed(tmp_path) == []


def test_an_unreadable_header_is_rejected_under_the_correlation_data(tmp_path: Path) -> None:
    capture = uuid.uuid4()
    garbage = b"this is not a sealed capture"
    receipt = verified(handler(tmp_path).handle_capture(CAPTURE_TOPIC, garbage, capture.bytes))
    assert receipt.status is AckStatus.REJECTED
    assert receipt.capture == capture
    assert receipt.reason is not None
    assert receipt.reason.startswith("MalformedEnvelope: ")
    assert receipt.sealed_sha256 == ack.sealed_digest(garbage)


@pytest.mark.parametrize("correlation", [None, b"", b"short", uuid.uuid4().bytes + b"x"])
def test_no_usable_capture_id_means_no_ack(tmp_path: Path, correlation: bytes | None) -> None:
    assert handler(tmp_path).handle_capture(CAPTURE_TOPIC, b"garbage", correlation) is None


@pytest.mark.parametrize(
    "topic",
    ["photosafe/v1/ward-a-01/status", "elsewhere/ward-a-01/capture", "photosafe/v1/+/capture"],
)
def test_a_message_on_a_foreign_topic_is_dropped(tmp_path: Path, topic: str) -> None:
    assert handler(tmp_path).handle_capture(topic, seal(), None) is None
    assert filed(tmp_path) == []


def test_the_header_capture_id_wins_over_correlation_data(tmp_path: Path) -> None:
    capture = uuid.uuid4()
    reply = handler(tmp_path).handle_capture(
        CAPTURE_TOPIC, seal(capture=capture), uuid.uuid4().bytes
    )
    assert verified(reply).capture == capture


def test_a_capture_for_a_key_not_held_is_rejected(tmp_path: Path) -> None:
    p = shared_pki()
    h = CaptureHandler(
        recipient_keys={},
        trust=DeviceTrust(p.ca.cert),
        signing_key=p.signing,
        sink=FolderSink(tmp_path),
    )
    receipt = verified(h.handle_capture(CAPTURE_TOPIC, seal(), None))
    assert receipt.reason is not None
    assert receipt.reason.startswith("UnknownRecipientKey: ")


class BrokenDisk:
    """A record store whose disk fails until it is repaired (a Sink, not a mock)."""

    def __init__(self, root: Path) -> None:
        self.inner = FolderSink(root)
        self.broken = True

    def store(self, opened: Opened) -> Filed:
        if self.broken:
            raise OSError(5, "Input/output error")
        return self.inner.store(opened)


def test_a_store_failure_is_not_acked_so_the_station_retries(tmp_path: Path) -> None:
    disk = BrokenDisk(tmp_path)
    h, sealed = handler(tmp_path, sink=disk), seal()
    assert h.handle_capture(CAPTURE_TOPIC, sealed, None) is None  # neither stored nor rejected
    disk.broken = False
    assert verified(h.handle_capture(CAPTURE_TOPIC, sealed, None)).status is AckStatus.STORED


def test_a_capture_id_reused_for_another_image_is_rejected_not_duplicate(tmp_path: Path) -> None:
    h, capture = handler(tmp_path), uuid.uuid4()
    assert verified(h.handle_capture(CAPTURE_TOPIC, seal(capture=capture), None)).is_stored
    p = shared_pki()
    dev = p.device("ward-a-01")
    other_image = IMAGE + b"another picture"
    resealed = envelope.seal(
        manifest_for(other_image, capture_id=capture),
        other_image,
        device_key=dev.key,
        device_cert=dev.cert,
        recipient=p.recipient.public_key(),
    )
    receipt = verified(h.handle_capture(CAPTURE_TOPIC, resealed, None))
    assert receipt.status is AckStatus.REJECTED  # "duplicate" would claim this image is stored
    assert receipt.reason is not None
    assert receipt.reason.startswith("CaptureConflict: ")


def test_logs_carry_event_names_and_ids_but_no_patient_data(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    h, capture = handler(tmp_path, revoked=("ward-a-02",)), uuid.uuid4()
    sealed = seal(capture=capture)
    h.handle_capture(CAPTURE_TOPIC, sealed, None)
    h.handle_capture(CAPTURE_TOPIC, sealed, None)
    h.handle_capture(topics.capture("ward-a-02"), seal("ward-a-02"), None)
    h.handle_capture(CAPTURE_TOPIC, b"junk", None)
    events = [getattr(r, "event", None) for r in caplog.records]
    assert events == ["capture.filed", "capture.duplicate", "capture.rejected", "capture.dropped"]
    assert str(capture) in caplog.records[0].getMessage()
    assert caplog.records[2].reason_class == "CertificateRevoked"  # type: ignore[attr-defined]
    for record in caplog.records:
        everything = record.getMessage() + repr(vars(record))
        assert NHS not in everything
        assert "Dermatology" not in everything
