"""Filing captures into a PACS as DICOM VL Photographic Images: DICOMweb STOW-RS or DIMSE C-STORE.

    StowSink(url, ...)                               STOW-RS (what IHE Web Image Capture uses)
    CStoreSink(host, port, called_aet, calling_aet)  C-STORE over a DICOM association

Both are `Sink`s: `store(opened)` builds the instance (`photosafe.gateway.dicom`), validates it,
and answers `Filed("dicom:<SOP Instance UID>", duplicate)` only once the PACS confirmed it holds
the instance: a STOW-RS response naming it in ReferencedSOPSequence, or a C-STORE success.

What becomes of the ack:
- PACS down, unreachable, timing out, out of resources, answering 5xx, refusing our credentials
  or association, or not confirming the store: `PacsUnavailable` (an OSError). The handler sends
  no ack, so the station publishes the capture again until its own expiry. Never `stored`.
- PACS refuses this instance for good (STOW-RS failure reason or C-STORE status 0xA9xx "does not
  match SOP class", 0xCxxx "cannot understand", 0x0122 SOP class not supported, 0x0124 not
  authorised; HTTP 400 / 409 / 415 without a transient reason), or the capture cannot make a valid
  instance (`dicom.InvalidInstance`): `PacsRefused` / `InvalidInstance`, both `SinkRejected`, so
  the ack is `rejected` with the reason.
- C-STORE warnings (0xB000 coercion of data elements, 0xB006 elements discarded, 0xB007 data set
  does not match SOP class) and STOW-RS WarningReason: the PACS stored the instance (perhaps
  changed), so the ack is `stored`, and `pacs.store_warning` is logged with the status.
  Answering `rejected` would make the clinician retake a photo the PACS already holds.

Duplicates, and trusting the PACS. The UIDs are derived from the capture id, so a replay is the
same instance. But a PACS answers a re-store of an instance it holds as a plain success (Orthanc
does), which cannot tell `stored` from `duplicate`; Orthanc files a re-store with *another*
patient id as a second instance under the same SOP Instance UID; and Orthanc 1.10 answers both
STOW-RS and C-STORE with success for an instance its ReceivedInstanceFilter drops. So with
`verify` (the default) the sink queries the PACS (WADO-RS instance metadata, or a C-FIND at IMAGE
level in the same association) before and after the store:
- before, not held: store it; held with the same manifest digest (private element 0011,xx01 of
  "PhotoSafe 1") or, where the PACS dropped private elements, the same patient id, issuer and
  acquisition time: `duplicate=True`, nothing sent; held with another manifest: `CaptureConflict`
  (`rejected`), nothing sent.
- after: the PACS must show the instance as ours, or the store is not confirmed
  (`PacsUnavailable`: no ack; the station's retry finds it if the PACS was only slow to ingest).
Two gateways storing the same replay at the same moment may both answer `stored`; both are true.
Without `verify` (a PACS that takes no queries from the gateway) the store's own answer is taken,
a re-store is answered `stored`, a reused capture id is not detected, and a C-STORE status 0x0111
(duplicate SOP instance, which some PACS answer) is taken as `duplicate`.

Logs carry event names, SOP Instance UIDs, statuses and HTTP codes; never patient data.
"""

from __future__ import annotations

import contextlib
import logging
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import requests
from dicomweb_client.api import DICOMwebClient
from pydicom.dataset import Dataset
from pydicom.uid import JPEGBaseline8Bit, VLPhotographicImageStorage
from pynetdicom import AE, evt
from pynetdicom.association import Association
from pynetdicom.sop_class import (  # type: ignore[attr-defined]  # generated at import time
    StudyRootQueryRetrieveInformationModelFind,
)
from pynetdicom.status import code_to_category

from photosafe.gateway import dicom
from photosafe.gateway.sink import CaptureConflict, Filed, SinkRejected
from photosafe.protocol.envelope import Opened

log = logging.getLogger(__name__)
# pynetdicom logs every C-FIND identifier (patient ids among them) at INFO: never in our logs.
logging.getLogger("pynetdicom").setLevel(logging.WARNING)

DEFAULT_TIMEOUT_S = 20.0
_DUPLICATE_SOP_INSTANCE = 0x0111
_PERMANENT = (0x0122, 0x0124)  # SOP class not supported; not authorised
_STORE_WARNINGS = {0xB000: "coercion of data elements", 0xB006: "elements discarded",
                   0xB007: "data set does not match SOP class"}  # fmt: skip


class PacsUnavailable(ConnectionError):
    """The PACS could not be reached or did not confirm the store; try again later."""


