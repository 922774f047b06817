"""Helpers for the service tests: a real sd_notify datagram socket, a socket-activated daemon,
the package that make deb built, and a manifest for a local moto server.

The boot tests (marked ``system``) need root, debootstrap and a Debian mirror; ``make test-system``
builds the package and runs them. Under a plain ``pytest`` they are skipped with that reason.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.moto import FAKE_ENV
from tests.system import debroot

SYSTEM_VAR = "TRUSTINSTALLER_SYSTEM_TESTS"


def pytest_configure(config: pytest.Config) -> None:
    """Register the ``system`` marker (for --strict-markers)."""
    config.addinivalue_line(
        "markers", "system: boots the Debian package under a real systemd (make test-system)"
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip, and say how to run, the boot tests unless make test-system asked for them."""
    if os.environ.get(SYSTEM_VAR) == "1":
        return
    skip = pytest.mark.skip(reason=f"boot test: run 'make test-system' (sets {SYSTEM_VAR}=1)")
    for item in items:
        if item.get_closest_marker("system") is not None:
            item.add_marker(skip)


class NotifySocket:
    """An AF_UNIX datagram socket standing in for systemd's $NOTIFY_SOCKET."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.messages: list[dict[str, str]] = []

    def wait_for(
        self, pred: Callable[[dict[str, str]], bool], *, proc: subprocess.Popen[bytes] | None = None
    ) -> dict[str, str]:
        """Receive datagrams until one satisfies ``pred`` (a hang guard, not a timing check)."""
        for m in self.messages:
            if pred(m):
                return m
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            self.sock.settimeout(0.5)
            try:
                raw = self.sock.recv(4096)
            except TimeoutError:
                if proc is not None and proc.poll() is not None:
                    raise AssertionError(f"daemon exited ({proc.returncode}) first") from None
                continue
            fields = dict(line.split("=", 1) for line in raw.decode().splitlines() if "=" in line)
            self.messages.append(fields)
            if pred(fields):
                return fields
        raise AssertionError(f"no such notification; got {self.messages}")

    def close(self) -> None:
        """Close and remove the socket."""
        self.sock.close()
        self.path.unlink(missing_ok=True)


@pytest.fixture(scope="module")
def deb() -> Path:
    """The package that make deb built, for this release (``$TRUSTINSTALLER_DEB``)."""
    path = Path(os.environ.get("TRUSTINSTALLER_DEB", ""))
    if not path.is_file():
        pytest.fail(f"no package at {path!s}; run 'make test-system' (it runs 'make deb' first)")
    # One package per release: its venv is bound to that release's Python.
    suffix = {"bookworm": "~deb12_", "trixie": "~deb13_"}[debroot.SUITE]
    if suffix not in path.name:
        pytest.fail(f"{path.name} is not the package for {debroot.SUITE} (no {suffix[:-1]})")
    return path.resolve()


def manifest(*arns: str) -> str:
    """A manifest naming ``arns``, with explicit (fake) credentials."""
    return json.dumps(
        {
            "certificates": [{"location": {"secretsManager": {"secretArn": a}}} for a in arns],
            "credentials": {
                "accessKeyId": FAKE_ENV["AWS_ACCESS_KEY_ID"],
                "secretAccessKey": FAKE_ENV["AWS_SECRET_ACCESS_KEY"],
            },
        }
    )


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[NotifySocket]:
    """A real datagram socket to pass as NOTIFY_SOCKET."""
    ns = NotifySocket(tmp_path / "notify.sock")
    yield ns
    ns.close()


def listening_socket(path: Path) -> socket.socket:
    """A listening Unix stream socket, as systemd makes for ListenStream=."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(path))
    s.listen(16)
    return s


def spawn_activated(
    config: Path,
    listener: socket.socket | None,
    notify: NotifySocket,
    *,
    extra_env: dict[str, str] | None = None,
    listen_pid: str | None = None,
    log: Path,
) -> subprocess.Popen[bytes]:
    """Start ``trustinstaller serve`` the way systemd does: the socket at fd 3, LISTEN_* set.

    LISTEN_PID must be the daemon's own pid, known only after fork; bash sets it to ``$$``
    and ``exec`` keeps that pid for Python.
    """
    env = {**os.environ, "NOTIFY_SOCKET": str(notify.path), **(extra_env or {})}
    for k in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        env.pop(k, None)
    argv = [sys.executable, "-m", "trustinstaller", "--config", str(config), "serve"]
    if listener is None:
        shell, pass_fds = 'exec "$@"', ()
    else:
        pid = listen_pid or "$$"
        fd = listener.fileno()
        move = "" if fd == 3 else f"exec 3<&{fd} {fd}<&-; "
        shell = f'{move}LISTEN_PID={pid} LISTEN_FDS=1 exec "$@"'
        pass_fds = (listener.fileno(),)
    with log.open("ab") as out:
        return subprocess.Popen(
            ["bash", "-c", shell, "bash", *argv],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            pass_fds=pass_fds,
        )


def stop(proc: subprocess.Popen[bytes]) -> int:
    """SIGTERM, then wait; kill only if it hangs (a hang guard)."""
    if proc.poll() is None:
        proc.terminate()
    try:
        return proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise


def read_json(path: Path) -> dict[str, object]:
    """A JSON file from the state directory."""
    data: dict[str, object] = json.loads(path.read_text())
    return data
