"""Small helpers shared by the benchmark sections: statistics, /proc readings, child processes,
the scans a station needs, and the test helpers beside this folder (tests/broker.py, keys.py).

Benchmarks are not tests: nothing here is collected by pytest (no `test_` names) and nothing
here asserts a timing.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
import tracemalloc
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import IO, Any, Protocol

from biip.checksums import gs1_standard_check_digit

from photosafe.protocol import cards
from photosafe.protocol.consent import Purpose
from photosafe.protocol.manifest import Manifest
from photosafe.provisioning.sandbox import Site
from photosafe.provisioning.site_configs import SANDBOX_NHS_PREFIX

TESTS = Path(__file__).resolve().parent.parent
REPO = TESTS.parent
BIN = Path(sys.executable).parent
MIB = 1024 * 1024

BADGE = "STAFF-123456"
NHS_NUMBER = "9434765919"
CONSENT = cards.card_text(cards.ExplicitConsentCard((Purpose.CARE,), deidentified_use=False))
CAPTURE = cards.card_text(cards.CaptureCard())


def wristband(nhs_number: str = NHS_NUMBER) -> str:
    """A sandbox GS1 DataMatrix wristband (GSRN), as the scanner sends it."""
    stem = SANDBOX_NHS_PREFIX + nhs_number
    return f"]d28018{stem}{gs1_standard_check_digit(stem)}"


# -- the test helpers beside this folder --------------------------------------------------------


def _tests_module(name: str) -> ModuleType:
    """tests/<name>.py, imported by module name as pytest does (tests/ has no __init__.py).

    Imported at run time, not with a static `from broker import ...`, so that mypy can check
    this folder on its own (`mypy tests/bench/*.py`) as well as with the rest of tests/.
    """
    if str(TESTS) not in sys.path:
        sys.path.insert(0, str(TESTS))
    return importlib.import_module(name)


class BrokerLike(Protocol):
    """What the benchmark uses of tests/broker.py's Broker."""

    site: Site

    @property
    def pid(self) -> int | None: ...
    def start(self, timeout: float = ...) -> None: ...
    def stop(self, timeout: float = ...) -> None: ...
    def restart(self, timeout: float = ...) -> None: ...
    def log(self, *, run: bool = False) -> str: ...


def make_broker(site: Site) -> BrokerLike:
    """A (not yet started) mosquitto for `site`, from tests/broker.py."""
    broker: BrokerLike = _tests_module("broker").Broker(site)
    return broker


def manifest_for(image: bytes, device_id: str) -> Manifest:
    """tests/keys.py's manifest for an image from `device_id` (a fresh capture id)."""
    make: Callable[..., Manifest] = _tests_module("keys").manifest_for
    return make(image, device_id)


# -- statistics ---------------------------------------------------------------------------------


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def p95(values: Sequence[float]) -> float:
    """95th percentile (linear interpolation between the closest ranks)."""
    if len(values) < 2:
        return values[0] if values else float("nan")
    return statistics.quantiles(values, n=20, method="inclusive")[18]


def summary_ms(values_s: Sequence[float]) -> dict[str, float]:
    """Median, p95, min and max of durations given in seconds, in milliseconds."""
    ms = [v * 1000 for v in values_s]
    return {
        "n": len(ms),
        "median_ms": round(median(ms), 3),
        "p95_ms": round(p95(ms), 3),
        "min_ms": round(min(ms), 3) if ms else float("nan"),
        "max_ms": round(max(ms), 3) if ms else float("nan"),
    }


def ratio(a: float, b: float) -> float:
    return round(a / b, 3) if b else float("nan")


# -- stage stamps ---------------------------------------------------------------------------


@dataclass
class Stamps:
    """perf_counter() times of named stages of the one capture in flight (any thread marks).

    With `memory` (and tracemalloc tracing), each first mark also records tracemalloc's current
    and peak traced bytes and resets the peak: `memory[name][1]` is then the peak reached
    between the previous mark and this one.
    """

    times: dict[str, float] = field(default_factory=dict)
    size: int = 0  # bytes of the still handed to sealing
    trace: bool = False
    memory: dict[str, tuple[int, int]] = field(default_factory=dict)

    def mark(self, name: str) -> None:
        if name in self.times:
            return
        self.times[name] = time.perf_counter()
        if self.trace and tracemalloc.is_tracing():
            self.memory[name] = tracemalloc.get_traced_memory()
            tracemalloc.reset_peak()

    def copy(self) -> Stamps:
        return Stamps(dict(self.times), self.size, self.trace, dict(self.memory))

    def between(self, start: str, end: str) -> float | None:
        if start in self.times and end in self.times:
            return self.times[end] - self.times[start]
        return None


