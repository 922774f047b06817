"""Fetch secrets from AWS Secrets Manager. The only module that imports boto3.

Every secret is fetched concurrently, with one client per region and
botocore's ``standard`` retry mode. The daemon's own TLS trusts certifi's
public roots only, never the CAs it installs, nor an ``AWS_CA_BUNDLE`` meant
for the sandbox's clients.
"""

from __future__ import annotations

import concurrent.futures
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
        retries={"mode": "standard", "max_attempts": MAX_ATTEMPTS},
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
    # using them is.
    clients: dict[str, SecretsClient] = {}
    for ref in refs:
        if ref.region not in clients:
            clients[ref.region] = make_client(ref.region)
    unique = list(dict.fromkeys(ref.arn for ref in refs))
    region_of = {ref.arn: ref.region for ref in refs}
    with concurrent.futures.ThreadPoolExecutor(max_workers=len(unique)) as pool:
        futures = {arn: pool.submit(_fetch_one, clients[region_of[arn]], arn) for arn in unique}
        by_arn = {arn: fut.result() for arn, fut in futures.items()}
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


# Error codes as botocore reports them. moto's server answers access-denied for
# Secrets Manager as an HTTP 403 with an XML body, which botocore reports as '403'.
_ACCESS_DENIED = {
    "AccessDeniedException",
    "AccessDenied",
    "403",
    "UnrecognizedClientException",
    "InvalidClientTokenId",
    "InvalidSignatureException",
    "SignatureDoesNotMatch",
    "ExpiredTokenException",
    "ExpiredToken",
}
_THROTTLED = {
    "ThrottlingException",
    "Throttling",
    "TooManyRequestsException",
    "RequestLimitExceeded",
    "LimitExceededException",
    "429",
}


def describe_failure(exc: BaseException) -> str:
    """Turn a boto3/botocore exception into a message that says what to do."""
    code, message = _client_error(exc)
    if code is not None:
        return _describe_code(code, message)
    name = type(exc).__name__
    if name in {
        "EndpointConnectionError",
        "ConnectTimeoutError",
        "ConnectionClosedError",
        "ReadTimeoutError",
        "ProxyConnectionError",
        "SSLError",
    }:
        return f"endpoint unreachable ({name}); check the network and the Secrets Manager endpoint"
    if name in {"NoCredentialsError", "PartialCredentialsError", "NoRegionError"}:
        return f"no usable AWS credentials ({name}); pass 'credentials' in the manifest"
    return f"fetch failed ({name})"


def _describe_code(code: str, message: str) -> str:
    if code == "ResourceNotFoundException":
        return "not found (ResourceNotFoundException); check the ARN and its region"
    if code in _ACCESS_DENIED:
        return (
            f"access denied ({code}); the caller's credentials need "
            "secretsmanager:GetSecretValue on this secret, and kms:Decrypt on its key"
        )
    if code == "InvalidRequestException" and "deletion" in message.lower():
        return "marked for deletion (InvalidRequestException); restore the secret or use another"
    if code == "DecryptionFailure":
        return "decryption failed (DecryptionFailure); the caller needs kms:Decrypt on its KMS key"
    if code in _THROTTLED:
        return f"throttled after {MAX_ATTEMPTS} attempts ({code}); retry the session later"
    if code in {"InternalServiceError", "InternalFailure", "ServiceUnavailable", "500", "503"}:
        return f"Secrets Manager failed after {MAX_ATTEMPTS} attempts ({code})"
    short = " ".join(message.split())[:200]
    return f"fetch failed ({code}): {short}" if short else f"fetch failed ({code})"


def _client_error(exc: BaseException) -> tuple[str | None, str]:
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return None, ""
    error = response.get("Error") or {}
    code = str(error.get("Code") or "")
    message = str(error.get("Message") or "")
    if not code:
        status = (response.get("ResponseMetadata") or {}).get("HTTPStatusCode")
        code = str(status) if status else ""
    return (code or None), message
