"""SecretBuffer: the plaintext JPEG is zeroed in place, and not copied by accident.

The test keeps its own reference to the bytearray it hands over, which is how it sees the wipe.
"""

from __future__ import annotations

import copy
import gc
import io
import pickle

import pytest

from photosafe.drivers.secret import SecretBuffer

PLAINTEXT = b"\xff\xd8 pretend this is a patient photograph \xff\xd9"


def test_wipe_zeroes_the_owned_bytearray_in_place() -> None:
    data = bytearray(PLAINTEXT)
    secret = SecretBuffer(data)
    assert bytes(secret.view()) == PLAINTEXT
    assert len(secret) == len(PLAINTEXT)
    handed_out = secret.view()

    secret.wipe()

    assert data == bytearray(len(PLAINTEXT))
    assert bytes(handed_out) == bytes(len(PLAINTEXT))  # old views read zeros
    assert secret.wiped
    assert len(secret) == 0
    with pytest.raises(ValueError, match="wiped"):
        secret.view()
    secret.wipe()  # idempotent
    assert secret.wiped


def test_takes_the_bytearray_without_copying_and_refuses_bytes() -> None:
    data = bytearray(PLAINTEXT)
    secret = SecretBuffer(data)
    data[0] = 0x00
    assert secret.view()[0] == 0x00
    with pytest.raises(TypeError, match="bytearray"):
        SecretBuffer(PLAINTEXT)  # type: ignore[arg-type]  # immutable bytes cannot be wiped


def test_view_is_read_only() -> None:
    view = SecretBuffer(bytearray(PLAINTEXT)).view()
    assert view.readonly
    with pytest.raises(TypeError):
        view[0] = 0


def test_context_manager_wipes_on_exit() -> None:
    data = bytearray(PLAINTEXT)
    with SecretBuffer(data) as secret:
        assert bytes(secret.view()[3:10]) == b"pretend"
    assert secret.wiped
    assert not any(data)


def test_context_manager_wipes_on_an_exception() -> None:
    data = bytearray(PLAINTEXT)
    with pytest.raises(RuntimeError), SecretBuffer(data):
        raise RuntimeError("sealing failed")
    assert not any(data)


def test_wiped_when_garbage_collected() -> None:
    data = bytearray(PLAINTEXT)
    secret = SecretBuffer(data)
    del secret
    gc.collect()
    assert not any(data)


@pytest.mark.parametrize(
    "copier",
    [bytes, bytearray, pickle.dumps, copy.copy, copy.deepcopy, list],
    ids=["bytes", "bytearray", "pickle", "copy", "deepcopy", "list"],
)
def test_refuses_to_be_copied(copier: object) -> None:
    secret = SecretBuffer(bytearray(PLAINTEXT))
    with pytest.raises(TypeError):
        copier(secret)  # type: ignore[operator]
    assert bytes(secret.view()) == PLAINTEXT


def test_repr_never_shows_content() -> None:
    secret = SecretBuffer(bytearray(PLAINTEXT))
    assert repr(secret) == f"SecretBuffer(<{len(PLAINTEXT)} bytes>)"
    assert "pretend" not in repr(secret) and "pretend" not in str(secret)
    secret.wipe()
    assert repr(secret) == "SecretBuffer(<wiped>)"


class _SnapshotAtClose(io.BytesIO):
    """A BytesIO that remembers what its buffer held when it was closed."""

    at_close: bytes | None = None

    def close(self) -> None:
        if not self.closed:
            with self.getbuffer() as buffer:
                self.at_close = bytes(buffer)
        super().close()


def test_from_bytesio_copies_once_then_zeroes_and_closes_the_stream() -> None:
    stream = _SnapshotAtClose()
    stream.write(PLAINTEXT)

    secret = SecretBuffer.from_bytesio(stream)

    assert bytes(secret.view()) == PLAINTEXT
    assert stream.closed
    assert stream.at_close == bytes(len(PLAINTEXT))


def test_reader_is_a_seekable_file_over_the_plaintext_and_refused_after_wipe() -> None:
    buffer = SecretBuffer(bytearray(b"\xff\xd8 jpeg bytes \xff\xd9"))
    with buffer.reader() as file:
        assert file.read() == b"\xff\xd8 jpeg bytes \xff\xd9"
        file.seek(2)
        assert file.read(4) == b" jpe"
    buffer.wipe()
    with pytest.raises(ValueError, match="wiped"):
        buffer.reader()
