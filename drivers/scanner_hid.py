"""A USB keyboard-wedge barcode scanner read through evdev: the Pi station's scanner backend.

Such a scanner is a USB keyboard that types each barcode and presses Enter. Two parts:

- `KeyDecoder` (photosafe.drivers.scanner_keys, re-exported here with its keymaps and refusals)
  turns the key events back into Scans, or ScanRefused with a reason and never the text.
- `HidScanner` (a Scanner, see photosafe.drivers.scanner) finds the scanner among the input
  devices by name, by USB vendor/product id, or by path, `grab()`s it so that no scan ever
  reaches a console, and reads it on its own thread, reopening it when it is unplugged and back.

evdev itself is imported only when a device is listed or opened. The service user needs the
`input` group to open the device.
"""

from __future__ import annotations

import logging
import os
import select
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Protocol

from photosafe.drivers.errors import BackendUnavailable, DriverError
from photosafe.drivers.scanner import Scan
from photosafe.drivers.scanner_keys import (
    EV_KEY,
    EV_SYN,
    KEY_A,
    KEY_CAPSLOCK,
    KEY_ENTER,
    KEY_KPENTER,
    KEY_LEFTALT,
    KEY_LEFTCTRL,
    KEY_LEFTMETA,
    KEY_LEFTSHIFT,
    KEY_NUMLOCK,
    KEY_RIGHTALT,
    KEY_RIGHTBRACE,
    KEY_RIGHTCTRL,
    KEY_RIGHTMETA,
    KEY_RIGHTSHIFT,
    KEY_SCROLLLOCK,
    KEYMAPS,
    SOURCE,
    SYN_DROPPED,
    Decoded,
    KeyDecoder,
    KeyEvent,
    Keymap,
    RefusalReason,
    ScanRefused,
)

__all__ = [
    "KEYMAPS",
    "SOURCE",
    "Decoded",
    "HidScanner",
    "InputDeviceInfo",
    "KeyDecoder",
    "KeyEvent",
    "Keymap",
    "RefusalReason",
    "ScanRefused",
    "ScannerNotFound",
    "list_input_devices",
    "select_device",
]
# The kernel's key codes (linux/input-event-codes.h), importable from here as they always were.
__all__ += [
    "EV_KEY",
    "EV_SYN",
    "KEY_A",
    "KEY_CAPSLOCK",
    "KEY_ENTER",
    "KEY_KPENTER",
    "KEY_LEFTALT",
    "KEY_LEFTCTRL",
    "KEY_LEFTMETA",
    "KEY_LEFTSHIFT",
    "KEY_NUMLOCK",
    "KEY_RIGHTALT",
    "KEY_RIGHTBRACE",
    "KEY_RIGHTCTRL",
    "KEY_RIGHTMETA",
    "KEY_RIGHTSHIFT",
    "KEY_SCROLLLOCK",
    "SYN_DROPPED",
]

_log = logging.getLogger(__name__)

# -- finding the device -------------------------------------------------------------------------


class ScannerNotFound(DriverError):
    """No input device, or more than one, matches how the scanner was described."""


@dataclass(frozen=True)
class InputDeviceInfo:
    """One input device as discovery sees it."""

    path: str
    name: str
    vendor: int
    product: int
    keyboard: bool  # it has letter keys and Enter: it can type a barcode

    def __str__(self) -> str:
        return f"{self.path} {self.name!r} ({self.vendor:04x}:{self.product:04x})"


def list_input_devices(input_dir: str = "/dev/input") -> list[InputDeviceInfo]:
    """The input devices this user can open, described (needs evdev)."""
    evdev = _evdev()
    found: list[InputDeviceInfo] = []
    for path in sorted(evdev.list_devices(input_dir)):
        try:
            device = evdev.InputDevice(path)
        except OSError:
            continue  # unplugged since listing, or not ours to open
        try:
            keys = set(device.capabilities().get(EV_KEY, ()))
            found.append(
                InputDeviceInfo(
                    path=str(path),
                    name=device.name,
                    vendor=device.info.vendor,
                    product=device.info.product,
                    keyboard={KEY_A, KEY_ENTER} <= keys,
                )
            )
        finally:
            device.close()
    return found


