"""Time: the one clock every component is handed, and the one way time is written down."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

Clock = Callable[[], dt.datetime]


def utc_now() -> dt.datetime:
    """The current time, timezone-aware UTC: the default clock."""
    return dt.datetime.now(dt.UTC)


def iso(t: dt.datetime) -> str:
    """UTC time as an ISO-8601 string with a Z, to the second."""
    return t.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
