"""The drivers import only the standard library, Pillow and photosafe.protocol at module level.

Hardware libraries (picamera2, evdev, gpiozero, lgpio) may only be imported inside the backend
that needs them, so the package imports and its tests run on any machine.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

import photosafe.drivers

DRIVERS = Path(photosafe.drivers.__file__).resolve().parent
ALLOWED = {"PIL", "photosafe.drivers", "photosafe.protocol"}


def _top_level_imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


@pytest.mark.parametrize("module", sorted(DRIVERS.glob("*.py")), ids=lambda path: path.stem)
def test_module_imports_only_what_drivers_may(module: Path) -> None:
    for name in _top_level_imports(module):
        top = name.split(".")[0]
        if top in sys.stdlib_module_names or top == "__future__":
            continue
        assert any(name == ok or name.startswith(ok + ".") for ok in ALLOWED), name
