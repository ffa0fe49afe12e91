"""A real Orthanc PACS for tests: one subprocess with its own folder, on free loopback ports.

Like broker.py for mosquitto. The config comes from the sandbox's own writer
(`provisioning.site_configs.write_orthanc_config`): storage and index in the folder, HTTP from
this host only, DICOM from the gateway's AE title at 127.0.0.1 only, the DICOMweb plugin at
/dicom-web/. The helper reads back what Orthanc stored through its REST API.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import requests

from photosafe.provisioning.sandbox import free_port
from photosafe.provisioning.site_configs import ORTHANC_AET, write_orthanc_config

ORTHANC = shutil.which("Orthanc") or "/usr/sbin/Orthanc"
START_TIMEOUT = 15.0
STOP_TIMEOUT = 10.0


class OrthancError(RuntimeError):
    """Orthanc did not start, or died."""


class Orthanc:
    """`Orthanc <folder>/orthanc.json`; its output goes to `<folder>/orthanc.log`."""

    def __init__(self, folder: Path, **options: object) -> None:
        self.folder = folder
        self.http_port, self.dicom_port = free_port(), free_port()
        self.aet = ORTHANC_AET
        self.config = write_orthanc_config(
            folder, http_port=self.http_port, dicom_port=self.dicom_port, **options
        )
        self.log_path = folder / "orthanc.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._http = requests.Session()  # a fresh one per run: stop() closes it

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def dicomweb(self) -> str:
        return f"{self.url}/dicom-web"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float = START_TIMEOUT) -> None:
        """Start Orthanc and wait until its REST API answers /system."""
        if not Path(ORTHANC).exists():
            raise OrthancError("Orthanc is not installed (make system-packages)")
        self._log = self.log_path.open("ab")
        self._http = requests.Session()
        self._proc = subprocess.Popen(
            [ORTHANC, str(self.config)],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=self._log,
            cwd=self.folder,
        )
        deadline = time.monotonic() + timeout
        while True:
            if self._proc.poll() is not None:
                code = self._proc.returncode
                self.stop()
                raise OrthancError(f"Orthanc exited with {code} on start:\n{self.log()}")
            try:
                if self._http.get(f"{self.url}/system", timeout=1).ok:
                    return
            except requests.ConnectionError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise OrthancError(f"Orthanc not answering after {timeout}s:\n{self.log()}")
            time.sleep(0.02)

    def stop(self) -> None:
        """SIGTERM and wait (SIGKILL if it does not go)."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGTERM)
            try:
                self._proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(STOP_TIMEOUT)
        self._proc = None
        if self._log is not None:
            self._log.close()
            self._log = None
        self._http.close()

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    # -- reading back through the REST API ------------------------------------------------------

    def get(self, path: str) -> Any:
        response = self._http.get(f"{self.url}{path}", timeout=5)
        response.raise_for_status()
        return response.json()

    def raw(self, path: str) -> bytes:
        response = self._http.get(f"{self.url}{path}", timeout=5)
        response.raise_for_status()
        return response.content

    def instances(self) -> list[str]:
        """Orthanc's ids of every instance it holds."""
        found = self.get("/instances")
        assert isinstance(found, list)
        return [str(i) for i in found]

    def tags(self, instance: str) -> dict[str, Any]:
        """The instance's tags by keyword (`/instances/<id>/simplified-tags`)."""
        tags = self.get(f"/instances/{instance}/simplified-tags")
        assert isinstance(tags, dict)
        return tags

    def frame(self, instance: str) -> bytes:
        """Frame 0's pixel data exactly as stored: for JPEG Baseline, the JPEG itself."""
        return self.raw(f"/instances/{instance}/frames/0/raw")

    def file(self, instance: str) -> bytes:
        """The whole DICOM file Orthanc stored."""
        return self.raw(f"/instances/{instance}/file")

    def clear(self) -> None:
        for instance in self.instances():
            self._http.delete(f"{self.url}/instances/{instance}", timeout=5).raise_for_status()


@contextlib.contextmanager
def running_orthanc(folder: Path, **options: object) -> Iterator[Orthanc]:
    """`with running_orthanc(folder) as pacs:` a started Orthanc, stopped afterwards."""
    pacs = Orthanc(folder, **options)
    pacs.start()
    try:
        yield pacs
    finally:
        pacs.stop()
