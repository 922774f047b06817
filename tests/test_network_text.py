"""No error text from the network reaches an answer, a file, a log or the CLI's output.

The endpoint here is hostile: a real HTTP server on 127.0.0.1 that answers every call with
an AWS-JSON error quoting the request's Authorization and X-Amz-Security-Token headers.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import structlog
from botocore.exceptions import ClientError

from tests.support.builders import manifest
from tests.support.daemon import Daemon, cli, write_config
from tests.support.echoaws import EchoAws, echoing_secretsmanager
from trustinstaller import fetch
from trustinstaller.config import Config
from trustinstaller.errors import (
    REDACTED,
    CertificatesRefusedError,
    FetchError,
    HostError,
    RefusedError,
    RollbackFailedError,
    StoreError,
    redact,
)
from trustinstaller.installer import Installer

CREDS = {
    "accessKeyId": "AKIAECHOLEAK4242ZZ",
    "secretAccessKey": "sEcReT-Echo-Leak-0xC0FFEE-key",
    # Letters and digits only, so that "Echo" + token is shaped like an error code and only
    # the second line of defence can keep it out.
    "sessionToken": "ToKeNEchoLeak0xBADCAFEsession",
}
ARNS = [
    f"arn:aws:secretsmanager:us-east-1:123456789012:secret:{name}-AbCdEf"
    for name in ("incomplete", "unknown", "echo-key", "echo-token")
]
EXPECTED_REASONS = [
    "request signature refused (IncompleteSignature); check that the manifest's credentials",
    "fetch failed (SomethingNew, HTTP 400): an error this tool does not know",
    f"fetch failed (Echo{REDACTED}, HTTP 400)",
    f"fetch failed (Echo{REDACTED}, HTTP 400)",
]


def client_error(code: str, message: str, status: int | None = 400) -> ClientError:
    """A ClientError shaped as botocore builds it from an HTTP answer."""
    response: Any = {"Error": {"Code": code, "Message": message}}
    if status is not None:
        response["ResponseMetadata"] = {"HTTPStatusCode": status}
    return ClientError(response, "GetSecretValue")


ECHO = "Authorization=AWS4-HMAC-SHA256 Credential=AKIAECHOLEAK4242ZZ/2026 X-Amz-Security-Token=T0k"


@pytest.mark.parametrize(
    ("code", "status", "expected"),
    [
        ("IncompleteSignature", 403, "request signature refused (IncompleteSignature); "
         "check that the manifest's credentials are complete and current (accessKeyId, "
         "secretAccessKey and sessionToken together), and this host's clock"),
        ("SignatureDoesNotMatch", 403, "request signature refused (SignatureDoesNotMatch)"),
        ("InvalidSignatureException", 400, "request signature refused (InvalidSignatureException)"),
        ("MissingAuthenticationToken", 403, "request signature refused (MissingAuthenticationTok"),
        ("RequestExpired", 400, "request signature refused (RequestExpired)"),
        ("NotAuthorized", 400, "access denied (NotAuthorized); the caller's credentials need "),
        ("InvalidParameterException", 400, "request refused (InvalidParameterException); check "
         "the ARN, and that the secret is enabled and has a current value"),
        ("ValidationException", 400, "request refused (ValidationException)"),
        ("InvalidRequestException", 400, "request refused (InvalidRequestException)"),
        ("OptInRequired", 403, "region not enabled (OptInRequired); the account must opt in"),
        ("ServiceUnavailableException", 503,
         "Secrets Manager failed (ServiceUnavailableException); retry the session later"),
        ("SomethingNew", 418, "fetch failed (SomethingNew, HTTP 418): an error this tool does "
         "not know; check the ARN, the manifest's credentials and the endpoint"),
        ("SomethingNew", None, "fetch failed (SomethingNew): an error this tool does not know"),
        ("Bad code\nstate: locked", 400,
         "fetch failed (an unrecognised error code, HTTP 400): an error"),
        ("X" * 65, 400, "fetch failed (an unrecognised error code, HTTP 400)"),
    ],
)  # fmt: skip
def test_codes_map_to_our_own_messages(code: str, status: int | None, expected: str) -> None:
    """Each error code maps to our message; the endpoint's message is never part of it."""
    message = fetch.describe_failure(client_error(code, ECHO, status))
    assert message.startswith(expected)
    for fragment in ("Authorization", "AKIAECHOLEAK4242ZZ", "T0k", "\n"):
        assert fragment not in message


