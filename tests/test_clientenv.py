"""Clients under test start clean: this machine's own trust variables never reach them."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.support import clientenv
from tests.support.certs import make_ca
from tests.support.tls import https_server
from trustinstaller.stores import runtime_env


def test_the_suite_starts_without_trust_variables() -> None:
    """conftest.py dropped every trust variable the machine exported before any test ran."""
    assert [k for k in clientenv.TRUST_VARIABLES if k in os.environ] == []


def test_every_variable_of_the_env_file_is_scrubbed() -> None:
    """Each variable the env file can set is on the list the suite and the clients drop."""
    names = {k for k, _ in runtime_env.env_pairs(Path("/run/x"))}
    assert names <= set(clientenv.TRUST_VARIABLES)


def test_a_client_ignores_trust_variables_set_in_the_test_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With every trust variable in os.environ naming a bundle that trusts the site, curl under
    ``clean_env`` still refuses it, and neither ``client_env`` nor its ``env`` has one of them."""
    ca = make_ca("leaked trust CA")
    bundle = tmp_path / "leaked.pem"
    bundle.write_text(ca.pem)
    for key in clientenv.TRUST_VARIABLES:
        monkeypatch.setenv(key, str(bundle))
    assert not set(clientenv.client_env(HOME=str(tmp_path))) & set(clientenv.TRUST_VARIABLES)
    with https_server(ca) as url:
        # The same curl, given the leaked variables, trusts the site: the bundle is a real one.
        leaked = subprocess.run(
            ["curl", "-sS", "--max-time", "20", url],
            capture_output=True, text=True, timeout=60, check=False, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        assert leaked.returncode == 0, leaked.stderr
        clean = subprocess.run(
            [*clientenv.clean_env(HOME=str(tmp_path)), "curl", "-sS", "--max-time", "20", url],
            capture_output=True, text=True, timeout=60, check=False, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        assert clean.returncode == 60, clean.stderr  # CURLE_PEER_FAILED_VERIFICATION
    seen = subprocess.run(
        [*clientenv.clean_env(), "env"], capture_output=True, text=True, timeout=30, check=True
    ).stdout
    assert [k for k in clientenv.TRUST_VARIABLES if f"\n{k}=" in f"\n{seen}"] == []
