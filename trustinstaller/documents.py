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
import importlib
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import MISSING, dataclass, field, fields, is_dataclass, replace
from typing import Any

from trustinstaller.errors import Problem


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


# A JSON object as json.loads gives it and json.dumps takes it: the type of every document at
# the boundary, where it is read or written (the status, the journal, an answer, a manifest, a
# browser's policy file). Inside, documents are the dataclasses below.
JSONObject = dict[str, Any]

# How a field is written, in its metadata: "omit_none" leaves out a None; "round" rounds a
# float to that many digits; "under" nests the field in an object of that name; "flatten" puts
# a dataclass's keys beside the others (and reads it back where one of its keys is there);
# "required" refuses a document without it, even where the dataclass has a default.
_OMIT_NONE = {"omit_none": True}
_REQUIRED = {"required": True}

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
    throttle_delay_s: float = field(default=0.0, metadata={"round": 3})
    duration_s: float = field(default=0.0, metadata={"round": 3})
    timed_out: bool = False


@dataclass(frozen=True)
class Status:
    """The session's status: ``status.json`` and the answer to ``GET /v1/status``."""

    state: State = field(default=State.OPEN, metadata=_REQUIRED)
    certificates: tuple[CertEntry, ...] = ()
    warnings: tuple[str, ...] = ()
    errors: tuple[Problem, ...] = ()
    locked_at: str | None = field(default=None, metadata=_OMIT_NONE)
    updated_at: str | None = field(default=None, metadata=_OMIT_NONE)
    fetch: FetchReport | None = field(default=None, metadata=_OMIT_NONE)
    # How the OS store was updated: "fast" (the proven fast path) or "script".
    os_update: str | None = field(default=None, metadata=_OMIT_NONE)

    @property
    def locked(self) -> bool:
        """Whether the session's configuration is locked."""
        return self.state is State.LOCKED


@dataclass(frozen=True)
class Answer:
    """Every HTTP body the daemon sends: the status where there is one (its keys at the top),
    a PUT's outcome and message, or why a request was refused (``error``). A part that is None
    is left out."""

    status: Status | None = field(default=None, metadata={**_OMIT_NONE, "flatten": True})
    outcome: str | None = field(default=None, metadata=_OMIT_NONE)
    message: str | None = field(default=None, metadata=_OMIT_NONE)
    error: str | None = field(default=None, metadata=_OMIT_NONE)


# -- the journal -----------------------------------------------------------------------------


class Step:
    """A journal entry's kind: ``action`` names it in the JSON, beside its fields.

    The file steps every store takes are here; a store's own kinds are in its module, each a
    frozen dataclass subclassing this one, and registered by its action as it is defined.
    """

    action: typing.ClassVar[str]

    def __init_subclass__(cls, *, action: str, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if action in _ENTRY_KINDS:
            raise TypeError(f"journal action {action!r} is taken by {_ENTRY_KINDS[action]}")
        cls.action = action
        _ENTRY_KINDS[action] = cls


# Every journal entry kind, by action: filled as each Step subclass is defined.
_ENTRY_KINDS: dict[str, type[Step]] = {}


@dataclass(frozen=True)
class Mkdir(Step, action="mkdir"):
    """A directory about to be made (removed by a rollback if empty)."""

    path: str


@dataclass(frozen=True)
class Write(Step, action="write"):
    """A file about to be written in ``dir``; ``original`` (base64) and ``mode`` if it existed."""

    dir: str
    name: str
    original: str | None = None
    mode: int | None = None


# A journal entry: any Step (a store's rollback tells its own kinds apart).
Entry = Step


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
    phase: Phase = field(default=Phase.APPLYING, metadata=_REQUIRED)
    certificates: tuple[CertEntry, ...] = field(default=(), metadata={"under": "summary"})
    entries: tuple[Recorded, ...] = field(default=(), metadata=_REQUIRED)

    def by_store(self) -> dict[str, list[Entry]]:
        """Each store's entries, stores in order of first appearance."""
        out: dict[str, list[Entry]] = {}
        for r in self.entries:
            out.setdefault(r.store, []).append(r.entry)
        return out


# -- JSON ---------------------------------------------------------------------------------------
# One encoder and one decoder, driven by each dataclass's fields and type hints. A journal entry
# is the one shape that is not a dataclass's own: its store and kind (``action``) sit beside
# the entry's fields.

_T = typing.TypeVar("_T")


def status_to_json(s: Status) -> JSONObject:
    """The JSON form of a status."""
    return _encode_object(s)


def status_from_json(data: object) -> Status:
    """A status from its JSON form; ValueError if it is not one. Keys it does not know are
    left (an answer carries ``outcome`` and ``message`` beside the status)."""
    return _decode_object(Status, data, "status")


def answer_to_json(a: Answer) -> JSONObject:
    """The JSON form of an HTTP body."""
    return _encode_object(a)


def answer_from_json(data: object) -> Answer:
    """An HTTP body from its JSON form; ValueError if it is not one."""
    return _decode_object(Answer, data, "answer")


def fetch_to_json(f: FetchReport) -> JSONObject:
    """The JSON form of a fetch report (rounded to the millisecond)."""
    return _encode_object(f)


def journal_to_json(j: Journal) -> JSONObject:
    """The JSON form of a journal."""
    return _encode_object(j)


def journal_from_json(data: object) -> Journal:
    """A journal from its JSON form; ValueError if it is not one."""
    return _decode_object(Journal, data, "journal")


def with_entry(j: Journal, store: str, entry: Entry) -> Journal:
    """``j`` with one more entry."""
    return replace(j, entries=(*j.entries, Recorded(store, entry)))


def _encode_object(obj: Any) -> JSONObject:
    if isinstance(obj, Recorded):
        return {"store": obj.store, "action": obj.entry.action, **_encode_object(obj.entry)}
    out: JSONObject = {}
    for f in fields(obj):
        value = getattr(obj, f.name)
        if value is None and f.metadata.get("omit_none"):
            continue
        encoded = _encode(value)
        if "round" in f.metadata:
            encoded = round(encoded, f.metadata["round"])
        if "under" in f.metadata:
            out.setdefault(f.metadata["under"], {})[f.name] = encoded
        elif f.metadata.get("flatten"):
            out.update(encoded)
        else:
            out[f.name] = encoded
    return out


def _encode(value: object) -> Any:
    if is_dataclass(value):
        return _encode_object(value)
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, tuple):
        return [_encode(v) for v in value]
    return value


