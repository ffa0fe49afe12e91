"""The real station process for tests, and made-up patients whose details must never leak.

`StationProcess` runs a command (`photosafe run --simulate`, possibly under strace), feeds scans
on its standard input (never through a file: a scan file would put the patients on disk) and
collects what it writes to stdout and stderr. `made_up_patient()` draws fresh identifiers for
each test (valid NHS numbers, nonsense names), so a search for them cannot hit another test's
files.
"""

from __future__ import annotations

import datetime as dt
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from biip.checksums import gs1_standard_check_digit

from photosafe.protocol import cards
from photosafe.protocol.consent import Purpose
from photosafe.provisioning.site_configs import SANDBOX_NHS_PREFIX

PHOTOSAFE = Path(sys.executable).parent / "photosafe"
GS_ESCAPE = "<GS>"  # how a scan line on stdin writes the GS1 separator
CONSENT = cards.card_text(cards.ExplicitConsentCard((Purpose.CARE,), deidentified_use=False))
CAPTURE = cards.card_text(cards.CaptureCard())
CANCEL = cards.card_text(cards.CancelCard())
DONE = cards.card_text(cards.DoneCard())
_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def nhs_number(rng: random.Random) -> str:
    """A random NHS number with a valid Modulus 11 check digit."""
    while True:
        digits = [rng.randrange(10) for _ in range(9)]
        check = 11 - sum(d * w for d, w in zip(digits, range(10, 1, -1), strict=True)) % 11
        if check != 10:
            return "".join(map(str, digits)) + str(check % 11)


@dataclass(frozen=True)
class MadeUpPatient:
    nhs_number: str
    surname: str
    given: str
    born: dt.date

    def wristband(self, gs: str = "\x1d") -> str:
        """A GS1 DataMatrix wristband (AI 8018 GSRN, AI 93 name and birth date)."""
        stem = SANDBOX_NHS_PREFIX + self.nhs_number
        gsrn = f"{stem}{gs1_standard_check_digit(stem)}"
        return f"]d28018{gsrn}{gs}93{self.surname}^{self.given}^{self.born:%Y%m%d}"

    def printed_number(self) -> str:
        """The NHS number as printed on a letter: 3 3 4 digits."""
        n = self.nhs_number
        return f"{n[:3]} {n[3:6]} {n[6:]}"

    def needles(self) -> list[bytes]:
        """What must be found nowhere: the number, the names and the birth date."""
        return [
            s.encode() for s in (self.nhs_number, self.surname, self.given, self.born.isoformat())
        ]


def made_up_patient(rng: random.Random) -> MadeUpPatient:
    def word() -> str:
        return "QX" + "".join(rng.choice(_LETTERS) for _ in range(10))

    born = dt.date(1900, 1, 1) + dt.timedelta(days=rng.randrange(40_000))
    return MadeUpPatient(nhs_number(rng), word(), word(), born)


def staff_badge(rng: random.Random) -> str:
    return f"STAFF-{rng.randrange(100_000, 999_999)}"


class StationProcess:
    """A running `photosafe run --simulate` (or a wrapper around it); output kept line by line."""

    def __init__(
        self, args: Sequence[str | Path], *, env: Mapping[str, str], cwd: Path | None = None
    ) -> None:
        self.proc = subprocess.Popen(
            [str(a) for a in args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=dict(env),
            cwd=cwd,
        )
        self._lock = threading.Condition()
        self.stderr_lines: list[str] = []
        self.stdout_lines: list[str] = []
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self._readers = [
            threading.Thread(target=self._read, args=(self.proc.stderr, self.stderr_lines)),
            threading.Thread(target=self._read, args=(self.proc.stdout, self.stdout_lines)),
        ]
        for reader in self._readers:
            reader.daemon = True
            reader.start()

    def _read(self, stream: IO[str], into: list[str]) -> None:
        for line in stream:
            with self._lock:
                into.append(line)
                self._lock.notify_all()

    def count(self, text: str) -> int:
        with self._lock:
            return sum(text in line for line in self.stderr_lines)

    def wait_for(self, text: str, count: int = 1, timeout: float = 15.0) -> bool:
        """Until `count` stderr lines contain `text` (False on timeout or exit)."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while sum(text in line for line in self.stderr_lines) < count:
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and not self._readers[0].is_alive()):
                    return False
                self._lock.wait(min(left, 0.1))
            return True

    def feed(self, *scans: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write("".join(scan.replace("\x1d", GS_ESCAPE) + "\n" for scan in scans))
        self.proc.stdin.flush()

    @property
    def stderr(self) -> str:
        with self._lock:
            return "".join(self.stderr_lines)

    @property
    def stdout(self) -> str:
        with self._lock:
            return "".join(self.stdout_lines)

    def send_signal(self, signum: int, pid: int | None = None) -> None:
        os.kill(pid or self.proc.pid, signum)

    def wait(self, timeout: float) -> int:
        code = self.proc.wait(timeout)
        for reader in self._readers:
            reader.join(5)
        return code

    def close(self) -> None:
        """Kill it if it still runs (a failed test), and release the pipes."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


def child_pid(parent: int, timeout: float = 10.0) -> int:
    """The first child process of `parent` (the station under strace)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if int(fields[1]) == parent:
                return int(entry)
        time.sleep(0.02)
    raise TimeoutError(f"process {parent} started no child")


def station_env(**overrides: str) -> dict[str, str]:
    """The test's environment without systemd's variables, plus the given overrides."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "JOURNAL_STREAM"}
        and k not in {"INVOCATION_ID", "CREDENTIALS_DIRECTORY"}
        and not k.startswith("PHOTOSAFE_")
    }
    env["PYTHONDONTWRITEBYTECODE"] = "1"  # as the unit sets it (Environment=)
    env.update(overrides)
    return env
