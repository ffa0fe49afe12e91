"""Fleet-signed remote config: what estates may change on a running station, and how.

A retained message on the station's config topic, signed by a pinned fleet key, may change the
station's location, profile, quality thresholds, patient timeout or the gateway key captures
are sealed to (key rotation). `protocol.fleet.verify_config` refuses anything unsigned, wrongly
signed, for another device or not newer than what was applied; the station then keeps its
settings and reports the refusal code in its status. Nothing is written to disk: after a
restart the retained message is simply applied again.

A change of profile takes effect at once but cannot let a capture through on a consent the new
profile refuses: the workflow checks the consent against the station's profile at the moment of
capture (`Workflow._capture_problem`).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from typing import Protocol

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey

from photosafe.daemon.quality import QualityGate
from photosafe.daemon.workflow import Workflow
from photosafe.protocol import envelope, fleet

log = logging.getLogger(__name__)


class RecipientHolder(Protocol):
    """Whatever seals captures: it is told the gateway key to seal new captures to."""

    def use_recipient(self, key: X25519PublicKey) -> None: ...


class RemoteConfig:
    def __init__(
        self,
        *,
        device_id: str,
        pinned: Mapping[str, Ed25519PublicKey],
        workflow: Workflow,
        quality: QualityGate,
        sealer: RecipientHolder,
    ) -> None:
        self.device_id = device_id
        self._pinned = dict(pinned)
        self._workflow = workflow
        self._quality = quality
        self._sealer = sealer
        self.version = 0  # of the last config applied
        self.error: str | None = None  # code of the last config refused

    def handle(self, payload: bytes) -> None:
        """Verify and apply one config message; a refusal changes nothing but the status."""
        if not payload:
            return  # a cleared retained message
        if not self._pinned:
            self._refuse("no-fleet-key")
            return
        try:
            config = fleet.verify_config(
                payload, pinned=self._pinned, device=self.device_id, last_version=self.version
            )
        except fleet.ConfigMessageRejected as exc:
            self._refuse(exc.code)
            return
        self._apply(config.settings)
        self.version, self.error = config.version, None
        log.info("config.applied", extra={"config_version": config.version})

    def _apply(self, settings: fleet.FleetSettings) -> None:
        workflow = self._workflow
        station = workflow.station
        if settings.location is not None:
            station = station.model_copy(update={"location": settings.location})
        if settings.profile is not None:
            station = station.model_copy(update={"profile": settings.profile})
        workflow.station = station
        limits = settings.thresholds
        if limits is not None:
            gate = {
                name: value
                for name, value in limits.model_dump().items()
                if value is not None and name != "patient_timeout_s"
            }
            self._quality.thresholds = dataclasses.replace(self._quality.thresholds, **gate)
            if limits.patient_timeout_s is not None:
                workflow.timeouts = dataclasses.replace(
                    workflow.timeouts, patient_s=limits.patient_timeout_s
                )
        recipient = settings.recipient_key()
        if recipient is not None:
            self._sealer.use_recipient(recipient)
            log.info("config.recipient_key", extra={"kid": envelope.key_id(recipient)})

    def _refuse(self, code: str) -> None:
        self.error = code
        log.warning("config.ignored", extra={"reason": code})
