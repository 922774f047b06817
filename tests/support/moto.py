"""A real moto server on 127.0.0.1, talked to over HTTP by a real boto3 client."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import boto3

FAKE_ENV = {
    "AWS_ACCESS_KEY_ID": "AKIAIOSFODNN7EXAMPLE",
    "AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def moto_server_bin() -> str:
    """The moto_server script of the running interpreter's environment."""
    candidate = Path(sys.executable).with_name("moto_server")
    return str(candidate) if candidate.exists() else (shutil.which("moto_server") or "moto_server")


class MotoServer:
    """A moto server process and helpers to create secrets in it."""

    def __init__(self, port: int, proc: subprocess.Popen[bytes], scheme: str = "http") -> None:
        self.port = port
        self.proc = proc
        self.endpoint = f"{scheme}://127.0.0.1:{port}"

    def client(self, service: str = "secretsmanager", region: str = "us-east-1", **kw: Any) -> Any:
        """A boto3 client pointed at this server (fake credentials unless given)."""
        creds = {
            "aws_access_key_id": FAKE_ENV["AWS_ACCESS_KEY_ID"],
            "aws_secret_access_key": FAKE_ENV["AWS_SECRET_ACCESS_KEY"],
        }
        creds.update(kw)
        return boto3.client(service, region_name=region, endpoint_url=self.endpoint, **creds)

    def put_secret(
        self, name: str, value: str | bytes, *, region: str = "us-east-1", **client_kw: Any
    ) -> str:
        """Create a secret and return its ARN."""
        c = self.client(region=region, **client_kw)
        arg = {"SecretString": value} if isinstance(value, str) else {"SecretBinary": value}
        arn: str = c.create_secret(Name=name, **arg)["ARN"]
        return arn


@contextlib.contextmanager
def moto_server(
    env: Mapping[str, str] | None = None, tls: tuple[Path, Path, Path] | None = None
) -> Iterator[MotoServer]:
    """Start a moto server on a free loopback port; stop it on exit.

    ``tls`` is (certificate, key, CA file): the server then speaks HTTPS with that certificate.
    """
    port = free_port()
    child_env = {**os.environ, **FAKE_ENV, **(env or {})}
    tls_args = ["-c", str(tls[0]), "-k", str(tls[1])] if tls else []
    scheme = "https" if tls else "http"
    ctx = ssl.create_default_context(cafile=str(tls[2])) if tls else None
    proc = subprocess.Popen(
        [moto_server_bin(), "-H", "127.0.0.1", "-p", str(port), *tls_args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=child_env,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                url = f"{scheme}://127.0.0.1:{port}/moto-api/"
                with urllib.request.urlopen(url, timeout=1, context=ctx):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("moto server did not start") from None
                time.sleep(0.1)
        yield MotoServer(port, proc, scheme)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
