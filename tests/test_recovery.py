"""Rollback and recovery paths that no other test reached: each one fails when its behaviour goes.

Faults are real: PATH shims in front of certutil and update-ca-certificates, a state directory
left as a killed process leaves it, and a configuration the code cannot cope with.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from tests.support import osroot
from tests.support.builders import manifest, unique
from tests.support.certs import make_ca
from tests.support.daemon import Daemon, cli, write_config
from tests.support.moto import MotoServer
from tests.support.shims import write_shim
from trustinstaller.config import Config
from trustinstaller.documents import status_to_json
from trustinstaller.errors import HostError, LockedError, RollbackFailedError
from trustinstaller.installer import Installer


def nss_dir(config: Config) -> Path:
    return config.nss_databases[0].directory


def store_state(config: Config, *, env: bool = True) -> dict[str, Any]:
    """Everything an install may change: the OS store, the NSS listing and the runtime env."""
    state = {
        "os": osroot.snapshot_store(config.os_store),
        "nss": osroot.nss_listing(nss_dir(config)),
        "nss_files": sorted(osroot.snapshot_tree(nss_dir(config).parent)),
    }
    if env:
        state["env"] = osroot.snapshot_tree(config.runtime_env_dir)
        state["env_exists"] = config.runtime_env_dir.exists()
    return state


@pytest.fixture
def two_cas(moto: MotoServer) -> list[str]:
    """Two valid CAs in Secrets Manager."""
    return [moto.put_secret(unique(), make_ca(f"gap {i}").pem) for i in range(2)]


def journal_file(config: Config) -> Path:
    return config.state_dir / "journal.json"


def test_rollback_removes_the_runtime_environment(
    config: Config, shims: Path, two_cas: list[str]
) -> None:
    """A failure after the runtime env was written removes its bundles, policies and env file."""
    env_file = config.runtime_env_dir / "env"
    # The NSS database runs in its own thread: its first add waits until the env store (the
    # last serial store) has written its env file, then fails, so the rollback has all of it.
    write_shim(shims, "certutil", f"""if [ "$1" = "-A" ]; then
    i=0
    while [ ! -e {env_file} ] && [ $i -lt 400 ]; do sleep 0.05; i=$((i + 1)); done
    [ -e {env_file} ] && touch "$STATE/env-was-written"
    exit 1
fi""")  # fmt: skip
    before = store_state(config)
    assert not before["env_exists"]
    installer = Installer(config)
    with pytest.raises(HostError, match="certutil"):
        installer.submit(manifest(two_cas))
    # The fault came when it should: the env store had written everything.
    assert (shims / "certutil.state" / "env-was-written").exists()
    assert store_state(config) == before
    assert installer.status().state == "failed"
    assert not journal_file(config).exists()


def test_lock_taken_by_a_recovered_journal_refuses_the_manifest(
    config: Config, moto: MotoServer
) -> None:
    """A committed journal found under the flock locks the session: the manifest is refused."""
    # What an ``apply`` killed between its commit and its lock leaves for the daemon: the
    # status still says installing (the first, unlocked check passes), the journal committed.
    config.state_dir.mkdir(mode=0o700)
    committed = {
        "fingerprint_sha256": "ab" * 32, "subject": "CN=committed before", "not_before": "",
        "not_after": "", "source": {"level": "tool", "index": 0, "arn": "arn:committed"},
        "duplicates": [], "stores": ["os"], "warnings": [],
    }  # fmt: skip
    (config.state_dir / "status.json").write_text(
        json.dumps({"state": "installing", "certificates": [], "warnings": [], "errors": []})
    )
    journal = {
        "id": "0123456789abcdef", "started_at": "2026-11-28T12:00:00Z", "phase": "committed",
        "entries": [], "summary": {"certificates": [committed]},
    }  # fmt: skip
    journal_file(config).write_text(json.dumps(journal))
    arn = moto.put_secret(unique(), make_ca("after the recovered lock").pem)
    before = osroot.snapshot_store(config.os_store), osroot.nss_listing(nss_dir(config))
    installer = Installer(config)
    with pytest.raises(LockedError, match="locked"):
        installer.submit(manifest([arn]))
    assert (osroot.snapshot_store(config.os_store), osroot.nss_listing(nss_dir(config))) == before
    status = status_to_json(installer.status())
    assert status["state"] == "locked"
    assert [c["subject"] for c in status["certificates"]] == ["CN=committed before"]
    assert not journal_file(config).exists()


# While the marker exists, update-ca-certificates does the install's work (our CAs reach the
# bundle) and then reports a failure, and the rollback's --fresh run fails outright; without the
# marker it is the real command.
BROKEN_UPDATE = """if [ -e "$STATE/broken" ]; then
    [ "$1" = "--fresh" ] || "$REAL" "$@"
    echo "E: shim: broken on purpose" >&2
    exit 1
