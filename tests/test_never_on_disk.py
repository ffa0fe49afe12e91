"""Never on disk, proven on the real process (issue 6, "Must hold").

The real station (`photosafe run --simulate`: the simulated camera puts a random canary into
every JPEG, the simulated scanner reads scans from stdin) runs under `strace -f` against a real
mosquitto and a real gateway (in this process, filing into a records folder, which IS expected
to hold the canary: it is the record). Over 26 captures (every 5th out of focus, so the quality
gate refuses it), a cancel card, a done card, a replaced wristband, a patient context that
expires, and a SIGTERM while captures wait for a gateway that has gone away, this test asserts:

- strace saw no file opened for writing (O_WRONLY, O_RDWR, O_CREAT, O_TRUNC, O_APPEND or
  O_TMPFILE; device nodes under /dev excepted) and no rename, unlink, mkdir, truncate or link by
  any thread of the station process;
- the canary bytes and the patients' numbers, names and birth dates are nowhere: not in the test's
  temporary directories (the records folder and the strace log aside), not in the station's
  working, home or temp directory, not in files changed meanwhile under /tmp, /var/tmp or
  /dev/shm, and not in the station's stdout or stderr;
- the station's own audit hook refused nothing.

Scans go to the station through a pipe: a scan file would itself put the patients on disk.
"""

from __future__ import annotations

import os
import random
import re
import signal
import stat
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from broker import Broker
from station_runner import (
    CANCEL,
    CAPTURE,
    CONSENT,
    DONE,
    PHOTOSAFE,
    StationProcess,
    child_pid,
    made_up_patient,
    staff_badge,
    station_env,
)

from photosafe.gateway.config import load_config as load_gateway_config
from photosafe.gateway.service import Gateway
from photosafe.provisioning.site_configs import write_gateway_config, write_station_config

DEVICE = "ward-a-01"
BLUR_EVERY = 5
PATIENT_S = 3.0
# "?": strace does not complain about calls this architecture lacks (aarch64 has no open()).
TRACED = ",".join(
    "?" + name
    for name in (
        "open", "openat", "openat2", "creat", "rename", "renameat", "renameat2", "unlink",
        "unlinkat", "mkdir", "mkdirat", "rmdir", "truncate", "ftruncate", "link", "linkat",
        "symlink", "symlinkat", "mknod", "mknodat",
    )
)  # fmt: skip
_OPENS = frozenset({"open", "openat", "openat2", "creat"})
_WRITE_FLAGS = frozenset({"O_WRONLY", "O_RDWR", "O_CREAT", "O_TRUNC", "O_APPEND", "O_TMPFILE"})
_CALL = re.compile(r"^(\d+)\s+(\w+)\((.*)$")
_QUOTED = re.compile(r'"((?:[^"\\]|\\.)*)"')


def disk_writes(trace: str) -> list[str]:
    """Every traced call that writes to a file system: opened for writing, or any mutation."""
    found = []
    for line in trace.splitlines():
        call = _CALL.match(line)  # "<... openat resumed>" and signal lines do not match
        if call is None:
            continue
        name, args = call.group(2), call.group(3)
        if name in _OPENS:
            path = _QUOTED.search(args)
            target = path.group(1) if path else ""
            flags = set(re.findall(r"\bO_[A-Z]+\b", args))
            writes = name == "creat" or bool(flags & _WRITE_FLAGS)
            device = target.startswith("/dev/") and not target.startswith("/dev/shm")
            if writes and not device:
                found.append(line)
        else:
            found.append(line)  # rename, unlink, mkdir, truncate, link, mknod: all writes
    return found


def files(root: Path, *, skip: tuple[Path, ...], since: float | None = None) -> Iterator[Path]:
    """Regular files under `root` (not following links), optionally changed since `since`."""
    for folder, dirs, names in os.walk(root, onerror=lambda error: None):
        here = Path(folder)
        dirs[:] = [d for d in dirs if here / d not in skip]
        for name in names:
            path = here / name
            if path in skip:
                continue
            try:
                info = path.lstat()
            except OSError:
                continue
            if not stat.S_ISREG(info.st_mode) or info.st_size > 256 * 1024 * 1024:
                continue
            if since is None or max(info.st_mtime, info.st_ctime) >= since:
                yield path


def leaks(paths: Iterator[Path], needles: list[bytes]) -> list[str]:
    found = []
    for path in paths:
        try:
            data = path.read_bytes()
        except OSError:
            continue
        found += [f"{path}: {needle!r}" for needle in needles if needle in data]
    return found


