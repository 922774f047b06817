"""A user's step is contained: its own task and memory limits, and nothing of it outlives it.

Everything a step runs as a browser user (a certutil that loads the user's PKCS #11 module, say)
runs in a PID namespace and a cgroup of its own where the host allows it (trustinstaller/
_contain.py). These tests run real processes as a real second uid; the attack at the end is the
one that vetoed the install for everyone: the user's module forks until the service's task
limit is full, so that root's update-ca-certificates cannot fork.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.attack import gcc
from tests.support.hostile import INSTALL_BOUND, Hostile
from trustinstaller import _contain, _run
from trustinstaller.errors import HostError

pytestmark = pytest.mark.root


NOBODY = _run.Account("nobody", 65534, 65534, Path("/nonexistent"))

# /proc/self/cgroup and the cgroup lines of /proc/self/mountinfo, as hosts show them.
HYBRID_CGROUP = "8:pids:/svc\n4:memory:/m/svc\n1:cpu:/\n0::/svc\n"
HYBRID_MOUNTS = (
    "31 23 0:28 / /sys/fs/cgroup rw - tmpfs tmpfs ro\n"
    "35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n"
    "39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids\n"
    "32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu\n"
    "41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n"
)
V2_MOUNTS = "30 23 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n"


@pytest.mark.parametrize(
    ("proc_cgroup", "mountinfo", "expected"),
    [
        (
            HYBRID_CGROUP,
            HYBRID_MOUNTS,
            [
                (1, frozenset({"pids"}), Path("/sys/fs/cgroup/pids/svc")),
                (1, frozenset({"memory"}), Path("/sys/fs/cgroup/memory/m/svc")),
                (2, frozenset(), Path("/sys/fs/cgroup/unified/svc")),
            ],
        ),
        # Pure v2, under systemd: one line, one mount.
        (
            "0::/system.slice/trustinstaller.service\n",
            V2_MOUNTS,
            [(2, frozenset(), Path("/sys/fs/cgroup/system.slice/trustinstaller.service"))],
        ),
        # A container's cgroup namespace: the mount's root is our own cgroup.
        (
            "0::/\n",
            "30 23 0:26 /docker/abc /sys/fs/cgroup ro - cgroup2 cgroup2 rw\n",
            [(2, frozenset(), Path("/sys/fs/cgroup"))],
        ),
        (
            "5:memory:/docker/abc/x\n",
            "35 31 0:32 /docker/abc /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n",
            [(1, frozenset({"memory"}), Path("/sys/fs/cgroup/memory/x"))],
        ),
        # No cgroup filesystem mounted, or none with our controllers: nothing.
        (HYBRID_CGROUP, "22 1 0:21 / /proc rw - proc proc rw\n", []),
        ("1:cpu,cpuacct:/x\n", HYBRID_MOUNTS, []),
        ("garbage\n\n", HYBRID_MOUNTS, []),
    ],
)
def test_own_cgroups_are_found_from_proc(
    proc_cgroup: str, mountinfo: str, expected: list[tuple[int, frozenset[str], Path]]
) -> None:
    assert _contain.hierarchies(proc_cgroup, mountinfo) == expected


def _modes() -> dict[str, _contain.Containment]:
    """Each way this host can contain a step, and the fallback with neither."""
    full = _contain.detect()
    assert full.unshare is not None, "this host can make PID namespaces: the test needs one"
    assert any("pids" in h.controllers for h in full.hierarchies), full.describe()
    return {
        "namespace and cgroups": full,
        "namespace only": _contain.Containment(full.unshare, True, ()),
        "cgroups only": _contain.Containment(None, True, full.hierarchies),
    }


@pytest.fixture(params=["namespace and cgroups", "namespace only", "cgroups only"])
def mode(request: pytest.FixtureRequest) -> Iterator[_contain.Containment]:
    chosen = _modes()[request.param]
    saved = _contain._found
    _contain._found = chosen
    try:
        yield chosen
    finally:
        _contain._found = saved


def _marker() -> str:
    """A sleep duration no other process here uses, to find the user's leftovers by."""
    return f"3600.{random.randrange(10**8):08d}"


def _left(marker: str) -> list[str]:
    done = subprocess.run(["pgrep", "-f", f"sleep {marker}"], capture_output=True, text=True,
                          check=False)  # fmt: skip
    return done.stdout.split()


