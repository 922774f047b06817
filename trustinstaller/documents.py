"""The project's two documents, the status and the journal: one frozen dataclass per kind.

This is the one place that turns them into JSON and back. Every writer builds these types
and every reader gets them back, so a field written by an install and read by a rollback or
a recovery is a name mypy checks, not a string. The JSON is the public format of
``status.json``, ``GET /v1/status`` and ``journal.json``: keys and shapes stay as they are.

A decoder raises ValueError for anything it did not write itself; the state directory turns
that into a StateError naming the file.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from trustinstaller.errors import Problem, ProblemKind


class State(enum.StrEnum):
    """Where a session is: nothing submitted, installing, locked, or failed (not locked)."""

    OPEN = "open"
    INSTALLING = "installing"
    LOCKED = "locked"
    FAILED = "failed"


class Phase(enum.StrEnum):
    """How far an install in the journal got."""

    APPLYING = "applying"
    VERIFYING = "verifying"
    COMMITTED = "committed"


# -- the status ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Source:
    """Where in the manifest a certificate was named."""

    level: str
    index: int
    arn: str


@dataclass(frozen=True)
class CertEntry:
    """One installed (or to be installed) certificate, as the status reports it."""

    fingerprint_sha256: str
    subject: str
    not_before: str
    not_after: str
    source: Source
    duplicates: tuple[Source, ...] = ()
    stores: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class FetchReport:
    """What one fetch phase cost: calls, throttling, time."""

    secrets: int = 0
    calls: int = 0
    throttled_calls: int = 0
    throttled_fetches: int = 0
    throttle_delay_s: float = 0.0
    duration_s: float = 0.0
    timed_out: bool = False


@dataclass(frozen=True)
class Status:
    """The session's status: ``status.json`` and the answer to ``GET /v1/status``."""

    state: State = State.OPEN
    certificates: tuple[CertEntry, ...] = ()
    warnings: tuple[str, ...] = ()
    errors: tuple[Problem, ...] = ()
    locked_at: str | None = None
    updated_at: str | None = None
    fetch: FetchReport | None = None

    @property
    def locked(self) -> bool:
        """Whether the session's configuration is locked."""
        return self.state is State.LOCKED


# -- the journal -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Mkdir:
    """A directory about to be made (removed by a rollback if empty)."""

    path: str
    action = "mkdir"


@dataclass(frozen=True)
class Write:
    """A file about to be written in ``dir``; ``original`` (base64) and ``mode`` if it existed."""

    dir: str
    name: str
    original: str | None = None
    mode: int | None = None
    action = "write"


@dataclass(frozen=True)
class Update:
    """update-ca-certificates about to run (a rollback reruns it with --fresh)."""

    action = "update"


@dataclass(frozen=True)
class CreateDb:
    """An NSS database about to be created."""

    db: str
    action = "createdb"


@dataclass(frozen=True)
class AddCert:
    """A nickname about to be added to an NSS database."""

    db: str
    nickname: str
    action = "add"


@dataclass(frozen=True)
class ManagerEnv:
    """Variables about to be set in systemd's manager environment, and the values they replace."""

    assigned: dict[str, str]
    original: dict[str, str]
    action = "setenv"

    def __post_init__(self) -> None:
        for held in (self.assigned, self.original):
            if not isinstance(held, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in held.items()
            ):
                raise TypeError("assigned and original must map names to strings")


Entry = Mkdir | Write | Update | CreateDb | AddCert | ManagerEnv
_ENTRY_KINDS: dict[str, type[Entry]] = {
    k.action: k for k in (Mkdir, Write, Update, CreateDb, AddCert, ManagerEnv)
}


@dataclass(frozen=True)
class Recorded:
    """One journal entry: the step, and the store that took it."""

    store: str
    entry: Entry


@dataclass(frozen=True)
class Journal:
    """The write-ahead record of one install (``journal.json``)."""

    id: str
    started_at: str
    phase: Phase = Phase.APPLYING
    certificates: tuple[CertEntry, ...] = ()
    entries: tuple[Recorded, ...] = field(default=())

    def by_store(self) -> dict[str, list[Entry]]:
        """Each store's entries, stores in order of first appearance."""
        out: dict[str, list[Entry]] = {}
        for r in self.entries:
            out.setdefault(r.store, []).append(r.entry)
        return out


# -- JSON ---------------------------------------------------------------------------------------


def status_to_json(s: Status) -> dict[str, Any]:
    """The JSON form of a status."""
    doc: dict[str, Any] = {
        "state": s.state.value,
        "certificates": [_cert_to_json(c) for c in s.certificates],
        "warnings": list(s.warnings),
        "errors": [p.as_dict() for p in s.errors],
    }
    if s.locked_at is not None:
        doc["locked_at"] = s.locked_at
    if s.updated_at is not None:
        doc["updated_at"] = s.updated_at
    if s.fetch is not None:
        doc["fetch"] = fetch_to_json(s.fetch)
    return doc


def status_from_json(data: object) -> Status:
    """A status from its JSON form; ValueError if it is not one."""
    d = _mapping(data, "status")
    fetch = d.get("fetch")
    return Status(
        state=State(_str(d.get("state"), "state")),
        certificates=tuple(_cert_from_json(c) for c in _list(d.get("certificates", []))),
        warnings=tuple(_str(w, "warning") for w in _list(d.get("warnings", []))),
        errors=tuple(_problem_from_json(p) for p in _list(d.get("errors", []))),
        locked_at=_opt_str(d.get("locked_at"), "locked_at"),
        updated_at=_opt_str(d.get("updated_at"), "updated_at"),
        fetch=None if fetch is None else _fetch_from_json(fetch),
    )


