"""Make certificates in the test, with ``cryptography``: CAs, leaves, and broken ones."""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

KeyType = Literal["rsa2048", "rsa1024", "rsa3072", "ec256", "ec224", "ec384", "ed25519", "dsa2048"]
NOW = dt.datetime(2026, 11, 28, 12, 0, tzinfo=dt.UTC)

_KEY_CACHE: dict[str, object] = {}


def key(kind: KeyType = "ec256", *, fresh: bool = False) -> object:
    """A private key of ``kind``; RSA keys are cached because they are slow to make."""
    if not fresh and kind in _KEY_CACHE:
        return _KEY_CACHE[kind]
    k: object
    if kind.startswith("rsa"):
        k = rsa.generate_private_key(public_exponent=65537, key_size=int(kind[3:]))
    elif kind == "ec256":
        k = ec.generate_private_key(ec.SECP256R1())
    elif kind == "ec224":
        k = ec.generate_private_key(ec.SECP224R1())
    elif kind == "ec384":
        k = ec.generate_private_key(ec.SECP384R1())
    elif kind == "ed25519":
        k = ed25519.Ed25519PrivateKey.generate()
    elif kind == "dsa2048":
        k = dsa.generate_private_key(key_size=2048)
    else:
        raise ValueError(kind)
    if not fresh:
        _KEY_CACHE[kind] = k
    return k


@dataclass
class Issued:
    """A certificate and its private key."""

    cert: x509.Certificate
    key: object

    @property
    def pem(self) -> str:
        """The certificate as PEM text."""
        return self.cert.public_bytes(serialization.Encoding.PEM).decode()

    @property
    def der(self) -> bytes:
        """The certificate as DER."""
        return self.cert.public_bytes(serialization.Encoding.DER)

    @property
    def key_pem(self) -> str:
        """The private key as unencrypted PKCS#8 PEM."""
        return self.key.private_bytes(  # type: ignore[attr-defined]
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode()


def _sign_hash(k: object) -> hashes.HashAlgorithm | None:
    return None if isinstance(k, ed25519.Ed25519PrivateKey) else hashes.SHA256()


def make_ca(
    cn: str = "trustinstaller test CA",
    *,
    key_type: KeyType = "ec256",
    fresh_key: bool = True,
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
    basic_constraints: bool | None = True,
    issuer: Issued | None = None,
) -> Issued:
    """A CA certificate; ``basic_constraints=None`` omits the extension, False sets CA:FALSE."""
    k = key(key_type, fresh=fresh_key)
    now = dt.datetime.now(dt.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    signer_key = issuer.key if issuer else k
    if not_before is None:
        not_before = now - dt.timedelta(days=1)
        if not_after is not None and not_after <= not_before:
            not_before = not_after - dt.timedelta(days=30)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer.cert.subject if issuer else name)
        .public_key(k.public_key())  # type: ignore[attr-defined]
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after or now + dt.timedelta(days=365))
    )
    if basic_constraints is not None:
        builder = builder.add_extension(
            x509.BasicConstraints(ca=basic_constraints, path_length=None), critical=True
        )
    if basic_constraints:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )  # fmt: skip
        builder = builder.add_extension(
            x509.SubjectKeyIdentifier.from_public_key(k.public_key()),  # type: ignore[attr-defined]
            critical=False,
        )
    cert = builder.sign(signer_key, _sign_hash(signer_key))  # type: ignore[arg-type]
    return Issued(cert, k)


def make_leaf(ca: Issued, host: str = "127.0.0.1", *, days: int = 30) -> Issued:
    """A TLS server certificate for ``host`` (an IP or a DNS name), signed by ``ca``."""
    k = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    try:
        san: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        san = x509.DNSName(host)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)]))
        .issuer_name(ca.cert.subject)
        .public_key(k.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName([san]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.cert.public_key()),  # type: ignore[arg-type]
            critical=False,
        )
        .sign(ca.key, _sign_hash(ca.key))  # type: ignore[arg-type]
    )
    return Issued(cert, k)
