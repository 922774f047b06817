"""The daemon's socket and state directory at start, and a PUT without Content-Length.

Each test drives the real ``trustinstaller`` process (or Installer.prepare, what the daemon calls
at start) and checks what is on disk or on the wire: the socket's mode and group, what happens
to a leftover at the socket's path, and the state directory's owner and mode.
"""

from __future__ import annotations

import grp
import json
import os
import socket
import stat
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from tests.support.daemon import Daemon, request, write_config
from tests.support.peer import NOBODY, as_uid, client, run_as
from trustinstaller import documents
from trustinstaller.config import Config
from trustinstaller.installer import Installer

OTHER_UID = NOBODY
GROUP = "nogroup"  # gid 65534 on Debian


def serve(config_path: Path, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """``trustinstaller serve`` expected to refuse to start: it must exit within ``timeout``."""
    return subprocess.run(
        [sys.executable, "-m", "trustinstaller", "--config", str(config_path), "serve"],
        capture_output=True, text=True, timeout=timeout, check=False, stdin=subprocess.DEVNULL,
    )  # fmt: skip


def start_keeping_socket_path(config_path: Path, sock: Path) -> subprocess.Popen[str]:
    """Start the daemon without clearing its socket path first (Daemon.start would)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "trustinstaller", "--config", str(config_path), "serve"],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 30
    while proc.poll() is None and time.monotonic() < deadline:
        try:
            request(sock, "GET", "/v1/status")
            break
        except OSError:
            time.sleep(0.05)
    return proc


def stop(proc: subprocess.Popen[str]) -> str:
    """SIGTERM (if still running), wait, and return what it printed."""
    if proc.poll() is None:
        proc.terminate()
    out, _ = proc.communicate(timeout=30)
    return out


# -- the socket -----------------------------------------------------------------------------


def test_put_without_content_length_is_411(config: Config, tmp_path: Path) -> None:
    """A PUT with no Content-Length (and no chunking) is answered 411 and installs nothing."""
    sock = tmp_path / "d" / "ti.sock"
    sock.parent.mkdir()
    with Daemon(write_config(replace(config, socket=sock), tmp_path / "c.toml"), sock) as d:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(30)
            s.connect(str(sock))
            s.sendall(b"PUT /v1/manifest HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
                      b"\r\n\r\n{}")  # fmt: skip
            answer = b""
            while chunk := s.recv(4096):
                answer += chunk
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 411 "), answer
        assert json.loads(body) == {"error": "Content-Length is required"}
        assert d.status()["state"] == "open"


def test_stale_socket_is_removed_at_bind(config: Config, tmp_path: Path) -> None:
    """A socket file left by a dead daemon is replaced: the new daemon binds and answers there."""
    sock = tmp_path / "d" / "ti.sock"
    sock.parent.mkdir()
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(sock))
    stale.close()  # the file stays; nothing listens on it
    with pytest.raises(ConnectionRefusedError):
        request(sock, "GET", "/v1/status")
    proc = start_keeping_socket_path(write_config(replace(config, socket=sock),
                                                  tmp_path / "c.toml"), sock)  # fmt: skip
    try:
        assert request(sock, "GET", "/v1/status")[0] == 200
        assert stat.S_ISSOCK(sock.lstat().st_mode)
    finally:
        out = stop(proc)
    assert proc.returncode == 0, out


def test_a_file_at_the_socket_path_is_not_removed(config: Config, tmp_path: Path) -> None:
    """Only a socket counts as stale: a regular file there is left as it is; no daemon runs."""
    sock = tmp_path / "d" / "ti.sock"
    sock.parent.mkdir()
    sock.write_text("not a socket\n")
    done = serve(write_config(replace(config, socket=sock), tmp_path / "c.toml"))
    assert done.returncode != 0
    assert sock.read_text() == "not a socket\n"


@pytest.mark.root
def test_a_peer_with_roots_gid_but_another_uid_may_not_submit(
    config: Config, tmp_path: Path, public_tmp: Path
) -> None:
    """A peer whose gid is 0 is not let into the control socket, and cannot PUT on the other."""
    sock, status = public_tmp / "ti.sock", public_tmp / "ti-status.sock"
    cfg = write_config(replace(config, socket=sock, socket_group="root"), tmp_path / "c.toml")
    with Daemon(cfg, sock):
        assert client(OTHER_UID, 0, sock) == ["EACCES"]
        assert client(OTHER_UID, 0, status) == ["HTTP/1.1 200 OK", "open"]
        assert client(OTHER_UID, 0, status, "PUT")[0] == "HTTP/1.1 405 Method Not Allowed"


@pytest.mark.root
def test_without_socket_group_the_socket_is_0600(
    config: Config, tmp_path: Path, public_tmp: Path
) -> None:
    """Without socket_group, the socket is 0600 root's: that group's member cannot connect."""
    gid = grp.getgrnam(GROUP).gr_gid
    sock = public_tmp / "ti.sock"
    with Daemon(write_config(replace(config, socket=sock), tmp_path / "c.toml"), sock):
        st = sock.lstat()
        assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o600, 0, 0)
        assert client(OTHER_UID, gid, sock) == ["EACCES"]


# -- the state directory --------------------------------------------------------------------


def test_state_dir_mode_0755_is_narrowed_to_0700(config: Config) -> None:
    """A state directory of ours left 0755 is made 0700 at start, and the start goes on."""
    config.state_dir.mkdir(mode=0o755)
    config.state_dir.chmod(0o755)
    assert Installer(config).prepare().state == "open"
    assert stat.S_IMODE(config.state_dir.stat().st_mode) == 0o700


@pytest.mark.root
def test_state_dir_owned_by_another_uid_is_refused_at_start(config: Config, tmp_path: Path) -> None:
    """The daemon refuses to start on a state directory another uid owns, and says which."""
    assert os.geteuid() == 0, "this test runs as root in CI"
    config.state_dir.mkdir(mode=0o700)
    os.chown(config.state_dir, OTHER_UID, OTHER_UID)
    sock = tmp_path / "d" / "ti.sock"
    sock.parent.mkdir()
    done = serve(write_config(replace(config, socket=sock), tmp_path / "c.toml"))
    assert done.returncode == 1, done.stderr
    assert f"trustinstaller: state directory {config.state_dir}: " in done.stderr
    assert "is owned by" in done.stderr
    assert "fix or remove it" in done.stderr
    assert "Traceback" not in done.stderr
    assert not sock.exists()
    # Nothing was written into it or changed about it.
    assert list(config.state_dir.iterdir()) == []
    st = config.state_dir.stat()
    assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (OTHER_UID, 0o700)


@pytest.mark.root
def test_a_state_dir_another_user_made_in_a_sticky_run_is_refused(
    config: Config, public_tmp: Path, tmp_path: Path
) -> None:
    """On a /run every user may write (mode 1777), another user makes the state directory and
    plants a journal in it; systemd's RuntimeDirectory= then hands it to root with a chown, as it
    does to a directory that is already there. The daemon refuses to start and undoes nothing
    the planted journal names (here: a root file it would remove)."""
    run = public_tmp / "run"
    run.mkdir()
    run.chmod(0o1777)
    victim = public_tmp / "victim"
    victim.mkdir()
    (victim / "keep.txt").write_text("root's\n")
    state = run / "trustinstaller"
    planted = {
        "entries": [{"action": "write", "dir": str(victim), "name": "keep.txt", "mode": None,
                     "original": None, "store": "os"}],
        "id": "planted", "phase": "applying", "started_at": "2026-12-06T00:00:00Z",
        "summary": {"certificates": []},
    }  # fmt: skip
    documents.journal_from_json(planted)  # one the recovery would act on
    made = run_as(OTHER_UID, OTHER_UID, "sh", "-c",
                  f"mkdir -m 0700 {state} && cat > {state}/journal.json",
                  input=json.dumps(planted))  # fmt: skip
    assert made.returncode == 0, made.stderr
    for p in (state, state / "journal.json"):  # systemd's chown of an existing directory
        os.chown(p, 0, 0)
    state.chmod(0o755)
    sock = tmp_path / "d" / "ti.sock"
    sock.parent.mkdir()
    cfg = write_config(replace(config, state_dir=state, socket=sock), tmp_path / "c.toml")
    done = serve(cfg)
    assert done.returncode == 1, done.stderr
    assert f"trustinstaller: state directory {state}: {run} may be written by other users " \
           "(mode 1777)" in done.stderr  # fmt: skip
    assert "Traceback" not in done.stderr
    assert not sock.exists()
    assert (victim / "keep.txt").read_text() == "root's\n"
    assert json.loads((state / "journal.json").read_text()) == planted


LISTENER = """
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.bind(sys.argv[1]); s.listen(1)
print("listening", flush=True)
c, _ = s.accept(); c.settimeout(10)
got = b""
try:
    while chunk := c.recv(65536):
        got += chunk
except OSError:
    pass
open(sys.argv[2], "wb").write(got)
"""


@pytest.mark.root
def test_a_socket_another_user_bound_gets_no_manifest(
    config: Config, public_tmp: Path, tmp_path: Path
) -> None:
    """Where another user could bind the socket's path first (a /run every user may write),
    submit sends the manifest, credentials and all, to nobody but root: it sends nothing."""
    shared = public_tmp / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    sock, got = shared / "ti.sock", shared / "got"
    with subprocess.Popen(
        as_uid(OTHER_UID, OTHER_UID, sys.executable, "-I", "-c", LISTENER, str(sock), str(got)),
        stdout=subprocess.PIPE, text=True, cwd="/",
    ) as listener:  # fmt: skip
        try:
            assert listener.stdout is not None
            assert listener.stdout.readline() == "listening\n"
            keys = {"accessKeyId": "AKIAEXAMPLE", "secretAccessKey": "s3cr3t"}
            body = json.dumps({"credentials": keys, "certificates": []})
            (tmp_path / "m.json").write_text(body)
            cfg = write_config(replace(config, socket=sock), tmp_path / "c.toml")
            done = subprocess.run(
                [sys.executable, "-m", "trustinstaller", "--config", str(cfg), "submit",
                 str(tmp_path / "m.json")],
                capture_output=True, text=True, timeout=60, check=False,
                stdin=subprocess.DEVNULL,
            )  # fmt: skip
            assert listener.wait(timeout=30) == 0
        finally:
            listener.kill()
    assert done.returncode != 0, done.stdout
    assert f"served by uid {OTHER_UID}, not root; sent nothing" in done.stderr
    assert got.read_bytes() == b""


@pytest.mark.root
def test_env_prints_nothing_for_a_runtime_dir_another_user_made(
    config: Config, public_tmp: Path, tmp_path: Path
) -> None:
    """``trustinstaller env`` hands clients only an environment the install wrote: not one that
    another user made in a directory every user may write."""
    shared = public_tmp / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    env_dir = shared / "trustinstaller-env"
    made = run_as(OTHER_UID, OTHER_UID, "sh", "-c",
                  f"mkdir -m 0755 {env_dir} && echo \"SSL_CERT_FILE='/tmp/evil.pem'\" "
                  f"> {env_dir}/env && touch {env_dir}/ca-bundle.pem")  # fmt: skip
    assert made.returncode == 0, made.stderr
    cfg = write_config(replace(config, runtime_dir=env_dir), tmp_path / "c.toml")
    done = subprocess.run(
        [sys.executable, "-m", "trustinstaller", "--config", str(cfg), "env", "--export"],
        capture_output=True, text=True, timeout=60, check=False, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    assert "no trust environment" in done.stderr


@pytest.mark.root
def test_state_dir_of_root_is_refused_to_another_uid(config: Config, public_tmp: Path) -> None:
    """Run as another uid, ``apply`` refuses a state directory root owns, before any install."""
    state = public_tmp / "state"
    state.mkdir()
    state.chmod(0o755)  # readable, so that the refusal is ours and not the kernel's EACCES
    cfg_path = write_config(replace(config, state_dir=state, socket=state / "ti.sock"),
                            public_tmp / "c.toml")  # fmt: skip
    cfg_path.chmod(0o644)
    done = run_as(OTHER_UID, OTHER_UID, sys.executable, "-m", "trustinstaller",
                  "--config", str(cfg_path), "apply", "-", input="{}")  # fmt: skip
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"trustinstaller: state directory {state}: is owned by another user" in done.stderr
    assert "Traceback" not in done.stderr
    assert list(state.iterdir()) == []
