"""Check a secret's content: ``(secret, now) -> TrustedCA``, or ``RefusedError``.

Pure: no I/O, and ``now`` comes in as a parameter. RefusedError messages name the
rule that failed and never quote the secret's content.

Strict verifiers: Python >= 3.13's ``ssl.create_default_context()`` and urllib3 (so requests
and boto3) set OpenSSL's X509_V_FLAG_X509_STRICT, under which OpenSSL applies RFC 5280's rules
to every certificate of a chain, the trust anchor included. A CA that curl and Chromium accept
can then be refused. ``strict_refusals`` names those rules; the CA is still installed, with a
warning. The rules follow OpenSSL's own strict checks (x509_vfy.c, check_extensions), as they
behave on OpenSSL 3.0 (Debian 12) and 3.5 (Debian 13) for a root at the end of a chain.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import re
import warnings
from dataclasses import dataclass, field
from typing import TypeVar

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, rsa
from cryptography.utils import CryptographyDeprecationWarning

from trustinstaller.clock import iso
from trustinstaller.errors import RefusedError

# Secrets Manager's own limit for a secret value; moto does not enforce it.
MAX_SECRET_BYTES = 65536
MIN_RSA_BITS = 2048
MIN_EC_BITS = 256

# Trailing blanks after the BEGIN line are allowed, as RFC 7468's lax grammar does and as
# body lines already are: they come with text copied from a web page.
_BLOCK = re.compile(
    r"-----BEGIN (?P<label>[A-Z0-9 ]+)-----[ \t]*\n(?P<body>.*?)-----END (?P=label)-----",
    re.DOTALL,
)
_ANY_BEGIN = re.compile(r"-----BEGIN ([^-\n]*)-----")
_BASE64_LINE = re.compile(r"[A-Za-z0-9+/]*={0,2}")
# A label we may quote in a message: the shape of real PEM labels, and short, so that a
# "label" cut from the middle of a secret's base64 is never echoed.
_QUOTABLE_LABEL = re.compile(r"[A-Z0-9]+(?: [A-Z0-9]+)*")
_QUOTABLE_LABEL_MAX = 32

# What cryptography raises for a certificate it cannot take apart: ValueError for bad DER,
# and its own exceptions for an unknown version, key type, curve or signature algorithm.
_MALFORMED = (ValueError, TypeError, x509.InvalidVersion, UnsupportedAlgorithm)
_E = TypeVar("_E", bound=x509.ExtensionType)


@dataclass(frozen=True)
class TrustedCA:
    """A certificate that passed every check, with what we report about it."""

    der: bytes = field(repr=False)
    fingerprint_sha256: str
    subject: str
    not_before: dt.datetime
    not_after: dt.datetime
    warnings: tuple[str, ...] = ()

    @property
    def pem(self) -> str:
        """The certificate as one canonical PEM block with LF line endings."""
        return _der_to_pem(self.der)


def fingerprint(der: bytes) -> str:
    """SHA-256 of the DER encoding, lowercase hex."""
    return hashlib.sha256(der).hexdigest()


def validate(
    source: str, *, secret_string: str | None, secret_binary: bytes | None, now: dt.datetime
) -> TrustedCA:
    """Check one secret's value; ``source`` (an ARN or a path) names it in refusals."""
    if secret_string is None:
        if secret_binary is not None:
            raise RefusedError(
                source, "must be a string secret holding a PEM certificate, not binary"
            )
        raise RefusedError(source, "has no SecretString value")
    size = len(secret_string.encode("utf-8", errors="surrogatepass"))
    if size > MAX_SECRET_BYTES:
        raise RefusedError(
            source, f"is {size} bytes, over the {MAX_SECRET_BYTES}-byte secret limit"
        )
    der = _single_certificate_block(source, secret_string)
    cert = _load_der(source, der)
    return check_certificate(source, cert, now)


def _load_der(source: str, der: bytes) -> x509.Certificate:
    # cryptography only warns about some RFC 5280 violations (a serial number that is
    # zero or negative) and says a future release will refuse them; refuse them now, so
    # that nothing we install becomes unreadable after an upgrade. catch_warnings is
    # process-wide, but a lost or doubled warning elsewhere is harmless.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            cert = x509.load_der_x509_certificate(der)
        except _MALFORMED as exc:
            raise RefusedError(
                source, "the CERTIFICATE block is not a valid X.509 certificate"
            ) from exc
    if any(issubclass(w.category, CryptographyDeprecationWarning) for w in caught):
        raise RefusedError(
            source,
            "the CERTIFICATE block breaks RFC 5280 (for one, a serial number that is not "
            "positive); reissue the CA certificate",
        )
    return cert


