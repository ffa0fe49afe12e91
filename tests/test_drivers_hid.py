"""The keyboard-wedge scanner: real `evdev.InputEvent` sequences decoded, the device chosen, read.

The decoder is fed the events a USB scanner really sends (EV_MSC scan codes and EV_SYN reports
around each EV_KEY, key-up after key-down, autorepeat when a key is held). What cannot run here
(there is no /dev/input on this machine): opening and grabbing a real device. Discovery is
tested on device descriptions, and the reader thread on a fake device backed by a pipe, so
select(), stop and reconnection run for real.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import queue
import string
import threading
import time
from collections.abc import Iterator

import pytest
from evdev import InputEvent, ecodes
from hypothesis import given, settings
from hypothesis import strategies as st

from photosafe.drivers import scanner_hid
from photosafe.drivers.scanner import GS, Scan
from photosafe.drivers.scanner_hid import (
    KEYMAPS,
    HidScanner,
    InputDeviceInfo,
    KeyDecoder,
    Keymap,
    RefusalReason,
    ScannerNotFound,
    ScanRefused,
    select_device,
)

WRISTBAND = f"]d28018950600012345678907{GS}80191234"
DOWN, UP, REPEAT = 1, 0, 2


class Keyboard:
    """Types like a USB scanner: MSC_SCAN, EV_KEY, SYN_REPORT per key change, 4 ms apart."""

    def __init__(self, keymap: Keymap = "us", start: float = 1_700_000_000.0) -> None:
        self.now = start
        self.keys: dict[str, tuple[int, bool]] = {}
        for code, (plain, shifted) in KEYMAPS[keymap].items():
            if code in range(71, 84) or code in (55, 98):
                continue  # keypad keys: type digits from the main row
            self.keys.setdefault(plain, (code, False))
            self.keys.setdefault(shifted, (code, True))

    def key(self, code: int, value: int) -> list[InputEvent]:
        self.now += 0.004
        sec, usec = int(self.now), int(self.now % 1 * 1_000_000)
        return [
            InputEvent(sec, usec, ecodes.EV_MSC, ecodes.MSC_SCAN, 0x70000 + code),
            InputEvent(sec, usec, ecodes.EV_KEY, code, value),
            InputEvent(sec, usec, ecodes.EV_SYN, ecodes.SYN_REPORT, 0),
        ]

    def tap(self, code: int, *modifiers: int) -> list[InputEvent]:
        events: list[InputEvent] = []
        for modifier in modifiers:
            events += self.key(modifier, DOWN)
        events += self.key(code, DOWN) + self.key(code, UP)
        for modifier in reversed(modifiers):
            events += self.key(modifier, UP)
        return events

    def type(self, text: str, enter: bool = True) -> list[InputEvent]:
        events: list[InputEvent] = []
        for char in text:
            if char == GS:
                events += self.tap(ecodes.KEY_RIGHTBRACE, ecodes.KEY_LEFTCTRL)
                continue
            code, shift = self.keys[char]
            events += self.tap(code, ecodes.KEY_LEFTSHIFT) if shift else self.tap(code)
        return events + (self.tap(ecodes.KEY_ENTER) if enter else [])

    def wait(self, seconds: float) -> None:
        self.now += seconds


def decode(decoder: KeyDecoder, events: list[InputEvent]) -> list[Scan | ScanRefused]:
    return [item for event in events for item in decoder.feed(event)]


# -- the decoder --------------------------------------------------------------------------------


def test_the_key_codes_are_the_kernels() -> None:
    us = KEYMAPS["us"]
    for letter in string.ascii_lowercase:
        assert us[ecodes.ecodes[f"KEY_{letter.upper()}"]] == (letter, letter.upper())
    for digit, shifted in zip("1234567890", "!@#$%^&*()", strict=True):
        assert us[ecodes.ecodes[f"KEY_{digit}"]] == (digit, shifted)
        assert us[ecodes.ecodes[f"KEY_KP{digit}"]] == (digit, digit)
    named = {
        "KEY_MINUS": ("-", "_"),
        "KEY_EQUAL": ("=", "+"),
        "KEY_LEFTBRACE": ("[", "{"),
        "KEY_RIGHTBRACE": ("]", "}"),
        "KEY_SEMICOLON": (";", ":"),
        "KEY_APOSTROPHE": ("'", '"'),
        "KEY_GRAVE": ("`", "~"),
        "KEY_BACKSLASH": ("\\", "|"),
        "KEY_COMMA": (",", "<"),
        "KEY_DOT": (".", ">"),
        "KEY_SLASH": ("/", "?"),
        "KEY_SPACE": (" ", " "),
        "KEY_102ND": ("\\", "|"),
        "KEY_KPDOT": (".", "."),
        "KEY_KPMINUS": ("-", "-"),
        "KEY_KPPLUS": ("+", "+"),
        "KEY_KPASTERISK": ("*", "*"),
        "KEY_KPSLASH": ("/", "/"),
    }
    assert {name: us[ecodes.ecodes[name]] for name in named} == named
    assert len(us) == 26 + 10 + 10 + len(named)
    constants = [n for n in dir(scanner_hid) if n.startswith(("KEY_", "EV_", "SYN_"))]
    assert len(constants) >= 16
    assert {n: getattr(scanner_hid, n) for n in constants} == {
        n: getattr(ecodes, n) for n in constants
    }


def test_a_gs1_wristband_with_aim_prefix_and_gs_from_ctrl_bracket() -> None:
    decoded = decode(KeyDecoder(), Keyboard().type(WRISTBAND))
    assert decoded == [Scan(f"8018950600012345678907{GS}80191234", "]d2", "hid")]
    assert isinstance(decoded[0], Scan) and decoded[0].wire_text == WRISTBAND


def test_shift_from_either_side_types_capitals_and_symbols() -> None:
    keys = Keyboard()
    events = keys.type("MRN-001", enter=False)
    events += keys.tap(ecodes.KEY_2, ecodes.KEY_RIGHTSHIFT)  # @ on a US layout
    events += keys.tap(ecodes.KEY_A) + keys.tap(ecodes.KEY_ENTER)
    assert decode(KeyDecoder(), events) == [Scan("MRN-001@a", None, "hid")]


def test_a_shift_released_is_released() -> None:
    keys = Keyboard()
    events = keys.key(ecodes.KEY_LEFTSHIFT, DOWN) + keys.tap(ecodes.KEY_S)
    events += keys.key(ecodes.KEY_LEFTSHIFT, UP) + keys.tap(ecodes.KEY_S) + keys.type("")
    assert decode(KeyDecoder(), events) == [Scan("Ss", None, "hid")]


def test_autorepeat_is_ignored_and_only_key_down_types() -> None:
    keys = Keyboard()
    events = keys.key(ecodes.KEY_7, DOWN)
    events += keys.key(ecodes.KEY_7, REPEAT) + keys.key(ecodes.KEY_7, REPEAT)
    events += keys.key(ecodes.KEY_7, UP) + keys.type("8")
    assert decode(KeyDecoder(), events) == [Scan("78", None, "hid")]


def test_keypad_digits_and_keypad_enter() -> None:
    keys = Keyboard()
    events = keys.tap(ecodes.KEY_KP9) + keys.tap(ecodes.KEY_KP4) + keys.tap(ecodes.KEY_KPENTER)
    assert decode(KeyDecoder(), events) == [Scan("94", None, "hid")]


def test_a_configured_substitute_becomes_gs() -> None:
    events = Keyboard().type("]C1019506000123457|10ABC")
    assert decode(KeyDecoder(gs_substitute="|"), events) == [
        Scan(f"019506000123457{GS}10ABC", "]C1", "hid")
    ]
    assert decode(KeyDecoder(), events) == [Scan("019506000123457|10ABC", "]C1", "hid")]


def test_caps_lock_inverts_letters_only() -> None:
    keys = Keyboard()
    events = keys.tap(ecodes.KEY_CAPSLOCK) + keys.type("Ab1!")
    assert decode(KeyDecoder(), events) == [Scan("aB1!", None, "hid")]


def test_uk_layout_moves_quote_at_hash_and_backslash() -> None:
    keys = Keyboard()
    shift = ecodes.KEY_LEFTSHIFT
    events = keys.tap(ecodes.KEY_2, shift)  # " on UK, @ on US
    events += keys.tap(ecodes.KEY_APOSTROPHE, shift)  # @ on UK, " on US
    events += keys.tap(ecodes.KEY_APOSTROPHE)  # ' on both
    events += keys.tap(ecodes.KEY_BACKSLASH)  # # on UK (the key beside Enter), \ on US
    events += keys.tap(ecodes.KEY_BACKSLASH, shift)  # ~ on UK, | on US
    events += keys.tap(ecodes.KEY_102ND) + keys.tap(ecodes.KEY_102ND, shift)  # \ | on both
    events += keys.tap(ecodes.KEY_GRAVE) + keys.tap(ecodes.KEY_ENTER)
    assert decode(KeyDecoder("uk"), events) == [Scan("\"@'#~\\|`", None, "hid")]
    assert decode(KeyDecoder("us"), events) == [Scan("@\"'\\|\\|`", None, "hid")]


@pytest.mark.parametrize("code", [ecodes.KEY_3, ecodes.KEY_GRAVE])
def test_uk_pound_and_not_sign_are_refused_as_non_ascii(code: int) -> None:
    keys = Keyboard()
    events = keys.type("12", enter=False) + keys.tap(code, ecodes.KEY_LEFTSHIFT)
    events += keys.type("34")
    decoder = KeyDecoder("uk")
    assert decode(decoder, events) == [ScanRefused(RefusalReason.NON_ASCII, "hid")]
    assert decode(decoder, keys.type("MRN-00123456")) == [Scan("MRN-00123456", None, "hid")]


def test_ctrl_bracket_is_gs_on_the_uk_layout_too() -> None:
    assert decode(KeyDecoder("uk"), Keyboard("uk").type(f"]d2A{GS}B")) == [
        Scan(f"A{GS}B", "]d2", "hid")
    ]


def test_an_overlong_burst_is_refused_at_once_and_swallowed_to_its_enter() -> None:
    keys = Keyboard()
    decoder = KeyDecoder(max_length=10)
    assert decode(decoder, keys.type("0123456789")) == [Scan("0123456789", None, "hid")]
    events = keys.type("0123456789", enter=False)
    assert decode(decoder, events) == []
    assert decode(decoder, keys.tap(ecodes.KEY_X)) == [ScanRefused(RefusalReason.OVERLONG, "hid")]
    assert decode(decoder, keys.type("more and more")) == []
    assert decode(decoder, keys.type("ok")) == [Scan("ok", None, "hid")]


@pytest.mark.parametrize(
    ("code", "modifier"),
    [
        (ecodes.KEY_TAB, None),
        (ecodes.KEY_ESC, None),
        (ecodes.KEY_F1, None),
        (ecodes.KEY_BACKSPACE, None),
        (ecodes.KEY_A, ecodes.KEY_LEFTCTRL),
        (ecodes.KEY_4, ecodes.KEY_RIGHTALT),  # AltGr+4: € on a UK layout
    ],
)
def test_a_garbled_burst_is_refused_and_nothing_of_it_is_emitted(
    code: int, modifier: int | None
) -> None:
    keys = Keyboard()
    events = keys.type("80189506", enter=False)
    events += keys.tap(code, modifier) if modifier else keys.tap(code)
    events += keys.type("00012345678907")
    decoder = KeyDecoder()
    assert decode(decoder, events) == [ScanRefused(RefusalReason.GARBLED, "hid")]
    assert decode(decoder, keys.type("STAFF-123456")) == [Scan("STAFF-123456", None, "hid")]


def test_events_dropped_by_the_kernel_refuse_the_scan_they_fall_in() -> None:
    keys = Keyboard()
    decoder = KeyDecoder()
    events = keys.type("94347", enter=False)
    events += [InputEvent(1_700_000_001, 0, ecodes.EV_SYN, ecodes.SYN_DROPPED, 0)]
    events += keys.type("65919")  # the rest of the number, some digits lost
    assert decode(decoder, events) == [ScanRefused(RefusalReason.DROPPED, "hid")]
    assert decode(decoder, keys.type("9434765919")) == [Scan("9434765919", None, "hid")]


def test_a_scan_without_enter_is_discarded_when_the_next_one_starts_late() -> None:
    keys = Keyboard()
    decoder = KeyDecoder(idle_timeout_s=0.5)
    assert decode(decoder, keys.type("9434765", enter=False)) == []
    keys.wait(2.0)
    assert decode(decoder, keys.type("MRN-00123456")) == [
        ScanRefused(RefusalReason.UNTERMINATED, "hid"),
        Scan("MRN-00123456", None, "hid"),
    ]


def test_a_slow_but_steady_scanner_is_not_cut_off() -> None:
    keys = Keyboard()
    events: list[InputEvent] = []
    for char in "9434765919":
        keys.wait(0.3)
        events += keys.type(char, enter=False)
    keys.wait(0.3)
    events += keys.tap(ecodes.KEY_ENTER)
    assert decode(KeyDecoder(idle_timeout_s=0.5), events) == [Scan("9434765919", None, "hid")]


def test_flush_ends_a_pending_burst_and_a_bare_enter_is_nothing() -> None:
    keys = Keyboard()
    decoder = KeyDecoder()
    assert decoder.flush() == []
    decode(decoder, keys.type("123", enter=False))
    assert decoder.flush() == [ScanRefused(RefusalReason.UNTERMINATED, "hid")]
    assert decode(decoder, keys.tap(ecodes.KEY_ENTER)) == []


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="keymap"):
        KeyDecoder("de")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="substitute"):
        KeyDecoder(gs_substitute="££")
    with pytest.raises(ValueError, match="positive"):
        KeyDecoder(max_length=0)


_TYPABLE = st.text(alphabet=st.sampled_from([*string.printable[:95], GS]), min_size=1, max_size=80)


@given(text=_TYPABLE, keymap=st.sampled_from(["us", "uk"]))
@settings(max_examples=150, deadline=None)
def test_whatever_is_typed_comes_back_exactly(text: str, keymap: Keymap) -> None:
    keys = Keyboard(keymap)  # both layouts type all of printable ASCII without AltGr
    assert decode(KeyDecoder(keymap), keys.type(text)) == [Scan.from_wire(text, "hid")]


_EVENTS = st.lists(
    st.tuples(
        st.integers(0, 10_000),  # time, ms
        st.sampled_from([ecodes.EV_KEY, ecodes.EV_KEY, ecodes.EV_KEY, ecodes.EV_SYN, 4]),
        st.one_of(st.integers(0, 130), st.integers(0, 0xFFFF)),
        st.integers(-1, 3),
    ),
    max_size=300,
)


@given(
    events=_EVENTS, keymap=st.sampled_from(["us", "uk"]), substitute=st.sampled_from([None, "|"])
)
@settings(max_examples=300, deadline=None)
def test_arbitrary_event_sequences_never_raise(
    events: list[tuple[int, int, int, int]], keymap: Keymap, substitute: str | None
) -> None:
    decoder = KeyDecoder(keymap, gs_substitute=substitute, max_length=40)
    now = 0
    for delta_ms, kind, code, value in events:
        now += delta_ms
        event = InputEvent(now // 1000, now % 1000 * 1000, kind, code, value)
        for item in decoder.feed(event):
            if isinstance(item, Scan):
                assert item.wire_text and item.wire_text.isascii()
                assert len(item.wire_text) <= 40
            else:
                assert isinstance(item.reason, RefusalReason)
    decoder.flush()


# -- choosing the device --------------------------------------------------------------------


SCANNER = InputDeviceInfo("/dev/input/event3", "Honeywell Imaging 1900", 0x0C2E, 0x0B61, True)
SCANNER_CONTROLS = InputDeviceInfo(
    "/dev/input/event4", "Honeywell Imaging 1900 Consumer Control", 0x0C2E, 0x0B61, False
)
KEYBOARD = InputDeviceInfo("/dev/input/event0", "Dell USB Keyboard", 0x413C, 0x2113, True)
POWER = InputDeviceInfo("/dev/input/event1", "Power Button", 0, 1, False)


def test_the_scanner_is_chosen_by_name_or_usb_ids_among_keyboards() -> None:
    present = [POWER, KEYBOARD, SCANNER, SCANNER_CONTROLS]
    assert select_device(present, name="Honeywell Imaging 1900") == SCANNER
    assert select_device(present, vendor=0x0C2E, product=0x0B61) == SCANNER
    assert select_device(present, vendor=0x0C2E) == SCANNER  # its control node cannot type


def test_with_no_description_only_a_lone_keyboard_is_taken() -> None:
    assert select_device([POWER, SCANNER, SCANNER_CONTROLS]) == SCANNER
    with pytest.raises(ScannerNotFound, match="2 keyboard-like input devices match") as caught:
        select_device([KEYBOARD, SCANNER])
    assert "Dell USB Keyboard" in str(caught.value)
    assert "by-id path" in str(caught.value)


def test_a_missing_scanner_is_reported_with_what_is_there() -> None:
    with pytest.raises(ScannerNotFound) as caught:
        select_device([POWER, KEYBOARD], name="Zebra DS2208")
    assert str(caught.value) == (
        "no keyboard-like input device matches name 'Zebra DS2208'; keyboard-like devices: "
        "/dev/input/event0 'Dell USB Keyboard' (413c:2113)"
    )
    with pytest.raises(ScannerNotFound, match=r"matches vendor 05e0; keyboard-like devices: none"):
        select_device([POWER], vendor=0x05E0)


# -- reading ------------------------------------------------------------------------------------


class FakeDevice:
    """An opened input device: a pipe makes it selectable; events are queued by the test."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._r, self._w = os.pipe()
        os.set_blocking(self._r, False)
        self._events: list[InputEvent] = []
        self._lock = threading.Lock()
        self.grabbed = self.closed = self.unplugged = False

    def push(self, events: list[InputEvent]) -> None:
        with self._lock:
            self._events += events
        os.write(self._w, b"!")

    def unplug(self) -> None:
        self.unplugged = True
        os.write(self._w, b"!")

    def fileno(self) -> int:
        return self._r

    def read(self) -> Iterator[InputEvent]:
        if self.unplugged:
            raise OSError(errno.ENODEV, "No such device")
        with contextlib.suppress(BlockingIOError):
            os.read(self._r, 4096)
        with self._lock:
            events, self._events = self._events, []
        if not events:
            raise BlockingIOError(errno.EAGAIN, "no events")
        return iter(events)

    def grab(self) -> None:
        assert not self.closed
        self.grabbed = True

    def ungrab(self) -> None:
        if self.unplugged:
            raise OSError(errno.ENODEV, "No such device")
        self.grabbed = False

    def close(self) -> None:
        if not self.closed:
            os.close(self._r)
            os.close(self._w)
            self.closed = True


