"""The simulated scanner delivers what it is fed, only while started, as a real one would."""

from __future__ import annotations

import io
import os
import queue
import string

from hypothesis import given
from hypothesis import strategies as st

from photosafe.drivers.scanner import GS, Scan
from photosafe.drivers.scanner_simulated import SimulatedScanner, unescape

WRISTBAND = f"]d28018950600012345678907{GS}80191234"


def _listening() -> tuple[SimulatedScanner, queue.Queue[Scan]]:
    scans: queue.Queue[Scan] = queue.Queue()
    scanner = SimulatedScanner()
    scanner.start(scans.put)
    return scanner, scans


def test_feed_delivers_at_once_with_the_aim_prefix_split_off() -> None:
    scanner, scans = _listening()
    assert scanner.feed(WRISTBAND)
    scan = scans.get_nowait()
    assert scan == Scan(f"8018950600012345678907{GS}80191234", "]d2", "simulated")
    assert scan.wire_text == WRISTBAND


def test_a_scan_without_aim_prefix_has_no_symbology() -> None:
    scanner, scans = _listening()
    scanner.feed("MRN-00123456")
    assert scans.get_nowait() == Scan("MRN-00123456", None, "simulated")


def test_scans_fed_while_stopped_are_dropped() -> None:
    scans: queue.Queue[Scan] = queue.Queue()
    scanner = SimulatedScanner()
    assert not scanner.feed("before start")
    scanner.start(scans.put)
    assert scanner.feed("while started")
    scanner.stop()
    scanner.stop()  # idempotent
    assert not scanner.feed("after stop")
    assert [scans.get_nowait().text] == ["while started"]
    assert scans.empty()


def test_repr_of_a_scan_leaves_the_text_out() -> None:
    scan = Scan.from_wire("]C09434765919", "simulated")
    assert "9434765919" not in repr(scan)
    assert "]C0" in repr(scan)


def test_feed_lines_reads_a_file_with_gs_escapes_comments_and_blank_lines() -> None:
    scanner, scans = _listening()
    script = io.StringIO(
        "# a demo script\n"
        "]d28018950600012345678907\\x1d80191234\n"
        "\n"
        "]d28018950600012345678907<GS>80191234\r\n"
        "STAFF-C12345\n"
    )
    scanner.feed_lines(script).join(timeout=5)
    got = [scans.get_nowait() for _ in range(3)]
    assert [scan.wire_text for scan in got] == [WRISTBAND, WRISTBAND, "STAFF-C12345"]
    assert scans.empty()


def test_feed_lines_ends_at_stop() -> None:
    scanner, scans = _listening()
    read_end, write_end = os.pipe()
    with os.fdopen(read_end) as stream, os.fdopen(write_end, "w") as pipe:
        reader = scanner.feed_lines(stream)
        pipe.write("first\n")
        pipe.flush()
        assert scans.get(timeout=5).text == "first"
        scanner.stop()
        pipe.write("second\nthird\n")
        pipe.flush()
        reader.join(timeout=5)
        assert not reader.is_alive()  # it ended at the first line after stop, before EOF
    scanner.start(scans.put)
    assert scans.empty()


@given(st.text(alphabet=string.ascii_letters + string.digits + "()-^] " + GS))
def test_unescape_restores_gs_from_either_escape(text: str) -> None:
    assert unescape(text.replace(GS, "<GS>") + "\n") == text
    assert unescape(text.replace(GS, "\\x1d") + "\r\n") == text
