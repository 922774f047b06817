"""The daemon's process lifecycle: the socket, signals, sd_notify, warm-up and idle exit.

``server.py`` answers HTTP; this module decides when the process is ready, what systemd is
told, and when it stops. ``trustinstaller serve`` calls :func:`run`.
"""

from __future__ import annotations

import contextlib
import grp
import importlib
import os
import signal
import socket
import stat
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from trustinstaller import _acl, _fs, log, sdnotify
from trustinstaller.config import Config
from trustinstaller.documents import Status
from trustinstaller.errors import ActivationError, ConfigError, StartupError, UnsafePathError
from trustinstaller.installer import Installer
from trustinstaller.server import OTHER_REQUEST, Server

IDLE_ENV = "TRUSTINSTALLER_IDLE_EXIT"
# Seconds between looks at the idle timer; STATUS= is sent on each state change, not polled.
_TICK = 1.0


def run(config: Config, env: Mapping[str, str] | None = None) -> None:
    """Serve ``config`` until a signal (or the idle exit) stops the daemon."""
    idle_exit = idle_exit_seconds(config, os.environ if env is None else env)
    installer = Installer(config)
    # Started once everything the path to ready needs is imported, so that the two overlap
    # only for the few milliseconds of recovery and bind.
    threading.Thread(target=warm_up, args=(installer,), name="warm-up", daemon=True).start()
    serve(installer, idle_exit=idle_exit)


def idle_exit_seconds(config: Config, env: Mapping[str, str]) -> float | None:
    """``idle_exit`` from the config, or from TRUSTINSTALLER_IDLE_EXIT, which overrides it."""
    raw = env.get(IDLE_ENV, "")
    if not raw:
        return config.idle_exit
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 < value < float("inf"):
        raise ConfigError(f"{IDLE_ENV}={raw!r}: must be a positive number of seconds")
    return value


def warm_up(installer: Installer) -> None:
    """Import botocore and cryptography, and make the process's botocore session, while idle.

    They take about half a second to import: paid here, while the daemon waits for its
    manifest, the first PUT does not wait for them. Making a client sends nothing.
    """
    # A warm-up that fails costs only the time it would have saved; the install reports errors.
    with contextlib.suppress(Exception):
        if installer.status().locked:
            return  # restarted by socket activation after the lock: nothing left to install
        # Wait for serve()'s accept thread, so that recovery and bind, the last steps before
        # ready, do not share the GIL with these imports.
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline and not any(
            t.name == "accept" for t in threading.enumerate()
        ):
            time.sleep(0.005)
        importlib.import_module("trustinstaller.validate")  # for cryptography's imports
        from trustinstaller import fetch

        fetch.warm_up(installer.config.endpoint_url)


def inherited_sockets() -> dict[str, socket.socket] | None:
    """The sockets systemd passed us (``LISTEN_FDS``, ``LISTEN_FDNAMES``) by name, if any."""
    try:
        named = sdnotify.listen_fds_with_names()
        if not named:
            return None
        return sdnotify.activated_sockets(named)
    except ActivationError as exc:
        raise StartupError(f"socket activation: {exc}") from exc


def secure_control(path: str, allowed_uids: frozenset[int]) -> None:
    """Make sure only root and ``allowed_uids`` can connect to the control socket at ``path``.

    Another uid that can connect can fill the listen backlog that root shares, and root's next
    connect fails at once (EAGAIN): the control socket is never a group's. A non-root uid in
    allowed_uids gets an ACL entry of its own; if that cannot be done, the daemon does not start.
    """
    wanted = frozenset(allowed_uids) - {0}
    if not path.startswith("/"):
        raise StartupError(
            f"control socket {path!r}: not a path in the filesystem (an abstract "
            "socket has no permissions: anyone may connect); use ListenStream=/path"
        )
    try:
        who = _acl.access(path)
    except OSError as exc:
        raise StartupError(
            f"control socket {path}: cannot see who may connect to it: {exc.strerror or exc}"
        ) from exc
    if who.owner != 0:
        raise StartupError(
            f"control socket {path}: owned by uid {who.owner}, not root; use SocketUser=root"
        )
    if who.group or who.other:
        raise StartupError(
            f"control socket {path}: its group or others may connect; it must be 0600 root "
            "(SocketMode=0600 SocketGroup=root): readers in socket_group use the status socket"
        )
    if who.users == wanted:
        return
    uids = ", ".join(str(u) for u in sorted(wanted)) or "none"
    try:
        _acl.grant(path, wanted)
        who = _acl.access(path)
    except OSError as exc:
        raise StartupError(
            f"control socket {path}: cannot let exactly the non-root allowed_uids ({uids}) "
            f"connect with a POSIX ACL: {exc.strerror or exc}; under systemd, add 'ExecStartPost="
            f"/usr/bin/setfacl --set u::rw,g::-,o::-,{_acl_spec(wanted)} {path}' to a drop-in "
            "for trustinstaller.socket, or set allowed_uids = [0]"
        ) from exc
    if who.users != wanted or who.group or who.other:
        raise StartupError(
            f"control socket {path}: the POSIX ACL set for allowed_uids ({uids}) "
            "did not take effect; set allowed_uids = [0]"
        )


