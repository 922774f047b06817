"""Fetch secrets from AWS Secrets Manager. The only module that imports boto3.

Every secret is fetched concurrently, with one client per region and
botocore's ``standard`` retry mode. The daemon's own TLS trusts certifi's
public roots only, never the CAs it installs, nor an ``AWS_CA_BUNDLE`` meant
for the sandbox's clients.
"""

from __future__ import annotations

import concurrent.futures
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import certifi

from trustinstaller.errors import FetchError
from trustinstaller.manifest import CertificateRef, Credentials

MAX_ATTEMPTS = 4
CONNECT_TIMEOUT = 5.0
READ_TIMEOUT = 10.0


@dataclass(frozen=True)
class SecretValue:
    """What GetSecretValue returned for one ARN. Held in memory only."""

    arn: str
    secret_string: str | None = field(repr=False)
    secret_binary: bytes | None = field(repr=False)


class SecretsClient(Protocol):
    """The one Secrets Manager call we make."""

    def get_secret_value(self, *, SecretId: str) -> Mapping[str, Any]:  # noqa: N803 (AWS API name)
        """Return the secret's current value."""


ClientFactory = Callable[[str], SecretsClient]


def client_factory(
    credentials: Credentials | None,
    *,
    endpoint_url: str | None = None,
    ca_bundle: str | None = None,
) -> ClientFactory:
    """Return ``region -> client`` for these credentials; ``None`` means boto3's default chain."""
    # Imported here so that the daemon reaches "ready" without paying for boto3.
    import boto3.session
    from botocore.config import Config

    if credentials is None:
        session = boto3.session.Session()
    else:
        session = boto3.session.Session(
            aws_access_key_id=credentials.access_key_id,
            aws_secret_access_key=credentials.secret_access_key,
            aws_session_token=credentials.session_token,
        )
    config = Config(
        # total_max_attempts counts the first request; botocore's "max_attempts" key counts
        # only the retries, which made 5 attempts where the message says 4.
        retries={"mode": "standard", "total_max_attempts": MAX_ATTEMPTS},
        connect_timeout=CONNECT_TIMEOUT,
        read_timeout=READ_TIMEOUT,
        max_pool_connections=20,
    )
    verify = ca_bundle or certifi.where()

    def make(region: str) -> SecretsClient:
        client: SecretsClient = session.client(
            "secretsmanager",
            region_name=region,
            endpoint_url=endpoint_url,  # None: boto3 reads AWS_ENDPOINT_URL_SECRETS_MANAGER
            verify=verify,
            config=config,
        )
        return client

    return make


def fetch_all(
    refs: Sequence[CertificateRef], make_client: ClientFactory
) -> list[SecretValue | FetchError]:
    """Fetch every referenced secret concurrently; one result per ref, in order."""
    if not refs:
        return []
    # Clients are made up front, one per region: creating them is not thread-safe,
    # using them is. A region whose client cannot be made (a malformed endpoint_url,
    # say) fails each of its ARNs, so that the answer still lists every failure.
    clients: dict[str, SecretsClient] = {}
    broken: dict[str, str] = {}
    for ref in refs:
        if ref.region in clients or ref.region in broken:
            continue
        try:
            clients[ref.region] = make_client(ref.region)
        except Exception as exc:  # noqa: BLE001 (reported per ARN below)
            # Not str(exc): botocore quotes the endpoint URL, which may carry a password.
            broken[ref.region] = (
                f"cannot make a Secrets Manager client for region {ref.region} "
                f"({type(exc).__name__}); check endpoint_url"
            )
    unique = list(dict.fromkeys(ref.arn for ref in refs))
    region_of = {ref.arn: ref.region for ref in refs}
    by_arn: dict[str, SecretValue | FetchError] = {
        arn: FetchError(arn, broken[region_of[arn]]) for arn in unique if region_of[arn] in broken
    }
    todo = [arn for arn in unique if arn not in by_arn]
    if todo:
        with concurrent.futures.ThreadPoolExecutor(max_workers=len(todo)) as pool:
            futures = {arn: pool.submit(_fetch_one, clients[region_of[arn]], arn) for arn in todo}
            by_arn.update((arn, fut.result()) for arn, fut in futures.items())
    clients.clear()
    return [by_arn[ref.arn] for ref in refs]


def _fetch_one(client: SecretsClient, arn: str) -> SecretValue | FetchError:
    try:
        answer = client.get_secret_value(SecretId=arn)
    except Exception as exc:  # noqa: BLE001 (mapped to a message below; unknown ones too)
        return FetchError(arn, describe_failure(exc))
    string = answer.get("SecretString")
    binary = answer.get("SecretBinary")
    return SecretValue(
        arn=arn,
        secret_string=string if isinstance(string, str) else None,
        secret_binary=bytes(binary) if isinstance(binary, bytes | bytearray) else None,
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
    **dict.fromkeys(
        _THROTTLED, f"throttled after {MAX_ATTEMPTS} attempts ({{code}}); retry the session later"
    ),
    **dict.fromkeys(
        _SERVICE_FAILED, f"Secrets Manager failed after {MAX_ATTEMPTS} attempts ({{code}})"
    ),
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
