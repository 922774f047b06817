"""Fetch secrets from AWS Secrets Manager. The only module that imports botocore.

Every secret is fetched concurrently, with one client per region, all made from
one botocore session per process (its data files are parsed once) with the
manifest's credentials passed to each client. Throttled and 5xx calls are
retried with jittered backoff until ``fetch_timeout`` ends the whole fetch
phase, and botocore's adaptive rate limiter paces a throttled client's calls;
other errors are not retried. The daemon's own TLS trusts certifi's
public roots only, never the CAs it installs, nor an ``AWS_CA_BUNDLE`` meant
for the sandbox's clients.
"""

from __future__ import annotations

import concurrent.futures
import random
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from trustinstaller.documents import FetchReport
from trustinstaller.errors import FetchError
from trustinstaller.manifest import CertificateRef, Credentials

DEFAULT_FETCH_TIMEOUT = 60.0
CONNECT_TIMEOUT = 5.0
READ_TIMEOUT = 10.0
# Backoff after the n-th failed call of one fetch: uniform in [0, min(CAP, BASE * 2**n)]
# ("full jitter"), so that many sessions throttled at the same moment spread out.
BACKOFF_BASE = 0.25
BACKOFF_CAP = 8.0
# An endpoint that does not answer at all is most likely misconfigured: a few tries, not a
# minute of them.
UNREACHABLE_ATTEMPTS = 3
# A retry is worth sending only if its answer can arrive before the deadline: the last one is
# sent no later than this long before it.
LAST_CALL_S = 1.0


@dataclass(frozen=True)
class SecretValue:
    """What GetSecretValue returned for one ARN. Held in memory only."""

    arn: str
    secret_string: str | None = field(repr=False)
    secret_binary: bytes | None = field(repr=False)


@dataclass
class FetchStats:
    """Where ``fetch_all`` leaves what the fetch phase cost, for the status and the log."""

    report: FetchReport = field(default_factory=FetchReport)


class SecretsClient(Protocol):
    """The one Secrets Manager call we make."""

    def get_secret_value(self, *, SecretId: str) -> Mapping[str, Any]:  # noqa: N803 (AWS API name)
        """Return the secret's current value."""


ClientFactory = Callable[[str], SecretsClient]

# One botocore session per process: making one parses botocore's JSON data files (the
# endpoints alone take about 0.05 s), and a client made from a warm session takes about 0.01 s.
# botocore's sessions are not thread-safe for create_client, hence the lock.
_SESSION_LOCK = threading.Lock()
_SESSION: list[Any] = []


def _session() -> Any:
    with _SESSION_LOCK:
        if not _SESSION:
            # Imported here so that the daemon reaches "ready" without paying for botocore.
            import botocore.session

            _SESSION.append(botocore.session.get_session())
        return _SESSION[0]


def client_factory(
    credentials: Credentials | None,
    *,
    endpoint_url: str | None = None,
    ca_bundle: str | None = None,
) -> ClientFactory:
    """Return ``region -> client`` for these credentials; ``None``: botocore's default chain."""
    import certifi
    from botocore.config import Config

    session = _session()
    keys: dict[str, str | None] = {}
    if credentials is not None:
        keys = {
            "aws_access_key_id": credentials.access_key_id,
            "aws_secret_access_key": credentials.secret_access_key,
            "aws_session_token": credentials.session_token,
        }
    config = Config(
        # No retries inside botocore: fetch_all retries throttled and 5xx calls itself, within
        # the fetch deadline, and counts them. "adaptive" still paces every call this client
        # sends once Secrets Manager throttles one: in `make bench-fleet` that made 1.8 to 2.7
        # times fewer calls than jittered backoff alone, for the same time to trust.
        retries={"mode": "adaptive", "total_max_attempts": 1},
        connect_timeout=CONNECT_TIMEOUT,
        read_timeout=READ_TIMEOUT,
        max_pool_connections=20,
        # The one parameter we send is an ARN the manifest's parser has checked already:
        # botocore's own check of it cost about 0.5 ms of each call's CPU here.
        parameter_validation=False,
    )
    verify = ca_bundle or certifi.where()

    def make(region: str) -> SecretsClient:
        with _SESSION_LOCK:
            client: SecretsClient = session.create_client(
                "secretsmanager",
                region_name=region,
                endpoint_url=endpoint_url,  # None: botocore reads AWS_ENDPOINT_URL_SECRETS_MANAGER
                verify=verify,
                config=config,
                **keys,
            )
        return client

    return make


