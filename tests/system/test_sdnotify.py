"""The sd_notify and sd_listen_fds halves of trustinstaller.sdnotify, on real sockets."""

from __future__ import annotations

import os
import secrets
import socket
from pathlib import Path

import pytest

from trustinstaller import sdnotify
from trustinstaller.errors import ActivationError


def test_notify_reaches_an_abstract_namespace_socket() -> None:
    """A NOTIFY_SOCKET starting with '@' names the abstract namespace; fields go in one datagram."""
    name = f"trustinstaller-test-{secrets.token_hex(6)}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.bind("\0" + name)
        s.settimeout(30)
        assert sdnotify.notify("READY=1", "STATUS=a\nb", env={"NOTIFY_SOCKET": f"@{name}"})
        assert s.recv(4096) == b"READY=1\nSTATUS=a b"


def test_notify_without_a_socket_is_a_no_op(tmp_path: Path) -> None:
    """No NOTIFY_SOCKET, or one that vanished, is not an error: readiness is advisory."""
    assert not sdnotify.notify("READY=1", env={})
    assert not sdnotify.notify("READY=1", env={"NOTIFY_SOCKET": str(tmp_path / "gone")})


def test_listen_fds_for_another_process_are_ignored_and_cleared() -> None:
    """LISTEN_PID of another process: no fds, and the variables are removed all the same."""
    env = {"LISTEN_PID": "1", "LISTEN_FDS": "1", "LISTEN_FDNAMES": "x", "OTHER": "kept"}
    assert sdnotify.listen_fds(env, pid=os.getpid()) == []
    assert env == {"OTHER": "kept"}


def test_listen_fds_are_made_close_on_exec() -> None:
    """Our fds start at 3 and get FD_CLOEXEC, so spawned tools do not hold the listener."""
    a, b = socket.socketpair()
    try:
        saved: int | None = os.dup(3)
    except OSError:
        saved = None  # fd 3 was free
    try:
        os.dup2(a.fileno(), 3, inheritable=True)
        assert os.get_inheritable(3)
        env = {"LISTEN_PID": str(os.getpid()), "LISTEN_FDS": "1"}
        assert sdnotify.listen_fds(env) == [3]
        assert not os.get_inheritable(3)
        assert env == {}
    finally:
        if saved is None:
            os.close(3)
        else:
            os.dup2(saved, 3)
            os.close(saved)
        a.close()
        b.close()


def test_a_socket_that_is_not_listening_is_refused(tmp_path: Path) -> None:
    """A bound but not listening stream socket (Accept=yes, or a wrong unit) is named."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(tmp_path / "s.sock"))
    fd = os.dup(s.fileno())
    with pytest.raises(ActivationError, match="not listening"):
        sdnotify.listening_unix_socket([fd])
    os.close(fd)
    s.close()
