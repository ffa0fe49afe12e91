"""`make demo`: one capture end to end on a site in a box, then proof the station kept nothing.

Builds a sandbox site, starts mosquitto, the reference gateway and one station with a simulated
camera and scanner, plays a scan script (staff badge, GS1 wristband, consent card, capture),
waits for the gateway's signed receipt, stops everything it started, and prints what the
gateway filed. The simulated camera hides a canary byte pattern in every image: afterwards it
must be found in the gateway's record and nowhere else on disk. Only the site folder remains.

With `--pacs orthanc` (`make demo PACS=orthanc`) the gateway files into a sandbox PACS instead of
a folder: Orthanc with its DICOMweb plugin (Debian: orthanc, orthanc-dicomweb) keeping its
storage in the site folder, the capture sent as a DICOM VL Photographic Image over STOW-RS. The
demo reads the instance back from Orthanc and prints the study's link in Orthanc Explorer;
Orthanc keeps running until Enter when the demo runs in a terminal.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from biip.checksums import gs1_standard_check_digit

from photosafe.provisioning.sandbox import Site, build_site, free_port
from photosafe.provisioning.site_configs import (
    SANDBOX_NHS_PREFIX,
    SinkSettings,
    write_gateway_config,
    write_orthanc_config,
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
    "PSC1:BODYSITE:14975008:LEFT",  # body-site card: left forearm
    "PSC1:CAPTURE",  # capture card (or the button)
)
PACS_CHOICES = ("orthanc",)
ORTHANC = shutil.which("Orthanc") or "/usr/sbin/Orthanc"  # Debian installs it in sbin


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


class SandboxPacs:
    """Orthanc for the demo: config and storage in `<site>/pacs/`, on free loopback ports."""

    def __init__(self, root: Path) -> None:
        self.folder = root / "pacs"
        self.http_port, self.dicom_port = free_port(), free_port()
        self.config = write_orthanc_config(
            self.folder, http_port=self.http_port, dicom_port=self.dicom_port
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def raw(self, path: str) -> bytes:
        with urllib.request.urlopen(f"{self.url}{path}", timeout=10) as response:  # noqa: S310
            data: bytes = response.read()
        return data

    def get(self, path: str) -> Any:
        return json.loads(self.raw(path))

    def records(self) -> list[Record]:
        """Every instance Orthanc holds, read back through its REST API."""
        found = []
        for instance in self.get("/instances"):
            tags = self.get(f"/instances/{instance}/simplified-tags")
            study = self.get(f"/instances/{instance}/study")["ID"]
            region = (tags.get("AnatomicRegionSequence") or [{}])[0]
            details = (
                f"PatientID {tags.get('PatientID')} (issuer {tags.get('IssuerOfPatientID')}), "
                f"SNOMED CT {region.get('CodeValue', '-')} {region.get('CodeMeaning', '')}, "
                f"laterality {tags.get('ImageLaterality', '-')}, "
                f"SOP Instance UID {tags.get('SOPInstanceUID')}"
            )
            found.append(
                Record(
                    where=f"Orthanc instance {instance}",
                    image=self.raw(f"/instances/{instance}/frames/0/raw"),
                    details=details,
                    link=f"{self.url}/app/explorer.html#study?uuid={study}",
                )
            )
        return found


@dataclass(frozen=True)
class Record:
    """One capture the gateway filed, as the record store holds it."""

    where: str
    image: bytes
    details: str
    link: str | None = None


def run_demo(root: Path, pacs: str | None = None) -> int:
    if root.exists():
        shutil.rmtree(root)
    print(f"1. building a site in a box in {root}/")
    site = build_site(root, [DEVICE], port=free_port())
    canary = secrets.token_hex(16)
    station_toml = write_station_config(site, DEVICE, canary_hex=canary)
    if pacs == "orthanc":
        return _run_with_orthanc(root, site, station_toml, canary)
    records = root / "records"
    gateway_toml = write_gateway_config(site, records)
    stored = _capture(root, site, station_toml, gateway_toml)
    return _report(root, records, _folder_records(root, records), canary, stored)


def _run_with_orthanc(root: Path, site: Site, station_toml: Path, canary: str) -> int:
    if not Path(ORTHANC).exists():
        print("Orthanc is not installed (apt: orthanc orthanc-dicomweb)", file=sys.stderr)
        return 1
    pacs = SandboxPacs(root)
    sink: SinkSettings = {"kind": "dicomweb", "url": f"{pacs.url}/dicom-web", "timeout_s": 10}
    gateway_toml = write_gateway_config(site, pacs.folder, sink=sink)
    print(f"1b. starting Orthanc, the sandbox PACS: {pacs.url}, DICOM port {pacs.dicom_port}")
    orthanc = Process("orthanc", [ORTHANC, str(pacs.config)])
    try:
        if not orthanc.wait_for("Orthanc has started", 20):
            print("Orthanc did not start", file=sys.stderr)
            return 1
        stored = _capture(root, site, station_toml, gateway_toml)
        code = _report(root, pacs.folder, pacs.records(), canary, stored)
        if stored:
            _keep_open(pacs)
        return code
    finally:
        orthanc.stop()


def _capture(root: Path, site: Site, station_toml: Path, gateway_toml: Path) -> bool:
    """Steps 2 to 6: broker, gateway and station up, the scan script played, all stopped.
    True if the station said STORED."""
    started: list[Process] = []
    try:
        print(f"2. starting mosquitto on 127.0.0.1:{site.port} (TLS, client certificates, ACL)")
        broker = Process("broker", ["mosquitto", "-c", str(site.broker_conf)])
        started.append(broker)
        if not broker.wait_for("running", 10):
            print("mosquitto did not start", file=sys.stderr)
            return False
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
            return False
        print("5. playing the scan script: badge, wristband, consent, body site, capture")
        assert station.proc.stdin is not None
        for line in SCRIPT:
            station.proc.stdin.write(line + "\n")
            station.proc.stdin.flush()
            time.sleep(0.3)
        return station.wait_for("STORED", 20)
    finally:
        print("6. stopping the station, the gateway and the broker")
        for process in reversed(started):
            process.stop()


def _folder_records(root: Path, records: Path) -> list[Record]:
    manifests = sorted(records.rglob("manifest.json")) if records.exists() else []
    return [
        Record(
            where=str(m.parent.relative_to(root)),
            image=(m.parent / "image.jpg").read_bytes(),
            details=", ".join(f"{p.name} {p.stat().st_size} B" for p in sorted(m.parent.iterdir())),
        )
        for m in manifests
    ]


def _keep_open(pacs: SandboxPacs) -> None:
    """In a terminal, leave Orthanc up so the printed link works; otherwise say how to restart."""
    if sys.stdin.isatty():
        print("Orthanc keeps running so the link works: press Enter to stop it.")
        with contextlib.suppress(EOFError, KeyboardInterrupt):
            input()
    else:
        print(f"Orthanc is stopped; to browse the study again: {ORTHANC} {pacs.config}")


def _report(root: Path, records: Path, filed: list[Record], canary: str, stored: bool) -> int:
    print()
    print(f"station said stored: {'yes' if stored else 'NO'}")
    print(f"gateway filed {len(filed)} capture(s):")
    for record in filed:
        print(f"  {record.where}: {record.details}")
        if record.link:
            print(f"  study in Orthanc Explorer: {record.link}")
    needle = bytes.fromhex(canary)
    holders = [
        p
        for p in root.rglob("*")
        if p.is_file() and needle in p.read_bytes() and records not in p.parents
    ]
    in_record = any(needle in record.image for record in filed)
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
    parser.add_argument(
        "--pacs",
        choices=PACS_CHOICES,
        help="file into a sandbox PACS (DICOM over STOW-RS) instead of the records folder",
    )
    args = parser.parse_args(argv)
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    return run_demo(args.dir.resolve(), args.pacs)


if __name__ == "__main__":
    sys.exit(main())
