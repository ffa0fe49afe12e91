"""The station's capture pipeline in one process, with no broker: for the plaintext tests.

The real Workflow, SimulatedCamera, QualityGate and SealingSender (HPKE sealing with keys from
tests/keys.py), and a Delivery whose outbox keeps the sealed captures in RAM: the publisher is
offline, so nothing is sent. Scans are real scan texts classified as the station does.
"""

from __future__ import annotations

import datetime as dt
import time
import uuid
from collections.abc import Callable

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey
from keys import shared_pki

from photosafe.daemon.app import SealingSender
from photosafe.daemon.credentials import StationKeys
from photosafe.daemon.delivery import Delivery
from photosafe.daemon.link import NotConnected
from photosafe.daemon.outbox import Outbox, OutboxLimits
from photosafe.daemon.quality import QualityGate
from photosafe.daemon.workflow import ApprovalDisplay, Timeouts, Workflow
from photosafe.drivers.camera import Camera
from photosafe.drivers.indicator_simulated import RecordingIndicator
from photosafe.protocol import cards, envelope
from photosafe.protocol.consent import Purpose, StationKind, StationProfile
from photosafe.protocol.identity import IdentityRules, classify
from photosafe.protocol.manifest import StationRef
from photosafe.provisioning.site_configs import SANDBOX_NHS_PREFIX

DEVICE = "ward-a-01"
RULES = IdentityRules(nhs_gs1_company_prefix=SANDBOX_NHS_PREFIX)
OPERATOR, CHAPERONE = "STAFF-100001", "STAFF-200002"
CONSENT = cards.card_text(cards.ExplicitConsentCard((Purpose.CARE,), deidentified_use=False))
CAPTURE = cards.card_text(cards.CaptureCard())
INTIMATE = cards.card_text(cards.IntimateCard())
APPROVE = cards.card_text(cards.ApproveCard())
DISCARD = cards.card_text(cards.DiscardCard())
CANCEL = cards.card_text(cards.CancelCard())


class OfflinePublisher:
    """The link with the broker away: captures stay in the outbox."""

    connected = False
    max_payload = 16 * 1024 * 1024

    def publish_capture(self, capture_id: uuid.UUID, sealed: bytes, expiry_s: int) -> int:
        raise NotConnected("offline")


def sealing_sender(
    *, recipient: X25519PublicKey | None = None, max_items: int = 20
) -> tuple[SealingSender, Delivery]:
    pki = shared_pki()
    device = pki.device(DEVICE)
    keys = StationKeys(
        device_key=device.key,
        device_cert=device.cert,
        recipient=recipient or pki.recipient.public_key(),
        pinned={},
        fleet={},
    )
    delivery = Delivery(
        device_id=DEVICE,
        outbox=Outbox(OutboxLimits(max_items, 96 * 1024 * 1024, 10, 300)),
        publisher=OfflinePublisher(),
        pinned={},
    )
    return SealingSender(keys, envelope.CHACHA20, delivery), delivery


class Station:
    """A workflow fed with scan texts; `indicator` records what it showed."""

    def __init__(
        self,
        camera: Camera,
        sender: SealingSender,
        *,
        display: ApprovalDisplay | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.indicator = RecordingIndicator()
        self.workflow = Workflow(
            station=StationRef(
                device_id=DEVICE,
                site="Test site",
                location="Test ward",
                profile=StationProfile(kind=StationKind.WARD),
            ),
            indicator=self.indicator,
            camera=camera,
            quality=QualityGate(),
            sender=sender,
            display=display,
            timeouts=Timeouts(patient_s=600, operator_s=900, approval_s=60),
            clock=clock or time.monotonic,
            wall_clock=lambda: dt.datetime.now(dt.UTC),
        )

    def scan(self, *texts: str) -> None:
        for text in texts:
            self.workflow.scan(classify(text, RULES))
