"""Every client in the sandbox trusts the CA after one install: real Chromium, curl, requests,
Node and Java, each refusing the site before and reaching it after.

The install runs ``trustinstaller apply`` inside a private mount namespace whose OS store,
Java keystore, dpkg state and /run are throwaway copies, with a browser user that exists only
there. The HTTPS site is on 127.0.0.1, signed by a CA made in the test. A missing client fails
these tests: ``make deps`` installs every one of them.
"""

from __future__ import annotations

import datetime as dt
import json
import shlex
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.support.browseruser import BrowserUser, add_browser_user, clean_env
from tests.support.builders import manifest, unique
from tests.support.certs import Issued, make_ca
from tests.support.moto import MotoServer
from tests.support.ns import PrivateNamespace
from tests.support.probe import CHROMIUM_FLAGS, PAGE_TEXT, Probe
from tests.support.tls import https_server
from trustinstaller.stores.runtime_env import BUNDLE_KEYS, CUSTOM_KEYS, DIR_KEY, pem_ders

pytestmark = pytest.mark.root

CLIENTS = ("chromium", "curl", "node", "keytool", "tstclnt", "certutil", "setpriv", "nsenter")
# The default runtime_dir: beside the state directory /run/trustinstaller, in the namespace's /run.
RUNTIME_DIR = "/run/trustinstaller-env"
ENV_FILE = f"{RUNTIME_DIR}/env"
NOW = dt.datetime.now(dt.UTC)


REQUESTS_PROBE = """
import sys, requests
try:
    r = requests.get(sys.argv[1], timeout=20)
except requests.exceptions.SSLError as exc:
    print("SSLError", exc)
    sys.exit(1)
print(r.status_code)
print(r.text)
"""

NODE_PROBE = """
const https = require('https');
https.get(process.argv[1], (res) => {
  let body = '';
  res.on('data', (d) => { body += d; });
  res.on('end', () => { console.log(res.statusCode); console.log(body); });
}).on('error', (e) => { console.log('ERROR', e.code, e.message); process.exit(1); });
"""


@dataclass
class Sandbox:
    """The namespace, its browser user, the site and the agent's configuration."""

    ns: PrivateNamespace
    user: BrowserUser
    ca: Issued
    url: str
    config: Path
    manifest: Path
    runs: int = 0
    before: dict[str, Probe] = field(default_factory=dict)

    def run(self, argv: list[str]) -> Probe:
        """Run ``argv`` inside the namespace."""
        done = self.ns.run(argv, timeout=180)
        return Probe(done.returncode, done.stdout, done.stderr)

    def agent(self, *args: str) -> Probe:
        """``python -m trustinstaller --config CONFIG ARGS`` inside the namespace, as root."""
        return self.run([sys.executable, "-m", "trustinstaller", "--config", str(self.config),
                         *args])  # fmt: skip

    # -- the clients ----------------------------------------------------------

    def chromium(self) -> Probe:
        """Headless Chromium as the browser user, with a fresh profile, dumping the page."""
        self.runs += 1
        profile = self.user.home / f"profile-{self.runs}"
        return self.run(self.user.argv(
            ["chromium", *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--dump-dom", self.url]
        ))  # fmt: skip

    def curl(self) -> Probe:
        """curl with nothing but the OS store."""
        return self.run([*clean_env(), "curl", "-sS", "--max-time", "20", self.url])

    def requests(self, *, with_env: bool = True) -> Probe:
        """Python requests, after ``eval "$(trustinstaller env --export)"`` as a bootstrap would."""
        agent_env = shlex.join([sys.executable, "-m", "trustinstaller", "--config",
                                str(self.config), "env", "--export"])  # fmt: skip
        probe = shlex.join([sys.executable, "-c", REQUESTS_PROBE, self.url])
        script = f'eval "$({agent_env})" && exec {probe}' if with_env else f"exec {probe}"
        return self.run([*clean_env(), "sh", "-c", script])

    def node(self) -> Probe:
        """Node https.get as the browser user, after sourcing the environment file."""
        script = (f"if [ -f {ENV_FILE} ]; then set -a; . {ENV_FILE}; set +a; fi; "
                  f"exec node -e {shlex.quote(NODE_PROBE)} {shlex.quote(self.url)}")  # fmt: skip
        return self.run(self.user.argv(["sh", "-c", script]))

    def keytool(self) -> Probe:
        """The JVM's default trust store (Debian links it to /etc/ssl/certs/java/cacerts)."""
        return self.run([*clean_env(), "keytool", "-list", "-cacerts", "-storepass", "changeit"])

    def verify(self) -> list[dict[str, object]]:
        """``trustinstaller verify URL --json``: every trust path's verdict."""
        done = self.agent("verify", self.url, "--json")
        assert done.returncode in (0, 3), str(done)
        verdicts: list[dict[str, object]] = json.loads(done.stdout)
        return verdicts


def java_fingerprint(ca: Issued) -> str:
    """The SHA-256 fingerprint as keytool prints it: colon-separated upper-case hex."""
    from cryptography.hazmat.primitives import hashes

    return ":".join(f"{b:02X}" for b in ca.cert.fingerprint(hashes.SHA256()))


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory, moto: MotoServer) -> Iterator[Sandbox]:
    """The sandbox before and after one install; ``before`` holds every client's first try."""
    missing = [c for c in CLIENTS if shutil.which(c) is None]
    assert not missing, f"clients missing: {missing}; run 'make deps' (packaging/install-deps.sh)"
    base = tmp_path_factory.mktemp("clients")
    ca = make_ca("trustinstaller clients test CA")
    arn = moto.put_secret(unique("clients"), ca.pem)
    (base / "manifest.json").write_bytes(manifest(session=[arn]))
    (base / "config.toml").write_text(
        'state_dir = "/run/trustinstaller"\n'
        'socket = "/run/trustinstaller/trustinstaller.sock"\n'
        f'endpoint_url = "{moto.endpoint}"\n'
        'browser_users = ["ti-browser"]\n'
        # Chromium's trust here must come from the user's NSS databases alone:
        # tests/test_chromium_policy.py proves the managed policy.
        "chromium_policies = []\n"
    )
    with https_server(ca) as url, PrivateNamespace(base / "ns") as ns:
        user = add_browser_user(ns)
        try:
            box = Sandbox(ns, user, ca, url, base / "config.toml", base / "manifest.json")
            box.before = {
                "verify": Probe(0, json.dumps(box.verify()), ""),
                "chromium": box.chromium(),
                "curl": box.curl(),
                "requests": box.requests(),
                "node": box.node(),
                "keytool": box.keytool(),
                "env": box.agent("env"),
            }
            done = box.agent("apply", str(box.manifest))
            assert done.returncode == 0, str(done)
            yield box
        finally:
            user.remove_home()


