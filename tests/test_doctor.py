"""`photosafe doctor`: what the configured station needs, what is here, and what is missing.

On this machine (an x86 VM: no picamera2, no /dev/input, no GPIO, no framebuffer) a Raspberry Pi
configuration must fail and name each missing part exactly; with simulated backends, from the
config or from the environment, it passes. A fake /dev (nodes are symlinks to /dev/null, a real
character device) and injected probes show a complete Pi station passing.
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest
from broker import Broker

from photosafe.daemon.cli import main
from photosafe.daemon.doctor import CHECKS, HARDWARE, Finding, Machine, Wanted, diagnose, run
from photosafe.drivers.scanner_hid import InputDeviceInfo
from photosafe.provisioning.sandbox import Site
from photosafe.provisioning.site_configs import write_station_config

PI_DRIVERS = {
    'camera = "simulated"': 'camera = "picamera2"',
    'scanner = "simulated"': 'scanner = "evdev"',
    'indicator = "console"': 'indicator = "gpiozero"',
    'button = "simulated"': 'button = "gpiozero"',
}
SCANNER = InputDeviceInfo("/dev/input/event3", "Honeywell Imaging 1900", 0x0C2E, 0x0B61, True)
KEYBOARD = InputDeviceInfo("/dev/input/event0", "Dell USB Keyboard", 0x413C, 0x2113, True)
NO_GPIO = (
    "gpiozero found no GPIO pins (Unable to load any default pin factory!) — this is not a "
    "Raspberry Pi, or its GPIO library is missing: sudo apt install python3-lgpio"
)


@pytest.fixture(autouse=True)
def _no_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    for part in ("CAMERA", "SCANNER", "INDICATOR", "BUTTON", "DISPLAY"):
        monkeypatch.delenv(f"PHOTOSAFE_{part}", raising=False)
    monkeypatch.delenv("GPIOZERO_PIN_FACTORY", raising=False)


def simulated_config(site: Site) -> Path:
    return write_station_config(site, "ward-a-01")


def pi_config(site: Site) -> Path:
    path = write_station_config(site, "ward-a-01")
    text = path.read_text()
    for simulated, real in PI_DRIVERS.items():
        assert simulated in text
        text = text.replace(simulated, real)
    pi = path.with_name("pi.toml")
    pi.write_text(text)
    return pi


def doctor(config: Path, machine: Machine | None = None, **environ: str) -> tuple[int, list[str]]:
    out = io.StringIO()
    status = run(config, machine=machine, environ=environ, out=out, checks=HARDWARE)
    return status, out.getvalue().splitlines()


def missing(lines: list[str]) -> list[str]:
    return [line.strip().removeprefix("MISSING").strip() for line in lines if "MISSING" in line]


def _has_pi_hardware() -> bool:
    paths = ("/dev/input", "/dev/fb0", "/proc/device-tree/model", "/dev/gpiochip0")
    return any(Path(p).exists() for p in paths) or any(Path("/dev").glob("video*"))


this_machine = pytest.mark.skipif(
    _has_pi_hardware() or "picamera2" in sys.modules,
    reason="describes a machine without Raspberry Pi hardware (this x86 VM)",
)


@this_machine
def test_a_pi_config_on_this_machine_names_each_missing_part(site: Site) -> None:
    status, lines = doctor(pi_config(site))
    assert status == 1
    assert missing(lines) == [
        "camera: picamera2 is not installed — on Raspberry Pi OS: sudo apt install "
        "python3-picamera2 and create the venv with --system-site-packages",
        "camera: no camera found: no /dev/video* or /dev/media* — connect the camera's ribbon "
        "cable (with the power off) and check with rpicam-hello --list-cameras",
        "scanner: no input devices: /dev/input does not exist — plug in the USB barcode scanner",
        f"lights: {NO_GPIO}",
        f"button: {NO_GPIO}",
    ]
    assert "  ok       scanner: evdev is installed" in lines
    assert "  ok       display: none configured: intimate images are refused here" in lines
    assert lines[-1] == "5 problem(s): this station cannot work as configured."


@this_machine
def test_the_cli_exits_non_zero_here_and_says_so(
    site: Site, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["doctor", "--config", str(pi_config(site))]) == 1
    out = capsys.readouterr().out
    assert "MISSING  camera: picamera2 is not installed" in out
    assert "MISSING  lights: gpiozero found no GPIO pins" in out


@this_machine
def test_a_framebuffer_display_that_is_not_here_is_missing(site: Site) -> None:
    status, lines = doctor(simulated_config(site), PHOTOSAFE_DISPLAY="framebuffer")
    assert status == 1
    assert missing(lines) == [
        "display: /dev/fb0 does not exist — connect the display (DSI or HDMI) and enable its "
        "driver (dtoverlay=vc4-kms-v3d in /boot/firmware/config.txt)"
    ]


def test_simulated_backends_in_the_config_pass(
    broker: Broker, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("INVOCATION_ID", raising=False)
    status = main(["doctor", "--config", str(simulated_config(broker.site))])
    out = capsys.readouterr().out.splitlines()
    assert out[1:7] == [
        "  ok       config: station ward-a-01 (ward, Dermatology OPD)",
        "  ok       camera: simulated (configured): a rendered test scene, not a camera",
        "  ok       scanner: simulated (configured): scans are typed or fed, not read",
        "  ok       lights: console (configured): signals printed on the console",
        "  ok       button: simulated (configured): presses are fed, not read",
        "  ok       display: none configured: intimate images are refused here",
    ]
    # Then the operational checks (tests/test_doctor_ops.py); this machine's own swap and core
    # settings may fail them, the station's identity and the broker may not.
    failed = [line for line in out if line.startswith("  FAILED")]
    assert not [line for line in failed if "swap:" not in line and "core dumps:" not in line]
    assert any(line.startswith("  ok       broker: ") for line in out)
    assert status == (1 if failed else 0)
    assert out[-1] == (
        f"{len(failed)} problem(s): this station cannot work as configured."
        if failed
        else "everything the configuration needs is here."
    )


def test_simulated_backends_from_the_environment_pass_a_pi_config(site: Site) -> None:
    status, lines = doctor(
        pi_config(site),
        PHOTOSAFE_CAMERA="simulated",
        PHOTOSAFE_SCANNER="simulated",
        PHOTOSAFE_INDICATOR="recording",
        PHOTOSAFE_BUTTON="none",
        PHOTOSAFE_DISPLAY="simulated",
    )
    assert status == 0, lines
    assert (
        "  ok       camera: simulated (from $PHOTOSAFE_CAMERA): a rendered test scene, not a camera"
        in lines
    )
    assert (
        "  ok       display: simulated (from $PHOTOSAFE_DISPLAY): a recording display, for tests"
        in lines
    )


def test_an_unknown_backend_name_is_missing_with_the_known_ones(site: Site) -> None:
    status, lines = doctor(simulated_config(site), PHOTOSAFE_BUTTON="foot-pedal")
    assert status == 1
    assert missing(lines) == [
        "button: unknown backend 'foot-pedal' (from $PHOTOSAFE_BUTTON); "
        "known: gpiozero, none, simulated"
    ]


def test_without_a_usable_config_it_says_why_and_checks_for_pi_hardware(tmp_path: Path) -> None:
    status, lines = doctor(tmp_path / "station.toml", _fake_pi(tmp_path))
    assert status == 1
    assert missing(lines) == [
        f"config: {tmp_path / 'station.toml'}: file not found",
        "config: unusable: checking for a Raspberry Pi station's hardware",
    ]
    assert (
        "  ok       camera: picamera2 (a Raspberry Pi station's): the Raspberry Pi camera" in lines
    )


# -- a complete Raspberry Pi station, faked ------------------------------------------------------


def _fake_pi(
    root: Path, devices: list[InputDeviceInfo] | None = None, gpio: str | None = None
) -> Machine:
    dev = root / "dev"
    (dev / "input").mkdir(parents=True)
    for node in ("video0", "media0", "fb0", "input/event3"):
        (dev / node).symlink_to("/dev/null")  # a real character device
    graphics = root / "sys" / "class" / "graphics" / "fb0"
    graphics.mkdir(parents=True)
    (graphics / "virtual_size").write_text("800,480\n")
    (graphics / "bits_per_pixel").write_text("16\n")
    return Machine(
        dev,
        root / "sys",
        importable=lambda module: True,
        gpio=lambda: gpio,
        cameras=lambda: ["imx708_wide"],
        input_devices=lambda folder: [SCANNER] if devices is None else devices,
    )


def test_a_complete_pi_station_passes(site: Site, tmp_path: Path) -> None:
    machine = _fake_pi(tmp_path)
    status, lines = doctor(pi_config(site), machine, PHOTOSAFE_DISPLAY="framebuffer")
    assert status == 0, lines
    assert lines[1:] == [
        "  ok       config: station ward-a-01 (ward, Dermatology OPD)",
        "  ok       camera: picamera2 (configured): the Raspberry Pi camera",
        "  ok       camera: picamera2 is installed",
        "  ok       camera: libcamera sees: imx708_wide",
        "  ok       scanner: evdev (configured): a USB keyboard-wedge barcode scanner",
        "  ok       scanner: evdev is installed",
        "  ok       scanner: found /dev/input/event3 'Honeywell Imaging 1900' (0c2e:0b61)",
        "  ok       lights: gpiozero (configured): LEDs and buzzer on GPIO",
        "  ok       lights: gpiozero can drive this machine's GPIO pins",
        "  ok       button: gpiozero (configured): a capture button on GPIO",
        "  ok       button: gpiozero can drive this machine's GPIO pins",
        "  ok       display: framebuffer (from $PHOTOSAFE_DISPLAY): a screen on the Linux "
        "framebuffer",
        f"  ok       display: {tmp_path}/dev/fb0: 800x480, RGB565",
        "everything the configuration needs is here.",
    ]


def test_two_keyboards_and_no_camera_are_named(site: Site, tmp_path: Path) -> None:
    machine = Machine(
        _fake_pi(tmp_path).dev,
        importable=lambda module: True,
        gpio=lambda: None,
        cameras=lambda: [],
        input_devices=lambda folder: [KEYBOARD, SCANNER],
    )
    status, lines = doctor(pi_config(site), machine)
    assert status == 1
    found = missing(lines)
    assert found[0] == (
        "camera: libcamera sees no camera — connect the camera's ribbon cable (with the power "
        "off) and check with rpicam-hello --list-cameras"
    )
    assert found[1].startswith("scanner: 2 keyboard-like input devices match (any)")
    assert len(found) == 2


def test_checks_are_small_functions_a_later_issue_can_extend() -> None:
    wanted = Wanted({"camera": "simulated", "scanner": "simulated", "indicator": "console"})

    def check_clock(wanted: Wanted, machine: Machine) -> Finding | None:
        return Finding("clock", False, "no real-time clock: time comes from NTP only")

    findings = diagnose(wanted, Machine(), [*CHECKS, check_clock])
    assert [f.part for f in findings] == ["camera", "scanner", "lights", "display", "clock"]
    assert str(findings[-1]) == "MISSING  clock: no real-time clock: time comes from NTP only"