def fetch_to_json(f: FetchReport) -> dict[str, Any]:
    """The JSON form of a fetch report (rounded to the millisecond)."""
    return {
        "secrets": f.secrets,
        "calls": f.calls,
        "throttled_calls": f.throttled_calls,
        "throttled_fetches": f.throttled_fetches,
        "throttle_delay_s": round(f.throttle_delay_s, 3),
        "duration_s": round(f.duration_s, 3),
        "timed_out": f.timed_out,
    }


def journal_to_json(j: Journal) -> dict[str, Any]:
    """The JSON form of a journal."""
    return {
        "id": j.id,
        "started_at": j.started_at,
        "phase": j.phase.value,
        "summary": {"certificates": [_cert_to_json(c) for c in j.certificates]},
        "entries": [
            {"store": r.store, "action": r.entry.action, **_fields(r.entry)} for r in j.entries
        ],
    }


def journal_from_json(data: object) -> Journal:
    """A journal from its JSON form; ValueError if it is not one."""
    d = _mapping(data, "journal")
    summary = _mapping(d.get("summary", {}), "summary")
    return Journal(
        id=_str(d.get("id"), "id"),
        started_at=_str(d.get("started_at"), "started_at"),
        phase=Phase(_str(d.get("phase"), "phase")),
        certificates=tuple(_cert_from_json(c) for c in _list(summary.get("certificates", []))),
        entries=tuple(_recorded_from_json(e) for e in _list(d.get("entries"))),
    )


def with_entry(j: Journal, store: str, entry: Entry) -> Journal:
    """``j`` with one more entry."""
    return replace(j, entries=(*j.entries, Recorded(store, entry)))


def _fields(entry: Entry) -> dict[str, Any]:
    return {k: getattr(entry, k) for k in entry.__dataclass_fields__}


def _recorded_from_json(data: object) -> Recorded:
    d = dict(_mapping(data, "journal entry"))
    store = _str(d.pop("store", None), "store")
    action = _str(d.pop("action", None), "action")
    kind = _ENTRY_KINDS.get(action)
    if kind is None:
        raise ValueError(f"journal entry: unknown action {action[:40]!r}")
    if set(d) - set(kind.__dataclass_fields__):
        raise ValueError(f"journal entry {action}: unknown fields {sorted(d)[:5]}")
    try:
        return Recorded(store, kind(**d))
    except TypeError as exc:
        raise ValueError(f"journal entry {action}: {exc}") from exc


def _cert_to_json(c: CertEntry) -> dict[str, Any]:
    return {
        "fingerprint_sha256": c.fingerprint_sha256,
        "subject": c.subject,
        "not_before": c.not_before,
        "not_after": c.not_after,
        "source": _source_to_json(c.source),
        "duplicates": [_source_to_json(s) for s in c.duplicates],
        "stores": list(c.stores),
        "warnings": list(c.warnings),
    }


def _cert_from_json(data: object) -> CertEntry:
    d = _mapping(data, "certificate")
    return CertEntry(
        fingerprint_sha256=_str(d.get("fingerprint_sha256"), "fingerprint_sha256"),
        subject=_str(d.get("subject"), "subject"),
        not_before=_str(d.get("not_before"), "not_before"),
        not_after=_str(d.get("not_after"), "not_after"),
        source=_source_from_json(d.get("source")),
        duplicates=tuple(_source_from_json(s) for s in _list(d.get("duplicates", []))),
        stores=tuple(_str(s, "store") for s in _list(d.get("stores", []))),
        warnings=tuple(_str(w, "warning") for w in _list(d.get("warnings", []))),
    )


def _source_to_json(s: Source) -> dict[str, Any]:
    return {"level": s.level, "index": s.index, "arn": s.arn}


def _source_from_json(data: object) -> Source:
    d = _mapping(data, "source")
    index = d.get("index")
    if not isinstance(index, int) or isinstance(index, bool):
        raise ValueError("source: index is not an integer")
    return Source(_str(d.get("level"), "level"), index, _str(d.get("arn"), "arn"))


def _problem_from_json(data: object) -> Problem:
    d = _mapping(data, "problem")
    kind = _str(d.get("kind"), "kind")
    try:
        known = ProblemKind(kind)
    except ValueError:
        raise ValueError(f"problem: unknown kind {kind[:40]!r}") from None
    return Problem(known, _str(d.get("object"), "object"), _str(d.get("message"), "m"))


def _fetch_from_json(data: object) -> FetchReport:
    d = _mapping(data, "fetch")
    kw: dict[str, Any] = {}
    for name, f in FetchReport.__dataclass_fields__.items():
        if name in d:
            v = d[name]
            kind = str(f.type)
            ok = (
                isinstance(v, bool)
                if kind == "bool"
                else isinstance(v, int | float) and not isinstance(v, bool)
                and (kind == "float" or isinstance(v, int))
            )  # fmt: skip
            if not ok:
                raise ValueError(f"fetch: {name} has the wrong type")
            kw[name] = v
    return FetchReport(**kw)


def _mapping(data: object, what: str) -> Mapping[str, Any]:
    if not isinstance(data, Mapping):
        raise ValueError(f"{what}: not an object")
    return data


def _list(data: object) -> Sequence[Any]:
    if not isinstance(data, list):
        raise ValueError("not a list")
    return data


def _str(data: object, what: str) -> str:
    if not isinstance(data, str):
        raise ValueError(f"{what}: not a string")
    return data


def _opt_str(data: object, what: str) -> str | None:
    return None if data is None else _str(data, what)
