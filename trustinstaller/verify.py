"""``trustinstaller verify URL``: which trust path accepts a server, and why the others refuse.

Each trust path does its own real TLS handshake against the URL: Python's ``ssl`` with only the
OS bundle, then with only the combined bundle, then NSS's ``tstclnt`` with each NSS database,
then Python's ``ssl`` with what each Firefox policy installs plus Mozilla's roots (certifi), then
with the CAs Chromium takes from each managed-policy directory plus the same public roots.
Each bundle is tried twice, as the two kinds of OpenSSL client decide: ``openssl default`` (curl,
Python <= 3.12's ssl) and ``python/urllib3 strict`` (Python >= 3.13's ssl, urllib3 and so
requests and boto3), which adds X509_V_FLAG_X509_STRICT and refuses some CAs the first accepts.

Quirks this module exists for, one per line:
- ``ssl.create_default_context(cafile=...)`` trusts that file alone: the defaults are not added.
- OpenSSL reports a root it does not know as code 20 (or 19/18 when the server sends it).
- tstclnt exits 254 on a refused certificate and names the NSS error on stderr.
- tstclnt reads stdin for data to send; closed stdin and ``-Q`` end it right after the handshake.
- Firefox trusts its built-in Mozilla roots plus the files ``Certificates.Install`` names, PEM or
  DER; a file it cannot read is skipped, not fatal. certifi is the same Mozilla root list.
- Python 3.13's ``create_default_context()`` sets VERIFY_X509_STRICT itself, 3.11's does not:
  each path sets or clears it, so the answer is the same on both.
"""

from __future__ import annotations

import errno
import os
import socket
import ssl
import stat
import urllib.parse
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from trustinstaller import _fs
from trustinstaller._run import Runner
from trustinstaller.documents import JSONObject
from trustinstaller.errors import BadURLError, HostError, PolicyError, StoreError
from trustinstaller.stores import chromium
from trustinstaller.stores.firefox import installed_paths
from trustinstaller.stores.nss import NssDatabase, NssStore

UNKNOWN_CA = "unknown CA"
EXPIRED = "expired"
NOT_YET_VALID = "not yet valid"
NAME_MISMATCH = "name mismatch"
MISSING = "missing"
CANNOT_CONNECT = "cannot connect"

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

    def as_dict(self) -> JSONObject:
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
    verdict = handshake(bundle_context(bundle, client), host, port, timeout=timeout)
    return replace(verdict, trust_path=trust_path, location=str(bundle), client=client)


def handshake(ctx: ssl.SSLContext, host: str, port: int, *, timeout: float) -> Verdict:
    """One real TLS handshake with ``ctx``: accepted, or why not (trust path and place unset).

    A server that cannot be reached is this path's verdict (``cannot connect``), not the end of
    ``verify``: every other path is still tried and reported.
    """
    try:
        with (
            socket.create_connection((host, port), timeout=timeout) as raw,
            ctx.wrap_socket(raw, server_hostname=host),
        ):
            pass
    except ssl.SSLCertVerificationError as exc:
        msg = exc.verify_message or str(exc)
        return Verdict("", "", False, classify_openssl(exc.verify_code, msg), msg)
    except ssl.SSLError as exc:
        return Verdict("", "", False, f"TLS error: {exc.reason}", str(exc))
    except OSError as exc:
        return Verdict("", "", False, CANNOT_CONNECT, f"{host}:{port}: {exc.strerror or exc}")
    return Verdict("", "", True)


def check_nss(host: str, port: int, db: NssDatabase, runner: Runner, *, timeout: float) -> Verdict:
    """A handshake by NSS's own tstclnt with database ``db``.

    As the NSS store does: a user's database only by a tstclnt run as that user, root's only
    through the descriptor of a checked walk.
    """
    where = str(db.directory)
    if db.owner is not None:
        return _tstclnt(host, port, db, db.spec, runner, timeout=timeout)
    store = NssStore(runner, db)
    try:
        fd = _fs.open_dir(db.directory)
    except FileNotFoundError:
        return Verdict("nss", where, False, MISSING, "no such directory; nothing installed?")
    except OSError as exc:
        return Verdict("nss", where, False, "unsafe path", f"{exc.filename} {exc.strerror}")
    try:
        try:
            store.check_root_files(fd)
        except StoreError as exc:
            return Verdict("nss", where, False, "unsafe database", str(exc))
        if _fs.check_file(fd, "cert9.db", where) is None:
            return Verdict("nss", where, False, MISSING, "no cert9.db; nothing installed?")
        return _tstclnt(host, port, db, f"sql:{_fs.fd_path(fd)}", runner, timeout=timeout,
                        fds=(fd,))  # fmt: skip
    finally:
        os.close(fd)


