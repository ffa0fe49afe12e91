"""Run by tests/test_hardening.py in a child process: the station's hardening, then a capture.

Audit hooks cannot be removed (PEP 578) and the station's has no off switch, so it is installed
here, in a process of its own, never in pytest's (which writes files itself). The child hardens
itself exactly as `photosafe run` does, runs a whole capture cycle (simulated camera with a
canary, the workflow, the quality gate, HPKE sealing into the RAM outbox), opens the sealed
captures as the gateway would (in memory), then tries every kind of disk write on purpose and a
few things that must stay allowed. It prints one JSON object: what happened.

    python tests/hardening_child.py <folder>   (<folder> holds existing.txt; nothing may change)
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
import socket
import ssl
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from keys import shared_pki
from pipeline import CAPTURE, CONSENT, OPERATOR, Station, sealing_sender
from station_runner import made_up_patient

from photosafe.daemon.hardening import harden, is_dumpable
from photosafe.drivers.camera_simulated import SimulatedCamera, com_segment
from photosafe.protocol.envelope import DeviceTrust, key_id, open_sealed

CANARY = b"hardening-child canary \x00\xff\x10"


class Kept(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.events: list[tuple[str, str | None]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.events.append((str(record.msg), getattr(record, "audit_event", None)))


def attempt(action: Callable[[], object]) -> str:
    try:
        action()
    except PermissionError:
        return "refused"
    return "allowed"


def main(folder: Path) -> dict[str, object]:
    kept = Kept()
    root = logging.getLogger()
    root.addHandler(kept)
    root.setLevel(logging.INFO)
    existing = folder / "existing.txt"

    hardened = harden(mlockall=True)
    result: dict[str, object] = {
        "pid": os.getpid(),
        "dumpable": is_dumpable(),
        "core_limit": list(hardened.core_limit),
        "memory_locked": hardened.memory_locked,
        "problems": list(hardened.problems),
    }

    camera = SimulatedCamera(640, 480, canary=CANARY)
    camera.start()
    sender, delivery = sealing_sender()
    station = Station(camera, sender)
    patient = made_up_patient(random.Random(7))
    station.scan(OPERATOR, patient.wristband(), CONSENT, CAPTURE, CAPTURE)
    result["signals"] = [signal.name for signal in station.indicator.signals]
    result["refused_during_cycle"] = hardened.guard.total
    pki = shared_pki()
    recipients = {key_id(pki.recipient.public_key()): pki.recipient}
    opened = [
        open_sealed(entry.sealed, recipient_keys=recipients, trust=DeviceTrust(pki.ca.cert))
        for entry in delivery.outbox.clear()
    ]
    result["opened_with_canary"] = sum(com_segment(CANARY) in o.image for o in opened)

    def keylog() -> None:
        ssl.create_default_context().keylog_filename = str(folder / "tls-keys.log")

    def unix_socket(address: str) -> None:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.bind(address)

    def pipe_write() -> None:
        read, write = os.pipe()
        with os.fdopen(write, "wb") as out:
            out.write(b"x")
        os.close(read)

    def tcp_socket() -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))

    result["writes"] = {
        "open(path, 'w')": attempt(lambda: open(folder / "leak.jpg", "w")),  # noqa: SIM115
        "open(path, 'ab')": attempt(lambda: open(existing, "ab")),  # noqa: SIM115
        "open(path, 'r+')": attempt(lambda: open(existing, "r+")),  # noqa: SIM115
        "os.open O_CREAT": attempt(lambda: os.open(folder / "x", os.O_WRONLY | os.O_CREAT)),
        "Path.write_bytes": attempt(lambda: (folder / "y").write_bytes(b"jpeg")),
        "os.rename": attempt(lambda: os.rename(existing, folder / "moved")),
        "os.replace": attempt(lambda: os.replace(existing, folder / "moved")),
        "os.remove": attempt(lambda: os.remove(existing)),
        "os.mkdir": attempt(lambda: os.mkdir(folder / "d")),
        "os.truncate": attempt(lambda: os.truncate(existing, 0)),
        "os.symlink": attempt(lambda: os.symlink(existing, folder / "link")),
        "os.chmod": attempt(lambda: os.chmod(existing, 0o600)),
        "shutil.copyfile": attempt(lambda: shutil.copyfile(existing, folder / "copy")),
        "tempfile.mkstemp": attempt(lambda: tempfile.mkstemp(dir=folder)),
        "tempfile.TemporaryFile": attempt(lambda: tempfile.TemporaryFile(dir=folder)),  # noqa: SIM115
        "/dev/shm file": attempt(lambda: open(f"/dev/shm/photosafe-{os.getpid()}", "wb")),  # noqa: SIM115
        "unix socket bound to a path": attempt(lambda: unix_socket(str(folder / "sock"))),
        "ssl key log file": attempt(keylog),
    }
    result["allowed"] = {
        "read a file": attempt(existing.read_bytes),
        "write /dev/null": attempt(lambda: open("/dev/null", "w").write("x")),  # noqa: SIM115
        "write to a pipe": attempt(pipe_write),
        "abstract unix socket": attempt(lambda: unix_socket(f"\0photosafe-{os.getpid()}")),
        "tcp socket": attempt(tcp_socket),
    }
    result["refused"] = dict(hardened.guard.refused)
    result["logged"] = [event for name, event in kept.events if name == "hardening.write_refused"]
    result["log_events"] = sorted({name for name, _ in kept.events})
    return result


if __name__ == "__main__":
    print(json.dumps(main(Path(sys.argv[1]))))