def test_chromium_trusts_the_ca_through_the_browser_users_nss_database(sandbox: Sandbox) -> None:
    """Headless Chromium, run as the browser user, refuses the site before and renders it after."""
    before = sandbox.before["chromium"]
    assert "ERR_CERT_AUTHORITY_INVALID" in before.stderr, str(before)
    assert PAGE_TEXT not in before.stdout
    after = sandbox.chromium()
    assert after.reached, str(after)
    assert "ERR_CERT" not in after.stderr


def test_browser_users_databases_are_theirs(sandbox: Sandbox) -> None:
    """Both of the user's NSS databases hold the CA, and every file in them is the user's."""
    from trustinstaller.stores import nss

    home, uid = sandbox.user.home, sandbox.user.uid
    for db in (home / ".pki" / "nssdb", home / ".local" / "share" / "pki" / "nssdb"):
        listing = sandbox.run(["certutil", "-L", "-d", f"sql:{db}"])
        assert any(v == "C,," for v in nss.parse_listing(listing.stdout).values()), str(listing)
        for p in [db, *db.iterdir()]:
            st = p.stat()
            assert (st.st_uid, st.st_gid) == (uid, uid), p
            assert stat.S_IMODE(st.st_mode) & 0o077 == 0, (p, oct(st.st_mode))
    for d in (home / ".pki", home / ".local", home / ".local" / "share" / "pki"):
        assert d.stat().st_uid == uid, d


def test_curl_trusts_the_ca_through_the_os_store(sandbox: Sandbox) -> None:
    """curl, with no environment, fails verification before and fetches the page after."""
    before = sandbox.before["curl"]
    assert before.returncode == 60, str(before)  # CURLE_PEER_FAILED_VERIFICATION
    after = sandbox.curl()
    assert after.reached, str(after)


def test_requests_trusts_the_ca_through_trustinstaller_env(sandbox: Sandbox) -> None:
    """requests refuses before; after, with ``trustinstaller env`` it works and without it not."""
    assert sandbox.before["env"].stdout == "", str(sandbox.before["env"])
    before = sandbox.before["requests"]
    assert "SSLError" in before.stdout, str(before)
    after = sandbox.requests()
    assert after.reached, str(after)
    # certifi, not the OS store: the environment is what makes requests trust the CA.
    bare = sandbox.requests(with_env=False)
    assert "SSLError" in bare.stdout, str(bare)


