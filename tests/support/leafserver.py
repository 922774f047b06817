"""An HTTPS server on 127.0.0.1 that serves a leaf the test chose: expired, misnamed, ..."""

from __future__ import annotations

import contextlib
import datetime as dt
import http.server
import ssl
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.support.certs import Issued
from tests.support.tls import PAGE


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(PAGE)))
        self.end_headers()
        self.wfile.write(PAGE)

    def log_message(self, format: str, *args: object) -> None:
        pass


def make_leaf_at(
    ca: Issued, *, dns: str | None = None, not_before: dt.datetime, not_after: dt.datetime
) -> Issued:
    """A server leaf for 127.0.0.1 (or for ``dns`` alone), valid between the two times."""
    import ipaddress

    k = ec.generate_private_key(ec.SECP256R1())
    san: x509.GeneralName = (
        x509.DNSName(dns) if dns else x509.IPAddress(ipaddress.ip_address("127.0.0.1"))
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, dns or "127.0.0.1")]))
        .issuer_name(ca.cert.subject)
        .public_key(k.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.SubjectAlternativeName([san]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(ca.key, hashes.SHA256())  # type: ignore[arg-type]
    )
    return Issued(cert, k)


@contextlib.contextmanager
def serve_leaf(leaf: Issued) -> Iterator[str]:
    """Serve PAGE over HTTPS with ``leaf`` on a free port of 127.0.0.1; yield the URL."""
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "leaf.pem").write_text(leaf.pem)
        Path(tmp, "key.pem").write_text(leaf.key_pem)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(Path(tmp, "leaf.pem"), Path(tmp, "key.pem"))
        httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        httpd.daemon_threads = True
        httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True)
        t = threading.Thread(target=httpd.serve_forever, daemon=True)
        t.start()
        try:
            yield f"https://127.0.0.1:{httpd.server_address[1]}/"
        finally:
            httpd.shutdown()
            httpd.server_close()
