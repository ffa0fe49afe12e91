"""Canonical JSON: the one byte form of a JSON object that is signed or bound into HPKE.

UTF-8, keys sorted, no insignificant whitespace, non-ASCII escaped. Parsers re-encode what they
read and refuse input that is not already canonical, so one meaning has exactly one byte form.
"""

from __future__ import annotations

import json
from typing import Any


def dumps(value: Any) -> bytes:
    """Encode a JSON value canonically."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    ).encode("ascii")


def loads_canonical(data: bytes) -> Any:
    """Decode JSON and insist it was canonical; raises ValueError otherwise."""
    text = data.decode("ascii")  # canonical form is pure ASCII: raises UnicodeDecodeError
    value = json.loads(text)
    if dumps(value) != data:
        raise ValueError("JSON is not in canonical form")
    return value
