"""Choosing a backend by name: from the station's config, or from the environment when developing.

`PHOTOSAFE_CAMERA`, `PHOTOSAFE_SCANNER`, `PHOTOSAFE_INDICATOR`, `PHOTOSAFE_BUTTON` and
`PHOTOSAFE_DISPLAY` override the configured name (say, a simulated camera on a Pi whose camera
is unplugged); an override is logged as a warning, so a station never runs on a simulation
unnoticed. Backends are imported only when chosen, so a hardware library is loaded only on the
hardware that has it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from photosafe.drivers.button import Button
from photosafe.drivers.camera import Camera
from photosafe.drivers.display import Display
from photosafe.drivers.errors import BackendUnavailable
from photosafe.drivers.indicator import Indicator
from photosafe.drivers.scanner import Scanner

__all__ = [
    "BackendUnavailable",
    "button_backend",
    "camera_backend",
    "display_backend",
    "indicator_backend",
    "scanner_backend",
]

_log = logging.getLogger(__name__)
T = TypeVar("T")

_HARDWARE_LATER = "the {name} {kind} backend comes with the hardware-drivers work"


def _simulated_camera(**options: Any) -> Camera:
    from photosafe.drivers.camera_simulated import SimulatedCamera

    return SimulatedCamera(**options)


def _picamera2_camera(**options: Any) -> Camera:
    from photosafe.drivers.camera_picamera2 import Picamera2Camera, require_picamera2

    if "canary" in options:
        raise BackendUnavailable("a canary is for the simulated camera only, not picamera2")
    if "adapter_factory" not in options:
        require_picamera2()
    return Picamera2Camera(**options)


def _simulated_scanner(**options: Any) -> Scanner:
    from photosafe.drivers.scanner_simulated import SimulatedScanner

    return SimulatedScanner(**options)


def _camera_scanner(camera: Camera | None = None, **options: Any) -> Scanner:
    from photosafe.drivers.scanner_camera import CameraScanner

    if camera is None:
        raise BackendUnavailable("the camera scanner needs the station's camera (camera=...)")
    return CameraScanner(camera, **options)


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


def _hid_scanner(**options: Any) -> Scanner:
    from photosafe.drivers.scanner_hid import HidScanner

    return HidScanner(**options)


def _gpio_indicator(**options: Any) -> Indicator:
    from photosafe.drivers.indicator_gpio import GpioIndicator

    return GpioIndicator(**options)


def _gpio_button(**options: Any) -> Button:
    from photosafe.drivers.button_gpio import GpioButton

    return GpioButton(**options)


def _framebuffer_display(**options: Any) -> Display:
    from photosafe.drivers.display_framebuffer import FramebufferDisplay

    return FramebufferDisplay(**options)


def _recording_display(**options: Any) -> Display:
    from photosafe.drivers.display_simulated import RecordingDisplay

    return RecordingDisplay(**options)


# A factory, or the reason a known name cannot be used yet.
CAMERAS: Mapping[str, Callable[..., Camera] | str] = {
    "simulated": _simulated_camera,
    "picamera2": _picamera2_camera,
}
SCANNERS: Mapping[str, Callable[..., Scanner] | str] = {
    "simulated": _simulated_scanner,
    "camera": _camera_scanner,
    "evdev": _hid_scanner,
}
INDICATORS: Mapping[str, Callable[..., Indicator] | str] = {
    "console": _console_indicator,
    "recording": _recording_indicator,
    "gpiozero": _gpio_indicator,
}
BUTTONS: Mapping[str, Callable[..., Button] | str] = {
    "simulated": _simulated_button,
    "none": _no_button,
    "gpiozero": _gpio_button,
}
DISPLAYS: Mapping[str, Callable[..., Display] | str] = {
    "framebuffer": _framebuffer_display,
    "simulated": _recording_display,
}


def camera_backend(name: str, **options: Any) -> Camera:
    """The camera called `name` (or $PHOTOSAFE_CAMERA), made with `options`."""
    return _select("camera", "PHOTOSAFE_CAMERA", name, CAMERAS, options)


def scanner_backend(name: str, *, camera: Camera | None = None, **options: Any) -> Scanner:
    """The scanner called `name` (or $PHOTOSAFE_SCANNER), made with `options`.

    `camera` (the station's camera) goes only to the "camera" scanner, which reads its frames.
    """

    def camera_scanner(**more: Any) -> Scanner:
        return _camera_scanner(camera, **more)

    known = {**SCANNERS, "camera": camera_scanner}
    return _select("scanner", "PHOTOSAFE_SCANNER", name, known, options)


def indicator_backend(name: str, **options: Any) -> Indicator:
    """The indicator called `name` (or $PHOTOSAFE_INDICATOR), made with `options`."""
    return _select("indicator", "PHOTOSAFE_INDICATOR", name, INDICATORS, options)


def button_backend(name: str, **options: Any) -> Button:
    """The button called `name` (or $PHOTOSAFE_BUTTON), made with `options`."""
    return _select("button", "PHOTOSAFE_BUTTON", name, BUTTONS, options)


def display_backend(name: str, **options: Any) -> Display:
    """The display called `name` (or $PHOTOSAFE_DISPLAY), made with `options`."""
    return _select("display", "PHOTOSAFE_DISPLAY", name, DISPLAYS, options)


def chosen(variable: str, name: str) -> str:
    """The backend name in effect: the environment override ($PHOTOSAFE_<KIND>) or `name`.

    Callers pass a backend the options of the backend actually chosen, so an override (say a
    simulated scanner on a bench) never receives the options of the configured hardware one.
    """
    return os.environ.get(variable, "").strip() or name


def _select(
    kind: str,
    variable: str,
    name: str,
    known: Mapping[str, Callable[..., T] | str],
    options: Mapping[str, Any],
) -> T:
    override = chosen(variable, name)
    if override != name:
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