def test_a_step_that_detaches_leaves_nothing_behind(mode: _contain.Containment) -> None:
    """A process that leaves the step's session (setsid) is gone once the step has ended."""
    marker = _marker()
    script = f"setsid sleep {marker} </dev/null >/dev/null 2>&1 & sleep 0.2; id -u"
    done = _run.run(["sh", "-c", script], user=NOBODY)
    assert done.stdout.strip() == str(NOBODY.uid)
    deadline = time.monotonic() + 5
    while _left(marker) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _left(marker) == []


def test_a_step_killed_at_its_timeout_leaves_nothing_behind(mode: _contain.Containment) -> None:
    marker = _marker()
    script = f"setsid sleep {marker} </dev/null >/dev/null 2>&1 & exec sleep {marker}"
    with pytest.raises(_run.HostError, match="timed out after 1 s and was killed"):
        _run.run(["sh", "-c", script], user=NOBODY, timeout=1)
    assert _left(marker) == []


def test_a_step_runs_as_the_user_with_its_limits(mode: _contain.Containment) -> None:
    """The dropped step: the user's uid and gid, no other group, in its cgroups."""
    script = (
        "id -u; id -g; id -G; grep -E '^(Uid|Gid|Groups):' /proc/self/status; cat /proc/self/cgroup"
    )
    out = _run.run(["sh", "-c", script], user=NOBODY).stdout.splitlines()
    assert out[:3] == [str(NOBODY.uid), str(NOBODY.gid), str(NOBODY.gid)]
    assert out[3].split()[1:] == [str(NOBODY.uid)] * 4
    assert out[4].split()[1:] == [str(NOBODY.gid)] * 4
    assert out[5].split() == ["Groups:"]
    for h in mode.hierarchies:
        line = next(x for x in out[6:] if _controller_matches(x, h))
        step = Path(line.split(":", 2)[2])
        assert step.name.startswith("trustinstaller-step-"), line
        assert step.parent.name == f"trustinstaller-user-{NOBODY.uid}", line
        if "pids" in h.controllers:
            assert not (h.path / step.parent.name / step.name).exists()  # removed after it
    # And the limits are the user's, on the cgroup that holds the step's.
    seen = _limits_while_running(mode)
    if any("pids" in h.controllers for h in mode.hierarchies):
        assert seen["pids.max"] == str(_contain.TASKS_MAX)
    if any("memory" in h.controllers for h in mode.hierarchies):
        assert int(seen["memory"]) == _contain.MEMORY_MAX
        # No swap beyond it: v2 gives none, v1 bounds memory and swap together.
        if "swap" in seen:
            assert int(seen["swap"]) in (0, _contain.MEMORY_MAX), seen


def _controller_matches(line: str, h: _contain.Hierarchy) -> bool:
    names = line.split(":", 2)[1].split(",") if line.count(":") >= 2 else []
    if h.version == 2:
        return line.startswith("0::")
    return bool(h.controllers & set(names))


def _limits_while_running(mode: _contain.Containment) -> dict[str, str]:
    """The limits over a step's cgroups: its user's."""
    cell_seen: dict[str, str] = {}
    cell = mode.cell(NOBODY.uid)
    try:
        for h, d in cell.dirs:
            if "pids" in h.controllers:
                cell_seen["pids.max"] = (d.parent / "pids.max").read_text().strip()
            if "memory" in h.controllers:
                name = "memory.max" if h.version == 2 else "memory.limit_in_bytes"
                cell_seen["memory"] = (d.parent / name).read_text().strip()
                swap = "memory.swap.max" if h.version == 2 else "memory.memsw.limit_in_bytes"
                if (d.parent / swap).exists():
                    cell_seen["swap"] = (d.parent / swap).read_text().strip()
    finally:
        assert mode.release(cell).removed
    return cell_seen


def test_a_fork_bomb_in_a_step_stops_at_its_task_limit() -> None:
    """The step's forks fail at TASKS_MAX, and root's own fork still works meanwhile."""
    full = _modes()["namespace and cgroups"]
    saved = _contain._found
    _contain._found = full
    try:
        marker = _marker()
        # The system's Python, which any uid may run: fork until fork fails, count, hold.
        script = (
            "import os, sys, time\n"
            "n = 0\n"
            "while n < 500:\n"
            "    try:\n"
            "        pid = os.fork()\n"
            "    except OSError:\n"
            "        break\n"
            "    if pid == 0:\n"
            f"        os.execvp('sleep', ['sleep', '{marker}'])\n"
            "    n += 1\n"
            "print(n)\n"
        )
        done = _run.run(["/usr/bin/python3", "-c", script], user=NOBODY, check=False, timeout=60)
    finally:
        _contain._found = saved
    forked = int(done.stdout.strip() or "0")
    # Python itself holds a task or more; the rest are the sleeps it could start.
    assert 0 < forked < _contain.TASKS_MAX, done
    assert _left(marker) == []