def _decode_object(cls: type[_T], data: object, what: str) -> _T:
    d = _mapping(data, what)
    hints = _hints(cls)
    kw: dict[str, object] = {}
    for f in fields(cls):  # type: ignore[arg-type]
        where = d
        if "under" in f.metadata:
            where = _mapping(d.get(f.metadata["under"], {}), f.metadata["under"])
        name = f"{what}.{f.name}"
        if f.metadata.get("flatten"):
            inner = typing.get_args(hints[f.name])[0]
            if any(x.name in d for x in fields(inner)):
                kw[f.name] = _decode_object(inner, d, name)
        elif f.name in where:
            kw[f.name] = _decode(hints[f.name], where[f.name], name)
        elif f.metadata.get("required") or (f.default is MISSING and f.default_factory is MISSING):
            kw[f.name] = _decode(hints[f.name], None, name)  # says what is missing
    return cls(**kw)


def _decode(tp: Any, value: object, what: str) -> Any:
    args = typing.get_args(tp)
    if typing.get_origin(tp) in (types.UnionType, typing.Union):
        if value is None and type(None) in args:
            return None
        (inner,) = (a for a in args if a is not type(None))
        return _decode(inner, value, what)
    if typing.get_origin(tp) is tuple:
        return tuple(_decode(args[0], v, what) for v in _list(value, what))
    if typing.get_origin(tp) is dict:
        return {_str(k, what): _decode(args[1], v, f"{what}.{k}") for k, v in
                _mapping(value, what).items()}  # fmt: skip
    if tp is Recorded:
        return _recorded(value)
    if tp is Step:
        raise ValueError(f"{what}: a journal entry is decoded by its action")
    if is_dataclass(tp):
        return _decode_object(tp, value, what)  # type: ignore[arg-type]
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        try:
            return tp(_str(value, what))
        except ValueError:
            field_name = what.rpartition(".")[2]
            raise ValueError(f"{what}: unknown {field_name} {str(value)[:40]!r}") from None
    if tp is bool:
        if not isinstance(value, bool):
            raise ValueError(f"{what}: not true or false")
        return value
    if tp is int or tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"{what}: not a number")
        if tp is int and not isinstance(value, int):
            raise ValueError(f"{what}: not an integer")
        return value
    return _str(value, what)


def _recorded(data: object) -> Recorded:
    d = dict(_mapping(data, "journal entry"))
    store = _str(d.pop("store", None), "store")
    action = _str(d.pop("action", None), "action")
    kind = _ENTRY_KINDS.get(action)
    if kind is None:
        # A store's own kinds register as its module loads; the registry loads every store.
        importlib.import_module("trustinstaller.stores.registry")
        kind = _ENTRY_KINDS.get(action)
    if kind is None or not is_dataclass(kind):
        raise ValueError(f"journal entry: unknown action {action[:40]!r}")
    unknown = set(d) - {f.name for f in fields(kind)}
    if unknown:
        raise ValueError(f"journal entry {action}: unknown fields {sorted(unknown)[:5]}")
    return Recorded(store, _decode_object(kind, d, f"journal entry {action}"))


_HINTS: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> JSONObject:
    """A dataclass's resolved type hints, found once."""
    if cls not in _HINTS:
        _HINTS[cls] = typing.get_type_hints(cls)
    return _HINTS[cls]


def _mapping(data: object, what: str) -> Mapping[str, Any]:
    if not isinstance(data, Mapping):
        raise ValueError(f"{what}: not an object")
    return data


def _list(data: object, what: str) -> Sequence[Any]:
    if not isinstance(data, list):
        raise ValueError(f"{what}: not a list")
    return data


def _str(data: object, what: str) -> str:
    if not isinstance(data, str):
        raise ValueError(f"{what}: not a string")
    return data
