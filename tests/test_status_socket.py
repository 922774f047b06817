"""The status socket for socket_group, and a control socket that no group can reach.

Issue 17, attack 6: a user allowed to read the status through root's own socket could fill its
listen backlog by connecting and closing in a loop, and root's connect then failed at once with
EAGAIN. Here the browser user is uid 65534 in the group ``nogroup`` (socket_group), a real
second uid. It cannot run the venv's interpreter (/root is 0700), so what it does is done by
the system's python3 or by a small C program built with gcc in the test. Each daemon is a real
process, started by ``trustinstaller serve`` or handed its sockets the way systemd does.
"""

from __future__ import annotations

import contextlib
import fcntl
import grp
import json
import os
import signal
import socket
import stat
import struct
import subprocess
import sys
import sysconfig
import time
import tomllib
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

import trustinstaller
from tests.support.attack import gcc
from tests.support.browseruser import free_uid
from tests.support.daemon import Daemon, cli, put, request, write_config
from tests.support.peer import (
    SYSTEM_PYTHON,
    as_uid,
    client,
    exit_code_within,
    keepalive_polls,
    run_as,
)
from tests.system.conftest import NotifySocket, listening_socket, stop
from tests.system.test_units import PACKAGED_CONFIG, SOCKET, unit_settings
from trustinstaller import _acl
from trustinstaller.config import Config

pytestmark = pytest.mark.root

BROWSER = 65534  # nobody: the browser user, whose primary group is socket_group
GROUP = "nogroup"
STATUS_UNIT = "trustinstaller-status.socket"

# The attack, as the browser user: connect and close in a loop for as long as it runs, with
# non-blocking sockets (so a full backlog is EAGAIN at once, as it was for root); on SIGTERM,
# print how many connects were queued, found the backlog full, or failed otherwise (and the
# last such errno).
FLOOD_C = r"""
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

static volatile sig_atomic_t stop;
static void on_term(int sig) { (void)sig; stop = 1; }

int main(int argc, char **argv) {
    if (argc != 2) return 2;
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    strncpy(a.sun_path, argv[1], sizeof a.sun_path - 1);
    signal(SIGTERM, on_term);
    unsigned long ok = 0, full = 0, other = 0;
    int last = 0;
    while (!stop) {
        int s = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0);
        if (s < 0) return 3;
        if (connect(s, (struct sockaddr *)&a, sizeof a) == 0) ok++;
        else if (errno == EAGAIN) full++;
        else { other++; last = errno; }
        close(s);
    }
    printf("%lu %lu %lu %d\n", ok, full, other, last);
    return 0;
}
"""


@contextlib.contextmanager
def group_daemon(config: Config, d: Path, **changes: Any) -> Iterator[tuple[Daemon, Path, Path]]:
    """A daemon with socket_group = nogroup in ``d``: it, its config file and its status socket."""
    gid = grp.getgrnam(GROUP).gr_gid
    assert gid == BROWSER, "this test expects Debian's nogroup, gid 65534"
    sock = d / "ti.sock"
    cfg = write_config(replace(config, socket=sock, socket_group=GROUP, **changes), d / "c.toml")
    cfg.chmod(0o644)  # the browser user's CLI reads it
    with Daemon(cfg, sock) as daemon:
        yield daemon, cfg, d / "ti-status.sock"


def test_the_group_reads_the_status_but_cannot_reach_the_control_socket(
    config: Config, public_tmp: Path
) -> None:
    """A member of socket_group: EACCES on the control socket, the status on the status socket."""
    with group_daemon(config, public_tmp) as (daemon, _, status):
        control = daemon.socket_path
        st = control.lstat()
        assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o600, 0, 0)
        st = status.lstat()
        assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o660, 0, BROWSER)
        assert client(BROWSER, BROWSER, control) == ["EACCES"]
        assert client(BROWSER, BROWSER, status) == ["HTTP/1.1 200 OK", "open"]
        # Root reads the same document on either socket.
        assert request(status, "GET", "/v1/status") == request(control, "GET", "/v1/status")
        # Outside the group, neither.
        assert client(BROWSER, BROWSER - 1, status) == ["EACCES"]
        assert client(BROWSER, BROWSER + 1, status) == ["EACCES"]


