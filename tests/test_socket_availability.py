"""The socket root always reaches, against real task limits and a real second uid.

A pids cgroup (the kernel's, as the unit's TasksMax is) that stops the daemon from starting a
thread, and keep-alive connections from uid 65534, each run for real against the real daemon.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from tests.support.daemon import put, write_config
from tests.support.peer import NOBODY, SYSTEM_PYTHON, exit_code_within, keepalive_polls, run_as
from tests.system.conftest import NotifySocket, listening_socket, spawn_activated, stop
from tests.test_socket_http import running_daemon
from trustinstaller import server
from trustinstaller.config import Config

pytestmark = pytest.mark.root

PIDS_ROOTS = (Path("/sys/fs/cgroup/pids"), Path("/sys/fs/cgroup"))


@pytest.fixture
def pids_cgroup() -> Iterator[Path]:
    """A fresh pids cgroup (v1's pids hierarchy, or v2 with the pids controller)."""
    root = next((r for r in PIDS_ROOTS if (r / "cgroup.procs").exists() and _has_pids(r)), None)
    assert root is not None, "no pids cgroup controller on this host"
    group = root / f"ti-test-{secrets.token_hex(4)}"
    group.mkdir()
    try:
        yield group
    finally:
        # Anything still in it goes back to the root group, so that it can be removed.
        for pid in (group / "cgroup.procs").read_text().split():
            with contextlib.suppress(OSError):  # already gone
                (root / "cgroup.procs").write_text(pid)
        for _ in range(50):
            try:
                group.rmdir()
                break
            except OSError:
                time.sleep(0.1)


def _has_pids(root: Path) -> bool:
    if root.name == "pids":
        return True
    controllers = root / "cgroup.subtree_control"
    return controllers.exists() and "pids" in controllers.read_text().split()


def _status(sock: Path) -> int | str:
    """GET /v1/status once: the HTTP status, or what went wrong.

    A refusal is sent unasked and the connection closed, maybe before our request is written:
    the answer is read whatever became of the write.
    """
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(30)
        s.connect(str(sock))
        with contextlib.suppress(OSError):
            s.sendall(b"GET /v1/status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        with contextlib.suppress(ConnectionResetError):
            while chunk := s.recv(65536):
                data += chunk
    if not data.startswith(b"HTTP/1.1 "):
        return f"no answer ({data[:40]!r})"
    return int(data.split()[1])


def test_a_connection_without_a_thread_gets_503_and_the_daemon_recovers(
    config: Config, tmp_path: Path, pids_cgroup: Path
) -> None:
    """With its task limit full, every connection gets 503; once tasks return, 200 again.

    More connections are refused than there are slots: each refused one gave its slot back.
    The daemon then stops cleanly on SIGTERM.
    """
    with running_daemon(config, tmp_path) as d:
        assert d.proc is not None
        (pids_cgroup / "cgroup.procs").write_text(str(d.proc.pid))
        # Below what it runs already: no thread can start, and none is killed.
        (pids_cgroup / "pids.max").write_text("1")
        starved = [_status(d.socket_path) for _ in range(server.MAX_CONNECTIONS + 8)]
        (pids_cgroup / "pids.max").write_text("max")
        after = [_status(d.socket_path) for _ in range(5)]
        d.proc.terminate()
        code = d.proc.wait(timeout=60)
    log = d.log.read_text()
    assert set(starved) == {503}, starved
    assert after == [200] * 5, (after, log[-2000:])
    assert code == 0, log[-2000:]
    assert "internal error" not in log, log[-2000:]
    assert "Traceback" not in log, log[-2000:]
    assert '"reason": "no_thread"' in log


@pytest.mark.slow
def test_another_uid_cannot_hold_a_locked_activated_daemon_past_idle_exit(config: Config) -> None:
    """Keep-alive status polls from uid 65534 do not keep a locked daemon alive past idle_exit."""
    d = Path(tempfile.mkdtemp(prefix="ti-r3-"))
    d.chmod(0o755)
    try:
        path = d / "a.sock"
        listener = listening_socket(path)
        notify = NotifySocket(d / "notify.sock")
        cfg = write_config(replace(config, idle_exit=3.0), d / "c.toml")
        proc = spawn_activated(cfg, listener, notify, log=d / "d.log")
        try:
            notify.wait_for(lambda m: m.get("READY") == "1", proc=proc)
            # Opened after the start: a daemon refuses a control socket that others may reach.
            # The status socket's own test is in tests/test_status_socket.py.
            path.chmod(0o666)
            code, doc = put(path, b"{}")  # an empty manifest locks an empty configuration
            assert code == 200, doc
            locked = time.monotonic()
            with keepalive_polls(path, seconds=40) as polls:
                rc = exit_code_within(proc, 40)
                held = time.monotonic() - locked
        finally:
            stop(proc)
            listener.close()
            notify.close()
        # idle_exit, plus a tick, plus a generous margin for a loaded machine.
        assert rc == 0, f"exit {rc} after {held:.1f} s; poller: {polls.err}"
        assert held < 3.0 + 8.0, f"exit after {held:.1f} s; poller: {polls.err}"
        assert polls.out.count("answer") >= 2, (
            f"the poller was not answered: {polls.out} {polls.err}"
        )
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_another_uid_gets_one_answer_per_connection(config: Config, tmp_path: Path) -> None:
    """A second request on a keep-alive connection from uid 65534 is not served: it is closed."""
    script = (
        "import socket, sys\n"
        "s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM); s.settimeout(10)\n"
        "s.connect(sys.argv[1])\n"
        "req = b'GET /v1/status HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n'\n"
        "s.sendall(req + req)\n"
        "data = b''\n"
        "while chunk := s.recv(65536): data += chunk\n"
        "print(data.count(b'HTTP/1.1 200'), b'Connection: close' in data)\n"
    )
    with running_daemon(config, tmp_path) as d:
        d.socket_path.chmod(0o666)
        done = run_as(NOBODY, NOBODY, SYSTEM_PYTHON, "-c", script, str(d.socket_path))
        # Root's own keep-alive connection is still served twice.
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(10)
            s.connect(str(d.socket_path))
            req = b"GET /v1/status HTTP/1.1\r\nHost: x\r\n\r\n"
            s.sendall(req + req)
            data = b""
            while data.count(b"HTTP/1.1 200") < 2:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
    assert done.stdout.split() == ["1", "True"], done.stderr
    assert data.count(b"HTTP/1.1 200") == 2
    assert os.geteuid() == 0
