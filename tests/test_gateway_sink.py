"""The folder record store: whole records or none, each capture id filed once."""

from __future__ import annotations

import errno
import multiprocessing
import os
import threading
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from keys import manifest_for, shared_pki

from photosafe.gateway import sink as sink_module
from photosafe.gateway.sink import BY_CAPTURE, INCOMING, CaptureConflict, Filed, FolderSink
from photosafe.protocol import envelope
from photosafe.protocol.envelope import DeviceTrust, Header, Opened
from photosafe.protocol.manifest import Manifest, PatientRef, PatientScheme

IMAGE = b"\xff\xd8\xff\xe0 a small jpeg " + bytes(range(256)) + b"\xff\xd9"
NHS = "9434765919"


def opened(capture: uuid.UUID | None = None, image: bytes = IMAGE) -> Opened:
    """A capture sealed and opened for real, as the gateway hands it to the sink."""
    p = shared_pki()
    dev = p.device("ward-a-01")
    sealed = envelope.seal(
        manifest_for(image, capture_id=capture or uuid.uuid4()),
        image,
        device_key=dev.key,
        device_cert=dev.cert,
        recipient=p.recipient.public_key(),
    )
    keys = {envelope.key_id(p.recipient.public_key()): p.recipient}
    return envelope.open_sealed(sealed, recipient_keys=keys, trust=DeviceTrust(p.ca.cert))


def for_patient(original: Opened, patient: PatientRef) -> Opened:
    """The same capture id for another patient (a station bug, or a forgery)."""
    manifest = Manifest.from_bytes(original.manifest_bytes).model_copy(update={"patient": patient})
    return Opened(
        original.header,
        manifest,
        manifest.to_bytes(),
        original.signature,
        original.device_cert,
        original.image,
    )


def records(root: Path) -> list[Path]:
    """Every filed capture folder, whatever the patient."""
    return sorted(
        p for p in root.glob("*/*") if p.is_dir() and p.parent.name not in (BY_CAPTURE, INCOMING)
    )


def test_a_record_holds_the_image_exact_manifest_and_signature(tmp_path: Path) -> None:
    capture = opened()
    filed = FolderSink(tmp_path).store(capture)
    assert filed == Filed(f"folder:{capture.header.capture}", duplicate=False)
    assert NHS not in filed.record  # opaque: no patient data goes back to the station
    (record,) = records(tmp_path)
    assert record == tmp_path / f"nhs-{NHS}" / str(capture.header.capture)
    assert (record / "image.jpg").read_bytes() == IMAGE
    assert (record / "manifest.json").read_bytes() == capture.manifest_bytes
    assert (record / "device-signature.der").read_bytes() == capture.signature
    marker = tmp_path / BY_CAPTURE / str(capture.header.capture)
    assert marker.resolve() == record.resolve()
    assert list((tmp_path / INCOMING).iterdir()) == []
    assert (record / "image.jpg").stat().st_mode & 0o077 == 0  # patient data: owner only


def test_a_replay_is_a_duplicate_and_files_nothing(tmp_path: Path) -> None:
    sink, capture = FolderSink(tmp_path), opened()
    assert not sink.store(capture).duplicate
    assert sink.store(capture).duplicate
    assert FolderSink(tmp_path).store(capture).duplicate  # a restarted gateway knows it too
    assert len(records(tmp_path)) == 1


def test_the_same_capture_id_for_another_patient_is_a_conflict(tmp_path: Path) -> None:
    sink, capture = FolderSink(tmp_path), opened()
    sink.store(capture)
    other = PatientRef(scheme=PatientScheme.NHS, identifier="4010232137", source="nhs-number")
    with pytest.raises(CaptureConflict):
        sink.store(for_patient(capture, other))
    assert len(records(tmp_path)) == 1
    assert not (tmp_path / "nhs-4010232137").exists()


@pytest.mark.parametrize(
    ("patient", "folder"),
    [
        (PatientRef(scheme=PatientScheme.NHS, identifier=NHS, source="nhs-number"), f"nhs-{NHS}"),
        (
            PatientRef(
                scheme=PatientScheme.MRN, identifier="../A-7", authority="RX1", source="mrn"
            ),
            "mrn-RX1-..%2FA%2D7",
        ),
        (PatientRef(scheme=PatientScheme.MRN, identifier="A/7", source="mrn"), "mrn-A%2F7"),
    ],
)
def test_patient_folders_are_safe_names(patient: PatientRef, folder: str) -> None:
    assert sink_module.patient_folder(patient) == folder