def warm_up(endpoint_url: str | None) -> None:
    """Import botocore, make the process's session and one throwaway client; sends nothing."""
    client_factory(Credentials("warm-up", "warm-up"), endpoint_url=endpoint_url)("us-east-1")


@dataclass
class _Tally:
    """One fetch's calls, kept by its own thread and summed by fetch_all (even if abandoned)."""

    calls: int = 0
    throttled: int = 0
    unreachable: int = 0
    first_throttled: float | None = None
    last_call: float = 0.0
    last_error: BaseException | None = None  # the last retryable failure
    gave_up: bool = False  # the deadline ended it


def fetch_all(
    refs: Sequence[CertificateRef],
    make_client: ClientFactory,
    *,
    timeout: float = DEFAULT_FETCH_TIMEOUT,
    stats: FetchStats | None = None,
) -> list[SecretValue | FetchError]:
    """Fetch every referenced secret concurrently within ``timeout`` s; one result per ref."""
    stats = stats if stats is not None else FetchStats()
    if not refs:
        return []
    started = time.monotonic()
    deadline = started + timeout
    clients, broken = _clients(refs, make_client)
    unique = list(dict.fromkeys(ref.arn for ref in refs))
    region_of = {ref.arn: ref.region for ref in refs}
    by_arn: dict[str, SecretValue | FetchError] = {
        arn: FetchError(arn, broken[region_of[arn]]) for arn in unique if region_of[arn] in broken
    }
    todo = [arn for arn in unique if arn not in by_arn]
    tallies = {arn: _Tally() for arn in todo}
    done: dict[str, SecretValue | FetchError | None] = {}
    if todo:
        rng = random.Random()  # noqa: S311 (backoff jitter, not a secret)
        pool = concurrent.futures.ThreadPoolExecutor(max_workers=len(todo))
        futures = {
            arn: pool.submit(_fetch_one, clients[region_of[arn]], arn, deadline, rng, tallies[arn])
            for arn in todo
        }
        concurrent.futures.wait(futures.values(), timeout=max(0.0, deadline - time.monotonic()))
        # A call still in flight at the deadline (or waiting for the adaptive rate limiter) is
        # abandoned: its thread ends on its own, and its answer is dropped.
        pool.shutdown(wait=False, cancel_futures=True)
        for arn, fut in futures.items():
            done[arn] = fut.result() if fut.done() and not fut.cancelled() else None
    clients.clear()
    report = _report(len(unique), tallies, done, started)
    stats.report = report
    for arn, value in done.items():
        if value is None or tallies[arn].gave_up:
            by_arn[arn] = FetchError(arn, _out_of_time(tallies[arn].last_error, timeout, report))
        else:
            by_arn[arn] = value
    return [by_arn[ref.arn] for ref in refs]


def _clients(
    refs: Sequence[CertificateRef], make_client: ClientFactory
) -> tuple[dict[str, SecretsClient], dict[str, str]]:
    """One client per region, made up front; and why, for each region whose client cannot be
    made (a malformed endpoint_url, say), so that each of its ARNs fails and the answer still
    lists every failure."""
    from botocore.exceptions import BotoCoreError

    clients: dict[str, SecretsClient] = {}
    broken: dict[str, str] = {}
    for ref in refs:
        if ref.region in clients or ref.region in broken:
            continue
        try:
            clients[ref.region] = make_client(ref.region)
        # botocore raises ValueError for a malformed endpoint_url, its own errors otherwise.
        except (BotoCoreError, ValueError, OSError) as exc:
            # Not str(exc): botocore quotes the endpoint URL, which may carry a password.
            broken[ref.region] = (
                f"cannot make a Secrets Manager client for region {ref.region} "
                f"({type(exc).__name__}); check endpoint_url"
            )
    return clients, broken


def _report(
    secrets: int,
    tallies: dict[str, _Tally],
    done: dict[str, SecretValue | FetchError | None],
    started: float,
) -> FetchReport:
    """The fetch phase in numbers, from each fetch's tally."""
    duration = time.monotonic() - started
    return FetchReport(
        secrets=secrets,
        calls=sum(t.calls for t in tallies.values()),
        throttled_calls=sum(t.throttled for t in tallies.values()),
        throttled_fetches=sum(1 for t in tallies.values() if t.throttled),
        # The longest that throttling held back any one fetch (its first throttled call to its
        # last call). Fetches run in parallel: about what throttling added to the phase.
        throttle_delay_s=max(
            (
                (t.last_call if done[arn] is not None else started + duration) - t.first_throttled
                for arn, t in tallies.items()
                if t.first_throttled is not None
            ),
            default=0.0,
        ),
        duration_s=duration,
        timed_out=any(v is None or tallies[a].gave_up for a, v in done.items()),
    )


