"""A browser user's helper that answers for its certutil, or feeds its rollback, neither vetoes
the install nor keeps the CA behind or the daemon from starting, run for real.

Each test is an attack that once worked; it states the behaviour that should hold, and fails
while the attack works. Everything runs in a private
mount namespace with a throwaway browser user (tests/support/browseruser.py); the host's trust
store and /root are never touched.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.support.attack import gcc
from tests.support.hostile import INSTALL_BOUND, Hostile

pytestmark = pytest.mark.root


# The user's feeder: it finds each helper that the daemon runs as the user (``python3 -I -S -
# OP ...``: the user's own process, which the threat model lets it trace), attaches to it, and
# replaces the helper's first write to stdout by bytes of its choosing. Nothing is loaded into
# the helper and no file is involved: what reaches the daemon is what the user wrote.
FEED_C = r"""
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/user.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

/* Replace the first write(1, ...) of traced process PID by LEN bytes of PAYLOAD, written over
   the buffer it was about to send; the process is told its own count went out. */
static int feed(pid_t pid, const char *payload, size_t len) {
    int st;
    if (ptrace(PTRACE_ATTACH, pid, 0, 0) != 0) return -1;
    if (waitpid(pid, &st, __WALL) < 0) return -2;
    ptrace(PTRACE_SETOPTIONS, pid, 0, PTRACE_O_TRACESYSGOOD);
    int sig = 0, in_write = 0;
    unsigned long long want = 0;
    for (;;) {
        if (ptrace(PTRACE_SYSCALL, pid, 0, sig) != 0) return -3;
        sig = 0;
        if (waitpid(pid, &st, __WALL) < 0) return -4;
        if (WIFEXITED(st) || WIFSIGNALED(st)) return -5;
        if (!WIFSTOPPED(st)) continue;
        if (WSTOPSIG(st) != (SIGTRAP | 0x80)) {
            if (WSTOPSIG(st) != SIGSTOP) sig = WSTOPSIG(st);
            continue;
        }
        struct user_regs_struct r;
        if (ptrace(PTRACE_GETREGS, pid, 0, &r) != 0) return -6;
        if (!in_write) {
            if ((long long)r.rax != -ENOSYS || r.orig_rax != SYS_write || r.rdi != 1) continue;
            char path[64];
            snprintf(path, sizeof path, "/proc/%d/mem", pid);
            int fd = open(path, O_RDWR);
            if (fd < 0) return -7;
            ssize_t n = pwrite(fd, payload, len, (off_t)r.rsi);
            close(fd);
            if (n != (ssize_t)len) return -8;
            want = r.rdx;
            r.rdx = len;
            ptrace(PTRACE_SETREGS, pid, 0, &r);
            in_write = 1;
        } else {
            r.rax = want;
            ptrace(PTRACE_SETREGS, pid, 0, &r);
            ptrace(PTRACE_DETACH, pid, 0, 0);
            return 0;
        }
    }
}

/* feed SECONDS MATCH PAYLOAD REPEAT: for SECONDS, each process of ours whose cmdline holds
   MATCH (NUL-separated arguments written with '|') gets PAYLOAD*REPEAT as its first stdout. */
