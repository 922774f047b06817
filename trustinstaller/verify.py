"""``trustinstaller verify URL``: which trust path accepts a server, and why the others refuse.

Each trust path does its own real TLS handshake against the URL: Python's ``ssl`` with only the
OS bundle, then with only the combined bundle, then NSS's ``tstclnt`` with each NSS database.
Each bundle is tried twice, as the two kinds of OpenSSL client decide: ``openssl default`` (curl,
Python <= 3.12's ssl) and ``python/urllib3 strict`` (Python >= 3.13's ssl, urllib3 and so
requests and boto3), which adds X509_V_FLAG_X509_STRICT and refuses some CAs the first accepts.

Quirks this module exists for, one per line:
- ``ssl.create_default_context(cafile=...)`` trusts that file alone: the defaults are not added.
- OpenSSL reports a root it does not know as code 20 (or 19/18 when the server sends it).
- tstclnt exits 254 on a refused certificate and names the NSS error on stderr.
- tstclnt reads stdin for data to send; closed stdin and ``-Q`` end it right after the handshake.
- Python 3.13's ``create_default_context()`` sets VERIFY_X509_STRICT itself, 3.11's does not:
  each path sets or clears it, so the answer is the same on both.
"""

from __future__ import annotations

import socket
import ssl
import urllib.parse
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from trustinstaller._run import Runner
from trustinstaller.errors import HostError, Outcome, TrustInstallerError
from trustinstaller.stores.nss import as_owner

UNKNOWN_CA = "unknown CA"
EXPIRED = "expired"
NOT_YET_VALID = "not yet valid"
NAME_MISMATCH = "name mismatch"
MISSING = "missing"

# The two ways an OpenSSL client verifies, as `verify` names them.
OPENSSL_DEFAULT = "openssl default"
STRICT = "python/urllib3 strict"

# X509_V_ERR_* codes (openssl/x509_vfy.h).
_OPENSSL_REASONS = {
    2: UNKNOWN_CA,  # unable to get issuer certificate
    18: UNKNOWN_CA,  # self-signed certificate (a leaf nobody trusts)
    19: UNKNOWN_CA,  # self-signed certificate in chain (an untrusted root was sent)
    20: UNKNOWN_CA,  # unable to get local issuer certificate
    21: UNKNOWN_CA,  # unable to verify the first certificate
    9: NOT_YET_VALID,
    10: EXPIRED,
    62: NAME_MISMATCH,  # hostname mismatch
    63: NAME_MISMATCH,  # email mismatch
    64: NAME_MISMATCH,  # IP address mismatch
}
_NSS_REASONS = {
    "SEC_ERROR_UNKNOWN_ISSUER": UNKNOWN_CA,
    "SEC_ERROR_UNTRUSTED_ISSUER": UNKNOWN_CA,
    "SEC_ERROR_UNTRUSTED_CERT": UNKNOWN_CA,
    "SEC_ERROR_CA_CERT_INVALID": UNKNOWN_CA,
    "SEC_ERROR_EXPIRED_CERTIFICATE": EXPIRED,
    "SEC_ERROR_EXPIRED_ISSUER_CERTIFICATE": EXPIRED,
    "SSL_ERROR_BAD_CERT_DOMAIN": NAME_MISMATCH,
}
# tstclnt's words for "the server could not be reached at all", not a verdict on trust.
_NSS_UNREACHABLE = ("PR_CONNECT_REFUSED_ERROR", "PR_IO_TIMEOUT_ERROR", "PR_NETWORK_UNREACHABLE")


class VerifyError(TrustInstallerError):
    """The server cannot be reached, so no trust path can be judged."""


class BadURLError(VerifyError):
    """The URL is not an https URL with a host."""

    outcome = Outcome.INVALID


@dataclass(frozen=True)
class Verdict:
    """What one trust path said about the server."""

    trust_path: str
    location: str
    accepted: bool
    reason: str = ""
    detail: str = ""
    client: str = ""

    @property
    def label(self) -> str:
        """The trust path, with the kind of client for a bundle: ``os bundle (openssl default)``."""
        return f"{self.trust_path} ({self.client})" if self.client else self.trust_path

    def as_dict(self) -> dict[str, Any]:
        """The JSON form."""
        return asdict(self)


