"""The PACS sinks against a real Orthanc (Debian's orthanc + orthanc-dicomweb), read back by REST.

Each capture goes through `CaptureHandler` (so the signed ack is what a station would get) into
Orthanc over STOW-RS or C-STORE; the tests then ask Orthanc's own REST API what it holds. One
Orthanc serves the module (it starts in ~0.2 s but takes seconds to stop); each test empties it.
A PACS that refuses with a standard STOW-RS failure is a small loopback HTTP server (Orthanc never
answers one: its filters drop instances and still answer success, see the "picky" test).
"""

from __future__ import annotations

import io
import json
import logging
import threading
import uuid
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pydicom
import pytest
from broker import Broker
from dicomweb_client.api import DICOMwebClient
from mqtt_clients import ClientPool
from orthanc import Orthanc, running_orthanc
from photos import (
    DCIODVFY,
    PHOTO,
    dciodvfy,
    handler,
    manifest,
    open_capture,
    padded,
    seal,
    verified,
)
from test_gateway_broker import Station

from photosafe.gateway.config import load_config
from photosafe.gateway.dicom import build_instance, instance_uids
from photosafe.gateway.service import Gateway
from photosafe.gateway.sink import Sink
from photosafe.gateway.sink_pacs import CStoreSink, PacsUnavailable, StowSink
from photosafe.protocol import envelope, topics
from photosafe.protocol.ack import AckStatus
from photosafe.protocol.manifest import BodySite, Laterality, PatientRef, PatientScheme
from photosafe.provisioning.site_configs import GATEWAY_AET, SinkSettings, gateway_config_toml

NHS = "9434765919"
TOPIC = topics.capture("ward-a-01")
FACE = BodySite(snomed_code="89545001", label="Face", laterality=Laterality.RIGHT)
OTHER_PATIENT = PatientRef(scheme=PatientScheme.NHS, identifier="9999999999", source="nhs-number")
Transport = Callable[..., Sink]


@pytest.fixture(scope="module")
def orthanc_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Orthanc]:
    with running_orthanc(tmp_path_factory.mktemp("orthanc")) as pacs:
        yield pacs


@pytest.fixture
def orthanc(orthanc_server: Orthanc) -> Orthanc:
    """The module's Orthanc, running and empty."""
    if not orthanc_server.running:
        orthanc_server.start()
    orthanc_server.clear()
    return orthanc_server


def stow(pacs: Orthanc, *, verify: bool = True) -> StowSink:
    return StowSink(pacs.dicomweb, timeout=5, verify=verify)


def cstore(pacs: Orthanc, *, verify: bool = True) -> CStoreSink:
    return CStoreSink("127.0.0.1", pacs.dicom_port, pacs.aet, GATEWAY_AET, timeout=5, verify=verify)


TRANSPORTS = pytest.mark.parametrize("transport", [stow, cstore], ids=["stow-rs", "c-store"])


