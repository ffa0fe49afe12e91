"""The station workflow: right patient, right consent, every time.

A state machine driven by events: scans (already classified by photosafe.protocol.identity), the
capture button, clock ticks and delivery notices. Read it as the table `TRANSITIONS` below: for
each step, which kind of input it accepts and what that does. Anything a step does not list is
refused with a specific signal and changes nothing.

The patient context lives from the wristband scan for `patient_timeout_s` (never extended: a
stale context is how the wrong patient's photo gets taken), and is cleared by a new wristband, a
wristband that fails its checks, a cancel or done card, a different staff badge, or the timeout.
A new wristband replaces the patient and clears everything recorded for the previous one, with its
own signal. Whenever the patient is cleared, an image waiting on the display for approval is
wiped and the display cleared with it.

Audit without patient data on the device: each step logs an event name, the capture id, the
operator id and the consent kind; the patient is in the sealed manifest only.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

from photosafe.daemon.metadata import ImageRejected, strip_metadata
from photosafe.daemon.outbox import OutboxFull
from photosafe.drivers.camera import Camera, CameraError, Still
from photosafe.drivers.indicator import Indicator, Signal
from photosafe.protocol import cards
from photosafe.protocol.consent import (
    AnyConsent,
    BestInterestsConsent,
    ImpliedConsent,
    refusal_reason,
)
from photosafe.protocol.identity import Command, Patient, Rejected, Scanned, Staff
from photosafe.protocol.manifest import (
    BodySite,
    CameraInfo,
    ImageInfo,
    Laterality,
    Manifest,
    PatientRef,
    QualityFigures,
    StaffRef,
    StationRef,
)

log = logging.getLogger(__name__)


class Step(StrEnum):
    NEED_OPERATOR = "need-operator"
    NEED_PATIENT = "need-patient"
    NEED_CONSENT = "need-consent"
    NEED_DECIDER = "need-decider"  # best-interests: the decision-maker's badge
    NEED_CHAPERONE = "need-chaperone"  # intimate: a chaperone's badge, not the operator's
    READY = "ready"  # may capture
    NEED_APPROVAL = "need-approval"  # intimate image shown: approve or discard
    CLOSED = "closed"  # shutting down: no more captures


class Input(StrEnum):
    STAFF = "staff"
    PATIENT = "patient"
    CONSENT = "consent"
    BEST_INTERESTS = "best-interests"
    BODY_SITE = "body-site"
    INTIMATE = "intimate"
    CAPTURE = "capture"
    APPROVE = "approve"
    DISCARD = "discard"
    CANCEL = "cancel"
    DONE = "done"


@dataclass(frozen=True)
class QualityVerdict:
    figures: QualityFigures | None
    problem: str | None  # None: good enough for its clinical purpose


class QualityGate(Protocol):
    def check(self, still: Still) -> QualityVerdict: ...


class Sender(Protocol):
    """Seals and queues a capture; the station's delivery behind it. Wipes nothing itself."""

    def send(self, manifest: Manifest, still: Still) -> None: ...


class ApprovalDisplay(Protocol):
    """A screen the patient can see; only display stations take intimate images."""

    def show_for_approval(self, still: Still) -> None: ...
    def clear(self) -> None: ...


@dataclass(frozen=True)
class Timeouts:
    patient_s: float = 120.0
    operator_s: float = 900.0
    approval_s: float = 120.0


@dataclass
class Session:
    """Everything the station knows about who is being photographed, and by whom."""

    operator: Staff | None = None
    operator_seen: float = 0.0
    patient: Patient | None = None
    patient_scanned: float = 0.0
    consent: AnyConsent | None = None
    body_site: BodySite | None = None
    intimate: bool = False
    chaperone: Staff | None = None
    pending: Still | None = None  # an intimate image waiting for the patient's approval
    pending_since: float = 0.0
    pending_figures: QualityFigures | None = None
    captures: list[uuid.UUID] = field(default_factory=list)

    def clear_patient(self) -> None:
        self.patient = None
        self.consent = None
        self.body_site = None
        self.intimate = False
        self.chaperone = None
        self.drop_pending()

    def drop_pending(self) -> None:
        if self.pending is not None:
            self.pending.jpeg.wipe()
            self.pending = None


Handler = Callable[["Workflow", Scanned | None], None]


