"""Shared fixtures: a real moto server, a temporary OS store root, test CAs."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import osroot
from tests.support.certs import Issued, make_ca
from tests.support.moto import FAKE_ENV, MotoServer, moto_server
from trustinstaller.config import Config
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
        nss_databases=(f"sql:{tmp_path / 'home' / '.pki' / 'nssdb'}",),
        endpoint_url=moto.endpoint,
        os_store=os_root,
        request_timeout=5.0,
        # Never the host's /etc/firefox: tests that want the Firefox store name a file here.
        firefox_policies=(),
    )


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
