"""The Debian-family OS store: ``/usr/local/share/ca-certificates`` and ``update-ca-certificates``.

Quirks this module exists for, one per line:
- update-ca-certificates reads only ``*.crt`` files, one certificate per file; subdirectories count.
- It prints usage and exits 0 on an unknown option, so we check that it actually ran.
- A failing hook in ``update.d`` prints ``E: ...`` and the script still exits 0.
- A plain run after files are removed leaves dangling hash links; ``--fresh`` rebuilds them.
- Hooks (Java's keystore) learn about removals only from ``-path`` lines on stdin.
- It builds the bundle by appending to ``ca-certificates.crt.new``, which a kill leaves behind.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from trustinstaller import _fs, pem
from trustinstaller._run import Runner
from trustinstaller.documents import Entry, Mkdir, Update, Write
from trustinstaller.errors import HostError, StoreError, UnsafePathError
from trustinstaller.stores import Recorder, undo_files

if TYPE_CHECKING:  # annotations only: keeps cryptography off the path to ready
    from trustinstaller.validate import TrustedCA

SUBDIR = "trustinstaller"
BUNDLE = "ca-certificates.crt"


@dataclass(frozen=True)
class DebianPaths:
    """Where update-ca-certificates reads and writes; overridable for a temporary root."""

    local_certs_dir: Path = Path("/usr/local/share/ca-certificates")
    etc_certs_dir: Path = Path("/etc/ssl/certs")
    certs_dir: Path = Path("/usr/share/ca-certificates")
    certs_conf: Path = Path("/etc/ca-certificates.conf")
    hooks_dir: Path = Path("/etc/ca-certificates/update.d")

    @property
    def our_dir(self) -> Path:
        """The directory holding only our certificates."""
        return self.local_certs_dir / SUBDIR

    @property
    def bundle(self) -> Path:
        """The OS bundle that OpenSSL, curl and friends read."""
        return self.etc_certs_dir / BUNDLE


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
    name: str = "os"
    parallel: bool = False
    optional: bool = False

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

    def install(self, certs: Sequence[TrustedCA], record: Recorder) -> None:
        """Write one ``.crt`` per certificate, then run update-ca-certificates."""
        try:
            self._write_files(certs, record)
        except UnsafePathError as exc:
            raise StoreError(self.name, f"{exc.filename} {exc.strerror}; refusing to write "
                             "through it: remove it and submit again") from exc  # fmt: skip
        except OSError as exc:
            raise StoreError(self.name, f"cannot write {exc.filename or self.paths.our_dir}: "
                             f"{exc.strerror or exc}") from exc  # fmt: skip
        record(Update())
        self._update()

    def _write_files(self, certs: Sequence[TrustedCA], record: Recorder) -> None:
        our = self.paths.our_dir
        try:
            fd = _fs.open_dir(our)
        except FileNotFoundError:
            record(Mkdir(str(our)))
            fd = _fs.open_dir(our, create=True, mode=0o755)
        try:
            for ca in certs:
                name = cert_filename(ca)
                data = ca.pem.encode("ascii")
                try:
                    if _fs.read_file(fd, name) == data:
                        continue  # there from before this install: not ours to remove
                except UnsafePathError:
                    pass  # a symlink or other oddity at our name: replaced below, never followed
                record(Write(str(our), name))
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

    def notices(self, certs: Sequence[TrustedCA]) -> dict[str, list[str]]:
        """None: nothing beside this store can undo what it installs."""
        return {}

    def rollback(self, entries: Sequence[Entry]) -> None:
        """Remove our files, rebuild the bundle and links, and tell the hooks."""
        removed = undo_files(entries)
        if any(isinstance(e, Update) for e in entries):
            self._update(fresh=True, timeout=self.rollback_timeout)
            self._tell_hooks_removed(removed)

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

    def _update(self, *, fresh: bool = False, timeout: float | None = None) -> None:
        # The script appends to <bundle>.new and removes it only on a normal exit: one killed
        # mid-run leaves it behind, and the next run would append to it, doubling the bundle.
        with _fs.opened_dir(self.paths.etc_certs_dir) as fd:
            _fs.remove(fd, f"{BUNDLE}.new")
        argv = [self.command, *(["--fresh"] if fresh else []), *self._args()]
        result = self.runner(argv, timeout=timeout or self.timeout)
        check_update_output(argv, result.stdout, result.stderr)

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