class PacsRefused(SinkRejected):
    """The PACS refused this instance; the message says how (a status, never patient data)."""


@dataclass(frozen=True)
class Held:
    """What the PACS says about the instance it holds under our SOP Instance UID."""

    digest: str | None
    patient_id: str | None
    issuer: str | None
    acquired: str | None

    @classmethod
    def of(cls, ds: Dataset) -> Held:
        def text(value: Any) -> str | None:
            if value is None:
                return None
            if isinstance(value, bytes):  # a C-FIND answers private elements as UN
                value = value.decode("ascii", "replace")
            return str(value).strip(" \x00") or None

        try:
            digest = text(ds.private_block(dicom.PRIVATE_GROUP, dicom.PRIVATE_CREATOR)[
                dicom.PRIVATE_MANIFEST_SHA256].value)  # fmt: skip
        except KeyError:
            digest = None
        return cls(
            digest=digest,
            patient_id=text(ds.get("PatientID")),
            issuer=text(ds.get("IssuerOfPatientID")),
            acquired=text(ds.get("AcquisitionDateTime")),
        )

    def same_capture(self, instance: Dataset, digest: str) -> bool:
        if self.digest is not None:
            return self.digest == digest
        ours = Held.of(instance)
        return (self.patient_id, self.issuer, self.acquired) == (
            ours.patient_id,
            ours.issuer,
            ours.acquired,
        )


class _Connection(Protocol):
    def lookup(self, instance: Dataset) -> list[Held]:
        """What the PACS holds under the instance's SOP Instance UID (usually 0 or 1)."""
        ...

    def send(self, instance: Dataset) -> bool:
        """Store; True if the PACS answered that it already held the instance."""
        ...


class _PacsSink:
    """The decision common to both transports; subclasses open a `_Connection`."""

    def __init__(self, *, verify: bool, software_version: str | None) -> None:
        self.verify = verify
        self._software_version = software_version

    def store(self, opened: Opened) -> Filed:
        instance = dicom.build_instance(opened, software_version=self._software_version)
        dicom.validate(instance)
        uid = str(instance.SOPInstanceUID)
        digest = dicom.manifest_digest(opened)
        with self._connect() as connection:
            if self.verify and self._held(connection, instance, digest):
                _event(logging.INFO, "pacs.already_held", sop=uid)
                return Filed(f"dicom:{uid}", duplicate=True)
            duplicate = connection.send(instance)
            if self.verify and not self._held(connection, instance, digest):
                _event(logging.WARNING, "pacs.store_unconfirmed", sop=uid)
                raise PacsUnavailable("the PACS answered success but does not show the instance")
        return Filed(f"dicom:{uid}", duplicate=duplicate)

    @staticmethod
    def _held(connection: _Connection, instance: Dataset, digest: str) -> bool:
        """True if the PACS holds this capture's instance; CaptureConflict if it holds another
        capture under the same SOP Instance UID."""
        held = connection.lookup(instance)
        if not all(h.same_capture(instance, digest) for h in held):
            raise CaptureConflict(
                "the PACS holds this capture id's instance with a different manifest"
            )
        return bool(held)

    def _connect(self) -> contextlib.AbstractContextManager[_Connection]:
        raise NotImplementedError


def _event(level: int, name: str, **fields: object) -> None:
    """One log line per event, as the service writes them: a stable name, then key=value."""
    text = " ".join([name, *(f"{k}={v}" for k, v in fields.items() if v is not None)])
    log.log(level, text, extra={"event": name, **fields})


def _failure(status: int, via: str, uid: str) -> Exception:
    """A DICOM failure status as the exception the handler maps to an answer."""
    text = f"{via} status {status:#06x}"
    permanent = 0xA900 <= status <= 0xA9FF or 0xC000 <= status <= 0xCFFF or status in _PERMANENT
    _event(logging.WARNING, "pacs.store_failed", via=via, status=f"{status:#06x}", sop=uid)
    return PacsRefused(text) if permanent else PacsUnavailable(f"{text} (transient)")


def _warned(status: int, via: str, uid: str) -> None:
    meaning = _STORE_WARNINGS.get(status, "warning")
    _event(
        logging.WARNING,
        "pacs.store_warning",
        via=via,
        status=f"{status:#06x}",
        meaning=repr(meaning),
        sop=uid,
    )


# -- DICOMweb STOW-RS -------------------------------------------------------------------------


