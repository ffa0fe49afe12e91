"""`photosafe doctor`: can this machine run the station its configuration describes?

It reads the config, takes each part's backend as the station would (the environment overrides
`PHOTOSAFE_CAMERA`, `_SCANNER`, `_INDICATOR`, `_BUTTON` and `_DISPLAY` included), and looks for
what that backend needs: the library, the device node, the permission, the device itself. Every
answer is one line, `ok` or `MISSING`, in words an engineer at the station can act on. Then the
operational checks (doctor_ops.py): key and certificate, CA, gateway and fleet keys, the broker
over TLS as this station, clock, swap, core dumps and the unit's sandbox, each `ok`, `WARNING`
(the station can work; look at it) or `FAILED`. The exit status is 1 when anything is missing or
failed, else 0: warnings alone do not fail. Without a usable config it says why, then checks for
the hardware of a Raspberry Pi station (picamera2, evdev, gpiozero).

Each check is a small function `(Wanted, Machine) -> Finding | None` (None: does not apply to
this configuration) in `CHECKS`; more can be added there. `Machine` is where the checks look,
so tests can point them at a fake /dev, /sys and /proc, a clock and a broker probe.
"""

from __future__ import annotations

import datetime as dt
import importlib.util
import os
import pwd
import sys
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, TextIO

from photosafe.daemon import doctor_ops
from photosafe.daemon.config import ConfigError, StationConfig, load_config
from photosafe.daemon.doctor_ops import OPERATIONS, Finding
from photosafe.daemon.hardening import clock_synchronised
from photosafe.drivers import backends
from photosafe.drivers.display import DisplayError
from photosafe.drivers.errors import DriverError
from photosafe.drivers.scanner_hid import InputDeviceInfo, list_input_devices, select_device

__all__ = ["CHECKS", "HARDWARE", "Finding", "Machine", "Wanted", "diagnose", "run"]

PARTS = ("camera", "scanner", "indicator", "button", "display")
_LABELS = {"indicator": "lights"}  # what the engineer calls them
_VARIABLES = {part: f"PHOTOSAFE_{part.upper()}" for part in PARTS}
_KNOWN: Mapping[str, Mapping[str, object]] = {
    "camera": backends.CAMERAS,
    "scanner": backends.SCANNERS,
    "indicator": backends.INDICATORS,
    "button": backends.BUTTONS,
    "display": backends.DISPLAYS,
}
# A Raspberry Pi station's backends: what is checked when the config cannot be read.
PI_STATION = {
    "camera": "picamera2",
    "scanner": "evdev",
    "indicator": "gpiozero",
    "button": "gpiozero",
}


@dataclass(frozen=True)
class Wanted:
    """The backend chosen for each part, and which environment variable chose it (if one did)."""

    names: Mapping[str, str | None]
    overridden: Mapping[str, str] = field(default_factory=dict)
    assumed: bool = False  # no usable config: a Raspberry Pi station's backends
    config: StationConfig | None = None  # for the operational checks
    environ: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, config: StationConfig | None, environ: Mapping[str, str]) -> Wanted:
        drivers = config.drivers if config is not None else None
        names: dict[str, str | None] = {}
        overridden: dict[str, str] = {}
        for part in PARTS:
            configured = getattr(drivers, part, None) if drivers else PI_STATION.get(part)
            override = environ.get(_VARIABLES[part], "").strip()
            if override and override != configured:
                overridden[part] = _VARIABLES[part]
            names[part] = override or configured
        return cls(names, overridden, assumed=config is None, config=config, environ=dict(environ))


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


class Machine:
    """Where the checks look. The defaults are this machine; tests give a fake tree."""

    def __init__(
        self,
        dev: Path = Path("/dev"),
        sys_root: Path = Path("/sys"),
        *,
        importable: Callable[[str], bool] = _importable,
        gpio: Callable[[], str | None] | None = None,
        cameras: Callable[[], list[str]] | None = None,
        input_devices: Callable[[Path], Sequence[InputDeviceInfo]] | None = None,
        proc: Path = Path("/proc"),
        clock: Callable[[], bool | None] = clock_synchronised,
        now: Callable[[], dt.datetime] = doctor_ops.utcnow,
        core_limit: Callable[[], tuple[int, int]] = doctor_ops.core_limit,
        broker_timeout_s: float = 5.0,
    ) -> None:
        self.dev = dev
        self.sys = sys_root
        self.proc = proc
        self.clock = clock
        self.now = now
        self.core_limit = core_limit
        self.broker_timeout_s = broker_timeout_s
        self.importable = importable
        self._gpio = gpio or _probe_gpio
        self._cameras = cameras or _probe_cameras
        self._input_devices = input_devices or (lambda folder: list_input_devices(str(folder)))

    @cached_property
    def gpio_problem(self) -> str | None:
        """Why gpiozero cannot drive pins here, or None if it can."""
        return self._gpio()

    @cached_property
    def cameras(self) -> list[str] | str:
        """The cameras libcamera sees, or why it could not be asked."""
        try:
            return self._cameras()
        except Exception as exc:  # libcamera failing in any way is the answer
            return f"{type(exc).__name__}: {exc}"

    def input_devices(self) -> Sequence[InputDeviceInfo]:
        return self._input_devices(self.dev / "input")

    def probe_broker(self, config: StationConfig) -> Finding:
        """Connect to the configured broker as this station (doctor_ops.probe_broker)."""
        return doctor_ops.probe_broker(config, self.broker_timeout_s)

    def nodes(self, pattern: str) -> list[Path]:
        return sorted(self.dev.glob(pattern)) if self.dev.is_dir() else []


