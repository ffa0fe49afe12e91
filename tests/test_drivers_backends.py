"""Backends are chosen by name from config, overridable from the environment; buttons press."""

from __future__ import annotations

import logging

import pytest

from photosafe.drivers.backends import (
    BackendUnavailable,
    button_backend,
    camera_backend,
    indicator_backend,
    scanner_backend,
)
from photosafe.drivers.button import NoButton, SimulatedButton
from photosafe.drivers.camera_simulated import SimulatedCamera
from photosafe.drivers.indicator_console import ConsoleIndicator
from photosafe.drivers.indicator_simulated import RecordingIndicator
from photosafe.drivers.scanner_simulated import SimulatedScanner

VARIABLES = ("PHOTOSAFE_CAMERA", "PHOTOSAFE_SCANNER", "PHOTOSAFE_INDICATOR", "PHOTOSAFE_BUTTON")


@pytest.fixture(autouse=True)
def _no_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    for variable in VARIABLES:
        monkeypatch.delenv(variable, raising=False)


def test_known_names_make_their_backends_with_options() -> None:
    camera = camera_backend("simulated", width=320, height=240, seed=3)
    assert isinstance(camera, SimulatedCamera)
    camera.start()
    assert camera.capture().width == 320
    assert isinstance(scanner_backend("simulated"), SimulatedScanner)
    assert isinstance(indicator_backend("console"), ConsoleIndicator)
    assert isinstance(indicator_backend("recording"), RecordingIndicator)
    assert isinstance(button_backend("simulated"), SimulatedButton)
    assert isinstance(button_backend("none"), NoButton)


def test_environment_overrides_the_configured_name_and_says_so(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("PHOTOSAFE_INDICATOR", "recording")
    with caplog.at_level(logging.WARNING, logger="photosafe.drivers.backends"):
        indicator = indicator_backend("console")
    assert isinstance(indicator, RecordingIndicator)
    assert [record.getMessage() for record in caplog.records] == ["backend_overridden"]
    assert caplog.records[0].__dict__["backend"] == "recording"


def test_an_empty_environment_variable_is_no_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PHOTOSAFE_BUTTON", "")
    assert isinstance(button_backend("none"), NoButton)


def test_unknown_name_lists_the_known_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(BackendUnavailable, match="unknown camera backend 'webcam'") as caught:
        camera_backend("webcam")
    assert "picamera2, simulated" in str(caught.value)
    monkeypatch.setenv("PHOTOSAFE_SCANNER", "keyboard")
    with pytest.raises(BackendUnavailable, match=r"'keyboard'.*evdev, simulated"):
        scanner_backend("simulated")


def test_picamera2_without_picamera2_says_how_a_pi_installs_it() -> None:
    """On this x86 machine there is no picamera2: the backend must say so, not crash."""
    with pytest.raises(BackendUnavailable, match="picamera2 cannot be imported") as caught:
        camera_backend("picamera2")
    assert "python3-picamera2" in str(caught.value)


@pytest.mark.parametrize("backend", [indicator_backend, button_backend])
def test_gpiozero_without_gpio_pins_says_what_is_missing(backend: object) -> None:
    with pytest.raises(BackendUnavailable, match="gpiozero found no GPIO pins"):
        backend("gpiozero")  # type: ignore[operator]


def test_simulated_button_calls_back_only_while_started() -> None:
    presses: list[str] = []
    button = SimulatedButton()
    assert not button.press()
    button.start(lambda: presses.append("press"))
    assert button.press()
    button.stop()
    assert not button.press()
    assert presses == ["press"]


def test_no_button_never_calls_back() -> None:
    button = NoButton()
    button.start(lambda: pytest.fail("a station without a button was pressed"))
    button.stop()
