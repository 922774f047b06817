"""HTTP on the daemon's socket against real slow and malformed clients.

A whole-request deadline, no body on a GET, a strict Content-Length, and slots kept for
root under a flood of slow connections from another uid.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from tests.support.builders import manifest
from tests.support.daemon import Daemon, request, write_config
from trustinstaller import server
from trustinstaller.config import Config

TIMEOUT = 2.5  # the daemon's request_timeout in these tests
DRIP = 0.5  # seconds between two bytes of a dripped request


@contextlib.contextmanager
def running_daemon(config: Config, tmp_path: Path, **changes: Any) -> Iterator[Daemon]:
    """A daemon with a short request_timeout, its socket where another uid can reach it."""
    sockdir = Path(tempfile.mkdtemp(prefix="trustinstaller-sock-"))
    sockdir.chmod(0o755)
    sock = sockdir / "ti.sock"
    cfg = write_config(replace(config, socket=sock, request_timeout=TIMEOUT, **changes),
                       tmp_path / "config.toml")  # fmt: skip
    try:
        with Daemon(cfg, sock) as d:
            yield d
    finally:
        for p in sockdir.iterdir():
            p.unlink()
        sockdir.rmdir()


@pytest.fixture
def daemon(config: Config, tmp_path: Path) -> Iterator[Daemon]:
    """A running daemon with request_timeout = TIMEOUT."""
    with running_daemon(config, tmp_path) as d:
        yield d


def connect(path: Path) -> socket.socket:
    """A connected client socket."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(30)
    s.connect(str(path))
    return s


def read_all(s: socket.socket) -> bytes:
    """Everything the daemon sends until it closes the connection."""
    chunks = []
    try:
        while chunk := s.recv(65536):
            chunks.append(chunk)
    except ConnectionResetError:
        pass  # closed with our unread bytes in its queue: what came before still counts
    return b"".join(chunks)


def drip(s: socket.socket, data: bytes) -> tuple[bytes, float]:
    """Send ``data`` one byte per DRIP seconds until the daemon answers or closes.

    Returns what the daemon sent and how many seconds the drip lasted.
    """
    started = time.monotonic()
    s.settimeout(DRIP)
    for byte in data:
        try:
            s.sendall(bytes([byte]))
            chunk = s.recv(65536)  # waits one drip interval for an answer
        except TimeoutError:
            continue
        except (BrokenPipeError, ConnectionResetError):
            return b"", time.monotonic() - started
        s.settimeout(30)
        return chunk + (read_all(s) if chunk else b""), time.monotonic() - started
    return b"", time.monotonic() - started


def test_dripped_body_is_cut_at_the_request_deadline(daemon: Daemon) -> None:
    """A body sent one byte per 0.5 s is answered 408 about request_timeout after the request."""
    body = b'{"certificates": []}' + b" " * 30  # 50 bytes: 25 s at one byte per drip
    with connect(daemon.socket_path) as s:
        s.sendall(f"PUT /v1/manifest HTTP/1.1\r\nContent-Length: {len(body)}\r\n\r\n".encode())
        answer, seconds = drip(s, body)
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert seconds < 4 * TIMEOUT, seconds  # the drip would have lasted 25 s
    assert daemon.status()["state"] == "open"


def test_dripped_headers_are_cut_at_the_request_deadline(daemon: Daemon) -> None:
    """A request line and headers sent one byte per 0.5 s are dropped at the deadline."""
    head = b"GET /v1/status HTTP/1.1\r\nX-Slow: " + b"a" * 50 + b"\r\n\r\n"
    with connect(daemon.socket_path) as s:
        answer, seconds = drip(s, head)
    assert not answer.startswith(b"HTTP/1.1 200"), answer[:200]
    assert seconds < 4 * TIMEOUT, seconds  # the drip would have lasted 35 s


