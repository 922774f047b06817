"""Services and user managers started after the install get the trust environment, under systemd.

A clean Debian root with the package, Node and requests (PyPI's, with certifi's own roots, which
ignore the OS store) boots under a real systemd. systemd's manager environment starts empty of
the host's variables (the boot passes PATH only), so a unit inherits no SSL_CERT_FILE of ours.
The tests run in order, as one session would: a probe service started before the install waits
for a go, the install locks, and then a service started after it trusts the site while the one
started before does not. The transaction's undo runs the real systemctl against the booted PID 1.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.certs import Issued, make_ca
from tests.support.moto import MotoServer
from tests.support.tls import https_server
from tests.system import debroot
from tests.system.conftest import manifest
from trustinstaller.stores import runtime_env

pytestmark = pytest.mark.system

TOP = Path(__file__).resolve().parents[2]
ENV_DIR = "/run/trustinstaller-env"
GENERATOR = "/usr/lib/systemd/user-environment-generators/30-systemd-environment-d-generator"
# PyPI's requests and certifi, copied from the test's own environment (same Python on Debian 12;
# pure Python where it matters on 13): Debian's python3-requests would read the OS store.
PROBE_LIBS = ("requests", "certifi", "urllib3", "idna", "charset_normalizer")
# Debian's Node, built on the shared OpenSSL, reads the OS store too: --use-bundled-ca makes it
# trust only its compiled-in roots plus NODE_EXTRA_CA_CERTS, as upstream's and NodeSource's do.
PROBE = """#!/bin/sh
# One line per client: requests=ok|refused, node=ok|refused.
PYTHONPATH=/opt/probe-lib python3 -c '
import sys, requests
try:
    requests.get(sys.argv[1], timeout=10)
    print("requests=ok")
except requests.exceptions.SSLError:
    print("requests=refused")
' "$1"
node --use-bundled-ca -e '
require("https").get(process.argv[1], (r) => { r.resume(); console.log("node=ok"); })
  .on("error", (e) => console.log("node=refused " + e.code));
' "$1"
"""


def unit(name: str, command: str, kind: str = "simple") -> str:
    """A plain service: no Environment= of its own, so it has only the manager's."""
    return f"[Unit]\nDescription={name}\n[Service]\nType={kind}\nExecStart=/bin/sh -c '{command}'\n"


@pytest.fixture(scope="module")
def site() -> Iterator[tuple[Issued, str]]:
    """A site on 127.0.0.1 signed by the custom CA (the root shares the host's network)."""
    ca = make_ca("trustinstaller sysenv test CA")
    with https_server(ca) as url:
        yield ca, url


@pytest.fixture(scope="module")
def root(deb: Path, site: tuple[Issued, str], tmp_path_factory: pytest.TempPathFactory
         ) -> Iterator[Path]:  # fmt: skip
    """A copy of the cached root with the package, Node and the probes installed."""
    work = tmp_path_factory.mktemp("sysenv")
    with debroot.package_root(deb, work, "nodejs", "python3") as path:
        import requests

        site_packages = Path(requests.__file__).parents[1]
        for lib in PROBE_LIBS:
            shutil.copytree(site_packages / lib, path / "opt/probe-lib" / lib)
        probe = path / "usr/local/bin/tls-probe"
        probe.write_text(PROBE)
        probe.chmod(0o755)
        url = site[1]
        units = path / "etc/systemd/system"
        wait = "while [ ! -e /run/probe-go ]; do sleep 0.2; done"
        (units / "probe-before.service").write_text(unit(
            "started before the install; probes once told to",
            f"{wait}; tls-probe {url} >/run/before.out 2>&1",
        ))  # fmt: skip
        (units / "probe-after.service").write_text(
            unit(
                "started when asked; probes at once",
                f"tls-probe {url} >/run/after.out 2>&1",
                "oneshot",
            )
        )
        conf = path / "etc/trustinstaller/config.toml"
        conf.write_text(conf.read_text() + "\nfirefox_policies = []\n")
        debroot.chroot_run(path, ["useradd", "--create-home", "--shell", "/bin/sh", "browser"])
        debroot.mask_consoles(path)
        yield path


@pytest.fixture(scope="module")
def booted(root: Path, moto: MotoServer) -> Iterator[debroot.Booted]:
    """The root booted under systemd, configured for the local moto server."""
    conf = root / "etc/trustinstaller/config.toml"
    conf.write_text(conf.read_text() + f'endpoint_url = "{moto.endpoint}"\n')
    with debroot.Booted(root, root.parent / "systemd.log") as system:
        yield system


def manager_env(booted: debroot.Booted) -> dict[str, str]:
    """PID 1's environment, as `systemctl show-environment` prints it."""
    out = booted.systemctl("show-environment").stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def said(booted: debroot.Booted, name: str) -> dict[str, str]:
    """What each client in a probe said (the booted root's /run is a tmpfs of its own)."""
    out = booted.run("cat", f"/run/{name}.out").stdout
    found = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    assert set(found) == {"requests", "node"}, out
    return found


def probe(booted: debroot.Booted) -> dict[str, str]:
    """Start the probe service and read what each client said."""
    booted.systemctl("start", "probe-after.service")
    return said(booted, "after")


