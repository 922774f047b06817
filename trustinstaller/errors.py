"""The project's errors, grouped by who has to act.

Messages name the object and the reason. They never carry PEM text, key
material or credentials: only ARNs, fingerprints, paths and tool output.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass


class Outcome(enum.Enum):
    """What happened to a request, and how the CLI and the HTTP API report it."""

    INSTALLED = ("installed", 0, 200)
    INTERNAL = ("internal_error", 1, 500)
    INVALID = ("invalid_manifest", 2, 400)
    REFUSED = ("refused", 3, 422)
    # Secrets Manager did not hand the secrets over: AWS or IAM must act, not the certificate.
    FETCH_FAILED = ("fetch_failed", 3, 502)
    LOCKED = ("locked", 4, 409)
    BUSY = ("busy", 5, 503)
    STORE_FAILED = ("store_failed", 1, 500)
    FORBIDDEN = ("forbidden", 1, 403)
    # The configuration (file or environment) is wrong: whoever wrote it must act.
    CONFIG = ("config_error", 6, 500)
    # The host does not let the daemon start as configured (its socket): the host's admin acts.
    START_FAILED = ("start_failed", 7, 500)

    def __init__(self, label: str, exit_code: int, http_status: int) -> None:
        self.label = label
        self.exit_code = exit_code
        self.http_status = http_status

    @classmethod
    def from_label(cls, label: str) -> Outcome:
        """The outcome with this label, or INTERNAL for an unknown one."""
        for outcome in cls:
            if outcome.label == label:
                return outcome
        return cls.INTERNAL


class ProblemKind(enum.StrEnum):
    """What kind of problem a status or an answer reports; its JSON form is the value."""

    INTERNAL_ERROR = "internal_error"
    INVALID_MANIFEST = "invalid_manifest"
    REFUSED = "refused"
    FETCH_FAILED = "fetch_failed"
    LOCKED = "locked"
    BUSY = "busy"
    STORE_FAILED = "store_failed"
    FORBIDDEN = "forbidden"
    CONFIG_ERROR = "config_error"
    START_FAILED = "start_failed"
    ROLLBACK_FAILED = "rollback_failed"
    STATE_ERROR = "state_error"
    INTERRUPTED = "interrupted"

    @classmethod
    def of(cls, outcome: Outcome) -> ProblemKind:
        """The kind of problem an outcome (other than installed) reports."""
        return cls(outcome.label)


class TrustInstallerError(Exception):
    """Root of every error this project raises on purpose."""

    outcome = Outcome.INTERNAL

    def problems(self) -> list[Problem]:
        """The individual problems, for the status answer."""
        return [Problem(kind=ProblemKind.of(self.outcome), object="", message=str(self))]

    def diagnostics(self) -> str:
        """What went wrong and what to do, for a human."""
        return str(self)


@dataclass(frozen=True)
class Problem:
    """One reportable problem: what kind, on which object, and the message."""

    kind: ProblemKind
    object: str
    message: str

    def as_dict(self) -> dict[str, str]:
        """The JSON form used in status answers and the state file."""
        return {"kind": self.kind.value, "object": self.object, "message": self.message}


class ManifestError(TrustInstallerError):
    """The caller sent a manifest or a request we cannot accept."""

    outcome = Outcome.INVALID

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"manifest {path}: {reason}" if path else f"manifest: {reason}")

    def problems(self) -> list[Problem]:
        """One problem, on the manifest path."""
        return [Problem(ProblemKind.INVALID_MANIFEST, self.path or "manifest", str(self))]


class ConfigError(TrustInstallerError):
    """The configuration file, or a variable that overrides it, is unreadable or wrong."""

    outcome = Outcome.CONFIG


class StartupError(TrustInstallerError):
    """The daemon cannot start on this host as configured: its socket, or systemd's."""

    outcome = Outcome.START_FAILED


class CertificateError(TrustInstallerError):
    """A secret could not be fetched, or its content was refused."""

    outcome = Outcome.REFUSED

    def __init__(self, kind: ProblemKind, arn: str, reason: str) -> None:
        self.kind = kind
        self.arn = arn
        self.reason = reason
        super().__init__(f"secret {arn}: {reason}")

    def problems(self) -> list[Problem]:
        """One problem, on the ARN."""
        return [Problem(self.kind, self.arn, str(self))]