def test_redact_reaches_nested_failures_fields_and_notes() -> None:
    """redact() scrubs every value from the message, the fields and the nested failures."""
    key, token = "AKIAREDACTME12345", "tok/en+with=chars"
    fetch_err = FetchError("arn:x", f"code Echo{key}")
    refused = RefusedError("arn:y", f"subject CN={token}")
    outer = CertificatesRefusedError([fetch_err, refused])
    outer.add_note(f"rollback failed: {key}")
    host = HostError(["certutil", "-n", key], f"said {token}", output=f"line {key}\n")
    both = RollbackFailedError(HostError(["x", key], token), StoreError("os", f"undo {key}"))
    for exc in (outer, host, both):
        redact(exc, [key, token, "", "unused"])
    texts = [str(outer), outer.diagnostics(), *outer.__notes__, str(host), host.output,
             str(both), both.diagnostics(),
             json.dumps([p.as_dict() for e in (outer, host, both) for p in e.problems()]),
             fetch_err.reason, refused.reason, *host.argv]  # fmt: skip
    for text in texts:
        assert key not in text
        assert token not in text
    assert fetch_err.reason == f"code Echo{REDACTED}"
    assert f"CN={REDACTED}" in str(outer)


def assert_no_credential(texts: Mapping[str, str]) -> None:
    """None of the manifest's credential values appears in any of ``texts``."""
    assert texts
    for where, text in texts.items():
        for name, value in CREDS.items():
            assert value not in text, f"{name} found in {where}"


def assert_echoed(echo: EchoAws) -> None:
    """The endpoint was really sent the credentials it could echo."""
    assert any(CREDS["accessKeyId"] in a for a in echo.authorizations), echo.authorizations
    assert CREDS["sessionToken"] in echo.tokens


@pytest.fixture
def echo() -> Iterator[EchoAws]:
    """The echoing endpoint."""
    with echoing_secretsmanager() as server:
        yield server


def test_installer_keeps_echoed_credentials_out(config: Config, echo: EchoAws) -> None:
    """An in-process install against the echoing endpoint records and raises no credential."""
    cfg = replace(config, endpoint_url=echo.endpoint)
    with (
        structlog.testing.capture_logs() as logs,
        pytest.raises(CertificatesRefusedError) as info,
    ):
        Installer(cfg).submit(manifest(ARNS, credentials=CREDS))
    assert_echoed(echo)
    exc = info.value
    assert [f.reason[: len(e)] for f, e in zip(exc.failures, EXPECTED_REASONS, strict=True)] == [
        *EXPECTED_REASONS
    ]
    assert_no_credential({
        "message": str(exc),
        "diagnostics": exc.diagnostics(),
        "problems": json.dumps([p.as_dict() for p in exc.problems()]),
        "logs": json.dumps(logs, default=str),
        "status.json": (config.state_dir / "status.json").read_text(),
    })  # fmt: skip
    assert json.loads((config.state_dir / "status.json").read_text())["state"] == "failed"


def test_daemon_and_cli_keep_echoed_credentials_out(
    config: Config, echo: EchoAws, tmp_path: Path
) -> None:
    """Through the daemon: no credential in the answer, status.json, the log or the CLI's output."""
    sock = tmp_path / "d" / "ti.sock"
    sock.parent.mkdir()
    cfg = write_config(replace(config, socket=sock, endpoint_url=echo.endpoint),
                       tmp_path / "config.toml")  # fmt: skip
    m = tmp_path / "m.json"
    m.write_bytes(manifest(ARNS, credentials=CREDS))
    texts: dict[str, str] = {}
    with Daemon(cfg, sock) as daemon:
        code, answer = daemon.put(m.read_bytes())
        # Every secret failed to fetch: AWS or IAM must act, so 502, not 422.
        assert (code, answer["outcome"]) == (502, "fetch_failed"), answer
        texts["answer"] = json.dumps(answer)
        texts["status answer"] = json.dumps(daemon.status())
        for args in (["submit", str(m)], ["submit", "--json", str(m)], ["status"]):
            done = cli("--config", str(cfg), *args)
            assert "Traceback" not in done.stderr
            texts[" ".join(args[:2])] = done.stdout + done.stderr
        daemon.stop()
        texts["log"] = daemon.log.read_text()
    texts["status.json"] = (config.state_dir / "status.json").read_text()
    assert_echoed(echo)
    assert_no_credential(texts)
    messages = [e["message"] for e in answer["errors"]]
    for message, expected in zip(messages, EXPECTED_REASONS, strict=True):
        assert expected in message
    assert "Authorization" not in json.dumps(texts)
