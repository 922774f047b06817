"""Filesystem primitives that never follow a symlink at the name they act on.

Parents of a configured path are trusted (they are root's system directories,
and may legitimately be symlinks, like /var/run); the final component, and
every file created or removed inside it, is reached through a directory file
descriptor with O_NOFOLLOW, so a planted symlink cannot redirect a write or a
delete.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
from collections.abc import Iterator
from pathlib import Path

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class UnsafePathError(OSError):
    """A path that should be a real directory or file is a symlink or the wrong type."""


def open_dir(path: Path, *, create: bool = False, mode: int = 0o755) -> int:
    """Open directory ``path`` without following a symlink at its last component."""
    parent = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        if create:
            with contextlib.suppress(FileExistsError):
                os.mkdir(path.name, mode, dir_fd=parent)
        try:
            return os.open(path.name, _DIR_FLAGS, dir_fd=parent)
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                raise UnsafePathError(
                    exc.errno, "is a symlink or not a directory", str(path)
                ) from exc
            raise
    finally:
        os.close(parent)


@contextlib.contextmanager
def opened_dir(path: Path, *, create: bool = False, mode: int = 0o755) -> Iterator[int]:
    """Context-managed ``open_dir``."""
    fd = open_dir(path, create=create, mode=mode)
    try:
        yield fd
    finally:
        os.close(fd)


def atomic_write(dir_fd: int, name: str, data: bytes, mode: int) -> None:
    """Write ``name`` in ``dir_fd`` atomically: temp file, fsync, rename, fsync the directory."""
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