fi"""


@pytest.mark.slow
def test_failed_rollback_is_retried_at_the_next_start(
    config: Config, shims: Path, two_cas: list[str]
) -> None:
    """Install and rollback fail: both reasons, the journal kept; the next start undoes it."""
    write_shim(shims, "update-ca-certificates", BROKEN_UPDATE)
    broken = shims / "update-ca-certificates.state" / "broken"
    broken.touch()
    before = store_state(config)
    before_bundle = config.os_store.bundle.read_bytes()
    with pytest.raises(RollbackFailedError, match="update-ca-certificates") as caught:
        Installer(config).submit(manifest(two_cas))
    # Typed: the install's failure and the rollback's, each as it was raised.
    assert isinstance(caught.value.cause, HostError)
    assert isinstance(caught.value.rollback, HostError)
    assert caught.value.outcome is caught.value.cause.outcome
    status = status_to_json(Installer(config).status())
    assert status["state"] == "failed"
    kinds = [e["kind"] for e in status["errors"]]
    assert kinds == ["store_failed", "rollback_failed"], status["errors"]
    assert "update-ca-certificates" in status["errors"][0]["message"]
    assert "retried at the next start" in status["errors"][1]["message"]
    journal = json.loads(journal_file(config).read_text())
    assert journal["phase"] == "applying"
    # The bundle still holds the refused install's CAs: only the retry can take them out.
    assert config.os_store.bundle.read_bytes() != before_bundle

    # While the fault lasts, the next start tries again, fails, and keeps the journal.
    with pytest.raises(HostError):
        Installer(config).prepare()
    assert journal_file(config).exists()

    broken.unlink()
    status = status_to_json(Installer(config).prepare())
    assert status["state"] == "failed"
    assert [e["kind"] for e in status["errors"]] == ["interrupted"]
    assert not journal_file(config).exists()
    assert store_state(config) == before
    # And the session is open again: the same manifest now installs.
    assert Installer(config).submit(manifest(two_cas)).state == "locked"


# -- an unexpected exception during an install -------------------------------------------------


@pytest.fixture
def name_too_long(config: Config, tmp_path: Path) -> Config:
    """A runtime_dir whose last name is longer than the kernel takes: its lstat is ENAMETOOLONG.

    The configuration accepts it (only the characters are checked); the install then meets an
    OSError that no code path turns into a TrustInstallerError: an internal error, for real.
    """
    return replace(config, runtime_dir=tmp_path / ("x" * 300))


def test_internal_error_is_500_and_the_daemon_keeps_serving(
    name_too_long: Config, tmp_path: Path, moto: MotoServer
) -> None:
    """An unexpected exception: HTTP 500, state failed with internal_error; the daemon serves on."""
    cfg = name_too_long
    arn = moto.put_secret(unique(), make_ca("internal").pem)
    before = store_state(cfg, env=False)  # a runtime_dir no lstat can reach
    sock = tmp_path / "d" / "ti.sock"
    sock.parent.mkdir()
    with Daemon(write_config(replace(cfg, socket=sock), tmp_path / "c.toml"), sock) as d:
        code, answer = d.put(manifest([arn]))
        assert code == 500, answer
        assert answer["outcome"] == "internal_error"
        assert answer["message"] == "internal error (OSError)"
        assert answer["state"] == "failed"
        assert [e["kind"] for e in answer["errors"]] == ["internal_error"]
        # Still serving: the status, and a second manifest is answered the same way.
        assert d.status()["state"] == "failed"
        code, again = d.put(manifest([arn]))
        assert (code, again["outcome"]) == (500, "internal_error")
        assert d.proc is not None
        assert d.proc.poll() is None
    assert store_state(cfg, env=False) == before
    assert not journal_file(cfg).exists()


def test_internal_error_from_apply_exits_1_and_records_failed(
    name_too_long: Config, tmp_path: Path, moto: MotoServer
) -> None:
    """``apply`` meeting an unexpected exception exits 1; the state records internal_error."""
    cfg = name_too_long
    m = tmp_path / "m.json"
    m.write_bytes(manifest([moto.put_secret(unique(), make_ca("internal apply").pem)]))
    done = cli("--config", str(write_config(cfg, tmp_path / "c.toml")), "apply", str(m))
    assert done.returncode == 1, done.stderr
    status = json.loads((cfg.state_dir / "status.json").read_text())
    assert status["state"] == "failed"
    assert [e["kind"] for e in status["errors"]] == ["internal_error"]
    assert status["errors"][0]["message"] == "OSError"
