"""Plain values the configuration names: store paths and checks, with no store behaviour.

The configuration describes the stores with these; the stores take them from here under
their own names (``stores.nss.NssDatabase``, ``stores.chromium.DEFAULT_DIRS``, ...). Nothing
here reads the disk or the host: what depends on the host is resolved in ``config.load``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from trustinstaller._run import Account


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