# The user's module: in every certutil that opens the user's database, it starts a detached
# process (a session of its own) that forks until fork fails, and holds every child. Without a
# task limit of the step's own, that fills the service's: root's update-ca-certificates then
# cannot fork, nor can its rollback.
BOMB_C = r"""
#include <signal.h>
#include <string.h>
#include <fcntl.h>
#include <unistd.h>
__attribute__((constructor)) static void bomb(void) {
    char comm[32] = "";
    int fd = open("/proc/self/comm", O_RDONLY);
    if (fd >= 0) { if (read(fd, comm, sizeof comm - 1) < 0) comm[0] = 0; close(fd); }
    if (strncmp(comm, "certutil", 8) != 0) return;
    if (fork() != 0) return;
    setsid();
    for (int i = 0; i < 100000; i++) {
        pid_t p = fork();
        if (p == 0) { for (;;) pause(); }
        if (p < 0) usleep(1000);
    }
    for (;;) pause();
}
"""

# Stands in for the unit's TasksMax: the daemon, its threads and every child count here.
SERVICE_TASKS = 200


@pytest.mark.slow
def test_a_users_fork_bomb_cannot_veto_the_install(hostile: Hostile) -> None:
    """With the service's task limit full of the user's processes, root still installs.

    The agent runs in a pids cgroup of its own (the unit's TasksMax, in small). The browser
    user's module forks without end in every certutil run as the user. The install must lock
    with the CA in the OS store, and none of the user's processes may be left afterwards.
    """
    pids_root = Path("/sys/fs/cgroup/pids")
    assert (pids_root / "cgroup.procs").exists(), "no pids cgroup hierarchy here"
    home = hostile.user.home
    lib = gcc(BOMB_C, home / "libbomb.so", "-shared", "-fPIC")
    lib.chmod(0o755)
    hostile.module_db(home / ".pki" / "nssdb", lib)
    # The user's own certutil just ran the module too: let that bomb go before the install.
    _kill_user(hostile.user.uid)
    service = pids_root / f"ti-test-service-{os.getpid()}-{random.randrange(10**6)}"
    service.mkdir()
    try:
        (service / "pids.max").write_text(f"{SERVICE_TASKS}\n")
        enter = 'echo $$ > "$1/cgroup.procs" && shift && exec "$@"'
        done = hostile.ns.run(
            [
                "sh",
                "-c",
                enter,
                "sh",
                str(service),
                *hostile.agent_argv("apply", str(hostile.manifest)),
            ],
            timeout=INSTALL_BOUND * 2,
        )
        status = hostile.agent("status", timeout=30)
        left = _user_pids(hostile.user.uid)
        in_service = (service / "cgroup.procs").read_text().split()
    finally:
        _kill_user(hostile.user.uid)
        _remove(service)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "state: locked" in status.stdout, status.stdout
    assert "-> os," in status.stdout, status.stdout
    assert left == [], f"the user's processes outlived the install: {len(left)}"
    assert in_service == [], in_service


def _user_pids(uid: int) -> list[str]:
    done = subprocess.run(["pgrep", "-U", str(uid)], capture_output=True, text=True, check=False)
    return done.stdout.split()


def _kill_user(uid: int) -> None:
    for _ in range(50):
        if not _user_pids(uid):
            return
        subprocess.run(["pkill", "-KILL", "-U", str(uid)], check=False)
        time.sleep(0.1)


def _remove(cgroup: Path) -> None:
    for child in cgroup.iterdir():
        if child.is_dir():
            _remove(child)
    for _ in range(50):
        pids = (cgroup / "cgroup.procs").read_text().split()
        if not pids:
            break
        for pid in pids:
            subprocess.run(["kill", "-KILL", pid], check=False)
        time.sleep(0.1)
    cgroup.rmdir()


