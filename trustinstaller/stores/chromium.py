"""Chromium's and Google Chrome's managed policy: ``CACertificates`` in a root-owned JSON file.

Chromium trusts the base64 DER certificates that the ``CACertificates`` policy lists, for every
user and every HOME, with no NSS database at all. The store writes one file, ``FILENAME``, into
each managed-policy directory, holding our CAs and every CA the other files there list.

Quirks this module exists for, one per line:
- Chromium reads every file in the directory, whatever its name (dot files too), as JSON with
  comments and trailing commas; one it cannot parse, or whose top level is not an object, is
  skipped.
- When two files set one policy, the one whose name sorts last (byte order) wins: lists are not
  merged, so our file sorts late and carries the union of the others' ``CACertificates``.
- A winning value of the wrong type unsets the policy: any later file that sets the key at all
  would undo ours, so it is refused before anything is written.
- A malformed ``CACertificates`` entry is skipped silently and the others still apply; the
  other files' entries are carried as they are written.
- ``CADistrustedCertificates`` wins over ``CACertificates`` and NSS: a CA of ours listed there
  is a warning that names the file.
- The file is read as the browser's own uid, and Chromium checks neither owner nor mode: it is
  root's, 0644, in directories anyone may search.
- A running browser rereads the directory after 5-11 s, not reliably: start it after the lock.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trustinstaller import _fs, stores
from trustinstaller.documents import Entry, JSONObject
from trustinstaller.errors import PolicyError, StoreError, UnsafePathError
from trustinstaller.paths import CHROMIUM_POLICY_DIRS

if TYPE_CHECKING:  # annotations only: keeps cryptography off the path to ready
    from trustinstaller.stores.registry import Registry
    from trustinstaller.validate import TrustedCA

PREFIX = "chromium:"
# Sorts after the names image builders and platforms use ("00-base.json", "policy.json", ...).
FILENAME = "zz-trustinstaller.json"
KEY = "CACertificates"
DISTRUST = "CADistrustedCertificates"
# Debian's Chromium, then Google Chrome's; [] in the configuration turns the store off.
DEFAULT_DIRS = CHROMIUM_POLICY_DIRS

# A string, or a comment; then a string, or a comma that only whitespace parts from a closing
# bracket. Strings come first in each, so nothing inside one is ever taken for the others.
_COMMENTS = re.compile(r'"(?:\\.|[^"\\])*"|//[^\n]*|/\*.*?\*/', re.DOTALL)
_TRAILING_COMMAS = re.compile(r'"(?:\\.|[^"\\])*"|,(?=\s*[\]}])')


def parse_policy(data: bytes) -> JSONObject:
    """A policy file as Chromium reads it; PolicyError when Chromium would skip it too.

    Chromium's reader takes ``//`` and ``/* */`` comments, a trailing comma in an object or a
    list, ``\\xNN`` escapes and control characters inside strings; it refuses NaN and
    Infinity, a lone surrogate and nesting deeper than 200.
    """
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise PolicyError("not UTF-8") from exc
    text = _COMMENTS.sub(lambda m: _string(m[0]) if m[0].startswith('"') else " ", text)
    text = _TRAILING_COMMAS.sub(lambda m: m[0] if m[0].startswith('"') else "", text)
    if _depth(text) > MAX_DEPTH:
        raise PolicyError(f"nested deeper than {MAX_DEPTH}")
    try:
        doc = json.loads(text, strict=False, parse_constant=_no_constant)
    except (json.JSONDecodeError, RecursionError, ValueError) as exc:
        raise PolicyError("not valid JSON") from exc
    if not isinstance(doc, dict):
        raise PolicyError("its top level is not a JSON object")
    if _has_lone_surrogate(doc):
        raise PolicyError("holds a lone surrogate")
    return doc


# Chromium's JSON reader refuses to nest deeper than this (base::JSONReader's default).
MAX_DEPTH = 200
_ESCAPE = re.compile(r"\\(x[0-9A-Fa-f]{2}|.)", re.DOTALL)
_BRACKETS = re.compile(r'"(?:\\.|[^"\\])*"|[\[\]{}]')


def _string(token: str) -> str:
    """A JSON string token with Chromium's ``\\xNN`` escapes turned into ``\\u00NN``."""
    return _ESCAPE.sub(lambda m: f"\\u00{m[1][1:]}" if m[1][0] == "x" and len(m[1]) == 3
                       else m[0], token)  # fmt: skip


