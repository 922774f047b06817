"""A hostile browser user, for real: a private mount namespace, a throwaway browser user in it,
and the agent's configuration naming that user in ``browser_users``, with a manifest of one CA.
The ``hostile`` fixture (registered in tests/conftest.py) gives one per test."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.browseruser import BrowserUser, add_browser_user
from tests.support.builders import manifest, unique
from tests.support.certs import make_ca
from tests.support.moto import MotoServer
from tests.support.ns import PrivateNamespace

CERTUTIL_TIMEOUT = 3


# An honest install in the namespace takes a few seconds (update-ca-certificates and its Java
# hook are the slow part); a hung one is given up on after this.
INSTALL_BOUND = 60.0


@dataclass
class Hostile:
    """A namespace, its browser user, and the agent's configuration and manifest."""

    ns: PrivateNamespace
    user: BrowserUser
    config: Path
    manifest: Path

    def as_user(self, script: str) -> subprocess.CompletedProcess[str]:
        """Run a shell script as the browser user inside the namespace."""
        return self.ns.run(self.user.argv(["sh", "-c", script]), timeout=60)

    def module_db(self, db: Path, lib: Path) -> None:
        """As the user: make an NSS database at ``db`` whose pkcs11.txt names ``lib``."""
        made = self.as_user(
            f"mkdir -p {db} && certutil -N -d sql:{db} --empty-password "
            f"&& printf 'library={lib}\\nname=mine\\n\\n' >> {db}/pkcs11.txt"
        )
        assert made.returncode == 0, made.stderr

    def agent_argv(self, *args: str) -> list[str]:
        """``python -m trustinstaller --config CONFIG ARGS``, to run as root in the namespace."""
        return [sys.executable, "-m", "trustinstaller", "--config", str(self.config), *args]

    def agent(self, *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
        """``python -m trustinstaller --config CONFIG ARGS`` inside the namespace, as root."""
        return self.ns.run(self.agent_argv(*args), timeout=timeout)


@pytest.fixture
def hostile(tmp_path_factory: pytest.TempPathFactory, moto: MotoServer) -> Iterator[Hostile]:
    """A namespace with a browser user, and a config that names it in ``browser_users``."""
    base = tmp_path_factory.mktemp("review")
    ca = make_ca("trustinstaller review CA")
    arn = moto.put_secret(unique("review"), ca.pem)
    (base / "manifest.json").write_bytes(manifest(session=[arn]))
    (base / "ca.pem").write_text(ca.pem)
    (base / "config.toml").write_text(
        'state_dir = "/run/trustinstaller"\n'
        'socket = "/run/trustinstaller/trustinstaller.sock"\n'
        f'endpoint_url = "{moto.endpoint}"\n'
        'browser_users = ["ti-browser"]\n'
        f"certutil_timeout = {CERTUTIL_TIMEOUT}\n"
        "firefox_policies = []\n"
    )
    with PrivateNamespace(base / "ns") as ns:
        user = add_browser_user(ns)
        try:
            yield Hostile(ns, user, base / "config.toml", base / "manifest.json")
        finally:
            user.remove_home()
