"""NSS databases (what Chromium on Debian reads; it ignores /etc/ssl/certs).

A database belongs either to root or to a named user (``browser_users``, or an
``nss_databases`` entry with an ``owner``); its owner comes from the configuration and
the password database, never from a file's owner.

- **A user's database** is worked on only by children that have dropped to that user
  before they look at any path: ``certutil`` itself, and ``nss_user.py`` for mkdir, probe
  and the rollback's removals. Root never stats, opens, creates, chowns or removes anything
  there, so a symlink or a swap in the user's home gains the user nothing it lacked.
- **Root's database** is reached by a checked walk from ``/`` (``_fs.open_dir``): every
  directory root's, writable by no one else. certutil then gets that very descriptor
  (``sql:/proc/self/fd/N``), its files must be root's, and ``pkcs11.txt`` may name only
  libraries in the system's library directories, since certutil loads every one it names.

Quirks this module exists for, one per line:
- certutil prompts for a password forever when stdin is not a TTY: stdin is closed, there is a
  timeout, and ``-f`` names an empty password file so a password-protected database fails fast.
- ``certutil -N`` on an existing database asks to change its password: create only when missing.
- ``certutil -B -i FILE`` runs each line of FILE as a command's arguments in one process, and
  stops at the first that fails (exit 255), with the lines before it done.
- Nicknames must not contain colons (NSS reads ``token:nickname``).
- Trust ``C,,`` marks a CA trusted for TLS server authentication only.
- NSS ignores the ``configdir`` that pkcs11.txt records, so a database made through
  /proc/self/fd/N opens later by its real path.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import inspect
import json
import os
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from trustinstaller import _fs, log
from trustinstaller._run import Account, Runner, which
from trustinstaller.documents import Entry, Mkdir, Step
from trustinstaller.errors import HostError, StoreError, UnsafePathError, own_words
from trustinstaller.paths import NssDatabase as NssDatabase  # its old name, still in use
from trustinstaller.stores import Recorder, nss_user, owns_file

if TYPE_CHECKING:  # annotations only: keeps cryptography off the path to ready
    from trustinstaller.stores.registry import Registry
    from trustinstaller.validate import TrustedCA


# This store's own journal entries (and Mkdir, for the directories it makes).
@dataclass(frozen=True)
class AddCert(Step, action="add"):
    """A nickname about to be added to an NSS database."""

    db: str
    nickname: str


@dataclass(frozen=True)
class CreateDb(Step, action="createdb"):
    """An NSS database about to be created."""

    db: str


PREFIX = "nss:"
TRUST = "C,,"
DB_FILES = nss_user.DB_FILES
# Where a library named in root's pkcs11.txt may live. A bare file name is looked up by the
# dynamic loader in these same directories.
SYSTEM_LIBRARY_DIRS = ("/lib", "/lib64", "/usr/lib", "/usr/lib64", "/usr/local/lib")
# The user-side helper's whole output is one small JSON line.
_USER_OUTPUT_LIMIT = 64 * 1024


def nickname(ca: TrustedCA) -> str:
    """A colon-free nickname that carries the full fingerprint."""
    return f"trustinstaller-{ca.fingerprint_sha256}"


def parse_listing(text: str) -> dict[str, str]:
    """``certutil -L`` output -> {nickname: trust flags}."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        stripped = line.rstrip()
        if not stripped or stripped.startswith(("Certificate Nickname", "SSL,S/MIME")):
            continue
        nick, _, trust = stripped.rpartition(" ")
        if nick.strip() and trust.count(",") == 2:
            out[nick.strip()] = trust
    return out


def foreign_modules(pkcs11_txt: str) -> list[str]:
    """The libraries that pkcs11.txt names outside the system's library directories."""
    bad: list[str] = []
    for line in pkcs11_txt.splitlines():
        key, sep, value = line.strip().partition("=")
        if not sep or key.strip().lower() != "library":
            continue
        lib = value.strip()
        if not lib:
            continue  # the internal module
        if "/" not in lib:
            continue  # a bare name: the loader searches only the system's directories
        path = PurePosixPath(lib)
        if (
            not path.is_absolute()
            or ".." in path.parts
            or not any(path.is_relative_to(d) for d in SYSTEM_LIBRARY_DIRS)
        ):
            bad.append(lib)
    return bad


class _Access:
    """How certutil reaches one database: who runs it, which path it is given, which fds."""

    user: Account | None = None
    spec: str = ""
    fds: tuple[int, ...] = ()


