"""NSS databases (what Chromium on Debian reads; it ignores /etc/ssl/certs).

Quirks this module exists for, one per line:
- certutil prompts for a password forever when stdin is not a TTY: stdin is closed, there is a
  timeout, and ``-f`` names an empty password file so a password-protected database fails fast.
- ``certutil -N`` on an existing database asks to change its password: create only when missing.
- Nicknames must not contain colons (NSS reads ``token:nickname``).
- Trust ``C,,`` marks a CA trusted for TLS server authentication only.
- A database created by root in a user's home must stay owned by that user, or Chromium
  (running as the user) cannot open it.
- certutil runs as the owner of the database directory (setpriv), so root never writes through
  a symlink a user planted in their own home; the certificate goes in on stdin, which that user
  can read, instead of from a root-only temporary file.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from trustinstaller._run import Runner
from trustinstaller.errors import StoreError
from trustinstaller.stores import Entry, Recorder

if TYPE_CHECKING:  # annotations only: keeps cryptography off the path to ready
    from trustinstaller.validate import TrustedCA

TRUST = "C,,"
DB_FILES = ("cert9.db", "key4.db", "pkcs11.txt")


def nickname(ca: TrustedCA) -> str:
    """A colon-free nickname that carries the full fingerprint."""
    return f"trustinstaller-{ca.fingerprint_sha256}"


def db_dir(spec: str) -> Path:
    """The directory of an ``sql:DIR`` database spec (a bare path means the same)."""
    return Path(spec.removeprefix("sql:"))


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


@dataclass
class NssStore:
    """Adds certificates to one NSS database with trust ``C,,``."""

    runner: Runner
    database: str
    command: str = "certutil"
    timeout: float = 30.0

    @property
    def name(self) -> str:
        """The store's name in status answers."""
        return f"nss:{db_dir(self.database)}"

    @property
    def _db(self) -> str:
        return f"sql:{db_dir(self.database)}"

    def preflight(self) -> None:
        """certutil must be installed."""
        self.runner([self.command, "-H"], check=False, timeout=self.timeout)

    def install(self, certs: Sequence[TrustedCA], record: Recorder) -> None:
        """Create the database if missing, then add each certificate not already there."""
        directory = db_dir(self.database)
        if not (directory / "cert9.db").exists():
            self._create(directory, record)
        present = self.list()
        for ca in certs:
            nick = nickname(ca)
            if present.get(nick) == TRUST:
                continue
            record("add", db=self._db, nickname=nick)
            # -f /dev/null: an empty password file, so a protected database fails fast.
            self.runner(
                [*as_owner(directory), self.command, "-A", "-d", self._db, "-f", "/dev/null",
                 "-n", nick, "-t", TRUST],
                input=ca.der,
                timeout=self.timeout,
            )  # fmt: skip
        _chown_db_files(directory)

    def verify(self, certs: Sequence[TrustedCA]) -> None:
        """``certutil -L`` must list every nickname with trust ``C,,``."""
        present = self.list()
        wrong = [nickname(ca) for ca in certs if present.get(nickname(ca)) != TRUST]
        if wrong:
            raise StoreError(
                self.name, f"certutil -L does not list {', '.join(wrong)} with trust {TRUST}"
            )

    def rollback(self, entries: Sequence[Entry]) -> None:
        """Delete the nicknames we added, then any database files and directories we created."""
        present: dict[str, str] | None = None
        for e in reversed(entries):
            if e["action"] == "add":
                if present is None:
                    present = self.list() if (db_dir(e["db"]) / "cert9.db").exists() else {}
                if e["nickname"] in present:
                    self.runner([*as_owner(db_dir(e["db"])), self.command, "-D", "-d", e["db"],
                                 "-n", e["nickname"]], timeout=self.timeout)  # fmt: skip
            elif e["action"] == "createdb":
                directory = Path(e["dir"])
                for f in DB_FILES:
                    (directory / f).unlink(missing_ok=True)
                for d in reversed([Path(p) for p in e["created_dirs"]]):
                    # Not empty: something else lives there; leave it.
                    with contextlib.suppress(OSError):
                        d.rmdir()

    def list(self) -> dict[str, str]:
        """The database's nicknames and trust flags."""
        result = self.runner([*as_owner(db_dir(self._db)), self.command, "-L", "-d", self._db],
                             timeout=self.timeout)  # fmt: skip
        return parse_listing(result.stdout)

    def _create(self, directory: Path, record: Recorder) -> None:
        missing: list[Path] = []
        d = directory
        while not d.exists():
            missing.append(d)
            d = d.parent
        owner = d.stat()
        created = [str(p) for p in reversed(missing)]
        record("createdb", db=self._db, dir=str(directory), created_dirs=created)
        for p in reversed(missing):
            p.mkdir(mode=0o700)
            os.chown(p, owner.st_uid, owner.st_gid, follow_symlinks=False)
        self.runner([*as_owner(directory), self.command, "-N", "-d", self._db,
                     "--empty-password"], timeout=self.timeout)  # fmt: skip


def as_owner(directory: Path) -> list[str]:
    """A ``setpriv`` prefix to run as the owner of ``directory`` (itself, not a link's target).

    Empty when we are not root or already the owner.
    """
    try:
        st = os.lstat(directory)
    except FileNotFoundError:
        return []
    if os.geteuid() != 0 or st.st_uid == os.geteuid():
        return []
    return ["setpriv", f"--reuid={st.st_uid}", f"--regid={st.st_gid}", "--clear-groups", "--"]


def _chown_db_files(directory: Path) -> None:
    """Give the database files to the owner of their directory (root's stay root's)."""
    st = directory.stat()
    for f in DB_FILES:
        p = directory / f
        try:
            if p.lstat().st_uid != st.st_uid or p.lstat().st_gid != st.st_gid:
                os.chown(p, st.st_uid, st.st_gid, follow_symlinks=False)
        except FileNotFoundError:
            continue
