"""Firefox's enterprise policy file: ``Certificates.Install`` in ``policies.json``.

Quirks this module exists for, one per line:
- Firefox on Linux ignores /etc/ssl/certs and ~/.pki: every profile has its own NSS database, and
  automation makes a fresh profile for each launch.
- ``ImportEnterpriseRoots`` works only on Windows and macOS; on Linux, ``Certificates.Install``
  is what makes every profile, fresh ones included, import a CA as trusted.
- ``Certificates.Install`` names files by absolute path, read by the browser user at each start:
  the OS store's ``.crt`` files are root's, 0644, and stay for the session, so they are named.
- The file may hold an image builder's or a managed platform's policies: they are merged into,
  never replaced, and the original bytes are kept in the journal for the rollback.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trustinstaller import _fs
from trustinstaller.documents import Entry, JSONObject
from trustinstaller.errors import PolicyError, StoreError
from trustinstaller.paths import FIREFOX_SYSTEM_POLICIES
from trustinstaller.stores import (
    Recorder,
    open_public_dir,
    owns_file,
    path_error,
    public_dir,
    replace_file,
    restore_files,
)
from trustinstaller.stores.debian import DebianPaths, cert_filename

if TYPE_CHECKING:  # annotations only: keeps cryptography off the path to ready
    from trustinstaller.stores.registry import Registry
    from trustinstaller.validate import TrustedCA

POLICIES = FIREFOX_SYSTEM_POLICIES
PREFIX = "firefox:"


def cert_paths(paths: DebianPaths, certs: Sequence[TrustedCA]) -> list[str]:
    """The absolute paths of the OS store's files for ``certs``: what Firefox is told to read."""
    return [str(paths.our_dir / cert_filename(ca)) for ca in certs]


def policies_document(install: Sequence[str]) -> bytes:
    """A policies document holding only ``Certificates.Install`` (Playwright's Firefox)."""
    return _dump({"policies": {"Certificates": {"Install": list(install)}}})


def installed_paths(data: bytes) -> list[str]:
    """The ``Certificates.Install`` entries of a policies document; PolicyError if malformed."""
    install = _install_list(_parse(data))
    return [p for p in install if isinstance(p, str)]


def merge(original: bytes | None, install: Sequence[str]) -> bytes | None:
    """``original`` with every path of ``install`` added once; None when nothing is missing.

    Every other policy, and every existing ``Certificates.Install`` entry, stays as it is.
    """
    doc = _parse(original) if original is not None else {}
    present = _install_list(doc)
    missing = [p for p in dict.fromkeys(install) if p not in present]
    if not missing:
        return None
    policies = doc.setdefault("policies", {})
    certificates = policies.setdefault("Certificates", {})
    certificates["Install"] = [*present, *missing]
    return _dump(doc)


def _parse(data: bytes) -> JSONObject:
    try:
        doc = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PolicyError(f"not valid JSON ({exc})") from exc
    if not isinstance(doc, dict):
        raise PolicyError(f"the document is a JSON {_kind(doc)}, not an object")
    return doc


def _install_list(doc: JSONObject) -> list[Any]:
    policies = doc.get("policies", {})
    if not isinstance(policies, dict):
        raise PolicyError(f'"policies" is a JSON {_kind(policies)}, not an object')
    certificates = policies.get("Certificates", {})
    if not isinstance(certificates, dict):
        raise PolicyError(f'"policies.Certificates" is a JSON {_kind(certificates)}, not an object')
    install = certificates.get("Install", [])
    if not isinstance(install, list):
        raise PolicyError(f'"policies.Certificates.Install" is a JSON {_kind(install)}, not a list')
    return install


def _kind(value: object) -> str:
    names = {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}
    return names.get(type(value), "number")


