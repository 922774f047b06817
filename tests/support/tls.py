"""An HTTPS server on 127.0.0.1 whose certificate a test CA signed, and TLS probes."""

from __future__ import annotations

import contextlib
import http.server
import ssl
import tempfile
from collections.abc import Iterator
from pathlib import Path

from tests.support.certs import Issued, make_leaf
from tests.support.servers import running

PAGE = b"<html><body><h1 id='ok'>trusted by trustinstaller</h1></body></html>\n"


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(PAGE)))
        self.end_headers()
        self.wfile.write(PAGE)

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextlib.contextmanager
def serve_leaf(leaf: Issued, host: str = "127.0.0.1") -> Iterator[str]:
    """Serve PAGE over HTTPS with ``leaf`` on a free port of 127.0.0.1; yield the URL."""
    with tempfile.TemporaryDirectory() as tmp:
        chain = Path(tmp, "chain.pem")
        chain.write_text(leaf.pem)
        keyfile = Path(tmp, "key.pem")
        keyfile.write_text(leaf.key_pem)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(chain, keyfile)
        httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True)
        with running(httpd) as port:
            yield f"https://{host}:{port}/"


@contextlib.contextmanager
def https_server(ca: Issued, host: str = "127.0.0.1") -> Iterator[str]:
    """Serve PAGE over HTTPS with a fresh leaf for ``host`` signed by ``ca``; yield the URL."""
    with serve_leaf(make_leaf(ca, host), host) as url:
        yield url


def handshake(url: str, cafile: Path) -> str | None:
    """Do a TLS handshake and GET with ``cafile`` as the only trust; None on success, else why."""
    import urllib.request

    ctx = ssl.create_default_context(cafile=str(cafile))
    try:
        with urllib.request.urlopen(url, context=ctx, timeout=10) as resp:
            body = resp.read()
    except Exception as exc:  # noqa: BLE001 (the reason is the result)
        reason = getattr(exc, "reason", exc)
        return str(reason)
    return None if body == PAGE else "unexpected body"
