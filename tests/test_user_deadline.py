"""A browser user holds an install for ``user_store_timeout`` at most, however it stalls.

The user's module sleeps just under ``certutil_timeout`` in every certutil run as the user, so
that no step is ever killed, and the steps add up: without one deadline for all of them, an
install with three CAs took 43 s instead of 2, and the recovery after a crash as long again
before the daemon could answer. These run the attack for real, as a real second uid.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.attack import gcc
from tests.support.builders import manifest, unique
from tests.support.certs import make_ca
from tests.support.hostile import CERTUTIL_TIMEOUT, INSTALL_BOUND, Hostile
from tests.support.moto import MotoServer

pytestmark = pytest.mark.root


USER_STORE_TIMEOUT = 4
# Just under certutil_timeout, so that no single step is killed.
STALL = CERTUTIL_TIMEOUT - 0.3
CAS = 3
# Certutil runs (each stalled) the crashed install gets through, over both databases.
LOADS_BEFORE_CRASH = 8

STALL_C = r"""
#include <fcntl.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
__attribute__((constructor)) static void stall(void) {
    char comm[32] = "";
    int fd = open("/proc/self/comm", O_RDONLY);
    if (fd >= 0) { if (read(fd, comm, sizeof comm - 1) < 0) comm[0] = 0; close(fd); }
    if (strncmp(comm, "certutil", 8) != 0) return;
    fd = open(LOADED, O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (fd >= 0) { if (write(fd, "x", 1) < 0) {} close(fd); }
    struct timespec t = {(time_t)STALL, (long)((STALL - (time_t)STALL) * 1e9)};
    nanosleep(&t, NULL);
}
"""


def _stalling_user(hostile: Hostile) -> Path:
    """The user lists its stalling module in both of its databases; returns its load log."""
    home = hostile.user.home
    loaded = home / "loaded"
    lib = gcc(STALL_C, home / "libstall.so", "-shared", "-fPIC",
              f'-DLOADED="{loaded}"', f"-DSTALL={STALL}")  # fmt: skip
    lib.chmod(0o755)
    for db in (home / ".pki/nssdb", home / ".local/share/pki/nssdb"):
        hostile.module_db(db, lib)
    loaded.unlink(missing_ok=True)
    with hostile.config.open("a") as f:
        f.write(f"user_store_timeout = {USER_STORE_TIMEOUT}\n")
    return loaded


def _manifest(hostile: Hostile, moto: MotoServer, cas: int = CAS) -> Path:
    arns = [moto.put_secret(unique("stall"), make_ca(f"stall CA {i}").pem) for i in range(cas)]
    path = hostile.manifest.with_name(f"manifest-{unique()}.json")
    path.write_bytes(manifest(session=arns))
    return path


def _status(hostile: Hostile) -> dict[str, object]:
    done = hostile.agent("status", "--json", timeout=60)
    return json.loads(done.stdout)  # type: ignore[no-any-return]


@pytest.mark.slow
def test_a_user_stalling_every_step_holds_the_install_for_its_deadline_only(
    hostile: Hostile, moto: MotoServer
) -> None:
    """Root's stores install and the session locks; the user's stores are skipped in our words."""
    loaded = _stalling_user(hostile)
    path = _manifest(hostile, moto)
    started = time.monotonic()
    done = hostile.agent("apply", str(path), timeout=INSTALL_BOUND * 3)
    took = time.monotonic() - started
    assert done.returncode == 0, done.stderr[-2000:]
    assert loaded.read_text(), "the user's module never ran: the attack did not happen"
    status = _status(hostile)
    assert status["state"] == "locked"
    certs = status["certificates"]
    assert isinstance(certs, list)
    assert len(certs) == CAS
    for cert in certs:
        assert "os" in cert["stores"]
        # Each of the user's two databases: skipped, in our words, naming the deadline.
        skipped = [w for w in cert["warnings"] if "user_store_timeout (4 s)" in w]
        assert len(skipped) == 2, cert["warnings"]
    # Every step stalls for STALL: unbounded, the user's steps alone (two databases, a create,
    # CAS adds and a listing each, and the rollback's) would take well over this.
    unbounded = 2 * (1 + CAS + 1) * STALL
    assert took < unbounded, f"the install took {took:.1f} s"
    assert took < USER_STORE_TIMEOUT + 12, f"the install took {took:.1f} s"


def _crash_amid_users_steps(hostile: Hostile, moto: MotoServer) -> Path:
    """An install with a long user deadline, SIGKILLed amid the user's stalled steps; returns
    the module's load log, emptied."""
    loaded = _stalling_user(hostile)
    short = hostile.config.read_text()
    long_config = hostile.config.with_name("config-long.toml")
    long_config.write_text(short.replace(f"user_store_timeout = {USER_STORE_TIMEOUT}\n",
                                         "user_store_timeout = 600\n"))  # fmt: skip
    path = _manifest(hostile, moto, cas=6)
    argv = hostile.ns.argv([sys.executable, "-m", "trustinstaller", "--config",
                            str(long_config), "apply", str(path)])  # fmt: skip
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    try:
        deadline = time.monotonic() + INSTALL_BOUND
        while not loaded.exists() or len(loaded.read_text()) < LOADS_BEFORE_CRASH:
            assert time.monotonic() < deadline, "the user's steps never got that far"
            assert proc.poll() is None, "the install ended before the crash"
            time.sleep(0.05)
    finally:
        # SIGKILL to the agent and everything it runs, as a power cut would.
        subprocess.run(["pkill", "-KILL", "-s", str(proc.pid)], check=False)
        proc.wait(timeout=30)
    journal = hostile.ns.run(["cat", "/run/trustinstaller/journal.json"], timeout=30)
    assert journal.returncode == 0, journal.stderr
    assert journal.stdout.count('"nss:') >= 2, "too few of the user's steps were journalled"
    loaded.write_text("")
    return loaded


@pytest.mark.slow
def test_recovery_after_a_crash_is_bounded_by_the_users_deadline(
    hostile: Hostile, moto: MotoServer
) -> None:
    """Killed amid the user's steps, the next start's rollback is bounded by the user's deadline.

    The crashed install has a long deadline, so that it gets far into the user's databases
    before the kill; the next start (an ``apply`` of a manifest that is then refused, so that
    only the recovery is timed) has the short one.
    """
    loaded = _crash_amid_users_steps(hostile, moto)
    bad = hostile.manifest.with_name("not-a-manifest.json")
    bad.write_text("not a manifest")
    started = time.monotonic()
    recover = hostile.agent("apply", str(bad), timeout=INSTALL_BOUND * 3)
    took = time.monotonic() - started
    assert recover.returncode == 2, recover.stderr[-2000:]
    assert "install_rolled_back" in recover.stderr, recover.stderr[-2000:]
    assert loaded.read_text(), "the recovery ran none of the user's steps: nothing was bounded"
    # Unbounded, the user's rollback alone is one stalled certutil per CA added, in each database.
    assert took < USER_STORE_TIMEOUT + 6, f"the recovery took {took:.1f} s"


@pytest.mark.slow
def test_a_daemon_started_after_a_crash_answers_before_the_users_rollback(
    hostile: Hostile, moto: MotoServer
) -> None:
    """The daemon rolls root's stores back and gets ready; the user's stalled databases are
    undone after, so its first answer comes while their part of the journal is still there."""
    _crash_amid_users_steps(hostile, moto)
    serve = subprocess.Popen(hostile.ns.argv(hostile.agent_argv("serve")),
                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True, start_new_session=True)  # fmt: skip
    try:
        first = pending = None
        deadline = time.monotonic() + INSTALL_BOUND
        while first is None and time.monotonic() < deadline:
            probe = hostile.agent("status", timeout=60)
            if probe.stdout.startswith("source: daemon"):
                # The daemon answers now: what it says, and what is left in the journal.
                pending = hostile.ns.run(["cat", "/run/trustinstaller/journal.json"], timeout=30)
                first = json.loads(hostile.agent("status", "--json", timeout=60).stdout)
            time.sleep(0.1)
        gone = False
        deadline = time.monotonic() + USER_STORE_TIMEOUT + INSTALL_BOUND
        while not gone and time.monotonic() < deadline:
            gone = hostile.ns.run(["test", "-e", "/run/trustinstaller/journal.json"],
                                  timeout=30).returncode != 0  # fmt: skip
            time.sleep(0.2)
    finally:
        subprocess.run(["pkill", "-TERM", "-s", str(serve.pid)], check=False)
        _, err = serve.communicate(timeout=120)
    assert first is not None, f"the daemon never answered: {err[-2000:]}"
    assert first["state"] == "failed", first
    assert pending is not None
    assert pending.returncode == 0, "no user part was left for later"
    stores = {e["store"] for e in json.loads(pending.stdout)["entries"]}
    assert stores, pending.stdout
    assert all(s.startswith("nss:") for s in stores), stores
    assert gone, "the user's part of the journal was never undone"
    assert "install_rolled_back" in err, err[-2000:]
