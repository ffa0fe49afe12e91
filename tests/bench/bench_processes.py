"""The programs as their own processes: `photosafe-gateway run` and `photosafe run --simulate`.

Gateways always run as processes (as in production, and so that their paho receive path does
not share this process's GIL with the station or the floor client). The station runs as a
process for what only a process can show: its resident memory over 100 captures, and the time
from `exec` to READY.
"""

from __future__ import annotations

import importlib.util
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench_util import (
    BADGE,
    BIN,
    CAPTURE,
    CONSENT,
    LineReader,
    median,
    rss_mib,
    spawn,
    terminate,
    wait_for_text,
    wristband,
)

from photosafe.provisioning.sandbox import Site
from photosafe.provisioning.site_configs import gateway_config_toml

SUBSCRIBED = "gateway.subscribed"
LINK_UP = "link.up"
TWELVE_MP = {"PHOTOSAFE_DRIVERS__CAMERA_WIDTH": "4056", "PHOTOSAFE_DRIVERS__CAMERA_HEIGHT": "3040"}


class ProcessError(RuntimeError):
    pass


class GatewayProcess:
    """`photosafe-gateway run --config <file>` filing into `records` (on tmpfs)."""

    def __init__(self, site: Site, workdir: Path, name: str, records: Path) -> None:
        records.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.config = workdir / f"{name}.toml"
        self.config.write_text(gateway_config_toml(site, records, client_id=name))
        self.log = workdir / f"{name}.log"
        self.name = name
        self.proc = spawn([BIN / "photosafe-gateway", "run", "--config", self.config], log=self.log)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_ready(self, timeout: float = 30.0) -> None:
        if not wait_for_text(self.log, SUBSCRIBED, timeout, self.proc):
            text = self.log.read_text(errors="replace") if self.log.exists() else ""
            raise ProcessError(f"gateway {self.name} not subscribed:\n{text[-3000:]}")

    def stop(self) -> None:
        terminate(self.proc)


def start_gateways(
    site: Site, workdir: Path, names: list[str], records: Path
) -> list[GatewayProcess]:
    gateways: list[GatewayProcess] = []
    try:
        for name in names:
            gateways.append(GatewayProcess(site, workdir, name, records))
        for gateway in gateways:
            gateway.wait_ready()
    except BaseException:
        for gateway in gateways:
            gateway.stop()
        raise
    return gateways