def _probe_gpio() -> str | None:
    from gpiozero import Device

    if Device.pin_factory is not None:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # gpiozero warns about each pin library it falls back from
        try:
            Device.ensure_pin_factory()
        except Exception as exc:
            return str(exc) or type(exc).__name__
    factory: Any = Device.pin_factory
    Device.pin_factory = None  # a look, not a claim
    factory.close()
    return None


def _probe_cameras() -> list[str]:
    from picamera2 import Picamera2

    return [str(info.get("Model", "unknown model")) for info in Picamera2.global_camera_info()]


Check = Callable[[Wanted, Machine], Finding | None]

# -- each part's backend --------------------------------------------------------------------------

_DESCRIPTIONS = {
    ("camera", "simulated"): "a rendered test scene, not a camera",
    ("camera", "picamera2"): "the Raspberry Pi camera",
    ("scanner", "simulated"): "scans are typed or fed, not read",
    ("scanner", "evdev"): "a USB keyboard-wedge barcode scanner",
    ("scanner", "camera"): "barcodes read from the camera's frames",
    ("indicator", "console"): "signals printed on the console",
    ("indicator", "recording"): "signals recorded for tests",
    ("indicator", "gpiozero"): "LEDs and buzzer on GPIO",
    ("button", "simulated"): "presses are fed, not read",
    ("button", "none"): "no capture button: capture from a command card",
    ("button", "gpiozero"): "a capture button on GPIO",
    ("display", "framebuffer"): "a screen on the Linux framebuffer",
    ("display", "simulated"): "a recording display, for tests",
}


def _backend(part: str) -> Check:
    def check(wanted: Wanted, machine: Machine) -> Finding | None:
        label = _LABELS.get(part, part)
        name = wanted.names.get(part)
        if name is None:
            if part == "display":
                return Finding(label, True, "none configured: intimate images are refused here")
            return None
        known = _KNOWN[part]
        source = "a Raspberry Pi station's" if wanted.assumed else "configured"
        if part in wanted.overridden:
            source = f"from ${wanted.overridden[part]}"
        factory = known.get(name)
        if factory is None:
            names = ", ".join(sorted(known))
            return Finding(label, False, f"unknown backend {name!r} ({source}); known: {names}")
        if isinstance(factory, str):
            return Finding(label, False, f"{name} ({source}) cannot be used: {factory}")
        what = _DESCRIPTIONS.get((part, name))
        return Finding(label, True, f"{name} ({source})" + (f": {what}" if what else ""))

    check.__name__ = f"check_{part}_backend"
    return check


# -- camera -------------------------------------------------------------------------------------


def check_picamera2_installed(wanted: Wanted, machine: Machine) -> Finding | None:
    if wanted.names.get("camera") != "picamera2":
        return None
    if machine.importable("picamera2"):
        return Finding("camera", True, "picamera2 is installed")
    return Finding(
        "camera",
        False,
        "picamera2 is not installed — on Raspberry Pi OS: sudo apt install python3-picamera2 "
        "and create the venv with --system-site-packages",
    )


def check_camera_present(wanted: Wanted, machine: Machine) -> Finding | None:
    if wanted.names.get("camera") != "picamera2":
        return None
    advice = (
        "connect the camera's ribbon cable (with the power off) and check with "
        "rpicam-hello --list-cameras"
    )
    if machine.importable("picamera2"):
        cameras = machine.cameras
        if isinstance(cameras, str):
            return Finding("camera", False, f"libcamera could not list cameras ({cameras})")
        if cameras:
            return Finding("camera", True, f"libcamera sees: {', '.join(cameras)}")
        return Finding("camera", False, f"libcamera sees no camera — {advice}")
    nodes = machine.nodes("video*") + machine.nodes("media*")
    if nodes:
        return Finding("camera", True, f"camera devices: {', '.join(p.name for p in nodes)}")
    return Finding("camera", False, f"no camera found: no /dev/video* or /dev/media* — {advice}")


# -- scanner ------------------------------------------------------------------------------------


def check_evdev_installed(wanted: Wanted, machine: Machine) -> Finding | None:
    if wanted.names.get("scanner") != "evdev":
        return None
    if machine.importable("evdev"):
        return Finding("scanner", True, "evdev is installed")
    return Finding(
        "scanner",
        False,
        "evdev is not installed — pip install evdev (or the photosafe[pi] extra); "
        "building it needs gcc and linux-libc-dev",
    )


