"""Logging that can only say what is allowed: event names and allow-listed fields.

A log line is `event key=value ...`. Only the fields named in ALLOWED are ever printed, so a
patient identifier, a name or image bytes cannot reach a log by accident through `extra=`; the
message itself is the stable event name, never formatted with arguments.

Under systemd the records go to the journal instead (systemd-python's JournalHandler), when
`JOURNAL_STREAM` says stderr is the journal, or `INVOCATION_ID` says a unit runs us without it.
JournalHandler stores every attribute of a record, every `extra=` key included, as a journal
field, so `AllowListFilter` first strips each record to logging's own attributes and the ALLOWED
fields, and drops the arguments, the traceback and the stack (keeping the exception's class name).
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Mapping
from typing import Any

ALLOWED = frozenset(
    {
        "attempt", "audit_event", "bytes", "capture_id", "config_version", "consent_kind",
        "core_limit", "device", "dumpable", "exc_type", "kid", "looked_like", "mlockall",
        "operator", "pending", "reason", "retry_s", "session_present", "status", "step",
    }
)  # fmt: skip
_COUNT_PREFIX = "count_"
# What logging itself puts on every record in 3.11 (no caller data once the filter has cleared
# `args` and the exception); JournalHandler reads several of them. Not `message` or `asctime`:
# another handler's formatter may have added them, formatted with the arguments.
_LOGGING_OWN = frozenset(
    {
        "args", "created", "exc_info", "exc_text", "filename", "funcName", "levelname",
        "levelno", "lineno", "module", "msecs", "msg", "name", "pathname", "process",
        "processName", "relativeCreated", "stack_info", "thread", "threadName",
    }
)  # fmt: skip
SYSLOG_IDENTIFIER = "photosafe"


def allowed_field(key: str) -> bool:
    return key in ALLOWED or key.startswith(_COUNT_PREFIX)


class AllowListFormatter(logging.Formatter):
    def __init__(self, *, timestamp: bool = True) -> None:
        super().__init__()
        self._timestamp = timestamp

    def format(self, record: logging.LogRecord) -> str:
        fields = [
            f"{key}={value}" for key, value in sorted(record.__dict__.items()) if allowed_field(key)
        ]
        head = str(record.msg)
        if self._timestamp:  # the journal has its own time, priority and logger fields
            head = f"{self.formatTime(record)} {record.levelname.lower()} {record.name}: {head}"
        return " ".join([head, *fields])


class AllowListFilter(logging.Filter):
    """Strips a record IN PLACE to logging's own attributes and the allow-listed fields.

    Python 3.11 filters cannot hand a copy on, so attach this only to a handler that is the last
    to see the record (setup_logging gives the journal handler alone to the root logger).
    """

    def filter(self, record: logging.LogRecord) -> bool:
        exc_type = record.exc_info[0] if record.exc_info else None
        for key in [k for k in record.__dict__ if k not in _LOGGING_OWN and not allowed_field(k)]:
            del record.__dict__[key]
        if exc_type is not None:
            record.__dict__["exc_type"] = exc_type.__name__
        record.msg = str(record.msg)
        record.args = ()
        record.exc_info = None
        record.exc_text = None
        record.stack_info = None
        return True


def journal_handler(sender_function: Callable[..., Any] | None = None) -> logging.Handler:
    """systemd's JournalHandler behind the allow-list filter (tests pass a fake sender)."""
    from systemd.journal import JournalHandler, send

    handler: logging.Handler = JournalHandler(
        sender_function=sender_function or send, SYSLOG_IDENTIFIER=SYSLOG_IDENTIFIER
    )
    handler.addFilter(AllowListFilter())
    handler.setFormatter(AllowListFormatter(timestamp=False))
    return handler


def under_journal(environ: Mapping[str, str] = os.environ, stderr_fd: int = 2) -> bool:
    """True when systemd runs us: stderr is the journal stream, or a unit without one."""
    stream = environ.get("JOURNAL_STREAM")
    if stream:
        try:
            info = os.fstat(stderr_fd)
        except OSError:
            return False
        return stream == f"{info.st_dev}:{info.st_ino}"  # not a child's inherited variable
    return bool(environ.get("INVOCATION_ID"))


def setup_logging(level: int = logging.INFO, environ: Mapping[str, str] = os.environ) -> None:
    handler: logging.Handler | None = None
    if under_journal(environ):
        try:
            handler = journal_handler()
        except ImportError:
            handler = None  # systemd-python missing: stderr still reaches the journal
    if handler is None:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(AllowListFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
