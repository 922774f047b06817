"""A hostile Secrets Manager on 127.0.0.1 that echoes each request's credentials back in its errors.

Every call is answered with an AWS-JSON error whose message quotes the request's
``Authorization`` and ``X-Amz-Security-Token`` headers, as AWS's own signature errors quote
parts of them. The error code is chosen by the secret's name, so that one manifest can meet
several kinds of error at once:

- a name holding ``incomplete``: ``IncompleteSignature``, a mapped code;
- ``unknown``: ``SomethingNew``, a code nobody maps;
- ``echo-key``: ``Echo`` + the access key id, a code-shaped code that carries a credential;
- ``echo-token``: ``Echo`` + the session token, the same for the token.
"""

from __future__ import annotations

import contextlib
import json
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import Message

from tests.support.fakeaws import serving


@dataclass
class EchoAws:
    """Where the server listens, and the credential headers it was sent."""

    endpoint: str
    authorizations: list[str] = field(default_factory=list)
    tokens: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def error_for(secret_id: str, authorization: str, token: str) -> tuple[str, str]:
    """The (code, message) answered for this secret id and these request headers."""
    m = re.search(r"Credential=([^/,\s]*)", authorization)
    access_key_id = m.group(1) if m else ""
    if "incomplete" in secret_id:
        code = "IncompleteSignature"
    elif "echo-key" in secret_id:
        code = f"Echo{access_key_id}"
    elif "echo-token" in secret_id:
        code = f"Echo{token}"
    else:
        code = "SomethingNew"
    message = (
        f"Authorization header requires 'Signature' parameter. Authorization={authorization} "
        f"X-Amz-Security-Token={token}"
    )
    return code, message


@contextlib.contextmanager
def echoing_secretsmanager() -> Iterator[EchoAws]:
    """Run the echoing endpoint; yield where it listens and what it was sent."""
    echo = EchoAws(endpoint="")

    def answer(headers: Message, raw: bytes) -> tuple[int, bytes]:
        body = json.loads(raw or b"{}")
        authorization = headers.get("Authorization", "")
        token = headers.get("X-Amz-Security-Token", "")
        with echo.lock:
            echo.authorizations.append(authorization)
            echo.tokens.append(token)
        code, message = error_for(str(body.get("SecretId", "")), authorization, token)
        return 400, json.dumps({"__type": code, "message": message}).encode()

    with serving(answer, "echo-request-id") as endpoint:
        echo.endpoint = endpoint
        yield echo