def _fetch_one(
    client: SecretsClient, arn: str, deadline: float, rng: random.Random, tally: _Tally
) -> SecretValue | FetchError | None:
    # Loaded already: the client was made by botocore.
    from botocore.exceptions import BotoCoreError, ClientError

    retries = 0
    while True:
        tally.last_call = time.monotonic()
        try:
            answer = client.get_secret_value(SecretId=arn)
        # botocore's own errors and the socket's: anything else is a bug, not a fetch failure.
        except (BotoCoreError, ClientError, OSError) as exc:
            # Counted once answered: a call abandoned at the deadline has no outcome to count.
            tally.calls += 1
            kind = _retry_kind(exc)
            if kind == "throttled":
                tally.throttled += 1
                if tally.first_throttled is None:
                    tally.first_throttled = tally.last_call
            elif kind == "unreachable":
                tally.unreachable += 1
            if kind is None or tally.unreachable >= UNREACHABLE_ATTEMPTS:
                return FetchError(arn, describe_failure(exc))
            tally.last_error = exc
            delay = rng.uniform(0.0, min(BACKOFF_CAP, BACKOFF_BASE * 2**retries))
            retries += 1
            left = deadline - time.monotonic() - LAST_CALL_S
            if left <= 0:
                tally.gave_up = True
                return None
            # A backoff that would end past the last useful moment is cut short to it, so that
            # a fetch gets one more try instead of giving up early.
            time.sleep(min(delay, left))
            continue
        tally.calls += 1
        string = answer.get("SecretString")
        binary = answer.get("SecretBinary")
        return SecretValue(
            arn=arn,
            secret_string=string if isinstance(string, str) else None,
            secret_binary=bytes(binary) if isinstance(binary, bytes | bytearray) else None,
        )


def _retry_kind(exc: BaseException) -> str | None:
    """``throttled``, ``server`` (5xx) or ``unreachable`` for a retryable failure, else None."""
    code, _, status = _client_error(exc)
    if code is not None:
        if code in _THROTTLED:
            return "throttled"
        if code in _SERVICE_FAILED or (status or 0) >= 500:
            return "server"
        return None
    botocore_bases = {c.__name__ for c in type(exc).__mro__ if c.__module__.startswith("botocore")}
    return "unreachable" if botocore_bases & _UNREACHABLE else None


def _out_of_time(last: BaseException | None, timeout: float, stats: FetchReport) -> str:
    """The message for a fetch that the deadline ended: how long, and how much was throttled."""
    if last is None:
        what = "no answer"
    else:
        code = _client_error(last)[0] or type(last).__name__
        what = f"still throttled ({code})" if code in _THROTTLED else f"still failing ({code})"
    return (
        f"{what} when fetch_timeout ran out after {stats.duration_s:.1f} s "
        f"(fetch_timeout = {timeout:g}); Secrets Manager throttled {stats.throttled_calls} of "
        f"{stats.calls} calls in this session; retry the session later, or raise fetch_timeout"
    )


