"""Each variable of the env file, shown working with its real client: httplib2, git, pip, grpcio,
Deno and OpenSSL's hashed directory, each refusing a site on 127.0.0.1 before the install.

A client that pins its own roots (httplib2 and pip on certifi, grpcio's compiled-in roots.pem,
Deno's Mozilla roots) refuses after the install too unless the env file was sourced. A client
that reads the OS store (git's libcurl, OpenSSL's hashed directory) trusts
after the install anyway: for those, the variable pointed at certifi's roots makes it refuse,
which shows it reads the variable, and the env file's value makes it trust again.

The install is ``trustinstaller apply`` inside a private mount namespace, as in test_clients.py;
every client runs as root under ``env -i``.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import shlex
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import certifi
import pytest

from tests.support.builders import manifest, unique
from tests.support.certs import Issued, make_ca, make_leaf
from tests.support.clientenv import clean_env
from tests.support.moto import MotoServer
from tests.support.ns import PrivateNamespace
from tests.support.tls import PAGE, https_server
from trustinstaller.stores import runtime_env
from trustinstaller.stores.debian import bundle_ders

pytestmark = pytest.mark.root

RUNTIME_DIR = "/run/trustinstaller-env"
ENV_FILE = f"{RUNTIME_DIR}/env"
PAGE_TEXT = "trusted by trustinstaller"
DENO = Path(__file__).parent / "js" / "node_modules" / "deno" / "deno"

HTTPLIB2_PROBE = """
import sys, httplib2
try:
    resp, body = httplib2.Http(timeout=20).request(sys.argv[1])
except Exception as exc:
    print("REFUSED", type(exc).__name__, exc)
    sys.exit(1)
print(resp.status)
print(body.decode())
"""

GRPC_PROBE = """
import sys, grpc
channel = grpc.secure_channel(sys.argv[1], grpc.ssl_channel_credentials())
try:
    reply = channel.unary_unary("/probe.Probe/Page")(b"", timeout=20)
except grpc.RpcError as exc:
    print("REFUSED", exc.code(), exc.details())
    sys.exit(1)
print(reply.decode())
"""

DENO_PROBE = """
try {
  const r = await fetch(Deno.args[0]);
  console.log(r.status);
  console.log(await r.text());
} catch (e) {
  console.log("REFUSED", String(e), String(e.cause ?? ""));
  Deno.exit(1);
}
"""


@dataclass
class Probe:
    """What one client run printed, and whether it reached the site."""

    returncode: int
    stdout: str
    stderr: str
    marker: str = PAGE_TEXT

    @property
    def reached(self) -> bool:
        """The client exited 0 (or, for git, got past TLS) and showed the site's answer."""
        return self.marker in self.stdout + self.stderr

    def __str__(self) -> str:
        return (
            f"exit {self.returncode}\n--- stdout\n{self.stdout[-3000:]}\n"
            f"--- stderr\n{self.stderr[-3000:]}"
        )


@dataclass(frozen=True)
class Client:
    """One real client: the variable it reads, how to run it, and where its roots come from."""

    key: str
    argv: Callable[[Box], list[str]]
    # Whether it reads the OS store when the variable is unset (and so trusts after the install).
    reads_os_store: bool
    # Text that appears only when the TLS handshake succeeded and the site answered.
    marker: str = PAGE_TEXT
    # Assignments that turn off a second, OS-store default beside the variable, so that the
    # variable's file is all the client trusts (git's libcurl also reads /etc/ssl/certs).
    isolate: Callable[[Box], list[str]] = lambda box: []


@dataclass
class Box:
    """The namespace, the two sites (HTTPS and gRPC) and the agent's configuration."""

    ns: PrivateNamespace
    url: str
    grpc_target: str
    config: Path
    scratch: Path

    @property
    def empty_dir(self) -> Path:
        """A directory with no certificates in it."""
        d = self.scratch / "empty"
        d.mkdir(exist_ok=True)
        return d

    def probe(self, client: Client, *, mode: str) -> Probe:
        """Run ``client`` with ``mode``: "env" sources the env file, "bare" does not, and
        "certifi" points its variable at certifi's roots alone."""
        cmd = shlex.join(client.argv(self))
        if mode != "bare":
            cmd = shlex.join(["env", *client.isolate(self)]) + " " + cmd
        if mode == "env":
            script = f"if [ -f {ENV_FILE} ]; then set -a; . {ENV_FILE}; set +a; fi; exec {cmd}"
        elif mode == "certifi":
            script = f"export {client.key}={shlex.quote(certifi.where())}; exec {cmd}"
        else:
            script = f"exec {cmd}"
        home = tempfile.mkdtemp(dir=self.scratch, prefix="home-")
        done = self.ns.run([*clean_env(HOME=home), "sh", "-c", script], timeout=180)
        return Probe(done.returncode, done.stdout, done.stderr, client.marker)