def _depth(text: str) -> int:
    """The deepest nesting of brackets outside strings."""
    depth = deepest = 0
    for m in _BRACKETS.finditer(text):
        if m[0] in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif m[0] in "]}":
            depth -= 1
    return deepest


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def _has_lone_surrogate(value: object) -> bool:
    if isinstance(value, str):
        return any("\ud800" <= c <= "\udfff" for c in value)
    if isinstance(value, dict):
        return any(_has_lone_surrogate(k) or _has_lone_surrogate(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_lone_surrogate(v) for v in value)
    return False


@dataclass(frozen=True)
class PolicyFile:
    """One entry of a managed-policy directory, as far as root may read it."""

    name: str
    # What Chromium takes from it; None when Chromium skips it or it was not read.
    policies: JSONObject | None = None
    # False for a symlink, a special file or one too large: its contents were not read.
    read: bool = True
    # Unparsed here, but its bytes name CACertificates: Chromium's reader may take it still.
    names_key: bool = False
    # Root's, and writable by no one else: else whoever may write it could, one write later,
    # list a CA for every user or distrust ours.
    safe: bool = True
    # Readable by every user: else its CAs reach only root's Chromium, not every user's.
    public: bool = True

    @classmethod
    def from_bytes(
        cls, name: str, data: bytes, *, safe: bool = True, public: bool = True
    ) -> PolicyFile:
        """Parse ``data`` as Chromium would; keep whether an unparsable file names the key."""
        try:
            return cls(name, parse_policy(data), safe=safe, public=public)
        except PolicyError:
            return cls(name, None, names_key=KEY.encode() in data, safe=safe, public=public)

    @property
    def may_set_key(self) -> bool:
        """Whether Chromium may take a CACertificates value from this file."""
        if self.policies is None:
            return not self.read or self.names_key
        return KEY in self.policies

    @property
    def sorts_after_ours(self) -> bool:
        """Whether Chromium would take this file's value over ours."""
        return os.fsencode(self.name) > os.fsencode(FILENAME)

    def list_of(self, key: str) -> list[Any] | None:
        """The file's value for ``key`` when it is a list, else None."""
        value = (self.policies or {}).get(key)
        return value if isinstance(value, list) else None


def conflicts(files: Sequence[PolicyFile]) -> list[str]:
    """Why Chromium might take another file's ``CACertificates`` over ours; empty when none."""
    out = []
    for f in files:
        if f.name == FILENAME:
            continue
        if not f.safe:
            out.append(f"{f.name} is not root's alone (another user owns it or may write "
                       "it): one write there could add a CA for every user, or distrust "
                       "ours")  # fmt: skip
            continue
        if not f.read:
            # Chromium reads it (a symlink's target, a file over 4 MiB) or blocks on it (a FIFO):
            # its CAs would be lost to ours, or its own value could win.
            out.append(f"{f.name} was not read (a symlink, a special file or over 4 MiB), so "
                       "what Chromium takes from it cannot be told")  # fmt: skip
            continue
        if not f.public and f.may_set_key:
            out.append(f"{f.name} may set CACertificates and not every user may read it: "
                       "carried into ours, its CAs would reach every user")  # fmt: skip
            continue
        if not f.sorts_after_ours:
            continue
        elif f.policies is not None and KEY in f.policies:
            out.append(f"{f.name} sets CACertificates and sorts after {FILENAME}, so Chromium "
                       "would take its list instead of ours")  # fmt: skip
        elif f.policies is None and f.names_key:
            out.append(f"{f.name} sorts after {FILENAME} and names CACertificates; it is not "
                       "JSON this agent reads, but Chromium's reader may take it")  # fmt: skip
    return out


def carried(files: Sequence[PolicyFile]) -> list[str]:
    """Every ``CACertificates`` entry of the other files, in file order, each once."""
    entries: dict[str, None] = {}
    for f in files:
        if f.name != FILENAME and not f.sorts_after_ours:
            entries.update((e, None) for e in f.list_of(KEY) or [] if isinstance(e, str))
    return list(entries)


def document(entries: Sequence[str]) -> bytes:
    """Our policy file: ``CACertificates`` with ``entries``, each once."""
    return (json.dumps({KEY: list(dict.fromkeys(entries))}, indent=2) + "\n").encode("ascii")


def encoded(certs: Sequence[TrustedCA]) -> list[str]:
    """The policy's form of ``certs``: base64 DER, one string each."""
    return [base64.b64encode(ca.der).decode("ascii") for ca in certs]


def decoded(entries: Sequence[Any]) -> list[bytes]:
    """The DER of each well-formed base64 entry; the others are skipped, as Chromium does."""
    out = []
    for e in entries:
        if isinstance(e, str):
            try:
                out.append(base64.b64decode("".join(e.split()), validate=True))
            except binascii.Error:
                continue
    return out


def effective(files: Sequence[PolicyFile]) -> tuple[str | None, list[bytes]]:
    """The file whose ``CACertificates`` Chromium takes (the last that sets it), and its DERs."""
    winner = None
    for f in sorted(files, key=lambda f: os.fsencode(f.name)):
        if f.policies is not None and KEY in f.policies:
            winner = f
    if winner is None:
        return None, []
    return winner.name, decoded(winner.list_of(KEY) or [])


def distrusted(files: Sequence[PolicyFile], certs: Sequence[TrustedCA]) -> dict[str, list[str]]:
    """For each of ``certs`` that a ``CADistrustedCertificates`` lists: the files that list it."""
    ours = {ca.der: ca.fingerprint_sha256 for ca in certs}
    out: dict[str, list[str]] = {}
    for f in files:
        for der in decoded(f.list_of(DISTRUST) or []):
            if der in ours:
                out.setdefault(ours[der], []).append(f.name)
    return out


def listing(dir_fd: int) -> list[PolicyFile]:
    """Every file Chromium would read in the directory ``dir_fd``, sorted as it sorts them.

    Directories are left out, as Chromium leaves them. Nothing is followed: a symlink is listed
    unread. Our own temporary files (a write a crash cut short) are left out too.
    """
    files = []
    for name in os.listdir(dir_fd):
        if name.startswith(f".{FILENAME}.") and name.endswith(".tmp"):
            continue
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        if stat.S_ISDIR(st.st_mode):
            continue
        # A symlink's own mode means nothing; root's is refused as unread, not as another's.
        safe = st.st_uid in _fs.trusted_uids() and (
            stat.S_ISLNK(st.st_mode) or not st.st_mode & 0o022
        )
        public = st.st_mode & 0o004 == 0o004
        try:
            data = _fs.read_file(dir_fd, name) if stat.S_ISREG(st.st_mode) else None
        except (UnsafePathError, FileNotFoundError):
            data = None  # too large, or swapped for a symlink since the stat
        files.append(PolicyFile(name, read=False, safe=safe, public=public) if data is None
                     else PolicyFile.from_bytes(name, data, safe=safe, public=public))  # fmt: skip
    return sorted(files, key=lambda f: os.fsencode(f.name))


@dataclass(frozen=True)
class ChromiumPolicyStore:
    """Writes ``CACertificates`` into one managed-policy directory of Chromium or Chrome."""

    directory: Path
    # In order, after the OS store: in the pool its Python work shared the interpreter with the
    # OS store's writes before the hooks start (the longest step), and held them back.
    parallel: bool = False
    optional: bool = False

    @property
    def name(self) -> str:
        """The store's name in journal entries and status answers."""
        return f"{PREFIX}{self.directory}"

    @property
    def path(self) -> Path:
        """Our policy file."""
        return self.directory / FILENAME

    def preflight(self) -> None:
        """Refuse, before anything is written, a file that would take precedence over ours."""
        if not self.directory.is_absolute():
            raise StoreError(self.name, f"{self.directory} is not an absolute path")
        try:
            with stores.public_dir(self.directory) as fd:
                self._refuse_conflicts(listing(fd))
        except FileNotFoundError:
            return  # made at install
        except OSError as exc:
            raise stores.path_error(self.name, exc, self.path) from exc

    def install(self, certs: Sequence[TrustedCA], record: stores.Recorder) -> None:
        """Write our file with the other files' CAs and ours; record what was there first."""
        try:
            fd = stores.open_public_dir(self.directory, record)
            try:
                files = listing(fd)
                self._refuse_conflicts(files)
                data = document([*carried(files), *encoded(certs)])
                stores.replace_file(fd, self.directory, FILENAME, _fs.read_file(fd, FILENAME), data,
                             record)  # fmt: skip
            finally:
                os.close(fd)
        except OSError as exc:
            raise stores.path_error(self.name, exc, self.path) from exc

    def verify(self, certs: Sequence[TrustedCA]) -> None:
        """Chromium, reading as any user, must take our file's list, and it must hold ``certs``."""
        try:
            with stores.public_dir(self.directory) as fd:
                files = listing(fd)
                searchable = os.fstat(fd).st_mode & 0o005 == 0o005
                st = _fs.check_file(fd, FILENAME, str(self.path))
        except OSError as exc:
            raise stores.path_error(self.name, exc, self.path) from exc
        self._refuse_conflicts(files)
        if st is None:
            raise StoreError(self.name, f"{self.path} is missing after the install")
        if not searchable or st.st_mode & 0o044 != 0o044:
            raise StoreError(self.name, f"{self.path} or its directory is not readable by every "
                             "user, and Chromium reads it as the browser's user")  # fmt: skip
        unsearchable = [str(d) for d in (self.directory, *self.directory.parents)
                        if os.stat(d).st_mode & 0o001 == 0]  # fmt: skip
        if unsearchable:
            raise StoreError(self.name, f"{unsearchable[-1]} is not searchable by every "
                             "user: Chromium, run as the browser's user, reads nothing under "
                             "it")  # fmt: skip
        winner, ders = effective(files)
        if winner != FILENAME:
            raise StoreError(self.name, f"Chromium would take CACertificates from {winner}, "
                             f"not from {self.path}")  # fmt: skip
        missing = [ca.fingerprint_sha256 for ca in certs if ca.der not in ders]
        if missing:
            raise StoreError(self.name, f"{self.path} does not list {', '.join(missing)}")

    def rollback(self, entries: Sequence[Entry]) -> None:
        """Put back the bytes our file replaced (or remove it), then the directories we made."""
        stores.restore_files(self.name, entries)

    def owns(self, entry: Entry) -> bool:
        """Our one file in this directory, and the directories made for it."""
        return stores.owns_file(entry, self.directory, FILENAME.__eq__)

    def notices(self, certs: Sequence[TrustedCA]) -> dict[str, list[str]]:
        """Each of ``certs`` that a file's ``CADistrustedCertificates`` lists, with the files."""
        try:
            with stores.public_dir(self.directory) as fd:
                files = listing(fd)
        except OSError:
            return {}  # verify has just read it; a later failure leaves the warning out
        return {
            fp: [f"{self.directory / n} lists it in CADistrustedCertificates, which wins: "
                 "Chromium and Chrome will refuse it" for n in names]
            for fp, names in distrusted(files, certs).items()
        }  # fmt: skip

    def _refuse_conflicts(self, files: Sequence[PolicyFile]) -> None:
        found = conflicts(files)
        if found:
            raise StoreError(self.name, f"in {self.directory}: {'; '.join(found)}: rename it to "
                             "sort before ours, or move its CAs into a file that does, and "
                             "submit again")  # fmt: skip


def all_from_config(context: Registry) -> list[ChromiumPolicyStore]:
    """A store for each of the configuration's ``chromium_policies`` directories."""
    return [ChromiumPolicyStore(d) for d in context.config.chromium_policies]


def from_name(name: str, context: Registry) -> ChromiumPolicyStore:
    """The store of the directory that ``name`` holds after ``PREFIX``."""
    return ChromiumPolicyStore(Path(name.removeprefix(PREFIX)))
