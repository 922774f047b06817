"""The Debian-family OS store: ``/usr/local/share/ca-certificates`` and ``update-ca-certificates``.

Quirks this module exists for, one per line:
- update-ca-certificates reads only ``*.crt`` files, one certificate per file; subdirectories count.
- It prints usage and exits 0 on an unknown option, so we check that it actually ran.
- A failing hook in ``update.d`` prints ``E: ...`` and the script still exits 0.
- A plain run after files are removed leaves dangling hash links; ``--fresh`` rebuilds them.
- Hooks (Java's keystore) learn about removals only from ``-path`` lines on stdin.
- It builds the bundle by appending to ``ca-certificates.crt.new``, which a kill leaves behind.
- Java's hook runs ``dpkg --triggers-only --pending``, which fails while apt or dpkg holds one of
  dpkg's locks (``lock-frontend``, then ``lock``); the script still exits 0 and prints ``E:``.
  So we wait for both locks to be free first, as apt does with its lock timeout.
- dpkg's locks are fcntl record locks on the whole file: F_GETLK tells who holds one.
"""

from __future__ import annotations

import fcntl
import os
import stat
import struct
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from trustinstaller import _fs, log, pem
from trustinstaller._run import Runner
from trustinstaller.documents import Entry, Mkdir, Step, Write
from trustinstaller.errors import HostError, StoreError, UnsafePathError
from trustinstaller.paths import BUNDLE as BUNDLE  # the names the OS store's callers use
from trustinstaller.paths import SUBDIR as SUBDIR
from trustinstaller.paths import DebianPaths as DebianPaths
from trustinstaller.stores import Recorder, Rest, owns_file, undo_files

if TYPE_CHECKING:  # annotations only: keeps cryptography off the path to ready
    from trustinstaller.validate import TrustedCA

# The OS store's name in status answers and the journal (debian_fast gives it to the registry).
PREFIX = "os"


# The OS store's own journal entry; it also records the files it writes (Mkdir, Write).
@dataclass(frozen=True)
class Update(Step, action="update"):
    """update-ca-certificates about to run (a rollback rebuilds the store without our files)."""


# In the order apt and dpkg take them: the frontend lock, then the database lock.
DPKG_LOCKS = ("lock-frontend", "lock")
DPKG_POLL = 0.25
# struct flock on 64-bit Linux: l_type, l_whence, l_start, l_len, l_pid, and tail padding.
_FLOCK = struct.Struct("@hhqqi4x")


@dataclass(frozen=True)
class LockHolder:
    """Who holds one of dpkg's locks: the lock file, the pid (0 when not visible) and command."""

    path: str
    pid: int
    command: str

    def __str__(self) -> str:
        if self.pid <= 0:
            return f"{self.path} is held by a process in another PID namespace"
        return f"{self.path} is held by pid {self.pid} ({self.command or 'command unknown'})"


def dpkg_lock_holder(dpkg_dir: Path) -> LockHolder | None:
    """Who holds dpkg's frontend or database lock, or None when both are free (or absent)."""
    try:
        with _fs.opened_dir(dpkg_dir) as dir_fd:
            for name in DPKG_LOCKS:
                pid = _lock_owner(dir_fd, name)
                if pid is not None:
                    return LockHolder(str(dpkg_dir / name), pid, _command(pid))
    except FileNotFoundError:
        return None  # no dpkg here: nothing to wait for
    return None


def _lock_owner(dir_fd: int, name: str) -> int | None:
    """The pid holding a conflicting fcntl lock on ``name`` (0 if unknown), or None."""
    try:
        # Read-only and never followed: F_GETLK needs no write access, and we take no lock.
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK,
                     dir_fd=dir_fd)  # fmt: skip
    except FileNotFoundError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        probe = _FLOCK.pack(fcntl.F_WRLCK, os.SEEK_SET, 0, 0, 0)
        l_type, _, _, _, l_pid = _FLOCK.unpack(fcntl.fcntl(fd, fcntl.F_GETLK, probe))
    finally:
        os.close(fd)
    if l_type == fcntl.F_UNLCK:
        return None
    return max(int(l_pid), 0)  # -1: an open-file-description lock, which has no owning pid


def _command(pid: int) -> str:
    """The holder's command line, as printable ASCII: it is the holder's own text."""
    if pid <= 0:
        return ""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            raw = f.read(512)
    except OSError:
        return ""
    words = raw.rstrip(b"\0").split(b"\0")
    text = " ".join(w.decode("ascii", "replace") for w in words)
    return "".join(c if c.isprintable() and c.isascii() else "?" for c in text)[:160]


def cert_filename(ca: TrustedCA) -> str:
    """The file name for a certificate: its full fingerprint, so names never collide."""
    return f"{ca.fingerprint_sha256}.crt"