def test_env_prints_every_variable(sandbox: Sandbox) -> None:
    """``trustinstaller env`` names the combined bundle in each replacing variable, our CAs' PEM
    in each adding one, and the OS's hashed directory in SSL_CERT_DIR."""
    done = sandbox.agent("env")
    assert done.returncode == 0, str(done)
    pairs = dict(line.split("=", 1) for line in done.stdout.splitlines())
    assert {k: pairs[k] for k in BUNDLE_KEYS} == dict.fromkeys(
        BUNDLE_KEYS, f"'{RUNTIME_DIR}/ca-bundle.pem'"
    )
    assert {k: pairs[k] for k in CUSTOM_KEYS} == dict.fromkeys(
        CUSTOM_KEYS, f"'{RUNTIME_DIR}/custom-cas.pem'"
    )
    assert pairs[DIR_KEY] == "'/etc/ssl/certs'"
    env_file = sandbox.run(["cat", ENV_FILE])
    assert done.stdout in env_file.stdout


def test_node_trusts_the_ca_through_node_extra_ca_certs(sandbox: Sandbox) -> None:
    """Node, as the browser user with the environment file sourced, refuses before, works after."""
    before = sandbox.before["node"]
    assert before.returncode == 1, str(before)
    assert "UNABLE_TO_VERIFY_LEAF_SIGNATURE" in before.stdout, str(before)
    after = sandbox.node()
    assert after.reached, str(after)


def test_java_keystore_holds_the_ca_through_the_debian_hook(sandbox: Sandbox) -> None:
    """``keytool -list -cacerts`` lists the CA only after the install (ca-certificates-java)."""
    fingerprint = java_fingerprint(sandbox.ca)
    before = sandbox.before["keytool"]
    assert before.returncode == 0, str(before)
    assert fingerprint not in before.stdout
    after = sandbox.keytool()
    assert after.returncode == 0, str(after)
    assert fingerprint in after.stdout, str(after)


def test_verify_names_every_trust_path_before_and_after(sandbox: Sandbox) -> None:
    """``trustinstaller verify`` sees an unknown CA everywhere before, and acceptance after."""
    before = json.loads(sandbox.before["verify"].stdout)
    assert not any(v["accepted"] for v in before), before
    assert before[0]["trust_path"] == "os bundle"
    assert before[0]["reason"] == "unknown CA"
    after = sandbox.verify()
    assert all(v["accepted"] for v in after), after
    home = sandbox.user.home
    assert [v["location"] for v in after if v["trust_path"] == "nss"] == [
        str(home / ".pki" / "nssdb"),
        str(home / ".local" / "share" / "pki" / "nssdb"),
    ]


def test_the_host_is_untouched(sandbox: Sandbox) -> None:
    """The host's OS bundle, Java keystore and passwd know nothing of the test CA or user."""
    from trustinstaller.stores.debian import bundle_ders

    assert sandbox.ca.der not in bundle_ders(Path("/etc/ssl/certs/ca-certificates.crt"))
    assert "ti-browser" not in Path("/etc/passwd").read_text()
    host_custom = Path(RUNTIME_DIR, "custom-cas.pem")
    assert not host_custom.exists() or sandbox.ca.der not in pem_ders(host_custom.read_bytes())
    host = subprocess.run(
        ["keytool", "-list", "-cacerts", "-storepass", "changeit"],
        capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=120, check=True,
    )  # fmt: skip
    assert java_fingerprint(sandbox.ca) not in host.stdout


def test_chromium_reads_only_the_legacy_database_when_it_exists(tmp_path: Path) -> None:
    """With ~/.pki/nssdb present, a CA only in ~/.local/share/pki/nssdb is ignored: cover both."""
    from trustinstaller import _run
    from trustinstaller.stores.nss import NssDatabase, NssStore
    from trustinstaller.validate import validate

    ca = make_ca("legacy path CA")
    trusted = validate("t.pem", secret_string=ca.pem, secret_binary=None, now=NOW)
    home = tmp_path / "home"
    for db in (home / ".pki" / "nssdb", home / ".local" / "share" / "pki" / "nssdb"):
        db.mkdir(parents=True)
        store = NssStore(_run.run, NssDatabase(db))
        store.install([trusted] if ".local" in db.parts else [], lambda entry: None)

    def chromium(url: str, profile: str) -> Probe:
        done = subprocess.run(
            [*clean_env(HOME=str(home)), "chromium", *CHROMIUM_FLAGS,
             f"--user-data-dir={home / profile}", "--dump-dom", url],
            capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=180, check=False,
        )  # fmt: skip
        return Probe(done.returncode, done.stdout, done.stderr)

    with https_server(ca) as url:
        refused = chromium(url, "p1")
        assert "ERR_CERT_AUTHORITY_INVALID" in refused.stderr, str(refused)
        shutil.rmtree(home / ".pki")
        reached = chromium(url, "p2")
        assert reached.reached, str(reached)
