"""Zeroing plaintext in place, without allocating a second buffer of the same size.

`buf[:] = bytes(len(buf))` would briefly need as much memory again as the image it wipes (on a
Pi, one more 4 MiB per capture at the worst moment); zeroing from one small block keeps the
peak where it was. Pure: touches only the buffer it is given.
"""

from __future__ import annotations

_BLOCK = bytes(64 * 1024)


def zero_fill(buffer: bytearray | memoryview) -> None:
    """Overwrite every byte of a writable buffer with zero, in place."""
    view = memoryview(buffer).cast("B")
    try:
        for start in range(0, len(view), len(_BLOCK)):
            chunk = view[start : start + len(_BLOCK)]
            chunk[:] = _BLOCK[: len(chunk)]
            chunk.release()
    finally:
        view.release()
