"""Socket activation and the sd_notify protocol, with real sockets and the real daemon process.

The listening socket is made here and handed over at fd 3 with LISTEN_FDS/LISTEN_PID, and a real
AF_UNIX datagram socket stands in for $NOTIFY_SOCKET, exactly as systemd does both.
"""

from __future__ import annotations

import json
import os
import socket
import stat
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

from tests.support.certs import Issued
from tests.support.daemon import put, request, write_config
from tests.support.moto import FAKE_ENV, MotoServer
from tests.system.conftest import (
    NotifySocket,
    listening_socket,
    manifest,
    read_json,
    spawn_activated,
    stop,
)
from trustinstaller.config import Config
from trustinstaller.stores.debian import bundle_ders


def put_in_background(sock: Path, body: bytes) -> tuple[threading.Thread, dict[str, Any]]:
    """PUT /v1/manifest from a thread; the answer lands in the returned dict."""
    answer: dict[str, Any] = {}

    def run() -> None:
        answer["code"], answer["doc"] = put(sock, body)

    return threading.Thread(target=run), answer


def test_ready_only_after_journal_recovery(
    tmp_path: Path, config: Config, notify_socket: NotifySocket
) -> None:
    """READY=1 is sent after an interrupted install was rolled back, and the socket then answers."""
    config.state_dir.mkdir(parents=True, mode=0o700)
    ours = config.os_store.our_dir
    ours.mkdir(parents=True)
    (ours / "half-written.crt").write_text("left by a killed install\n")
    journal = {
        "id": "0123456789abcdef",
        "started_at": "2026-11-28T12:00:00Z",
        "phase": "applying",
        "summary": {"certificates": []},
        "entries": [
            {"store": "os", "action": "mkdir", "path": str(ours)},
            {"store": "os", "action": "write", "dir": str(ours), "name": "half-written.crt"},
        ],
    }
    (config.state_dir / "journal.json").write_text(json.dumps(journal))
    path = tmp_path / "activated.sock"
    listener = listening_socket(path)
    proc = spawn_activated(
        write_config(config, tmp_path / "c.toml"), listener, notify_socket, log=tmp_path / "d.log"
    )
    try:
        ready = notify_socket.wait_for(lambda m: m.get("READY") == "1", proc=proc)
        # Recovery is complete at the moment READY=1 is sent.
        assert not (config.state_dir / "journal.json").exists()
        assert not ours.exists()
        assert read_json(config.state_dir / "status.json")["state"] == "failed"
        assert ready["STATUS"].startswith("failed:")
        assert ready["MAINPID"] == str(proc.pid)
        code, doc = request(path, "GET", "/v1/status")
        assert code == 200
        assert doc["state"] == "failed"
        # It served the inherited socket and bound none of its own.
        assert not config.socket.exists()
    finally:
        assert stop(proc) == 0
        listener.close()


def test_status_follows_the_state_and_sigterm_stops_cleanly(
    tmp_path: Path,
    config: Config,
    moto: MotoServer,
    test_ca: Issued,
    notify_socket: NotifySocket,
) -> None:
    """STATUS= follows open -> locked; SIGTERM sends STOPPING=1 and exits 0."""
    arn = moto.put_secret("activation-status-ca", test_ca.pem)
    path = tmp_path / "activated.sock"
    listener = listening_socket(path)
    proc = spawn_activated(
        write_config(config, tmp_path / "c.toml"), listener, notify_socket, log=tmp_path / "d.log"
    )
    try:
        ready = notify_socket.wait_for(lambda m: m.get("READY") == "1", proc=proc)
        assert ready["STATUS"].startswith("open:")
        code, doc = put(path, manifest(arn).encode())
        assert code == 200, doc
        assert doc["state"] == "locked"
        locked = notify_socket.wait_for(lambda m: m.get("STATUS", "").startswith("locked:"))
        assert "1 certificate(s) installed" in locked["STATUS"]
        assert test_ca.der in bundle_ders(config.os_store.bundle)
    finally:
        code = stop(proc)
        listener.close()
    assert code == 0
    notify_socket.wait_for(lambda m: m.get("STOPPING") == "1")
    log = (tmp_path / "d.log").read_text()
    assert '"event": "daemon_stopped"' in log
    assert FAKE_ENV["AWS_SECRET_ACCESS_KEY"] not in log