@dataclass
class DebianStore:
    """Installs into the local CA directory and regenerates the bundle and hash links."""

    runner: Runner
    paths: DebianPaths = field(default_factory=DebianPaths)
    command: str = "update-ca-certificates"
    timeout: float = 300.0
    name: str = PREFIX
    parallel: bool = False
    optional: bool = False
    # Which way the last update ran: "script" here, "fast" in debian_fast's store.
    os_update: str | None = field(default=None, init=False, compare=False)

    def preflight(self) -> None:
        """The local directory and the bundle directory must exist, reached through root's own."""
        for p in (self.paths.local_certs_dir, self.paths.etc_certs_dir):
            try:
                with _fs.opened_dir(p):
                    pass
            except UnsafePathError as exc:
                raise StoreError(self.name, f"{exc.filename} {exc.strerror}; refusing to write "
                                 "below it: fix that component") from exc  # fmt: skip
            except OSError as exc:
                raise StoreError(
                    self.name, f"{p} is not a directory; is ca-certificates installed?"
                ) from exc

    def install(self, certs: Sequence[TrustedCA], record: Recorder) -> Rest | None:
        """Write one ``.crt`` per certificate, then run update-ca-certificates.

        The fast path leaves the hooks (Java's keystore, the slowest step) as the rest: the
        bundle and the links are in place when this returns, so the stores after this one,
        which read only those, run beside the hooks.
        """
        try:
            self._write_files(certs, record)
        except UnsafePathError as exc:
            raise StoreError(self.name, f"{exc.filename} {exc.strerror}; refusing to write "
                             "through it: remove it and submit again") from exc  # fmt: skip
        except OSError as exc:
            raise StoreError(self.name, f"cannot write {exc.filename or self.paths.our_dir}: "
                             f"{exc.strerror or exc}") from exc  # fmt: skip
        # Before the Update entry: a timeout here leaves the bundle as it was, so the
        # rollback only removes our files and needs no dpkg.
        holder = self._wait_for_dpkg(self.timeout)
        if holder is not None:
            raise StoreError(
                self.name,
                f"dpkg is busy: {holder}; waited {self.timeout:g} s (update_timeout) for it, "
                "as Java's keystore hook runs dpkg. The OS bundle is unchanged; submit again "
                "when apt or dpkg is done",
            )
        record(Update())
        return self._update(defer_hooks=True)

    def _write_files(self, certs: Sequence[TrustedCA], record: Recorder) -> None:
        our = self.paths.our_dir
        try:
            fd = _fs.open_dir(our)
        except FileNotFoundError:
            record(Mkdir(str(our)))
            fd = _fs.open_dir(our, create=True, mode=0o755)
        try:
            files: dict[str, bytes] = {}
            for ca in certs:
                name = cert_filename(ca)
                data = ca.pem.encode("ascii")
                try:
                    if _fs.read_file(fd, name) == data:
                        continue  # there from before this install: not ours to remove
                except UnsafePathError:
                    pass  # a symlink or other oddity at our name: replaced below, never followed
                files[name] = data
            # Every file recorded in one journal write, before the first is written.
            if files:
                record(*(Write(str(our), name) for name in files))
            for name, data in files.items():
                _fs.atomic_write(fd, name, data, 0o644, sync=False)
            # One directory fsync for all the renames, not one per file: before
            # update-ca-certificates reads the directory, every new name is durable.
            _fs.sync_dir(fd)
        finally:
            os.close(fd)

    def verify(self, certs: Sequence[TrustedCA]) -> None:
        """Every certificate must be in the regenerated bundle."""
        present = bundle_ders(self.paths.bundle)
        missing = [ca.fingerprint_sha256 for ca in certs if ca.der not in present]
        if missing:
            raise StoreError(
                self.name,
                f"{self.paths.bundle} lacks {len(missing)} certificate(s) after "
                f"update-ca-certificates: {', '.join(missing)}",
            )

    def owns(self, entry: Entry) -> bool:
        """Our directory, the ``.crt`` files in it, and the update."""
        if isinstance(entry, Update):
            return True
        if isinstance(entry, Mkdir):
            return entry.path == str(self.paths.our_dir)
        return owns_file(entry, self.paths.our_dir, lambda n: n.endswith(".crt"))

    def notices(self, certs: Sequence[TrustedCA]) -> dict[str, list[str]]:
        """None: nothing beside this store can undo what it installs."""
        return {}

    def rollback(self, entries: Sequence[Entry]) -> None:
        """Remove our files, rebuild the bundle and links, and tell the hooks."""
        undo_files(entries)
        if not any(isinstance(e, Update) for e in entries):
            return
        # Rebuilt even while dpkg stays busy, so the OS bundle never keeps a removed CA; only
        # Java's hook then fails, and the journal stays for the next start to retry. dpkg gets
        # as long to be free as at the install (update_timeout); the rebuild gets
        # rollback_timeout. The hooks are told of every file the journal names, not only of
        # those this run removed: a run killed between two removals leaves the journal as it
        # was, and its retry must still tell the hooks of the files the killed run removed.
        holder = self._wait_for_dpkg(self.timeout)
        try:
            self._rebuild_without([e.name for e in entries if isinstance(e, Write)])
        except HostError as exc:
            if holder is None:
                raise
            raise StoreError(
                self.name,
                f"dpkg is busy: {holder}; the OS bundle was rebuilt without our CAs, but "
                "Java's keystore hook could not run dpkg: the next start retries it",
            ) from exc

    def _rebuild_without(self, names: Sequence[str]) -> None:
        """Rebuild the bundle and the links, our files ``names`` gone, and tell the hooks.

        The script keeps a link whose file went unless it runs ``--fresh``, the slowest run,
        and a fresh run tells the hooks of no removal: they are told after it.
        """
        self._update(fresh=True, timeout=self.rollback_timeout)
        self._tell_hooks_removed(names)

    def _args(self) -> list[str]:
        p = self.paths
        return [
            "--certsconf", str(p.certs_conf),
            "--certsdir", str(p.certs_dir),
            "--localcertsdir", str(p.local_certs_dir),
            "--etccertsdir", str(p.etc_certs_dir),
            "--hooksdir", str(p.hooks_dir),
        ]  # fmt: skip

    @property
    def rollback_timeout(self) -> float:
        """Undoing must not give up sooner than doing: a --fresh rebuild is the slowest run."""
        return max(2 * self.timeout, 120.0)

    def _hooks_need_dpkg(self) -> bool:
        """Whether any hook will run (Java's runs dpkg); a temporary root has none."""
        try:
            with _fs.opened_dir(self.paths.hooks_dir) as fd:
                return bool(os.listdir(fd))
        except OSError:
            return False

    def _wait_for_dpkg(self, timeout: float) -> LockHolder | None:
        """Wait up to ``timeout`` for dpkg's locks to be free; the holder if they never were."""
        if not self._hooks_need_dpkg():
            return None
        try:
            holder = dpkg_lock_holder(self.paths.dpkg_dir)
            if holder is None:
                return None
            start = time.monotonic()
            log.get().warning("dpkg_busy", store=self.name, path=holder.path, reason=str(holder))
            while holder is not None:
                left = start + timeout - time.monotonic()
                if left <= 0:
                    return holder
                time.sleep(min(DPKG_POLL, left))
                holder = dpkg_lock_holder(self.paths.dpkg_dir)
        except UnsafePathError as exc:
            raise StoreError(self.name, f"{exc.filename} {exc.strerror}; refusing to read "
                             "dpkg's locks through it: fix that component") from exc  # fmt: skip
        log.get().info("dpkg_free", store=self.name,
                       duration_ms=round((time.monotonic() - start) * 1000))  # fmt: skip
        return None

    def _update(
        self, *, fresh: bool = False, timeout: float | None = None, defer_hooks: bool = False
    ) -> Rest | None:
        """Update the bundle and the links, and run the hooks; with ``defer_hooks``, the way
        that can returns the hooks' run instead (the script runs its hooks itself)."""
        # The script appends to <bundle>.new and removes it only on a normal exit: one killed
        # mid-run leaves it behind, and the next run would append to it, doubling the bundle.
        with _fs.opened_dir(self.paths.etc_certs_dir) as fd:
            _fs.remove(fd, f"{BUNDLE}.new")
        argv = [self.command, *(["--fresh"] if fresh else []), *self._args()]
        result = self.runner(argv, timeout=timeout or self.timeout)
        check_update_output(argv, result.stdout, result.stderr)
        self.os_update = "script"
        return None

    def _tell_hooks_removed(self, names: Sequence[str]) -> None:
        """Run each hook with ``-<etccertsdir>/<name>.pem`` lines, as the script does on removal."""
        if not names or not self.paths.hooks_dir.is_dir():
            return
        listing = self.runner(["run-parts", "--test", "--", str(self.paths.hooks_dir)])
        lines = "".join(
            f"-{self.paths.etc_certs_dir / (n.removesuffix('.crt') + '.pem')}\n" for n in names
        ).encode()
        for hook in listing.stdout.split():
            self.runner([hook], input=lines, timeout=self.rollback_timeout)


def check_update_output(argv: Sequence[str], stdout: str, stderr: str) -> None:
    """Raise HostError if update-ca-certificates did not really run, or a hook failed."""
    text = f"{stdout}\n{stderr}"
    if "Updating certificates in" not in text:
        # An unknown option makes it print usage and exit 0.
        raise HostError(argv, "did not update anything (old version without these options?)",
                        output=text)  # fmt: skip
    errors = [line for line in text.splitlines() if line.startswith("E: ")]
    if errors:
        raise HostError(argv, "a hook failed (it still exits 0)", output="\n".join(errors))


def bundle_ders(bundle: Path) -> set[bytes]:
    """The DER encodings of every certificate in a PEM bundle (read through a checked walk)."""
    try:
        with _fs.opened_dir(bundle.parent) as fd:
            raw = _fs.read_file(fd, bundle.name, limit=64 * 1024 * 1024)
    except FileNotFoundError:
        return set()
    if raw is None:
        return set()
    return set(pem.ders(raw))
