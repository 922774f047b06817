"""Fetch failures against real HTTP endpoints: moto, a closed port, and a canned fake server.

Nothing here patches boto3 or botocore. Where a test must count calls, it wraps the
client factory or the client that fetch.py is given: the injected dependency, not boto3.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Mapping, Sequence
from typing import Any

import pytest
from botocore.exceptions import (
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    PartialCredentialsError,
    ReadTimeoutError,
)

from tests.support.certs import make_ca
from tests.support.fakeaws import fake_secretsmanager
from tests.support.moto import MotoServer, free_port, moto_server
from trustinstaller import fetch, manifest
from trustinstaller.errors import FetchError
from trustinstaller.fetch import SecretValue

ACCOUNT = "123456789012"


def unique(prefix: str = "fetch") -> str:
    """A secret name no other test uses."""
    return f"{prefix}-{secrets.token_hex(4)}"


def refs(
    tool: Sequence[str] = (), session: Sequence[str] = ()
) -> tuple[manifest.CertificateRef, ...]:
    """Certificate references for these ARNs, made by the real manifest parser."""

    def entries(arns: Sequence[str]) -> list[dict[str, Any]]:
        return [{"location": {"secretsManager": {"secretArn": a}}} for a in arns]

    doc = {"toolCertificates": entries(tool), "certificates": entries(session)}
    return manifest.parse(json.dumps(doc)).certificates


def missing_arn(region: str = "us-east-1") -> str:
    """The ARN of a secret that does not exist."""
    return f"arn:aws:secretsmanager:{region}:{ACCOUNT}:secret:{unique('gone')}-AbCdEf"


def fetch_one(arn: str, endpoint: str, credentials: manifest.Credentials | None = None) -> Any:
    """Fetch one ARN through the real client factory; return its one result."""
    [result] = fetch.fetch_all(
        refs([arn]), fetch.client_factory(credentials, endpoint_url=endpoint)
    )
    return result


class CountingFactory:
    """Wraps the real factory: records each region asked for and each GetSecretValue made."""

    def __init__(self, endpoint: str) -> None:
        self.real = fetch.client_factory(None, endpoint_url=endpoint)
        self.regions: list[str] = []
        self.secret_ids: list[str] = []

    def __call__(self, region: str) -> fetch.SecretsClient:
        self.regions.append(region)
        return _CountingClient(self.real(region), self.secret_ids)


class _CountingClient:
    def __init__(self, inner: fetch.SecretsClient, seen: list[str]) -> None:
        self.inner = inner
        self.seen = seen

    def get_secret_value(self, *, SecretId: str) -> Mapping[str, Any]:  # noqa: N803 (AWS API name)
        self.seen.append(SecretId)  # list.append is atomic under the GIL
        return self.inner.get_secret_value(SecretId=SecretId)


# --- moto: the failures and shapes a real Secrets Manager API gives ---------------------


def test_missing_secret_is_not_found(moto: MotoServer) -> None:
    """A secret that does not exist gives a FetchError that names the ARN and says not found."""
    arn = missing_arn()
    result = fetch_one(arn, moto.endpoint)
    assert isinstance(result, FetchError)
    assert result.arn == arn
    assert str(result).startswith(f"secret {arn}: not found (ResourceNotFoundException)")


def test_secret_marked_for_deletion_says_so(moto: MotoServer) -> None:
    """A secret scheduled for deletion is reported as marked for deletion, not a vague failure."""
    arn = moto.put_secret(unique(), make_ca("doomed").pem)
    moto.client().delete_secret(SecretId=arn, RecoveryWindowInDays=7)
    result = fetch_one(arn, moto.endpoint)
    assert isinstance(result, FetchError)
    assert result.reason.startswith("marked for deletion (InvalidRequestException)")


def test_binary_secret_is_fetched_as_secret_binary(moto: MotoServer) -> None:
    """A binary secret comes back as SecretBinary bytes, with no SecretString."""
    value = b"\x30\x82\x01\x00binary\xff"
    arn = moto.put_secret(unique(), value)
    result = fetch_one(arn, moto.endpoint)
    assert isinstance(result, SecretValue)
    assert (result.secret_string, result.secret_binary) == (None, value)


def test_string_secret_repr_hides_the_value(moto: MotoServer) -> None:
    """A fetched value is returned as SecretString, and repr() of the result does not show it."""
    pem = make_ca("repr").pem
    arn = moto.put_secret(unique(), pem)
    result = fetch_one(arn, moto.endpoint)
    assert isinstance(result, SecretValue)
    assert result.secret_string == pem
    assert "BEGIN" not in repr(result)


def test_one_client_per_region(moto: MotoServer) -> None:
    """Three ARNs over two regions make exactly two clients, one per region, in first-use order."""
    east = [moto.put_secret(unique(), f"east {i}") for i in range(2)]
    west = moto.put_secret(unique(), "west", region="eu-west-1")
    factory = CountingFactory(moto.endpoint)
    results = fetch.fetch_all(refs([east[0], west], [east[1]]), factory)
    assert factory.regions == ["us-east-1", "eu-west-1"]
    assert [r.secret_string for r in results if isinstance(r, SecretValue)] == [
        "east 0",
        "west",
        "east 1",
    ]


def test_twenty_concurrent_fetches_keep_manifest_order(moto: MotoServer) -> None:
    """Twenty secrets, plus a missing one in the middle, come back one per ref in manifest order."""
    names = [unique(f"order{i:02d}") for i in range(20)]
    arns = [moto.put_secret(name, f"value of {name}") for name in names]
    gone = missing_arn()
    tool, session = arns[:10], [*arns[10:14], gone, *arns[14:19]]
    results = fetch.fetch_all(refs(tool, session), CountingFactory(moto.endpoint))
    assert [r.arn for r in results] == [*tool, *session]
    for arn, result in zip([*tool, *session], results, strict=True):
        if arn == gone:
            assert isinstance(result, FetchError)
        else:
            assert isinstance(result, SecretValue)
            assert result.secret_string == f"value of {names[arns.index(arn)]}"


def test_same_arn_twice_is_fetched_once(moto: MotoServer) -> None:
    """An ARN named at both levels costs one GetSecretValue and gives the same result twice."""
    arn = moto.put_secret(unique(), "twice")
    factory = CountingFactory(moto.endpoint)
    first, second = fetch.fetch_all(refs([arn], [arn]), factory)
    assert factory.secret_ids == [arn]
    assert first is second
    assert isinstance(first, SecretValue)
    assert first.secret_string == "twice"


def test_no_refs_makes_no_client(moto: MotoServer) -> None:
    """An empty list of refs returns no results and creates no client."""
    factory = CountingFactory(moto.endpoint)
    assert fetch.fetch_all((), factory) == []
    assert factory.regions == []


def test_access_denied_as_moto_403_xml() -> None:
    """With IAM enforced, a user without GetSecretValue gets 'access denied' naming the ARN."""
    # moto lets the first N requests through unauthenticated: enough to set up IAM and a secret.
    with moto_server({"INITIAL_NO_AUTH_ACTION_COUNT": "3"}) as iam_moto:
        arn = iam_moto.put_secret(unique(), make_ca("iam").pem)  # 1
        iam = iam_moto.client("iam")
        iam.create_user(UserName="nobody")  # 2
        key = iam.create_access_key(UserName="nobody")["AccessKey"]  # 3
        creds = manifest.Credentials(key["AccessKeyId"], key["SecretAccessKey"])
        result = fetch_one(arn, iam_moto.endpoint, creds)
    assert isinstance(result, FetchError)
    assert result.reason.startswith("access denied (403)")
    assert "secretsmanager:GetSecretValue" in result.reason
    assert key["SecretAccessKey"] not in str(result)
    assert key["AccessKeyId"] not in str(result)


# --- endpoints that are not there, or that only fail ------------------------------------


def test_closed_port_is_endpoint_unreachable() -> None:
    """Nothing listening on the endpoint gives 'endpoint unreachable' for the ARN."""
    arn = missing_arn()
    result = fetch_one(arn, f"http://127.0.0.1:{free_port()}")
    assert isinstance(result, FetchError)
    assert result.reason.startswith("endpoint unreachable (EndpointConnectionError)")


def test_client_that_cannot_be_made_fails_each_arn_of_its_region() -> None:
    """A malformed endpoint URL fails every ARN with a FetchError instead of raising."""
    arns = [missing_arn(), missing_arn(), missing_arn("eu-west-1")]
    results = fetch.fetch_all(
        refs(arns), fetch.client_factory(None, endpoint_url="http://user:hunter2@bad host/")
    )
    assert [type(r) for r in results] == [FetchError] * 3
    assert [r.arn for r in results] == arns
    assert "cannot make a Secrets Manager client for region eu-west-1" in str(results[2])
    assert all("hunter2" not in str(r) for r in results)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("status", "body", "message", "retried"),
    [
        pytest.param(
            400,
            {"__type": "ThrottlingException", "message": "Rate exceeded"},
            "still throttled (ThrottlingException) when fetch_timeout ran out after",
            True,
            id="throttled-is-retried-until-the-deadline",
        ),
        pytest.param(
            400,
            {"__type": "DecryptionFailure", "message": "KMS could not decrypt"},
            "decryption failed (DecryptionFailure); the caller needs kms:Decrypt",
            False,
            id="decryption-failure-is-not-retried",
        ),
        pytest.param(
            500,
            {"__type": "InternalServiceError", "message": "oops"},
            "still failing (InternalServiceError) when fetch_timeout ran out after",
            True,
            id="server-error-is-retried-until-the-deadline",
        ),
    ],
)
def test_canned_failure_from_a_real_http_server(
    status: int, body: dict[str, str], message: str, retried: bool
) -> None:
    """A canned AWS error gives its message, retried until fetch_timeout only if retryable."""
    arn = missing_arn()
    stats = fetch.FetchStats()
    with fake_secretsmanager(status, body) as server:
        [result] = fetch.fetch_all(
            refs([arn]),
            fetch.client_factory(None, endpoint_url=server.endpoint),
            timeout=2.5,
            stats=stats,
        )
        requests = server.requests
        assert set(server.targets) == {"secretsmanager.GetSecretValue"}
    assert isinstance(result, FetchError)
    assert result.reason.startswith(message)
    assert stats.report.calls == requests
    assert (requests > 1) is retried
    assert stats.report.timed_out is retried


# --- describe_failure over exception objects ---------------------------------------------


def client_error(code: str | None, message: str = "", status: int = 400) -> ClientError:
    """A ClientError shaped as botocore builds it from an HTTP answer."""
    error = {"Code": code, "Message": message} if code is not None else {}
    response: Any = {"Error": error, "ResponseMetadata": {"HTTPStatusCode": status}}
    return ClientError(response, "GetSecretValue")


MOTO_403_XML = (
    '<?xml version="1.0" encoding="utf-8"?>\n<ErrorResponse><Errors><Error><Code>AccessDenied'
    "</Code><Message>User: arn:aws:iam::123456789012:user/nobody is not authorized to perform: "
    "secretsmanager:GetSecretValue</Message><Type>Sender</Type></Error></Errors></ErrorResponse>"
)


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        pytest.param(
            client_error("ResourceNotFoundException", "Secrets Manager can't find it."),
            "not found (ResourceNotFoundException); check the ARN and its region",
            id="not-found",
        ),
        pytest.param(
            client_error("AccessDeniedException", "User is not authorized", 400),
            "access denied (AccessDeniedException); the caller's credentials need "
            "secretsmanager:GetSecretValue on this secret, and kms:Decrypt on its key",
            id="access-denied-json",
        ),
        pytest.param(
            client_error("403", MOTO_403_XML, 403),
            "access denied (403); the caller's credentials need",
            id="access-denied-moto-403-xml",
        ),
        pytest.param(
            client_error(None, "", 403),
            "access denied (403)",
            id="access-denied-status-only",
        ),
        pytest.param(
            client_error("UnrecognizedClientException", "The security token is invalid."),
            "access denied (UnrecognizedClientException)",
            id="bad-access-key",
        ),
        pytest.param(
            client_error("ExpiredTokenException", "The security token has expired."),
            "access denied (ExpiredTokenException)",
            id="expired-session-token",
        ),
        pytest.param(
            client_error(
                "InvalidRequestException",
                "You can't perform this operation on the secret because it was marked for "
                "deletion.",
            ),
            "marked for deletion (InvalidRequestException); restore the secret or use another",
            id="deletion-aws-wording",
        ),
        pytest.param(
            client_error(
                "InvalidRequestException",
                "You tried to perform the operation on a secret that's currently marked deleted.",
            ),
            "marked for deletion (InvalidRequestException)",
            id="deletion-moto-wording",
        ),
        pytest.param(
            client_error("InvalidRequestException", "You provided a parameter value\n  that is"),
            "request refused (InvalidRequestException); check the ARN, and that the secret is "
            "enabled and has a current value",
            id="other-invalid-request-has-our-own-message",
        ),
        pytest.param(
            client_error("DecryptionFailure", "KMS could not decrypt"),
            "decryption failed (DecryptionFailure); the caller needs kms:Decrypt on its KMS key",
            id="decryption-failure",
        ),
        pytest.param(
            client_error("ThrottlingException", "Rate exceeded"),
            "throttled (ThrottlingException); retry the session later",
            id="throttled",
        ),
        pytest.param(
            client_error(None, "", 429),
            "throttled (429)",
            id="throttled-status-only",
        ),
        pytest.param(
            client_error("InternalServiceError", "", 500),
            "Secrets Manager failed (InternalServiceError)",
            id="internal-error",
        ),
        pytest.param(
            client_error("502", "<html>Bad Gateway</html>", 502),
            "Secrets Manager failed (502)",
            id="bad-gateway-from-a-proxy",
        ),
        pytest.param(
            client_error("SomethingNew", "x" * 500),
            "fetch failed (SomethingNew, HTTP 400): an error this tool does not know; check the "
            "ARN, the manifest's credentials and the endpoint",
            id="unknown-code-gives-code-and-status-only",
        ),
        pytest.param(
            client_error("SomethingNew", ""),
            "fetch failed (SomethingNew, HTTP 400)",
            id="unknown-code-no-message",
        ),
        pytest.param(
            EndpointConnectionError(endpoint_url="https://secretsmanager.us-east-1.amazonaws.com"),
            "endpoint unreachable (EndpointConnectionError); check the network and the "
            "Secrets Manager endpoint",
            id="connection-refused",
        ),
        pytest.param(
            ConnectTimeoutError(endpoint_url="https://secretsmanager.us-east-1.amazonaws.com"),
            "endpoint unreachable (ConnectTimeoutError)",
            id="connect-timeout",
        ),
        pytest.param(
            ReadTimeoutError(endpoint_url="https://secretsmanager.us-east-1.amazonaws.com"),
            "endpoint unreachable (ReadTimeoutError)",
            id="read-timeout",
        ),
        pytest.param(
            NoCredentialsError(),
            "no usable AWS credentials (NoCredentialsError); pass 'credentials' in the manifest",
            id="no-credentials",
        ),
        pytest.param(
            PartialCredentialsError(provider="env", cred_var="AWS_SECRET_ACCESS_KEY"),
            "no usable AWS credentials (PartialCredentialsError)",
            id="partial-credentials",
        ),
        pytest.param(
            RuntimeError("something we never expected"),
            "fetch failed (RuntimeError)",
            id="unknown-exception-shows-only-its-type",
        ),
    ],
)
def test_describe_failure(exc: BaseException, expected: str) -> None:
    """Each botocore failure maps to a message that names the cause and what to do about it."""
    message = fetch.describe_failure(exc)
    assert message.startswith(expected)
    assert "\n" not in message
