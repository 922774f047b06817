"""Chromium and Chrome trust the CAs through a root-owned managed policy, for every user and HOME.

First the pure parts as tables (Chromium's JSON dialect, which file wins, what is carried), then
the store on real directories (exact rollback, refusals before anything is written), then real
headless Chromium, Playwright's and Selenium's own launches, as root and as a second uid with a
HOME made for the run, in a private mount namespace whose /etc/chromium and /etc/opt are copies.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import stat
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.support import strace_uids
from tests.support.browseruser import BrowserUser, add_browser_user, clean_env
from tests.support.builders import Journal, b64, manifest, policy, snapshot, trusted, unique
from tests.support.certs import make_ca
from tests.support.moto import MotoServer
from tests.support.ns import PrivateNamespace
from tests.support.probe import CHROMIUM_FLAGS, Probe
from tests.support.tls import https_server
from trustinstaller.documents import Mkdir, Write
from trustinstaller.errors import PolicyError, StoreError
from trustinstaller.stores import chromium
from trustinstaller.stores.chromium import FILENAME, ChromiumPolicyStore, PolicyFile

MANAGED = "/etc/chromium/policies/managed"
CHROME_MANAGED = "/etc/opt/chrome/policies/managed"


# -- Chromium's JSON dialect, as a table ------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"A": 1}', {"A": 1}),
        ('{"A": 1, // a comment\n "B": 2}', {"A": 1, "B": 2}),
        ('{"A": /* a block\ncomment */ 1}', {"A": 1}),
        ('{"A": [1, 2,], "B": 3,}', {"A": [1, 2], "B": 3}),
        ('{"A": [1, /* c */ ], }', {"A": [1]}),
        ('{"A": "http://x/,]"}', {"A": "http://x/,]"}),
        ('{"A": "a \\" // not a comment"}', {"A": 'a " // not a comment'}),
        ('\ufeff{"A": 1}', {"A": 1}),
        ('{"A": "tab\there"}', {"A": "tab\there"}),
    ],
)
def test_a_policy_file_is_read_as_chromium_reads_it(text: str, expected: object) -> None:
    """Comments, trailing commas, a BOM and raw control characters in strings are accepted."""
    assert chromium.parse_policy(text.encode()) == expected


@pytest.mark.parametrize(
    "text",
    [b"[]", b'"x"', b"{", b'{"A": 1 /* open', b'{"A": [1,,]}', b"\xff\xfe", b"{} {}", b""],
)
def test_a_file_chromium_would_skip_is_a_policy_error(text: bytes) -> None:
    """Not JSON to Chromium's reader either, or not an object at its top: PolicyError."""
    with pytest.raises(PolicyError):
        chromium.parse_policy(text)


# -- which file wins, what is carried, what is refused: tables ---------------------------------


def files(*pairs: tuple[str, bytes | None]) -> list[PolicyFile]:
    """Policy files from (name, bytes) pairs; None stands for an unread symlink."""
    return [PolicyFile(n, read=False) if d is None else PolicyFile.from_bytes(n, d)
            for n, d in pairs]  # fmt: skip


@pytest.mark.parametrize(
    ("listing", "refused"),
    [
        ([("00-base.json", policy(CACertificates=["QQ=="]))], []),
        ([("zz-trustinstaller.json", policy(CACertificates=[]))], []),
        ([("zzz.json", policy(CACertificates=["QQ=="]))], ["zzz.json"]),
        ([("zzz.json", policy(CACertificates="not a list"))], ["zzz.json"]),
        ([("zzz.json", policy(HomepageLocation="x"))], []),
        ([("~late", policy(CACertificates=[]))], ["~late"]),
        ([("zzz.json", None)], ["zzz.json"]),
        # Unread anywhere: its CAs would be lost to ours, or its own value could win.
        ([("a.json", None)], ["a.json"]),
        ([("zzz.json", b'{"CACertificates": [] \\x}')], ["zzz.json"]),
        ([("zzz.json", b"not json at all")], []),
        # Upper case and digits sort before lower case: Chromium compares bytes.
        ([("ZZZ.json", policy(CACertificates=[])), ("99.json", policy(CACertificates=[]))], []),
    ],
)
def test_a_file_that_would_win_over_ours_is_a_conflict(
    listing: list[tuple[str, bytes | None]], refused: list[str]
) -> None:
    """A later file that sets CACertificates, or may (unread, or unreadable here), conflicts."""
    found = chromium.conflicts(files(*listing))
    assert [c.split()[0] for c in found] == refused


