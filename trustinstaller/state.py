"""The state directory: the session lock, the status file and the install journal.

It lives on a tmpfs (``/run/trustinstaller`` by default), so the lock lasts
exactly as long as the session. Mutual exclusion between the daemon and a
concurrent ``trustinstaller apply`` is an flock on ``install.lock`` in it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import TypeVar

from trustinstaller import _fs, documents
from trustinstaller.clock import Clock, iso, utc_now
from trustinstaller.documents import Journal, JSONObject, Status
from trustinstaller.errors import BusyError, StateError, UnsafePathError

STATUS_FILE = "status.json"
JOURNAL_FILE = "journal.json"
LOCK_FILE = "install.lock"

# What _read answers for a file that is there but is not JSON.
_UNREADABLE = object()
_Doc = TypeVar("_Doc")


class StateDir:
    """The state directory, reached without following a symlink at its own name."""

    def __init__(self, path: Path, clock: Clock = utc_now) -> None:
        self.path = path
        self.clock = clock
        # Told of every status written (the daemon mirrors it into systemd's STATUS=).
        self.on_write: Callable[[Status], None] | None = None

    def ensure(self) -> None:
        """Create the directory (0700) if missing and check it is a real directory of ours."""
        try:
            # Parents are made 0755: the runtime directory beside this one must stay reachable.
            with _fs.opened_dir(self.path.parent, parents=True, mode=0o755) as parent:
                _fs.check_writable_by_root_only(parent, str(self.path.parent))
            with _fs.opened_dir(self.path, create=True, mode=0o700) as fd:
                st = os.fstat(fd)
                if st.st_uid != os.geteuid():
                    raise UnsafePathError(errno.EPERM, "is owned by another user")
                if st.st_mode & 0o077:
                    os.fchmod(fd, 0o700)
        except UnsafePathError as exc:
            # A component above it is named: the fix is there.
            above = exc.filename not in (None, str(self.path))
            why = f"{exc.filename} {exc.strerror}" if above else exc.strerror
            raise StateError(str(self.path), f"{why}; fix or remove it") from exc
        except OSError as exc:
            raise StateError(str(self.path), f"{exc.strerror or exc}; fix or remove it") from exc

    @contextlib.contextmanager
    def exclusive(self, wait: float = 0.0) -> Iterator[None]:
        """Hold the install lock; raise BusyError if someone else holds it for ``wait`` seconds."""
        with _fs.opened_dir(self.path) as dfd:
            fd = os.open(
                LOCK_FILE,
                os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC,
                0o600,
                dir_fd=dfd,
            )
        try:
            deadline = time.monotonic() + wait
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError as exc:
                    if time.monotonic() >= deadline:
                        raise BusyError(str(self.path)) from exc
                    time.sleep(0.1)
            yield
        finally:
            os.close(fd)  # closing releases the flock

    def read_status(self) -> Status:
        """The last written status, or an empty one when none was written.

        A status file that is there but unreadable is a StateError, never "open": read as
        empty, it would unlock a locked session.
        """
        status = self._read_doc(STATUS_FILE, documents.status_from_json,
                                "remove it only if no install ran in this session")  # fmt: skip
        return Status() if status is None else status

    def write_status(self, status: Status) -> Status:
        """Replace the status file atomically (0600), stamped with the time; the stamped one."""
        status = replace(status, updated_at=iso(self.clock()))
        self._write(STATUS_FILE, documents.status_to_json(status))
        if self.on_write is not None:
            self.on_write(status)
        return status

    def read_journal(self) -> Journal | None:
        """The install journal, or None when no install is in flight.

        A journal that is there but unreadable is a StateError: read as "nothing in flight",
        a half-done install would never be rolled back.
        """
        return self._read_doc(JOURNAL_FILE, documents.journal_from_json,
                              "undo its install by hand, then remove it")  # fmt: skip

    def write_journal(self, journal: Journal) -> None:
        """Replace the journal atomically (0600); called before each step it records."""
        self._write(JOURNAL_FILE, documents.journal_to_json(journal))

    def clear_journal(self) -> None:
        """Remove the journal once an install is committed or rolled back."""
        with _fs.opened_dir(self.path) as dfd:
            _fs.remove(dfd, JOURNAL_FILE)
            _fs.sync_dir(dfd)

    def _read_doc(self, name: str, decode: Callable[[object], _Doc], fix: str) -> _Doc | None:
        """Decode file ``name``; None when it is not there, StateError when it is not ours."""
        data = self._read(name)
        if data is None:
            return None
        try:
            return decode(data)
        except ValueError as exc:
            kind = name.removesuffix(".json")
            why = f"{name} is not a {kind} this version wrote; {fix}"
            raise StateError(str(self.path), why) from exc

    def _read(self, name: str) -> object:
        try:
            with _fs.opened_dir(self.path) as dfd:
                raw = _fs.read_file(dfd, name)
        except FileNotFoundError:
            return None
        if raw is None:
            return None
        try:
            return json.loads(raw)
        except ValueError:
            return _UNREADABLE

    def _write(self, name: str, data: JSONObject) -> None:
        payload = json.dumps(data, indent=2, sort_keys=True).encode() + b"\n"
        with _fs.opened_dir(self.path) as dfd:
            _fs.atomic_write(dfd, name, payload, 0o600)
