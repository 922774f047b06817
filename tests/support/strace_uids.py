"""Which uid made each syscall in an ``strace -f -y`` log: a pure parser, tested with a table.

Each pid's effective uid is tracked through the log: a child starts with its parent's uid at
the moment of the clone/fork/vfork/clone3, and a successful setuid/setreuid/setresuid changes it.
The log must come from ``strace -f -qq -y -e trace=%file,%creds,%process -o FILE``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

_LINE = re.compile(r"^(\d+)\s+(.*)$")
_CALL = re.compile(r"^([a-z_0-9]+)\((.*)$")
_RESUMED = re.compile(r"^<\.\.\. ([a-z_0-9]+) resumed>(.*)$")
_RESULT = re.compile(r"\)\s+=\s+(-?\d+|\?)")
_FORKS = ("clone", "clone3", "fork", "vfork")
_CREDS = ("setuid", "setreuid", "setresuid")
_FIRST_STRING = re.compile(r'^"((?:[^"\\]|\\.)*)"')
_PATHS = re.compile(r'"((?:[^"\\]|\\.)*)"|<([^<>]*)>')


@dataclass(frozen=True)
class Call:
    """One finished syscall: who made it, as which effective uid, and its argument text."""

    line: int
    pid: int
    euid: int
    name: str
    args: str
    result: str


def _split_result(text: str) -> tuple[str, str]:
    """``args) = N ...`` -> (args, N); the last ``) = `` wins, as arguments may hold one."""
    matches = list(_RESULT.finditer(text))
    if not matches:
        return text, "?"
    last = matches[-1]
    return text[: last.start()], last.group(1)


def parse(lines: Iterable[str], initial_uid: int = 0) -> list[Call]:
    """Every finished syscall in ``lines``, each with the effective uid of the pid that made it."""
    pending: dict[int, tuple[str, str, int]] = {}  # pid -> (name, args so far, start line)
    finished: list[tuple[int, int, str, str, str, int]] = []
    parent: dict[int, tuple[int, int]] = {}  # child -> (parent pid, line of the fork's start)
    for no, raw in enumerate(lines):
        m = _LINE.match(raw.rstrip("\n"))
        if not m:
            continue
        pid, rest = int(m.group(1)), m.group(2)
        if rest.startswith("---") or rest.startswith("+++"):
            continue  # signals and exits
        resumed = _RESUMED.match(rest)
        if resumed:
            name, tail = resumed.group(1), resumed.group(2)
            _, head, start = pending.pop(pid, (name, "", no))
            text = head + tail
        else:
            call = _CALL.match(rest)
            if not call:
                continue
            name, text, start = call.group(1), call.group(2), no
            if text.endswith("<unfinished ...>"):
                pending[pid] = (name, text.removesuffix("<unfinished ...>"), no)
                continue
        args, result = _split_result(text)
        finished.append((no, pid, name, args, result, start))
        if name in _FORKS and result.isdigit() and int(result) > 0:
            parent[int(result)] = (pid, start)

    history: dict[int, list[tuple[int, int]]] = {}  # pid -> [(line, euid after it)]

    def euid_at(pid: int, line: int) -> int:
        for at, uid in reversed(history.get(pid, [])):
            if at < line:
                return uid
        if pid in parent:
            ppid, start = parent[pid]
            return euid_at(ppid, start)
        return initial_uid

    out: list[Call] = []
    for no, pid, name, args, result, _start in finished:
        euid = euid_at(pid, no)
        out.append(Call(no, pid, euid, name, args, result))
        if name in _CREDS and result == "0":
            values = [v.strip() for v in args.split(",")]
            wanted = values[0] if name == "setuid" else values[1]
            if wanted != "-1":
                history.setdefault(pid, []).append((no, int(wanted)))
    return out


def mentions(call: Call, path: str) -> bool:
    """Whether ``call``'s arguments name ``path`` or something under it.

    For execve only the program is an argument that is a path: the rest of argv is text that
    the program may act on after it dropped privileges.
    """
    args = call.args
    if call.name in ("execve", "execveat"):
        m = _FIRST_STRING.match(args.strip())
        args = m.group(0) if m else ""
    prefix = path.rstrip("/")
    # Quoted strings are paths given by name; <...> are the paths strace -y prints for fds.
    tokens = [quoted or fd_path for quoted, fd_path in _PATHS.findall(args)]
    return any(t == prefix or t.startswith(prefix + "/") for t in tokens)


def root_calls_under(calls: Iterable[Call], path: str) -> list[Call]:
    """The calls made as uid 0 whose arguments name ``path`` or something under it."""
    return [c for c in calls if c.euid == 0 and mentions(c, path)]