def test_deadline_starts_again_with_each_request(daemon: Daemon) -> None:
    """Each request on a connection gets its own deadline: two, 0.6 timeouts apart, are served."""
    with connect(daemon.socket_path) as s:
        s.sendall(b"GET /v1/status HTTP/1.1\r\n\r\n")
        time.sleep(TIMEOUT * 0.6)
        s.sendall(b"GET /v1/status HTTP/1.1\r\nConnection: close\r\n\r\n")
        answer = read_all(s)
    assert answer.count(b"HTTP/1.1 200") == 2, answer


@contextlib.contextmanager
def slow_endpoint(delay: float) -> Iterator[str]:
    """An HTTP endpoint on 127.0.0.1 that answers every call "not found" after ``delay`` s."""

    class Slow(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            time.sleep(delay)
            payload = b'{"__type": "ResourceNotFoundException", "message": "gone"}'
            self.send_response(400)
            self.send_header("Content-Type", "application/x-amz-json-1.1")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: object) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Slow)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_an_install_longer_than_the_deadline_is_answered(config: Config, tmp_path: Path) -> None:
    """Only reading is bounded: an install that outlasts request_timeout still gets its answer."""
    arn = "arn:aws:secretsmanager:us-east-1:123456789012:secret:slow-AbCdEf"
    with (
        slow_endpoint(TIMEOUT * 1.5) as endpoint,
        running_daemon(config, tmp_path, endpoint_url=endpoint) as d,
    ):
        started = time.monotonic()
        code, answer = d.put(manifest([arn]))
        seconds = time.monotonic() - started
    assert seconds > TIMEOUT  # the install did outlast the deadline
    assert (code, answer["outcome"]) == (502, "fetch_failed"), answer
    assert "not found (ResourceNotFoundException)" in answer["message"]


@pytest.mark.parametrize(
    "head",
    [
        b"GET /v1/status HTTP/1.1\r\nContent-Length: 23\r\n\r\n",
        b"GET /v1/status HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n17\r\n",
    ],
    ids=["content-length", "chunked"],
)
def test_get_with_a_body_is_refused(daemon: Daemon, head: bytes) -> None:
    """A GET with a body is answered 400 alone: the body is never parsed as a second request."""
    smuggled = b"GET /nope HTTP/1.1\r\n\r\n"
    with connect(daemon.socket_path) as s:
        s.sendall(head + smuggled)
        answer = read_all(s)
    assert answer.startswith(b"HTTP/1.1 400"), answer[:200]
    assert answer.count(b"HTTP/1.1 ") == 1, answer
    assert b"may not have a body" in answer


@pytest.mark.parametrize(
    "lengths",
    [["+2"], ["0_2"], ["-0"], ["2 "], ["0x2"], ["\u0662"], [""], ["2", "2"], ["2", "3"]],
    ids=["plus", "underscore", "minus-zero", "trailing-space", "hex", "arabic-digit", "empty",
         "duplicate-same", "duplicate-different"],
)  # fmt: skip
def test_content_length_must_be_one_header_of_digits(daemon: Daemon, lengths: list[str]) -> None:
    """A Content-Length that is not plain digits, or given twice, is 400 and installs nothing."""
    head = "PUT /v1/manifest HTTP/1.1\r\n" + "".join(f"Content-Length: {v}\r\n" for v in lengths)
    with connect(daemon.socket_path) as s:
        s.sendall(head.encode() + b"\r\n{}")
        answer = read_all(s)
    assert answer.startswith(b"HTTP/1.1 400"), answer[:200]
    assert daemon.status()["state"] == "open"


def test_plain_content_length_still_works(daemon: Daemon) -> None:
    """A body with a plain Content-Length, and a GET with Content-Length: 0, are served."""
    assert (
        request(daemon.socket_path, "GET", "/v1/status", headers={"Content-Length": "0"})[0] == 200
    )
    code, answer = daemon.put(b"{}")
    assert (code, answer["state"]) == (200, "locked")