@pytest.mark.parametrize(
    ("data", "safe", "public", "refused"),
    [
        (policy(CACertificates=["QQ=="]), False, True, True),
        (b'{"CACertificates": [] \\x}', False, True, True),
        (policy(HomepageLocation="x"), False, True, True),
        (b"not json", False, True, True),
        (policy(CACertificates=["QQ=="]), True, False, True),
        (policy(HomepageLocation="x"), True, False, False),
    ],
)
def test_a_file_another_user_may_write_cannot_lend_its_cas_to_every_user(
    data: bytes, safe: bool, public: bool, refused: bool
) -> None:
    """A file another user may write is a conflict whatever it holds; one not every user may
    read is a conflict when it may set CACertificates."""
    one = PolicyFile.from_bytes("00-shared.json", data, safe=safe, public=public)
    found = chromium.conflicts([one])
    assert [c.split()[0] for c in found] == (["00-shared.json"] if refused else [])


def test_every_other_files_entries_are_carried_once_in_file_order() -> None:
    """CACertificates of every earlier file, each entry once; ours, a later one and junk are not."""
    listing = files(
        ("a.json", policy(CACertificates=["QQ==", "Qg=="])),
        ("b.json", b'{"CACertificates": ["Qg==", "Qw==",], // more\n}'),
        ("c.json", policy(CACertificates="QQ==")),
        ("d.json", policy(CACertificates=[1, "RA=="])),
        (FILENAME, policy(CACertificates=["T2xk"])),
        ("zzz.json", policy(CACertificates=["Wg=="])),
    )
    assert chromium.carried(listing) == ["QQ==", "Qg==", "Qw==", "RA=="]


LIST_A = policy(CACertificates=["QQ=="])


@pytest.mark.parametrize(
    ("listing", "winner", "count"),
    [
        ([], None, 0),
        ([("a.json", policy(CACertificates=["QQ=="]))], "a.json", 1),
        ([("a.json", policy(CACertificates=["QQ=="])), ("b.json", policy(X=1))], "a.json", 1),
        (
            [
                ("b.json", policy(CACertificates=["QQ==", "Qg=="])),
                ("a.json", policy(CACertificates=["QQ=="])),
            ],
            "b.json",
            2,
        ),
        (
            [("a.json", LIST_A), ("b.json", policy(CACertificates="bad"))],
            "b.json",
            0,
        ),
        ([("a.json", policy(CACertificates=["QQ==", "not base64!", 7]))], "a.json", 1),
    ],
)
def test_chromium_takes_the_last_file_that_sets_the_key(
    listing: list[tuple[str, bytes]], winner: str | None, count: int
) -> None:
    """The last file by name that sets CACertificates wins whole; bad entries are skipped."""
    name, ders = chromium.effective(files(*listing))
    assert (name, len(ders)) == (winner, count)


def test_a_distrusted_ca_of_ours_is_found_in_any_file() -> None:
    """A CADistrustedCertificates entry naming one of ours is reported with the file."""
    ours, other = make_ca("ours"), make_ca("other")
    listing = files(
        ("a.json", policy(CADistrustedCertificates=[b64(ours), b64(other)])),
        ("b.json", policy(CADistrustedCertificates=[b64(other)])),
        ("c.json", policy(CADistrustedCertificates=[b64(ours)])),
    )
    ca = trusted(ours)
    assert chromium.distrusted(listing, [ca, trusted(make_ca("clean"))]) == {
        ca.fingerprint_sha256: ["a.json", "c.json"]
    }