# A step can leave a charge behind that outlives its processes, through a process of the
# user's outside the step: the pages of a memfd it passed out, or zombies of children that the
# user's tracer seized and never waits for. The kernel keeps such a charge on the removed step
# cgroup, and so on every cgroup above it. Each attack below runs several steps as a real second
# uid, through the real _run.run, from a stand-in for the service (a cgroup of its own): what
# stays charged to the service must stay within the user's one limit, however many steps.
DRIVER = """
import json, os, sys
from pathlib import Path
from trustinstaller import _contain, _run, log
from trustinstaller.errors import HostError
service, steps, script = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
(service / "cgroup.procs").write_text(f"{os.getpid()}\\n")
_contain.MEMORY_MAX = int(sys.argv[4])
log.configure(sys.stderr, json=True)
user = _run.Account("nobody", 65534, 65534, Path("/nonexistent"))
for _ in range(steps):
    try:
        _run.run(["/usr/bin/python3", "-c", script], user=user, timeout=10, check=False)
    except HostError as exc:
        print(json.dumps({"event": "step_failed", "error": str(exc)}), file=sys.stderr)
try:
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    forked = True
except OSError:
    forked = False
print(json.dumps({"found": _contain.detect().describe(), "forked": forked}), flush=True)
sys.stdin.read()  # stay in the service until its charge has been read
"""

MIB = 1024 * 1024


def _own_cgroup(controller: str) -> Path:
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, names, path = line.split(":", 2)
        if controller in names.split(","):
            return Path("/sys/fs/cgroup") / controller / path.lstrip("/")
    pytest.skip(f"no {controller} cgroup v1 hierarchy here")


def _outside(script: str, cgroup: Path | None = None) -> subprocess.Popen[str]:
    """The user's own process, outside every step and outside the service; it says ready."""
    enter = f'echo $$ > "{cgroup}/cgroup.procs" && ' if cgroup is not None else ""
    proc = subprocess.Popen(
        ["/bin/sh", "-c", enter + 'exec setpriv --reuid 65534 --regid 65534 --clear-groups '
         '/usr/bin/python3 -c "$0"', script],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)  # fmt: skip
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    return proc


def _drive(
    service: Path, steps: int, script: str, memory_max: int = MIB * 256
) -> tuple[subprocess.Popen[str], dict[str, object]]:
    """Run ``steps`` steps from inside ``service``; the driver stays there until told to go."""
    repo = Path(__file__).resolve().parents[1]
    driver = subprocess.Popen(
        [sys.executable, "-c", DRIVER, str(service), str(steps), script, str(memory_max)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        cwd=repo, env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "PYTHONPATH": str(repo)},
    )  # fmt: skip
    assert driver.stdout is not None
    line = driver.stdout.readline()
    assert line, driver.communicate(timeout=30)
    return driver, json.loads(line)


def _stop(*procs: subprocess.Popen[str] | None) -> None:
    for p in procs:
        if p is not None:
            p.kill()
            p.communicate(timeout=30)  # and close its pipes


def _logged(driver: subprocess.Popen[str]) -> list[dict[str, object]]:
    _, err = driver.communicate(input="", timeout=60)
    return [json.loads(x) for x in err.splitlines() if x.startswith("{")]


PIN = 48 * MIB  # what each step pins
PIN_LIMIT = 64 * MIB  # the user's memory limit here, smaller than MEMORY_MAX to spare the host
PIN_STEP = """
import os, socket
fd = os.memfd_create("pin")
chunk = b"x" * (1024 * 1024)
for _ in range(PIN // len(chunk)):
    os.write(fd, chunk)
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect(SOCK)
socket.send_fds(s, [b"m"], [fd])
s.recv(1)
"""
PIN_HOLDER = """
import os, socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.bind(SOCK); s.listen(16)
print("ready", flush=True)
held = []
while True:
    c, _ = s.accept()
    _, fds, _, _ = socket.recv_fds(c, 1, 1)
    held += fds
    c.send(b"k"); c.close()
"""


@contextlib.contextmanager
def _pinning() -> Iterator[tuple[Path, Path, str]]:
    """A stand-in for the service and a cgroup for the user's own process outside it, both in
    the memory hierarchy, and the socket on which a step passes its memfd out; removed after."""
    mem = _own_cgroup("memory")
    tag = f"{os.getpid()}-{random.randrange(10**6)}"
    sock = f"SOCK = {chr(0) + 'ti-pin-' + tag!r}\n"
    service, outside = mem / f"ti-test-service-{tag}", mem / f"ti-test-user-{tag}"
    service.mkdir()
    outside.mkdir()
    try:
        yield service, outside, sock
    finally:
        _remove(service)
        _remove(outside)


