"""Trust stores. Each module exports one class with the same small interface.

A store installs certificates, verifies them, and rolls back from the journal
entries it recorded. It records each step *before* taking it, so that a
rollback after a crash at any point knows everything that may have happened.
"""

from __future__ import annotations

import base64
import contextlib
import os
import stat
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from trustinstaller import _fs
from trustinstaller.documents import Entry, Mkdir, Write
from trustinstaller.errors import StoreError, UnsafePathError

if TYPE_CHECKING:  # annotations only: keeps cryptography off the path to ready
    from trustinstaller.validate import TrustedCA


class Recorder(Protocol):
    """Persists journal entries, in order, before the steps they describe are taken.

    Several entries at once are persisted in one write: a store about to take many steps of
    one kind (a file per certificate) records them all first.
    """

    def __call__(self, *entries: Entry) -> None: ...


# What a store's install leaves to finish beside the stores after it (the OS store's hooks):
# the transaction runs it in a thread of its own, beside the verify too, so it must change
# nothing any store's verify reads; the install is done only once it has ended.
Rest = Callable[[], None]


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

    def install(self, certs: Sequence[TrustedCA], record: Recorder) -> Rest | None:
        """Add every certificate; record each step before taking it. What it returns, if
        anything, is the rest of the install, which no store after this one waits for."""

    def verify(self, certs: Sequence[TrustedCA]) -> None:
        """Raise StoreError unless every certificate is in place."""

    def rollback(self, entries: Sequence[Entry]) -> None:
        """Undo every recorded step; idempotent, and safe on a partial journal."""

    def owns(self, entry: Entry) -> bool:
        """Whether ``entry`` is one this store records: its own paths, names and variables.

        A rollback acts only on entries its store owns (``transaction.rollback``): it writes,
        removes and sets what an entry names, as root.
        """

    def notices(self, certs: Sequence[TrustedCA]) -> Mapping[str, Sequence[str]]:
        """Warnings about installed certificates, by fingerprint (another policy distrusts one)."""


# A directory a browser reads as its own user: every component we make must be world-readable.
PUBLIC_DIR_MODE = 0o755
PUBLIC_FILE_MODE = 0o644


def owns_file(entry: Entry, directory: Path, names: Callable[[str], bool]) -> bool:
    """Whether ``entry`` is a write of a file ``names`` accepts in ``directory``, or the making of
    ``directory`` or of a directory above it (``open_public_dir`` records each one it makes)."""
    if isinstance(entry, Write):
        return entry.dir == str(directory) and "/" not in entry.name and names(entry.name)
    if isinstance(entry, Mkdir):
        return entry.path in {str(p) for p in (directory, *directory.parents)}
    return False


def undo_files(entries: Sequence[Entry]) -> None:
    """Undo ``write`` and ``mkdir`` entries: remove the files, then the directories made.

    Each file goes through its directory's checked descriptor, never through a link, with any
    temporary file a killed write of it left; each directory is fsynced once, after its last
    removal. A file already gone, a directory at a file's name (a rename cannot have put it
    there, so it was never ours), a directory no longer root's, or one not empty: each is left
    as it is, or the rollback would fail at every start.
    """
    names: dict[str, list[str]] = {}
    for e in entries:
        if isinstance(e, Write):
            names.setdefault(e.dir, []).append(e.name)
    for directory, files in names.items():
        with contextlib.suppress(FileNotFoundError, UnsafePathError), \
                _fs.opened_dir(Path(directory)) as fd:  # fmt: skip
            remove_temporaries(fd, files)
            for name in files:
                with contextlib.suppress(IsADirectoryError):
                    _fs.remove(fd, name)
            _fs.sync_dir(fd)
    for e in reversed(entries):
        if isinstance(e, Mkdir):
            _fs.rmdir(Path(e.path))


def remove_temporaries(dir_fd: int, names: Sequence[str]) -> None:
    """Remove the temporary files that a write of any of ``names``, killed between its fsync
    and its rename, left in ``dir_fd`` (a browser reading every file of a policy directory
    would take one too, and a directory we made would stay)."""
    prefixes = tuple(f".{name}." for name in names)
    for entry in os.listdir(dir_fd):
        if entry.startswith(prefixes) and entry.endswith(".tmp"):
            with contextlib.suppress(IsADirectoryError):
                _fs.remove(dir_fd, entry)


def open_public_dir(directory: Path, record: Recorder | None = None) -> int:
    """A descriptor on root's ``directory`` by the checked walk, never through a symlink.

    With ``record``, each missing component is recorded, then made 0755 whatever the umask,
    since a browser reads it as its own user; without, a missing one is FileNotFoundError.
    """
    try:
        return _fs.open_dir(directory)
    except FileNotFoundError:
        if record is None or directory.parent == directory:
            raise
    os.close(open_public_dir(directory.parent, record))
    record(Mkdir(str(directory)))
    fd = _fs.open_dir(directory, create=True, mode=PUBLIC_DIR_MODE)
    os.fchmod(fd, PUBLIC_DIR_MODE)
    return fd


@contextlib.contextmanager
def public_dir(directory: Path) -> Iterator[int]:
    """Context-managed ``open_public_dir`` without making anything."""
    fd = open_public_dir(directory)
    try:
        yield fd
    finally:
        os.close(fd)


def replace_file(
    dir_fd: int, directory: Path, name: str, original: bytes | None, data: bytes, record: Recorder
) -> None:
    """Replace ``name`` (``original`` as just read) with ``data``, 0644, atomically.

    Its original bytes and mode are recorded first; nothing is recorded or written when the
    file already holds ``data``.
    """
    if original == data:
        return
    mode = None
    if original is not None:
        mode = stat.S_IMODE(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)
    saved = None if original is None else base64.b64encode(original).decode()
    record(Write(str(directory), name, original=saved, mode=mode))
    _fs.atomic_write(dir_fd, name, data, PUBLIC_FILE_MODE)


def restore_files(store: str, entries: Sequence[Entry]) -> None:
    """Undo ``replace_file`` and ``open_public_dir``: original bytes back, new files and dirs gone.

    A directory that is no longer empty (something else put a file there), or a symlink now,
    stays.
    """
    for e in reversed(entries):
        if not isinstance(e, Write):
            continue
        try:
            with _fs.opened_dir(Path(e.dir)) as fd:
                remove_temporaries(fd, [e.name])
                if e.original is None:
                    _fs.remove(fd, e.name)
                    _fs.sync_dir(fd)
                else:
                    # Never set-id, sticky, or writable by others, whatever the entry says.
                    mode = (e.mode if e.mode is not None else PUBLIC_FILE_MODE) & 0o755
                    _fs.atomic_write(fd, e.name, base64.b64decode(e.original), mode)
        except FileNotFoundError:
            continue  # the directory went: the file went with it
        except OSError as exc:
            raise StoreError(store, f"cannot restore {Path(e.dir, e.name)}: "
                             f"{exc.strerror or exc}") from exc  # fmt: skip
    for e in reversed(entries):
        if isinstance(e, Mkdir):
            _fs.rmdir(Path(e.path))


def path_error(store: str, exc: OSError, default: Path) -> StoreError:
    """A store's error for a failed write or read of root's ``default`` path."""
    if isinstance(exc, UnsafePathError):
        return StoreError(store, f"{exc.filename} {exc.strerror}; refusing to write "
                          "through it: remove it and submit again")  # fmt: skip
    return StoreError(store, f"cannot write {exc.filename or default}: "
                      f"{exc.strerror or exc}")  # fmt: skip