def select_device(
    devices: Sequence[InputDeviceInfo],
    *,
    name: str | None = None,
    vendor: int | None = None,
    product: int | None = None,
) -> InputDeviceInfo:
    """The one keyboard-like device with this name and/or USB ids (any, if none is given).

    Raises ScannerNotFound, saying what is there, when none or several match: with no
    criteria only a lone keyboard-like device is taken, so a real keyboard is never grabbed
    by guesswork.
    """
    keyboards = [d for d in devices if d.keyboard]
    matching = [
        d
        for d in keyboards
        if (name is None or d.name == name)
        and (vendor is None or d.vendor == vendor)
        and (product is None or d.product == product)
    ]
    if len(matching) == 1:
        return matching[0]
    wanted = _criteria(name, vendor, product)
    present = "; ".join(str(d) for d in keyboards) or "none"
    if not matching:
        raise ScannerNotFound(
            f"no keyboard-like input device matches {wanted}; keyboard-like devices: {present}"
        )
    raise ScannerNotFound(
        f"{len(matching)} keyboard-like input devices match {wanted} ({present}): "
        "name the scanner by name or vendor/product id, or give its /dev/input/by-id path"
    )


def _criteria(name: str | None, vendor: int | None, product: int | None) -> str:
    parts = [f"name {name!r}"] if name is not None else []
    parts += [f"vendor {vendor:04x}"] if vendor is not None else []
    parts += [f"product {product:04x}"] if product is not None else []
    return ", ".join(parts) or "(any)"


def _usb_id(value: int | str | None, what: str) -> int | None:
    """A USB id from config: an int, or hex text such as "0c2e" or "0x0c2e"."""
    if value is None or isinstance(value, int):
        return value
    try:
        return int(value, 16)
    except ValueError:
        raise ValueError(f"the scanner's {what} id must be hexadecimal, e.g. 0c2e") from None


def _evdev() -> ModuleType:
    try:
        import evdev
    except ImportError:
        raise BackendUnavailable(
            "the evdev scanner backend needs the evdev module: pip install evdev "
            "(or the photosafe[pi] extra); building it needs gcc and linux-libc-dev"
        ) from None
    return evdev


# -- reading ------------------------------------------------------------------------------------


class InputSource(Protocol):
    """What HidScanner needs of an opened device (an `evdev.InputDevice` has all of it)."""

    def fileno(self) -> int: ...
    def read(self) -> Iterable[KeyEvent]: ...
    def grab(self) -> None: ...
    def ungrab(self) -> None: ...
    def close(self) -> None: ...


def _open_evdev(path: str) -> InputSource:
    device: InputSource = _evdev().InputDevice(path)
    return device


