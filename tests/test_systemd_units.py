"""The hardened systemd units: `systemd-analyze verify` passes and the station scores <= 2.0.

`verify` checks that ExecStart's program exists, so each unit is rendered into tmp_path with its
/opt/photosafe/venv/bin/ path replaced by this virtualenv's. `security --offline=true` reads the
file alone and prints "Overall exposure level for <unit>: <score> ..."; lower is better.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

UNITS = Path(__file__).resolve().parents[1] / "systemd"
INSTALLED_BIN = "/opt/photosafe/venv/bin/"
SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
pytestmark = pytest.mark.skipif(SYSTEMD_ANALYZE is None, reason="systemd-analyze not installed")


def render(name: str, into: Path) -> Path:
    text = (UNITS / name).read_text()
    assert INSTALLED_BIN in text
    rendered = into / name
    rendered.write_text(text.replace(INSTALLED_BIN, f"{Path(sys.executable).parent}/"))
    return rendered


def analyze(*args: str | Path) -> subprocess.CompletedProcess[str]:
    assert SYSTEMD_ANALYZE is not None
    return subprocess.run(
        [SYSTEMD_ANALYZE, *map(str, args)], capture_output=True, text=True, timeout=60, check=False
    )


def exposure(unit: Path) -> float:
    run = analyze("security", "--offline=true", unit)
    found = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", run.stdout)
    assert found, run.stdout + run.stderr
    return float(found.group(1))


def settings(name: str) -> dict[str, list[str]]:
    values: dict[str, list[str]] = {}
    for line in (UNITS / name).read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            values.setdefault(key, []).append(value)
    return values


@pytest.mark.parametrize("name", ["photosafe.service", "photosafe-gateway.service"])
def test_unit_verifies(name: str, tmp_path: Path) -> None:
    run = analyze("verify", render(name, tmp_path))
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stderr.strip() == "", run.stderr


def test_station_unit_scores_two_or_lower(tmp_path: Path) -> None:
    assert exposure(render("photosafe.service", tmp_path)) <= 2.0


def test_gateway_unit_scores_two_or_lower(tmp_path: Path) -> None:
    assert exposure(render("photosafe-gateway.service", tmp_path)) <= 2.0


def test_station_unit_leaves_no_way_to_the_disk_and_keeps_only_its_devices() -> None:
    unit = settings("photosafe.service")
    assert unit["Type"] == ["notify"] and "WatchdogSec" in unit
    assert unit["Restart"] == ["on-failure"]
    assert unit["ExecStart"][0].endswith("--config /etc/photosafe/station.toml")
    assert unit["ProtectSystem"] == ["strict"] and unit["PrivateTmp"] == ["yes"]
    writable = {"ReadWritePaths", "StateDirectory", "CacheDirectory", "LogsDirectory"}
    assert writable.isdisjoint(unit), "the station must have no writable path"
    assert unit["LimitCORE"] == ["0"] and unit["MemorySwapMax"] == ["0"]
    assert unit["CapabilityBoundingSet"] == [""]
    assert unit["DevicePolicy"] == ["closed"]
    assert sorted(unit["DeviceAllow"]) == [
        "/dev/fb0 rw",
        "char-dma_heap rw",
        "char-gpiochip rw",
        "char-input rw",
        "char-media rw",
        "char-video4linux rw",
    ]
    assert unit["SupplementaryGroups"] == ["video input gpio"]
    assert unit["RestrictAddressFamilies"] == ["AF_UNIX AF_INET AF_INET6"]
    assert unit["LoadCredential"] == ["device.key:/etc/photosafe/credentials/device.key"]
    assert "PYTHONDONTWRITEBYTECODE=1" in unit["Environment"][0]