def check_certificate(source: str, cert: x509.Certificate, now: dt.datetime) -> TrustedCA:
    """Apply the validity, key and CA checks to a parsed certificate."""
    not_before = cert.not_valid_before_utc
    not_after = cert.not_valid_after_utc
    if now < not_before:
        raise RefusedError(
            source, f"not valid yet: notBefore is {iso(not_before)}, now is {iso(now)}"
        )
    if now > not_after:
        raise RefusedError(source, f"expired: notAfter was {iso(not_after)}, now is {iso(now)}")
    _check_key(source, cert)
    # cryptography parses names lazily: a broken one fails here, not on load. An attribute
    # outside RFC 5280's length limits (a 10-character countryName, say) only warns: that is
    # recorded as our warning, never printed, and never raised where warnings are errors.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            subject, issuer = cert.subject, cert.issuer
        except _MALFORMED as exc:
            raise RefusedError(source, "has a malformed subject or issuer name") from exc

    found: list[str] = [
        f"its subject or issuer breaks RFC 5280 ({str(w.message)[:120]}); installed with a warning"
        for w in caught
    ][:1]
    try:
        bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
        if not bc.ca:
            found.append("not a CA (basicConstraints CA:FALSE); installed with a warning")
    except x509.ExtensionNotFound:
        found.append("not a CA (no basicConstraints extension); installed with a warning")
    except (*_MALFORMED, x509.DuplicateExtension) as exc:
        raise RefusedError(source, "has a malformed or repeated extension") from exc
    if not _self_signed(cert, subject, issuer):
        found.append(
            "not self-signed (issuer differs from subject or its signature does not verify); "
            "installed with a warning"
        )
    try:
        strict = strict_refusals(cert)
    except (*_MALFORMED, x509.DuplicateExtension) as exc:
        raise RefusedError(source, "has a malformed or repeated extension") from exc
    if strict:
        found.append(
            f"{STRICT_CLIENTS} will refuse it: {'; '.join(strict)}; installed with a warning"
        )

    der = cert.public_bytes(serialization.Encoding.DER)
    return TrustedCA(
        der=der,
        fingerprint_sha256=fingerprint(der),
        subject=_name(subject),
        not_before=not_before,
        not_after=not_after,
        warnings=tuple(found),
    )


# Who sets X509_V_FLAG_X509_STRICT, in the words a warning uses.
STRICT_CLIENTS = "strict clients (Python >= 3.13, urllib3/requests; OpenSSL X509_STRICT)"


def strict_refusals(cert: x509.Certificate) -> list[str]:
    """Why OpenSSL with X509_V_FLAG_X509_STRICT refuses ``cert`` as a trust anchor; [] if not.

    Each entry names the rule, then OpenSSL's own message in quotes. Rules that plain OpenSSL
    enforces too say so: those CAs fail for curl and Python 3.11 as well.
    """
    exts = cert.extensions
    bc = _ext(exts, x509.BasicConstraints)
    ku = _ext(exts, x509.KeyUsage)
    ski = _ext(exts, x509.SubjectKeyIdentifier)
    aki = _ext(exts, x509.AuthorityKeyIdentifier)
    san = _ext(exts, x509.SubjectAlternativeName)
    cert_sign = ku is not None and ku.value.key_cert_sign
    out: list[str] = []
    if ku is not None and not cert_sign:
        # X509_check_ca() says "not a CA" for this whatever the flags: every client refuses.
        out.append("keyUsage without keyCertSign ('invalid CA certificate'; refused without "
                   "the strict flag too)")  # fmt: skip
    if bc is None:
        # Without basicConstraints OpenSSL takes a v1 root, or keyUsage keyCertSign, as a CA
        # only when it is not strict.
        out.append("no basicConstraints extension ('invalid CA certificate')")
    elif bc.value.ca:
        if not bc.critical:
            out.append("basicConstraints not marked critical "
                       "('Basic Constraints of CA cert not marked critical')")  # fmt: skip
        if bc.value.path_length is not None and not cert_sign:
            out.append("pathLenConstraint without keyUsage keyCertSign "
                       "('Path length given without key usage keyCertSign')")  # fmt: skip
        if ku is None:
            out.append("no keyUsage extension ('CA cert does not include key usage extension')")
        if ski is None:
            out.append("no subjectKeyIdentifier extension ('Missing Subject Key Identifier')")
    if len(cert.subject) == 0:
        # The leaf's issuer is this subject: OpenSSL names the leaf's empty issuer.
        out.append("empty subject name ('Subject name empty', 'Issuer name empty')")
    if len(cert.issuer) == 0:
        out.append("empty issuer name ('Issuer name empty')")
    if san is not None and len(san.value) == 0:
        out.append("empty subjectAltName extension ('Empty Subject Alternative Name extension')")
    for name, found in (("subjectKeyIdentifier", ski), ("authorityKeyIdentifier", aki)):
        if found is not None and found.critical:
            out.append(f"{name} marked critical ('unhandled critical extension'; refused "
                       "without the strict flag too)")  # fmt: skip
    return out