def pip_uses_truststore() -> bool:
    """pip 24.2 and later verify through truststore (the OS store) unless told otherwise."""
    major, minor = (int(x) for x in importlib.metadata.version("pip").split(".")[:2])
    return (major, minor) >= (24, 2)


def _pip(box: Box) -> list[str]:
    # PIP_CONFIG_FILE=/dev/null: no pip.conf of this machine (one names a cert=) applies.
    # pip 24.2+ verifies through truststore, which cannot reach an IP literal at all
    # ("check_hostname requires server_hostname"): legacy-certs puts back certifi and PIP_CERT.
    legacy = ["PIP_USE_DEPRECATED=legacy-certs"] if pip_uses_truststore() else []
    return ["env", "PIP_CONFIG_FILE=/dev/null", *legacy, sys.executable, "-m", "pip", "download",
            "-vv", "--no-deps", "--no-cache-dir", "--retries", "0", "--timeout", "20",
            "--disable-pip-version-check", "-d", str(box.scratch / "pip-dl"),
            "--index-url", box.url, "trustinstaller-probe"]  # fmt: skip


def _git(box: Box) -> list[str]:
    # GIT_TRACE_CURL shows the HTTP status line, which only a completed handshake gets.
    return ["env", "GIT_CONFIG_NOSYSTEM=1", "GIT_TERMINAL_PROMPT=0", "GIT_TRACE_CURL=1",
            "git", "ls-remote", f"{box.url}probe.git"]  # fmt: skip


def _deno(box: Box) -> list[str]:
    return ["env", f"DENO_DIR={box.scratch / 'deno'}", "DENO_NO_UPDATE_CHECK=1", str(DENO),
            "eval", "--quiet", DENO_PROBE, box.url]  # fmt: skip


def _openssl_dir(box: Box) -> list[str]:
    # -no-CAfile leaves only the hashed directory (SSL_CERT_DIR, else OpenSSL's default).
    host, port = box.url.removeprefix("https://").rstrip("/").split(":")
    return ["openssl", "s_client", "-connect", f"{host}:{port}", "-no-CAfile", "-no-CAstore",
            "-verify_return_error", "-verify_ip", host, "-brief"]  # fmt: skip


CLIENTS = {
    "httplib2": Client(
        "HTTPLIB2_CA_CERTS", lambda b: [sys.executable, "-c", HTTPLIB2_PROBE, b.url], False
    ),
    "grpcio": Client(
        "GRPC_DEFAULT_SSL_ROOTS_FILE_PATH",
        lambda b: [sys.executable, "-c", GRPC_PROBE, b.grpc_target],
        False,
    ),
    "deno": Client("DENO_CERT", _deno, False),
    # Debian 13's pip 25.1 reaches the site after the install with no PIP_CERT, as the OS-store
    # clients do (seen in the Debian 13 root, not explained): there it is checked like them.
    "pip": Client("PIP_CERT", _pip, pip_uses_truststore(), marker="Fetched page"),
    "git": Client(
        "GIT_SSL_CAINFO",
        _git,
        True,
        marker="HTTP/1.0 200 OK",
        isolate=lambda b: [f"GIT_SSL_CAPATH={b.empty_dir}"],
    ),
    "openssl-dir": Client(runtime_env.DIR_KEY, _openssl_dir, True, marker="Verification: OK"),
}


@contextlib.contextmanager
def grpc_server(ca: Issued) -> Iterator[str]:
    """A gRPC server on 127.0.0.1 over TLS with a leaf ``ca`` signed; its one method answers
    the page. Yields ``host:port``."""
    from concurrent import futures

    import grpc

    leaf = make_leaf(ca, "127.0.0.1")
    handler = grpc.method_handlers_generic_handler(
        "probe.Probe", {"Page": grpc.unary_unary_rpc_method_handler(lambda req, ctx: PAGE)}
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2), handlers=[handler])
    creds = grpc.ssl_server_credentials([(leaf.key_pem.encode(), leaf.pem.encode())])
    port = server.add_secure_port("127.0.0.1:0", creds)
    server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.stop(grace=None).wait(10)


