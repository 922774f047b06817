"""Real Firefox trusts the CA after one install, through its policies file.

Debian's firefox-esr runs headless with a fresh profile, driven over WebDriver BiDi by npm's
puppeteer-core (tests/js, pinned in its package-lock.json), as the browser user. Everything runs
in a private mount namespace: the OS store is a throwaway copy, /run and /etc/firefox are
tmpfs, and the browser user exists only there. The policies file starts out holding another
policy and another CA's entry, as an image builder may leave it.
"""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes

from tests.support import probe
from tests.support.browseruser import BrowserUser, add_browser_user
from tests.support.builders import manifest, unique
from tests.support.certs import Issued, make_ca
from tests.support.moto import MotoServer
from tests.support.ns import PrivateNamespace
from tests.support.tls import https_server

pytestmark = pytest.mark.root

TOP = Path(__file__).resolve().parents[1]
PROBE = TOP / "tests" / "js" / "firefox_probe.mjs"
FIREFOX = "/usr/bin/firefox-esr"
POLICIES = "/etc/firefox/policies/policies.json"
RUNTIME_DIR = "/run/trustinstaller-env"
OTHER_POLICY = {"DisableAppUpdate": True}


class Probe(probe.Probe):
    """What one Firefox run printed: it reached the page once the probe says LOADED too."""

    @property
    def reached(self) -> bool:
        return super().reached and "LOADED" in self.stdout


@dataclass
class Session:
    """The namespace, its browser user, the site, and what happened before the install."""

    ns: PrivateNamespace
    user: BrowserUser
    ca: Issued
    url: str
    config: Path
    other_ca: str
    host_policies: bytes | None
    before: dict[str, Probe] = field(default_factory=dict)

    def run(self, argv: list[str]) -> Probe:
        """Run ``argv`` inside the namespace."""
        done = self.ns.run(argv, timeout=240)
        return Probe(done.returncode, done.stdout, done.stderr)

    def agent(self, *args: str) -> Probe:
        """``python -m trustinstaller --config CONFIG ARGS`` inside the namespace, as root."""
        return self.run([sys.executable, "-m", "trustinstaller", "--config", str(self.config),
                         *args])  # fmt: skip

    def firefox(self) -> Probe:
        """Headless firefox-esr as the browser user, a fresh profile, loading the site."""
        return self.run(self.user.argv(["node", str(PROBE), self.url, FIREFOX]))

    def policies(self) -> dict[str, object]:
        """The namespace's /etc/firefox/policies/policies.json."""
        done = self.run(["cat", POLICIES])
        assert done.returncode == 0, str(done)
        doc: dict[str, object] = json.loads(done.stdout)
        return doc


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory, moto: MotoServer) -> Iterator[Session]:
    """Firefox and the agent's verdicts before one install; the install itself."""
    missing = [c for c in ("node", "firefox-esr", "setpriv", "nsenter") if not shutil.which(c)]
    assert not missing, f"missing: {missing}; run 'make deps' (packaging/install-deps.sh)"
    assert (TOP / "tests/js/node_modules/puppeteer-core").is_dir(), "run 'make js' (npm ci)"
    base = tmp_path_factory.mktemp("firefox")
    ca = make_ca("trustinstaller firefox test CA")
    other = make_ca("an image builder's CA")
    arn = moto.put_secret(unique("firefox"), ca.pem)
    (base / "manifest.json").write_bytes(manifest(session=[arn]))
    (base / "config.toml").write_text(
        'state_dir = "/run/trustinstaller"\n'
        'socket = "/run/trustinstaller/trustinstaller.sock"\n'
        f'endpoint_url = "{moto.endpoint}"\n'
        "nss_databases = []\n"
        f'firefox_policies = ["{POLICIES}"]\n'
    )
    with https_server(ca) as url, PrivateNamespace(base / "ns") as ns:
        user = add_browser_user(ns)
        try:
            # The image's own policy file: another policy, and another CA the browser user reads.
            other_ca = str(user.home / "image-ca.pem")
            Path(other_ca).write_text(other.pem)
            existing = json.dumps({"policies": {**OTHER_POLICY, "Certificates": {
                "Install": [other_ca]}}}, indent=4)  # fmt: skip
            done = ns.run(["sh", "-c", f"mkdir -p /etc/firefox/policies && cat > {POLICIES}"],
                          input=existing, stdin=None)  # fmt: skip
            assert done.returncode == 0, done.stderr
            host = Path(POLICIES)
            s = Session(ns, user, ca, url, base / "config.toml", other_ca,
                        host.read_bytes() if host.exists() else None)  # fmt: skip
            s.before = {
                "firefox": s.firefox(),
                "verify": s.agent("verify", url, "--json"),
                "env": s.agent("env"),
                "policies": Probe(0, s.run(["cat", POLICIES]).stdout, ""),
            }
            done_apply = s.agent("apply", str(base / "manifest.json"))
            assert done_apply.returncode == 0, str(done_apply)
            yield s
        finally:
            user.remove_home()


