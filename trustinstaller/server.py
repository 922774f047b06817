"""The daemon's HTTP/1.1 API on a Unix socket: peer credentials, size caps, JSON answers.

``curl --unix-socket /run/trustinstaller/trustinstaller.sock http://localhost/v1/status``
works for debugging. Every request is checked with SO_PEERCRED, whatever the
socket file's mode says.

The daemon may serve two sockets, each with a Server of its own (its own backlog, accept
thread and slots): the control socket, which root and ``allowed_uids`` reach, and, with
``socket_group``, a read-only status socket for that group, which answers GET only.
"""

from __future__ import annotations

import contextlib
import http.server
import io
import json
import re
import secrets
import socket
import socketserver
import struct
import threading
import time
from typing import Any

import structlog

from trustinstaller import documents, log
from trustinstaller.documents import Answer
from trustinstaller.errors import Outcome, TrustInstallerError
from trustinstaller.installer import Installer

MAX_BODY = 1024 * 1024
# Connections served at once; more are answered 503 at once, so a flood of stalled clients
# cannot pin an unbounded number of threads.
MAX_CONNECTIONS = 32
# Of those, slots that only root and the uids in allowed_uids may take: other peers who may
# connect (the socket's group) cannot hold every slot, so an allowed uid is still served.
RESERVED_SLOTS = 8
# Slots one uid outside allowed_uids may hold at once, so that one such peer cannot take
# the shared slots from the others.
MAX_PER_OTHER_UID = 8
# RFC 9110's Content-Length is 1*DIGIT: Python's int() would also take "+2", "0_2", "-0".
_CONTENT_LENGTH = re.compile(r"[0-9]{1,16}")
# Request threads' names: the idle exit waits for the first kind only.
REQUEST = "request"
OTHER_REQUEST = "request-other"