def _tstclnt(
    host: str,
    port: int,
    db: NssDatabase,
    spec: str,
    runner: Runner,
    *,
    timeout: float,
    fds: tuple[int, ...] = (),
) -> Verdict:
    """Run tstclnt against ``spec`` as the database's owner; its verdict.

    Whatever it says is this path's verdict alone, and never stops ``verify``. In a user's
    database the user's own PKCS #11 module runs inside that tstclnt and prints what it likes:
    its verdict is then told in our words only (a reason from our table, the NSS error name we
    matched, the exit status), never a line of its output.
    """
    where = str(db.directory)
    argv = ["tstclnt", "-Q", "-h", host, "-p", str(port), "-d", spec]
    try:
        result = runner(argv, timeout=timeout, check=False, user=db.owner, pass_fds=fds)
    except HostError as exc:
        return Verdict("nss", where, False, "tstclnt failed", exc.reason)
    if result.returncode == 0:
        return Verdict("nss", where, True)
    output = f"{result.stderr}\n{result.stdout}"
    unreachable = next((word for word in _NSS_UNREACHABLE if word in output), None)
    if unreachable is not None:
        detail = unreachable if db.owner is not None else output.strip()[:200]
        return Verdict("nss", where, False, CANNOT_CONNECT, f"{host}:{port}: tstclnt: {detail}")
    if "SEC_ERROR_BAD_DATABASE" in output:
        return Verdict("nss", where, False, MISSING, "no database there; nothing installed?")
    if db.owner is not None:
        return _user_verdict(where, output, result.returncode)
    reason, detail = classify_nss(output)
    return Verdict("nss", where, False, reason, detail)


def _user_verdict(where: str, output: str, returncode: int) -> Verdict:
    """A refusal by tstclnt in a user's database, in our words: the NSS error we know, if any."""
    for name, reason in _NSS_REASONS.items():
        if name in output:
            return Verdict("nss", where, False, reason, f"tstclnt: {name}")
    return Verdict("nss", where, False, "refused", f"tstclnt exited {returncode}; its output is "
                   "the database owner's: not shown")  # fmt: skip


FIREFOX = "firefox"
_MAX_CERT_FILE = 1024 * 1024


def firefox_context(policies: Path) -> tuple[ssl.SSLContext | None, str, list[str]]:
    """A context trusting certifi's roots plus the policy's CAs; or None and why; and notes.

    The notes name each ``Certificates.Install`` entry that Firefox would skip too.
    """
    try:
        with _fs.opened_dir(policies.parent) as fd:
            data = _fs.read_file(fd, policies.name)
    except FileNotFoundError:
        data = None
    except OSError as exc:
        return None, f"cannot read it: {exc.strerror or exc}", []
    if data is None:
        return None, MISSING, []
    try:
        entries = installed_paths(data)
    except PolicyError as exc:
        return None, f"not a policies file Firefox can use: {exc}", []
    ctx = public_roots_context()
    notes: list[str] = []
    for entry in entries:
        if not entry.startswith("/"):
            notes.append(f"{entry}: not an absolute path; not checked here")
            continue
        try:
            raw = _read_regular(entry)
            if b"-----BEGIN CERTIFICATE-----" in raw:
                ctx.load_verify_locations(cadata=raw.decode("ascii"))
            else:
                ctx.load_verify_locations(cadata=raw)
        except OSError as exc:
            notes.append(f"{entry}: {exc.strerror or exc}; Firefox skips it too")
        except (ssl.SSLError, ValueError) as exc:
            notes.append(f"{entry}: not a certificate ({exc}); Firefox skips it too")
    return ctx, "", notes