class StowSink(_PacsSink):
    """STOW-RS to `url` (the DICOMweb root, e.g. http://pacs:8042/dicom-web)."""

    def __init__(
        self,
        url: str,
        *,
        username: str | None = None,
        password: str | None = None,
        token: str | None = None,
        ca_file: Path | None = None,
        timeout: float = DEFAULT_TIMEOUT_S,
        verify: bool = True,
        software_version: str | None = None,
    ) -> None:
        super().__init__(verify=verify, software_version=software_version)
        self.url = url.rstrip("/")
        session = requests.Session()
        if username is not None:
            session.auth = (username, password or "")
        if ca_file is not None:
            session.verify = str(ca_file)
        headers = {"Authorization": f"Bearer {token}"} if token else None
        self._client = DICOMwebClient(self.url, session=session, headers=headers, timeout=timeout)
        self._client.set_http_retry_params(retry=False)  # the station retries; never block here

    @contextlib.contextmanager
    def _connect(self) -> Iterator[_Connection]:
        yield self

    def lookup(self, instance: Dataset) -> list[Held]:
        try:
            metadata = self._client.retrieve_instance_metadata(
                str(instance.StudyInstanceUID),
                str(instance.SeriesInstanceUID),
                str(instance.SOPInstanceUID),
            )
        except requests.HTTPError as exc:
            if exc.response is not None and exc.response.status_code == 404:
                return []
            raise self._unavailable("WADO-RS metadata", exc) from exc
        except IndexError:  # an empty answer (204): not held
            return []
        except requests.RequestException as exc:
            raise self._unavailable("WADO-RS metadata", exc) from exc
        return [Held.of(Dataset.from_json(_identifying(metadata)))]

    def send(self, instance: Dataset) -> bool:
        uid = str(instance.SOPInstanceUID)
        try:
            response = self._client.store_instances([instance])
        except requests.HTTPError as exc:
            status = exc.response.status_code if exc.response is not None else 0
            body = _response_dataset(exc.response)
            for item in body.get("FailedSOPSequence", []):
                if item.get("ReferencedSOPInstanceUID") == uid and "FailureReason" in item:
                    raise _failure(int(item.FailureReason), "STOW-RS", uid) from exc
            if status in (400, 409, 415):
                _event(logging.WARNING, "pacs.store_failed", via="STOW-RS", http=status, sop=uid)
                raise PacsRefused(f"STOW-RS answered HTTP {status}") from exc
            raise self._unavailable("STOW-RS", exc) from exc
        except requests.RequestException as exc:
            raise self._unavailable("STOW-RS", exc) from exc
        for item in response.get("FailedSOPSequence", []):
            if item.get("ReferencedSOPInstanceUID") == uid:
                raise _failure(int(item.get("FailureReason", 0x0110)), "STOW-RS", uid)
        for item in response.get("ReferencedSOPSequence", []):
            if item.get("ReferencedSOPInstanceUID") == uid:
                if "WarningReason" in item:
                    _warned(int(item.WarningReason), "STOW-RS", uid)
                return False
        _event(logging.WARNING, "pacs.store_unconfirmed", via="STOW-RS", sop=uid)
        raise PacsUnavailable("the STOW-RS response does not name the instance as stored")

    def _unavailable(self, what: str, exc: requests.RequestException) -> PacsUnavailable:
        response = getattr(exc, "response", None)
        detail = f"HTTP {response.status_code}" if response is not None else type(exc).__name__
        _event(logging.WARNING, "pacs.unavailable", via=what.replace(" ", "-"), detail=detail)
        return PacsUnavailable(f"{what}: {detail}")


def _identifying(metadata: dict[str, Any]) -> dict[str, Any]:
    """The instance metadata's elements that `Held` reads (no bulk data to resolve)."""
    keep = {"00100020", "00100021", "0008002A"}
    return {k: v for k, v in metadata.items() if k in keep or k.startswith("0011")}


def _response_dataset(response: requests.Response | None) -> Dataset:
    if response is None:
        return Dataset()
    try:
        return Dataset.from_json(response.json())
    except (ValueError, TypeError, KeyError):
        return Dataset()


# -- DIMSE C-STORE ----------------------------------------------------------------------------