def _dump(doc: JSONObject) -> bytes:
    return (json.dumps(doc, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


@dataclass
class FirefoxStore:
    """Adds the OS store's certificate files to one policies.json's ``Certificates.Install``."""

    policies: Path
    os_paths: DebianPaths = field(default_factory=DebianPaths)
    parallel: bool = False  # its policy names the OS store's .crt files: after that store
    optional: bool = False

    @property
    def name(self) -> str:
        """The store's name in journal entries and status answers."""
        return f"{PREFIX}{self.policies}"

    def preflight(self) -> None:
        """The path must be absolute; an existing file must be a policies document we can merge."""
        if not self.policies.is_absolute():
            raise StoreError(self.name, f"{self.policies} is not an absolute path")
        try:
            with public_dir(self.policies.parent) as fd:
                original = _fs.read_file(fd, self.policies.name)
        except FileNotFoundError:
            return  # the directory is made at install
        except OSError as exc:
            raise path_error(self.name, exc, self.policies) from exc
        if original is not None:
            self._merged(original, [])

    def install(self, certs: Sequence[TrustedCA], record: Recorder) -> None:
        """Merge our files' paths into the policies; record the original bytes before writing."""
        try:
            fd = open_public_dir(self.policies.parent, record)
            try:
                original = _fs.read_file(fd, self.policies.name)
                merged = self._merged(original, cert_paths(self.os_paths, certs))
                if merged is not None:  # else every path is there from before: nothing to undo
                    replace_file(fd, self.policies.parent, self.policies.name, original, merged,
                                 record)  # fmt: skip
            finally:
                os.close(fd)
        except OSError as exc:
            raise path_error(self.name, exc, self.policies) from exc

    def verify(self, certs: Sequence[TrustedCA]) -> None:
        """The policy must name every certificate, and each named file must hold it."""
        try:
            with public_dir(self.policies.parent) as fd:
                data = _fs.read_file(fd, self.policies.name)
        except OSError as exc:
            raise path_error(self.name, exc, self.policies) from exc
        if data is None:
            raise StoreError(self.name, f"{self.policies} is missing after the install")
        try:
            listed = set(installed_paths(data))
        except PolicyError as exc:
            raise StoreError(self.name, f"{self.policies}: {exc}") from exc
        wanted = cert_paths(self.os_paths, certs)
        missing = [p for p in wanted if p not in listed]
        if missing:
            raise StoreError(self.name, f"{self.policies} does not install {', '.join(missing)}")
        try:
            with _fs.opened_dir(self.os_paths.our_dir) as fd:
                absent = [
                    ca.fingerprint_sha256
                    for ca in certs
                    if _fs.read_file(fd, cert_filename(ca)) != ca.pem.encode("ascii")
                ]
        except OSError as exc:
            raise StoreError(self.name, f"cannot read {self.os_paths.our_dir}, which the policy "
                             f"names: {exc.strerror or exc}") from exc  # fmt: skip
        if absent:
            raise StoreError(self.name, f"{self.os_paths.our_dir} lacks the file the policy names "
                             f"for {', '.join(absent)}")  # fmt: skip

    def rollback(self, entries: Sequence[Entry]) -> None:
        """Put the original bytes back (or remove the file), then the directories we made."""
        restore_files(self.name, entries)

    def owns(self, entry: Entry) -> bool:
        """The policies file, and the directories made for it."""
        return owns_file(entry, self.policies.parent, self.policies.name.__eq__)

    def notices(self, certs: Sequence[TrustedCA]) -> dict[str, list[str]]:
        """None: Firefox has no policy that could undo ours."""
        return {}

    def _merged(self, original: bytes | None, install: Sequence[str]) -> bytes | None:
        try:
            return merge(original, install)
        except PolicyError as exc:
            raise StoreError(self.name, f"{self.policies}: {exc}; nothing was written: fix or "
                             "remove the file and submit again") from exc  # fmt: skip


def all_from_config(context: Registry) -> list[FirefoxStore]:
    """A store for each of the configuration's ``firefox_policies`` files."""
    cfg = context.config
    return [FirefoxStore(p, cfg.os_store) for p in cfg.firefox_policies]


def from_name(name: str, context: Registry) -> FirefoxStore:
    """The store of the policies file that ``name`` holds after ``PREFIX``."""
    return FirefoxStore(Path(name.removeprefix(PREFIX)), context.config.os_store)
