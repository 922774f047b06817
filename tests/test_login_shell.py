"""Login shells get the trust environment from the package's /etc/profile.d file.

In a private mount namespace, a copy of /etc/profile.d with the package's file in it is bound
over /etc/profile.d (the host's is never changed), and a login shell (``env -i su - USER``) runs
Python requests and Node's fetch against a site on 127.0.0.1 that a test CA signed, as the
browser user and as root: each refuses before the install and trusts after it. The file is
sourced only while it and its directories are root's alone.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import sysconfig
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.support.browseruser import BrowserUser, add_browser_user
from tests.support.builders import manifest, unique
from tests.support.certs import make_ca
from tests.support.moto import MotoServer
from tests.support.ns import PrivateNamespace
from tests.support.tls import https_server

pytestmark = pytest.mark.root

TOP = Path(__file__).resolve().parent.parent
PROFILE = TOP / "packaging" / "deb" / "debian" / "trustinstaller.profile.sh"
ENV_FILE = "/run/trustinstaller-env/env"
PAGE_TEXT = "trusted by trustinstaller"

REQUESTS_PROBE = """
import sys, requests
try:
    r = requests.get(sys.argv[1], timeout=20)
except requests.exceptions.SSLError as exc:
    print("SSLError", exc)
    sys.exit(1)
print(r.status_code, r.text)
"""

NODE_PROBE = """
fetch(process.argv[1])
  .then(async (r) => { console.log(r.status, await r.text()); })
  .catch((e) => { console.log('ERROR', e.cause && e.cause.code, e.message); process.exit(1); });
"""


def user_python() -> str:
    """An interpreter of this Python version that any user may run (not one under /root)."""
    exe = Path(os.path.realpath(sys.executable))
    if all(os.stat(p).st_mode & 0o001 for p in exe.parents):
        return str(exe)
    return f"/usr/bin/python{sys.version_info.major}.{sys.version_info.minor}"


@dataclass
class Shell:
    """Login shells in the namespace, and the site they fetch."""

    ns: PrivateNamespace
    user: BrowserUser
    url: str
    # What each login shell printed before the install, by user name.
    before: dict[str, str] = field(default_factory=dict)

    def probes(self, script: str) -> str:
        """The command line that runs both probes, each reporting its exit status."""
        site = sysconfig.get_paths()["purelib"]
        requests = shlex.join(["env", f"PYTHONPATH={site}", user_python(), "-c", REQUESTS_PROBE,
                               self.url])  # fmt: skip
        node = shlex.join(["node", "-e", NODE_PROBE, self.url])
        return f"{script}{requests}; echo requests=$?; {node}; echo node=$?"

    def login(self, name: str) -> str:
        """``env -i su - NAME -c PROBES``: a login shell of ``name``; what it printed."""
        su = shutil.which("su")
        assert su, "su missing (util-linux)"
        done = self.ns.run(["env", "-i", su, "-", name, "-c", self.probes("")], timeout=180)
        return done.stdout + done.stderr

    def plain(self) -> str:
        """The browser user in a shell that is no login shell: no profile is read."""
        done = self.ns.run(self.user.argv(["sh", "-c", self.probes("")]), timeout=180)
        return done.stdout + done.stderr


@pytest.fixture(scope="module")
def shell(tmp_path_factory: pytest.TempPathFactory, moto: MotoServer) -> Iterator[Shell]:
    """A namespace with the package's profile.d file and a browser user; not yet installed."""
    base = tmp_path_factory.mktemp("login")
    ca = make_ca("trustinstaller login shell test CA")
    arn = moto.put_secret(unique("login"), ca.pem)
    (base / "manifest.json").write_bytes(manifest(session=[arn]))
    (base / "config.toml").write_text(
        'state_dir = "/run/trustinstaller"\n'
        'socket = "/run/trustinstaller/trustinstaller.sock"\n'
        f'endpoint_url = "{moto.endpoint}"\n'
        "nss_databases = []\nfirefox_policies = []\n"
    )
    profile_d = base / "profile.d"
    shutil.copytree("/etc/profile.d", profile_d, symlinks=True)
    shutil.copyfile(PROFILE, profile_d / "trustinstaller.sh")
    (profile_d / "trustinstaller.sh").chmod(0o644)
    profile_d.chmod(0o755)
    # The copy's parents are pytest's 0700 directories: reachable by root only, which is fine
    # for a bind mount's source; the mount point /etc/profile.d is what the shells read.
    with https_server(ca) as url, PrivateNamespace(base / "ns") as ns:
        user = add_browser_user(ns)
        try:
            # su's PAM account check wants a shadow entry (locked: no password to log in with).
            shadow = base / "shadow"
            shutil.copy2("/etc/shadow", shadow)
            with shadow.open("a") as f:
                f.write(f"{user.name}:*:19000:0:99999:7:::\n")
            for copy, target in ((shadow, "/etc/shadow"), (profile_d, "/etc/profile.d")):
                done = ns.run(["mount", "--bind", str(copy), target])
                assert done.returncode == 0, done.stderr
            assert not Path("/etc/profile.d/trustinstaller.sh").exists(), "the bind leaked"
            box = Shell(ns, user, url)
            box.before = {name: box.login(name) for name in (user.name, "root")}
            cfg, m = str(base / "config.toml"), str(base / "manifest.json")
            done = ns.run([sys.executable, "-m", "trustinstaller", "--config", cfg, "apply", m])
            assert done.returncode == 0, done.stderr
            yield box
        finally:
            user.remove_home()