def _acl_spec(uids: frozenset[int]) -> str:
    """setfacl's text for ``uids``, each rw, and the mask that goes with named entries."""
    return ",".join([*(f"u:{u}:rw" for u in sorted(uids)), "m::rw"])


def bind_socket(
    path: Path, *, group: str | None = None, users: frozenset[int] = frozenset()
) -> socket.socket:
    """Bind a fresh listening socket at ``path``: 0600 root, or 0660 for ``group``.

    ``users`` (uids besides root) get a POSIX ACL entry each (see :func:`secure_control`).
    Its directory is reached by a checked walk, so no other user can swap it between the
    removal of a stale socket, the bind and the chmod that follow by path.
    """
    gid = -1
    if group is not None:
        try:
            gid = grp.getgrnam(group).gr_gid
        except KeyError:
            raise ConfigError(f"socket_group {group!r}: no such group on this host") from None
    try:
        with (
            _fs.opened_dir(path.parent, parents=True, mode=0o755) as parent,
            contextlib.suppress(FileNotFoundError),
        ):
            if stat.S_ISSOCK(os.stat(path.name, dir_fd=parent, follow_symlinks=False).st_mode):
                os.unlink(path.name, dir_fd=parent)  # stale, from an earlier run
    except UnsafePathError as exc:
        raise StartupError(f"socket {path}: {exc.filename} {exc.strerror}") from exc
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)
    try:
        sock.bind(str(path))
    except OSError as exc:
        sock.close()
        raise StartupError(f"socket {path}: cannot bind: {exc.strerror or exc}; remove what "
                          "is there, or choose another path") from exc  # fmt: skip
    finally:
        os.umask(old)
    if group is not None:
        os.chown(path, -1, gid, follow_symlinks=False)
        os.chmod(path, 0o660)
    else:
        os.chmod(path, 0o600)
        secure_control(str(path), users)
    sock.listen(64)
    return sock


def bound_sockets(config: Config) -> dict[str, socket.socket]:
    """Without systemd: bind the control socket, and with ``socket_group`` the status socket."""
    sockets = {
        sdnotify.CONTROL: bind_socket(config.socket, users=frozenset(config.allowed_uids) - {0})
    }
    if config.socket_group is not None:
        sockets[sdnotify.STATUS] = bind_socket(config.status_socket_path, group=config.socket_group)
    return sockets


