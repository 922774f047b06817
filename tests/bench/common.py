"""Shared parts of the benchmarks: secrets in moto, fresh namespaces, the daemon, statistics."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support.certs import make_ca
from tests.support.daemon import request, write_config
from tests.support.moto import FAKE_ENV, MotoServer
from tests.support.ns import PrivateNamespace
from trustinstaller.config import Config
from trustinstaller.paths import NssDatabase

REPO = Path(__file__).resolve().parents[2]
# The console script the packaged unit runs (ExecStart=/usr/bin/trustinstaller ... serve).
AGENT = Path(sys.executable).with_name("trustinstaller")
TOOL_REGION = "us-east-1"
SESSION_REGION = "eu-west-1"
MAX_PER_LIST = 10

# Never read a developer's AWS configuration, and never ask an instance metadata service.
CLEAN_AWS_ENV = {
    **FAKE_ENV,
    "AWS_CONFIG_FILE": "/dev/null",
    "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
    "AWS_EC2_METADATA_DISABLED": "true",
}


def clean_environment() -> None:
    """Make this process's environment (inherited by every child) free of real AWS settings."""
    for key in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_SECRETS_MANAGER"):
        os.environ.pop(key, None)
    os.environ.update(CLEAN_AWS_ENV)
    os.environ["PATH"] = os.environ.get("PATH", "/usr/bin:/bin") + ":/usr/sbin:/sbin"


@dataclass(frozen=True)
class Secret:
    """One CA stored in moto."""

    region: str
    arn: str
    pem: str
    fingerprint: str
    level: str  # "tool" or "session"


def make_secrets(moto: MotoServer, count: int, tag: str) -> list[Secret]:
    """``count`` fresh CAs in moto: tool-level in one region first, then session-level."""
    out: list[Secret] = []
    for i in range(count):
        level = "tool" if i < MAX_PER_LIST else "session"
        region = TOOL_REGION if level == "tool" else SESSION_REGION
        ca = make_ca(f"bench {tag} {level} CA {i:02d}")
        arn = moto.put_secret(f"bench-{tag}-{i:02d}", ca.pem, region=region)
        out.append(Secret(region, arn, ca.pem, hashlib.sha256(ca.der).hexdigest(), level))
    return out


def manifest(secrets: Sequence[Secret]) -> bytes:
    """The manifest a session bootstrap would send, with (fake) credentials, as production does."""

    def entry(s: Secret) -> dict[str, Any]:
        return {"location": {"secretsManager": {"secretArn": s.arn}}}

    doc: dict[str, Any] = {
        "toolCertificates": [entry(s) for s in secrets if s.level == "tool"],
        "certificates": [entry(s) for s in secrets if s.level == "session"],
        "credentials": {
            "accessKeyId": FAKE_ENV["AWS_ACCESS_KEY_ID"],
            "secretAccessKey": FAKE_ENV["AWS_SECRET_ACCESS_KEY"],
            "sessionToken": "bench-session-token",
        },
    }
    return json.dumps(doc).encode()


@contextlib.contextmanager
def scratch_root(prefix: str = "trustinstaller-bench-") -> Iterator[Path]:
    """A scratch directory on disk for the whole run, removed at the end."""
    base = Path(tempfile.mkdtemp(prefix=prefix))
    base.chmod(0o755)
    try:
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)


@contextlib.contextmanager
def fresh_namespace(base: Path, label: str) -> Iterator[PrivateNamespace]:
    """A new private mount namespace with fresh copies of the trust store and an empty NSS db.

    The NSS database is made before any timing starts, as Chromium's profile would already
    hold one; both the agent and the script then add to it.
    """
    scratch = base / label
    ns = PrivateNamespace(scratch)
    ns.start()
    try:
        db = nss_dir(scratch)
        db.mkdir(parents=True)
        done = ns.run(["certutil", "-N", "-d", f"sql:{db}", "--empty-password"])
        if done.returncode != 0:
            raise RuntimeError(f"certutil -N failed: {done.stderr}")
        yield ns
    finally:
        ns.stop()
        shutil.rmtree(scratch, ignore_errors=True)


def nss_dir(scratch: Path) -> Path:
    """The NSS database a namespace's browser would read (on disk, outside the copies)."""
    return scratch / "home" / ".pki" / "nssdb"


def agent_config(ns: PrivateNamespace, endpoint: str, **overrides: Any) -> tuple[Path, Path]:
    """Write the agent's configuration for ``ns``; return (config path, socket path)."""
    sock = ns.scratch / "ti.sock"
    cfg = Config(
        socket=sock,
        # The production default: a tmpfs (the namespace's own /run).
        state_dir=Path("/run/trustinstaller"),
        nss_databases=(NssDatabase(nss_dir(ns.scratch)),),
        endpoint_url=endpoint,
        **overrides,
    )
    path = write_config(cfg, ns.scratch / "config.toml")
    # Keys left at their defaults are dropped, so that an older version of the package
    # (``--agent NAME=DIR``), which refuses keys it does not know, reads the same file.
    defaults = set(write_config(Config(), ns.scratch / "defaults.toml").read_text().splitlines())
    lines = path.read_text().splitlines()
    table = lines.index("[os_store]")
    kept = [x for x in lines[:table] if x not in defaults] + lines[table:]
    path.write_text("\n".join(kept) + "\n")
    return path, sock


def wait_answering(sock: Path, proc: subprocess.Popen[bytes], deadline_s: float = 30.0) -> float:
    """Poll ``GET /v1/status`` until it answers; return the monotonic time it first did."""
    deadline = time.monotonic() + deadline_s
    while True:
        try:
            request(sock, "GET", "/v1/status")
            return time.perf_counter()
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"agent exited with {proc.returncode} before answering"
                ) from None
            if time.monotonic() > deadline:
                raise RuntimeError("agent did not answer within 30 s") from None
            time.sleep(0.002)


def proc_memory_kb(pid: int) -> dict[str, int]:
    """VmRSS (now) and VmHWM (peak) of ``pid``, in KiB."""
    out: dict[str, int] = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in {"VmRSS", "VmHWM"}:
                out[key] = int(value.split()[0])
    return out


def proc_cpu_s(pid: int) -> float:
    """User + system CPU seconds of ``pid`` and of every child it has waited for."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    # After the command name: state is field 3, so utime..cstime (14..17) are at 11..14 here.
    ticks = sum(int(x) for x in fields[11:15])
    return ticks / os.sysconf("SC_CLK_TCK")


def children_cpu_s() -> float:
    """User + system CPU seconds of every child this process has waited for."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def stop(proc: subprocess.Popen[Any]) -> None:
    """SIGTERM, then SIGKILL after 30 s."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def median(values: Sequence[float]) -> float:
    """The median, or NaN for no values."""
    return statistics.median(values) if values else float("nan")


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) by the nearest-rank method."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q * len(ordered) + 0.5)))
    return ordered[rank - 1]