def test_status_is_sent_with_each_state_change_before_the_answer(
    tmp_path: Path,
    config: Config,
    moto: MotoServer,
    test_ca: Issued,
    notify_socket: NotifySocket,
) -> None:
    """STATUS=installing and STATUS=locked are both queued when the PUT's answer arrives."""
    arn = moto.put_secret("activation-status-order-ca", test_ca.pem)
    path = tmp_path / "activated.sock"
    listener = listening_socket(path)
    proc = spawn_activated(
        write_config(config, tmp_path / "c.toml"), listener, notify_socket, log=tmp_path / "d.log"
    )
    try:
        notify_socket.wait_for(lambda m: m.get("READY") == "1", proc=proc)
        code, doc = put(path, manifest(arn).encode())
        assert code == 200, doc
        # Read at once, without waiting: a once-a-second poll would not have sent them yet.
        states = [m["STATUS"].split(":", 1)[0] for m in queued(notify_socket) if "STATUS" in m]
        assert states[-2:] == ["installing", "locked"], states
    finally:
        code = stop(proc)
        listener.close()
    assert code == 0


def test_locked_daemon_exits_when_idle_and_the_next_one_answers_locked(
    tmp_path: Path, config: Config, notify_socket: NotifySocket
) -> None:
    """With an idle timeout a locked daemon exits; a queued client is served by the next one."""
    path = tmp_path / "activated.sock"
    listener = listening_socket(path)
    cfg = write_config(config, tmp_path / "c.toml")
    env = {"TRUSTINSTALLER_IDLE_EXIT": "1"}
    first = spawn_activated(cfg, listener, notify_socket, extra_env=env, log=tmp_path / "1.log")
    try:
        notify_socket.wait_for(lambda m: m.get("READY") == "1", proc=first)
        # An empty manifest is valid: it locks an empty configuration.
        code, doc = put(path, b"{}")
        assert code == 200, doc
        assert first.wait(timeout=120) == 0  # exits on its own; the timeout is a hang guard
    finally:
        stop(first)
    notify_socket.wait_for(lambda m: m.get("STOPPING") == "1")
    assert "idle" in notify_socket.messages[-1]["STATUS"]

    # No daemon now, but the socket (systemd's) still accepts: the connection waits in the backlog.
    client, answer = put_in_background(path, b"{}")
    client.start()
    second = spawn_activated(cfg, listener, notify_socket, log=tmp_path / "2.log")
    try:
        client.join(timeout=120)
        assert answer["code"] == 409
        assert answer["doc"]["outcome"] == "locked"
        # Without the idle timeout set, it stays up.
        assert second.poll() is None
    finally:
        assert stop(second) == 0
        listener.close()