def test_firefox_refuses_before_and_loads_the_page_after(session: Session) -> None:
    """Firefox with a fresh profile: SEC_ERROR_UNKNOWN_ISSUER before the install, the page after."""
    before = session.before["firefox"]
    assert before.returncode == 1, str(before)
    assert "SEC_ERROR_UNKNOWN_ISSUER" in before.stdout, str(before)
    after = session.firefox()
    assert after.reached, str(after)


def test_the_existing_policy_and_entry_survive(session: Session) -> None:
    """The image's other policy and its Install entry stay; ours is added after them, once."""
    policies = session.policies()["policies"]
    assert isinstance(policies, dict)
    fp = session.ca.cert.fingerprint(hashes.SHA256()).hex()
    crt = f"/usr/local/share/ca-certificates/trustinstaller/{fp}.crt"
    assert policies == {**OTHER_POLICY, "Certificates": {"Install": [session.other_ca, crt]}}
    assert session.run(["stat", "-c", "%a %U", POLICIES]).stdout.split() == ["644", "root"]
    status = json.loads(session.agent("status", "--json").stdout)
    assert f"firefox:{POLICIES}" in status["certificates"][0]["stores"]


def test_verify_reports_the_firefox_policy(session: Session) -> None:
    """``trustinstaller verify``: the Firefox path refuses (unknown CA) before and accepts after."""
    before = json.loads(session.before["verify"].stdout)
    (ff_before,) = [v for v in before if v["trust_path"] == "firefox"]
    assert (ff_before["location"], ff_before["accepted"]) == (POLICIES, False)
    assert ff_before["reason"] == "unknown CA", ff_before
    done = session.agent("verify", session.url, "--json")
    assert done.returncode == 0, str(done)
    (ff_after,) = [v for v in json.loads(done.stdout) if v["trust_path"] == "firefox"]
    assert ff_after["accepted"], ff_after


def test_env_names_playwrights_policies_file(session: Session) -> None:
    """``trustinstaller env`` prints PLAYWRIGHT_FIREFOX_POLICIES_JSON; its file names our CA."""
    assert session.before["env"].stdout == ""
    done = session.agent("env")
    assert done.returncode == 0, str(done)
    path = f"{RUNTIME_DIR}/firefox-policies.json"
    assert f"PLAYWRIGHT_FIREFOX_POLICIES_JSON='{path}'\n" in done.stdout
    doc = json.loads(session.run(["cat", path]).stdout)
    (crt,) = doc["policies"]["Certificates"]["Install"]
    assert crt.startswith("/usr/local/share/ca-certificates/trustinstaller/")
    assert doc == {"policies": {"Certificates": {"Install": [crt]}}}


def test_the_host_is_untouched(session: Session) -> None:
    """The host's policies file is as it was: the namespace's /etc/firefox was a tmpfs."""
    host = Path(POLICIES)
    assert (host.read_bytes() if host.exists() else None) == session.host_policies
    assert session.before["policies"].stdout  # the namespace did hold one