def test_memory_a_step_passes_out_stays_within_the_users_limit() -> None:
    """Four steps each pass a 48 MiB memfd to the user's process outside: the service carries
    at most the user's one limit of it, not four steps' worth, and the log says so."""
    holder = driver = None
    with _pinning() as (service, outside, sock):
        try:
            holder = _outside(sock + PIN_HOLDER, outside)
            driver, found = _drive(service, 4, f"{sock}PIN = {PIN}\n{PIN_STEP}", PIN_LIMIT)
            assert "memory" in str(found["found"]["limits"]), found  # type: ignore[index]
            pinned = int((service / "memory.usage_in_bytes").read_text())
            users = [d for d in service.iterdir() if d.name.startswith("trustinstaller-user-")]
            logged = _logged(driver)
        finally:
            _stop(driver, holder)
    # Without the user's limit: 4 x 48 MiB = 192 MiB stayed charged to the service.
    assert pinned <= PIN_LIMIT + 16 * MIB, f"{pinned / MIB:.0f} MiB charged to the service"
    assert [d.name for d in users] == [f"trustinstaller-user-{NOBODY.uid}"]
    charged = [e for e in logged if e["event"] == "user_step_left_charged"]
    assert charged, logged
    assert int(str(charged[0]["memory_bytes"])) >= PIN * 0.9, logged
    assert found["forked"]


TRACE_CHILDREN = 60  # per step: under TASKS_MAX, but two steps' worth is over it
TRACE_STEP = f"""
import os, socket, time
for _ in range({TRACE_CHILDREN}):
    try:
        pid = os.fork()
    except OSError:
        break  # the user's limit is full: pin what we have
    if pid == 0:
        with open("/proc/self/comm", "w") as f:
            f.write(TAG)
        time.sleep(3600)
        os._exit(0)
time.sleep(0.3)
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect(SOCK)
s.send(b"go")
s.recv(1)  # the tracer has seized every child; then exit: the step's end kills the rest
"""
TRACER = """
import ctypes, os, socket, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
seized = set()
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.bind(SOCK); s.listen(16)
print("ready", flush=True)
while True:
    c, _ = s.accept(); c.recv(2)
    for p in os.listdir("/proc"):
        if not p.isdigit() or int(p) in seized:
            continue
        try:
            if open(f"/proc/{p}/comm").read().strip() != TAG:
                continue
        except OSError:
            continue
        if libc.ptrace(0x4206, int(p), None, None) == 0:  # PTRACE_SEIZE; never waited for
            seized.add(int(p))
    c.send(b"k"); c.close()
"""
SERVICE_TASKS_MAX = 140  # stands for the unit's TasksMax


@pytest.mark.slow
def test_zombies_a_users_tracer_holds_stay_within_the_users_limit() -> None:
    """Three steps each fork 60 children that the user's tracer seizes and never waits for:
    their zombies keep their task charge, but only up to the user's one TASKS_MAX, so root
    can still fork in a service whose task limit is 140."""
    pids = _own_cgroup("pids")
    tag = f"{os.getpid()}-{random.randrange(10**6)}"
    head = f"SOCK = {chr(0) + 'ti-trace-' + tag!r}\nTAG = {'tz' + tag[-8:]!r}\n"
    service = pids / f"ti-test-service-{tag}"
    service.mkdir()
    tracer = driver = None
    try:
        (service / "pids.max").write_text(f"{SERVICE_TASKS_MAX}\n")
        tracer = _outside(head + TRACER)
        driver, found = _drive(service, 3, head + TRACE_STEP)
        assert "pids" in str(found["found"]["limits"]), found  # type: ignore[index]
        charged = int((service / "pids.current").read_text())
        logged = _logged(driver)
    finally:
        _stop(driver, tracer)
        _remove(service)
    # Without the user's limit: 139 of 140, and root's fork failed ("Cannot fork").
    assert found["forked"], "root could not fork in the service"
    assert charged <= _contain.TASKS_MAX + 8, f"{charged} tasks charged to the service"
    left = [e for e in logged if e["event"] == "user_step_left_charged"]
    assert left, logged
    assert max(int(str(e["tasks"])) for e in left) > 0, logged


