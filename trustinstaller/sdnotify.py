"""systemd's socket-activation and readiness protocols, spoken without libsystemd.

Quirks this module exists for, one per line:
- sd_listen_fds(3): sockets start at fd 3; LISTEN_PID must be ours, else they were a parent's.
- The LISTEN_* variables are removed once read, so a child process never takes them for its own.
- Inherited fds arrive without FD_CLOEXEC; set it, or every tool we spawn keeps the listener open.
- sd_listen_fds_with_names(3): LISTEN_FDNAMES is colon-separated, one name per fd; without it
  each fd is "unknown", and a unit without FileDescriptorName= names its fds after itself.
- sd_notify(3): one datagram to $NOTIFY_SOCKET; a leading '@' means the abstract namespace.
- systemd ignores a notification whose sender is not the main process (NotifyAccess=main).
"""

from __future__ import annotations

import fcntl
import os
import socket
from collections.abc import Mapping, MutableMapping

from trustinstaller.documents import State, Status
from trustinstaller.errors import ActivationError

SD_LISTEN_FDS_START = 3
_LISTEN_VARS = ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES")
CONTROL = "control"
STATUS = "status"
# FileDescriptorName= of each socket unit, and the names systemd gives when a unit sets none.
_ROLES = {
    CONTROL: CONTROL,
    STATUS: STATUS,
    "trustinstaller.socket": CONTROL,
    "trustinstaller-status.socket": STATUS,
}


def listen_fds(env: MutableMapping[str, str] | None = None, *, pid: int | None = None) -> list[int]:
    """The fds systemd passed us (``sd_listen_fds``), marked close-on-exec; the vars are removed."""
    return [fd for fd, _ in listen_fds_with_names(env, pid=pid)]


def listen_fds_with_names(
    env: MutableMapping[str, str] | None = None, *, pid: int | None = None
) -> list[tuple[int, str]]:
    """``sd_listen_fds_with_names``: each fd systemd passed us, and its name; vars removed."""
    environ = os.environ if env is None else env
    mine = str(os.getpid() if pid is None else pid)
    wanted = environ.get("LISTEN_PID") == mine
    raw = environ.get("LISTEN_FDS", "")
    raw_names = environ.get("LISTEN_FDNAMES")
    for key in _LISTEN_VARS:
        environ.pop(key, None)
    if not wanted:
        return []
    try:
        n = int(raw)
    except ValueError:
        return []
    fds = list(range(SD_LISTEN_FDS_START, SD_LISTEN_FDS_START + max(n, 0)))
    for fd in fds:
        flags = fcntl.fcntl(fd, fcntl.F_GETFD)
        fcntl.fcntl(fd, fcntl.F_SETFD, flags | fcntl.FD_CLOEXEC)
    names = raw_names.split(":") if raw_names is not None else ["unknown"] * len(fds)
    if len(names) != len(fds):
        raise ActivationError(
            f"systemd passed {len(fds)} sockets but {len(names)} names "
            f"in LISTEN_FDNAMES={raw_names!r}"
        )
    return list(zip(fds, names, strict=True))


def activated_sockets(named: list[tuple[int, str]]) -> dict[str, socket.socket]:
    """The control socket and, if passed, the status socket, by name; ActivationError if not.

    Names come from FileDescriptorName=: ``control`` (trustinstaller.socket) and ``status``
    (trustinstaller-status.socket). One fd without a name is the control socket.
    """
    if len(named) == 1 and named[0][1] == "unknown":
        named = [(named[0][0], CONTROL)]
    roles: dict[str, int] = {}
    for fd, name in named:
        role = _ROLES.get(name)
        if role is None:
            raise ActivationError(
                f"fd {fd} from systemd is named {name!r}; trustinstaller serves "
                f"FileDescriptorName={CONTROL} (trustinstaller.socket) and "
                f"FileDescriptorName={STATUS} (trustinstaller-status.socket) only"
            )
        if role in roles:
            raise ActivationError(
                f"systemd passed two {role} sockets (fds {roles[role]} and "
                f"{fd}); each socket unit must have one ListenStream="
            )
        roles[role] = fd
    if CONTROL not in roles:
        raise ActivationError(
            f"systemd passed no {CONTROL} socket (names: {':'.join(n for _, n in named)}); "
            f"trustinstaller.socket must set FileDescriptorName={CONTROL}"
        )
    return {role: _listening_unix(fd, role) for role, fd in roles.items()}


def listening_unix_socket(fds: list[int]) -> socket.socket:
    """The one listening AF_UNIX stream socket in ``fds``, or ActivationError."""
    if len(fds) != 1:
        raise ActivationError(
            f"systemd passed {len(fds)} sockets; "
            "the socket unit must have exactly one ListenStream="
        )
    return _listening_unix(fds[0], CONTROL)


def _listening_unix(fd: int, role: str) -> socket.socket:
    sock = socket.socket(fileno=fd)
    if sock.family != socket.AF_UNIX or sock.type != socket.SOCK_STREAM:
        sock.detach()
        raise ActivationError(
            f"fd {fd} ({role}) from systemd is {sock.family.name}/{sock.type.name}, "
            "not a Unix stream socket; use ListenStream=/path in the socket unit"
        )
    if not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
        sock.detach()
        raise ActivationError(f"fd {fd} ({role}) from systemd is not listening; use Accept=no")
    return sock


def notify(*fields: str, env: Mapping[str, str] | None = None) -> bool:
    """Send ``fields`` (``READY=1``, ``STATUS=...``) as one datagram; False if nobody asked."""
    target = (os.environ if env is None else env).get("NOTIFY_SOCKET", "")
    if not target or not fields:
        return False
    if target.startswith("@"):
        addr = "\0" + target[1:]
    elif target.startswith("/"):
        addr = target
    else:
        return False  # vsock and other schemes: systemd does not use them for services
    payload = "\n".join(f.replace("\n", " ") for f in fields).encode("utf-8", "replace")
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
            s.connect(addr)
            s.sendall(payload)
    except OSError:
        # Readiness is advisory: a vanished notify socket must not take the daemon down.
        return False
    return True


def describe(status: Status) -> str:
    """A one-line ``STATUS=`` text for a status document (what ``systemctl status`` shows)."""
    if status.state is State.OPEN:
        return "open: waiting for a manifest on the socket"
    if status.state is State.INSTALLING:
        return "installing: fetching, validating and installing certificates"
    if status.state is State.LOCKED:
        text = f"locked: {len(status.certificates)} certificate(s) installed"
        if status.warnings:
            text += f", {len(status.warnings)} warning(s)"
        return text + "; further manifests are refused"
    return f"failed: {len(status.errors)} error(s), nothing installed; see 'trustinstaller status'"