# -- the store on real directories -----------------------------------------------------------


def test_install_makes_a_world_readable_file_and_rollback_removes_it_and_its_dirs(
    public_tmp: Path,
) -> None:
    """Under umask 077, missing directories are made 0755 and recorded, the file 0644; then gone."""
    directory = public_tmp / "etc" / "opt" / "chrome" / "policies" / "managed"
    (public_tmp / "etc").mkdir()
    store, ca, journal = ChromiumPolicyStore(directory), trusted(make_ca("a")), Journal()
    before = snapshot(public_tmp)
    old = os.umask(0o077)
    try:
        store.preflight()
        store.install([ca], journal)
    finally:
        os.umask(old)
    made = [e.path for e in journal.entries if isinstance(e, Mkdir)]
    assert made == [str(public_tmp / "etc/opt"), str(public_tmp / "etc/opt/chrome"),
                    str(public_tmp / "etc/opt/chrome/policies"), str(directory)]  # fmt: skip
    for d in map(Path, made):
        assert stat.S_IMODE(d.stat().st_mode) == 0o755
    assert stat.S_IMODE((directory / FILENAME).stat().st_mode) == 0o644
    assert json.loads((directory / FILENAME).read_bytes()) == {
        "CACertificates": [base64.b64encode(ca.der).decode()]
    }
    store.verify([ca])
    store.rollback(journal.entries)
    assert snapshot(public_tmp) == before


def test_other_files_are_carried_and_rollback_restores_every_byte(public_tmp: Path) -> None:
    """Another file's CAs go into ours beside our CA; rollback puts back our file's old bytes."""
    directory = public_tmp / "managed"
    directory.mkdir()
    corp = make_ca("corp")
    (directory / "00-corp.json").write_bytes(policy(CACertificates=[b64(corp)], X=1))
    (directory / "50-other.json").write_bytes(b"{ not json")
    (directory / FILENAME).write_bytes(b'{"CACertificates": []}\n')
    (directory / FILENAME).chmod(0o640)
    before = snapshot(public_tmp)
    store, ca, journal = ChromiumPolicyStore(directory), trusted(make_ca("ours")), Journal()
    store.preflight()
    store.install([ca], journal)
    store.verify([ca])
    doc = json.loads((directory / FILENAME).read_bytes())
    assert doc == {"CACertificates": [b64(corp), base64.b64encode(ca.der).decode()]}
    assert [type(e) for e in journal.entries] == [Write]
    store.rollback(journal.entries)
    assert snapshot(public_tmp) == before


def test_a_later_file_that_sets_the_key_is_refused_before_anything_is_written(
    tmp_path: Path,
) -> None:
    """preflight names the file that would win over ours; install refuses it too, writes nothing."""
    directory = tmp_path / "managed"
    directory.mkdir()
    (directory / "zzz-platform.json").write_bytes(policy(CACertificates=[]))
    before = snapshot(tmp_path)
    store = ChromiumPolicyStore(directory)
    with pytest.raises(StoreError, match=r"zzz-platform\.json sets CACertificates and sorts after"):
        store.preflight()
    journal = Journal()
    with pytest.raises(StoreError, match=r"zzz-platform\.json"):
        store.install([trusted(make_ca("x"))], journal)
    assert journal.entries == []
    assert snapshot(tmp_path) == before


