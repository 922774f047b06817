"""The command line: ``main(argv=None) -> int``.

Exit codes: 0 ok, 1 internal or host error, 2 bad manifest or usage,
3 a certificate or fetch refused, 4 locked, 5 busy (another install is running).
"""

from __future__ import annotations

import argparse
import errno
import http.client
import json
import os
import socket
import struct
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trustinstaller import __version__, _fs, config, documents, log
from trustinstaller.documents import Status
from trustinstaller.errors import (
    ConfigError,
    DaemonUnreachableError,
    ManifestError,
    Outcome,
    TrustInstallerError,
)
from trustinstaller.terminal import MESSAGE_LIMIT, escape

if TYPE_CHECKING:
    from trustinstaller.verify import Verdict

EXIT_OK = 0
EXIT_USAGE = 2


class UnixHTTPConnection(http.client.HTTPConnection):
    """HTTP over a Unix socket, for talking to the daemon."""

    def __init__(self, path: Path, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self) -> None:
        """Connect to the daemon's socket instead of a TCP port; only to root's (or our own).

        Whoever listens at the path gets the manifest, credentials and all, and is believed:
        where another user could have bound it first (a /run every user may write), nothing
        may be sent before the listener is known to be root (SO_PEERCRED: its uid at listen()).
        """
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.settimeout(self.timeout)
            s.connect(str(self.unix_path))
            _, uid, _ = _PEERCRED.unpack(
                s.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size)
            )
            if uid not in _fs.trusted_uids():
                raise PermissionError(
                    errno.EPERM, f"the socket is served by uid {uid}, not root; sent nothing"
                )
        except OSError:
            s.close()
            raise
        self.sock = s


# struct ucred: pid, uid, gid.
_PEERCRED = struct.Struct("iII")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI and return its exit code."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    log.configure()
    try:
        cfg = config.load(args.config)
        result: int = args.func(args, cfg)
        return result
    except TrustInstallerError as exc:
        print(f"trustinstaller: {escape(exc.diagnostics(), limit=MESSAGE_LIMIT)}", file=sys.stderr)
        return exc.outcome.exit_code
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # noqa: BLE001 (no traceback for a user: the type, and the log)
        log.get().error("internal_error", error=type(exc).__name__)
        print(f"trustinstaller: internal error ({type(exc).__name__}); this is a bug: "
              "please report it with the log above", file=sys.stderr)  # fmt: skip
        return Outcome.INTERNAL.exit_code


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="trustinstaller",
        description="Install a session's custom root CAs into the OS trust store and NSS, "
        "then lock the configuration.",
    )
    p.add_argument("--version", action="version", version=f"trustinstaller {__version__}")
    p.add_argument(
        "--config",
        metavar="PATH",
        help=f"TOML configuration (default: ${config.ENV_VAR}, else {config.DEFAULT_PATH} if it "
        "exists, else built-in defaults)",
    )
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    s = sub.add_parser("serve", help="run the daemon on its Unix socket")
    s.set_defaults(func=_serve)

    for name, func, what, shown in (
        ("submit", _submit, "send a manifest to the daemon", "the daemon's JSON answer"),
        ("apply", _apply, "install a manifest in this process (no daemon)", "the status as JSON"),
    ):
        s = sub.add_parser(name, help=what)
        s.add_argument("manifest", help="manifest file, or - for standard input")
        s.add_argument("--json", action="store_true", help=f"print {shown}")
        s.set_defaults(func=func)
        if name == "submit":
            s.add_argument("--timeout", type=float, default=600.0,
                           help="seconds to wait (default 600)")  # fmt: skip

    s = sub.add_parser("status", help="show the session's status")
    s.add_argument("--json", action="store_true", help="print JSON")
    s.set_defaults(func=_status)

    s = sub.add_parser("check", help="validate local PEM files; installs nothing")
    s.add_argument("pem", nargs="+", help="PEM files to check")
    s.set_defaults(func=_check)

    s = sub.add_parser("env", help="print the trust environment as shell KEY='VALUE' lines")
    s.add_argument("--export", action="store_true", help="prefix each line with 'export '")
    s.set_defaults(func=_env)

    s = sub.add_parser("verify", help="show which trust paths accept an HTTPS server, and why")
    s.add_argument("url", help="https://HOST[:PORT]/")
    s.add_argument("--json", action="store_true", help="print JSON")
    s.add_argument("--timeout", type=float, default=15.0, help="seconds per handshake")
    s.set_defaults(func=_verify)
    return p  # fmt: skip


