"""Logging: structlog, configured once. JSON lines unless stderr is a TTY.

Only fields on an allow-list reach the output, so a credential or a PEM body
passed to a log call by mistake is dropped rather than written.
"""

from __future__ import annotations

import importlib
import logging
import sys
import threading
import types
from collections.abc import MutableMapping
from typing import Any, TextIO

_ASYNCIO_LOCK = threading.Lock()


class _DeferredAsyncio(types.ModuleType):
    """Stands in for asyncio until something uses it, then imports the real one.

    structlog imports asyncio at module level (about a tenth of the imports before the daemon
    is ready) but uses it only inside its async log methods, which this project never calls.
    Not importlib's LazyLoader: on Python 3.11 a second ``import asyncio`` reads ``__spec__``
    and that loads it at once.
    """

    def __getattr__(self, name: str) -> Any:
        with _ASYNCIO_LOCK:
            if sys.modules.get("asyncio") is self:
                del sys.modules["asyncio"]
                importlib.import_module("asyncio")
        return getattr(sys.modules["asyncio"], name)


if "asyncio" not in sys.modules:
    sys.modules["asyncio"] = _DeferredAsyncio("asyncio")

import structlog  # noqa: E402 (after the asyncio stand-in, on purpose)

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
        "owner",
        "path",
        "peer_gid",
        "peer_pid",
        "peer_uid",
        "reason",
        "store",
        "request_id",
        "socket",
        "source",
        "state",
        "status",
        "stores",
        "subject",
        "version",
        "warnings",
        # user_steps_contained: what a step run as a user gets on this host.
        "pid_namespace",
        "cgroup",
        "limits",
        "tasks_max",
        "memory_max",
        # user_step_left_charged: what an ended step left charged to its user's cgroup.
        "removed",
        "tasks",
        "memory_bytes",
        # os_update: which way the OS store was updated ("path"), and what it changed.
        "os_update",
        "fresh",
        "added",
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
