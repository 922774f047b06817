"""A browser user who traces or breaks its own certutil cannot hang the install or veto it for
the other stores, run for real.

Each test is an attack that once worked; it states the behaviour that should hold, and fails
while the attack works. Everything runs in a
private mount namespace with a throwaway browser user (tests/support/browseruser.py); the host's
trust store and /root are never touched.
"""

from __future__ import annotations

import shutil
import subprocess
import textwrap
import time
from pathlib import Path

import pytest

from tests.support.hostile import CERTUTIL_TIMEOUT, INSTALL_BOUND, Hostile

pytestmark = pytest.mark.root

# The user's tracer lets go after this, so a hung install ends and the test with it.
TRACER_LIFETIME = INSTALL_BOUND + 60

# A PKCS #11 "module" the user names in its own pkcs11.txt. certutil, run as the user by the
# daemon, dlopens it: its constructor runs inside the daemon's child. Under Yama
# ptrace_scope=1 it lets any process of the user trace it (PR_SET_PTRACER_ANY), says its pid,
# and waits (at most 5 s) until the user's tracer is attached.
MODULE_C = r"""
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>
#ifndef PR_SET_PTRACER
#define PR_SET_PTRACER 0x59616d61
#endif
__attribute__((constructor)) static void init(void) {
    prctl(PR_SET_PTRACER, (unsigned long)-1, 0, 0, 0);
    char buf[32];
    int n = snprintf(buf, sizeof buf, "%d\n", getpid());
    int fd = open(PIDFILE ".tmp", O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd >= 0) { write(fd, buf, n); close(fd); rename(PIDFILE ".tmp", PIDFILE); }
    for (int i = 0; i < 100; i++) {
        char st[4096];
        int f = open("/proc/self/status", O_RDONLY);
        if (f < 0) break;
        int r = read(f, st, sizeof st - 1);
        close(f);
        if (r <= 0) break;
        st[r] = 0;
        char *t = strstr(st, "TracerPid:");
        if (t && strtol(t + 10, 0, 10) != 0) break;
        usleep(50000);
    }
}
"""

# The user's tracer: seize each pid the module announces, never wait for it. A traced child's
# exit is reported to its tracer only; its real parent (the daemon) cannot reap it until the
# tracer does, or lets go.
TRACER_PY = textwrap.dedent("""
    import ctypes, os, sys, time
    libc = ctypes.CDLL(None, use_errno=True)
    pidfile, lifetime = sys.argv[1], float(sys.argv[2])
    end = time.monotonic() + lifetime
    seen = set()
    while time.monotonic() < end:
        try:
            pid = int(open(pidfile).read())
        except (OSError, ValueError):
            time.sleep(0.01)
            continue
        if pid not in seen:
            seen.add(pid)
            rc = libc.ptrace(0x4206, pid, 0, 0)  # PTRACE_SEIZE
            print("seized", pid, rc, ctypes.get_errno(), flush=True)
        time.sleep(0.01)
""")


def _build_module(hostile: Hostile, pidfile: Path) -> Path:
    """Compile the user's module into its home, as the user would."""
    cc = shutil.which("cc") or shutil.which("gcc")
    # Not skipped: make test installs gcc (packaging/install-deps.sh).
    assert cc is not None, "no C compiler: run packaging/install-deps.sh"
    src = hostile.user.home / "mod.c"
    src.write_text(MODULE_C)
    lib = hostile.user.home / "libmod.so"
    subprocess.run([cc, "-shared", "-fPIC", f'-DPIDFILE="{pidfile}"', "-o", str(lib), str(src)],
                   check=True, timeout=60)  # fmt: skip
    shutil.chown(lib, hostile.user.uid, hostile.user.uid)
    lib.chmod(0o755)
    return lib


def test_a_user_tracing_its_own_certutil_cannot_hang_the_install(hostile: Hostile) -> None:
    """An install ends within its timeouts even when the browser user ptraces its certutil.

    The user names its own library in ~/.pki/nssdb/pkcs11.txt; the certutil that the daemon
    runs as the user loads it, allows the user to trace it, and the user's tracer seizes it and
    never waits. The exited certutil is then hidden from the daemon, whose wait() has no
    timeout after the kill: the install, the install lock and (at the next start) the
    journal's recovery would hang for as long as the tracer lives.
    """
    home = hostile.user.home
    pidfile = home / "certutil.pid"
    lib = _build_module(hostile, pidfile)
    hostile.module_db(home / ".pki" / "nssdb", lib)
    argv = ["/usr/bin/python3", "-c", TRACER_PY, str(pidfile), str(TRACER_LIFETIME)]
    tracer = hostile.ns.popen(
        hostile.user.argv(argv), stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        start = time.monotonic()
        try:
            done = hostile.agent("apply", str(hostile.manifest), timeout=INSTALL_BOUND)
            outcome = f"exit {done.returncode}: {done.stderr[-500:]}"
        except subprocess.TimeoutExpired:
            outcome = "still running: killed"
        took = time.monotonic() - start
    finally:
        tracer.kill()
        out, _ = tracer.communicate(timeout=30)
    assert b"seized" in out, f"the tracer never attached: {out!r}"
    assert took < INSTALL_BOUND, (
        f"apply took {took:.0f} s with certutil_timeout={CERTUTIL_TIMEOUT} ({outcome}); "
        f"tracer: {out.decode(errors='replace').strip()}"
    )


def test_a_browser_user_cannot_veto_the_install_for_the_other_stores(hostile: Hostile) -> None:
    """A browser user who breaks its own home does not keep the session's CA from the OS store.

    ``touch ~/.local`` (a file where a directory is expected) makes the user-side mkdir of
    ~/.local/share/pki fail; that one store failing rolls back every store, so the OS store,
    root's database and the runtime environment never get the CA and the session never locks,
    at every retry, for as long as the file stays. The user's own databases are its business;
    the other stores are not.
    """
    home = hostile.user.home
    assert hostile.as_user(f"touch {home}/.local").returncode == 0
    done = hostile.agent("apply", str(hostile.manifest), timeout=INSTALL_BOUND)
    status = hostile.agent("status", "--json", timeout=60)
    bundle = hostile.ns.run(["cat", "/etc/ssl/certs/ca-certificates.crt"])
    ca_pem_line = Path(hostile.manifest.with_name("ca.pem")).read_text().splitlines()[1]
    in_os_bundle = ca_pem_line in bundle.stdout
    assert in_os_bundle, (
        f"the OS bundle lacks the CA after apply (exit {done.returncode}): "
        f"{done.stderr[-600:]}\nstatus: {status.stdout[-600:]}"
    )