def _unavailable(error: str) -> bytes:
    """A whole 503 answer, sent from the accept thread without a handler."""
    body = json.dumps(documents.answer_to_json(Answer(error=error))).encode() + b"\n"
    return (
        b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
        b"Connection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    )


_TOO_MANY = _unavailable("too many connections; try again")
# A thread could not be started (the service's task limit, or memory, is used up). The slot is
# given back at once, so the daemon serves again as soon as threads can be had.
_NO_THREAD = _unavailable("cannot start a thread right now; try again")


class DeadlineReader(io.RawIOBase):
    """A socket's bytes, each read given only the time left before the request's deadline.

    A socket timeout alone bounds each read, not the request: a body dripped one byte per
    second against a 10 s timeout would hold its thread for as long as the body is long.
    """

    def __init__(self, sock: socket.socket, timeout: float) -> None:
        self._sock = sock
        self._timeout = timeout
        self.deadline = time.monotonic() + timeout

    def start(self) -> None:
        """A new request begins: its request line, headers and body get ``timeout`` in all."""
        self.deadline = time.monotonic() + self._timeout

    def readable(self) -> bool:
        """Yes: this is the read side of the connection."""
        return True

    def readinto(self, buffer: Any) -> int:
        """Receive into ``buffer``; TimeoutError once the request's deadline has passed."""
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("request not received within request_timeout")
        self._sock.settimeout(left)
        try:
            return self._sock.recv_into(buffer)
        finally:
            # The answer is written with the whole timeout, not what the reads left of it.
            self._sock.settimeout(self._timeout)


class Handler(http.server.BaseHTTPRequestHandler):
    """One request: route, check the peer, answer JSON."""

    server: Server
    protocol_version = "HTTP/1.1"
    server_version = "trustinstaller"
    sys_version = ""

    def setup(self) -> None:
        """Read through a DeadlineReader, so a slow client cannot hold a thread past the timeout."""
        self.request.settimeout(self.server.request_timeout)
        super().setup()
        self.rfile.close()  # the socket's own reader: its reference would keep the socket open
        self.reader = DeadlineReader(self.request, self.server.request_timeout)
        self.rfile = io.BufferedReader(self.reader)
        # On the status socket nobody is privileged: every connection gets one answer.
        self.privileged = (
            not self.server.read_only and self._peer()[1] in self.server.slots.privileged
        )

    def handle_one_request(self) -> None:
        """Serve one request; only reading it is bounded by the deadline, never the install.

        A peer outside allowed_uids gets one request per connection, read within one
        request_timeout from the accept: that is its connection's lifetime and idle limit, so a
        keep-alive that polls the status cannot hold a thread, a slot, or a locked daemon that
        would exit when idle.
        """
        if self.privileged:
            self.reader.start()
        super().handle_one_request()

    def parse_request(self) -> bool:
        """Parse the request line and headers; refuse a Content-Length that is not plain digits."""
        if not super().parse_request():
            return False
        if not self.privileged:
            self.close_connection = True  # one request per connection (see handle_one_request)
        lengths = self.headers.get_all("Content-Length") or []
        if len(lengths) > 1:
            self.send_error(400, "more than one Content-Length header")
            return False
        if lengths and not _CONTENT_LENGTH.fullmatch(lengths[0]):
            self.send_error(400, "Content-Length must be 1 to 16 digits")
            return False
        return True

    def do_GET(self) -> None:
        """``GET /v1/status``."""
        with self._context():
            # Not read and not ignored: left unread, a body would be parsed as the next request.
            if "Transfer-Encoding" in self.headers or int(self.headers.get("Content-Length", 0)):
                self._send(400, Answer(error="a GET request may not have a body"))
                return
            if self.path.split("?", 1)[0] != "/v1/status":
                self._send(404, Answer(error=f"no such resource {self._path()}; try /v1/status"))
                return
            self._send(200, Answer(self.server.installer.status()))

    def do_PUT(self) -> None:
        """``PUT /v1/manifest``."""
        with self._context():
            if self.server.read_only:
                log.get().warning(
                    "peer_refused",
                    peer_uid=self._peer()[1],
                    reason="status_socket",
                    outcome=Outcome.FORBIDDEN.label,
                )
                self._wrong_method()
                return
            if self.path != "/v1/manifest":
                self._send(404, Answer(error=f"no such resource {self._path()}; PUT /v1/manifest"))
                return
            uid = self._peer()[1]
            if uid not in self.server.allowed_uids:
                log.get().warning("peer_refused", peer_uid=uid, outcome=Outcome.FORBIDDEN.label)
                self._send(403, Answer(outcome=Outcome.FORBIDDEN.label,
                                       message=f"uid {uid} may not submit a manifest"))  # fmt: skip
                return
            body = self._read_body()
            if body is None:
                return
            started = time.monotonic()
            try:
                status = self.server.installer.submit(body)
                outcome, message = Outcome.INSTALLED, "installed and locked"
            except TrustInstallerError as exc:
                status = self.server.installer.status()
                outcome, message = exc.outcome, exc.diagnostics()
            except Exception as exc:  # noqa: BLE001 (the daemon answers and keeps serving)
                log.get().error("internal_error", error=type(exc).__name__)
                status = self.server.installer.status()
                outcome, message = Outcome.INTERNAL, f"internal error ({type(exc).__name__})"
            log.get().info(
                "manifest_answered",
                outcome=outcome.label,
                duration_ms=round((time.monotonic() - started) * 1000),
            )
            self._send(outcome.http_status, Answer(status, outcome.label, message))

    def do_POST(self) -> None:
        """Wrong method: say which one to use."""
        self._wrong_method()

    do_DELETE = do_PATCH = do_POST  # noqa: N815 (http.server's naming)

    def _wrong_method(self) -> None:
        self.close_connection = True
        if self.server.read_only:
            self._send(
                405,
                Answer(
                    error=f"method {self.command} not allowed on the status socket, "
                    "which answers GET /v1/status only; a manifest goes to the control socket"
                ),
                allow="GET",
            )
            return
        self._send(405, Answer(error=f"method {self.command} not allowed; use GET /v1/status "
                                     "or PUT /v1/manifest"), allow="GET, PUT")  # fmt: skip

    def _read_body(self) -> bytes | None:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self._send(411, Answer(error="chunked bodies are not accepted; send Content-Length"))
            return None
        raw = self.headers.get("Content-Length")
        if raw is None:
            self._send(411, Answer(error="Content-Length is required"))
            return None
        try:
            length = int(raw)
            if length < 0:
                raise ValueError
        except ValueError:
            self._send(400, Answer(error="Content-Length is not a non-negative integer"))
            return None
        if length > MAX_BODY:
            # Refused without reading it; the connection is closed, not drained.
            self._send(413, Answer(error=f"body of {length} bytes is over the {MAX_BODY}-byte cap"))
            return None
        try:
            body = self.rfile.read(length)
        except TimeoutError:
            self._send(408, Answer(error="timed out reading the body"))
            return None
        if len(body) != length:
            self._send(400, Answer(error="body shorter than Content-Length"))
            return None
        return body

    def _peer(self) -> tuple[int, int, int]:
        creds = self.request.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                        struct.calcsize("3i"))  # fmt: skip
        pid, uid, gid = struct.unpack("3i", creds)
        return pid, uid, gid

    def _path(self) -> str:
        return self.path[:100]

    @contextlib.contextmanager
    def _context(self) -> Any:
        pid, uid, _gid = self._peer()
        with structlog.contextvars.bound_contextvars(
            request_id=secrets.token_hex(6), peer_uid=uid, peer_pid=pid
        ):
            yield

    def _send(self, code: int, answer: Answer, **headers: str) -> None:
        doc = documents.answer_to_json(answer)
        payload = json.dumps(doc, indent=2, sort_keys=True).encode() + b"\n"
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        for k, v in headers.items():
            self.send_header(k.capitalize(), v)
        if code >= 400:
            self.close_connection = True
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        with contextlib.suppress(OSError):
            self.wfile.write(payload)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """Malformed HTTP gets a JSON 4xx too, with a status line even for an unparsed request."""
        self.close_connection = True
        # http.server leaves request_version at HTTP/0.9 when the request line is garbage,
        # and then sends no status line at all.
        self.request_version = self.protocol_version
        with contextlib.suppress(OSError):
            self._send(code, Answer(error=(message or "bad request")[:200]))

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (http.server's name)
        """Silenced: requests are logged as structured events instead."""


class Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    """A threading HTTP server on a Unix socket, possibly inherited from systemd."""

    daemon_threads = True
    allow_reuse_address = False

    def __init__(
        self, installer: Installer, sock: socket.socket, *, read_only: bool = False
    ) -> None:
        self.installer = installer
        # The status socket: GET only, and its connections never hold a stopping or idle daemon.
        self.read_only = read_only
        self.allowed_uids = frozenset(installer.config.allowed_uids)
        self.request_timeout = installer.config.request_timeout
        self.slots = Slots(self.allowed_uids | {0})
        # The request threads server_close() joins (ThreadingMixIn keeps its own the same way).
        self._threads: Any = socketserver._Threads()  # type: ignore[attr-defined]
        # Connections from uids outside allowed_uids, so that a stop can end them at once.
        self._others: set[socket.socket] = set()
        self._others_lock = threading.Lock()
        super().__init__(str(sock.getsockname()), Handler, bind_and_activate=False)
        self.socket.close()
        self.socket = sock

    def process_request(self, request: Any, client_address: Any) -> None:
        """Serve in a thread, unless the peer's uid may not take another slot now.

        Not ThreadingMixIn's: it records the thread before starting it, so a thread that cannot
        start keeps its slot for ever and is joined (and raises) when the server closes.
        """
        uid = client_address[1]
        if not self.slots.take(uid):
            self._refuse(request, _TOO_MANY)
            return
        privileged = uid in self.slots.privileged and not self.read_only
        t = threading.Thread(target=self.process_request_thread, args=(request, client_address),
                             name=REQUEST if privileged else OTHER_REQUEST,
                             daemon=self.daemon_threads)  # fmt: skip
        if not privileged:
            with self._others_lock:
                self._others.add(request)
        try:
            t.start()
        except RuntimeError:  # "can't start new thread": the task limit or memory is used up
            self._forget(request)
            self.slots.give_back(uid)
            log.get().warning("connection_refused", peer_uid=uid, reason="no_thread")
            self._refuse(request, _NO_THREAD)
            return
        if self.block_on_close:
            # Recorded only once started: server_close() joins each one.
            self._threads.append(t)

    def _refuse(self, request: socket.socket, answer: bytes) -> None:
        with contextlib.suppress(OSError):
            request.sendall(answer)
        self.shutdown_request(request)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        """Serve one connection, then give its slot back."""
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._forget(request)
            self.slots.give_back(client_address[1])

    def _forget(self, request: socket.socket) -> None:
        with self._others_lock:
            self._others.discard(request)

    def drop_others(self) -> None:
        """End every connection from a uid outside allowed_uids (and on the status socket) now.

        Such a peer may only read the status, and must not hold a stopping daemon (the idle
        exit of a locked one included) for the rest of its request_timeout.
        """
        with self._others_lock:
            for conn in self._others:
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)

    def get_request(self) -> tuple[socket.socket, Any]:
        """Accept; the address is ("unix", the peer's uid from SO_PEERCRED)."""
        conn, _ = self.socket.accept()
        try:
            creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
            uid = struct.unpack("3i", creds)[1]
        except OSError:
            uid = -1  # counted as a peer outside allowed_uids
        return conn, ("unix", uid)


class Slots:
    """Who may take one of the MAX_CONNECTIONS slots: some are kept for the privileged uids."""

    def __init__(self, privileged: frozenset[int]) -> None:
        self.privileged = privileged
        self._lock = threading.Lock()
        self._by_uid: dict[int, int] = {}

    def take(self, uid: int) -> bool:
        """Take a slot for a connection from ``uid``; False if it may not have one now."""
        with self._lock:
            total = sum(self._by_uid.values())
            if total >= MAX_CONNECTIONS:
                return False
            if uid not in self.privileged:
                others = sum(n for u, n in self._by_uid.items() if u not in self.privileged)
                if others >= MAX_CONNECTIONS - RESERVED_SLOTS:
                    return False
                if self._by_uid.get(uid, 0) >= MAX_PER_OTHER_UID:
                    return False
            self._by_uid[uid] = self._by_uid.get(uid, 0) + 1
            return True

    def give_back(self, uid: int) -> None:
        """Return the slot a connection from ``uid`` held."""
        with self._lock:
            self._by_uid[uid] -= 1
            if not self._by_uid[uid]:
                del self._by_uid[uid]