# Error codes as botocore reports them, each mapped to our own message. The endpoint's
# own message is never shown: AWS's messages for signature errors quote parts of the
# Authorization header, and an endpoint that echoes the request would hand back the
# access key id and the session token.
# moto's server answers access-denied for Secrets Manager as an HTTP 403 with an XML
# body, which botocore reports as '403'.
_ACCESS_DENIED = {
    "AccessDeniedException",
    "AccessDenied",
    "403",
    "NotAuthorized",
    "UnrecognizedClientException",
    "InvalidClientTokenId",
    "ExpiredTokenException",
    "ExpiredToken",
}
_BAD_SIGNATURE = {
    "IncompleteSignature",
    "IncompleteSignatureException",
    "InvalidSignatureException",
    "SignatureDoesNotMatch",
    "MissingAuthenticationToken",
    "MissingAuthenticationTokenException",
    "RequestExpired",
    "RequestTimeTooSkewed",
}
_INVALID_REQUEST = {
    "InvalidRequestException",
    "InvalidParameterException",
    "InvalidParameterValue",
    "InvalidParameterCombination",
    "MissingParameter",
    "ValidationException",
    "ValidationError",
}
_THROTTLED = {
    "ThrottlingException",
    "Throttling",
    "TooManyRequestsException",
    "RequestLimitExceeded",
    "LimitExceededException",
    "429",
}
_SERVICE_FAILED = {
    "InternalServiceError",
    "InternalFailure",
    "InternalServerError",
    "ServiceUnavailable",
    "ServiceUnavailableException",
    "500",
    "502",
    "503",
    "504",
}
_MESSAGES: dict[str, str] = {
    "ResourceNotFoundException": "not found ({code}); check the ARN and its region",
    "DecryptionFailure": "decryption failed ({code}); the caller needs kms:Decrypt on its KMS key",
    "OptInRequired": "region not enabled ({code}); the account must opt in to the ARN's region",
    **dict.fromkeys(
        _ACCESS_DENIED,
        "access denied ({code}); the caller's credentials need "
        "secretsmanager:GetSecretValue on this secret, and kms:Decrypt on its key",
    ),
    **dict.fromkeys(
        _BAD_SIGNATURE,
        "request signature refused ({code}); check that the manifest's credentials are "
        "complete and current (accessKeyId, secretAccessKey and sessionToken together), "
        "and this host's clock",
    ),
    **dict.fromkeys(
        _INVALID_REQUEST,
        "request refused ({code}); check the ARN, and that the secret is enabled and has "
        "a current value",
    ),
    **dict.fromkeys(_THROTTLED, "throttled ({code}); retry the session later"),
    **dict.fromkeys(_SERVICE_FAILED, "Secrets Manager failed ({code}); retry the session later"),
}
# A code is the endpoint's text too: shown only when it looks like one. AWS codes are
# identifiers; botocore has already cut a JSON "__type" at its '#'.
_CODE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


# botocore's classes by name, matched along the MRO so that subclasses count too, and
# so that this module does not import botocore until a client is made.
_UNREACHABLE = {
    "ConnectionError",  # botocore's: EndpointConnectionError, ConnectTimeoutError, SSLError...
    "HTTPClientError",  # ReadTimeoutError, ConnectionClosedError
}
_NO_CREDENTIALS = {"NoCredentialsError", "PartialCredentialsError", "NoRegionError"}


def describe_failure(exc: BaseException) -> str:
    """Turn a boto3/botocore exception into our own message that says what to do."""
    code, message, status = _client_error(exc)
    if code is not None:
        return _describe_code(code, message, status)
    name = type(exc).__name__
    botocore_bases = {c.__name__ for c in type(exc).__mro__ if c.__module__.startswith("botocore")}
    if botocore_bases & _UNREACHABLE:
        return f"endpoint unreachable ({name}); check the network and the Secrets Manager endpoint"
    if botocore_bases & _NO_CREDENTIALS:
        return f"no usable AWS credentials ({name}); pass 'credentials' in the manifest"
    return f"fetch failed ({name})"


def _describe_code(code: str, message: str, status: int | None) -> str:
    """Our message for an AWS error code; ``message`` is only tested, never shown."""
    # AWS says "...because it was marked for deletion."; moto says "...currently marked
    # deleted."
    if code == "InvalidRequestException" and "delet" in message.lower():
        return "marked for deletion (InvalidRequestException); restore the secret or use another"
    if code in _MESSAGES:
        return _MESSAGES[code].format(code=code)
    shown = code if _CODE.fullmatch(code) else "an unrecognised error code"
    http = f", HTTP {status}" if status is not None else ""
    return (
        f"fetch failed ({shown}{http}): an error this tool does not know; check the ARN, "
        "the manifest's credentials and the endpoint"
    )


def _client_error(exc: BaseException) -> tuple[str | None, str, int | None]:
    """(code, message, HTTP status) of a botocore ClientError, or (None, "", None)."""
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return None, "", None
    error = response.get("Error")
    error = error if isinstance(error, dict) else {}
    code = str(error.get("Code") or "")
    message = str(error.get("Message") or "")
    meta = response.get("ResponseMetadata")
    raw_status = meta.get("HTTPStatusCode") if isinstance(meta, dict) else None
    status = raw_status if isinstance(raw_status, int) and 100 <= raw_status <= 599 else None
    if not code and status is not None:
        code = str(status)
    return (code or None), message, status
