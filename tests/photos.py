"""Real JPEG captures for the DICOM tests: encoded by Pillow, sealed and opened (test PKI)."""

from __future__ import annotations

import datetime as dt
import io
import re
import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Any

from keys import manifest_for, shared_pki
from PIL import Image

from photosafe.gateway.service import CaptureHandler, Reply
from photosafe.gateway.sink import Sink
from photosafe.protocol import ack, envelope, topics
from photosafe.protocol.ack import Receipt
from photosafe.protocol.envelope import DeviceTrust, Opened
from photosafe.protocol.manifest import BodySite, Laterality, Manifest

WIDTH, HEIGHT = 64, 48
FOREARM = BodySite(snomed_code="14975008", label="Forearm", laterality=Laterality.LEFT)
BST = dt.timezone(dt.timedelta(hours=1))


def jpeg(*, subsampling: int | None = None, mode: str = "RGB", progressive: bool = False) -> bytes:
    """A small red photo (grey for mode L), as the simulated camera encodes it (Pillow)."""
    out = io.BytesIO()
    picture = Image.new(mode, (WIDTH, HEIGHT), "red" if mode == "RGB" else 128)
    options: dict[str, Any] = {"quality": 90, "progressive": progressive}
    if subsampling is not None:
        options["subsampling"] = subsampling
    picture.save(out, "JPEG", **options)
    return out.getvalue()


PHOTO = jpeg()


def padded(picture: bytes) -> bytes:
    """The JPEG as a DICOM fragment holds it: padded with one zero byte to an even length."""
    return picture + b"\x00" * (len(picture) % 2)


def manifest(
    picture: bytes = PHOTO,
    capture: uuid.UUID | None = None,
    device: str = "ward-a-01",
    **changes: Any,
) -> Manifest:
    """keys.manifest_for with real image figures, a body site, and `changes` on top."""
    base = manifest_for(picture, device, capture or uuid.uuid4())
    fields = {
        **base.model_dump(),
        "body_site": FOREARM,
        "captured_at": dt.datetime(2026, 6, 25, 9, 30, 15, 250000, tzinfo=BST),
        **changes,
    }
    return Manifest.model_validate(fields)


def seal(m: Manifest, picture: bytes = PHOTO) -> bytes:
    p = shared_pki()
    device = p.device(m.device_id)
    return envelope.seal(
        m,
        picture,
        device_key=device.key,
        device_cert=device.cert,
        recipient=p.recipient.public_key(),
    )


def open_capture(sealed: bytes) -> Opened:
    p = shared_pki()
    return envelope.open_sealed(
        sealed,
        recipient_keys={envelope.key_id(p.recipient.public_key()): p.recipient},
        trust=DeviceTrust(p.ca.cert),
    )


def opened(picture: bytes = PHOTO, **changes: Any) -> Opened:
    """A verified capture of `picture`, as the gateway has it before filing."""
    return open_capture(seal(manifest(picture, **changes), picture))


def handler(sink: Sink) -> CaptureHandler:
    p = shared_pki()
    return CaptureHandler(
        recipient_keys={envelope.key_id(p.recipient.public_key()): p.recipient},
        trust=DeviceTrust(p.ca.cert),
        signing_key=p.signing,
        sink=sink,
    )


def verified(reply: Reply | None, device: str = "ward-a-01") -> Receipt:
    """The ack as the station sees it: signature checked under the pinned key."""
    assert reply is not None, "no ack"
    assert reply.ack_topic == topics.ack(device)
    return ack.verify(
        reply.ack_bytes, pinned=ack.pin(shared_pki().signing.public_key()), device=device
    )


DCIODVFY = shutil.which("dciodvfy")
# dciodvfy's warnings that are expected: our private block, our private coding scheme, and (no
# body site) a Laterality left empty, which it allows "only when actually unknown": as it is.
EXPECTED_WARNINGS = (
    re.compile(r"^\(0x0011,0x10\d\d\) +\? +- Warning - Unrecognized tag"),
    re.compile(r"^Warning - Unrecognized defined term <99PHOTOSAFESTAFF>"),
    re.compile(r"^Warning - is only permitted to be empty when actually unknown;.*<Laterality>$"),
)


def dciodvfy(part10: bytes, folder: Path) -> list[str]:
    """dciodvfy's errors and unexpected warnings for this DICOM file (Debian dicom3tools)."""
    assert DCIODVFY is not None, "dciodvfy is not installed"
    path = folder / "instance.dcm"
    path.write_bytes(part10)
    run = subprocess.run(
        [DCIODVFY, str(path)], check=False, capture_output=True, text=True, timeout=30
    )
    lines = [line for line in (run.stdout + run.stderr).splitlines() if line.strip()]
    assert "VLPhotographicImage" in lines, lines  # it recognised the IOD
    return [
        line
        for line in lines
        if "Error" in line
        or ("Warning" in line and not any(p.search(line) for p in EXPECTED_WARNINGS))
    ]
