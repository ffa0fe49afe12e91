"""The house: one `photosafe` namespace, no bare folder imports, three working commands."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PARTS = ("protocol", "drivers", "daemon", "gateway", "provisioning")
COMMANDS = ("photosafe", "photosafe-gateway", "photosafe-provision")


@pytest.mark.parametrize("part", PARTS)
def test_each_folder_is_a_typed_photosafe_package(part: str) -> None:
    module = importlib.import_module(f"photosafe.{part}")
    assert module.__file__ is not None
    assert (Path(module.__file__).parent / "py.typed").exists()


@pytest.mark.parametrize("bare", ["drivers", "daemon", "protocol", "gateway", "provisioning"])
def test_bare_folder_import_fails(bare: str) -> None:
    # Run from the repository root, where the bare folders sit, with a clean sys.path entry for
    # the current directory as a user would have it in `python -c`.
    result = subprocess.run(
        [sys.executable, "-c", f"import {bare}"],
        cwd=REPO / "tests",
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "PYTHONPATH": ""},
    )
    assert result.returncode != 0
    assert "ModuleNotFoundError" in result.stderr


@pytest.mark.parametrize("command", COMMANDS)
def test_command_has_help_and_version(command: str) -> None:
    exe = Path(sys.executable).parent / command
    help_run = subprocess.run([exe, "--help"], capture_output=True, text=True, check=True)
    assert f"usage: {command}" in help_run.stdout
    version_run = subprocess.run([exe, "--version"], capture_output=True, text=True, check=True)
    assert version_run.stdout.startswith(f"{command} ")
    assert any(ch.isdigit() for ch in version_run.stdout)