def test_a_put_on_the_status_socket_is_refused_and_installs_nothing(
    config: Config, public_tmp: Path
) -> None:
    """PUT (from the group, or even from root) on the status socket is 405; the state stays open."""
    with group_daemon(config, public_tmp) as (daemon, _, status):
        for method in ("PUT", "POST"):
            line, error = client(BROWSER, BROWSER, status, method)
            assert line == "HTTP/1.1 405 Method Not Allowed", error
            assert "status socket, which answers GET /v1/status only" in error
        code, doc = put(status, b"{}")
        assert code == 405, doc
        assert daemon.status()["state"] == "open"
        # The control socket still takes root's manifest.
        code, doc = daemon.put(b"{}")
        assert (code, doc["state"]) == (200, "locked")
    log = daemon.log.read_text()
    assert '"reason": "status_socket"' in log
    assert '"event": "peer_refused"' in log


def test_cli_status_as_the_browser_user_reads_the_status_socket(
    config: Config, public_tmp: Path
) -> None:
    """``trustinstaller status`` as the group's member answers from the status socket."""
    paths = [str(Path(trustinstaller.__file__).parents[1]), sysconfig.get_paths()["purelib"]]
    run_cli = (
        f"import sys; sys.path[:0] = {paths!r}; from trustinstaller.cli import main; "
        "sys.exit(main(sys.argv[1:]))"
    )
    with group_daemon(config, public_tmp) as (daemon, cfg, status):
        done = run_as(BROWSER, BROWSER, SYSTEM_PYTHON, "-I", "-c", run_cli,
                      "--config", str(cfg), "status", timeout=120)  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        assert f"source: daemon, status socket {status}" in done.stdout, done.stdout
        assert "state: open" in done.stdout
        # Root asks the control socket.
        done = cli("--config", str(cfg), "status")
        assert done.returncode == 0, done.stderr
        assert "source: daemon\n" in done.stdout
        assert daemon.proc is not None
        assert daemon.proc.poll() is None


@pytest.mark.slow
def test_a_non_root_allowed_uid_gets_an_acl_entry_and_no_group_does(
    config: Config, public_tmp: Path
) -> None:
    """allowed_uids = [0, U]: U may connect and submit; the group's member still gets EACCES."""
    uid = free_uid(64200)
    with group_daemon(config, public_tmp, allowed_uids=(0, uid)) as (daemon, _, status):
        control = daemon.socket_path
        who = _acl.access(str(control))
        assert (who.owner, who.users, who.group, who.other) == (0, frozenset({uid}), False, False)
        # The ACL, not the group, lets U in: U's own gid is not the socket's group.
        assert client(uid, uid, control) == ["HTTP/1.1 200 OK", "open"]
        assert client(BROWSER, BROWSER, control) == ["EACCES"]
        assert client(uid + 1, uid + 1, control) == ["EACCES"]
        assert client(uid, uid, control, "PUT") == ["HTTP/1.1 200 OK", "locked"]
        # U is not in socket_group: the status socket is not U's.
        assert client(uid, uid, status) == ["EACCES"]


def flooders(tools: Path, target: Path, n: int = 2) -> list[subprocess.Popen[str]]:
    """``n`` flood processes as the browser user, connecting and closing on ``target``."""
    return [
        subprocess.Popen(
            as_uid(BROWSER, BROWSER, str(tools / "flood"), str(target)),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd="/",
            stdin=subprocess.DEVNULL,
        )
        for _ in range(n)
    ]


def flood_counts(procs: list[subprocess.Popen[str]]) -> list[list[int]]:
    """Stop the flood processes; each one's [queued, backlog full, other failures, last errno]."""
    counts = []
    for p in procs:
        p.send_signal(signal.SIGTERM)
        out, err = p.communicate(timeout=30)
        assert p.returncode == 0, err
        counts.append([int(x) for x in out.split()])
    return counts


