"""Logging that can only say what is allowed: event names and allow-listed fields.

A log line is `event key=value ...`. Only the fields named in ALLOWED are ever printed, so a
patient identifier, a name or image bytes cannot reach a log by accident through `extra=`; the
message itself is the stable event name, never formatted with arguments.
"""

from __future__ import annotations

import logging
import sys

ALLOWED = frozenset(
    {
        "attempt", "bytes", "capture_id", "consent_kind", "device", "looked_like", "operator",
        "pending", "reason", "retry_s", "session_present", "status", "step",
    }
)  # fmt: skip
_COUNT_PREFIX = "count_"


class AllowListFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields = [
            f"{key}={value}"
            for key, value in sorted(record.__dict__.items())
            if key in ALLOWED or key.startswith(_COUNT_PREFIX)
        ]
        head = f"{self.formatTime(record)} {record.levelname.lower()} {record.name}: {record.msg}"
        return " ".join([head, *fields])


def setup_logging(level: int = logging.INFO) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(AllowListFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