@TRANSPORTS
def test_a_capture_is_filed_and_reads_back_from_orthanc(
    orthanc: Orthanc, transport: Transport, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    caplog.set_level(logging.INFO)
    capture = uuid.uuid4()
    sealed = seal(manifest(capture=capture, body_site=FACE))
    receipt = verified(handler(transport(orthanc)).handle_capture(TOPIC, sealed, None))
    uids = instance_uids(capture)
    assert (receipt.status, receipt.record) == (AckStatus.STORED, f"dicom:{uids.instance}")

    (instance,) = orthanc.instances()
    tags = orthanc.tags(instance)
    assert (tags["PatientID"], tags["IssuerOfPatientID"]) == (NHS, "NHS")
    assert tags["AnatomicRegionSequence"][0]["CodeValue"] == "89545001"
    assert tags["AnatomicRegionSequence"][0]["CodingSchemeDesignator"] == "SCT"
    assert tags["ImageLaterality"] == "R"
    assert tags["RecognizableVisualFeatures"] == "YES"
    assert (tags["StudyInstanceUID"], tags["SeriesInstanceUID"], tags["SOPInstanceUID"]) == (
        uids.study,
        uids.series,
        uids.instance,
    )
    assert tags["SOPClassUID"] == "1.2.840.10008.5.1.4.1.1.77.1.4"
    assert orthanc.frame(instance) == padded(PHOTO)  # the station's JPEG, not re-encoded
    assert NHS not in caplog.text
    stored = orthanc.file(instance)  # a Part 10 file (pydicom would need force= otherwise)
    assert pydicom.dcmread(io.BytesIO(stored)).SOPInstanceUID == uids.instance
    if DCIODVFY is not None:
        assert dciodvfy(stored, tmp_path) == []


@TRANSPORTS
def test_a_duplicate_delivery_leaves_one_instance(orthanc: Orthanc, transport: Transport) -> None:
    sealed = seal(manifest(body_site=FACE))
    gateway = handler(transport(orthanc))
    assert verified(gateway.handle_capture(TOPIC, sealed, None)).status is AckStatus.STORED
    again = verified(gateway.handle_capture(TOPIC, sealed, None))
    assert (again.status, again.is_stored) == (AckStatus.DUPLICATE, True)
    # the other transport sees the same instance: the UIDs are the capture's, not the sink's
    other = cstore if transport is stow else stow
    replay = verified(handler(other(orthanc)).handle_capture(TOPIC, sealed, None))
    assert replay.status is AckStatus.DUPLICATE
    assert len(orthanc.instances()) == 1


@TRANSPORTS
def test_a_capture_id_reused_for_another_patient_is_rejected(
    orthanc: Orthanc, transport: Transport
) -> None:
    capture = uuid.uuid4()
    gateway = handler(transport(orthanc))
    first = seal(manifest(capture=capture))
    assert verified(gateway.handle_capture(TOPIC, first, None)).status is AckStatus.STORED
    reused = seal(manifest(capture=capture, patient=OTHER_PATIENT))
    receipt = verified(gateway.handle_capture(TOPIC, reused, None))
    assert receipt.status is AckStatus.REJECTED  # "duplicate" would claim its image is filed
    assert receipt.reason is not None
    assert receipt.reason.startswith("CaptureConflict: the PACS holds")
    # Orthanc would have filed a second instance under the same UID for the other patient
    (instance,) = orthanc.instances()
    assert orthanc.tags(instance)["PatientID"] == NHS


@TRANSPORTS
def test_a_pacs_that_drops_private_elements_still_tells_replay_from_reuse(
    orthanc: Orthanc, transport: Transport
) -> None:
    capture = uuid.uuid4()
    filed = open_capture(seal(manifest(capture=capture)))
    instance = build_instance(filed)
    for element in [e for e in instance if e.tag.group == 0x0011]:
        del instance[element.tag]
    DICOMwebClient(orthanc.dicomweb).store_instances([instance])  # as such a PACS keeps it

    sink = transport(orthanc)
    assert sink.store(filed).duplicate  # same patient, issuer and acquisition time
    reused = seal(manifest(capture=capture, patient=OTHER_PATIENT))
    receipt = verified(handler(sink).handle_capture(TOPIC, reused, None))
    assert receipt.status is AckStatus.REJECTED
    assert len(orthanc.instances()) == 1


def test_orthanc_down_means_no_ack_and_the_retry_is_stored(
    orthanc: Orthanc, caplog: pytest.LogCaptureFixture
) -> None:
    sinks = [stow(orthanc), cstore(orthanc)]
    captures = [seal(manifest()) for _ in sinks]
    orthanc.stop()
    for sink, sealed in zip(sinks, captures, strict=True):
        assert handler(sink).handle_capture(TOPIC, sealed, None) is None  # neither stored...
        with pytest.raises(PacsUnavailable):  # ...nor rejected: the station sends it again
            sink.store(open_capture(sealed))
    assert "capture.store_failed" in caplog.text
    orthanc.start()
    for sink, sealed in zip(sinks, captures, strict=True):
        assert verified(handler(sink).handle_capture(TOPIC, sealed, None)).is_stored
    assert len(orthanc.instances()) == 2


@TRANSPORTS
def test_without_verify_a_restore_is_stored_again_and_harmless(
    orthanc: Orthanc, transport: Transport
) -> None:
    gateway, sealed = handler(transport(orthanc, verify=False)), seal(manifest())
    for _ in range(2):
        assert verified(gateway.handle_capture(TOPIC, sealed, None)).status is AckStatus.STORED
    assert len(orthanc.instances()) == 1


def test_an_invalid_capture_is_rejected_with_the_reason_and_never_sent(orthanc: Orthanc) -> None:
    label = "Left forearm, dorsal aspect, two centimetres distal to the olecranon"  # > 64
    site = BodySite(snomed_code="14975008", label=label, laterality=Laterality.LEFT)
    receipt = verified(
        handler(stow(orthanc)).handle_capture(TOPIC, seal(manifest(body_site=site)), None)
    )
    assert receipt.status is AckStatus.REJECTED
    assert receipt.reason == (
        "InvalidInstance: CodeMeaning (LO): The value length (68) exceeds the maximum length "
        "of 64 allowed for VR LO."
    )
    assert orthanc.instances() == []


def test_a_picky_orthanc_refuses_jpeg_and_silently_drops_what_its_filter_refuses(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    script = tmp_path / "filter.lua"
    script.write_text("function ReceivedInstanceFilter(dicom, origin, info)\n  return false\nend\n")
    options = {"JpegTransferSyntaxAccepted": False, "LuaScripts": [str(script)]}
    with running_orthanc(tmp_path / "picky", **options) as pacs:
        # C-STORE: no presentation context for JPEG Baseline: refused, with the reason
        receipt = verified(handler(cstore(pacs)).handle_capture(TOPIC, seal(manifest()), None))
        assert receipt.status is AckStatus.REJECTED
        assert receipt.reason == (
            "PacsRefused: the PACS accepts no VL Photographic Image in JPEG Baseline"
        )
        # STOW-RS: Orthanc answers success and keeps nothing; the read-back catches it
        sealed = seal(manifest())
        assert handler(stow(pacs)).handle_capture(TOPIC, sealed, None) is None
        assert "pacs.store_unconfirmed" in caplog.text
        # ...which is why `verify` is on by default: without it the answer is believed
        trusting = handler(stow(pacs, verify=False)).handle_capture(TOPIC, sealed, None)
        assert verified(trusting).status is AckStatus.STORED
        assert pacs.instances() == []


# -- a PACS answering STOW-RS with a standard failure -------------------------------------------


class _StowAnswers(BaseHTTPRequestHandler):
    """Answers WADO-RS metadata with 404 and STOW-RS with the server's `answer`."""

    def do_GET(self) -> None:
        self.send_response(404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        status, body = self.server.answer  # type: ignore[attr-defined]
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/dicom+json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def stow_server() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _StowAnswers)
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def _failed(uid: str, reason: int) -> dict[str, object]:
    item = {"00081155": {"vr": "UI", "Value": [uid]}, "00081197": {"vr": "US", "Value": [reason]}}
    return {"00081198": {"vr": "SQ", "Value": [item]}}


@pytest.mark.parametrize(
    ("status", "reason", "expected"),
    [
        (409, 0xA900, "PacsRefused: STOW-RS status 0xa900"),  # does not match SOP class
        (409, 0xC000, "PacsRefused: STOW-RS status 0xc000"),  # cannot understand
        (409, 0xA700, None),  # out of resources: try again later
        (200, 0xA700, None),
        (503, None, None),
        (200, None, None),  # a success that does not name the instance is not a confirmation
    ],
)
def test_stow_rs_failures(
    stow_server: ThreadingHTTPServer, status: int, reason: int | None, expected: str | None
) -> None:
    capture = uuid.uuid4()
    uid = instance_uids(capture).instance
    stow_server.answer = (status, _failed(uid, reason) if reason else {})  # type: ignore[attr-defined]
    url = f"http://127.0.0.1:{stow_server.server_address[1]}/dicom-web"
    reply = handler(StowSink(url, timeout=5)).handle_capture(
        TOPIC, seal(manifest(capture=capture)), None
    )
    if expected is None:
        assert reply is None  # no ack: the station retries
    else:
        receipt = verified(reply)
        assert (receipt.status, receipt.reason) == (AckStatus.REJECTED, expected)


# -- end to end: station -> mosquitto -> gateway -> Orthanc -------------------------------------


class PhotoStation(Station):
    """test_gateway_broker's station, sealing a real JPEG."""

    def seal(self, capture: uuid.UUID) -> bytes:
        m = manifest(capture=capture, device=self.device_id, body_site=FACE)
        return envelope.seal(
            m, PHOTO, device_key=self.key, device_cert=self.cert, recipient=self.recipient
        )


def test_station_to_orthanc_through_the_broker(
    broker: Broker, mqtt_clients: ClientPool, orthanc: Orthanc, tmp_path: Path
) -> None:
    config = tmp_path / "gateway.toml"
    sink: SinkSettings = {"kind": "dicomweb", "url": orthanc.dicomweb, "timeout_s": 5}
    config.write_text(gateway_config_toml(broker.site, tmp_path, sink=sink))
    gateway = Gateway(load_config(config))
    gateway.start()
    try:
        station = PhotoStation(broker.site, mqtt_clients, "ward-a-01")
        capture = uuid.uuid4()
        sealed = station.seal(capture)
        station.send(sealed, capture)
        receipt = station.receipt(timeout=10)
        uids = instance_uids(capture)
        assert (receipt.status, receipt.record) == (AckStatus.STORED, f"dicom:{uids.instance}")
        station.send(sealed, capture)  # the ack was lost, say: the station sends it again
        assert station.receipt(timeout=10).status is AckStatus.DUPLICATE
    finally:
        gateway.stop()
    (instance,) = orthanc.instances()
    tags = orthanc.tags(instance)
    assert (tags["PatientID"], tags["SOPInstanceUID"]) == (NHS, uids.instance)
    assert tags["AnatomicRegionSequence"][0]["CodeValue"] == "89545001"
    assert orthanc.frame(instance) == padded(PHOTO)
    assert gateway.counts["stored"] == gateway.counts["duplicate"] == 1