@pytest.mark.root
def test_a_policy_file_the_browser_user_may_write_is_refused(tmp_path: Path) -> None:
    """A CACertificates file that another uid owns, or that others may write, is refused: carried
    into ours, it would let that user add trust for every user."""
    directory = tmp_path / "managed"
    directory.mkdir()
    shared = directory / "00-shared.json"
    shared.write_bytes(policy(CACertificates=[b64(make_ca("corp"))]))
    store = ChromiumPolicyStore(directory)
    for owner, mode in ((0, 0o666), (64123, 0o644)):
        os.chown(shared, owner, owner)
        shared.chmod(mode)
        with pytest.raises(StoreError, match=r"00-shared\.json is not root's alone"):
            store.preflight()
    assert sorted(p.name for p in directory.iterdir()) == ["00-shared.json"]


def test_a_symlinked_policy_directory_is_refused(tmp_path: Path) -> None:
    """The managed directory is walked without following links: a link there is refused."""
    (tmp_path / "real").mkdir()
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "managed").symlink_to(tmp_path / "real")
    store = ChromiumPolicyStore(tmp_path / "policies" / "managed")
    with pytest.raises(StoreError, match="refusing to write through it"):
        store.preflight()
    with pytest.raises(StoreError, match="refusing to write through it"):
        store.install([trusted(make_ca("x"))], Journal())
    assert list((tmp_path / "real").iterdir()) == []


def test_a_distrusting_policy_is_a_warning_on_the_certificate(tmp_path: Path) -> None:
    """notices() names the file whose CADistrustedCertificates lists our CA."""
    directory = tmp_path / "managed"
    directory.mkdir()
    issued = make_ca("distrusted")
    (directory / "10-distrust.json").write_bytes(policy(CADistrustedCertificates=[b64(issued)]))
    ca = trusted(issued)
    store = ChromiumPolicyStore(directory)
    store.install([ca], Journal())
    [(fingerprint, [warning])] = store.notices([ca]).items()
    assert fingerprint == ca.fingerprint_sha256
    assert f"{directory}/10-distrust.json lists it in CADistrustedCertificates" in warning


# -- real Chromium, Playwright and Selenium in a private namespace ---------------------------

PLAYWRIGHT_PROBE = """
import sys
from playwright.sync_api import sync_playwright
with sync_playwright() as p:
    browser = p.chromium.launch(executable_path="/usr/bin/chromium",
                                args=["--disable-gpu", "--disable-background-networking"])
    page = browser.new_page()
    try:
        page.goto(sys.argv[1], timeout=30000)
    except Exception as exc:
        print("ERROR", str(exc).splitlines()[0])
        sys.exit(1)
    print(page.content())
    browser.close()
"""

SELENIUM_PROBE = """
import sys
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
opts = webdriver.ChromeOptions()
opts.binary_location = "/usr/bin/chromium"
for a in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"):
    opts.add_argument(a)
driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)
try:
    driver.get(sys.argv[1])
    print(driver.page_source)
finally:
    driver.quit()
"""


@dataclass
class Session:
    """A namespace with default configuration, a second uid, and two sites."""

    ns: PrivateNamespace
    user: BrowserUser
    url: str
    corp_url: str
    config: Path
    scratch: Path
    results: dict[str, Probe] = field(default_factory=dict)
    calls: list[strace_uids.Call] = field(default_factory=list)
    homes: list[Path] = field(default_factory=list)

    def run(self, argv: list[str]) -> Probe:
        """Run ``argv`` inside the namespace."""
        done = self.ns.run(argv, timeout=180)
        return Probe(done.returncode, done.stdout, done.stderr)

    def fresh_home(self, uid: int) -> Path:
        """A HOME made for one run, owned by ``uid``, with no NSS database in it."""
        home = Path(tempfile.mkdtemp(prefix="ti-fresh-home-"))
        os.chown(home, uid, uid)
        self.homes.append(home)
        return home

    def chromium(self, url: str, *, uid: int) -> Probe:
        """Headless Chromium as ``uid`` with a fresh HOME and profile, dumping the page."""
        home = self.fresh_home(uid)
        argv = [*clean_env(HOME=str(home)), "chromium", *CHROMIUM_FLAGS,
                f"--user-data-dir={home / 'profile'}", "--dump-dom", url]  # fmt: skip
        if uid:
            argv = ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--", *argv]
        return self.run(argv)

    def driver(self, probe: str, url: str) -> Probe:
        """A Playwright or Selenium script as root, with a fresh HOME and a temp profile."""
        home = self.fresh_home(0)
        return self.run([*clean_env(HOME=str(home)), sys.executable, "-c", probe, url])

    def agent(self, *args: str, prefix: tuple[str, ...] = ()) -> Probe:
        """``python -m trustinstaller --config CONFIG ARGS`` inside the namespace, as root."""
        return self.run([*prefix, sys.executable, "-m", "trustinstaller", "--config",
                         str(self.config), *args])  # fmt: skip

    def probes(self, stage: str) -> None:
        """Every client against our site (and Chromium against the corp site), as ``stage``."""
        self.results[f"{stage} root"] = self.chromium(self.url, uid=0)
        self.results[f"{stage} user"] = self.chromium(self.url, uid=self.user.uid)
        self.results[f"{stage} corp"] = self.chromium(self.corp_url, uid=self.user.uid)
        self.results[f"{stage} playwright"] = self.driver(PLAYWRIGHT_PROBE, self.url)
        self.results[f"{stage} selenium"] = self.driver(SELENIUM_PROBE, self.url)


