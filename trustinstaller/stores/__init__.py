"""Trust stores. Each module exports one class with the same small interface.

A store installs certificates, verifies them, and rolls back from the journal
entries it recorded. It records each step *before* taking it, so that a
rollback after a crash at any point knows everything that may have happened.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from trustinstaller import _fs
from trustinstaller.documents import Entry, Mkdir, Write
from trustinstaller.errors import UnsafePathError

if TYPE_CHECKING:  # annotations only: keeps cryptography off the path to ready
    from trustinstaller.validate import TrustedCA


class Recorder(Protocol):
    """Persists one journal entry before the step it describes is taken."""

    def __call__(self, entry: Entry) -> None: ...


class Store(Protocol):
    """One trust store (the OS bundle, an NSS database, ...)."""

    @property
    def name(self) -> str:
        """The store's name in journal entries and status answers."""

    @property
    def parallel(self) -> bool:
        """Whether it depends on no other store, so may run in a thread beside them."""

    @property
    def optional(self) -> bool:
        """Whether its failure is a warning rather than the install's (a user's own database)."""

    def preflight(self) -> None:
        """Check the tools and paths are usable, before anything is written."""

    def install(self, certs: Sequence[TrustedCA], record: Recorder) -> None:
        """Add every certificate; record each step before taking it."""

    def verify(self, certs: Sequence[TrustedCA]) -> None:
        """Raise StoreError unless every certificate is in place."""

    def rollback(self, entries: Sequence[Entry]) -> None:
        """Undo every recorded step; idempotent, and safe on a partial journal."""


def undo_files(entries: Sequence[Entry]) -> list[str]:
    """Undo ``write`` and ``mkdir`` entries: remove the files, then the directories made.

    Each file goes through its directory's checked descriptor, never through a link. A file
    already gone, a directory at a file's name (a rename cannot have put it there, so it was
    never ours), a directory no longer root's, or one not empty: each is left as it is, or
    the rollback would fail at every start. Returns the names of the files removed.
    """
    removed: list[str] = []
    for e in entries:
        if not isinstance(e, Write):
            continue
        with (
            contextlib.suppress(FileNotFoundError, IsADirectoryError, UnsafePathError),
            _fs.opened_dir(Path(e.dir)) as fd,
        ):
            if _fs.remove(fd, e.name):
                removed.append(e.name)
            _fs.sync_dir(fd)
    for e in reversed(entries):
        if isinstance(e, Mkdir):
            _fs.rmdir(Path(e.path))
    return removed