@pytest.mark.slow
def test_a_flood_on_the_status_socket_does_not_fail_root_on_the_control_socket(
    config: Config, public_tmp: Path
) -> None:
    """Two connect+close loops as the browser user on the status socket; all of root's succeed.

    Root makes 40 connections on the control socket, then real ``status`` and ``submit`` runs.
    The flood must really fill the status socket's backlog (EAGAIN seen by the flood itself), or
    the test proves nothing.
    """
    flood = gcc(FLOOD_C, public_tmp / "flood")
    flood.chmod(0o755)
    with group_daemon(config, public_tmp) as (daemon, cfg, status):
        control = daemon.socket_path
        procs = flooders(public_tmp, status)
        try:
            time.sleep(1.0)  # the flood is running
            results: list[int | str] = []
            started = time.monotonic()
            for _ in range(40):
                try:
                    results.append(request(control, "GET", "/v1/status")[0])
                except OSError as exc:
                    results.append(type(exc).__name__)
            connects = time.monotonic() - started
            statuses = [cli("--config", str(cfg), "status") for _ in range(3)]
            empty = public_tmp / "empty.json"
            empty.write_text("{}")
            submits = [cli("--config", str(cfg), "submit", str(empty)) for _ in range(3)]
            # The same loops do defeat a socket they share: root's connects to the status socket.
            shared: list[int | str] = []
            for _ in range(40):
                try:
                    shared.append(request(status, "GET", "/v1/status")[0])
                except OSError as exc:
                    shared.append(type(exc).__name__)
        finally:
            counts = flood_counts(procs)
        alive = daemon.proc is not None and daemon.proc.poll() is None
    print(f"flood [queued, full, other, errno] per process: {counts}; root's 40 connects on the "
          f"control socket took {connects:.2f} s; on the status socket: {shared}")  # fmt: skip
    assert all(c[2] == 0 for c in counts), counts  # it reached the status socket, no EACCES
    assert sum(c[0] for c in counts) > 0, counts
    assert sum(c[1] for c in counts) > 0, f"the flood never filled the backlog: {counts}"
    assert results == [200] * 40, results
    for done in statuses:
        assert done.returncode == 0, done.stderr
        assert "source: daemon\n" in done.stdout, done.stdout
    assert [d.returncode for d in submits] == [0, 4, 4], [d.stderr for d in submits]
    assert not any("no daemon answered" in d.stderr + d.stdout for d in submits)
    assert alive


# -- socket activation: two named fds -------------------------------------------------------


def spawn_two(
    config: Path,
    fds: dict[str, socket.socket],
    notify: NotifySocket,
    *,
    log: Path,
    names: str | None = None,
    prefix: tuple[str, ...] = (),
    first: str = "",
) -> subprocess.Popen[bytes]:
    """Start ``serve`` as systemd does for its socket units: fds 3 and on, LISTEN_FDNAMES set.

    ``prefix`` execs the shell (``unshare``); ``first`` is shell run in it before the daemon,
    in the same process, so that LISTEN_PID=$$ is the daemon's own pid.
    """
    env = {**os.environ, "NOTIFY_SOCKET": str(notify.path)}
    for k in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        env.pop(k, None)
    # Above any fd the move could overwrite, then moved down to 3, 4, ... in the child.
    high = [fcntl.fcntl(s.fileno(), fcntl.F_DUPFD, 100) for s in fds.values()]
    moves = " ".join(f"{3 + i}<&{fd} {fd}<&-" for i, fd in enumerate(high))
    label = names if names is not None else ":".join(fds)
    listen = f"LISTEN_PID=$$ LISTEN_FDS={len(fds)} LISTEN_FDNAMES={label}"
    shell = f'{first}exec {moves}; {listen} exec "$@"'
    argv = [sys.executable, "-m", "trustinstaller", "--config", str(config), "serve"]
    try:
        with log.open("ab") as out:
            return subprocess.Popen(
                [*prefix, "bash", "-c", shell, "bash", *argv], env=env, stdin=subprocess.DEVNULL,
                stdout=out, stderr=out, pass_fds=high,
            )  # fmt: skip
    finally:
        for fd in high:
            os.close(fd)


@contextlib.contextmanager
def unit_sockets(d: Path) -> Iterator[dict[str, socket.socket]]:
    """The two sockets as the units make them: control 0600 root, status 0660 root:nogroup."""
    control, status = listening_socket(d / "c.sock"), listening_socket(d / "s.sock")
    (d / "c.sock").chmod(0o600)
    os.chown(d / "s.sock", 0, BROWSER)
    (d / "s.sock").chmod(0o660)
    fds = {"control": control, "status": status}
    try:
        yield fds
    finally:
        for s in (control, status, *fds.values()):
            s.close()