def stage_medians(
    samples: Sequence[Stamps], stages: Sequence[tuple[str, str, str]]
) -> dict[str, float]:
    """{label: median ms} of each (label, start, end) interval present in the samples."""
    out: dict[str, float] = {}
    for label, start, end in stages:
        values = [d for s in samples if (d := s.between(start, end)) is not None]
        if values:
            out[label] = round(median(values) * 1000, 3)
    return out


# -- processes ------------------------------------------------------------------------------

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # runs in the child between fork and exec
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def spawn(
    argv: Sequence[str | Path],
    *,
    log: Path | None = None,
    env: dict[str, str] | None = None,
    stdin: int | None = subprocess.DEVNULL,
    stderr_pipe: bool = False,
) -> subprocess.Popen[bytes]:
    """A child that gets SIGTERM if this process dies (so nothing outlives an aborted run)."""
    out: IO[bytes] | int = subprocess.DEVNULL
    handle: IO[bytes] | None = None
    if log is not None:
        handle = log.open("ab")
        out = handle
    try:
        return subprocess.Popen(
            [str(a) for a in argv],
            stdin=stdin,
            stdout=out,
            stderr=subprocess.PIPE if stderr_pipe else out,
            env={**os.environ, **(env or {})},
            preexec_fn=_die_with_parent,  # noqa: PLW1509 - prctl only, no locks
        )
    finally:
        if handle is not None:
            handle.close()  # the child holds its own copy


def terminate(proc: subprocess.Popen[Any], timeout: float = 10.0) -> int | None:
    """SIGTERM, wait, then SIGKILL; returns the exit code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()
    return proc.returncode


def wait_for_text(path: Path, text: str, timeout: float, proc: subprocess.Popen[Any]) -> bool:
    """True once `text` appears in the log file `path`; False on timeout or if `proc` exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if text in path.read_text(errors="replace"):
                return True
        except FileNotFoundError:
            pass
        if proc.poll() is not None:
            return False
        time.sleep(0.02)
    return False


class LineReader:
    """Reads a child's text stream on a thread; `wait_for` blocks until a line contains a text."""

    def __init__(self, stream: IO[bytes]) -> None:
        self._stream = stream
        self._lines: list[tuple[float, str]] = []
        self._changed = threading.Condition()
        self._done = False
        self._thread = threading.Thread(target=self._read, name="bench-line-reader", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        for raw in iter(self._stream.readline, b""):
            line = raw.decode(errors="replace")
            with self._changed:
                self._lines.append((time.perf_counter(), line))
                self._changed.notify_all()
        with self._changed:
            self._done = True
            self._changed.notify_all()

    def count(self, text: str) -> int:
        with self._changed:
            return sum(text in line for _, line in self._lines)

    def wait_for(self, text: str, timeout: float, count: int = 1) -> float | None:
        """perf_counter() of the `count`-th line containing `text`, or None."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                hits = [t for t, line in self._lines if text in line]
                if len(hits) >= count:
                    return hits[count - 1]
                left = deadline - time.monotonic()
                if left <= 0 or self._done:
                    return None
                self._changed.wait(min(left, 0.5))

    def text(self) -> str:
        with self._changed:
            return "".join(line for _, line in self._lines)

    def join(self, timeout: float = 5.0) -> None:
        self._thread.join(timeout)


def rss_mib(pid: int) -> float:
    """Resident set size of a process, MiB (VmRSS)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


_CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far, seconds (/proc/<pid>/stat)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


def machine_cpu() -> tuple[int, int]:
    """(busy, total) CPU ticks of the whole machine so far, from /proc/stat's "cpu" line."""
    fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    total = sum(fields[:8])  # guest time is already counted in user
    return total - idle, total


def cpu_flags() -> set[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("model name", "Model")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"
