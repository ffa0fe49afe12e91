"""Process hardening at station start: nothing about a picture may reach the disk.

`harden()` runs once, before the station builds anything, and applies four controls:

1. Not dumpable (`prctl(PR_SET_DUMPABLE, 0)`): the kernel writes no core dump of this process,
   and other processes of the same user can neither ptrace it nor read `/proc/<pid>/mem`.
2. Core size limit 0 (`RLIMIT_CORE`): the same again for any core handler; the unit's
   `LimitCORE=0` sets it before we start, so here it is usually already 0.
3. `mlockall(MCL_CURRENT | MCL_FUTURE | MCL_ONFAULT)`, when the memory-lock limit allows it: no
   page of this process (image buffers included) is ever written to swap. An unprivileged process
   may lock only `RLIMIT_MEMLOCK` bytes, and with MCL_FUTURE a mapping over that limit fails (a
   MemoryError in the middle of a capture), so below `memlock_min_bytes` locking is skipped with a
   clear warning instead (the unit sets `LimitMEMLOCK=infinity`). It never stops the station.
4. An audit hook (PEP 578, `sys.addaudithook`) that refuses every file-system write Python makes
   while the station runs: files opened for writing, appending or creating (by flags or by mode),
   rename/replace, remove/unlink, mkdir/rmdir, truncate, links, metadata changes, shutil's
   copies and moves, tempfile's files, and AF_UNIX sockets bound to a path. Reading, sockets and
   the device nodes the drivers need (`allowed_devices`: path prefixes of character devices, such
   as the framebuffer or evdev nodes the scanner opens read-write) stay allowed. A refusal raises
   PermissionError, is logged as `hardening.write_refused` with the audit event's name (never the
   path, which could name anything), and is counted. A refusal is a bug to fix, not a condition to
   tolerate. Python's own bytecode cache is switched off first (`sys.dont_write_bytecode`), so a
   late import does not trip it.

What the hook cannot see: C libraries that call open(2) themselves (libcamera, OpenSSL,
libjpeg) and the few writes Python has no audit event for (`os.mkfifo`, `os.mknod`). The systemd
unit (`ProtectSystem=strict`, no writable path) and the strace test cover those.

Audit hooks cannot be removed (PEP 578), and this one has no off switch on purpose: an "armed"
flag would be a way around it for any code in the process. So tests install it only in a child
process (tests/hardening_child.py), never in pytest's own process, which writes files itself.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import resource
import stat
import sys
import threading
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

MIB = 1024 * 1024
# Character devices the station's drivers may open read-write: camera (libcamera's V4L2 video and
# sub-device nodes, media controller, DMA heaps), GPIO chips, the scanner's evdev node, the
# framebuffer, and /dev/null. /dev/shm is NOT here: it is a file system, not a device.
DRIVER_DEVICES: tuple[str, ...] = (
    "/dev/video",
    "/dev/v4l-subdev",
    "/dev/media",
    "/dev/dma_heap/",
    "/dev/gpiochip",
    "/dev/input/event",
    "/dev/fb",
    "/dev/null",
)
DEFAULT_MEMLOCK_MIN_BYTES = 1024 * MIB

_PR_GET_DUMPABLE = 3
_PR_SET_DUMPABLE = 4
_MCL_CURRENT, _MCL_FUTURE, _MCL_ONFAULT = 1, 2, 4
_CAP_IPC_LOCK = 14

_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
_WRITE_MODES = frozenset("wax+")
# Audit events (Python 3.11 "Audit events table") that always change the file system.
_ALWAYS_REFUSED = frozenset(
    {
        "os.chflags", "os.chmod", "os.chown", "os.lchflags", "os.link", "os.mkdir",
        "os.remove", "os.removexattr", "os.rename", "os.rmdir", "os.setxattr", "os.symlink",
        "os.truncate", "os.utime",
        "shutil.chown", "shutil.copyfile", "shutil.copymode", "shutil.copystat",
        "shutil.copytree", "shutil.make_archive", "shutil.move", "shutil.rmtree",
        "shutil.unpack_archive",
        "tempfile.mkdtemp", "tempfile.mkstemp",
    }
)  # fmt: skip


class WriteGuard:
    """The audit hook: refuses file-system writes, logs each by event name and counts it."""

    def __init__(self, allowed_devices: Sequence[str] = DRIVER_DEVICES) -> None:
        self.allowed_devices = tuple(allowed_devices)
        self.refused: Counter[str] = Counter()
        self._inside = threading.local()  # our own logging raises audit events too

    @property
    def total(self) -> int:
        return sum(self.refused.values())

    def __call__(self, event: str, args: tuple[Any, ...]) -> None:
        if event == "open":
            if not _opens_for_writing(args) or self._is_allowed_device(args[0]):
                return
        elif event == "socket.bind":
            if not _is_filesystem_address(args[1]):
                return
        elif event not in _ALWAYS_REFUSED:
            return
        self._refuse(event, args)

    def _refuse(self, event: str, args: tuple[Any, ...]) -> None:
        target = args[1] if event == "socket.bind" else args[0] if args else None
        self.refused[event] += 1
        if not getattr(self._inside, "active", False):
            self._inside.active = True
            try:
                log.error("hardening.write_refused", extra={"audit_event": event})
            finally:
                self._inside.active = False
        raise PermissionError(
            errno.EPERM,
            f"{event} refused: the PhotoSafe station writes nothing to disk while it runs",
            str(target),
        )

    def _is_allowed_device(self, target: object) -> bool:
        """A character device under an allowed prefix, or an open pipe, socket or device."""
        try:
            if isinstance(target, int):
                mode = os.fstat(target).st_mode
                return not (stat.S_ISREG(mode) or stat.S_ISDIR(mode))
            if not isinstance(target, str | bytes | os.PathLike):
                return False
            path = os.fsdecode(target)
            if not os.path.isabs(path):
                return False
            real = os.path.realpath(path)
            return real.startswith(self.allowed_devices) and stat.S_ISCHR(os.stat(real).st_mode)
        except (OSError, TypeError, ValueError):
            return False


def _opens_for_writing(args: tuple[Any, ...]) -> bool:
    # ("open", (path, mode, flags)): builtins.open gives its mode and flags, os.open gives
    # mode None and its flags, and C code (ssl's key log) gives a mode such as "ab" and flags 0.
    mode, flags = (args[1], args[2]) if len(args) >= 3 else (None, None)
    if isinstance(flags, int) and flags & _WRITE_FLAGS:
        return True
    return isinstance(mode, str) and not _WRITE_MODES.isdisjoint(mode)


def _is_filesystem_address(address: object) -> bool:
    """An AF_UNIX address that creates a node on disk (the abstract namespace starts with NUL)."""
    if isinstance(address, str):
        return not address.startswith("\0")
    if isinstance(address, bytes | bytearray):
        return not address.startswith(b"\0")
    return False


_INSTALLED: list[WriteGuard] = []  # at most one: audit hooks stay for the life of the process
_INSTALL_LOCK = threading.Lock()


def install_write_guard(allowed_devices: Sequence[str] = DRIVER_DEVICES) -> WriteGuard:
    """Install the audit hook (once per process; later calls return the same guard)."""
    with _INSTALL_LOCK:
        if not _INSTALLED:
            sys.dont_write_bytecode = True  # a late import must not try to write a .pyc
            guard = WriteGuard(allowed_devices)
            sys.addaudithook(guard)
            _INSTALLED.append(guard)
        return _INSTALLED[0]


# -- memory: no dumps, no swap -----------------------------------------------------------------


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def set_not_dumpable() -> None:
    libc = _libc()
    if libc.prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_DUMPABLE, 0) failed")


def is_dumpable() -> bool:
    return bool(_libc().prctl(_PR_GET_DUMPABLE, 0, 0, 0, 0))


def limit_core_size() -> None:
    """RLIMIT_CORE 0 (soft and hard); no system call when it is already 0 (LimitCORE=0)."""
    if resource.getrlimit(resource.RLIMIT_CORE) != (0, 0):
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def memlock_refusal(limit: int, *, privileged: bool, needed: int) -> str | None:
    """Why mlockall must not be tried under this memory-lock limit, or None when it may be."""
    if privileged or limit == resource.RLIM_INFINITY or limit >= needed:
        return None
    return (
        f"mlockall skipped: the memory-lock limit (RLIMIT_MEMLOCK) is {limit // MIB} MiB, below "
        f"the {needed // MIB} MiB this station may need locked, and locking with a low limit "
        "makes later allocations fail; raise it (LimitMEMLOCK=infinity in the unit) or set "
        "hardening.mlockall = false. Image memory may reach swap: keep MemorySwapMax=0."
    )


def has_ipc_lock() -> bool:
    """CAP_IPC_LOCK in the effective set: then RLIMIT_MEMLOCK does not apply."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("CapEff:"):
                    return bool(int(line.split()[1], 16) >> _CAP_IPC_LOCK & 1)
    except (OSError, ValueError, IndexError):
        pass
    return False


