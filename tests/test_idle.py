"""Small after the lock: the idle_exit key, and what a daemon restarted after the lock loads.

A locked daemon has nothing left to install, so one that socket activation starts again to
answer ``GET /v1/status`` must not pay for botocore or cryptography. The daemon runs as a real
process with ``PYTHONPROFILEIMPORTTIME=1``: CPython then writes every module it imports to
stderr, and ``/proc/PID/maps`` shows every extension module it has loaded.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from tests.support.builders import manifest, unique
from tests.support.certs import make_ca
from tests.support.daemon import Daemon, put, write_config
from tests.support.moto import MotoServer
from tests.system.conftest import NotifySocket, listening_socket, spawn_activated, stop
from trustinstaller import config as config_mod
from trustinstaller.config import Config
from trustinstaller.errors import ConfigError
from trustinstaller.installer import Installer

# What only an install needs, and asyncio, which structlog imports but the daemon never uses.
HEAVY = {"boto3", "botocore", "cryptography", "urllib3", "certifi"}
# log.py's stand-in keeps asyncio out on Python 3.11; on Debian 13's 3.13 an import-time use
# of it loads the real module (seen in the trixie suite, not yet traced), so there it is not
# asserted.
if sys.version_info < (3, 13):
    HEAVY.add("asyncio")


def imported(trace: str) -> set[str]:
    """Module names from ``-X importtime`` lines ("import time: self | cumulative | name")."""
    names = set()
    for line in trace.splitlines():
        if line.startswith("import time:") and line.count("|") == 2:
            name = line.rsplit("|", 1)[1].strip()
            if name != "imported package":
                names.add(name)
    return names


def heavy(names: set[str]) -> set[str]:
    """The top-level packages among ``names`` that only an install needs."""
    return {n.split(".")[0] for n in names} & HEAVY


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A short directory for sockets (pytest's paths can pass the 108-byte sun_path limit)."""
    d = Path(tempfile.mkdtemp(prefix="ti-idle-"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.mark.parametrize(
    ("data", "field", "expected"),
    [
        pytest.param({}, "fetch_timeout", 60.0, id="fetch-timeout-default"),
        pytest.param({"fetch_timeout": 5}, "fetch_timeout", 5.0, id="fetch-timeout-int"),
        pytest.param({"fetch_timeout": 0.5}, "fetch_timeout", 0.5, id="fetch-timeout-float"),
        pytest.param({}, "idle_exit", None, id="idle-exit-default-stays"),
        pytest.param({"idle_exit": 10}, "idle_exit", 10.0, id="idle-exit-int"),
    ],
)
def test_timeout_keys_are_read(data: dict[str, Any], field: str, expected: object) -> None:
    """fetch_timeout defaults to 60 s and idle_exit to none; both take seconds."""
    assert getattr(config_mod.from_mapping(data), field) == expected


@pytest.mark.parametrize("key", ["fetch_timeout", "idle_exit"])
@pytest.mark.parametrize(
    "value", [0, -1, "10", True, float("nan"), float("inf")], ids=repr
)  # fmt: skip
def test_timeout_keys_refuse_what_is_not_a_positive_finite_number(key: str, value: object) -> None:
    """Zero, negative, string, boolean, NaN and infinite values are refused, naming the key."""
    with pytest.raises(ConfigError, match=f"{key}: must be a positive number of seconds"):
        config_mod.from_mapping({key: value})


def locked_daemon_config(config: Config, moto: MotoServer, short_dir: Path) -> Path:
    """Install one CA (taking the lock), and write a config for a daemon that starts after."""
    arn = moto.put_secret(unique("idle"), make_ca("idle").pem)
    assert Installer(config).submit(manifest([arn])).state == "locked"
    return write_config(replace(config, socket=short_dir / "ti.sock"), short_dir / "c.toml")


@pytest.mark.slow
def test_a_restarted_locked_daemon_answers_without_botocore_or_cryptography(
    config: Config, moto: MotoServer, short_dir: Path
) -> None:
    """A daemon started after the lock answers GET /v1/status without importing botocore,
    boto3, urllib3, certifi, cryptography or asyncio, then or later."""
    cfg = locked_daemon_config(config, moto, short_dir)
    with Daemon(cfg, short_dir / "ti.sock", env={"PYTHONPROFILEIMPORTTIME": "1"}) as d:
        assert d.status()["state"] == "locked"
        time.sleep(1.0)  # long enough for a warm-up thread to have started importing
        assert d.status()["state"] == "locked"
        assert d.proc is not None
        maps = Path(f"/proc/{d.proc.pid}/maps").read_text()
    names = imported(d.log.read_text())
    assert "trustinstaller.server" in names  # the trace covers the daemon's own imports
    assert heavy(names) == set()
    assert "cryptography" not in maps


def test_an_open_daemon_warms_up_botocore_and_cryptography(short_dir: Path, config: Config) -> None:
    """Before the lock the warm-up imports what the install needs; the trace above would see it."""
    cfg = write_config(replace(config, socket=short_dir / "ti.sock"), short_dir / "c.toml")
    with Daemon(cfg, short_dir / "ti.sock", env={"PYTHONPROFILEIMPORTTIME": "1"}) as d:
        assert d.status()["state"] == "open"
        assert d.proc is not None
        deadline = time.monotonic() + 60  # a hang guard, not a timing assertion
        while "botocore.client" not in imported(d.log.read_text()):
            assert time.monotonic() < deadline, "warm-up never imported botocore.client"
            time.sleep(0.1)
        while "cryptography" not in (maps := Path(f"/proc/{d.proc.pid}/maps").read_text()):
            assert time.monotonic() < deadline, "warm-up never loaded cryptography"
            time.sleep(0.1)
    assert heavy(imported(d.log.read_text())) >= {"botocore", "cryptography", "urllib3"}
    assert "_rust.abi3.so" in maps


@pytest.mark.parametrize(
    ("config_value", "env"),
    [
        pytest.param(1.0, {}, id="config-key"),
        pytest.param(3600.0, {"TRUSTINSTALLER_IDLE_EXIT": "1"}, id="variable-overrides-key"),
    ],
)
def test_idle_exit_ends_a_locked_activated_daemon(
    config: Config, short_dir: Path, config_value: float, env: dict[str, str]
) -> None:
    """With socket activation, a locked daemon exits (status 0) after idle_exit idle seconds;
    TRUSTINSTALLER_IDLE_EXIT overrides the key."""
    path = short_dir / "activated.sock"
    listener = listening_socket(path)
    notify = NotifySocket(short_dir / "notify.sock")
    cfg = write_config(replace(config, idle_exit=config_value), short_dir / "c.toml")
    proc = spawn_activated(cfg, listener, notify, extra_env=env, log=short_dir / "d.log")
    try:
        notify.wait_for(lambda m: m.get("READY") == "1", proc=proc)
        code, doc = put(path, b"{}")  # an empty manifest locks an empty configuration
        assert code == 200, doc
        assert proc.wait(timeout=120) == 0  # exits on its own; the timeout is a hang guard
        stopping = notify.wait_for(lambda m: m.get("STOPPING") == "1")
    finally:
        stop(proc)
        listener.close()
        notify.close()
    assert "idle" in stopping["STATUS"]