def test_the_station_process_writes_nothing_and_leaves_no_trace(
    broker: Broker, tmp_path: Path
) -> None:
    started = time.time() - 1
    rng = random.Random()
    canary = os.urandom(32)
    patients = [made_up_patient(rng) for _ in range(5)]
    needles = [canary] + [n for p in patients for n in p.needles()]
    needles.append(patients[1].printed_number().encode())
    site = broker.site
    records = tmp_path / "records"
    trace_log = tmp_path / "strace.log"
    cwd, home, tmp = tmp_path / "cwd", tmp_path / "home", tmp_path / "tmp"
    for folder in (cwd, home, tmp):
        folder.mkdir()
    gateway = Gateway(load_gateway_config(write_gateway_config(site, records)))
    gateway.start()
    config = write_station_config(
        site, DEVICE, canary_hex=canary.hex(), patient_timeout_s=PATIENT_S, grace_s=1
    )
    env = station_env(
        HOME=str(home),
        TMPDIR=str(tmp),
        PHOTOSAFE_DRIVERS__SIMULATED_BLUR_EVERY=str(BLUR_EVERY),
        PHOTOSAFE_DRIVERS__CAMERA_WIDTH="640",
        PHOTOSAFE_DRIVERS__CAMERA_HEIGHT="480",
    )
    command: list[str | Path] = [
        "strace",
        "-f",
        "--seccomp-bpf",
        "-e",
        f"trace={TRACED}",
        "-o",
        trace_log,
    ]
    station = StationProcess(
        [*command, PHOTOSAFE, "run", "--config", config, "--simulate"], env=env, cwd=cwd
    )
    stills = sent = refused = 0

    def capture(presses: int) -> None:
        nonlocal stills, sent, refused
        station.feed(*[CAPTURE] * presses)
        for _ in range(presses):
            stills += 1
            if stills % BLUR_EVERY:
                sent += 1
            else:
                refused += 1
        assert station.wait_for("[SENDING]", sent), station.stderr
        assert station.wait_for("out of focus", refused), station.stderr

    try:
        assert station.wait_for("link.up", timeout=30), station.stderr
        pid = child_pid(station.proc.pid)
        station.feed(staff_badge(rng))
        # A cancel card ends the first patient, a done card the second (by printed number).
        station.feed(patients[0].wristband(), CONSENT)
        capture(6)
        station.feed(CANCEL)
        assert station.wait_for("cancelled: scan the next wristband"), station.stderr
        station.feed(patients[1].printed_number(), CONSENT)
        capture(6)
        station.feed(DONE)
        assert station.wait_for("done: scan the next wristband"), station.stderr
        # A new wristband replaces the third patient; the fourth patient's context expires.
        station.feed(patients[2].wristband(), CONSENT)
        capture(5)
        station.feed(patients[3].wristband())
        assert station.wait_for("[NEW_PATIENT]"), station.stderr
        station.feed(CONSENT)
        capture(6)
        assert station.wait_for("[CONTEXT_EXPIRED]", timeout=PATIENT_S + 10), station.stderr
        station.feed(CAPTURE)
        assert station.wait_for("no patient: scan the wristband"), station.stderr
        assert station.wait_for("[STORED]", sent, timeout=30), station.stderr
        filed = sent
        # The gateway goes away; captures wait for it when SIGTERM arrives.
        gateway.stop()
        station.feed(patients[4].wristband(), CONSENT)
        capture(3)
        station.send_signal(signal.SIGTERM, pid)
        assert station.wait(30) == 0, station.stderr
    finally:
        station.close()
        gateway.stop()

    output = station.stderr
    assert stills >= 20 and refused >= 1
    assert f"abandoned {sent - filed}" in output, output
    assert "write_refused 0" in output, output
    assert "hardening.write_refused" not in output
    assert len(list(records.rglob("manifest.json"))) == filed

    trace = trace_log.read_text()
    assert str(config) in trace, "strace did not see the station read its config"
    assert len(set(re.findall(r"^(\d+) ", trace, re.MULTILINE))) > 1, "threads not traced"
    assert disk_writes(trace) == []

    # The search finds what it looks for: the record holds the canary and the patients.
    in_records = leaks(files(records, skip=()), needles)
    assert any(repr(canary) in hit for hit in in_records)
    assert any(repr(patients[0].needles()[0]) in hit for hit in in_records)
    skip = (records, trace_log)
    found = leaks(files(tmp_path, skip=skip), needles)
    for shared in {Path(tempfile.gettempdir()), Path("/var/tmp"), Path("/dev/shm")}:
        if shared.is_dir():
            found += leaks(files(shared, skip=(*skip, tmp_path), since=started), needles)
    assert found == []
    assert list(cwd.iterdir()) == [] and list(home.iterdir()) == [] and list(tmp.iterdir()) == []
    streams = (station.stdout + output).encode()
    assert [needle for needle in needles if needle in streams] == []


def test_the_strace_reading_spots_every_kind_of_write() -> None:
    trace = "\n".join(
        [
            '101 openat(AT_FDCWD, "/etc/photosafe/station.toml", O_RDONLY|O_CLOEXEC) = 3',
            '101 openat(AT_FDCWD, "/dev/fb0", O_RDWR|O_CLOEXEC) = 4',
            '102 openat(AT_FDCWD, "/dev/shm/x", O_RDWR|O_CREAT, 0600 <unfinished ...>',
            "102 <... openat resumed>) = 5",
            '101 openat(AT_FDCWD, "/tmp/a.jpg", O_WRONLY|O_CREAT|O_TRUNC|O_CLOEXEC, 0666) = 6',
            '101 openat2(AT_FDCWD, "/tmp/b", {flags=O_RDWR|O_APPEND, mode=0}, 24) = 7',
            '101 open("/tmp/c", O_RDONLY) = -1 ENOENT (No such file or directory)',
            '101 creat("/tmp/d", 0644) = 8',
            '103 renameat2(AT_FDCWD, "/tmp/e.tmp", AT_FDCWD, "/tmp/e", 0) = 0',
            '103 unlink("/tmp/f") = 0',
            '103 mkdir("/tmp/g", 0777) = 0',
            "103 ftruncate(9, 0) = 0",
            "103 --- SIGTERM {si_signo=SIGTERM, si_code=SI_USER} ---",
            "103 +++ exited with 0 +++",
        ]
    )
    found = [line.split()[1].split("(")[0] for line in disk_writes(trace)]
    assert found == [
        "openat", "openat", "openat2", "creat", "renameat2", "unlink", "mkdir", "ftruncate",
    ]  # fmt: skip
