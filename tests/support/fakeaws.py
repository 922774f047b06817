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
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any


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


@contextlib.contextmanager
def fake_secretsmanager(status: int, body: dict[str, Any]) -> Iterator[FakeAws]:
    """Answer every request with HTTP ``status`` and the JSON ``body``; yield the server."""
    payload = json.dumps(body).encode()
    state: list[FakeAws] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            self.rfile.read(length)
            with state[0].lock:
                state[0].targets.append(self.headers.get("X-Amz-Target", ""))
            self.send_response(status)
            self.send_header("Content-Type", "application/x-amz-json-1.1")
            self.send_header("Content-Length", str(len(payload)))
            self.send_header("x-amzn-RequestId", "fake-request-id")
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: object) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    state.append(FakeAws(endpoint=f"http://127.0.0.1:{httpd.server_address[1]}"))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield state[0]
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)