class FetchError(CertificateError):
    """Secrets Manager did not give us the secret: AWS or IAM must act."""

    outcome = Outcome.FETCH_FAILED

    def __init__(self, arn: str, reason: str) -> None:
        super().__init__(ProblemKind.FETCH_FAILED, arn, reason)


class RefusedError(CertificateError):
    """The secret's content is not an acceptable root CA."""

    def __init__(self, arn: str, reason: str) -> None:
        super().__init__(ProblemKind.REFUSED, arn, reason)


class CertificatesRefusedError(TrustInstallerError):
    """One or more certificates failed; nothing was installed.

    Its outcome is ``fetch_failed`` when every failure is a fetch (AWS or IAM must act), else
    ``refused`` (a certificate's content is at fault, whoever else must act too).
    """

    outcome = Outcome.REFUSED

    def __init__(self, failures: Sequence[CertificateError]) -> None:
        self.failures = list(failures)
        n = len(self.failures)
        fetch_only = bool(self.failures) and all(isinstance(f, FetchError) for f in self.failures)
        self.outcome = Outcome.FETCH_FAILED if fetch_only else Outcome.REFUSED
        what = "could not be fetched" if fetch_only else "refused"
        head = f"{n} certificate{'s' if n != 1 else ''} {what}; nothing was installed"
        super().__init__("\n".join([head, *(f"  {f}" for f in self.failures)]))

    def diagnostics(self) -> str:
        """The failures, and who must act on a fetch failure."""
        if self.outcome is not Outcome.FETCH_FAILED:
            return str(self)
        return (
            f"{self}\nThe certificates themselves were not checked: the secrets could not be "
            "fetched with the caller's credentials. AWS or IAM must act; then submit again."
        )

    def problems(self) -> list[Problem]:
        """Every failure, not just the first."""
        return [p for f in self.failures for p in f.problems()]


class HostError(TrustInstallerError):
    """A store command failed on this host: the host's administrator must act."""

    outcome = Outcome.STORE_FAILED

    def __init__(
        self,
        argv: Sequence[str],
        reason: str,
        *,
        returncode: int | None = None,
        output: str = "",
        note: str = "",
    ) -> None:
        self.argv = list(argv)
        self.returncode = returncode
        self.output = output
        self.reason = reason
        self.note = note
        detail = f" (exit {returncode})" if returncode is not None else ""
        tail = _last_lines(output)
        msg = f"{' '.join(self.argv)}: {reason}{detail}{note}"
        super().__init__(f"{msg}\n{tail}" if tail else msg)

    def problems(self) -> list[Problem]:
        """One problem, on the command."""
        return [Problem(ProblemKind.STORE_FAILED, self.argv[0] if self.argv else "", str(self))]


class StoreError(TrustInstallerError):
    """A store is not in the state it should be in after an install."""

    outcome = Outcome.STORE_FAILED

    def __init__(self, store: str, reason: str) -> None:
        self.store = store
        super().__init__(f"store {store}: {reason}")

    def problems(self) -> list[Problem]:
        """One problem, on the store."""
        return [Problem(ProblemKind.STORE_FAILED, self.store, str(self))]


class RollbackFailedError(TrustInstallerError):
    """An install failed, and so did its rollback: the journal stays for the next start.

    Its outcome is the install's failure's; its problems are that failure's and the rollback's.
    """

    def __init__(self, cause: Exception, rollback: TrustInstallerError) -> None:
        self.cause = cause
        self.rollback = rollback
        first = cause if isinstance(cause, TrustInstallerError) else own_words(cause)
        super().__init__(f"{first}; {self.rollback_message()}")

    @property
    def outcome(self) -> Outcome:  # type: ignore[override]
        """The install's failure's outcome."""
        return (
            self.cause.outcome if isinstance(self.cause, TrustInstallerError) else Outcome.INTERNAL
        )

    def rollback_message(self) -> str:
        return f"rollback failed too, and will be retried at the next start: {self.rollback}"

    def problems(self) -> list[Problem]:
        """The install's problems, then the rollback's."""
        if isinstance(self.cause, TrustInstallerError):
            first = self.cause.problems()
        else:
            first = [Problem(ProblemKind.INTERNAL_ERROR, "", type(self.cause).__name__)]
        return [*first, Problem(ProblemKind.ROLLBACK_FAILED, "", self.rollback_message())]

    def diagnostics(self) -> str:
        """The install's failure, then the rollback's."""
        if isinstance(self.cause, TrustInstallerError):
            return f"{self.cause.diagnostics()}\n{self.rollback_message()}"
        return str(self)


