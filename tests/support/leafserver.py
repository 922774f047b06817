"""An HTTPS server on 127.0.0.1 that serves a leaf the test chose: expired, misnamed, ..."""

from __future__ import annotations

import datetime as dt

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.support.certs import Issued
from tests.support.tls import serve_leaf


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
        # Strict verifiers (Python >= 3.13) refuse a leaf without it before any other check.
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.cert.public_key()),  # type: ignore[arg-type]
            critical=False,
        )
        .sign(ca.key, hashes.SHA256())  # type: ignore[arg-type]
    )
    return Issued(cert, k)


__all__ = ["make_leaf_at", "serve_leaf"]
