"""Shared fixtures: a real moto server, a temporary OS store root, test CAs."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import clientenv, osroot
from tests.support.certs import Issued, make_ca
from tests.support.hostile import hostile  # noqa: F401 (a fixture for every suite)
from tests.support.moto import FAKE_ENV, MotoServer, moto_server
from trustinstaller.config import Config
from trustinstaller.paths import NssDatabase
from trustinstaller.stores.debian import DebianPaths

# Never read a developer's real AWS configuration, and never ask an instance metadata service.
os.environ.update(FAKE_ENV)
os.environ["AWS_CONFIG_FILE"] = "/dev/null"
os.environ["AWS_SHARED_CREDENTIALS_FILE"] = "/dev/null"
os.environ["AWS_EC2_METADATA_DISABLED"] = "true"
os.environ.pop("AWS_PROFILE", None)
os.environ.pop("AWS_ENDPOINT_URL", None)
os.environ.pop("AWS_ENDPOINT_URL_SECRETS_MANAGER", None)
os.environ["PATH"] = os.environ.get("PATH", "/usr/bin:/bin") + ":/usr/sbin:/sbin"
# Nor this machine's own trust: what every test and the clients they start see is the agent's.
clientenv.scrub()


# The host's browser policy directories: no test may change them (the namespaces bind copies).
HOST_POLICY_DIRS = ("/etc/chromium", "/etc/opt", "/etc/firefox")


def _tree(top: str) -> dict[str, tuple[int, str]]:
    """Every entry under ``top`` with its mode and, for a file, its SHA-256; {} when missing."""
    out: dict[str, tuple[int, str]] = {}
    for dirpath, dirnames, filenames in os.walk(top):
        for name in [*dirnames, *filenames]:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            digest = ""
            if os.path.isfile(path) and not os.path.islink(path):
                with open(path, "rb") as f:
                    digest = hashlib.sha256(f.read()).hexdigest()
            out[path] = (st.st_mode, digest)
    return out


@pytest.fixture(scope="session", autouse=True)
def host_policies_untouched() -> Iterator[None]:
    """Fail the run if any test changed the host's own browser policy directories."""
    before = {d: _tree(d) for d in HOST_POLICY_DIRS}
    yield
    after = {d: _tree(d) for d in HOST_POLICY_DIRS}
    assert after == before, "a test changed the host's browser policy directories"


def _manager_env() -> str | None:
    """The service manager's environment, where systemd runs here."""
    if not Path("/run/systemd/system").is_dir():
        return None
    done = subprocess.run(["systemctl", "show-environment"], capture_output=True, text=True,
                          timeout=30, check=False)  # fmt: skip
    return done.stdout


@pytest.fixture(scope="session", autouse=True)
def host_manager_env_untouched() -> Iterator[None]:
    """Fail the run if any test changed this host's systemd manager environment (the
    ``systemd_environment`` store, which tests turn off or run inside a booted root)."""
    before = _manager_env()
    yield
    assert _manager_env() == before, "a test changed the host's systemd manager environment"


# Suites that start real browsers, race a hostile user, flood sockets or boot systemd: each takes
# tens of seconds to minutes. `make test-fast` leaves them out; `make test` runs everything.
SLOW_SUITES = frozenset({
    "test_chromium_policy.py", "test_clients.py", "test_faults.py", "test_firefox_browser.py",
    "test_hardening.py", "test_namespace.py", "test_privsep.py", "test_user_store_attacks.py",
    "test_user_rollback_attacks.py", "test_socket_http.py", "test_throttling.py",
    "test_wheel.py", "test_env_clients.py", "test_dpkg_lock.py", "test_login_shell.py",
    "test_activation.py", "test_package.py", "test_sdnotify.py", "test_units.py",
})  # fmt: skip


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test of a slow suite ``slow``, so that ``-m 'not slow'`` leaves it out."""
    for item in items:
        if item.path.name in SLOW_SUITES:
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def moto() -> Iterator[MotoServer]:
    """One moto server for the whole run; tests use unique secret names."""
    with moto_server() as server:
        yield server


@pytest.fixture(scope="session")
def os_root_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An OS store built once with the real update-ca-certificates."""
    base = tmp_path_factory.mktemp("os-root-template")
    osroot.build_os_root(base)
    return base


@pytest.fixture
def os_root(os_root_template: Path, tmp_path: Path) -> DebianPaths:
    """A fresh copy of the OS store for one test."""
    return osroot.clone_os_root(os_root_template, tmp_path / "root")


@pytest.fixture
def config(tmp_path: Path, os_root: DebianPaths, moto: MotoServer) -> Config:
    """A configuration whose every path is under the test's temporary directory."""
    state = tmp_path / "state"
    return Config(
        socket=state / "trustinstaller.sock",
        state_dir=state,
        nss_databases=(NssDatabase(tmp_path / "home" / ".pki" / "nssdb"),),
        endpoint_url=moto.endpoint,
        os_store=os_root,
        request_timeout=5.0,
        # Never the host's /etc/firefox or /etc/chromium: tests that want the policy stores
        # name a path here, or run in a private namespace.
        firefox_policies=(),
        chromium_policies=(),
        # Never the host's service manager, on a machine where systemd is PID 1.
        systemd_environment=False,
    )


@pytest.fixture
def public_tmp() -> Iterator[Path]:
    """A scratch directory every user may search, outside pytest's 0700 tree: a browser's view."""
    d = Path(tempfile.mkdtemp(prefix="ti-public-"))
    d.chmod(0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def shims(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A directory first on PATH for this test, for command shims."""
    d = tmp_path / "shims"
    d.mkdir()
    monkeypatch.setenv("PATH", f"{d}:{os.environ['PATH']}")
    return d


@pytest.fixture(scope="session")
def test_ca() -> Issued:
    """A valid self-signed root CA."""
    return make_ca("trustinstaller test root CA")