def test_sigterm_lets_an_install_in_flight_finish(
    tmp_path: Path,
    config: Config,
    moto: MotoServer,
    test_ca: Issued,
    notify_socket: NotifySocket,
) -> None:
    """SIGTERM during update-ca-certificates: the install completes and locks; then it exits."""
    hooks = config.os_store.hooks_dir
    started, release = tmp_path / "hook-started", tmp_path / "release"
    hook = hooks / "wait-for-release"
    hook.write_text(
        "#!/bin/sh\ncat >/dev/null\n"
        f"touch {started}\nwhile [ ! -e {release} ]; do sleep 0.05; done\n"
    )
    hook.chmod(0o755)
    arn = moto.put_secret("activation-sigterm-ca", test_ca.pem)
    path = tmp_path / "activated.sock"
    listener = listening_socket(path)
    proc = spawn_activated(
        write_config(config, tmp_path / "c.toml"), listener, notify_socket, log=tmp_path / "d.log"
    )
    client, answer = put_in_background(path, manifest(arn).encode())
    try:
        notify_socket.wait_for(lambda m: m.get("READY") == "1", proc=proc)
        client.start()
        while not started.exists():  # the hook is running: the install is half-way
            assert proc.poll() is None
            threading.Event().wait(0.05)
        proc.terminate()
        notify_socket.wait_for(lambda m: m.get("STOPPING") == "1")
        assert proc.poll() is None  # still finishing the install
        release.touch()
        client.join(timeout=120)
        assert proc.wait(timeout=120) == 0
    finally:
        release.touch()
        stop(proc)
        listener.close()
    assert answer["code"] == 200, answer
    assert read_json(config.state_dir / "status.json")["state"] == "locked"
    assert not (config.state_dir / "journal.json").exists()
    assert test_ca.der in bundle_ders(config.os_store.bundle)


def test_without_systemd_it_binds_its_own_socket(
    tmp_path: Path, config: Config, notify_socket: NotifySocket
) -> None:
    """Without LISTEN_FDS (a container, debugging) it binds the configured socket, mode 0600."""
    proc = spawn_activated(
        write_config(config, tmp_path / "c.toml"), None, notify_socket, log=tmp_path / "d.log"
    )
    try:
        notify_socket.wait_for(lambda m: m.get("READY") == "1", proc=proc)
        assert stat.S_IMODE(os.stat(config.socket).st_mode) == 0o600
        assert request(config.socket, "GET", "/v1/status")[0] == 200
    finally:
        assert stop(proc) == 0


def test_listen_fds_meant_for_another_process_are_ignored(
    tmp_path: Path, config: Config, notify_socket: NotifySocket
) -> None:
    """LISTEN_PID of another process means the fds are not ours: it binds its own socket."""
    stray = listening_socket(tmp_path / "stray.sock")
    proc = spawn_activated(
        write_config(config, tmp_path / "c.toml"),
        stray,
        notify_socket,
        listen_pid="1",
        log=tmp_path / "d.log",
    )
    try:
        notify_socket.wait_for(lambda m: m.get("READY") == "1", proc=proc)
        assert request(config.socket, "GET", "/v1/status")[0] == 200
    finally:
        assert stop(proc) == 0
        stray.close()


def test_a_datagram_socket_from_systemd_is_refused(
    tmp_path: Path, config: Config, notify_socket: NotifySocket
) -> None:
    """A socket unit with ListenDatagram= is a configuration error, named, not a crash."""
    dgram = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    dgram.bind(str(tmp_path / "dgram.sock"))
    proc = spawn_activated(
        write_config(replace(config), tmp_path / "c.toml"), dgram, notify_socket,
        log=tmp_path / "d.log",
    )  # fmt: skip
    try:
        assert proc.wait(timeout=60) == 7  # the host cannot start it as configured
    finally:
        stop(proc)
        dgram.close()
    log = (tmp_path / "d.log").read_text()
    assert "not a Unix stream socket" in log
    assert "Traceback" not in log
    # The daemon has exited, so everything it sent is queued: read it all, without waiting.
    assert not any(m.get("READY") == "1" for m in queued(notify_socket))


def queued(notify: NotifySocket) -> list[dict[str, str]]:
    """Every notification already queued on ``notify``, without waiting for more."""
    messages = []
    notify.sock.setblocking(False)
    try:
        while True:
            try:
                raw = notify.sock.recv(4096)
            except BlockingIOError:
                return messages
            messages.append(dict(line.split("=", 1) for line in raw.decode().splitlines()
                                 if "=" in line))  # fmt: skip
    finally:
        notify.sock.setblocking(True)