def _serve(args: argparse.Namespace, cfg: config.Config) -> int:
    from trustinstaller import daemon

    daemon.run(cfg)
    return EXIT_OK


def _apply(args: argparse.Namespace, cfg: config.Config) -> int:
    from trustinstaller.installer import Installer

    data = _read_manifest(args.manifest)
    installer = Installer(cfg)
    installer.prepare()
    try:
        status = installer.submit(data)
    except TrustInstallerError as exc:
        _print_status(installer.status(), args.json, exc.outcome, exc.diagnostics())
        return exc.outcome.exit_code
    _print_status(status, args.json, Outcome.INSTALLED, "installed and locked")
    return EXIT_OK


def _submit(args: argparse.Namespace, cfg: config.Config) -> int:
    data = _read_manifest(args.manifest)
    code, answer = _request(cfg.socket, "PUT", "/v1/manifest", data, timeout=args.timeout)
    outcome = Outcome.from_label(answer.outcome or "")
    if code == 200:
        outcome = Outcome.INSTALLED
    message = answer.message or answer.error or f"HTTP {code}"
    if answer.status is not None:
        _print_status(answer.status, args.json, outcome, message)
    elif args.json:
        print(json.dumps(documents.answer_to_json(answer), indent=2))
    else:
        print(escape(message, limit=MESSAGE_LIMIT), file=sys.stderr)
    return outcome.exit_code


def _status(args: argparse.Namespace, cfg: config.Config) -> int:
    answered = _ask_daemon(cfg)
    if answered is not None:
        status, source = answered
    else:
        from trustinstaller.state import StateDir

        status = StateDir(cfg.state_dir).read_status()
        source = f"state directory {cfg.state_dir} (no daemon answered)"
    if args.json:
        print(json.dumps(documents.status_to_json(status), indent=2, sort_keys=True))
    else:
        print(f"source: {escape(source)}")
        _print_human(status)
    return EXIT_OK


def _ask_daemon(cfg: config.Config) -> tuple[Status, str] | None:
    """The daemon's status and which socket gave it, or None when no daemon answered."""
    for path, source in _status_sockets(cfg):
        try:
            _, answer = _request(path, "GET", "/v1/status", None, timeout=10.0)
        except TrustInstallerError:
            continue
        status = answer.status
        if status is None:
            raise TrustInstallerError(f"socket {path}: the daemon's answer is not a status")
        return status, source
    return None


def _status_sockets(cfg: config.Config) -> list[tuple[Path, str]]:
    """Where to ask for the status, in order: root tries the control socket first.

    Anyone else is not let into the control socket (or is, through an ACL, when in
    allowed_uids) and reads from the status socket, which socket_group may reach.
    """
    control = (cfg.socket, "daemon")
    status = (cfg.status_socket_path, f"daemon, status socket {cfg.status_socket_path}")
    return [control, status] if os.geteuid() == 0 else [status, control]


def _check(args: argparse.Namespace, cfg: config.Config) -> int:
    from trustinstaller.clock import iso, utc_now
    from trustinstaller.errors import RefusedError
    from trustinstaller.validate import MAX_SECRET_BYTES, validate

    worst = EXIT_OK
    now = utc_now()
    for name in args.pem:
        try:
            with open(name, "rb") as f:
                raw = f.read(MAX_SECRET_BYTES + 1)
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                ca = validate(name, secret_string=None, secret_binary=raw, now=now)
            else:
                ca = validate(name, secret_string=text, secret_binary=None, now=now)
        except OSError as exc:
            print(f"{escape(name)}: cannot read: {escape(exc.strerror)}", file=sys.stderr)
            worst = max(worst, EXIT_USAGE)
            continue
        except RefusedError as exc:
            print(f"REFUSED {escape(exc, limit=MESSAGE_LIMIT)}")
            worst = max(worst, Outcome.REFUSED.exit_code)
            continue
        print(f"OK {escape(name)}: {escape(ca.subject)} sha256={ca.fingerprint_sha256} "
              f"notAfter={iso(ca.not_after)}")  # fmt: skip
        for w in ca.warnings:
            print(f"  warning: {escape(w)}")
    return worst


