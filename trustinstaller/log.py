"""Logging: structlog, configured once. JSON lines unless stderr is a TTY.

Only fields on an allow-list reach the output, so a credential or a PEM body
passed to a log call by mistake is dropped rather than written.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO

import structlog

ALLOWED_FIELDS = frozenset(
    {
        "event",
        "level",
        "timestamp",
        "arn",
        "certificates",
        "count",
        "duration_ms",
        "error",
        "errors",
        "fetch",
        "fingerprint_sha256",
        "kind",
        "level_name",
        "method",
        "not_after",
        "outcome",
        "path",
        "peer_gid",
        "peer_pid",
        "peer_uid",
        "reason",
        "request_id",
        "socket",
        "source",
        "state",
        "status",
        "stores",
        "subject",
        "version",
        "warnings",
    }
)


def allow_list(_logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> Any:
    """Drop every field that is not on the allow-list."""
    for key in [k for k in event_dict if k not in ALLOWED_FIELDS]:
        del event_dict[key]
    return event_dict


def configure(stream: TextIO | None = None, *, json: bool | None = None) -> None:
    """Configure structlog for this process."""
    out = stream or sys.stderr
    use_json = json if json is not None else not out.isatty()
    renderer: Any = (
        structlog.processors.JSONRenderer(sort_keys=True)
        if use_json
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            allow_list,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
        logger_factory=structlog.PrintLoggerFactory(out),
        cache_logger_on_first_use=False,
    )


def get() -> Any:
    """The project's logger."""
    return structlog.get_logger("trustinstaller")