@dataclass
class NssStore:
    """Adds certificates to one NSS database with trust ``C,,``."""

    runner: Runner
    database: NssDatabase
    command: str = "certutil"
    timeout: float = 30.0
    python: str = field(default_factory=lambda: user_python())
    parallel: bool = True  # depends on no other store

    @property
    def optional(self) -> bool:
        """A user's own database, which the user could make fail at will (see Transaction)."""
        return self.database.owner is not None

    @property
    def name(self) -> str:
        """The store's name in status answers."""
        return f"{PREFIX}{self.database.directory}"

    @property
    def directory(self) -> Path:
        """The database's directory."""
        return self.database.directory

    def preflight(self) -> None:
        """certutil must be installed, and a root database's existing path must be safe."""
        # Looked up, not run: a process here would hold up every store's install.
        if which(self.command) is None:
            raise HostError([self.command], "cannot run: not found on the PATH")
        if self.database.owner is None:
            # The part of the path that exists already: a bad component fails before any write.
            d = self.directory
            while True:
                try:
                    with self._root_dir(d):
                        break
                except FileNotFoundError:
                    if d == d.parent:
                        break
                    d = d.parent

    def install(self, certs: Sequence[TrustedCA], record: Recorder) -> None:
        """Create the database if missing, then add each certificate not already there.

        Every nickname is recorded before the first is added. Root's database gets them all in
        one certutil run (``-B``, a batch); a user's, one run each, as before.
        """
        with self._access(record) as access:
            present = self._list(access)
            todo = [ca for ca in certs if present.get(nickname(ca)) != TRUST]
            if not todo:
                return
            record(*(AddCert(self.database.spec, nickname(ca)) for ca in todo))
            if access.user is None:
                self._add_batch(access, todo)
                return
            for ca in todo:
                # -f /dev/null: an empty password file, so a protected database fails fast.
                self._certutil(access, ["-A", "-f", "/dev/null", "-n", nickname(ca), "-t", TRUST],
                               input=ca.der)  # fmt: skip

    def _add_batch(self, access: _Access, certs: Sequence[TrustedCA]) -> None:
        """Add ``certs`` in one ``certutil -B``: one process for all, not one for each.

        The batch and each certificate are sealed memfds, which certutil opens by their
        /proc/self/fd paths; it stops at the first line that fails, with the adds before it
        made (the rollback deletes whichever of the recorded nicknames it finds).
        """
        fds: list[int] = []
        try:
            lines = []
            for ca in certs:
                fds.append(_sealed(ca.der))
                lines.append(f"-A -n {nickname(ca)} -t {TRUST} -i {_fs.fd_path(fds[-1])}\n")
            fds.append(_sealed("".join(lines).encode("ascii")))
            batch = _Access()
            batch.spec, batch.fds = access.spec, (*access.fds, *fds)
            self._certutil(batch, ["-B", "-f", "/dev/null", "-i", _fs.fd_path(fds[-1])])
        finally:
            for fd in fds:
                os.close(fd)

    def verify(self, certs: Sequence[TrustedCA]) -> None:
        """``certutil -L`` must list every nickname with trust ``C,,``."""
        try:
            with self._access(None) as access:
                present = self._list(access)
        except FileNotFoundError as exc:
            raise StoreError(self.name, f"{exc.filename}: no such directory") from exc
        wrong = [nickname(ca) for ca in certs if present.get(nickname(ca)) != TRUST]
        if wrong:
            raise StoreError(
                self.name, f"certutil -L does not list {', '.join(wrong)} with trust {TRUST}"
            )

    def notices(self, certs: Sequence[TrustedCA]) -> dict[str, list[str]]:
        """None: nothing beside this store can undo what it installs."""
        return {}

    def owns(self, entry: Entry) -> bool:
        """This database's nicknames and creation, and the directories made for it."""
        if isinstance(entry, AddCert | CreateDb):
            return entry.db == self.database.spec
        return isinstance(entry, Mkdir) and owns_file(entry, self.directory, bool)

    def rollback(self, entries: Sequence[Entry]) -> None:
        """Delete the nicknames we added, then the database and directories we created."""
        if self.database.owner is None:
            self._rollback(entries)
            return
        # A user's own database: the user can add, delete or break anything in it at will, so
        # a failure there (the user killed its certutil, say) must not hold the daemon's
        # recovery hostage. It is logged, and the rollback of the other stores goes on.
        try:
            self._rollback(entries)
        except Exception as exc:  # noqa: BLE001 (the user chooses what goes wrong here; see above)
            log.get().warning("user_rollback_incomplete", store=self.name,
                              owner=self.database.owner.name,
                              error=own_words(exc))  # fmt: skip

    def _rollback(self, entries: Sequence[Entry]) -> None:
        adds = [e.nickname for e in entries if isinstance(e, AddCert)]
        created_db = any(isinstance(e, CreateDb) for e in entries)
        made = [Path(e.path) for e in entries if isinstance(e, Mkdir)]
        if adds and not created_db:
            # A database we created goes whole below; in one that was there, delete ours only.
            try:
                with self._access(None) as access:
                    present = self._list(access)
                    for nick in reversed(adds):
                        if nick in present:
                            self._certutil(access, ["-D", "-n", nick])
            except FileNotFoundError:
                pass  # the database is gone: nothing of ours is left in it
        if created_db or made:
            if self.database.owner is None:
                self._remove_root_db(created_db, made)
            else:
                self._as_owner("remove", str(self.directory), *map(str, made))

    # -- access --------------------------------------------------------------

    @contextlib.contextmanager
    def _access(self, record: Recorder | None) -> Iterator[_Access]:
        """Reach the database (creating it with ``record``), as its owner or through a fd."""
        access = _Access()
        owner = self.database.owner
        if owner is not None:
            access.user, access.spec = owner, self.database.spec
            if record is not None:
                self._create_as_owner(access, record)
            yield access
            return

        with self._root_dir(self.directory, create=record is not None,
                            before_mkdir=_mkdir_recorder(record)) as fd:  # fmt: skip
            access.spec, access.fds = f"sql:{_fs.fd_path(fd)}", (fd,)
            if record is not None and _fs.check_file(fd, "cert9.db", self._where("cert9.db")) \
                    is None:  # fmt: skip
                record(CreateDb(self.database.spec))
                self._certutil(access, ["-N", "--empty-password"])
                self.check_root_files(fd)
            yield access

    @contextlib.contextmanager
    def _root_dir(
        self, path: Path, *, create: bool = False, before_mkdir: _fs.MkdirHook | None = None
    ) -> Iterator[int]:
        """A checked descriptor for ``path`` on root's side, with its database files checked."""
        try:
            fd = _fs.open_dir(path, parents=create, mode=0o700, before_mkdir=before_mkdir)
        except UnsafePathError as exc:
            raise StoreError(self.name, _unsafe(exc)) from exc
        except FileNotFoundError:
            raise
        except OSError as exc:
            raise StoreError(self.name, f"{exc.filename or path}: {exc.strerror}") from exc
        try:
            if path == self.directory:
                self.check_root_files(fd)
            yield fd
        finally:
            os.close(fd)

    def check_root_files(self, fd: int) -> None:
        """Root's database files: root's own, and pkcs11.txt naming only system libraries."""
        try:
            for f in DB_FILES:
                _fs.check_file(fd, f, self._where(f))
            text = _fs.read_file(fd, "pkcs11.txt", limit=1024 * 1024)
        except UnsafePathError as exc:
            raise StoreError(self.name, _unsafe(exc)) from exc
        bad = foreign_modules((text or b"").decode("utf-8", "replace"))
        if bad:
            raise StoreError(
                self.name,
                f"{self._where('pkcs11.txt')} names a library outside the system's library "
                f"directories ({', '.join(repr(b[:200]) for b in bad)}); certutil would load it "
                "as root: remove that module from the database",
            )

    def _where(self, name: str) -> str:
        return str(self.directory / name)

    def _create_as_owner(self, access: _Access, record: Recorder) -> None:
        """As the owner: make the missing directories and the database, recording each first."""
        found = self._as_owner("probe", str(self.directory))
        missing = found.get("missing")
        ancestors = {str(p) for p in (self.directory, *self.directory.parents)}
        if not isinstance(missing, list) or not all(
            isinstance(m, str) and m in ancestors for m in missing
        ):
            raise StoreError(self.name, "the owner's probe answered nonsense; nothing created")
        for m in missing:
            record(Mkdir(m))
        if missing:
            self._as_owner("mkdirs", *missing)
        if found.get("db") is not True:
            record(CreateDb(self.database.spec))
            self._certutil(access, ["-N", "--empty-password"])

    def _as_owner(self, op: str, *args: str) -> dict[str, object]:
        """Run one ``nss_user`` operation as the database's owner; its checked JSON answer."""
        owner = self.database.owner
        if owner is None:
            raise ValueError(f"{self.name}: root's database has no owner to run as")
        # The program comes on stdin, so that the command line stays short and readable.
        argv = [self.python, "-I", "-S", "-", op, *args]
        result = self.runner(argv, input=_user_source(), timeout=self.timeout, user=owner)
        try:
            answer = json.loads(result.stdout[:_USER_OUTPUT_LIMIT])
        # The owner may trace its own helper and rewrite what it prints: deep nesting makes the
        # parser recurse past Python's limit. Whatever it sent, it is only a refusal.
        except (ValueError, RecursionError):
            answer = None
        if not isinstance(answer, dict):
            raise StoreError(self.name, f"{op} as user {owner.name} gave no answer")
        return answer

    def _remove_root_db(self, created_db: bool, made: Sequence[Path]) -> None:
        """Remove root's database files (if we made it), then the directories we made."""
        if created_db:
            with (
                contextlib.suppress(FileNotFoundError),
                self._root_dir_unchecked(self.directory) as fd,
            ):
                for f in DB_FILES:
                    _fs.remove(fd, f)
        for d in reversed(made):
            _fs.rmdir(d)  # not empty (something else lives there), or gone: it stays

    @contextlib.contextmanager
    def _root_dir_unchecked(self, path: Path) -> Iterator[int]:
        """The walk's descriptor without the database-file checks: removal needs no trust."""
        try:
            fd = _fs.open_dir(path)
        except UnsafePathError as exc:
            raise StoreError(self.name, _unsafe(exc)) from exc
        try:
            yield fd
        finally:
            os.close(fd)

    def _list(self, access: _Access) -> dict[str, str]:
        return parse_listing(self._certutil(access, ["-L"]))

    def _certutil(self, access: _Access, args: Sequence[str], input: bytes | None = None) -> str:  # noqa: A002
        argv = [self.command, args[0], "-d", access.spec, *args[1:]]
        try:
            result = self.runner(argv, input=input, timeout=self.timeout, user=access.user,
                                 pass_fds=access.fds)  # fmt: skip
        except HostError as exc:
            # The fd path means nothing to a reader: name the database instead.
            named = [a.replace(access.spec, self.database.spec) for a in exc.argv]
            raise HostError(named, exc.reason, returncode=exc.returncode,
                            output=exc.output, note=exc.note) from exc  # fmt: skip
        return result.stdout


