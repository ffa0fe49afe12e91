"""`make demo`: one capture end to end on a site in a box, then proof the station kept nothing.

Builds a sandbox site, starts mosquitto, the reference gateway and one station with a simulated
camera and scanner, plays a scan script (staff badge, GS1 wristband, consent card, capture),
waits for the gateway's signed receipt, stops everything it started, and prints what the
gateway filed. The simulated camera hides a canary byte pattern in every image: afterwards it
must be found in the gateway's record and nowhere else on disk. Only the site folder remains.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from biip.checksums import gs1_standard_check_digit

from photosafe.provisioning.sandbox import build_site, free_port
from photosafe.provisioning.site_configs import (
    SANDBOX_NHS_PREFIX,
    write_gateway_config,
    write_station_config,
)

DEVICE = "ward-demo-01"
DEMO_NHS_NUMBER = "9434765919"  # a valid test-format NHS number, not a real patient


def demo_wristband() -> str:
    """A GS1 DataMatrix wristband as a scanner with AIM prefixes sends it (<GS> = 0x1D)."""
    stem = SANDBOX_NHS_PREFIX + DEMO_NHS_NUMBER
    gsrn = stem + str(gs1_standard_check_digit(stem))
    return f"]d28018{gsrn}<GS>93DEMO^ALEX^19700101"


SCRIPT = (
    "STAFF-123456",  # the clinician's badge
    demo_wristband(),  # the patient's wristband
    "PSC1:CONSENT:EXPLICIT:CARE:NODEID",  # consent card: care only, no de-identified use
    "PSC1:CAPTURE",  # capture card (or the button)
)


def _command(name: str) -> str:
    exe = Path(sys.executable).parent / name
    return str(exe) if exe.exists() else name


class Process:
    """A child process whose output is echoed with a prefix and kept for inspection."""

    def __init__(self, label: str, argv: Sequence[str], **kwargs: object) -> None:
        self.label = label
        self.lines: list[str] = []
        self.proc: subprocess.Popen[str] = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            **kwargs,  # type: ignore[call-overload]
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip())
            print(f"  {self.label:8}| {line.rstrip()}", flush=True)

    def wait_for(self, text: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(text in line for line in self.lines):
                return True
            if self.proc.poll() is not None:
                return False
            time.sleep(0.05)
        return False

    def stop(self, timeout: float = 15) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._reader.join(timeout=2)
        return self.proc.returncode


def run_demo(root: Path) -> int:
    if root.exists():
        shutil.rmtree(root)
    print(f"1. building a site in a box in {root}/")
    site = build_site(root, [DEVICE], port=free_port())
    canary = secrets.token_hex(16)
    station_toml = write_station_config(site, DEVICE, canary_hex=canary)
    records = root / "records"
    gateway_toml = write_gateway_config(site, records)
    started: list[Process] = []
    try:
        print(f"2. starting mosquitto on 127.0.0.1:{site.port} (TLS, client certificates, ACL)")
        broker = Process("broker", ["mosquitto", "-c", str(site.broker_conf)])
        started.append(broker)
        if not broker.wait_for("running", 10):
            print("mosquitto did not start", file=sys.stderr)
            return 1
        print("3. starting the reference gateway")
        gateway = Process(
            "gateway", [_command("photosafe-gateway"), "run", "--config", str(gateway_toml)]
        )
        started.append(gateway)
        print(f"4. starting station {DEVICE} (simulated camera and scanner)")
        station = Process(
            "station",
            [_command("photosafe"), "run", "--config", str(station_toml), "--simulate"],
            stdin=subprocess.PIPE,
            cwd=root / "devices" / DEVICE,
        )
        started.append(station)
        if not station.wait_for("link.up", 15):
            print("the station did not connect", file=sys.stderr)
            return 1
        print("5. playing the scan script: badge, wristband, consent card, capture")
        assert station.proc.stdin is not None
        for line in SCRIPT:
            station.proc.stdin.write(line + "\n")
            station.proc.stdin.flush()
            time.sleep(0.3)
        stored = station.wait_for("STORED", 20)
    finally:
        print("6. stopping everything the demo started")
        for process in reversed(started):
            process.stop()
    return _report(root, records, canary, stored)


def _report(root: Path, records: Path, canary: str, stored: bool) -> int:
    filed = sorted(p for p in records.rglob("manifest.json")) if records.exists() else []
    print()
    print(f"station said stored: {'yes' if stored else 'NO'}")
    print(f"gateway filed {len(filed)} capture(s):")
    for manifest in filed:
        folder = manifest.parent
        sizes = ", ".join(f"{p.name} {p.stat().st_size} B" for p in sorted(folder.iterdir()))
        print(f"  {folder.relative_to(root)}: {sizes}")
    needle = bytes.fromhex(canary)
    holders = [
        p
        for p in root.rglob("*")
        if p.is_file() and needle in p.read_bytes() and records not in p.parents
    ]
    in_record = any(needle in (m.parent / "image.jpg").read_bytes() for m in filed)
    print(f"canary bytes in the filed image: {'yes' if in_record else 'no'}")
    print(f"canary bytes anywhere else under {root.name}/: {len(holders)} file(s)")
    for holder in holders:
        print(f"  !! {holder}")
    ok = stored and len(filed) == 1 and in_record and not holders
    print(
        "demo OK: one capture filed, acknowledged, and nothing kept on the station"
        if ok
        else "demo FAILED"
    )
    return 0 if ok else 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="photosafe-demo", description=__doc__)
    parser.add_argument("--dir", type=Path, default=Path("demo-site"), help="sandbox folder")
    args = parser.parse_args(argv)
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    return run_demo(args.dir.resolve())


if __name__ == "__main__":
    sys.exit(main())