def test_a_small_charge_keeps_the_users_cgroup_at_exit() -> None:
    """A step passes out an 8 MiB memfd and the agent exits: the user's cgroup stays, so that
    the next run counts the 8 MiB against the same limit. Removed, the charge would stay on
    the service with no limit over it, 8 MiB more for each run."""
    holder = driver = None
    with _pinning() as (service, outside, sock):
        user = service / f"trustinstaller-user-{NOBODY.uid}"
        try:
            holder = _outside(sock + PIN_HOLDER, outside)
            driver, _ = _drive(service, 1, f"{sock}PIN = {8 * MIB}\n{PIN_STEP}")
            _logged(driver)  # it exits, and removes what holds nothing
            kept = user.is_dir()
            charged = int((user / "memory.usage_in_bytes").read_text()) if kept else 0
            swap = user / "memory.memsw.limit_in_bytes"
            swap_max = int(swap.read_text()) if kept and swap.exists() else None
        finally:
            _stop(driver, holder)
    assert kept, "the user's cgroup was removed with 8 MiB still charged to it"
    assert charged >= 8 * MIB * 0.9, charged
    assert swap_max in (None, 256 * MIB), swap_max


OWNED_PROBE = """
import contextlib
import json
from trustinstaller import _contain
c = _contain.detect()
print(json.dumps({"found": c.describe(), "problem": c.problem}))
"""


@pytest.mark.parametrize("owned", ["own", "parent", "mode"])
def test_a_cgroup_a_user_controls_is_not_used(owned: str) -> None:
    """Root sits in a cgroup that a user owns, or under one (as ``sudo`` does in a user's
    delegated session): that user could move the steps out of their limits, or freeze and
    kill root. The agent uses no such cgroup, and says why."""
    pids = Path("/sys/fs/cgroup/pids")
    assert (pids / "cgroup.procs").exists(), "no pids cgroup hierarchy here"
    top = pids / f"ti-test-owned-{os.getpid()}-{random.randrange(10**6)}"
    inner = top / "session"
    inner.mkdir(parents=True)
    try:
        target = inner if owned != "parent" else top
        if owned == "mode":  # root's, but anyone may move a process in
            target = inner / "cgroup.procs"
            target.chmod(0o666)
        else:
            for f in (target, target / "cgroup.procs"):
                os.chown(f, NOBODY.uid, NOBODY.gid)
        repo = Path(__file__).resolve().parents[1]
        done = subprocess.run(
            ["/bin/sh", "-c", 'echo $$ > "$1/cgroup.procs" && shift && exec "$@"', "sh",
             str(inner), sys.executable, "-c", OWNED_PROBE],
            capture_output=True, text=True, timeout=60, cwd=repo, check=False,
            env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "PYTHONPATH": str(repo)},
        )  # fmt: skip
    finally:
        _remove(top)
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    assert str(pids) not in str(seen["found"]["cgroup"]), seen
    assert str(seen["problem"]).startswith(str(target)), seen
    why = "writable by others than root" if owned == "mode" else f"belongs to uid {NOBODY.uid}"
    assert why in str(seen["problem"]), seen


def test_a_step_whose_cgroup_cannot_be_made_does_not_run() -> None:
    """Where the limits live in a cgroup that refuses a step's (here: it is gone), the step
    is not run without them: the caller gets an error, and the command never starts."""
    full = _modes()["namespace and cgroups"]
    gone = Path("/sys/fs/cgroup/pids") / f"ti-test-gone-{os.getpid()}"
    broken = _contain.Containment(
        full.unshare, True, (_contain.Hierarchy(1, frozenset({"pids"}), gone),)
    )
    saved = _contain._found
    _contain._found = broken
    where = Path(tempfile.mkdtemp(prefix="ti-test-ran-"))
    where.chmod(0o777)  # the user could make the marker, had the step run
    marker = where / "ran"
    try:
        with pytest.raises(HostError, match="limits would not hold"):
            _run.run(["sh", "-c", f"touch {marker}"], user=NOBODY)
        ran = marker.exists()
    finally:
        _contain._found = saved
        shutil.rmtree(where)
    assert not ran


