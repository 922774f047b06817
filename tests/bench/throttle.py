"""A throttling proxy on 127.0.0.1 in front of moto: Secrets Manager's rate limit, simulated.

GetSecretValue calls above a token-bucket rate (and, optionally, a random fraction of the
rest, or the first N calls) get what AWS sends when an account is over its quota: HTTP 400
with a JSON ``ThrottlingException`` body, which botocore and the agent treat as retryable.
Every other call goes through to moto unchanged. The proxy counts calls per access key and
per secret, so a fleet run can say how many attempts each fetch took.

moto is a functional stand-in, not a performance model: one Python process answers a
thousand concurrent calls far slower than Secrets Manager does, and agents then time out
waiting for it. With ``cache``, the proxy asks moto once per secret and replays that answer,
so the run measures the agents and the rate limit rather than moto.
"""

from __future__ import annotations

import collections
import contextlib
import http.client
import http.server
import json
import random
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

_ACCESS_KEY = re.compile(r"Credential=([A-Z0-9]+)/")
THROTTLE_BODY = json.dumps(
    {"__type": "ThrottlingException", "message": "Rate exceeded (injected by the bench proxy)"}
).encode()


@dataclass
class Stats:
    """What the proxy saw."""

    forwarded: int = 0
    throttled: int = 0
    # (access key, secret id) -> attempts, throttled ones included
    attempts: collections.Counter[tuple[str, str]] = field(default_factory=collections.Counter)
    # access key -> (first request, last successful answer), monotonic seconds
    span: dict[str, list[float]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


class TokenBucket:
    """``rate`` tokens a second, at most ``burst`` saved up."""

    def __init__(self, rate: float, burst: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.stamp = time.monotonic()
        self.lock = threading.Lock()

    def take(self) -> bool:
        """Take one token if there is one."""
        with self.lock:
            now = time.monotonic()
            self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
            self.stamp = now
            if self.tokens >= 1:
                self.tokens -= 1
                return True
            return False


class Proxy(http.server.ThreadingHTTPServer):
    """The proxy server; its handler reads these attributes."""

    daemon_threads = True
    request_queue_size = 1024

    def __init__(
        self,
        upstream_port: int,
        bucket: TokenBucket | None,
        fraction: float,
        *,
        cache: bool,
        first: int = 0,
    ) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.upstream_port = upstream_port
        self.cache: dict[str, tuple[int, dict[str, str], bytes]] | None = {} if cache else None
        self.cache_lock = threading.Lock()
        self.bucket = bucket
        self.fraction = fraction
        self.first = first  # throttle this many GetSecretValue calls before any other rule
        self.stats = Stats()
        self.rng = random.Random(6)  # a fixed seed: the same pattern every run

    @property
    def endpoint(self) -> str:
        """The URL agents use instead of moto's."""
        return f"http://127.0.0.1:{self.server_address[1]}"

    def should_throttle(self) -> bool:
        """Whether this GetSecretValue call is over the simulated quota."""
        with self.stats.lock:
            if self.first != 0:
                self.first -= 1 if self.first > 0 else 0
                return True
        if self.bucket is not None and not self.bucket.take():
            return True
        return self.fraction > 0 and self.rng.random() < self.fraction


class _Handler(http.server.BaseHTTPRequestHandler):
    server: Proxy
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: the fleet run prints its own summary."""

    def do_POST(self) -> None:
        """Throttle or forward one call."""
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        target = self.headers.get("X-Amz-Target", "")
        stats = self.server.stats
        key = secret = ""
        if target.endswith(".GetSecretValue"):
            m = _ACCESS_KEY.search(self.headers.get("Authorization", ""))
            key = m.group(1) if m else "?"
            try:
                secret = str(json.loads(body).get("SecretId", "?"))
            except ValueError:
                secret = "?"
            with stats.lock:
                stats.attempts[(key, secret)] += 1
                stats.span.setdefault(key, [time.monotonic(), 0.0])
            if self.server.should_throttle():
                with stats.lock:
                    stats.throttled += 1
                self._answer(400, THROTTLE_BODY, {"x-amzn-ErrorType": "ThrottlingException"})
                return
        cache = self.server.cache
        hit = None
        if key and cache is not None:
            with self.server.cache_lock:
                hit = cache.get(secret)
        if hit is not None:
            status, headers, payload = hit[0], dict(hit[1]), hit[2]
        else:
            status, headers, payload = self._forward(body)
            if key and cache is not None and status == 200:
                with self.server.cache_lock:
                    cache[secret] = (status, dict(headers), payload)
        with stats.lock:
            stats.forwarded += 1
            if key and status == 200:
                stats.span[key][1] = time.monotonic()
        self._answer(status, payload, headers)

    def _forward(self, body: bytes) -> tuple[int, dict[str, str], bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.server.upstream_port, timeout=60)
        try:
            headers = {k: v for k, v in self.headers.items() if k.lower() != "connection"}
            conn.request("POST", self.path, body=body, headers=headers)
            resp = conn.getresponse()
            payload = resp.read()
            hop = {"connection", "transfer-encoding", "content-length"}
            keep = {k: v for k, v in resp.getheaders() if k.lower() not in hop}
            return resp.status, keep, payload
        finally:
            conn.close()

    def _answer(self, status: int, payload: bytes, headers: dict[str, str]) -> None:
        self.send_response(status)
        headers.setdefault("Content-Type", "application/x-amz-json-1.1")
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


@contextlib.contextmanager
def throttling_proxy(
    upstream_port: int,
    *,
    rate: float | None,
    burst: float,
    fraction: float = 0.0,
    cache: bool = True,
    first: int = 0,
) -> Iterator[Proxy]:
    """Run the proxy in a thread on a free loopback port; ``rate=None`` means no rate limit.

    ``first`` throttles that many GetSecretValue calls first, then applies the other rules;
    ``first=-1`` throttles every call.
    """
    bucket = TokenBucket(rate, burst) if rate else None
    proxy = Proxy(upstream_port, bucket, fraction, cache=cache, first=first)
    thread = threading.Thread(target=proxy.serve_forever, name="throttle-proxy", daemon=True)
    thread.start()
    try:
        yield proxy
    finally:
        proxy.shutdown()
        proxy.server_close()
