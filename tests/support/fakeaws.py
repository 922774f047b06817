"""A tiny real HTTP server on 127.0.0.1 that answers every Secrets Manager call with one
canned JSON reply, for failures moto cannot produce (throttling, KMS decryption failure).

botocore talks to it over a real socket, so its retry logic runs for real; the server
counts the requests it received.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email.message import Message
from typing import Any

from tests.support.servers import running


@dataclass
class FakeAws:
    """Where the fake server listens and what it has been asked."""

    endpoint: str
    targets: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def requests(self) -> int:
        """How many requests the server has answered."""
        with self.lock:
            return len(self.targets)


# What a server's answer function gets (the request's headers and body) and gives back
# (the HTTP status and the JSON payload).
Answer = Callable[[Message, bytes], tuple[int, bytes]]


@contextlib.contextmanager
def serving(answer: Answer, request_id: str) -> Iterator[str]:
    """Serve AWS-JSON answers from ``answer`` on a free port of 127.0.0.1; yield the endpoint."""

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            status, payload = answer(self.headers, self.rfile.read(length))
            self.send_response(status)
            self.send_header("Content-Type", "application/x-amz-json-1.1")
            self.send_header("Content-Length", str(len(payload)))
            self.send_header("x-amzn-RequestId", request_id)
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: object) -> None:
            pass

    with running(http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)) as port:
        yield f"http://127.0.0.1:{port}"


@contextlib.contextmanager
def fake_secretsmanager(status: int, body: dict[str, Any]) -> Iterator[FakeAws]:
    """Answer every request with HTTP ``status`` and the JSON ``body``; yield the server."""
    payload = json.dumps(body).encode()
    fake = FakeAws(endpoint="")

    def answer(headers: Message, _body: bytes) -> tuple[int, bytes]:
        with fake.lock:
            fake.targets.append(headers.get("X-Amz-Target", ""))
        return status, payload

    with serving(answer, "fake-request-id") as endpoint:
        fake.endpoint = endpoint
        yield fake