@pytest.mark.parametrize("who", ["browser", "root"])
def test_login_shell_trusts_after_the_install(shell: Shell, who: str) -> None:
    """``su -`` as the browser user or root: requests and Node's fetch refuse before the
    install, and trust after it, with nothing in the environment but what the profile set."""
    name = shell.user.name if who == "browser" else "root"
    before = shell.before[name]
    assert "requests=1" in before, before
    assert "SSLError" in before, before
    assert "node=1" in before, before
    after = shell.login(name)
    assert "requests=0" in after, after
    assert "node=0" in after, after
    assert after.count(PAGE_TEXT) == 2, after


def node_reads_the_os_store() -> bool:
    """Whether this Node trusts OpenSSL's store, not only its own roots: Debian's Node, built on
    the shared system OpenSSL, does (seen on Debian 13); NodeSource's, with its own, does not."""
    done = subprocess.run(["node", "-p", "process.config.variables.node_shared_openssl"],
                          capture_output=True, text=True, timeout=60, check=True)  # fmt: skip
    return done.stdout.strip() == "true"


def test_a_shell_that_reads_no_profile_still_refuses(shell: Shell) -> None:
    """Without a login shell the file is not read: requests keeps certifi, and Node its own
    roots (a Node built to read the OS store trusts through the OS store instead)."""
    out = shell.plain()
    assert "requests=1" in out, out
    assert "SSLError" in out, out
    assert f"node={0 if node_reads_the_os_store() else 1}" in out, out


@pytest.mark.parametrize(
    "spoil",
    [
        "chown {uid} {env}",  # the browser user's file
        "chmod 0666 {env}",  # anyone may write it
        "chmod 0777 /run/trustinstaller-env",  # anyone may swap it
    ],
)
def test_an_env_file_another_user_could_change_is_not_sourced(shell: Shell, spoil: str) -> None:
    """If the env file or its directory is not root's alone, login shells ignore it."""
    ns, env = shell.ns, ENV_FILE
    done = ns.run(["sh", "-c", spoil.format(uid=shell.user.uid, env=env)])
    assert done.returncode == 0, done.stderr
    try:
        out = shell.login(shell.user.name)
        assert "requests=1" in out, out
        assert "SSLError" in out, out
    finally:
        restore = "chown 0 {env} && chmod 0644 {env} && chmod 0755 /run/trustinstaller-env"
        done = ns.run(["sh", "-c", restore.format(env=env)])
        assert done.returncode == 0, done.stderr
    assert "requests=0" in shell.login(shell.user.name)
