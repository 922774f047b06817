"""Run the real daemon as a child process, and talk HTTP to it over its Unix socket."""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import fields
from pathlib import Path
from types import TracebackType
from typing import Any

from trustinstaller.config import Config
from trustinstaller.stores.nss import NssDatabase


def write_config(config: Config, path: Path) -> Path:
    """Write ``config`` as the TOML file the CLI reads."""

    def q(v: object) -> str:
        if isinstance(v, NssDatabase):
            if v.owner is None:
                return json.dumps(v.spec)
            return f"{{path = {json.dumps(v.spec)}, owner = {json.dumps(v.owner.name)}}}"
        return json.dumps(str(v))

    lines = []
    for f in fields(config):
        v = getattr(config, f.name)
        if (
            v is None
            or f.name == "os_store"
            or (f.name == "nss_databases" and config.browser_users)
        ):
            continue
        if isinstance(v, tuple):
            items = ", ".join(str(x) if isinstance(x, int) else q(x) for x in v)
            lines.append(f"{f.name} = [{items}]")
        elif isinstance(v, bool):
            lines.append(f"{f.name} = {str(v).lower()}")
        elif isinstance(v, int | float):
            lines.append(f"{f.name} = {v}")
        else:
            lines.append(f"{f.name} = {q(v)}")
    lines.append("[os_store]")
    for f in fields(config.os_store):
        lines.append(f"{f.name} = {q(getattr(config.os_store, f.name))}")
    path.write_text("\n".join(lines) + "\n")
    return path


def request(
    sock: Path,
    method: str,
    url: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, Any]]:
    """One HTTP request over the Unix socket; the JSON answer."""

    class Conn(http.client.HTTPConnection):
        def connect(self) -> None:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                s.settimeout(60)
                s.connect(str(sock))
            except OSError:
                s.close()
                raise
            self.sock = s

    conn = Conn("localhost")
    try:
        conn.request(method, url, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read() or b"{}")
    finally:
        conn.close()


def put(sock: Path, body: bytes) -> tuple[int, dict[str, Any]]:
    """PUT /v1/manifest."""
    return request(sock, "PUT", "/v1/manifest", body, {"Content-Type": "application/json"})


def cli(
    *args: str, env: dict[str, str] | None = None, input: bytes | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m trustinstaller ARGS`` as a real process."""
    return subprocess.run(
        [sys.executable, "-m", "trustinstaller", *args],
        capture_output=True,
        text=True,
        input=input.decode() if input is not None else None,
        stdin=None if input is not None else subprocess.DEVNULL,
        env={**os.environ, **(env or {})},
        timeout=300,
        check=False,
    )


def apply_killed_at_first_rename(
    directory: Path, config: Path, manifest: Path
) -> subprocess.CompletedProcess[str]:
    """``trustinstaller apply MANIFEST``, SIGKILLed by strace at its first rename in
    ``directory`` (-P keeps the trace, and so the injected signal, to calls on that path)."""
    return subprocess.run(
        ["strace", "-f", "-qq", "-o", "/dev/null", "-P", str(directory),
         "-e", "trace=renameat,renameat2", "-e", "inject=renameat,renameat2:signal=KILL",
         sys.executable, "-m", "trustinstaller", "--config", str(config), "apply", str(manifest)],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip


class Daemon:
    """``trustinstaller serve`` as a child process; a context manager."""

    def __init__(
        self,
        config_path: Path,
        socket_path: Path,
        argv_prefix: Sequence[str] = (),
        env: dict[str, str] | None = None,
    ) -> None:
        self.config_path = config_path
        self.socket_path = socket_path
        self.argv_prefix = list(argv_prefix)
        self.env = env
        self.proc: subprocess.Popen[str] | None = None
        self.log = config_path.with_suffix(".log")

    def __enter__(self) -> Daemon:
        self.start()
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self) -> None:
        """Start and wait until the socket answers."""
        self.socket_path.unlink(missing_ok=True)
        with self.log.open("a") as logf:
            self.proc = subprocess.Popen(
                [*self.argv_prefix, sys.executable, "-m", "trustinstaller",
                 "--config", str(self.config_path), "serve"],
                stdin=subprocess.DEVNULL, stdout=logf, stderr=logf, text=True,
                env={**os.environ, **(self.env or {})},
            )  # fmt: skip
        deadline = time.monotonic() + 30
        while True:
            try:
                request(self.socket_path, "GET", "/v1/status")
                return
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"daemon did not start:\n{self.log.read_text()}") from None
                time.sleep(0.05)

    def stop(self) -> None:
        """SIGTERM, then wait."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def put(self, body: bytes) -> tuple[int, dict[str, Any]]:
        """``PUT /v1/manifest``."""
        return request(self.socket_path, "PUT", "/v1/manifest", body)

    def status(self) -> dict[str, Any]:
        """``GET /v1/status``."""
        return request(self.socket_path, "GET", "/v1/status")[1]