def test_a_failure_half_way_leaves_no_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_write = sink_module._write_synced

    def failing_write(path: Path, data: bytes) -> None:
        if path.name == "manifest.json":  # the image is already written and synced
            raise OSError(errno.ENOSPC, "No space left on device")
        real_write(path, data)

    sink, capture = FolderSink(tmp_path), opened()
    monkeypatch.setattr(sink_module, "_write_synced", failing_write)
    with pytest.raises(OSError, match="No space"):
        sink.store(capture)
    assert records(tmp_path) == []
    assert list((tmp_path / BY_CAPTURE).iterdir()) == []
    assert list((tmp_path / INCOMING).iterdir()) == []

    monkeypatch.undo()  # the disk has room again: the retry files it, once
    assert not sink.store(capture).duplicate
    assert len(records(tmp_path)) == 1


def test_a_failed_rename_releases_the_claim(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_rename = os.rename

    def failing_rename(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        if INCOMING in str(src):
            raise OSError(errno.EIO, "Input/output error")
        real_rename(src, dst)

    sink, capture = FolderSink(tmp_path), opened()
    monkeypatch.setattr(os, "rename", failing_rename)
    with pytest.raises(OSError, match="Input/output"):
        sink.store(capture)
    monkeypatch.undo()
    assert records(tmp_path) == []
    assert list((tmp_path / BY_CAPTURE).iterdir()) == []
    assert not sink.store(capture).duplicate


def test_a_crash_between_claim_and_rename_does_not_block_filing(tmp_path: Path) -> None:
    sink, capture = FolderSink(tmp_path), opened()
    capture_id = str(capture.header.capture)
    (tmp_path / BY_CAPTURE / capture_id).symlink_to(Path("..") / f"nhs-{NHS}" / capture_id)
    assert not sink.store(capture).duplicate  # the dangling claim is a crash's left-over
    assert len(records(tmp_path)) == 1


def test_a_lost_marker_is_restored_and_the_replay_is_a_duplicate(tmp_path: Path) -> None:
    sink, capture = FolderSink(tmp_path), opened()
    sink.store(capture)
    marker = tmp_path / BY_CAPTURE / str(capture.header.capture)
    marker.unlink()
    assert sink.store(capture).duplicate  # the rename onto the filed record fails
    assert marker.is_symlink()
    assert len(records(tmp_path)) == 1


def test_threads_racing_on_the_same_captures_file_each_once(tmp_path: Path) -> None:
    sink = FolderSink(tmp_path)
    captures = [opened() for _ in range(10)]
    results: list[Filed] = []
    lock = threading.Lock()
    start = threading.Barrier(4)

    def worker() -> None:
        start.wait()
        for capture in captures:
            filed = sink.store(capture)
            with lock:
                results.append(filed)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 40
    assert sum(not r.duplicate for r in results) == 10
    assert len(records(tmp_path)) == 10


def _store_in_process(
    root: str, parts: list[tuple[bytes, bytes, bytes, bytes, bytes]], start: Callable[[], object]
) -> None:
    """Runs in a spawned process: rebuild each capture from bytes and store it."""
    sink = FolderSink(Path(root))
    start()
    for header, manifest, signature, cert, image in parts:
        capture = Opened(
            Header.model_validate_json(header),
            Manifest.from_bytes(manifest),
            manifest,
            signature,
            x509.load_der_x509_certificate(cert),
            image,
        )
        sink.store(capture)


def test_two_processes_racing_file_each_capture_once(tmp_path: Path) -> None:
    captures = [opened() for _ in range(20)]
    parts = [
        (
            c.header.to_bytes(),
            c.manifest_bytes,
            c.signature,
            c.device_cert.public_bytes(serialization.Encoding.DER),
            c.image,
        )
        for c in captures
    ]
    context = multiprocessing.get_context("spawn")
    start = context.Barrier(2)
    processes = [
        context.Process(target=_store_in_process, args=(str(tmp_path), parts, start.wait))
        for _ in range(2)
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join(60)
        assert process.exitcode == 0
        process.close()
    assert len(records(tmp_path)) == 20
    sink = FolderSink(tmp_path)
    assert all(sink.store(c).duplicate for c in captures)
    assert len(list((tmp_path / BY_CAPTURE).iterdir())) == 20