def test_activation_with_a_control_and_a_status_socket(config: Config, public_tmp: Path) -> None:
    """Two fds named control and status: each does its own job, and SIGTERM stops both."""
    cfg = write_config(replace(config, socket_group=GROUP), public_tmp / "c.toml")
    notify = NotifySocket(public_tmp / "notify.sock")
    with unit_sockets(public_tmp) as fds:
        proc = spawn_two(cfg, fds, notify, log=public_tmp / "d.log")
        try:
            notify.wait_for(lambda m: m.get("READY") == "1", proc=proc)
            control, status = public_tmp / "c.sock", public_tmp / "s.sock"
            assert client(BROWSER, BROWSER, status) == ["HTTP/1.1 200 OK", "open"]
            assert client(BROWSER, BROWSER, control) == ["EACCES"]
            assert client(BROWSER, BROWSER, status, "PUT")[0] == "HTTP/1.1 405 Method Not Allowed"
            assert put(status, b"{}")[0] == 405
            assert put(control, b"{}")[0] == 200
            assert client(BROWSER, BROWSER, status) == ["HTTP/1.1 200 OK", "locked"]
        finally:
            code = stop(proc)
            notify.close()
    assert code == 0
    log = (public_tmp / "d.log").read_text()
    assert '"event": "status_socket_ready"' in log
    # It served what it was given and bound nothing of its own.
    assert not config.socket.exists()
    assert not config.status_socket_path.exists()


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("unknown-name", "fd 4 from systemd is named 'bogus'"),
        ("two-controls", "systemd passed two control sockets"),
        ("no-control", "systemd passed no control socket"),
        ("status-datagram", "fd 4 (status) from systemd is AF_UNIX/SOCK_DGRAM"),
        ("open-control", "its group or others may connect; it must be 0600 root"),
        ("acl-on-read-only", "cannot let exactly the non-root allowed_uids"),
    ],
)
def test_activation_refuses_what_it_cannot_serve_safely(
    config: Config, public_tmp: Path, case: str, message: str
) -> None:
    """Unknown names, wrong kinds of socket, an open control socket: a named start-up error."""
    changes: dict[str, Any] = {}
    names, first = None, ""
    with unit_sockets(public_tmp) as fds:
        if case == "unknown-name":
            names = "control:bogus"
        elif case == "two-controls":
            names = "control:control"
        elif case == "no-control":
            fds.pop("control").close()
            names = "trustinstaller-status.socket"  # systemd's name for a unit that sets none
        elif case == "status-datagram":
            fds["status"].close()
            fds["status"] = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            fds["status"].bind(str(public_tmp / "dgram.sock"))
        elif case == "open-control":
            (public_tmp / "c.sock").chmod(0o660)  # SocketMode=0660: the group would be let in
        else:
            # As under ProtectSystem=strict: the socket's directory is read-only for the daemon.
            changes["allowed_uids"] = (0, free_uid(64200))
            first = (f"mount --bind {public_tmp} {public_tmp} && "
                     f"mount -o remount,bind,ro {public_tmp} {public_tmp} && ")  # fmt: skip
        cfg = write_config(replace(config, socket_group=GROUP, **changes), public_tmp / "c.toml")
        notify = NotifySocket(public_tmp / "notify.sock")
        log = public_tmp / "d.log"
        # Its own mount namespace: the read-only bind never reaches the host's mounts.
        prefix = ("unshare", "--mount", "--propagation", "private") if first else ()
        proc = spawn_two(cfg, fds, notify, log=log, names=names, prefix=prefix, first=first)
        try:
            code = proc.wait(timeout=60)
        finally:
            stop(proc)
            notify.close()
    text = log.read_text()
    assert code == 7, text[-2000:]
    assert message in text, text[-2000:]
    assert "Traceback" not in text


