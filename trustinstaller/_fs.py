"""Filesystem primitives for root's own paths: walked from ``/``, never through another's hands.

Every directory is reached by ``openat(parent, name, O_NOFOLLOW | O_DIRECTORY)`` from ``/``,
one component at a time, and checked on the descriptor that is then used: it must belong to
root (or to us) and be writable by no one else. Then no other user can swap any component
between the check and the use, so a decision taken on the descriptor still holds when a file
is written, read or removed through it.

Quirks and rules this module exists for, one per line:
- A directory writable by others is refused, unless it is sticky (/tmp): there only an entry's
  owner may rename or remove it, and the next component must belong to root anyway.
- fs.protected_symlinks may be 0, so a symlink in a sticky directory is followed for anyone:
  a symlink is followed only when root owns it and it sits in a checked directory (/var/run).
- The last component is never followed, whoever owns it: a planted link there is refused.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TypedDict, Unpack

from trustinstaller.errors import UnsafePathError

MkdirHook = Callable[[Path], None]
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_MAX_LINKS = 40


def trusted_uids() -> frozenset[int]:
    """Who may own a directory on root's paths: root, and the user running us (tests, demos)."""
    return frozenset({0, os.geteuid()})


def check_dir(fd: int, where: str) -> None:
    """Raise UnsafePathError unless the directory ``fd`` is ours and writable by no one else."""
    st = os.fstat(fd)
    if not stat.S_ISDIR(st.st_mode):
        raise UnsafePathError(errno.ENOTDIR, "is not a directory", where)
    if st.st_uid not in trusted_uids():
        raise UnsafePathError(errno.EPERM, f"is owned by uid {st.st_uid}, not root", where)
    if st.st_mode & 0o022 and not st.st_mode & stat.S_ISVTX:
        raise UnsafePathError(
            errno.EPERM,
            f"is writable by group or others (mode {stat.S_IMODE(st.st_mode):o})",
            where,
        )


def check_writable_by_root_only(fd: int, where: str) -> None:
    """Raise UnsafePathError if the directory ``fd`` may be written by group or others, sticky
    or not: for the parent of a directory that a service manager makes (RuntimeDirectory=).

    In a sticky directory (a /run of mode 1777) another user may make our directory before we
    do, and systemd then hands it to root, with whatever that user put in it, by a chown: root
    would own it, and ``check_dir`` could not tell.
    """
    mode = stat.S_IMODE(os.fstat(fd).st_mode)
    if mode & 0o022:
        raise UnsafePathError(
            errno.EPERM,
            f"may be written by other users (mode {mode:o}), so one of them could have made "
            "the directory below it first",
            where,
        )


def check_file(dir_fd: int, name: str, where: str) -> os.stat_result | None:
    """Stat ``name`` without following it: a regular file of ours that only we may write."""
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None
    if not stat.S_ISREG(st.st_mode):
        raise UnsafePathError(errno.EINVAL, "is a symlink or not a regular file", where)
    if st.st_uid not in trusted_uids():
        raise UnsafePathError(errno.EPERM, f"is owned by uid {st.st_uid}, not root", where)
    if st.st_mode & 0o022:
        raise UnsafePathError(errno.EPERM, "is writable by group or others", where)
    return st


class WalkOptions(TypedDict, total=False):
    """What ``open_dir`` may do besides walking: make missing directories, and say so first."""

    create: bool  # make the last component when missing
    parents: bool  # make every missing component
    mode: int  # for the directories made (default 0755)
    before_mkdir: MkdirHook | None  # told each path before it is made (a journal records it)


def open_dir(path: Path, **options: Unpack[WalkOptions]) -> int:
    """Open directory ``path`` by a checked walk from ``/``; return its descriptor.

    Raises FileNotFoundError for a missing component it may not make, and UnsafePathError
    naming the first component that another user could change.
    """
    if not path.is_absolute():
        raise UnsafePathError(errno.EINVAL, "is not an absolute path", str(path))
    if ".." in path.parts:
        raise UnsafePathError(errno.EINVAL, "has a '..' component", str(path))
    walk = _Walk(path, options)
    try:
        while walk.todo:
            name = walk.todo.pop()
            if name in (".", ""):
                continue
            if name == "..":
                # Only from a root-owned link's target (/var/run -> ../run): ``here`` is a real
                # path reached through checked directories, so walk again to its parent.
                walk.restart(walk.here.parent.parts[1:])
                continue
            st = walk.stat_or_make(name)
            if stat.S_ISLNK(st.st_mode) and walk.todo:
                walk.follow(name, st)
            else:
                walk.descend(name)
        return walk.fd
    except BaseException:
        os.close(walk.fd)
        raise