def write_inside(ns: PrivateNamespace, path: str, data: bytes) -> None:
    """Write a root-owned 0644 file at ``path`` as seen inside ``ns``."""
    done = ns.run(["sh", "-c", 'mkdir -p "$(dirname "$1")" && cat > "$1" && chmod 0644 "$1"',
                   "sh", path], input=data.decode(), stdin=None, timeout=30)  # fmt: skip
    assert done.returncode == 0, done.stderr


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory, moto: MotoServer) -> Iterator[Session]:
    """Probes before, a refused install, then one default install under strace, and probes."""
    for tool in ("chromium", "chromedriver", "strace", "setpriv"):
        assert shutil.which(tool), f"{tool} missing: run 'make deps'"
    base = tmp_path_factory.mktemp("chromium-policy")
    ca, corp = make_ca("trustinstaller chromium policy CA"), make_ca("an image builder's CA")
    arn = moto.put_secret(unique("chromium"), ca.pem)
    (base / "manifest.json").write_bytes(manifest(session=[arn]))
    # The defaults, but for where the daemon's state goes and which Secrets Manager answers.
    (base / "config.toml").write_text(
        'state_dir = "/run/trustinstaller"\n'
        'socket = "/run/trustinstaller/trustinstaller.sock"\n'
        f'endpoint_url = "{moto.endpoint}"\n'
    )
    with (
        https_server(ca) as url,
        https_server(corp) as corp_url,
        PrivateNamespace(base / "ns") as ns,
    ):
        user = add_browser_user(ns)
        s = Session(ns, user, url, corp_url, base / "config.toml", base)
        try:
            corp_policy = policy(CACertificates=[b64(corp)], DefaultBrowserSettingEnabled=False)
            write_inside(ns, f"{MANAGED}/00-corp.json", corp_policy)
            s.probes("before")
            # A later file would win over ours: refused, and nothing written anywhere.
            write_inside(ns, f"{MANAGED}/zzz-late.json", policy(CACertificates=[]))
            s.results["refused"] = s.agent("apply", str(base / "manifest.json"))
            s.results["refused ls"] = s.run(["ls", "-A", MANAGED, "/etc/opt",
                                             "/usr/local/share/ca-certificates"])  # fmt: skip
            assert s.run(["rm", f"{MANAGED}/zzz-late.json"]).returncode == 0
            log = base / "apply.strace"
            s.results["apply"] = s.agent(
                "apply", str(base / "manifest.json"),
                prefix=("strace", "-f", "-qq", "-e", "trace=%creds,%process", "-o", str(log)),
            )  # fmt: skip
            s.calls = strace_uids.parse(log.read_text().splitlines())
            s.results["policy"] = s.run(["cat", f"{MANAGED}/{FILENAME}"])
            s.results["chrome policy"] = s.run(["cat", f"{CHROME_MANAGED}/{FILENAME}"])
            s.results["corp policy"] = s.run(["cat", f"{MANAGED}/00-corp.json"])
            s.results["verify"] = s.agent("verify", url, "--json")
            s.probes("after")
            s.results["ca"] = Probe(0, b64(ca), "")
            s.results["corp"] = Probe(0, b64(corp), "")
            yield s
        finally:
            user.remove_home()
            for home in s.homes:
                shutil.rmtree(home, ignore_errors=True)