@pytest.mark.slow
def test_status_socket_peers_do_not_hold_a_locked_daemon_past_idle_exit(
    config: Config, public_tmp: Path
) -> None:
    """Keep-alive status polls on the status socket do not keep a locked daemon past idle_exit."""
    cfg = write_config(replace(config, socket_group=GROUP, idle_exit=3.0), public_tmp / "c.toml")
    notify = NotifySocket(public_tmp / "notify.sock")
    with unit_sockets(public_tmp) as fds:
        proc = spawn_two(cfg, fds, notify, log=public_tmp / "d.log")
        try:
            notify.wait_for(lambda m: m.get("READY") == "1", proc=proc)
            assert put(public_tmp / "c.sock", b"{}")[0] == 200
            locked = time.monotonic()
            with keepalive_polls(public_tmp / "s.sock", 40, uid=BROWSER, gid=BROWSER) as polls:
                rc = exit_code_within(proc, 40)
                held = time.monotonic() - locked
        finally:
            stop(proc)
            notify.close()
    assert rc == 0, f"exit {rc} after {held:.1f} s; poller: {polls.err}"
    # idle_exit, plus a tick, plus a generous margin for a loaded machine (a hang guard).
    assert held < 3.0 + 8.0, f"exit after {held:.1f} s; poller: {polls.err}"
    answers = polls.out.count("answer")
    assert answers >= 2, f"the poller was not answered: {polls.out} {polls.err}"
    assert json.loads((config.state_dir / "status.json").read_text())["state"] == "locked"


def test_the_units_name_their_sockets_and_agree_with_the_packaged_config() -> None:
    """control and status by FileDescriptorName=; the status unit serves the daemon's service."""
    control, status = unit_settings(SOCKET), unit_settings(SOCKET.with_name(STATUS_UNIT))
    assert control["FileDescriptorName"] == ["control"]
    assert (control["SocketMode"], control["SocketGroup"]) == (["0600"], ["root"])
    assert status["FileDescriptorName"] == ["status"]
    assert status["Service"] == ["trustinstaller.service"]
    assert (status["SocketMode"], status["Accept"]) == (["0660"], ["no"])
    packaged = tomllib.loads(PACKAGED_CONFIG.read_text())
    default = Config(socket=Path(packaged["socket"])).status_socket_path
    assert status["ListenStream"] == [str(default)]
    # The package installs it (debhelper's name for a second unit of the package).
    build = (PACKAGED_CONFIG.parent / "build.sh").read_text()
    assert f"debian/trustinstaller.{STATUS_UNIT}" in build
    assert "--name=trustinstaller-status" in (PACKAGED_CONFIG.parent / "debian/rules").read_text()


def _acl_bytes(*entries: tuple[int, int, int]) -> bytes:
    return struct.pack("<I", 2) + b"".join(struct.pack("<HHI", *e) for e in entries)


NO_ID = 0xFFFFFFFF


@pytest.mark.parametrize(
    ("data", "users", "group", "other"),
    [
        pytest.param(_acl.encode(frozenset({1000, 7})), {7, 1000}, False, False, id="ours"),
        # setfacl -m u:1000:rw,m::r: the mask takes the write bit back, so 1000 cannot connect.
        pytest.param(
            _acl_bytes((1, 6, NO_ID), (2, 6, 1000), (4, 0, NO_ID), (16, 4, NO_ID), (32, 0, NO_ID)),
            set(), False, False, id="masked-user",
        ),
        pytest.param(
            _acl_bytes((1, 6, NO_ID), (4, 0, NO_ID), (8, 2, 50), (16, 6, NO_ID), (32, 0, NO_ID)),
            set(), True, False, id="named-group",
        ),
        pytest.param(
            _acl_bytes((1, 6, NO_ID), (4, 6, NO_ID), (32, 2, NO_ID)), set(), True, True,
            id="minimal-0662",
        ),
    ],
)  # fmt: skip
def test_who_may_connect_is_read_from_the_acl(
    data: bytes, users: set[int], group: bool, other: bool
) -> None:
    """Write permission after the mask is what connect(2) needs; a named group counts as group."""
    who = _acl.decode(data, owner=0)
    assert (who.users, who.group, who.other) == (frozenset(users), group, other)


def test_the_acl_encoding_is_the_kernels(public_tmp: Path) -> None:
    """The kernel takes our ACL as valid, and the mode then shows the mask in the group bits."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.bind(str(public_tmp / "a.sock"))
        _acl.grant(str(public_tmp / "a.sock"), frozenset({4242}))
        who = _acl.access(str(public_tmp / "a.sock"))
        assert (who.users, who.group, who.other) == (frozenset({4242}), False, False)
        assert stat.S_IMODE((public_tmp / "a.sock").stat().st_mode) == 0o660
    with pytest.raises(ValueError, match="not a POSIX ACL"):
        _acl.decode(b"\x02\x00", owner=0)
