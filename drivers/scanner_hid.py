"""A USB keyboard-wedge barcode scanner read through evdev: the Pi station's scanner backend.

Such a scanner is a USB keyboard that types each barcode and presses Enter. Two parts:

- `KeyDecoder` turns key events (anything with `type`, `code`, `value`, `sec`, `usec`, such as
  `evdev.InputEvent`) back into text. It is pure: no device, no clock but the events' own
  timestamps, no threads. Only EV_KEY events count; a key-down (value 1) types, autorepeat
  (value 2) is ignored, key-down and key-up of Shift, Ctrl and Alt are tracked. Enter or keypad
  Enter ends a scan. GS (0x1D) is Ctrl+] (the scanner must be set to send it so) or a configured
  substitute character; an AIM symbology prefix ("]d2") is typed like any text and split off by
  `Scan.from_wire`. A burst is refused, as a `ScanRefused` with the reason and never the text,
  when it holds a key that types nothing a barcode can carry (garbled), a non-ASCII character
  (UK Shift+3 is "£"), more than `max_length` characters, when the kernel reports dropped
  events (SYN_DROPPED: characters may be missing), or when it stops without Enter for longer
  than `idle_timeout_s` (unterminated). A refused burst is swallowed up to its Enter.
- `HidScanner` (a Scanner, see photosafe.drivers.scanner) finds the scanner among the input
  devices by name, by USB vendor/product id, or by path, `grab()`s it so that no scan ever
  reaches a console, and reads it on its own thread, reopening it when it is unplugged and back.

Key codes are the kernel's (linux/input-event-codes.h, a stable ABI), so this module imports
without evdev; evdev itself is imported only when a device is listed or opened. The service
user needs the `input` group to open the device.
"""

from __future__ import annotations

import logging
import os
import select
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from types import ModuleType
from typing import Literal, Protocol

from photosafe.drivers.errors import BackendUnavailable, DriverError
from photosafe.drivers.scanner import GS, Scan

__all__ = [
    "KEYMAPS",
    "HidScanner",
    "InputDeviceInfo",
    "KeyDecoder",
    "Keymap",
    "RefusalReason",
    "ScanRefused",
    "ScannerNotFound",
    "list_input_devices",
    "select_device",
]

_log = logging.getLogger(__name__)

SOURCE = "hid"
Keymap = Literal["us", "uk"]

# -- key codes (linux/input-event-codes.h) ----------------------------------------------------

EV_SYN, EV_KEY = 0, 1
SYN_DROPPED = 3  # the kernel's buffer overflowed: events were lost
KEY_ENTER, KEY_KPENTER = 28, 96
KEY_LEFTSHIFT, KEY_RIGHTSHIFT = 42, 54
KEY_LEFTCTRL, KEY_RIGHTCTRL = 29, 97
KEY_LEFTALT, KEY_RIGHTALT = 56, 100  # RIGHTALT is AltGr
KEY_LEFTMETA, KEY_RIGHTMETA = 125, 126
KEY_CAPSLOCK, KEY_NUMLOCK, KEY_SCROLLLOCK = 58, 69, 70
KEY_RIGHTBRACE = 27
KEY_A = 30

_SHIFT = frozenset({KEY_LEFTSHIFT, KEY_RIGHTSHIFT})
_CTRL = frozenset({KEY_LEFTCTRL, KEY_RIGHTCTRL})
_ALT = frozenset({KEY_LEFTALT, KEY_RIGHTALT, KEY_LEFTMETA, KEY_RIGHTMETA})
_LOCKS = frozenset({KEY_NUMLOCK, KEY_SCROLLLOCK})  # type nothing; a scanner may toggle them
_ENTER = frozenset({KEY_ENTER, KEY_KPENTER})