class FakeInput:
    """/dev/input as HidScanner sees it: which devices are listed, and what opening gives."""

    def __init__(self, *devices: InputDeviceInfo) -> None:
        self.devices = list(devices)
        self.opened: list[FakeDevice] = []

    def list(self) -> list[InputDeviceInfo]:
        return list(self.devices)

    def open(self, path: str) -> FakeDevice:
        if path not in {d.path for d in self.devices}:
            raise FileNotFoundError(errno.ENOENT, "No such file or directory", path)
        device = FakeDevice(path)
        self.opened.append(device)
        return device


def _scanner(
    fake: FakeInput, refusals: list[ScanRefused] | None = None, **options: object
) -> HidScanner:
    return HidScanner(
        list_devices=fake.list,
        open_device=fake.open,
        on_refused=None if refusals is None else refusals.append,
        **options,  # type: ignore[arg-type]
    )


def test_started_scanner_grabs_the_device_and_delivers_scans_from_its_thread() -> None:
    fake = FakeInput(KEYBOARD, SCANNER)
    scanner = _scanner(fake, vendor="0c2e", product="0x0b61")
    scans: queue.Queue[tuple[Scan, str]] = queue.Queue()
    scanner.start(lambda scan: scans.put((scan, threading.current_thread().name)))
    [device] = fake.opened
    assert device.path == SCANNER.path and device.grabbed
    device.push(Keyboard().type(WRISTBAND))
    scan, thread = scans.get(timeout=5)
    assert scan.wire_text == WRISTBAND and scan.source == "hid"
    assert thread == "hid-scanner"
    began = time.monotonic()
    scanner.stop()
    assert time.monotonic() - began < 1
    assert not device.grabbed and device.closed
    scanner.stop()  # idempotent