class HidScanner:
    """A Scanner reading a keyboard-wedge scanner, grabbed exclusively while started.

    Describe the scanner by `path` (a /dev/input/by-id link is stable across reboots), or by
    `name` and/or `vendor`/`product` id; with none of them, the one keyboard-like device
    present is used. Refused bursts are logged as "scanner.refused" with their reason and given
    to `on_refused` if set (say, to show Signal.REFUSED); they never reach `on_scan`.

    `list_devices` and `open_device` default to evdev; other event sources (and tests) pass
    their own.
    """

    def __init__(
        self,
        name: str | None = None,
        vendor: int | str | None = None,
        product: int | str | None = None,
        *,
        path: str | None = None,
        keymap: Keymap = "us",
        gs_substitute: str | None = None,
        max_length: int = 512,
        idle_timeout_s: float = 0.5,
        reconnect_s: float = 2.0,
        input_dir: str = "/dev/input",
        on_refused: Callable[[ScanRefused], None] | None = None,
        list_devices: Callable[[], Sequence[InputDeviceInfo]] | None = None,
        open_device: Callable[[str], InputSource] | None = None,
    ) -> None:
        self._name = name
        self._vendor = _usb_id(vendor, "vendor")
        self._product = _usb_id(product, "product")
        self._path = path
        self._decoder = KeyDecoder(  # built here, so a bad keymap fails at construction
            keymap,
            gs_substitute=gs_substitute,
            max_length=max_length,
            idle_timeout_s=idle_timeout_s,
        )
        self._idle_timeout_s = idle_timeout_s
        self._reconnect_s = reconnect_s
        self._on_refused = on_refused
        self._list_devices = list_devices or (lambda: list_input_devices(input_dir))
        self._open_device = open_device or _open_evdev
        self._lock = threading.Lock()
        self._on_scan: Callable[[Scan], None] | None = None
        self._thread: threading.Thread | None = None
        self._wake: int | None = None  # write end of the pipe that stops the reader

    def start(self, on_scan: Callable[[Scan], None]) -> None:
        """Opens and grabs the scanner, then reads it on a thread.

        Raises ScannerNotFound when it is not there, BackendUnavailable without evdev, and
        OSError when it cannot be opened or grabbed (the `input` group; another grab).
        """
        with self._lock:
            self._on_scan = on_scan
            if self._thread is not None:
                return
            device = self._connect()
            stop_r, stop_w = os.pipe()
            self._decoder.reset()
            self._wake = stop_w
            self._thread = threading.Thread(
                target=self._read, args=(device, stop_r), name="hid-scanner", daemon=True
            )
            self._thread.start()

    def stop(self) -> None:
        """Stops reading and releases the device (within a moment). Idempotent."""
        with self._lock:
            thread, wake = self._thread, self._wake
            self._thread = self._wake = None
            self._on_scan = None
        if thread is None or wake is None:
            return
        os.write(wake, b"\0")
        thread.join(timeout=5)
        os.close(wake)
        if thread.is_alive():
            _log.warning("scanner.stop_timed_out")

    def _connect(self) -> InputSource:
        path = self._path
        if path is None:
            found = select_device(
                self._list_devices(), name=self._name, vendor=self._vendor, product=self._product
            )
            path = found.path
        device = self._open_device(path)
        try:
            device.grab()  # exclusive: no scan reaches a console or another reader
        except BaseException:
            device.close()
            raise
        _log.info("scanner.opened", extra={"device": path})
        return device

    def _read(self, device: InputSource | None, stop: int) -> None:
        try:
            while device is not None:
                ready, _, _ = select.select([device.fileno(), stop], [], [], self._idle_timeout_s)
                if stop in ready:
                    return
                if not ready:
                    self._deliver(self._decoder.flush())
                    continue
                try:
                    events = list(device.read())
                except BlockingIOError:
                    continue
                except OSError as exc:  # unplugged (ENODEV) or the like
                    _log.warning("scanner.lost", extra={"error": exc.strerror or str(exc)})
                    _release(device)
                    device = None
                    device = self._reconnect(stop)
                    self._decoder.reset()
                    continue
                for event in events:
                    self._deliver(self._decoder.feed(event))
        finally:
            if device is not None:
                _release(device)
            os.close(stop)

    def _reconnect(self, stop: int) -> InputSource | None:
        while not select.select([stop], [], [], self._reconnect_s)[0]:
            try:
                device = self._connect()
            except (DriverError, OSError):
                continue
            _log.info("scanner.reconnected")
            return device
        return None

    def _deliver(self, decoded: list[Decoded]) -> None:
        for item in decoded:
            if isinstance(item, Scan):
                on_scan = self._on_scan  # one read: stop() may clear it meanwhile
                if on_scan is not None:
                    on_scan(item)
            else:
                _log.warning("scanner.refused", extra={"reason": item.reason.value})
                if self._on_refused is not None:
                    self._on_refused(item)


def _release(device: InputSource) -> None:
    try:
        device.ungrab()
    except OSError:
        pass  # an unplugged device is no longer grabbed anyway
    finally:
        device.close()