class StationProcess:
    """`photosafe run --config <file> --simulate`: scans are lines on its stdin, signals come
    back as "[STORED] ..." lines on its stderr (the console indicator)."""

    def __init__(self, config: Path, env: dict[str, str] | None = None) -> None:
        self.started = time.perf_counter()
        self.proc = spawn(
            [BIN / "photosafe", "run", "--config", config, "--simulate"],
            stdin=subprocess.PIPE,
            stderr_pipe=True,
            env=env,
        )
        assert self.proc.stderr is not None
        self.output = LineReader(self.proc.stderr)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def send(self, *lines: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write("".join(f"{line}\n" for line in lines).encode())
        self.proc.stdin.flush()

    def wait_for(self, text: str, timeout: float, count: int = 1) -> float:
        seen = self.output.wait_for(text, timeout, count)
        if seen is None:
            raise ProcessError(f"station: no {text!r} (x{count}):\n{self.output.text()[-3000:]}")
        return seen

    def stop(self) -> int | None:
        code = terminate(self.proc, timeout=30)
        self.output.join()
        return code


def notify_available() -> bool:
    """True when the station has sd_notify support (daemon/notify.py, another issue's work)."""
    return importlib.util.find_spec("photosafe.daemon.notify") is not None


@dataclass
class StartupRun:
    ready_s: float | None = None  # READY=1 on NOTIFY_SOCKET
    link_up_s: float | None = None  # the "link.up" log line
    messages: list[str] = field(default_factory=list)
    mlockall: str = "unknown"


def mlockall_state(log: str) -> str:
    """ "on" or "off" from the station's hardening.applied log line."""
    for line in log.splitlines():
        if "hardening.applied" in line:
            for part in line.split():
                if part.startswith("mlockall="):
                    return part.split("=", 1)[1]
    return "unknown"


def startup_once(config: Path, workdir: Path, timeout: float = 30.0) -> StartupRun:
    """One `photosafe run --simulate` from exec to READY=1 (if it sends one) and to link.up."""
    path = workdir / "notify.sock"
    path.unlink(missing_ok=True)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    run = StartupRun()
    try:
        sock.bind(str(path))
        station = StationProcess(config, env={"NOTIFY_SOCKET": str(path)})
        try:
            deadline = station.started + timeout
            expect_ready = notify_available()
            while expect_ready and run.ready_s is None:
                left = deadline - time.perf_counter()
                if left <= 0 or station.proc.poll() is not None:
                    break
                sock.settimeout(min(left, 0.5))
                try:
                    data = sock.recv(4096)
                except TimeoutError:
                    if station.output.count(LINK_UP) and time.perf_counter() > deadline - 20:
                        break  # linked long ago, and still no READY: not coming
                    continue
                run.messages.append(data.decode(errors="replace"))
                if b"READY=1" in data.split(b"\n"):
                    run.ready_s = time.perf_counter() - station.started
            link = station.output.wait_for(LINK_UP, max(0.0, deadline - time.perf_counter()))
            if link is not None:
                run.link_up_s = link - station.started
        finally:
            station.stop()
        run.mlockall = mlockall_state(station.output.text())
    finally:
        sock.close()
        path.unlink(missing_ok=True)
    return run


def _seconds_to_run(argv: list[str | Path], runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run([str(a) for a in argv], check=True, stdin=subprocess.DEVNULL)
        times.append(time.perf_counter() - start)
    return median(times)


def startup(config: Path, workdir: Path, runs: int) -> dict[str, object]:
    """Station start to READY, with two baselines measured alongside: the bare interpreter and
    importing the station's modules (what any `photosafe run` pays before its first line)."""
    python = BIN / "python"
    interpreter = _seconds_to_run([python, "-c", "pass"], 3)
    imports = _seconds_to_run(
        [python, "-c", "import photosafe.daemon.cli, photosafe.daemon.app"], 3
    )
    results = [startup_once(config, workdir) for _ in range(runs)]
    ready = [r.ready_s for r in results if r.ready_s is not None]
    link = [r.link_up_s for r in results if r.link_up_s is not None]
    measured = "READY=1 (sd_notify)" if len(ready) == runs else "link.up log line"
    values = ready if len(ready) == runs else link
    return {
        "measured_to": measured,
        "notify_module": notify_available(),
        "runs": runs,
        "median_s": round(median(values), 3),
        "max_s": round(max(values), 3) if values else float("nan"),
        "ready_s": [round(v, 3) for v in ready],
        "link_up_s": [round(v, 3) for v in link],
        "camera": "simulated 1600x1200 (config default)",
        "interpreter_s": round(interpreter, 3),
        "imports_s": round(imports, 3),
        "mlockall": results[-1].mlockall,
    }


def rss_over_captures(
    config: Path, captures: int, checkpoints: tuple[int, ...], env: dict[str, str]
) -> dict[str, object]:
    """Resident memory of a station process idle, then after each checkpoint of captures."""
    station = StationProcess(config, env=env)
    try:
        station.wait_for(LINK_UP, 60)
        time.sleep(1.0)
        idle = rss_mib(station.pid)
        station.send(BADGE, wristband(), CONSENT)
        station.wait_for("[READY_TO_CAPTURE]", 30)
        after: dict[str, float] = {}
        started = time.perf_counter()
        for n in range(1, captures + 1):
            station.send(CAPTURE)
            station.wait_for("[STORED]", 60, count=n)
            for bad in ("[NOT_STORED]", "[RETAKE]", "[OUTBOX_FULL]", "[FAULT]"):
                if station.output.count(bad):
                    raise ProcessError(f"station showed {bad}:\n{station.output.text()[-3000:]}")
            if n in checkpoints:
                after[str(n)] = rss_mib(station.pid)
        elapsed = time.perf_counter() - started
        time.sleep(1.0)
        settled = rss_mib(station.pid)
    finally:
        station.stop()
    first, last = str(checkpoints[1]), str(checkpoints[-1])
    return {
        "captures": captures,
        "camera": f"simulated {env.get('PHOTOSAFE_DRIVERS__CAMERA_WIDTH', '1600')}x"
        f"{env.get('PHOTOSAFE_DRIVERS__CAMERA_HEIGHT', '1200')}",
        "idle_mib": idle,
        "after_mib": after,
        "settled_mib": settled,
        "mlockall": mlockall_state(station.output.text()),
        f"growth_{first}_to_{last}_mib": round(after[last] - after[first], 1),
        "captures_per_s": round(captures / elapsed, 2),
    }