def _ext(exts: x509.Extensions, kind: type[_E]) -> x509.Extension[_E] | None:
    try:
        return exts.get_extension_for_class(kind)
    except x509.ExtensionNotFound:
        return None


def _single_certificate_block(source: str, text: str) -> bytes:
    """Return the DER of the one CERTIFICATE block that is the whole secret."""
    # Accept CRLF (secrets pasted from Windows tools) and whitespace around the block.
    norm = text.replace("\r\n", "\n").strip()
    labels = [m.group(1).strip() for m in _ANY_BEGIN.finditer(norm)]
    # Refuse key material first, by its label alone, so no message ever echoes it.
    if any("PRIVATE KEY" in label for label in labels):
        raise RefusedError(
            source,
            "contains a private key; store only the CA certificate, and rotate that key "
            "since it was stored beside the certificate",
        )
    if not text.isascii():
        raise RefusedError(source, "contains non-ASCII characters; a PEM certificate is ASCII text")
    if not labels:
        raise RefusedError(
            source,
            "is not PEM: expected one '-----BEGIN CERTIFICATE-----' block (DER or bare "
            "base64 is not accepted)",
        )
    certs = labels.count("CERTIFICATE")
    if certs > 1:
        raise RefusedError(source, f"holds {certs} certificates; store exactly one per secret")
    others = sorted({label for label in labels if label != "CERTIFICATE"})
    if others:
        raise RefusedError(
            source, f"holds a PEM block of type {_label(others[0])}; expected only CERTIFICATE"
        )
    m = _BLOCK.fullmatch(norm)
    if m is None:
        raise RefusedError(
            source,
            "is not exactly one well-formed PEM CERTIFICATE block (text outside the block, "
            "or a missing END line)",
        )
    lines = [line.strip() for line in m["body"].split("\n") if line.strip()]
    if not lines or not all(_BASE64_LINE.fullmatch(line) for line in lines):
        raise RefusedError(source, "the CERTIFICATE block is not base64")
    try:
        return base64.b64decode("".join(lines), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise RefusedError(source, "the CERTIFICATE block is not valid base64") from exc


def _check_key(source: str, cert: x509.Certificate) -> None:
    try:
        key = cert.public_key()
    except _MALFORMED as exc:
        raise RefusedError(source, "its public key is malformed or of an unsupported type") from exc
    if isinstance(key, rsa.RSAPublicKey) and key.key_size < MIN_RSA_BITS:
        raise RefusedError(
            source, f"weak key: RSA {key.key_size} bits, at least {MIN_RSA_BITS} are required"
        )
    if isinstance(key, ec.EllipticCurvePublicKey) and key.key_size < MIN_EC_BITS:
        raise RefusedError(
            source, f"weak key: EC {key.key_size} bits, at least {MIN_EC_BITS} are required"
        )
    if isinstance(key, dsa.DSAPublicKey):
        raise RefusedError(source, "DSA keys are not accepted: TLS clients no longer trust them")


def _self_signed(cert: x509.Certificate, subject: x509.Name, issuer: x509.Name) -> bool:
    if issuer != subject:
        return False
    try:
        cert.verify_directly_issued_by(cert)
    except (InvalidSignature, *_MALFORMED):
        return False
    return True


def _label(label: str) -> str:
    if len(label) <= _QUOTABLE_LABEL_MAX and _QUOTABLE_LABEL.fullmatch(label):
        return repr(label)
    return "(an unrecognised label)"


def _name(name: x509.Name) -> str:
    try:
        return name.rfc4514_string()
    except ValueError:
        return "<unprintable name>"


def _der_to_pem(der: bytes) -> str:
    b64 = base64.b64encode(der).decode("ascii")
    body = "\n".join(b64[i : i + 64] for i in range(0, len(b64), 64))
    return f"-----BEGIN CERTIFICATE-----\n{body}\n-----END CERTIFICATE-----\n"