def public_roots_context() -> ssl.SSLContext:
    """A context trusting certifi's (Mozilla's) roots, verifying as a browser does."""
    import certifi

    ctx = ssl.create_default_context(cafile=certifi.where())
    # Neither NSS nor Chromium applies OpenSSL's strict RFC 5280 checks, which Python 3.13 turns on.
    ctx.verify_flags &= ~getattr(ssl, "VERIFY_X509_STRICT", 0)
    return ctx


def _read_regular(path: str) -> bytes:
    """The start of a regular file; a FIFO or device an entry names must not hang or feed us."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file")
        return f.read(_MAX_CERT_FILE)


def check_firefox(host: str, port: int, policies: Path, *, timeout: float) -> Verdict:
    """A handshake that trusts what Firefox with the ``policies`` file would: a fair model."""
    ctx, why, notes = firefox_context(policies)
    if ctx is None:
        detail = "no such file; nothing installed?" if why == MISSING else why
        return Verdict(FIREFOX, str(policies), False, why if why == MISSING else "bad policy",
                       detail)  # fmt: skip
    return _policy_handshake(ctx, host, port, FIREFOX, str(policies), timeout=timeout,
                             unknown="the chain ends in no CA that the policy installs, nor in "
                             "Mozilla's roots", notes=notes)  # fmt: skip


CHROMIUM = "chromium policy"


def check_chromium(host: str, port: int, directory: Path, *, timeout: float) -> Verdict:
    """A handshake that trusts what Chromium takes from a managed directory, plus public roots.

    Chromium takes ``CACertificates`` from the last file by name that sets it, whoever wrote
    it; the public roots stand in for Chrome's own root store.
    """
    try:
        with _fs.opened_dir(directory) as fd:
            winner, ders = chromium.effective(chromium.listing(fd))
    except FileNotFoundError:
        return Verdict(CHROMIUM, str(directory), False, MISSING, "no such directory; nothing "
                       "installed?")  # fmt: skip
    except OSError as exc:
        return Verdict(CHROMIUM, str(directory), False, "bad policy",
                       f"cannot read it: {exc.strerror or exc}")  # fmt: skip
    if winner is None:
        return Verdict(CHROMIUM, str(directory), False, MISSING, "no file there sets "
                       "CACertificates; nothing installed?")  # fmt: skip
    ctx = public_roots_context()
    notes = []
    for der in ders:
        try:
            ctx.load_verify_locations(cadata=der)
        except ssl.SSLError:
            notes.append(f"an entry of {winner} is not a certificate; Chromium skips it too")
    return _policy_handshake(ctx, host, port, CHROMIUM, str(directory), timeout=timeout,
                             unknown=f"the chain ends in no CA that {winner} lists (the file "
                             "Chromium takes CACertificates from), nor in public roots",
                             notes=notes)  # fmt: skip


def _policy_handshake(
    ctx: ssl.SSLContext, host: str, port: int, path: str, location: str, *, timeout: float,
    unknown: str, notes: Sequence[str],
) -> Verdict:  # fmt: skip
    """A browser policy's handshake verdict, with ``unknown`` for a CA it does not hold."""
    verdict = replace(handshake(ctx, host, port, timeout=timeout), trust_path=path,
                      location=location)  # fmt: skip
    if verdict.accepted or verdict.reason.startswith("TLS error:"):
        return verdict
    msg = unknown if verdict.reason == UNKNOWN_CA else verdict.detail
    return replace(verdict, detail="; ".join([msg, *notes]))


def verify_url(
    url: str,
    *,
    os_bundle: Path,
    combined_bundle: Path,
    nss_databases: Sequence[NssDatabase],
    runner: Runner,
    timeout: float = 15.0,
    firefox_policies: Sequence[Path] = (),
    chromium_policies: Sequence[Path] = (),
) -> list[Verdict]:
    """Every trust path's verdict on the server at ``url``."""
    host, port = parse_url(url)
    verdicts = [
        check_bundle(name, host, port, bundle, timeout=timeout, client=client)
        for name, bundle in (("os bundle", os_bundle), ("combined bundle", combined_bundle))
        for client in (OPENSSL_DEFAULT, STRICT)
    ]
    verdicts += [check_nss(host, port, db, runner, timeout=timeout) for db in nss_databases]
    verdicts += [check_firefox(host, port, p, timeout=timeout) for p in firefox_policies]
    verdicts += [check_chromium(host, port, d, timeout=timeout) for d in chromium_policies]
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