class Workflow:
    def __init__(
        self,
        *,
        station: StationRef,
        indicator: Indicator,
        camera: Camera,
        quality: QualityGate,
        sender: Sender,
        display: ApprovalDisplay | None = None,
        timeouts: Timeouts = Timeouts(),
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        self.station = station
        self.indicator = indicator
        self.camera = camera
        self.quality = quality
        self.sender = sender
        self.display = display
        self.timeouts = timeouts
        self.clock = clock
        self.wall_clock = wall_clock
        self.session = Session()
        self.step = Step.NEED_OPERATOR

    # -- inputs ------------------------------------------------------------------------------

    def scan(self, scanned: Scanned) -> None:
        self.tick()
        if isinstance(scanned, Rejected):
            log.info("scan.refused", extra={"looked_like": scanned.looked_like})
            if scanned.looked_like == "patient" and self.session.patient is not None:
                self._refused_wristband_ends_context(scanned.reason)
                return
            self._refuse(scanned.reason)
            return
        self._dispatch(_input_of(scanned), scanned)

    def press(self) -> None:
        """The capture button: the same as a capture card."""
        self.tick()
        self._dispatch(Input.CAPTURE, None)

    def tick(self) -> None:
        """Expire the patient context, the operator and an unanswered approval on time."""
        if self.step is Step.CLOSED:
            return  # rule: a closed station stays closed (no timeout reopens it)
        now = self.clock()
        s = self.session
        if s.pending is not None and now - s.pending_since >= self.timeouts.approval_s:
            self._log("approval.expired")
            self._leave_approval()
            self._signal(Signal.RETAKE, "image discarded: no approval in time")
        if s.patient is not None and now - s.patient_scanned >= self.timeouts.patient_s:
            self._log("patient.expired")
            self._forget_patient()
            self._enter(Step.NEED_PATIENT if s.operator else Step.NEED_OPERATOR)
            self._signal(Signal.CONTEXT_EXPIRED, "patient context expired: scan the wristband")
        if s.operator is not None and now - s.operator_seen >= self.timeouts.operator_s:
            self._log("operator.signed_out")
            self._forget_patient()
            s.operator = None
            self._enter(Step.NEED_OPERATOR)
            self._signal(Signal.NEED_OPERATOR, "signed out: scan your staff badge")

    def close(self) -> None:
        """Shut down: no more captures; an unapproved image is wiped, the operator signed out."""
        self._forget_patient()
        self.session.operator = None
        self._enter(Step.CLOSED)

    # -- the table ---------------------------------------------------------------------------

    def _dispatch(self, kind: Input, scanned: Scanned | None) -> None:
        handler = TRANSITIONS[self.step].get(kind)
        if handler is None and self.session.operator is not None and self.step is not Step.CLOSED:
            handler = ANY_STEP.get(kind)
        if handler is None:
            self._refuse(_NOT_NOW.get((self.step, kind)) or _expected(self.step))
            return
        if self.session.operator is not None:
            self.session.operator_seen = self.clock()
        handler(self, scanned)

    def _operator(self, scanned: Scanned | None) -> None:
        assert isinstance(scanned, Staff)
        s = self.session
        if s.operator == scanned:
            # Rule: the operator's own badge again is "still here": it changes nothing (it must
            # not leave a patient, consent or an image on the display behind a new step).
            s.operator_seen = self.clock()
            self._log("operator.still_here")
            self._signal(*_PROMPT[self.step])
            return
        self._forget_patient()  # someone else at the station: start afresh
        s.operator, s.operator_seen = scanned, self.clock()
        self._log("operator.signed_in")
        self._enter(Step.NEED_PATIENT)
        self._signal(Signal.NEED_PATIENT, "scan the patient's wristband")

    def _patient(self, scanned: Scanned | None) -> None:
        assert isinstance(scanned, Patient)
        s = self.session
        replaced = s.patient is not None and s.patient != scanned
        self._forget_patient()
        s.patient, s.patient_scanned = scanned, self.clock()
        self._log("patient.replaced" if replaced else "patient.selected")
        if replaced:
            self._signal(Signal.NEW_PATIENT, "new patient: previous consent and site cleared")
        self._ask_for_consent()

    def _consent(self, scanned: Scanned | None) -> None:
        assert isinstance(scanned, Command)
        card = scanned.card
        assert isinstance(
            card, cards.ExplicitConsentCard | cards.ParentalConsentCard | cards.ImpliedConsentCard
        )
        self._accept_consent(cards.to_consent(card))

    def _best_interests(self, scanned: Scanned | None) -> None:
        self._enter(Step.NEED_DECIDER)
        self._signal(Signal.NEED_CONSENT, "scan the badge of the clinician who made the decision")

    def _decider(self, scanned: Scanned | None) -> None:
        assert isinstance(scanned, Staff)
        self._accept_consent(BestInterestsConsent(decided_by=scanned.staff_id))

    def _body_site(self, scanned: Scanned | None) -> None:
        assert isinstance(scanned, Command) and isinstance(scanned.card, cards.BodySiteCard)
        self.session.body_site = BodySite(
            snomed_code=scanned.card.snomed_code, laterality=Laterality(scanned.card.laterality)
        )
        self._log("body_site.set")
        self._signal(Signal.READY_TO_CAPTURE, "body site recorded")

    def _intimate(self, scanned: Scanned | None) -> None:
        if self.display is None:
            self._refuse("intimate images need a station with a display for the patient's approval")
            return
        self.session.intimate = True
        self._log("intimate.marked")
        self._enter(Step.NEED_CHAPERONE)
        self._signal(Signal.NEED_CHAPERONE, "scan the chaperone's badge")

    def _chaperone(self, scanned: Scanned | None) -> None:
        assert isinstance(scanned, Staff)
        if scanned == self.session.operator:
            self._refuse("the chaperone must be someone other than the operator")
            return
        self.session.chaperone = scanned
        self._log("chaperone.recorded")
        self._enter(Step.READY)
        self._signal(Signal.READY_TO_CAPTURE, "chaperone recorded")

    def _capture(self, scanned: Scanned | None) -> None:
        s = self.session
        problem = self._capture_problem()
        if problem:
            self._refuse(problem)
            return
        self._signal(Signal.CAPTURING)
        try:
            still = self.camera.capture()
            still = strip_metadata(still)  # no EXIF/GPS/XMP leaves; a rejected image is wiped
        except (CameraError, ImageRejected) as exc:
            self._log("capture.camera_failed")
            self._signal(Signal.FAULT, f"camera failed: {exc}")
            return
        try:
            verdict = self.quality.check(still)
        except BaseException:
            still.jpeg.wipe()  # a failing check must not leave the image behind
            raise
        if verdict.problem:
            still.jpeg.wipe()
            self._log("capture.quality_refused")
            self._signal(Signal.RETAKE, verdict.problem)
            return
        if s.intimate:
            assert self.display is not None
            s.pending, s.pending_since, s.pending_figures = still, self.clock(), verdict.figures
            self.display.show_for_approval(still)
            self._log("approval.requested")
            self._enter(Step.NEED_APPROVAL)
            self._signal(Signal.NEED_APPROVAL, "show the patient: approve or discard")
            return
        self._send(still, verdict.figures, approved=False)

    def _approve(self, scanned: Scanned | None) -> None:
        s = self.session
        assert s.pending is not None
        still, figures = s.pending, s.pending_figures
        s.pending = None  # ownership passes here: wiped on every way out (and by _send)
        with still.jpeg:
            self._leave_approval()
            problem = self._capture_problem()
            if problem:
                self._refuse(problem)
                return
            self._send(still, figures, approved=True)

    def _discard(self, scanned: Scanned | None) -> None:
        self._log("approval.discarded")
        self._leave_approval()
        self._signal(Signal.RETAKE, "image discarded")

    def _cancel(self, scanned: Scanned | None) -> None:
        self._log("patient.cancelled")
        self._forget_patient()
        self._leave_to_patient_or_operator()
        self._signal(Signal.NEED_PATIENT, "cancelled: scan the next wristband")

    def _done(self, scanned: Scanned | None) -> None:
        self._log("patient.done")
        self._forget_patient()
        self._leave_to_patient_or_operator()
        self._signal(Signal.NEED_PATIENT, "done: scan the next wristband")

    # -- rules -------------------------------------------------------------------------------

    def _capture_problem(self) -> str | None:
        """The capture rules, checked again at the moment of capture (not only on tick)."""
        s = self.session
        if s.operator is None:
            return "no operator: scan your staff badge"
        if s.patient is None:
            return "no patient: scan the wristband"
        if self.clock() - s.patient_scanned >= self.timeouts.patient_s:
            return "patient context expired: scan the wristband again"
        if s.consent is None:
            return "no consent recorded: scan a consent card"
        reason = refusal_reason(s.consent, self.station.profile)
        if reason:
            return reason
        if s.intimate and (s.chaperone is None or s.chaperone == s.operator):
            return "intimate image: scan a chaperone's badge (not the operator's)"
        return None

    def _accept_consent(self, consent: AnyConsent) -> None:
        reason = refusal_reason(consent, self.station.profile)
        if reason:
            self._refuse(reason)  # rule: a refused scan changes nothing, the step included
            return
        self.session.consent = consent
        self._log("consent.recorded")
        self._enter(Step.READY)
        self._signal(Signal.READY_TO_CAPTURE, "ready: press capture")

    def _ask_for_consent(self) -> None:
        profile = self.station.profile
        self._enter(Step.NEED_CONSENT)
        if len(profile.implied_categories) == 1:
            # A single-purpose theatre stack: its profile supplies the implied consent.
            (category,) = profile.implied_categories
            self._accept_consent(ImpliedConsent(category=category))
            return
        self._signal(Signal.NEED_CONSENT, "scan the consent card")

    def _send(self, still: Still, figures: QualityFigures | None, *, approved: bool) -> None:
        s = self.session
        assert s.operator and s.patient and s.consent
        capture_id = uuid.uuid4()
        try:
            manifest = Manifest(
                capture_id=capture_id,
                device_id=self.station.device_id,
                captured_at=self.wall_clock(),
                station=self.station,
                patient=_patient_ref(s.patient),
                operator=StaffRef(staff_id=s.operator.staff_id),
                chaperone=StaffRef(staff_id=s.chaperone.staff_id) if s.chaperone else None,
                consent=s.consent,
                body_site=s.body_site,
                intimate=s.intimate,
                patient_approved=approved,
                image=_image_info(still),
                quality=figures,
                camera=CameraInfo(
                    model=still.info.model,
                    exposure_time_us=still.info.exposure_time_us,
                    analogue_gain=still.info.analogue_gain,
                    lens_position=still.info.lens_position,
                ),
            )
            self.sender.send(manifest, still)
        except Exception as exc:  # the clinician must know it was not kept, whatever the cause
            self._log("capture.not_queued", capture_id)
            signal = Signal.OUTBOX_FULL if isinstance(exc, OutboxFull) else Signal.NOT_STORED
            self._signal(signal, f"not stored: {exc}")
            return
        finally:
            still.jpeg.wipe()
        s.captures.append(capture_id)
        self._log("capture.sealed", capture_id)
        self._signal(Signal.SENDING, f"capture {str(capture_id)[:8]} sending")

    # -- helpers -----------------------------------------------------------------------------

    def _forget_patient(self) -> None:
        """Clears the patient and all recorded for them; an image shown for approval goes too."""
        self.session.clear_patient()
        if self.display is not None:
            self.display.clear()

    def _refused_wristband_ends_context(self, reason: str) -> None:
        """Rule: a wristband that fails its checks ends the current patient's context.

        Whoever is in front of the camera may no longer be the selected patient (a misprinted
        or another trust's band), so the old context must not be photographed into.
        """
        self._log("patient.cleared_by_bad_wristband")
        self._forget_patient()
        self._leave_to_patient_or_operator()
        self._refuse(f"{reason}; the previous patient was cleared: scan a valid wristband")

    def _leave_approval(self) -> None:
        self.session.drop_pending()
        if self.display is not None:
            self.display.clear()
        if self.step is Step.NEED_APPROVAL:
            self._enter(Step.READY)

    def _leave_to_patient_or_operator(self) -> None:
        self._enter(Step.NEED_PATIENT if self.session.operator else Step.NEED_OPERATOR)

    def _enter(self, step: Step) -> None:
        self.step = step

    def _refuse(self, reason: str) -> None:
        self._signal(Signal.REFUSED, reason)

    def _signal(self, signal: Signal, detail: str | None = None) -> None:
        self.indicator.show(signal, detail)

    def _log(self, event: str, capture_id: uuid.UUID | None = None) -> None:
        # Allow-listed fields only: never the patient, their name or the image.
        s = self.session
        extra: dict[str, str] = {"step": self.step.value}
        if s.operator is not None:
            extra["operator"] = s.operator.staff_id
        if s.consent is not None:
            extra["consent_kind"] = s.consent.kind
        if capture_id is not None:
            extra["capture_id"] = str(capture_id)
        log.info(event, extra=extra)


def _expected(step: Step) -> str:
    return {
        Step.NEED_OPERATOR: "scan your staff badge first",
        Step.NEED_PATIENT: "scan the patient's wristband",
        Step.NEED_CONSENT: "scan a consent card",
        Step.NEED_DECIDER: "scan the badge of the clinician who made the best-interests decision",
        Step.NEED_CHAPERONE: "scan the chaperone's badge",
        Step.READY: "that card is not used now: press capture, or scan a body-site card",
        Step.NEED_APPROVAL: "show the patient the image, then scan approve or discard",
        Step.CLOSED: "the station is shutting down",
    }[step]


# What the station asks for at each step, shown again when the operator's badge is re-scanned.
_PROMPT: dict[Step, tuple[Signal, str]] = {
    Step.NEED_OPERATOR: (Signal.NEED_OPERATOR, "scan your staff badge"),
    Step.NEED_PATIENT: (Signal.NEED_PATIENT, "scan the patient's wristband"),
    Step.NEED_CONSENT: (Signal.NEED_CONSENT, "scan the consent card"),
    Step.NEED_DECIDER: (Signal.NEED_CONSENT, "scan the badge of the clinician who decided"),
    Step.NEED_CHAPERONE: (Signal.NEED_CHAPERONE, "scan the chaperone's badge"),
    Step.READY: (Signal.READY_TO_CAPTURE, "ready: press capture"),
    Step.NEED_APPROVAL: (Signal.NEED_APPROVAL, "show the patient: approve or discard"),
    Step.CLOSED: (Signal.REFUSED, "the station is shutting down"),
}


def _input_of(scanned: Scanned) -> Input:
    if isinstance(scanned, Staff):
        return Input.STAFF
    if isinstance(scanned, Patient):
        return Input.PATIENT
    assert isinstance(scanned, Command)
    card = scanned.card
    if isinstance(
        card, cards.ExplicitConsentCard | cards.ParentalConsentCard | cards.ImpliedConsentCard
    ):
        return Input.CONSENT
    return {
        cards.BestInterestsCard: Input.BEST_INTERESTS,
        cards.BodySiteCard: Input.BODY_SITE,
        cards.IntimateCard: Input.INTIMATE,
        cards.CaptureCard: Input.CAPTURE,
        cards.ApproveCard: Input.APPROVE,
        cards.DiscardCard: Input.DISCARD,
        cards.CancelCard: Input.CANCEL,
        cards.DoneCard: Input.DONE,
    }[type(card)]


def _patient_ref(patient: Patient) -> PatientRef:
    return PatientRef(
        scheme=patient.scheme,
        identifier=patient.identifier,
        authority=patient.authority,
        source=patient.source,  # type: ignore[arg-type]
        name=patient.name,
        birth_date=patient.birth_date,
    )


def _image_info(still: Still) -> ImageInfo:
    view = still.jpeg.view()
    return ImageInfo(
        media_type="image/jpeg",
        width=still.width,
        height=still.height,
        size=len(view),
        sha256=hashlib.sha256(view).hexdigest(),
    )


W = Workflow
# step -> input -> what it does. Inputs a step does not list are refused and change nothing.
TRANSITIONS: dict[Step, dict[Input, Handler]] = {
    Step.NEED_OPERATOR: {Input.STAFF: W._operator},
    Step.NEED_PATIENT: {Input.STAFF: W._operator, Input.PATIENT: W._patient},
    Step.NEED_CONSENT: {Input.CONSENT: W._consent, Input.BEST_INTERESTS: W._best_interests},
    Step.NEED_DECIDER: {Input.STAFF: W._decider},
    Step.NEED_CHAPERONE: {Input.STAFF: W._chaperone},
    Step.READY: {
        Input.CAPTURE: W._capture,
        Input.BODY_SITE: W._body_site,
        Input.INTIMATE: W._intimate,
        Input.CONSENT: W._consent,
        Input.BEST_INTERESTS: W._best_interests,
    },
    Step.NEED_APPROVAL: {Input.APPROVE: W._approve, Input.DISCARD: W._discard},
    Step.CLOSED: {},
}
# Accepted at every step once an operator is signed in (a new wristband, cancel, done).
ANY_STEP: dict[Input, Handler] = {
    Input.STAFF: W._operator,  # a different badge: a new operator, and a fresh start
    Input.PATIENT: W._patient,
    Input.CANCEL: W._cancel,
    Input.DONE: W._done,
}
# Specific refusals where the generic "expected" message would not say enough.
_NOT_NOW: dict[tuple[Step, Input], str] = {
    (Step.NEED_OPERATOR, Input.PATIENT): "scan your staff badge before the wristband",
    (Step.NEED_PATIENT, Input.CONSENT): "scan the wristband before the consent card",
    (Step.NEED_PATIENT, Input.CAPTURE): "no patient: scan the wristband",
    (Step.NEED_CONSENT, Input.CAPTURE): "no consent recorded: scan a consent card",
    (Step.NEED_APPROVAL, Input.CAPTURE): "approve or discard the image shown first",
    (Step.NEED_OPERATOR, Input.CAPTURE): "no operator: scan your staff badge",
}
