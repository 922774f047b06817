"""Plain values the configuration names: store paths and checks, with no store behaviour.

The configuration describes the stores with these; the stores take them from here under
their own names (``stores.debian.DebianPaths``, ``stores.nss.NssDatabase``, ...). Nothing
here reads the disk or the host: what depends on the host is resolved in ``config.load``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from trustinstaller._run import Account

# Our own subdirectory of the local CA directory, and the bundle update-ca-certificates writes.
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
    # dpkg's state: Java's hook runs dpkg, which needs the locks in it.
    dpkg_dir: Path = Path("/var/lib/dpkg")

    @property
    def our_dir(self) -> Path:
        """The directory holding only our certificates."""
        return self.local_certs_dir / SUBDIR

    @property
    def bundle(self) -> Path:
        """The OS bundle that OpenSSL, curl and friends read."""
        return self.etc_certs_dir / BUNDLE


@dataclass(frozen=True)
class NssDatabase:
    """One NSS database: its directory, and the user it belongs to (None: root)."""

    directory: Path
    owner: Account | None = None

    @classmethod
    def parse(cls, spec: str, owner: Account | None = None) -> NssDatabase:
        """From ``sql:DIR`` (a bare absolute path means the same)."""
        return cls(Path(spec.removeprefix("sql:")), owner)

    @property
    def spec(self) -> str:
        """The ``sql:DIR`` form certutil takes."""
        return f"sql:{self.directory}"


# Paths that sh and systemd read alike, unquoted-safe only: runtime_dir, and what the runtime
# environment's file names.
SAFE_VALUE = re.compile(r"[A-Za-z0-9/._+@-]+")

# Debian's Chromium, then Google Chrome's; [] in the configuration turns the store off.
CHROMIUM_POLICY_DIRS = (
    Path("/etc/chromium/policies/managed"),
    Path("/etc/opt/chrome/policies/managed"),
)

# Firefox's system policy file: the default wherever Firefox is installed.
FIREFOX_SYSTEM_POLICIES = Path("/etc/firefox/policies/policies.json")