class _Walk:
    """Where a checked walk is: the descriptor of the directory reached, its path, and the
    components still to walk (the next one last)."""

    def __init__(self, path: Path, options: WalkOptions) -> None:
        self.path = path
        self.options = options
        self.links = 0
        self.todo: list[str] = []
        self.fd = os.open("/", _DIR_FLAGS)
        self.here = Path("/")
        try:
            check_dir(self.fd, "/")
        except BaseException:
            os.close(self.fd)
            raise
        self.todo = list(reversed(path.parts[1:]))

    def restart(self, parts: Sequence[str]) -> None:
        """Walk ``parts`` from ``/`` again, before what is left."""
        self.todo.extend(reversed(parts))
        os.close(self.fd)
        self.fd = os.open("/", _DIR_FLAGS)
        self.here = Path("/")

    def stat_or_make(self, name: str) -> os.stat_result:
        """``name``'s own stat in the directory reached; made first if missing and allowed."""
        try:
            return os.stat(name, dir_fd=self.fd, follow_symlinks=False)
        except FileNotFoundError:
            last = not self.todo
            if not (self.options.get("create", False) and last) and not self.options.get(
                "parents", False
            ):
                raise
        before_mkdir = self.options.get("before_mkdir")
        if before_mkdir is not None:
            before_mkdir(self.here / name)
        with contextlib.suppress(FileExistsError):
            os.mkdir(name, self.options.get("mode", 0o755), dir_fd=self.fd)
        return os.stat(name, dir_fd=self.fd, follow_symlinks=False)

    def follow(self, name: str, st: os.stat_result) -> None:
        """Go on through the symlink ``name`` (not the last component).

        The directory holding it is checked, so only root could have put it there or change
        it; one owned by anyone else is refused like a directory would be.
        """
        if st.st_uid not in trusted_uids():
            raise UnsafePathError(
                errno.EPERM, f"is a symlink owned by uid {st.st_uid}, not root", self.where(name)
            )
        self.links += 1
        if self.links > _MAX_LINKS:
            raise UnsafePathError(errno.ELOOP, "has too many symlinks", str(self.path))
        target = Path(os.readlink(name, dir_fd=self.fd))
        if target.is_absolute():
            self.restart(target.parts[1:])
        else:
            self.todo.extend(reversed(target.parts))

    def descend(self, name: str) -> None:
        """Open the directory ``name`` without following a link, and check it."""
        where = self.where(name)
        try:
            child = os.open(name, _DIR_FLAGS, dir_fd=self.fd)
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                raise UnsafePathError(exc.errno, "is a symlink or not a directory", where) from exc
            raise
        os.close(self.fd)
        self.fd = child
        check_dir(self.fd, where)
        self.here = self.here / name

    def where(self, name: str) -> str:
        return str(self.here / name)


@contextlib.contextmanager
def opened_dir(path: Path, **options: Unpack[WalkOptions]) -> Iterator[int]:
    """Context-managed ``open_dir``."""
    fd = open_dir(path, **options)
    try:
        yield fd
    finally:
        os.close(fd)


def fd_path(fd: int) -> str:
    """A path that names the directory ``fd`` itself, for a child given the descriptor."""
    return f"/proc/self/fd/{fd}"


def atomic_write(dir_fd: int, name: str, data: bytes, mode: int, *, sync: bool = True) -> None:
    """Write ``name`` in ``dir_fd`` atomically: temp file, fsync, rename, fsync the directory.

    With ``sync=False`` the directory is not fsynced: a caller writing many files does it
    once, with ``sync_dir``, after the last rename.
    """
    tmp = f".{name}.{secrets.token_hex(6)}.tmp"
    fd = os.open(
        tmp,
        os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
        mode,
        dir_fd=dir_fd,
    )
    try:
        try:
            os.fchmod(fd, mode)  # the umask must not narrow or widen it
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        # rename() replaces a symlink at ``name`` itself; it never writes through it.
        os.rename(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp, dir_fd=dir_fd)
        raise
    if sync:
        os.fsync(dir_fd)


def read_file(dir_fd: int, name: str, limit: int = 4 * 1024 * 1024) -> bytes | None:
    """Read a regular file ``name`` in ``dir_fd``, or None if missing; never through a symlink."""
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UnsafePathError(exc.errno, "is a symlink", name) from exc
        raise
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise UnsafePathError(errno.EINVAL, "is not a regular file", name)
        chunks = []
        total = 0
        while chunk := os.read(fd, 65536):
            total += len(chunk)
            if total > limit:
                raise UnsafePathError(errno.EFBIG, "is too large", name)
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def remove(dir_fd: int, name: str) -> bool:
    """Remove entry ``name`` (a file, or a symlink itself) from ``dir_fd``; False if missing."""
    try:
        os.unlink(name, dir_fd=dir_fd)
    except FileNotFoundError:
        return False
    return True


def sync_dir(dir_fd: int) -> None:
    """fsync a directory so that renames and unlinks in it are durable."""
    os.fsync(dir_fd)


def rmdir(path: Path) -> bool:
    """Remove the empty directory ``path`` through its checked parent; False if it stays.

    It stays when it is not empty (something else lives there), is gone, or its parent is no
    longer root's alone.
    """
    try:
        with opened_dir(path.parent) as parent:
            os.rmdir(path.name, dir_fd=parent)
    except OSError:
        return False
    return True