int main(int argc, char **argv) {
    if (argc != 5) return 2;
    double end = now() + atof(argv[1]);
    char match[256];
    size_t mlen = strlen(argv[2]);
    if (mlen >= sizeof match) return 2;
    for (size_t i = 0; i < mlen; i++) match[i] = argv[2][i] == '|' ? 0 : argv[2][i];
    size_t plen = strlen(argv[3]), rep = (size_t)atol(argv[4]), len = plen * rep;
    char *payload = malloc(len + 1);
    for (size_t i = 0; i < rep; i++) memcpy(payload + i * plen, argv[3], plen);
    uid_t me = getuid();
    int seen[256], n = 0;
    while (now() < end) {
        DIR *proc = opendir("/proc");
        if (!proc) return 3;
        struct dirent *e;
        while ((e = readdir(proc))) {
            int pid = atoi(e->d_name);
            if (pid <= 0 || pid == getpid()) continue;
            char path[64], cmd[4096];
            struct stat sb;
            snprintf(path, sizeof path, "/proc/%d", pid);
            if (stat(path, &sb) != 0 || sb.st_uid != me) continue;
            int dup = 0;
            for (int i = 0; i < n; i++) dup |= seen[i] == pid;
            if (dup) continue;
            snprintf(path, sizeof path, "/proc/%d/cmdline", pid);
            int fd = open(path, O_RDONLY);
            if (fd < 0) continue;
            ssize_t got = read(fd, cmd, sizeof cmd);
            close(fd);
            if (got <= 0 || !memmem(cmd, (size_t)got, match, mlen)) continue;
            if (n < 256) seen[n++] = pid;
            int rc = feed(pid, payload, len);
            printf("%s %d rc=%d errno=%d\n", rc == 0 ? "fed" : "failed", pid, rc, errno);
            fflush(stdout);
        }
        closedir(proc);
        usleep(500);
    }
    return 0;
}
"""

# The arguments that mark the helper on its command line ('|' stands for NUL).
HELPER_MATCH = "|-I|-S|-|"


def _feeder(hostile: Hostile, seconds: float, text: str, count: int) -> subprocess.Popen[bytes]:
    """Start the feeder as the browser user; it gives each helper ``text * count`` to print."""
    tool = gcc(FEED_C, hostile.user.home / "feed")
    tool.chmod(0o755)
    argv = [str(tool), str(seconds), HELPER_MATCH, text, str(count)]
    return hostile.ns.popen(hostile.user.argv(argv), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)  # fmt: skip


def test_a_nested_answer_from_the_users_helper_does_not_veto_the_install(
    hostile: Hostile,
) -> None:
    """A browser user who feeds its helper's answer deep JSON nesting does not veto the install.

    The daemon parses the helper's stdout with ``json.loads`` and catches ValueError only; 3000
    nested ``[`` (printed by the user's own helper, which the user traces) raise RecursionError,
    which is no TrustInstallerError, so the optional-store path does not apply: every store
    rolls back and the session never locks. The user's own databases are its business; the OS
    store is not.
    """
    feeder = _feeder(hostile, INSTALL_BOUND, "[", 3000)
    try:
        done = hostile.agent("apply", str(hostile.manifest), timeout=INSTALL_BOUND)
    finally:
        feeder.kill()
        log, _ = feeder.communicate(timeout=30)
    assert b"fed" in log, f"the feeder never reached a helper: {log!r}"
    status = hostile.agent("status", "--json", timeout=60)
    state = json.loads(status.stdout or "{}").get("state")
    bundle = hostile.ns.run(["cat", "/etc/ssl/certs/ca-certificates.crt"]).stdout
    ca_line = Path(hostile.manifest.with_name("ca.pem")).read_text().splitlines()[1]
    fed = log.decode(errors="replace")
    why = f"apply exit {done.returncode}: {done.stderr[-800:]}\nfeeder: {fed}"
    assert state == "locked", why
    assert ca_line in bundle, why


def test_a_fed_rollback_neither_leaves_the_ca_behind_nor_keeps_the_daemon_from_starting(
    hostile: Hostile,
) -> None:
    """After a failed install nothing of it stays installed, and the next start still gets ready.

    The user's helper is fed deep nesting during the rollback too (its ``remove`` step): the
    RecursionError escapes the optional-store guard, which catches StoreError and HostError only,
    so the stores after it in the rollback (the OS store) keep the CA while the status says
    ``failed`` ("nothing installed"), the journal stays, and every later start's recovery, fed
    again, dies before ``serve`` is ready: the session never locks.
    """
    feeder = _feeder(hostile, 2 * INSTALL_BOUND, "[", 3000)
    try:
        hostile.agent("apply", str(hostile.manifest), timeout=INSTALL_BOUND)
        status = hostile.agent("status", "--json", timeout=60)
        state = json.loads(status.stdout or "{}").get("state")
        bundle = hostile.ns.run(["cat", "/etc/ssl/certs/ca-certificates.crt"]).stdout
        ca_line = Path(hostile.manifest.with_name("ca.pem")).read_text().splitlines()[1]
        journal = hostile.ns.run(["test", "-e", "/run/trustinstaller/journal.json"]).returncode
        try:
            serve = hostile.agent("serve", timeout=20)
            served = f"serve exited {serve.returncode}: {serve.stderr[-600:]}"
        except subprocess.TimeoutExpired:
            served = "ready"  # it served until the timeout: it started
    finally:
        feeder.kill()
        log, _ = feeder.communicate(timeout=30)
    assert b"fed" in log, f"the feeder never reached a helper: {log!r}"
    problems = []
    if state != "locked" and ca_line in bundle:
        problems.append(f"state {state!r}, yet the OS bundle holds the CA")
    if journal == 0 and state != "installing":
        problems.append("the journal outlived the failed install")
    if served != "ready":
        problems.append(served)
    assert not problems, "\n".join(problems) + f"\nfeeder: {log.decode(errors='replace')}"
