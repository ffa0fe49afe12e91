"""The station as the process systemd runs: `photosafe run`, stopped by SIGTERM."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

from broker import Broker

from photosafe.provisioning.site_configs import write_station_config


def _wait_for(lines: list[str], proc: subprocess.Popen[str], text: str, timeout: float) -> bool:
    assert proc.stderr is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            return False
        lines.append(line)
        if text in line:
            return True
    return False


def test_sigterm_with_a_capture_in_flight_waits_reports_and_exits_zero(broker: Broker) -> None:
    config = write_station_config(broker.site, "ward-a-01", grace_s=1, expiry_s=60)
    exe = Path(sys.executable).parent / "photosafe"
    proc = subprocess.Popen(
        [exe, "run", "--config", str(config), "--simulate"],
        stdin=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    lines: list[str] = []
    try:
        assert _wait_for(lines, proc, "link.up", 15), "".join(lines)
        assert proc.stdin is not None
        proc.stdin.write("STAFF-123456\n9434765919\nPSC1:CONSENT:EXPLICIT:CARE:NODEID\n")
        proc.stdin.write("PSC1:CAPTURE\n")
        proc.stdin.flush()
        assert _wait_for(lines, proc, "[SENDING]", 15), "".join(lines)  # no gateway running
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        assert proc.stdin is not None
        proc.stdin.close()
    assert proc.stderr is not None
    output = "".join(lines) + proc.stderr.read()
    proc.stderr.close()
    assert "station.stopping pending=1" in output
    assert "[NOT_STORED]" in output
    assert "abandoned 1" in output
    assert "9434765919" not in output  # the patient never reaches the log