def _env(args: argparse.Namespace, cfg: config.Config) -> int:
    from trustinstaller.stores import runtime_env

    directory = cfg.runtime_env_dir
    if not runtime_env.installed(directory):
        # Not an error: an empty manifest installs nothing, and clients keep their defaults.
        print(f"trustinstaller: no trust environment in {escape(directory)}: no CA installed yet; "
              "nothing to set", file=sys.stderr)  # fmt: skip
        return EXIT_OK
    pairs = runtime_env.env_pairs(directory, runtime_env.hashed_dir(cfg.os_store.bundle))
    sys.stdout.write(runtime_env.render_env(pairs, export=args.export))
    return EXIT_OK


def _verify(args: argparse.Namespace, cfg: config.Config) -> int:
    from trustinstaller import _run, verify
    from trustinstaller.stores import runtime_env

    verdicts = verify.verify_url(
        args.url,
        os_bundle=cfg.os_store.bundle,
        combined_bundle=cfg.runtime_env_dir / runtime_env.BUNDLE,
        nss_databases=cfg.nss_databases,
        runner=_run.run,
        timeout=args.timeout,
        firefox_policies=cfg.firefox_policies,
        chromium_policies=cfg.chromium_policies,
    )
    if args.json:
        print(json.dumps([v.as_dict() for v in verdicts], indent=2))
    else:
        sys.stdout.write(verify.render(escape(args.url), [_escaped_verdict(v) for v in verdicts]))
    return EXIT_OK if all(v.accepted for v in verdicts) else Outcome.REFUSED.exit_code


def _escaped_verdict(v: Verdict) -> Verdict:
    """A verdict whose text fields are escaped for the terminal; tstclnt's stderr is in them."""
    from dataclasses import replace

    # One limit for reason and detail, so that render() still sees them equal when they are.
    return replace(v, trust_path=escape(v.trust_path), location=escape(v.location),
                   reason=escape(v.reason, limit=MESSAGE_LIMIT),
                   detail=escape(v.detail, limit=MESSAGE_LIMIT))  # fmt: skip


def _read_manifest(name: str) -> bytes:
    from trustinstaller.manifest import MAX_MANIFEST_BYTES

    try:
        if name == "-":
            return sys.stdin.buffer.read(MAX_MANIFEST_BYTES + 1)
        with open(name, "rb") as f:
            return f.read(MAX_MANIFEST_BYTES + 1)
    except OSError as exc:
        raise ManifestError(name, f"cannot read: {exc.strerror or exc}") from exc


def _request(
    path: Path, method: str, url: str, body: bytes | None, *, timeout: float
) -> tuple[int, documents.Answer]:
    conn = UnixHTTPConnection(path, timeout)
    try:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        conn.request(method, url, body=body, headers=headers)
        resp = conn.getresponse()
        raw = resp.read()
    except (OSError, http.client.HTTPException) as exc:
        raise DaemonUnreachableError(path, exc) from exc
    finally:
        conn.close()
    try:
        return resp.status, documents.answer_from_json(json.loads(raw))
    except ValueError:
        # Not JSON, or not an answer of ours: what it says is shown (escaped), never parsed.
        return resp.status, documents.Answer(error=raw.decode("utf-8", "replace")[:500])


def _print_status(status: Status, as_json: bool, outcome: Outcome, message: str) -> None:
    if as_json:
        doc = documents.answer_to_json(documents.Answer(status, outcome.label, message))
        print(json.dumps(doc, indent=2, sort_keys=True))
        return
    stream = sys.stdout if outcome is Outcome.INSTALLED else sys.stderr
    print(f"{outcome.label}: {escape(message, limit=MESSAGE_LIMIT)}", file=stream)
    _print_human(status, stream)


def _print_human(status: Status, stream: Any = None) -> None:
    out = stream or sys.stdout
    # The document may come from the daemon or a file: every field is escaped, even those
    # we wrote ourselves.
    print(f"state: {escape(status.state.value)}", file=out)
    for c in status.certificates:
        print(f"  {escape(c.subject)}  sha256={escape(c.fingerprint_sha256)}  "
              f"notAfter={escape(c.not_after)}", file=out)  # fmt: skip
        stores = ", ".join(escape(s) for s in c.stores)
        print(f"    from {escape(c.source.arn)} -> {stores}", file=out)
        for w in c.warnings:
            print(f"    warning: {escape(w)}", file=out)
    for e in status.errors:
        print(f"  error: {escape(e.message, limit=MESSAGE_LIMIT)}", file=out)


__all__ = ["ConfigError", "main"]
