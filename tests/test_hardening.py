"""Process hardening: not dumpable, no core, memory locked, and an audit hook refusing disk writes.

The audit hook is tested in a child process (tests/hardening_child.py): it cannot be removed once
installed, the station's has no off switch by design, and pytest writes files itself. The child
runs a whole capture cycle under the hook, then attempts each kind of write on purpose.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from pathlib import Path

from station_runner import station_env

from photosafe.daemon import hardening

CHILD = Path(__file__).with_name("hardening_child.py")


def test_a_capture_cycle_runs_under_the_hook_and_every_write_is_refused_and_logged(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "existing.txt").write_text("keep")
    run = subprocess.run(
        [sys.executable, CHILD, folder],
        capture_output=True,
        text=True,
        env=station_env(),
        timeout=60,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)

    assert result["dumpable"] is False
    assert result["core_limit"] == [0, 0]
    if os.geteuid() == 0:  # root holds CAP_IPC_LOCK; elsewhere the limit decides
        assert result["memory_locked"] is True, result["problems"]
    assert result["problems"] == [] or not result["memory_locked"]

    # The whole cycle ran without a single refusal: the station writes nothing.
    assert result["signals"].count("SENDING") == 2
    assert result["refused_during_cycle"] == 0
    assert result["opened_with_canary"] == 2

    writes = result["writes"]
    assert {what: how for what, how in writes.items() if how != "refused"} == {}
    assert set(result["allowed"].values()) == {"allowed"}, result["allowed"]
    # Each refusal is logged by its audit event's name, and counted.
    logged = result["logged"]
    # (tempfile.TemporaryFile tries O_TMPFILE, then falls back to mkstemp: two refusals.)
    assert len(logged) == sum(result["refused"].values()) == len(writes) + 1
    assert {"open", "os.rename", "os.remove", "os.mkdir", "os.truncate", "os.symlink"} <= set(
        logged
    )
    assert {"os.chmod", "shutil.copyfile", "tempfile.mkstemp", "socket.bind"} <= set(logged)
    assert "hardening.applied" in result["log_events"]
    assert sorted(p.name for p in folder.iterdir()) == ["existing.txt"]
    assert (folder / "existing.txt").read_text() == "keep"
    assert not Path(f"/dev/shm/photosafe-{result['pid']}").exists()


def test_mlockall_is_skipped_with_a_clear_reason_when_the_limit_is_too_low() -> None:
    mib = hardening.MIB
    reason = hardening.memlock_refusal(8 * mib, privileged=False, needed=1024 * mib)
    assert reason is not None
    assert "RLIMIT_MEMLOCK" in reason and "8 MiB" in reason and "1024 MiB" in reason
    assert "LimitMEMLOCK=infinity" in reason and "hardening.mlockall = false" in reason
    assert hardening.memlock_refusal(8 * mib, privileged=True, needed=1024 * mib) is None
    infinity = resource.RLIM_INFINITY
    assert hardening.memlock_refusal(infinity, privileged=False, needed=1024 * mib) is None
    assert hardening.memlock_refusal(2048 * mib, privileged=False, needed=1024 * mib) is None


def test_the_hook_decides_by_flags_and_mode_and_knows_device_nodes() -> None:
    guard = hardening.WriteGuard(("/dev/null",))  # called directly: not installed
    guard(  # reading: nothing happens
        "open", ("/etc/hostname", "r", os.O_RDONLY | os.O_CLOEXEC)
    )
    guard("open", ("/dev/null", "w", os.O_WRONLY | os.O_CREAT | os.O_TRUNC))  # an allowed device
    guard("socket.bind", (None, "\0abstract"))
    guard("socket.bind", (None, ("127.0.0.1", 0)))
    guard("os.listdir", ("/tmp",))
    refused = [
        ("open", ("/tmp/x", None, os.O_RDWR)),  # os.open
        ("open", ("/tmp/keys.log", "ab", 0)),  # C code (ssl's key log): mode only
        ("open", ("/dev/zero", "w", os.O_WRONLY)),  # a device, but not an allowed one
        ("open", ("/dev/nullx", "w", os.O_WRONLY | os.O_CREAT)),  # a new file in /dev
        ("open", ("dev/null", "w", os.O_WRONLY)),  # relative: refused
        ("socket.bind", (None, "/run/photosafe.sock")),
        ("os.rename", ("a", "b", -1, -1)),
        ("shutil.rmtree", ("/tmp/d", None)),
    ]
    for event, args in refused:
        try:
            guard(event, args)
        except PermissionError as exc:
            assert "writes nothing to disk" in str(exc)
        else:
            raise AssertionError(f"{event} {args} was not refused")
    assert guard.total == len(refused)
    assert guard.refused["open"] == 5
