"""A client of the daemon's sockets run as another uid, by the system's python.

The other uid cannot run the venv's interpreter (it may sit under root's 0700 home), so each
client is a stdlib script run by /usr/bin/python3 under ``setpriv``, with only the uid and gid
given and no supplementary groups.
"""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

NOBODY = 65534  # nobody, in nogroup (gid 65534) on Debian
SYSTEM_PYTHON = "/usr/bin/python3"

# Connect to the socket and send one request (GET /v1/status, or PUT {} with PUT as the second
# argument, POST with POST); print the status line and the JSON body's "error" or "state", or the
# connect error's errno name.
CLIENT = r"""
import errno, json, socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.settimeout(30)
try:
    s.connect(sys.argv[1])
except OSError as exc:
    print(errno.errorcode[exc.errno])
    sys.exit(0)
method = sys.argv[2] if sys.argv[2:] else "GET"
url = "/v1/status" if method == "GET" else "/v1/manifest"
s.sendall(f"{method} {url} HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{{}}".encode()
          if method != "GET" else b"GET /v1/status HTTP/1.1\r\nHost: x\r\n\r\n")
data = b""
while chunk := s.recv(65536):
    data += chunk
head, _, body = data.partition(b"\r\n\r\n")
doc = json.loads(body)
print(head.split(b"\r\n", 1)[0].decode(), doc.get("error") or doc.get("state"), sep="\n")
"""

# For ``seconds``, keep one connection to the socket and send GET /v1/status on it every
# ``every`` seconds, reconnecting whenever the daemon closes it; print a line for each answer.
KEEPALIVE = r"""
import socket, sys, time
path, seconds, every = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
req = b"GET /v1/status HTTP/1.1\r\nHost: x\r\n\r\n"
end, s = time.monotonic() + seconds, None
while time.monotonic() < end:
    try:
        if s is None:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(5)
            s.connect(path)
        s.sendall(req)
        if s.recv(65536):
            print("answer", flush=True)
        else:
            s.close(); s = None
            continue
    except OSError:
        if s is not None:
            s.close()
        s = None
    time.sleep(every)
"""


def as_uid(uid: int, gid: int, *argv: str) -> list[str]:
    """``argv`` run with only this uid and gid, no supplementary groups."""
    return ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups", *argv]


def run_as(
    uid: int, gid: int, *argv: str, input: str | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` as this uid and gid from /, with ``input`` (else nothing) on stdin."""
    return subprocess.run(
        as_uid(uid, gid, *argv),
        capture_output=True, text=True, timeout=timeout, check=False, cwd="/", input=input,
        stdin=None if input is not None else subprocess.DEVNULL,
    )  # fmt: skip


def client(uid: int, gid: int, sock: Path, method: str = "GET") -> list[str]:
    """What a client with this uid and gid gets: [status line, error or state], or [errno]."""
    done = run_as(uid, gid, SYSTEM_PYTHON, "-I", "-c", CLIENT, str(sock), method)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()


@dataclass
class Polls:
    """What the keep-alive poller printed, once it has been stopped."""

    out: str = ""
    err: str = ""


@contextlib.contextmanager
def keepalive_polls(
    sock: Path, seconds: float, every: float = 1.0, *, uid: int = NOBODY, gid: int = NOBODY
) -> Iterator[Polls]:
    """Keep-alive status polls on ``sock`` as ``uid`` while the block runs; killed after it."""
    poller = subprocess.Popen(
        as_uid(uid, gid, SYSTEM_PYTHON, "-I", "-c", KEEPALIVE, str(sock), str(seconds),
               str(every)),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd="/",
    )  # fmt: skip
    polls = Polls()
    try:
        yield polls
    finally:
        poller.kill()
        polls.out, polls.err = poller.communicate(timeout=30)


def exit_code_within(proc: subprocess.Popen[Any], timeout: float) -> int | None:
    """``proc``'s exit code, or None when it still runs after ``timeout`` seconds."""
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        return None
