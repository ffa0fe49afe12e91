"""Choosing a backend by name: from the station's config, or from the environment when developing.

`PHOTOSAFE_CAMERA`, `PHOTOSAFE_SCANNER`, `PHOTOSAFE_INDICATOR` and `PHOTOSAFE_BUTTON` override the
configured name (say, a simulated camera on a Pi whose camera is unplugged); an override is
logged as a warning, so a station never runs on a simulation unnoticed. Backends are imported
only when chosen, so a hardware library is loaded only on the hardware that has it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from photosafe.drivers.button import Button
from photosafe.drivers.camera import Camera
from photosafe.drivers.errors import BackendUnavailable
from photosafe.drivers.indicator import Indicator
from photosafe.drivers.scanner import Scanner

__all__ = [
    "BackendUnavailable",
    "button_backend",
    "camera_backend",
    "indicator_backend",
    "scanner_backend",
]

_log = logging.getLogger(__name__)
T = TypeVar("T")

_HARDWARE_LATER = "the {name} {kind} backend comes with the hardware-drivers work"


def _simulated_camera(**options: Any) -> Camera:
    from photosafe.drivers.camera_simulated import SimulatedCamera

    return SimulatedCamera(**options)


def _simulated_scanner(**options: Any) -> Scanner:
    from photosafe.drivers.scanner_simulated import SimulatedScanner

    return SimulatedScanner(**options)


def _console_indicator(**options: Any) -> Indicator:
    from photosafe.drivers.indicator_console import ConsoleIndicator

    return ConsoleIndicator(**options)


def _recording_indicator(**options: Any) -> Indicator:
    from photosafe.drivers.indicator_simulated import RecordingIndicator

    return RecordingIndicator(**options)


def _simulated_button(**options: Any) -> Button:
    from photosafe.drivers.button import SimulatedButton

    return SimulatedButton(**options)


def _no_button(**options: Any) -> Button:
    from photosafe.drivers.button import NoButton

    return NoButton(**options)


# A factory, or the reason a known name cannot be used yet.
CAMERAS: Mapping[str, Callable[..., Camera] | str] = {
    "simulated": _simulated_camera,
    "picamera2": _HARDWARE_LATER.format(name="picamera2", kind="camera")
    + "; on a Raspberry Pi it needs Raspberry Pi OS's python3-picamera2"
    " (apt install python3-picamera2, and a venv made with --system-site-packages)",
}
SCANNERS: Mapping[str, Callable[..., Scanner] | str] = {
    "simulated": _simulated_scanner,
    "evdev": _HARDWARE_LATER.format(name="evdev", kind="scanner"),
}
INDICATORS: Mapping[str, Callable[..., Indicator] | str] = {
    "console": _console_indicator,
    "recording": _recording_indicator,
    "gpiozero": _HARDWARE_LATER.format(name="gpiozero", kind="indicator"),
}
BUTTONS: Mapping[str, Callable[..., Button] | str] = {
    "simulated": _simulated_button,
    "none": _no_button,
    "gpiozero": _HARDWARE_LATER.format(name="gpiozero", kind="button"),
}


def camera_backend(name: str, **options: Any) -> Camera:
    """The camera called `name` (or $PHOTOSAFE_CAMERA), made with `options`."""
    return _select("camera", "PHOTOSAFE_CAMERA", name, CAMERAS, options)


def scanner_backend(name: str, **options: Any) -> Scanner:
    """The scanner called `name` (or $PHOTOSAFE_SCANNER), made with `options`."""
    return _select("scanner", "PHOTOSAFE_SCANNER", name, SCANNERS, options)


def indicator_backend(name: str, **options: Any) -> Indicator:
    """The indicator called `name` (or $PHOTOSAFE_INDICATOR), made with `options`."""
    return _select("indicator", "PHOTOSAFE_INDICATOR", name, INDICATORS, options)


def button_backend(name: str, **options: Any) -> Button:
    """The button called `name` (or $PHOTOSAFE_BUTTON), made with `options`."""
    return _select("button", "PHOTOSAFE_BUTTON", name, BUTTONS, options)


def _select(
    kind: str,
    variable: str,
    name: str,
    known: Mapping[str, Callable[..., T] | str],
    options: Mapping[str, Any],
) -> T:
    override = os.environ.get(variable, "").strip()
    if override and override != name:
        _log.warning(
            "backend_overridden",
            extra={"kind": kind, "configured": name, "backend": override, "variable": variable},
        )
        name = override
    factory = known.get(name)
    if factory is None:
        names = ", ".join(sorted(known))
        raise BackendUnavailable(f"unknown {kind} backend {name!r}: known {kind}s are {names}")
    if isinstance(factory, str):
        raise BackendUnavailable(factory)
    return factory(**options)
