"""Plaintext that must not linger: the captured JPEG between the camera and the seal.

`SecretBuffer` owns one bytearray and zeroes it in place when wiped: explicitly, on leaving a
`with` block (also on an exception), or at the latest when it is garbage collected. It refuses
the easy ways of copying it by accident (`bytes()`, `bytearray()`, pickle, `copy`), and its repr
never shows content.

This is best effort, because this is Python. It cannot guarantee:
- that no other copy exists: encoders, `io.BytesIO` growth (realloc) and Pillow's 64 KiB write
  chunks leave fragments in freed heap memory that nothing in Python can reach to zero;
- anything about what a caller does with `view()`: a view stays valid after a wipe (it then reads
  zeros), but `bytes(view)` or hashing libraries that copy make copies this class cannot see;
- that pages never reach swap or a core dump: the daemon's process hardening (no dumps, mlockall,
  MemorySwapMax=0) covers that, not this class;
- safety against a wipe on one thread while another reads a view: a buffer has one owner.
"""

from __future__ import annotations

import io
from types import TracebackType
from typing import NoReturn, SupportsIndex

from photosafe.protocol.wipe import zero_fill


class SecretBuffer:
    """A bytearray of plaintext that is zeroed in place when its owner is done with it."""

    __slots__ = ("_data", "_wiped")

    def __init__(self, data: bytearray) -> None:
        """Takes `data` without copying it: the caller hands over ownership (and the wipe)."""
        if type(data) is not bytearray:
            raise TypeError("SecretBuffer takes a bytearray, which it then owns")
        self._data = data
        self._wiped = False

    @classmethod
    def from_bytesio(cls, stream: io.BytesIO) -> SecretBuffer:
        """Moves what was written to `stream` into a new SecretBuffer.

        One copy is made; the stream's own buffer is then zeroed and the stream closed, also when
        the copy fails. Camera backends encode into a BytesIO (picamera2's fast JPEG path insists
        on a real BytesIO), so this is the one way a JPEG becomes a SecretBuffer.
        """
        try:
            with stream.getbuffer() as written:
                try:
                    return cls(bytearray(written))
                finally:
                    zero_fill(written)
        finally:
            stream.close()

    @property
    def wiped(self) -> bool:
        return self._wiped

    def view(self) -> memoryview:
        """A read-only view of the plaintext (no copy). Raises ValueError after a wipe."""
        if self._wiped:
            raise ValueError("the secret buffer was wiped")
        return memoryview(self._data).toreadonly()

    def reader(self) -> io.BufferedReader:
        """A read-only file over the plaintext, for decoders (Pillow) that want a file: it reads
        through `view()`, so the JPEG is not copied whole (only buffer-sized chunks are)."""
        return io.BufferedReader(_ViewReader(self.view()))

    def wipe(self) -> None:
        """Zeroes the plaintext in place. Idempotent; views already handed out then read zeros."""
        if not self._wiped:
            # In place, block by block: no resize, no move, no temporary copy and no second
            # image-sized buffer of zeros.
            zero_fill(self._data)
            self._wiped = True

    def __len__(self) -> int:
        """The number of plaintext bytes held: 0 once wiped."""
        return 0 if self._wiped else len(self._data)

    def __enter__(self) -> SecretBuffer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.wipe()

    def __del__(self) -> None:
        # A safety net, not the plan: owners wipe explicitly. `_data` is unset if __init__ raised.
        if hasattr(self, "_data"):
            self.wipe()

    def __repr__(self) -> str:
        return "SecretBuffer(<wiped>)" if self._wiped else f"SecretBuffer(<{len(self)} bytes>)"

    def __bytes__(self) -> NoReturn:
        raise TypeError("SecretBuffer refuses bytes(): read it through view(), then wipe() it")

    def __reduce_ex__(self, protocol: SupportsIndex) -> NoReturn:
        # pickle, copy.copy and copy.deepcopy all come through here.
        raise TypeError("SecretBuffer cannot be pickled or copied")


class _ViewReader(io.RawIOBase):
    """A read-only, seekable raw file over a memoryview."""

    def __init__(self, view: memoryview) -> None:
        self._view = view
        self._at = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        chunk = self._view[self._at : self._at + len(buffer)]
        buffer[: len(chunk)] = chunk
        self._at += len(chunk)
        return len(chunk)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._at, io.SEEK_END: len(self._view)}[whence]
        self._at = max(0, base + offset)
        return self._at

    def tell(self) -> int:
        return self._at