@pytest.fixture(scope="module")
def box_and_before(
    tmp_path_factory: pytest.TempPathFactory, moto: MotoServer
) -> Iterator[tuple[Box, dict[str, Probe]]]:
    """One install in a namespace; with every client's try before it, env file sourced."""
    assert DENO.exists(), f"{DENO} missing: run 'make js'"
    base = tmp_path_factory.mktemp("env-clients")
    base.chmod(0o755)
    ca = make_ca("trustinstaller env clients test CA")
    arn = moto.put_secret(unique("env-clients"), ca.pem)
    (base / "manifest.json").write_bytes(manifest(session=[arn]))
    (base / "config.toml").write_text(
        'state_dir = "/run/trustinstaller"\n'
        'socket = "/run/trustinstaller/trustinstaller.sock"\n'
        f'endpoint_url = "{moto.endpoint}"\n'
        "nss_databases = []\nfirefox_policies = []\n"
    )
    with (
        https_server(ca) as url,
        grpc_server(ca) as target,
        PrivateNamespace(base / "ns") as ns,
    ):
        box = Box(ns, url, target, base / "config.toml", base)
        before = {name: box.probe(c, mode="env") for name, c in CLIENTS.items()}
        done = ns.run([sys.executable, "-m", "trustinstaller", "--config", str(box.config),
                       "apply", str(base / "manifest.json")])  # fmt: skip
        assert done.returncode == 0, done.stderr
        yield box, before


@pytest.mark.parametrize("name", list(CLIENTS))
def test_client_trusts_the_ca_only_through_its_variable(
    box_and_before: tuple[Box, dict[str, Probe]], name: str
) -> None:
    """Before the install it refuses; after, without its variable (or with certifi's roots in
    it) it refuses, and with the env file sourced it reaches the site."""
    box, before = box_and_before
    client = CLIENTS[name]
    assert not before[name].reached, str(before[name])
    assert before[name].returncode != 0, str(before[name])
    bare = box.probe(client, mode="bare")
    if client.reads_os_store:
        assert bare.reached, str(bare)
        pinned = box.probe(client, mode="certifi")
        assert not pinned.reached, str(pinned)
    else:
        assert not bare.reached, str(bare)
    sourced = box.probe(client, mode="env")
    assert sourced.reached, str(sourced)


def test_env_file_names_each_clients_variable(box_and_before: tuple[Box, dict[str, Probe]]) -> None:
    """Every tested variable is in the env file, replacing ones at the full bundle."""
    box, _ = box_and_before
    text = box.ns.run(["cat", ENV_FILE]).stdout
    pairs = dict(line.split("=", 1) for line in text.splitlines() if not line.startswith("#"))
    for client in CLIENTS.values():
        assert client.key in pairs, client.key
    for key in runtime_env.BUNDLE_KEYS:
        assert pairs[key] == f"'{RUNTIME_DIR}/ca-bundle.pem'"
    for key in runtime_env.CUSTOM_KEYS:
        assert pairs[key] == f"'{RUNTIME_DIR}/custom-cas.pem'"
    assert pairs[runtime_env.DIR_KEY] == "'/etc/ssl/certs'"


def test_sourcing_loses_no_public_root(box_and_before: tuple[Box, dict[str, Probe]]) -> None:
    """The full bundle holds every OS root, and SSL_CERT_DIR's directory links them all."""
    box, _ = box_and_before
    os_roots = bundle_ders(box.ns.path("/etc/ssl") / "certs" / "ca-certificates.crt")
    full = set(runtime_env.pem_ders(box.ns.run(["cat", f"{RUNTIME_DIR}/ca-bundle.pem"]).stdout
                                    .encode()))  # fmt: skip
    assert os_roots, "the namespace's OS bundle is empty"
    assert os_roots <= full
    # Every OS root reached by its hash link in the directory SSL_CERT_DIR names.
    done = box.ns.run(["sh", "-c", "ls /etc/ssl/certs | grep -c '^[0-9a-f]\\{8\\}\\.[0-9]$'"])
    assert int(done.stdout) >= len(os_roots) - 1, str(done)
    # And ours: update-ca-certificates linked our .crt in, under its subject hash.
    ours = box.ns.run(["sh", "-c", "for l in /etc/ssl/certs/????????.?; do readlink -f $l; done"])
    assert "/usr/local/share/ca-certificates/trustinstaller/" in ours.stdout, str(ours)