@pytest.mark.root
@pytest.mark.parametrize("who", ["root", "user", "playwright", "selenium"])
def test_chromium_refuses_before_and_trusts_after_a_default_install(
    session: Session, who: str
) -> None:
    """With only the defaults, Chromium trusts the CA: as root, as a second uid with a HOME
    made for the run, and launched by Playwright and by Selenium, each with a temp profile."""
    before, after = session.results[f"before {who}"], session.results[f"after {who}"]
    assert session.results["apply"].returncode == 0, str(session.results["apply"])
    assert not before.reached, f"reached the site before the install:\n{before}"
    assert after.reached, f"refused the site after the install:\n{after}"


@pytest.mark.root
def test_a_default_install_runs_nothing_as_another_uid(session: Session) -> None:
    """Under strace -f, no process of a default install ever runs with a uid other than 0."""
    assert session.calls, "strace recorded nothing"
    others = [c for c in session.calls if c.euid != 0]
    assert not others, f"{len(others)} calls as another uid: {others[:5]}"
    assert any(c.name == "execve" for c in session.calls), "no exec seen: the trace is vacuous"


@pytest.mark.root
def test_another_files_ca_is_kept_and_its_bytes_untouched(session: Session) -> None:
    """The image builder's CA stays trusted, is carried into ours, and its file is unchanged."""
    assert session.results["before corp"].reached, str(session.results["before corp"])
    assert session.results["after corp"].reached, str(session.results["after corp"])
    ours = json.loads(session.results["policy"].stdout)
    assert ours == {"CACertificates": [session.results["corp"].stdout,
                                       session.results["ca"].stdout]}  # fmt: skip
    assert session.results["corp policy"].stdout.encode() == policy(
        CACertificates=[session.results["corp"].stdout], DefaultBrowserSettingEnabled=False
    )


@pytest.mark.root
def test_google_chromes_directory_gets_the_same_policy(session: Session) -> None:
    """Chrome's managed directory holds our file too, made for it, with our CA."""
    doc = json.loads(session.results["chrome policy"].stdout)
    assert doc == {"CACertificates": [session.results["ca"].stdout]}


@pytest.mark.root
def test_a_later_policy_file_refuses_the_install_before_anything_is_written(
    session: Session,
) -> None:
    """A file sorting after ours that sets CACertificates fails the install, naming the file,
    and leaves no policy file, no Chrome directory and no OS-store file behind."""
    refused = session.results["refused"]
    assert refused.returncode == 1, str(refused)
    assert "zzz-late.json sets CACertificates and sorts after zz-trustinstaller.json" in (
        refused.stderr
    ), str(refused)
    listing = session.results["refused ls"].stdout.split()
    assert FILENAME not in listing
    assert "chrome" not in listing
    assert "trustinstaller" not in listing


@pytest.mark.root
def test_verify_reports_the_chromium_policy_paths(session: Session) -> None:
    """``verify`` names each managed directory, and says the CAs Chromium takes accept the site."""
    verdicts = json.loads(session.results["verify"].stdout)
    policy_paths = {v["location"]: v["accepted"] for v in verdicts
                    if v["trust_path"] == "chromium policy"}  # fmt: skip
    assert policy_paths == {MANAGED: True, CHROME_MANAGED: True}, verdicts
