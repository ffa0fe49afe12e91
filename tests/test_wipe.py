"""zero_fill: plaintext is zeroed in place, without a second image-sized buffer."""

from __future__ import annotations

import tracemalloc

import pytest

from photosafe.protocol.wipe import zero_fill


@pytest.mark.parametrize("size", [0, 1, 65535, 65536, 65537, 300_001])
def test_every_byte_becomes_zero(size: int) -> None:
    buffer = bytearray(b"\xa5" * size)
    zero_fill(buffer)
    assert buffer == bytes(size)


def test_a_view_zeroes_only_its_own_bytes() -> None:
    buffer = bytearray(b"\xff" * 10)
    zero_fill(memoryview(buffer)[2:8])
    assert buffer == b"\xff\xff" + bytes(6) + b"\xff\xff"


def test_wiping_four_mib_allocates_far_less_than_four_mib() -> None:
    buffer = bytearray(b"\x5a" * (4 * 1024 * 1024))
    tracemalloc.start()
    try:
        zero_fill(buffer)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert buffer.count(0) == len(buffer)
    assert peak < 64 * 1024  # not `bytes(len(buffer))`