def test_slots_keep_room_for_privileged_uids() -> None:
    """Other uids share at most MAX_CONNECTIONS - RESERVED_SLOTS slots, MAX_PER_OTHER_UID each."""
    slots = server.Slots(frozenset({0}))
    per, shared = server.MAX_PER_OTHER_UID, server.MAX_CONNECTIONS - server.RESERVED_SLOTS
    others = list(range(1000, 1000 + shared // per))
    assert all(slots.take(uid) for uid in others for _ in range(per))
    assert not slots.take(others[0])  # over its own cap
    assert not slots.take(5000)  # the shared slots are all taken
    assert all(slots.take(0) for _ in range(server.RESERVED_SLOTS))  # root's are still there
    assert not slots.take(0)  # MAX_CONNECTIONS in all
    slots.give_back(others[0])
    assert slots.take(5000)  # a freed slot goes back to the shared pool
    assert not slots.take(others[0])
    slots.give_back(0)
    assert not slots.take(others[0])  # a freed reserved slot stays reserved
    assert slots.take(0)
    one = server.Slots(frozenset({0}))
    assert [one.take(7) for _ in range(per + 1)] == [True] * per + [False]


# Run as uid 65534 by system python, stdlib only: keep ``n`` connections dripping a PUT for
# ``seconds``, opening a new one whenever the daemon answers or closes one. Prints "ready"
# once all are open, and at the end how many the daemon refused at once and how many it held
# (answered or closed 1.5 s or more after they opened, or still open).
FLOOD = r"""
import json, socket, sys, time
path, n, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
head = b"PUT /v1/manifest HTTP/1.1\r\nContent-Length: 100000\r\n\r\n"
counts = {"opened": 0, "refused": 0, "held": 0}
def opened():
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(path)
    s.setblocking(False)
    try:
        s.send(head[:1])
    except OSError:
        pass  # answered 503 and closed already: the loop reads that and opens another
    counts["opened"] += 1
    return [s, 1, time.monotonic()]
conns = [opened() for _ in range(n)]
print("ready", flush=True)
end = time.monotonic() + seconds
while time.monotonic() < end:
    for i, c in enumerate(conns):
        s, sent, since = c
        try:
            s.recv(4096)  # an answer (503, 408) or the end: either way, this one is over
        except BlockingIOError:
            pass  # still being held
        except OSError:
            s.close()
            conns[i] = opened()
            continue
        else:
            counts["refused" if time.monotonic() - since < 1.5 else "held"] += 1
            s.close()
            conns[i] = opened()
            continue
        try:
            s.send((head + b"x" * 100000)[sent:sent + 1])
            c[1] += 1
        except BlockingIOError:
            pass
        except OSError:
            s.close()
            conns[i] = opened()
    time.sleep(0.5)
counts["held"] += sum(1 for s, _, since in conns if time.monotonic() - since >= 1.5)
print(json.dumps(counts), flush=True)
"""


@pytest.mark.root
def test_flood_from_another_uid_does_not_lock_out_root(daemon: Daemon) -> None:
    """With 40 dripping connections from uid 65534, root's GET /v1/status is served every time."""
    assert os.geteuid() == 0, "this test runs as root in CI"
    daemon.socket_path.chmod(0o666)
    tries = 8
    with subprocess.Popen(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
         "/usr/bin/python3", "-c", FLOOD, str(daemon.socket_path), "40", str(tries * 0.5 + 4)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    ) as flood:  # fmt: skip
        assert flood.stdout is not None
        assert flood.stdout.readline().strip() == "ready", flood.stderr
        time.sleep(1.0)  # every dripping connection has been accepted or refused by now
        codes: list[int | str] = []
        for _ in range(tries):
            try:
                codes.append(request(daemon.socket_path, "GET", "/v1/status")[0])
            except OSError as exc:  # answered 503 and closed before the request was sent
                codes.append(type(exc).__name__)
            time.sleep(0.5)
        out, err = flood.communicate(timeout=60)
    assert out.strip(), err
    counts = json.loads(out.strip().splitlines()[-1])
    assert codes == [200] * tries, (codes, counts)
    assert counts["held"] >= 1, (counts, err)  # the flood really held slots