def test_a_step_name_left_by_an_earlier_run_is_not_reused() -> None:
    """A step's cgroup left by an earlier run with our PID (its members would not go) is
    skipped for a fresh name, not shared and not given up."""
    full = _modes()["namespace and cgroups"]
    c = _contain.Containment(full.unshare, True, full.hierarchies)
    h = next(x for x in c.hierarchies if "pids" in x.controllers)
    user = c._user(h, NOBODY.uid)
    assert user is not None
    taken = [user / f"trustinstaller-step-{os.getpid()}-{n}" for n in range(2)]
    for d in taken:
        d.mkdir()
    try:
        cell = c.cell(NOBODY.uid)
        made = [d for x, d in cell.dirs if x == h]
        assert made, cell
        assert made[0] not in taken, made
        assert c.release(cell).removed
    finally:
        for d in taken:
            d.rmdir()


def test_a_users_cgroup_another_run_removed_is_made_again() -> None:
    """Two runs of the agent share a cgroup (a daemon and a `verify` by hand, in a container):
    one removes the user's cgroup at its exit, and the other's next step makes it again."""
    full = _modes()["namespace and cgroups"]
    c = _contain.Containment(full.unshare, True, full.hierarchies)
    assert c.release(c.cell(NOBODY.uid)).removed
    for h in c.hierarchies:
        with contextlib.suppress(OSError):
            (h.path / f"trustinstaller-user-{NOBODY.uid}").rmdir()  # as the other's close()
    cell = c.cell(NOBODY.uid)
    try:
        assert {h for h, _ in cell.dirs} == set(c.hierarchies), cell
    finally:
        assert c.release(cell).removed


EXIT_TRACER = """
import ctypes, os, socket, time
libc = ctypes.CDLL(None, use_errno=True)
libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.bind(SOCK); s.listen(4)
if CHAIN:
    # A second tracer above the first: it holds the first in its own exit stop, so that the
    # first, once killed, stays the step's tracer.
    first = os.fork()
    if first:
        assert libc.ptrace(0x4206, first, None, ctypes.c_void_p(0x40)) == 0
        print("ready", flush=True)
        while True:
            time.sleep(3600)
if not CHAIN:
    print("ready", flush=True)
held = []
while True:
    c, _ = s.accept()
    pid = int(c.recv(16))
    # PTRACE_SEIZE with PTRACE_O_TRACEEXIT: a killed tracee stops at its exit, and is never
    # let go; nor is it ever waited for.
    ok = libc.ptrace(0x4206, pid, None, ctypes.c_void_p(0x40)) == 0
    c.send(b"k" if ok else b"e"); held.append(c)
"""
EXIT_STEP = """
import os, socket, time
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect(SOCK)
# Our PID as the tracer sees it (outside any PID namespace): /proc is the host's.
nspid = [x for x in open("/proc/self/status") if x.startswith("NSpid:")][0].split()[1]
s.send(nspid.encode())
assert s.recv(1) == b"k"
os.execvp("sleep", ["sleep", MARKER])
"""


@pytest.mark.slow
@pytest.mark.parametrize("chain", [False, True], ids=["one tracer", "a chain of two"])
@pytest.mark.parametrize("how", ["namespace and cgroups", "cgroups only"])
def test_a_users_tracer_cannot_keep_a_killed_step_alive(how: str, chain: bool) -> None:
    """The user's own process traces the step with an exit stop it never lets go: the step,
    killed at its timeout, would stay a live task in its cgroup for as long as the tracer
    likes. The step's end ends that tracer (the user's own process) too, and the tracer that
    holds it in turn, and nothing of the step is left."""
    chosen = _modes()[how]
    marker = _marker()
    tag = f"{os.getpid()}-{random.randrange(10**6)}"
    head = f"SOCK = {chr(0) + 'ti-exit-' + tag!r}\nMARKER = {marker!r}\nCHAIN = {chain}\n"
    saved = _contain._found
    _contain._found = chosen
    tracer = None
    try:
        tracer = _outside(head + EXIT_TRACER)
        with pytest.raises(HostError, match="timed out"):
            _run.run(["/usr/bin/python3", "-c", head + EXIT_STEP], user=NOBODY, timeout=2)
        left = _left(marker)
        tracer_ended = tracer.wait(timeout=10)
    finally:
        _contain._found = saved
        _stop(tracer)
    assert left == [], f"the traced step outlived its end: {left}"
    assert tracer_ended == -signal.SIGKILL