def test_before_the_install_a_service_trusts_nothing_of_ours(booted: debroot.Booted) -> None:
    """The manager holds none of the variables (none leaked in), and both clients refuse."""
    held = manager_env(booted)
    assert not set(held) & {k for k, _ in runtime_env.env_pairs(Path(ENV_DIR))}, held
    before = probe(booted)
    assert before["requests"] == "refused"
    assert before["node"].startswith("refused"), before
    # A user manager's generator finds the package's link dangling, and adds nothing.
    out = booted.run("runuser", "-u", "browser", "--", GENERATOR).stdout
    assert "NODE_EXTRA_CA_CERTS" not in out, out
    booted.systemctl("start", "probe-before.service")
    assert booted.systemctl("is-active", "probe-before.service").stdout.strip() == "active"


def test_the_install_sets_the_variables_in_the_managers_environment(
    booted: debroot.Booted, root: Path, moto: MotoServer, site: tuple[Issued, str]
) -> None:
    """Under the hardened unit, the lock leaves every variable of the env file in PID 1's."""
    arn = moto.put_secret("sysenv-ca", site[0].pem)
    (root / "root/manifest.json").write_text(manifest(arn))
    done = booted.run("trustinstaller", "submit", "/root/manifest.json", check=False)
    assert done.returncode == 0, done.stderr
    held = manager_env(booted)
    for key, value in runtime_env.env_pairs(Path(ENV_DIR)):
        assert held.get(key) == value, key
    status = json.loads(booted.run("trustinstaller", "status", "--json").stdout)
    assert status["state"] == "locked"
    assert "systemd" in status["certificates"][0]["stores"]
    log = booted.run("journalctl", "-u", "trustinstaller", "--no-pager", "-o", "cat").stdout
    assert '"event": "systemd_environment_set"' in log


def test_a_service_started_after_the_install_trusts_the_site(booted: debroot.Booted) -> None:
    """requests (certifi's roots) and Node (its own) trust the site from the manager's variables."""
    assert probe(booted) == {"requests": "ok", "node": "ok"}


def test_a_service_started_before_keeps_its_old_environment(booted: debroot.Booted) -> None:
    """The service already running has none of the variables, and its clients still refuse."""
    pid = booted.show("probe-before.service", "MainPID")["MainPID"]
    environ = booted.run("cat", f"/proc/{pid}/environ").stdout.split("\0")
    assert not [e for e in environ if e.startswith(("SSL_CERT_FILE=", "NODE_EXTRA_CA_CERTS="))]
    booted.run("touch", "/run/probe-go")
    booted.wait_for(
        lambda: booted.show("probe-before.service", "ActiveState")["ActiveState"], {"inactive"}
    )
    kept = said(booted, "before")
    assert kept["requests"] == "refused"
    assert kept["node"].startswith("refused"), kept


def test_a_user_manager_reads_the_env_file_through_environment_d(
    booted: debroot.Booted,
) -> None:
    """The user environment generator, run as the browser user, prints the env file's values."""
    out = booted.run("runuser", "-u", "browser", "--", GENERATOR).stdout
    printed = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    for key, value in runtime_env.env_pairs(Path(ENV_DIR)):
        assert printed.get(key) == value, (key, out)


CRASH = """
import os, sys
from pathlib import Path
from trustinstaller import state, transaction
from trustinstaller.config import Config
from trustinstaller.stores.registry import Registry

cfg = Config(state_dir=Path("/root/sysenv-state"), runtime_dir=Path("/root/sysenv-env"))
registry = Registry(cfg)
st = state.StateDir(cfg.state_dir)
st.ensure()
if sys.argv[1] == "crash":
    store = registry.systemd_store()
    store.preflight()
    store.install([], transaction.JournalWriter(st, []).recorder("systemd"))
    os._exit(9)
print(transaction.recover(st, registry.named, confirm=lambda c: None, rolled_back=lambda: None))
"""


def test_a_crash_after_the_set_is_undone_by_the_next_start(booted: debroot.Booted) -> None:
    """Recovery unsets what a crashed install set and puts back each value it replaced."""
    booted.systemctl("set-environment", "GIT_SSL_CAINFO=/srv/admin.pem")
    before = manager_env(booted)
    python = "/usr/lib/trustinstaller/bin/python"
    crashed = booted.run(python, "-c", CRASH, "crash", check=False)
    assert crashed.returncode == 9, crashed.stderr
    during = manager_env(booted)
    assert during["SSL_CERT_FILE"] == "/root/sysenv-env/ca-bundle.pem"
    assert during["GIT_SSL_CAINFO"] == "/root/sysenv-env/ca-bundle.pem"
    assert booted.run(python, "-c", CRASH, "recover").stdout.splitlines()[-1] == "True"
    assert manager_env(booted) == before
    # A value set by someone else after a crash stays through the recovery.
    booted.run(python, "-c", CRASH, "crash", check=False)
    booted.systemctl("set-environment", "PIP_CERT=/srv/later.pem")
    booted.run(python, "-c", CRASH, "recover")
    assert manager_env(booted) == {**before, "PIP_CERT": "/srv/later.pem"}
