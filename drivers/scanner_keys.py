"""Key events from a USB keyboard-wedge barcode scanner decoded back into text: pure, no device.

Such a scanner is a USB keyboard that types each barcode and presses Enter. `KeyDecoder` turns
key events (anything with `type`, `code`, `value`, `sec`, `usec`, such as `evdev.InputEvent`)
back into text. It is pure: no device, no clock but the events' own timestamps, no threads. Only
EV_KEY events count; a key-down (value 1) types, autorepeat (value 2) is ignored, key-down and
key-up of Shift, Ctrl and Alt are tracked. Enter or keypad Enter ends a scan. GS (0x1D) is
Ctrl+] (the scanner must be set to send it so) or a configured substitute character; an AIM
symbology prefix ("]d2") is typed like any text and split off by `Scan.from_wire`. A burst is
refused, as a `ScanRefused` with the reason and never the text, when it holds a key that types
nothing a barcode can carry (garbled), a non-ASCII character (UK Shift+3 is "£"), more than
`max_length` characters, when the kernel reports dropped events (SYN_DROPPED: characters may be
missing), or when it stops without Enter for longer than `idle_timeout_s` (unterminated). A
refused burst is swallowed up to its Enter.

Key codes are the kernel's (linux/input-event-codes.h, a stable ABI), so this module needs no
evdev. photosafe.drivers.scanner_hid reads the device and feeds the decoder.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Literal, Protocol

from photosafe.drivers.scanner import GS, Scan

__all__ = [
    "KEYMAPS",
    "SOURCE",
    "Decoded",
    "KeyDecoder",
    "KeyEvent",
    "Keymap",
    "RefusalReason",
    "ScanRefused",
]

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