def check_scanner_present(wanted: Wanted, machine: Machine) -> Finding | None:
    if wanted.names.get("scanner") != "evdev":
        return None
    folder = machine.dev / "input"
    if not folder.is_dir():
        return Finding(
            "scanner",
            False,
            f"no input devices: {folder} does not exist — plug in the USB barcode scanner",
        )
    events = machine.nodes("input/event*")
    if not events:
        return Finding("scanner", False, f"no input devices in {folder} — plug in the scanner")
    if not any(os.access(p, os.R_OK | os.W_OK) for p in events):
        user = pwd.getpwuid(os.geteuid()).pw_name
        return Finding(
            "scanner",
            False,
            f"{user} cannot open {folder}/event* — add the service user to the input group",
        )
    if not machine.importable("evdev"):
        return None  # said above
    try:
        scanner = select_device(machine.input_devices())
    except DriverError as exc:
        return Finding("scanner", False, str(exc))
    return Finding("scanner", True, f"found {scanner}")


# -- lights and button --------------------------------------------------------------------------


def _gpio(part: str) -> Check:
    def check(wanted: Wanted, machine: Machine) -> Finding | None:
        label = _LABELS.get(part, part)
        if wanted.names.get(part) != "gpiozero":
            return None
        if not machine.importable("gpiozero"):
            return Finding(
                label, False, "gpiozero is not installed — pip install gpiozero (or photosafe[pi])"
            )
        problem = machine.gpio_problem
        if problem is None:
            return Finding(label, True, "gpiozero can drive this machine's GPIO pins")
        return Finding(
            label,
            False,
            f"gpiozero found no GPIO pins ({problem}) — this is not a Raspberry Pi, or its GPIO "
            "library is missing: sudo apt install python3-lgpio",
        )

    check.__name__ = f"check_{part}_gpio"
    return check


# -- display ------------------------------------------------------------------------------------


def check_framebuffer(wanted: Wanted, machine: Machine) -> Finding | None:
    if wanted.names.get("display") != "framebuffer":
        return None
    from photosafe.drivers.display_framebuffer import read_geometry

    device = machine.dev / "fb0"
    if not device.exists():
        return Finding(
            "display",
            False,
            f"{device} does not exist — connect the display (DSI or HDMI) and enable its "
            "driver (dtoverlay=vc4-kms-v3d in /boot/firmware/config.txt)",
        )
    if not device.is_char_device():
        return Finding("display", False, f"{device} is not a framebuffer device")
    if not os.access(device, os.W_OK):
        return Finding("display", False, f"cannot write {device} — add the service user to video")
    try:
        g = read_geometry(machine.sys / "class" / "graphics" / "fb0")
    except DisplayError as exc:
        return Finding("display", False, str(exc))
    return Finding("display", True, f"{device}: {g.width}x{g.height}, {g.pixel_format}")


HARDWARE: list[Check] = [
    _backend("camera"),
    check_picamera2_installed,
    check_camera_present,
    _backend("scanner"),
    check_evdev_installed,
    check_scanner_present,
    _backend("indicator"),
    _gpio("indicator"),
    _backend("button"),
    _gpio("button"),
    _backend("display"),
    check_framebuffer,
]
CHECKS: list[Check] = [*HARDWARE, *OPERATIONS]


def diagnose(wanted: Wanted, machine: Machine, checks: Sequence[Check] = CHECKS) -> list[Finding]:
    return [f for check in checks if (f := check(wanted, machine)) is not None]


def run(
    config_path: Path,
    *,
    machine: Machine | None = None,
    environ: Mapping[str, str] | None = None,
    out: TextIO | None = None,
    checks: Sequence[Check] = CHECKS,
) -> int:
    """`photosafe doctor`: prints one line per finding; 0 if the station can work, else 1."""
    out = out or sys.stdout
    environ = os.environ if environ is None else environ
    findings: list[Finding] = []
    config: StationConfig | None = None
    try:
        config = load_config(config_path)
    except ConfigError as exc:
        findings += [Finding("config", False, problem) for problem in exc.problems]
        findings.append(
            Finding("config", False, "unusable: checking for a Raspberry Pi station's hardware")
        )
    else:
        s = config.station
        findings.append(
            Finding("config", True, f"station {config.device_id} ({s.kind.value}, {s.location})")
        )
    findings += diagnose(Wanted.of(config, environ), machine or Machine(), checks)
    print(f"photosafe doctor: {config_path}", file=out)
    for finding in findings:
        print(f"  {finding}", file=out)
    missing = sum(f.failure for f in findings)
    warned = sum(f.warning for f in findings)
    if warned:
        print(f"{warned} warning(s): the station can work; see what each says.", file=out)
    if missing:
        print(f"{missing} problem(s): this station cannot work as configured.", file=out)
        return 1
    print("everything the configuration needs is here.", file=out)
    return 0