class CStoreSink(_PacsSink):
    """C-STORE (and, with `verify`, C-FIND) over one association per capture."""

    def __init__(
        self,
        host: str,
        port: int,
        called_aet: str,
        calling_aet: str = "PHOTOSAFE",
        *,
        timeout: float = DEFAULT_TIMEOUT_S,
        verify: bool = True,
        software_version: str | None = None,
    ) -> None:
        super().__init__(verify=verify, software_version=software_version)
        self.host, self.port = host, port
        self.called_aet, self.calling_aet = called_aet, calling_aet
        self.timeout = timeout

    @contextlib.contextmanager
    def _connect(self) -> Iterator[_Connection]:
        # pynetdicom leaks the socket of a refused TCP connect (it shuts down an unconnected
        # socket, which raises before the close); a plain probe first keeps a PACS that is down
        # from costing a file descriptor per retry.
        try:
            socket.create_connection((self.host, self.port), timeout=self.timeout).close()
        except OSError as exc:
            _event(logging.WARNING, "pacs.unavailable", via="DIMSE", errno=exc.errno)
            raise PacsUnavailable(f"cannot connect to the PACS: {exc.strerror}") from exc
        ae = AE(ae_title=self.calling_aet)
        ae.add_requested_context(VLPhotographicImageStorage, JPEGBaseline8Bit)
        if self.verify:
            ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = self.timeout
        ae.connection_timeout = self.timeout
        assoc = ae.associate(
            self.host,
            self.port,
            ae_title=self.called_aet,
            evt_handlers=[(evt.EVT_CONN_OPEN, _no_delay)],
        )
        if not assoc.is_established:
            how = "rejected" if assoc.is_rejected else "not established"
            _event(logging.WARNING, "pacs.unavailable", via="DIMSE", association=how)
            raise PacsUnavailable(f"the PACS association was {how}")
        try:
            yield _Association(assoc)
        except BaseException:
            assoc.abort()
            raise
        else:
            assoc.release()


def _no_delay(event: evt.Event) -> None:
    """Nagle costs ~40 ms per DIMSE message and pynetdicom leaves it on (DESIGN section 6)."""
    sock = event.assoc.dul.socket.socket if event.assoc.dul.socket else None
    if isinstance(sock, socket.socket):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class _Association:
    def __init__(self, assoc: Association) -> None:
        self._assoc = assoc

    def lookup(self, instance: Dataset) -> list[Held]:
        # A PACS may take the Private Creator as a matching key (Orthanc does), so an instance
        # whose private elements it dropped matches only a query without them.
        return self._find(instance, digest=True) or self._find(instance, digest=False)

    def _find(self, instance: Dataset, *, digest: bool) -> list[Held]:
        query = Dataset()
        query.QueryRetrieveLevel = "IMAGE"
        for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
            setattr(query, keyword, instance[keyword].value)
        for keyword in ("PatientID", "IssuerOfPatientID", "AcquisitionDateTime"):
            setattr(query, keyword, "")
        if digest:
            block = query.private_block(dicom.PRIVATE_GROUP, dicom.PRIVATE_CREATOR, create=True)
            block.add_new(dicom.PRIVATE_MANIFEST_SHA256, "LO", "")
        held: list[Held] = []
        try:
            answers = list(
                self._assoc.send_c_find(query, StudyRootQueryRetrieveInformationModelFind)
            )
        except ValueError as exc:  # the PACS accepted no C-FIND context
            raise PacsUnavailable(
                "the PACS takes no C-FIND from the gateway (or set verify = false)"
            ) from exc
        for status, identifier in answers:
            code = int(status.get("Status", -1)) if status else -1
            category = code_to_category(code) if code >= 0 else "None"
            if category == "Pending" and identifier is not None:
                held.append(Held.of(identifier))
            elif category != "Success":
                _event(logging.WARNING, "pacs.unavailable", via="C-FIND", status=hex(code))
                raise PacsUnavailable(f"C-FIND answered {hex(code)}")
        return held

    def send(self, instance: Dataset) -> bool:
        uid = str(instance.SOPInstanceUID)
        contexts = [
            c
            for c in self._assoc.accepted_contexts
            if c.abstract_syntax == VLPhotographicImageStorage
            and c.transfer_syntax
            and JPEGBaseline8Bit in c.transfer_syntax
        ]
        if not contexts:
            _event(logging.WARNING, "pacs.store_failed", via="C-STORE", context="none", sop=uid)
            raise PacsRefused("the PACS accepts no VL Photographic Image in JPEG Baseline")
        status = self._assoc.send_c_store(instance)
        if "Status" not in status:  # no answer: timeout, abort, lost connection
            _event(logging.WARNING, "pacs.unavailable", via="C-STORE", response="none", sop=uid)
            raise PacsUnavailable("the PACS did not answer the C-STORE")
        code = int(status.Status)
        if code == 0x0000:
            return False
        if code == _DUPLICATE_SOP_INSTANCE:
            return True
        if code_to_category(code) == "Warning":
            _warned(code, "C-STORE", uid)
            return False
        raise _failure(code, "C-STORE", uid)