def lock_memory(needed: int = DEFAULT_MEMLOCK_MIN_BYTES) -> str | None:
    """mlockall where the limit allows; returns why not (never raises for it)."""
    limit, _ = resource.getrlimit(resource.RLIMIT_MEMLOCK)
    refusal = memlock_refusal(limit, privileged=has_ipc_lock(), needed=needed)
    if refusal:
        return refusal
    libc = _libc()
    # MCL_ONFAULT (Linux 4.4): lock pages as they are touched, so reserved but unused memory
    # (thread stacks, malloc arenas) costs nothing; without it, lock everything mapped now.
    for flags in (_MCL_CURRENT | _MCL_FUTURE | _MCL_ONFAULT, _MCL_CURRENT | _MCL_FUTURE):
        if libc.mlockall(flags) == 0:
            return None
        code = ctypes.get_errno()
        if code != errno.EINVAL:
            break
    return f"mlockall failed: {os.strerror(code)}; image memory may reach swap"


@dataclass(frozen=True)
class Hardening:
    """What `harden()` achieved; `problems` lists what it could not do (the station runs on)."""

    guard: WriteGuard
    dumpable: bool
    core_limit: tuple[int, int]
    memory_locked: bool
    problems: tuple[str, ...]


def harden(
    *,
    mlockall: bool = True,
    memlock_min_bytes: int = DEFAULT_MEMLOCK_MIN_BYTES,
    allowed_devices: Sequence[str] = DRIVER_DEVICES,
) -> Hardening:
    """Apply every control; report, never raise, when the platform refuses one of them."""
    problems: list[str] = []
    try:
        set_not_dumpable()
    except OSError as exc:
        problems.append(f"could not make the process non-dumpable: {exc.strerror}")
    try:
        limit_core_size()
    except (OSError, ValueError) as exc:
        problems.append(f"could not set the core size limit to 0: {exc}")
    locked = False
    if mlockall:
        refusal = lock_memory(memlock_min_bytes)
        locked = refusal is None
        if refusal:
            problems.append(refusal)
    guard = install_write_guard(allowed_devices)
    result = Hardening(
        guard=guard,
        dumpable=is_dumpable(),
        core_limit=resource.getrlimit(resource.RLIMIT_CORE),
        memory_locked=locked,
        problems=tuple(problems),
    )
    for problem in problems:
        log.warning("hardening.incomplete", extra={"reason": problem})
    log.info(
        "hardening.applied",
        extra={
            "dumpable": int(result.dumpable),
            "core_limit": result.core_limit[0],
            "mlockall": "on" if locked else "off",
        },
    )
    return result


def clock_synchronised() -> bool | None:
    """Whether the kernel says the clock is NTP-synchronised (adjtimex), None if unknown.

    Certificate validity and capture times depend on it; estates see it in the station status.
    """
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        timex = ctypes.create_string_buffer(512)  # struct timex, modes = 0: read only
        state = libc.adjtimex(timex)
    except (OSError, AttributeError):
        return None
    if state < 0:
        return None
    return bool(state != _TIME_ERROR)


_TIME_ERROR = 5  # adjtimex: the clock is not synchronised