def serve(installer: Installer, *, idle_exit: float | None = None) -> None:
    """Recover, bind (or inherit) the socket, tell systemd we are ready, serve until told to stop.

    SIGTERM or SIGINT stops accepting, lets every request in flight finish (an install completes
    or rolls back; it is never cut in half), and returns. With a socket from systemd and
    ``idle_exit`` seconds, a locked daemon with no connection for that long returns too, to free
    its memory: systemd keeps the socket, and the next connection starts a new process that
    answers from the state directory.
    """
    stop = threading.Event()
    stopped_by: list[str] = []

    def on_signal(signum: int, _frame: object) -> None:
        stopped_by.append(signal.Signals(signum).name)
        stop.set()

    if threading.current_thread() is threading.main_thread():  # only it may set handlers
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, on_signal)

    # Readiness waits for recovery: a journal left by a killed install is rolled back first.
    # A concurrent `trustinstaller apply` holds the lock: wait for it rather than fail to start.
    # A user's databases in that journal are undone after READY (finish_recovery, below).
    status = installer.prepare(wait=installer.config.update_timeout, defer_users=True)
    inherited = inherited_sockets()
    servers = _servers(installer, inherited)
    text = [sdnotify.describe(status)]

    def on_status(new: Status) -> None:
        # Called by the state directory on every status write, from the request thread, so
        # that `systemctl status` follows the state the moment it changes.
        described = sdnotify.describe(new)
        if described != text[0]:
            text[0] = described
            sdnotify.notify(f"STATUS={described}")
            log.get().info("state_changed", state=new.state.value)

    installer.state.on_write = on_status
    log.get().info("daemon_ready", socket=str(servers[0].socket.getsockname()),
                   state=status.state.value,
                   source="systemd" if inherited else "bound")  # fmt: skip
    if len(servers) > 1:
        log.get().info("status_socket_ready", socket=str(servers[1].socket.getsockname()))
    sdnotify.notify("READY=1", f"STATUS={text[0]}", f"MAINPID={os.getpid()}")
    if installer.recovery_left():
        # Not a daemon thread: it counts as busy for the idle exit, and is waited for at the end.
        threading.Thread(target=installer.finish_recovery, name="recovery").start()
    try:
        if _until_stopped(installer, stop, None if inherited is None else idle_exit):
            stopped_by.append("idle")
    finally:
        installer.state.on_write = None
        sdnotify.notify("STOPPING=1", f"STATUS=stopping ({', '.join(stopped_by) or 'error'})")
        _close(servers)
        log.get().info("daemon_stopped", reason=stopped_by[0] if stopped_by else "error")


def _close(servers: Sequence[Server]) -> None:
    """Stop accepting on every socket, then wait for every request in flight to finish."""
    for server in servers:
        server.shutdown()
    for server in servers:
        server.drop_others()
    for server in servers:
        # Joins every request thread, so an install in flight finishes before we exit.
        server.server_close()


def _servers(installer: Installer, inherited: dict[str, socket.socket] | None) -> list[Server]:
    """The control socket's server, and the status socket's if systemd passed one; each
    serving from a thread of its own."""
    sockets = inherited if inherited is not None else bound_sockets(installer.config)
    sock = sockets[sdnotify.CONTROL]
    if inherited is not None:
        secure_control(str(sock.getsockname()), frozenset(installer.config.allowed_uids))
    servers = [Server(installer, sock)]
    if sdnotify.STATUS in sockets:
        servers.append(Server(installer, sockets[sdnotify.STATUS], read_only=True))
    elif installer.config.socket_group is not None:
        # Not fatal: root's installs do not need it. The group's readers get no answer.
        log.get().warning(
            "status_socket_missing",
            reason="socket_group is set but systemd "
            "passed no status socket: enable trustinstaller-status.socket",
        )
    for server, name in zip(servers, ("accept", "accept-status"), strict=False):
        # Request threads must not be daemon threads: server_close() joins only the others,
        # and an install in flight must finish before the process exits.
        server.daemon_threads = False
        # One accept thread and one backlog each: a flood on the status socket cannot fill
        # the control socket's backlog or take its slots.
        threading.Thread(target=server.serve_forever, name=name, daemon=True).start()
    return servers


def _until_stopped(installer: Installer, stop: threading.Event, idle_exit: float | None) -> bool:
    """Wait for ``stop``; True if instead the daemon was locked and idle for ``idle_exit`` s."""
    idle_since = time.monotonic()
    while not stop.wait(_TICK):
        # Busy while any connection is being served: request threads (and the pools an install
        # starts from them) are the only non-daemon threads besides this one. A connection
        # from a uid outside allowed_uids does not count: it may only read the status, lives
        # at most request_timeout, and is ended when the daemon stops.
        others = set(threading.enumerate()) - {threading.current_thread(),
                                               threading.main_thread()}  # fmt: skip
        locked = installer.status().locked
        busy = not locked or any(not t.daemon and t.name != OTHER_REQUEST for t in others)
        now = time.monotonic()
        if busy or idle_exit is None:
            idle_since = now
        elif now - idle_since >= idle_exit:
            return True
    return False