_LETTER_ROWS = ((16, "qwertyuiop"), (30, "asdfghjkl"), (44, "zxcvbnm"))
_LETTERS = {first + i: c for first, row in _LETTER_ROWS for i, c in enumerate(row)}
_DIGITS = {2 + i: c for i, c in enumerate("1234567890")}  # KEY_1 = 2 ... KEY_0 = 11
_KEYPAD = {  # NumLock on: what a scanner in keypad mode types, shifted or not
    82: "0", 79: "1", 80: "2", 81: "3", 75: "4", 76: "5", 77: "6", 71: "7", 72: "8", 73: "9",
    83: ".", 74: "-", 78: "+", 55: "*", 98: "/",
}  # fmt: skip

# Unshifted and shifted character of every other key that types, per layout.
_US_SYMBOLS: dict[int, tuple[str, str]] = {
    12: ("-", "_"),  # KEY_MINUS
    13: ("=", "+"),  # KEY_EQUAL
    26: ("[", "{"),  # KEY_LEFTBRACE
    27: ("]", "}"),  # KEY_RIGHTBRACE
    39: (";", ":"),  # KEY_SEMICOLON
    40: ("'", '"'),  # KEY_APOSTROPHE
    41: ("`", "~"),  # KEY_GRAVE
    43: ("\\", "|"),  # KEY_BACKSLASH
    51: (",", "<"),  # KEY_COMMA
    52: (".", ">"),  # KEY_DOT
    53: ("/", "?"),  # KEY_SLASH
    57: (" ", " "),  # KEY_SPACE
    86: ("\\", "|"),  # KEY_102ND (the ISO key beside left Shift)
}
_US_SHIFTED_DIGITS = "!@#$%^&*()"
# The UK (gb) layout moves " and @, puts £ on Shift+3, # ~ on the key beside Enter (which the
# kernel calls KEY_BACKSLASH), \ | beside left Shift, and ¬ on Shift+`.
_UK_SYMBOLS = {**_US_SYMBOLS, 40: ("'", "@"), 41: ("`", "¬"), 43: ("#", "~"), 86: ("\\", "|")}
_UK_SHIFTED_DIGITS = '!"£$%^&*()'


def _layout(
    symbols: Mapping[int, tuple[str, str]], shifted_digits: str
) -> dict[int, tuple[str, str]]:
    table = {code: (c, c.upper()) for code, c in _LETTERS.items()}
    table.update({code: (c, shifted_digits[i]) for i, (code, c) in enumerate(_DIGITS.items())})
    table.update(symbols)
    table.update({code: (c, c) for code, c in _KEYPAD.items()})
    return table


KEYMAPS: Mapping[Keymap, Mapping[int, tuple[str, str]]] = {
    "us": _layout(_US_SYMBOLS, _US_SHIFTED_DIGITS),
    "uk": _layout(_UK_SYMBOLS, _UK_SHIFTED_DIGITS),
}
"""Key code -> (character, character with Shift), for each supported keyboard layout."""

# -- decoding -----------------------------------------------------------------------------------


class KeyEvent(Protocol):
    """What the decoder reads of an `evdev.InputEvent`."""

    @property
    def sec(self) -> int: ...
    @property
    def usec(self) -> int: ...
    @property
    def type(self) -> int: ...
    @property
    def code(self) -> int: ...
    @property
    def value(self) -> int: ...


class RefusalReason(StrEnum):
    GARBLED = "garbled"  # a key no barcode types (Tab, Esc, F1, Ctrl+A, AltGr+...)
    NON_ASCII = "non_ascii"  # e.g. "£" from Shift+3 on a UK layout
    OVERLONG = "overlong"  # more than max_length characters before Enter
    DROPPED = "dropped"  # the kernel dropped events mid-scan: characters may be missing
    UNTERMINATED = "unterminated"  # no Enter within idle_timeout_s of the last key


@dataclass(frozen=True)
class ScanRefused:
    """A burst of keys that is not a usable scan: why, and from which reader; never its text."""

    reason: RefusalReason
    source: str


Decoded = Scan | ScanRefused