def test_refusals_go_to_on_refused_and_the_log_never_to_on_scan(
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake = FakeInput(SCANNER)
    refusals: list[ScanRefused] = []
    scanner = _scanner(fake, refusals, idle_timeout_s=0.2)
    scans: queue.Queue[Scan] = queue.Queue()
    keys = Keyboard()
    with caplog.at_level(logging.WARNING, logger="photosafe.drivers.scanner_hid"):
        scanner.start(scans.put)
        device = fake.opened[0]
        device.push(keys.type("12", enter=False) + keys.tap(ecodes.KEY_TAB) + keys.type("34"))
        device.push(keys.type("943476", enter=False))  # and then nothing: the idle flush
        deadline = time.monotonic() + 5
        while len(refusals) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        scanner.stop()
    assert [r.reason for r in refusals] == [RefusalReason.GARBLED, RefusalReason.UNTERMINATED]
    assert scans.empty()
    refused = [r for r in caplog.records if r.getMessage() == "scanner.refused"]
    assert [r.__dict__["reason"] for r in refused] == ["garbled", "unterminated"]
    assert all("943476" not in r.getMessage() + str(r.__dict__) for r in caplog.records)


def test_an_unplugged_scanner_is_reopened_when_it_comes_back() -> None:
    fake = FakeInput(SCANNER)
    scanner = _scanner(fake, reconnect_s=0.05)
    scans: queue.Queue[Scan] = queue.Queue()
    scanner.start(scans.put)
    first = fake.opened[0]
    fake.devices = []
    first.unplug()
    time.sleep(0.2)
    assert first.closed and len(fake.opened) == 1  # still away: nothing opened
    fake.devices = [SCANNER]
    deadline = time.monotonic() + 5
    while len(fake.opened) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    second = fake.opened[1]
    assert second.grabbed
    second.push(Keyboard().type("STAFF-123456"))
    assert scans.get(timeout=5).text == "STAFF-123456"
    scanner.stop()
    assert second.closed


def test_stop_is_prompt_while_waiting_for_an_unplugged_scanner() -> None:
    fake = FakeInput(SCANNER)
    scanner = _scanner(fake, reconnect_s=30)
    scanner.start(lambda scan: None)
    fake.devices = []
    fake.opened[0].unplug()
    time.sleep(0.1)
    began = time.monotonic()
    scanner.stop()
    assert time.monotonic() - began < 1


def test_start_fails_clearly_without_the_scanner_and_with_a_bad_path() -> None:
    with pytest.raises(ScannerNotFound, match="name 'Zebra DS2208'"):
        _scanner(FakeInput(KEYBOARD), name="Zebra DS2208").start(lambda scan: None)
    with pytest.raises(FileNotFoundError):
        _scanner(FakeInput(SCANNER), path="/dev/input/by-id/usb-gone-event-kbd").start(
            lambda scan: None
        )
    with pytest.raises(ValueError, match="hexadecimal"):
        HidScanner(vendor="honeywell")


def test_scans_while_stopped_are_not_read_and_start_again_works() -> None:
    fake = FakeInput(SCANNER)
    scanner = _scanner(fake)
    scans: queue.Queue[Scan] = queue.Queue()
    scanner.start(scans.put)
    scanner.stop()
    scanner.start(scans.put)
    assert len(fake.opened) == 2 and fake.opened[0].closed and fake.opened[1].grabbed
    fake.opened[1].push(Keyboard().type("MRN-00123456"))
    assert scans.get(timeout=5).text == "MRN-00123456"
    scanner.stop()