def _sealed(data: bytes) -> int:
    """A memfd holding ``data``, sealed against every change, for a child to read."""
    fd = os.memfd_create("trustinstaller", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    try:
        if os.write(fd, data) != len(data):
            raise OSError(errno.EIO, "short write to a memfd")
        seals = fcntl.F_SEAL_SEAL | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, seals)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _mkdir_recorder(record: Recorder | None) -> _fs.MkdirHook | None:
    """A hook that records each directory in the journal before the walk makes it."""
    if record is None:
        return None
    return lambda path: record(Mkdir(str(path)))


def _unsafe(exc: UnsafePathError) -> str:
    return (
        f"{exc.filename} {exc.strerror}: a database certutil opens as root must be reached "
        "through root's own directories; fix the path, or name its owner in nss_databases "
        "({path = ..., owner = ...})"
    )


_SOURCE: list[bytes] = []


def _user_source() -> bytes:
    """The text of ``nss_user``, which the owner's Python runs; read once from the package."""
    if not _SOURCE:
        _SOURCE.append(inspect.getsource(nss_user).encode())
    return _SOURCE[0]


def user_python() -> str:
    """The interpreter for the owner's side: the system's, which every user may run.

    Our own may live where the user cannot reach it (a virtual environment under /root, say);
    ``nss_user`` needs the standard library only.
    """
    for candidate in ("/usr/bin/python3", sys.executable):
        if os.access(candidate, os.X_OK):
            return candidate
    return sys.executable


def all_from_config(context: Registry) -> list[NssStore]:
    """A store for each of the configuration's databases; a user's share that user's budget."""
    return [_store(db, context) for db in context.config.nss_databases]


def from_name(name: str, context: Registry) -> NssStore:
    """The store of the database that ``name`` holds after ``PREFIX``.

    The owner comes from the configuration, never from the journal or the disk. The registry
    gives only a configured database's store to a rollback.
    """
    db = NssDatabase.parse(name.removeprefix(PREFIX))
    configured = (d for d in context.config.nss_databases if d.directory == db.directory)
    return _store(next(configured, db), context)


def _store(db: NssDatabase, context: Registry) -> NssStore:
    runner = context.runner_for(db.owner)
    return NssStore(runner, db, timeout=context.config.certutil_timeout)
