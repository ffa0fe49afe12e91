"""The record store ("sink"): file an opened capture once, and only once, by capture id.

    root/
      nhs-9434765919/<capture id>/   image.jpg  manifest.json  device-signature.der
      mrn-RX1-A%2F7/<capture id>/    (an MRN with its issuing authority)
      by-capture/<capture id>  ->  ../<patient>/<capture id>     (which captures are filed)
      .incoming/                     records being written (same filesystem, so rename is atomic)
      .lock                          serialises the short claim-and-rename step between processes

A record is written into `.incoming/`, every file fsynced, then renamed into place: a crash
leaves either the whole record or none of it. A capture id filed once (for any patient) is a
duplicate from then on; the same id with a different manifest is a conflict, never a duplicate,
because "duplicate" tells the station the record holds *its* image.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from photosafe.protocol.envelope import Opened
from photosafe.protocol.manifest import PatientRef

log = logging.getLogger(__name__)

IMAGE = "image.jpg"
MANIFEST = "manifest.json"
SIGNATURE = "device-signature.der"
BY_CAPTURE = "by-capture"
INCOMING = ".incoming"
LOCK = ".lock"
STALE_INCOMING_S = 3600  # older half-written records are left-overs of a crash
_SAFE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._")


@dataclass(frozen=True)
class Filed:
    """Where a capture went. `record` is opaque and carries no patient data."""

    record: str
    duplicate: bool


class CaptureConflict(Exception):
    """This capture id is already filed with a different manifest; nothing was filed."""


class SinkRejected(Exception):
    """The record store refuses this capture for good (a PACS refused it, or it cannot be made
    into a valid record): answered `rejected` with the message, which names no patient data."""


class Sink(Protocol):
    def store(self, opened: Opened) -> Filed:
        """File the capture durably, or raise: OSError when the store failed and a later try may
        work (no ack: the station retries), SinkRejected or CaptureConflict when it never will."""
        ...


def patient_folder(patient: PatientRef) -> str:
    """`<scheme>-<identifier>` (`-<authority>` before the identifier for MRNs), escaped so
    that different patients never share a folder and no name can climb out of the root."""
    parts = [patient.scheme.value]
    if patient.authority:
        parts.append(_escape(patient.authority))
    parts.append(_escape(patient.identifier))
    return "-".join(parts)


def _escape(text: str) -> str:
    # '-' is escaped too, so it only ever separates parts; '%' is escaped, so this is injective.
    return "".join(ch if ch in _SAFE else "".join(f"%{b:02X}" for b in ch.encode()) for ch in text)


class FolderSink:
    """Files records as folders under `root` (which must exist)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        for folder in (self.root / BY_CAPTURE, self.root / INCOMING):
            folder.mkdir(mode=0o700, exist_ok=True)
        self._sweep_incoming()

    def store(self, opened: Opened) -> Filed:
        capture = str(opened.header.capture)
        record = f"folder:{capture}"
        patient = patient_folder(opened.manifest.patient)
        marker = self.root / BY_CAPTURE / capture
        final = self.root / patient / capture

        if self._filed(marker, opened, locked=False):  # the common replay: no writing at all
            return Filed(record, duplicate=True)
        staged = self._stage(opened)
        try:
            with self._locked():
                if self._filed(marker, opened, locked=True):
                    return Filed(record, duplicate=True)
                with contextlib.suppress(FileExistsError):
                    (self.root / patient).mkdir(mode=0o700)
                    _fsync_dir(self.root)  # a new patient folder must survive a crash too
                # Claim the id before the rename: a marker whose record is missing can only be
                # a crash's left-over while we hold the lock, and `_filed` clears it.
                marker.symlink_to(Path("..") / patient / capture)
                _fsync_dir(marker.parent)
                try:
                    os.rename(staged, final)
                except OSError as exc:
                    if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                        marker.unlink()
                        raise
                    # Filed before a crash lost its marker: the marker now points at it.
                    _check_same(final, opened)
                    return Filed(record, duplicate=True)
                _fsync_dir(final.parent)
                _fsync_dir(staged.parent)
                return Filed(record, duplicate=False)
        finally:
            shutil.rmtree(staged, ignore_errors=True)

    def _filed(self, marker: Path, opened: Opened, *, locked: bool) -> bool:
        """True if this capture is filed; CaptureConflict if its id is filed with another one."""
        if not marker.is_symlink():
            return False
        target = marker.parent / os.readlink(marker)
        if not target.is_dir():
            # Claimed but not renamed: outside the lock another process may be half way, so
            # this only means "not filed yet"; inside it, the marker is a crash's left-over.
            if locked:
                marker.unlink()
            return False
        _check_same(target, opened)
        return True

    def _stage(self, opened: Opened) -> Path:
        staged = self.root / INCOMING / f"{opened.header.capture}.{uuid.uuid4().hex}"
        staged.mkdir(mode=0o700)
        try:
            for name, data in (
                (IMAGE, opened.image),
                (MANIFEST, opened.manifest_bytes),
                (SIGNATURE, opened.signature),
            ):
                _write_synced(staged / name, data)
            _fsync_dir(staged)
        except BaseException:
            shutil.rmtree(staged, ignore_errors=True)
            raise
        return staged

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        # flock on a fresh open file: excludes other processes and other threads alike.
        fd = os.open(self.root / LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _sweep_incoming(self) -> None:
        cutoff = time.time() - STALE_INCOMING_S
        for entry in (self.root / INCOMING).iterdir():
            with contextlib.suppress(OSError):
                if entry.lstat().st_mtime < cutoff:
                    shutil.rmtree(entry)
                    log.warning("sink.stale_incoming_removed", extra={"entry": entry.name})


def _check_same(record: Path, opened: Opened) -> None:
    try:
        filed = (record / MANIFEST).read_bytes()
    except FileNotFoundError:
        filed = b""
    if filed != opened.manifest_bytes:
        raise CaptureConflict("capture id already filed with a different manifest")


def _write_synced(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