def parse_url(url: str) -> tuple[str, int]:
    """``https://host[:port]/...`` -> (host, port)."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "https" or not parts.hostname:
        raise BadURLError(f"url {url!r}: must be https://HOST[:PORT]/...")
    try:
        port = parts.port or 443
    except ValueError as exc:
        raise BadURLError(f"url {url!r}: bad port") from exc
    return parts.hostname, port


def classify_openssl(code: int, message: str) -> str:
    """A refusal reason from an OpenSSL verify code, or its own message."""
    return _OPENSSL_REASONS.get(code, message or f"verify error {code}")


def classify_nss(output: str) -> tuple[str, str]:
    """(reason, the tool's error line) from tstclnt's stderr."""
    for line in output.splitlines():
        for name, reason in _NSS_REASONS.items():
            if name in line:
                return reason, line.strip()
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    first = next((line for line in lines if "tstclnt:" in line), lines[0] if lines else "")
    return first or "refused", first


def bundle_context(bundle: Path, client: str) -> ssl.SSLContext:
    """A client context trusting only ``bundle``, verifying as ``client`` does."""
    ctx = ssl.create_default_context(cafile=str(bundle))
    if client == STRICT:
        # What Python 3.13's create_default_context() and urllib3 2 both set.
        ctx.verify_flags |= ssl.VERIFY_X509_STRICT | ssl.VERIFY_X509_PARTIAL_CHAIN
    else:
        ctx.verify_flags &= ~ssl.VERIFY_X509_STRICT
    return ctx


def check_bundle(
    trust_path: str,
    host: str,
    port: int,
    bundle: Path,
    *,
    timeout: float,
    client: str = OPENSSL_DEFAULT,
) -> Verdict:
    """A handshake that trusts only the PEM ``bundle``, as ``client`` verifies."""
    if not bundle.is_file():
        return Verdict(trust_path, str(bundle), False, MISSING, "no such file; nothing installed?",
                       client)  # fmt: skip
    ctx = bundle_context(bundle, client)
    try:
        with (
            socket.create_connection((host, port), timeout=timeout) as raw,
            ctx.wrap_socket(raw, server_hostname=host),
        ):
            pass
    except ssl.SSLCertVerificationError as exc:
        msg = exc.verify_message or str(exc)
        reason = classify_openssl(exc.verify_code, msg)
        return Verdict(trust_path, str(bundle), False, reason, msg, client)
    except ssl.SSLError as exc:
        return Verdict(trust_path, str(bundle), False, f"TLS error: {exc.reason}", str(exc), client)
    except OSError as exc:
        raise VerifyError(f"{host}:{port}: cannot connect: {exc.strerror or exc}") from exc
    return Verdict(trust_path, str(bundle), True, client=client)


def check_nss(host: str, port: int, db: str, runner: Runner, *, timeout: float) -> Verdict:
    """A handshake by NSS's own tstclnt with database ``db`` (``sql:DIR``)."""
    directory = Path(db.removeprefix("sql:"))
    if not (directory / "cert9.db").is_file():
        return Verdict("nss", str(directory), False, MISSING, "no cert9.db; nothing installed?")
    # As the database's owner, like the NSS store: root never opens a user's planted symlink.
    argv = [*as_owner(directory), "tstclnt", "-Q", "-h", host, "-p", str(port),
            "-d", f"sql:{directory}"]  # fmt: skip
    try:
        result = runner(argv, timeout=timeout, check=False)
    except HostError as exc:
        return Verdict("nss", str(directory), False, "tstclnt failed", exc.reason)
    if result.returncode == 0:
        return Verdict("nss", str(directory), True)
    output = f"{result.stderr}\n{result.stdout}"
    if any(word in output for word in _NSS_UNREACHABLE):
        raise VerifyError(f"{host}:{port}: cannot connect (tstclnt: {output.strip()[:200]})")
    reason, detail = classify_nss(output)
    return Verdict("nss", str(directory), False, reason, detail)


def verify_url(
    url: str,
    *,
    os_bundle: Path,
    combined_bundle: Path,
    nss_databases: Sequence[str],
    runner: Runner,
    timeout: float = 15.0,
) -> list[Verdict]:
    """Every trust path's verdict on the server at ``url``."""
    host, port = parse_url(url)
    verdicts = [
        check_bundle(name, host, port, bundle, timeout=timeout, client=client)
        for name, bundle in (("os bundle", os_bundle), ("combined bundle", combined_bundle))
        for client in (OPENSSL_DEFAULT, STRICT)
    ]
    verdicts += [check_nss(host, port, db, runner, timeout=timeout) for db in nss_databases]
    return verdicts


def render(url: str, verdicts: Sequence[Verdict]) -> str:
    """One line per trust path: ACCEPTS or REFUSES, where, and why."""
    lines = [f"{url}:"]
    for v in verdicts:
        if v.accepted:
            lines.append(f"  ACCEPTS  {v.label:<40} {v.location}")
        else:
            lines.append(f"  REFUSES  {v.label:<40} {v.location}: {v.reason}")
            if v.detail and v.detail != v.reason:
                lines.append(f"           {v.detail}")
    return "\n".join(lines) + "\n"