class StateError(TrustInstallerError):
    """The state directory is unusable: the host's administrator must act."""

    outcome = Outcome.INTERNAL

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"state directory {path}: {reason}")

    def problems(self) -> list[Problem]:
        """One problem, on the state directory."""
        return [Problem(ProblemKind.STATE_ERROR, f"state directory {self.path}", str(self))]


class UnsafePathError(TrustInstallerError, OSError):
    """One of root's paths has a component another user could change, or is of the wrong type.

    An OSError too, with ``errno``, ``strerror`` (what is wrong) and ``filename`` (the
    component), so that the filesystem code can treat it like the other errors of a path.
    """

    outcome = Outcome.STORE_FAILED

    def __init__(self, errno: int, strerror: str, filename: str | None = None) -> None:
        OSError.__init__(self, errno, strerror, filename)

    def __str__(self) -> str:
        return f"{self.filename}: {self.strerror}" if self.filename else str(self.strerror)


class PolicyError(TrustInstallerError, ValueError):
    """A Firefox policies document that must not be rewritten: what is wrong with it."""


class ActivationError(TrustInstallerError):
    """systemd passed something other than one listening Unix stream socket."""


class VerifyError(TrustInstallerError):
    """The server cannot be reached, so no trust path can be judged."""


class BadURLError(VerifyError):
    """The URL is not an https URL with a host."""

    outcome = Outcome.INVALID


class DaemonUnreachableError(TrustInstallerError):
    """No daemon answered on the socket."""

    def __init__(self, path: object, exc: BaseException) -> None:
        reason = getattr(exc, "strerror", None) or type(exc).__name__
        super().__init__(f"socket {path}: no daemon answered ({reason}); is the service running?")


class LockedError(TrustInstallerError):
    """The session's configuration is already locked."""

    outcome = Outcome.LOCKED

    def __init__(self, since: str | None = None) -> None:
        when = f" since {since}" if since else ""
        super().__init__(
            f"configuration is locked{when}: certificates can be installed once per session; "
            "start a new session to change them"
        )


class BusyError(TrustInstallerError):
    """Another install holds the state directory's lock right now."""

    outcome = Outcome.BUSY

    def __init__(self, state_dir: str) -> None:
        super().__init__(
            f"state directory {state_dir}: another install is in progress; "
            "wait for it and check 'trustinstaller status'"
        )


def own_words(exc: BaseException) -> str:
    """``exc``'s message if it is one of ours, else only its type: for a store a user controls.

    Our errors are built from our own values (a HostError of a user's command carries none of
    its output, see ``_run``). Any other exception's message may quote what the user's process
    sent (``int('SECURITY NOTICE ...')``), so only its type name is told.
    """
    if isinstance(exc, TrustInstallerError):
        return " ".join(str(exc).split())[:500]
    return f"failed ({type(exc).__name__})"


REDACTED = "[redacted]"


def redact(exc: TrustInstallerError, values: Iterable[str]) -> None:
    """Replace each of ``values`` in ``exc``'s message, its fields and its nested errors.

    The second line of defence for credentials: an error built from an endpoint's answer
    must not carry the caller's access key id, secret key or session token into an answer,
    the status file or a log, even if a message quoting them slipped through.
    """
    # Longest first, so that a value holding another is replaced whole.
    secrets = sorted({v for v in values if v}, key=len, reverse=True)
    if secrets:
        _redact(exc, secrets)


def _redact(exc: TrustInstallerError, secrets: Sequence[str]) -> None:
    exc.args = tuple(_scrub(a, secrets) for a in exc.args)
    # Every attribute: reason, output, failures, and __notes__ alike.
    for name, value in list(vars(exc).items()):
        setattr(exc, name, _scrub(value, secrets))


def _scrub(value: object, secrets: Sequence[str]) -> object:
    if isinstance(value, enum.Enum):
        return value  # our own constant (a ProblemKind is a str too): nothing of anyone's
    if isinstance(value, str):
        for s in secrets:
            value = value.replace(s, REDACTED)
        return value
    if isinstance(value, TrustInstallerError):
        _redact(value, secrets)
        return value
    if isinstance(value, list | tuple):
        return type(value)(_scrub(v, secrets) for v in value)
    return value


def _last_lines(text: str, n: int = 8) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return "\n".join(f"  | {line}" for line in lines[-n:])