class KeyDecoder:
    """Turns key events into Scans and ScanRefused (see the module docstring for the rules)."""

    def __init__(
        self,
        keymap: Keymap = "us",
        *,
        gs_substitute: str | None = None,
        max_length: int = 512,
        idle_timeout_s: float = 0.5,
        source: str = SOURCE,
    ) -> None:
        if keymap not in KEYMAPS:
            raise ValueError(f"unknown keymap {keymap!r}: known keymaps are us, uk")
        if gs_substitute is not None and (len(gs_substitute) != 1 or not gs_substitute.isascii()):
            raise ValueError("the GS substitute must be one ASCII character")
        if max_length < 1 or idle_timeout_s <= 0:
            raise ValueError("max_length and idle_timeout_s must be positive")
        self._keys = KEYMAPS[keymap]
        self._gs_substitute = gs_substitute
        self._max_length = max_length
        self._idle_timeout_s = idle_timeout_s
        self._source = source
        self._held: set[int] = set()  # modifier keys down now
        self._caps = False
        self._text: list[str] = []  # the scan being typed: patient data, never logged
        self._refused = False  # this burst was refused: swallow it up to its Enter
        self._last_key: float | None = None  # timestamp of the burst's last key-down

    def feed(self, event: KeyEvent) -> list[Decoded]:
        """Reads one event; returns what it completed (nearly always nothing, at most two)."""
        if event.type == EV_SYN and event.code == SYN_DROPPED:
            self._held.clear()  # key-ups may be among the lost events
            return [] if self._refused else self._refuse(RefusalReason.DROPPED)
        if event.type != EV_KEY:
            return []
        code, value = event.code, event.value
        if code in _SHIFT | _CTRL | _ALT:
            if value == 1:
                self._held.add(code)
            elif value == 0:
                self._held.discard(code)
            return []
        if value != 1:  # key-up, or autorepeat: a scanner never means a held key
            return []
        now = event.sec + event.usec / 1_000_000
        done: list[Decoded] = []
        if self._last_key is not None and now - self._last_key > self._idle_timeout_s:
            done += self.flush()
        self._last_key = now
        if code in _ENTER:
            done += self._finish()
        elif code == KEY_CAPSLOCK:
            self._caps = not self._caps
        elif code not in _LOCKS:
            done += self._type(code)
        return done

    def flush(self) -> list[Decoded]:
        """Ends a burst that never got its Enter: refused as unterminated (if not already)."""
        pending = bool(self._text) and not self._refused
        self._end_burst()
        return [ScanRefused(RefusalReason.UNTERMINATED, self._source)] if pending else []

    def reset(self) -> None:
        """Forgets everything, held modifiers too: for a device that was just (re)opened."""
        self._end_burst()
        self._held.clear()
        self._caps = False

    def _type(self, code: int) -> list[Decoded]:
        if self._refused:
            return []
        char = self._char(code)
        if char is None:
            return self._refuse(RefusalReason.GARBLED)
        if not char.isascii():
            return self._refuse(RefusalReason.NON_ASCII)
        if len(self._text) >= self._max_length:
            return self._refuse(RefusalReason.OVERLONG)
        self._text.append(char)
        return []

    def _char(self, code: int) -> str | None:
        if self._held & _ALT:
            return None
        if self._held & _CTRL:
            return GS if code == KEY_RIGHTBRACE else None
        pair = self._keys.get(code)
        if pair is None:
            return None
        shifted = bool(self._held & _SHIFT)
        if self._caps and code in _LETTERS:
            shifted = not shifted
        char = pair[shifted]
        return GS if char == self._gs_substitute else char

    def _finish(self) -> list[Decoded]:
        text, refused = "".join(self._text), self._refused
        self._end_burst()
        if refused or not text:
            return []  # a refused burst was reported when refused; a bare Enter is nothing
        return [Scan.from_wire(text, self._source)]

    def _refuse(self, reason: RefusalReason) -> list[Decoded]:
        self._text.clear()
        self._refused = True
        return [ScanRefused(reason, self._source)]

    def _end_burst(self) -> None:
        self._text.clear()
        self._refused = False
        self._last_key = None


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
