"""The runtime trust environment, the browser users' databases in the configuration, and
``trustinstaller verify``: pure parts with tables, and real handshakes against local servers."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import certifi
import pytest

from tests.support.browseruser import free_uid
from tests.support.certs import Issued, make_ca
from tests.support.daemon import cli
from tests.support.leafserver import make_leaf_at, serve_leaf
from tests.support.tls import handshake, https_server
from trustinstaller import _run, config, verify
from trustinstaller._run import Account
from trustinstaller.documents import Entry, Mkdir, Write
from trustinstaller.errors import BadURLError, ConfigError, HostError, StoreError
from trustinstaller.stores import runtime_env
from trustinstaller.stores.nss import NssDatabase, NssStore
from trustinstaller.stores.runtime_env import RuntimeEnvStore
from trustinstaller.validate import TrustedCA, validate

NOW = dt.datetime.now(dt.UTC)


def trusted(ca: Issued) -> TrustedCA:
    """The validated form of a test CA, as the installer hands it to a store."""
    return validate("test.pem", secret_string=ca.pem, secret_binary=None, now=NOW)


class Journal:
    """A recorder that also notes which files already existed when each step was recorded."""

    def __init__(self) -> None:
        self.entries: list[Entry] = []
        self.existed: list[bool] = []

    def __call__(self, *entries: Entry) -> None:
        for entry in entries:
            if isinstance(entry, Write | Mkdir):
                target = (
                    Path(entry.dir, entry.name) if isinstance(entry, Write) else Path(entry.path)
                )
                self.existed.append(target.exists())
            self.entries.append(entry)


# -- the environment text -------------------------------------------------------


def test_env_pairs_point_replacing_variables_at_the_full_bundle() -> None:
    """Replacing variables name the full bundle, adding ones our CAs, SSL_CERT_DIR the OS's."""
    bundle, custom = "/run/ti-env/ca-bundle.pem", "/run/ti-env/custom-cas.pem"
    assert runtime_env.env_pairs(Path("/run/ti-env"), Path("/x/certs")) == [
        ("SSL_CERT_FILE", bundle),
        ("REQUESTS_CA_BUNDLE", bundle),
        ("CURL_CA_BUNDLE", bundle),
        ("AWS_CA_BUNDLE", bundle),
        ("HTTPLIB2_CA_CERTS", bundle),
        ("GIT_SSL_CAINFO", bundle),
        ("PIP_CERT", bundle),
        ("GRPC_DEFAULT_SSL_ROOTS_FILE_PATH", bundle),
        ("CLOUDSDK_CORE_CUSTOM_CA_CERTS_FILE", bundle),
        ("NIX_SSL_CERT_FILE", bundle),
        ("NODE_EXTRA_CA_CERTS", custom),
        ("DENO_CERT", custom),
        ("SSL_CERT_DIR", "/x/certs"),
        ("PLAYWRIGHT_FIREFOX_POLICIES_JSON", "/run/ti-env/firefox-policies.json"),
    ]
    assert dict(runtime_env.env_pairs(Path("/run/ti-env")))["SSL_CERT_DIR"] == "/etc/ssl/certs"


def test_store_names_the_os_stores_hashed_directory(tmp_path: Path) -> None:
    """The env file's SSL_CERT_DIR is the directory holding the OS bundle the store copies."""
    store = RuntimeEnvStore(tmp_path / "env", tmp_path / "etc-ssl-certs" / "ca-certificates.crt")
    assert f"SSL_CERT_DIR='{tmp_path / 'etc-ssl-certs'}'\n" in store.env_text()


@pytest.mark.parametrize(
    ("export", "expected"),
    [
        (False, "SSL_CERT_FILE='/a/b.pem'\n"),
        (True, "export SSL_CERT_FILE='/a/b.pem'\n"),
    ],
)
def test_render_env_quotes_every_value(export: bool, expected: str) -> None:
    """Each line is KEY='value', with ``export`` only when asked."""
    assert runtime_env.render_env([("SSL_CERT_FILE", "/a/b.pem")], export=export) == expected


@pytest.mark.parametrize(
    "path", ["/run/a b", "/run/it's", "/run/$HOME", "/run/a\nb", "/run/back\\slash", "/run/`x`"]
)
def test_a_path_sh_and_systemd_would_read_differently_is_refused(path: str) -> None:
    """Quotes, spaces, dollars, backslashes and newlines are refused, not escaped."""
    with pytest.raises(StoreError, match=r"store env: .*runtime_dir"):
        runtime_env.quote(path)
    with pytest.raises(ConfigError, match="runtime_dir"):
        config.from_mapping({"runtime_dir": path})


def test_env_file_is_sourced_by_sh_to_the_exact_paths(tmp_path: Path) -> None:
    """``set -a; . env`` in a real sh exports exactly the paths the file names."""
    env_file = tmp_path / "env"
    env_file.write_text(runtime_env.env_file_text(Path("/run/trustinstaller-env")))
    done = subprocess.run(
        ["env", "-i", "/bin/sh", "-c", f"set -a; . {env_file}; set +a; exec env"],
        capture_output=True, text=True, check=True, timeout=30, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    got = dict(line.split("=", 1) for line in done.stdout.splitlines() if "=" in line)
    for key, value in runtime_env.env_pairs(Path("/run/trustinstaller-env")):
        assert got[key] == value


def test_env_file_has_only_comments_and_assignments() -> None:
    """Every line is a comment or KEY='value', the subset systemd's EnvironmentFile= reads."""
    import re

    for line in runtime_env.env_file_text(Path("/run/x")).splitlines():
        assert line.startswith("#") or re.fullmatch(r"[A-Z][A-Z0-9_]*='[^'\\\n]*'", line), line


# -- the bundles ----------------------------------------------------------------


def test_combined_bundle_adds_only_what_the_base_lacks() -> None:
    """Our CAs follow the base bundle once each; one already in the base is not repeated."""
    a, b = make_ca("a"), make_ca("b")
    base = runtime_env.Base(a.pem.encode(), frozenset([a.der]), "os")
    combined = runtime_env.combined_pem(base, [trusted(a), trusted(b)])
    assert combined.startswith(base.data)
    assert runtime_env.pem_ders(combined) == [a.der, b.der]
    custom = runtime_env.custom_pem([trusted(a), trusted(b)])
    assert runtime_env.pem_ders(custom) == [a.der, b.der]
    assert f"sha256={trusted(a).fingerprint_sha256}".encode() in custom


@pytest.mark.parametrize("content", [None, b"", b"not a bundle\n"])
def test_base_bundle_falls_back_to_certifi(tmp_path: Path, content: bytes | None) -> None:
    """With no usable OS bundle (a minimal container), certifi's roots are the base."""
    os_bundle = tmp_path / "ca-certificates.crt"
    if content is not None:
        os_bundle.write_bytes(content)
    base = runtime_env.base_bundle(os_bundle)
    assert base.source == certifi.where()
    assert base.data == Path(certifi.where()).read_bytes()
    assert base.ders == frozenset(runtime_env.pem_ders(base.data))


def test_base_bundle_prefers_the_os_bundle(tmp_path: Path) -> None:
    """An OS bundle holding certificates is used as it is."""
    os_bundle = tmp_path / "ca-certificates.crt"
    root = make_ca("os root")
    os_bundle.write_text(root.pem)
    base = runtime_env.base_bundle(os_bundle)
    assert base == runtime_env.Base(os_bundle.read_bytes(), frozenset([root.der]), str(os_bundle))


def test_the_os_bundle_is_never_read_through_a_link(tmp_path: Path) -> None:
    """An OS bundle that is a symlink (say, to a file another user wrote) is not followed: the
    store refuses, naming it, and writes nothing."""
    elsewhere = tmp_path / "elsewhere.pem"
    elsewhere.write_text(make_ca("not the os").pem)
    (tmp_path / "run").mkdir()
    store = make_store(tmp_path)
    store.os_bundle.unlink()
    store.os_bundle.symlink_to(elsewhere)
    journal = Journal()
    with pytest.raises(StoreError, match="is a symlink; refusing to read the OS bundle"):
        store.install([trusted(make_ca("one"))], journal)
    assert journal.entries == []
    assert not store.directory.exists()


# -- the store ------------------------------------------------------------------


def make_store(tmp_path: Path, *, os_roots: int = 1) -> RuntimeEnvStore:
    """A store whose directory and OS bundle are under ``tmp_path``."""
    os_bundle = tmp_path / "os-bundle.pem"
    os_bundle.write_text("".join(make_ca(f"os root {i}").pem for i in range(os_roots)))
    return RuntimeEnvStore(tmp_path / "run" / "trustinstaller-env", os_bundle)


def test_store_writes_readable_files_journalled_first(tmp_path: Path) -> None:
    """Directory 0755, files 0644, each step recorded before it is taken, then verified."""
    (tmp_path / "run").mkdir()
    store = make_store(tmp_path)
    cas = [trusted(make_ca("one")), trusted(make_ca("two"))]
    journal = Journal()
    old = os.umask(0o077)  # a strict umask must not hide the files from the browser user
    try:
        store.preflight()
        store.install(cas, journal)
    finally:
        os.umask(old)
    assert [(e.action, getattr(e, "name", None)) for e in journal.entries] == [
        ("mkdir", None), ("write", "ca-bundle.pem"), ("write", "custom-cas.pem"),
        ("write", "firefox-policies.json"), ("write", "env"),
    ]  # fmt: skip
    assert journal.existed == [False, False, False, False, False]
    assert stat.S_IMODE(store.directory.stat().st_mode) == 0o755
    for name in ("ca-bundle.pem", "custom-cas.pem", "firefox-policies.json", "env"):
        assert stat.S_IMODE((store.directory / name).stat().st_mode) == 0o644
    store.verify(cas)
    bundle = runtime_env.pem_ders((store.directory / "ca-bundle.pem").read_bytes())
    assert bundle[1:] == [ca.der for ca in cas]  # the OS root first, then ours
    assert runtime_env.installed(store.directory)


def test_store_rollback_removes_everything_it_wrote(tmp_path: Path) -> None:
    """After rollback the directory is gone, and a second rollback is harmless."""
    (tmp_path / "run").mkdir()
    store = make_store(tmp_path)
    journal = Journal()
    store.install([trusted(make_ca("gone"))], journal)
    store.rollback(journal.entries)
    assert not store.directory.exists()
    store.rollback(journal.entries)
    assert not runtime_env.installed(store.directory)


def test_store_rollback_of_a_partial_journal(tmp_path: Path) -> None:
    """A crash after recording a write but before it happened rolls back cleanly."""
    (tmp_path / "run").mkdir()
    store = make_store(tmp_path)
    store.directory.mkdir()
    entries: list[Entry] = [
        Mkdir(str(store.directory)),
        Write(str(store.directory), "ca-bundle.pem"),
    ]
    store.rollback(entries)
    assert not store.directory.exists()


def test_verify_notices_a_missing_certificate(tmp_path: Path) -> None:
    """verify raises StoreError naming the fingerprint when a bundle lacks a CA."""
    (tmp_path / "run").mkdir()
    store = make_store(tmp_path)
    store.install([trusted(make_ca("present"))], Journal())
    absent = trusted(make_ca("absent"))
    with pytest.raises(StoreError, match=absent.fingerprint_sha256):
        store.verify([absent])


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (lambda d: d.mkdir(mode=0o700), "could not read it"),
        (lambda d: d.symlink_to("/etc"), "symlink or not a directory"),
        (lambda d: d.write_text("x"), "symlink or not a directory"),
    ],
)
def test_preflight_refuses_a_directory_the_browser_user_cannot_use(
    tmp_path: Path, setup: Any, message: str
) -> None:
    """A 0700 directory, a symlink or a file where the directory goes are refused up front."""
    (tmp_path / "run").mkdir()
    store = make_store(tmp_path)
    setup(store.directory)
    with pytest.raises(StoreError, match=message):
        store.preflight()


def test_preflight_refuses_a_runtime_dir_in_a_directory_every_user_may_write(
    tmp_path: Path,
) -> None:
    """In a /run of mode 1777 another user could make the directory first (and systemd's
    RuntimeDirectory= would hand it, and what they put in it, to root): refused up front."""
    (tmp_path / "run").mkdir()
    (tmp_path / "run").chmod(0o1777)
    store = make_store(tmp_path)
    with pytest.raises(StoreError, match=r"run may be written by other users \(mode 1777\)"):
        store.preflight()
    assert not store.directory.exists()


def test_combined_bundle_passes_a_real_handshake(tmp_path: Path) -> None:
    """A handshake trusting only the combined bundle reaches a site our CA signed."""
    (tmp_path / "run").mkdir()
    store = make_store(tmp_path)
    ca = make_ca("handshake")
    with https_server(ca) as url:
        # Refused for the right reason: the CA is unknown (a refused connection would not do).
        assert "CERTIFICATE_VERIFY_FAILED" in (handshake(url, store.os_bundle) or "")
        store.install([trusted(ca)], Journal())
        assert handshake(url, store.directory / "ca-bundle.pem") is None
        assert handshake(url, store.directory / "custom-cas.pem") is None


# -- configuration ----------------------------------------------------------------


def test_browser_users_cover_both_chromium_databases() -> None:
    """A browser user adds ~/.pki/nssdb and ~/.local/share/pki/nssdb, owned by it; no root one."""
    user = Account.lookup("nobody")
    cfg = config.from_mapping({"browser_users": ["nobody"]})
    assert cfg.nss_databases == (
        NssDatabase(user.home / ".pki/nssdb", user),
        NssDatabase(user.home / ".local/share/pki/nssdb", user),
    )
    assert cfg.browser_users == ("nobody",)


def test_explicit_databases_stay_beside_browser_users() -> None:
    """Explicit nss_databases come first; one repeated with the same owner is listed once."""
    user = Account.lookup("nobody")
    cfg = config.from_mapping(
        {
            "nss_databases": [
                "sql:/srv/nssdb",
                {"path": f"sql:{user.home}/.pki/nssdb", "owner": "nobody"},
            ],
            "browser_users": ["nobody"],
        }
    )
    assert cfg.nss_databases == (
        NssDatabase(Path("/srv/nssdb")),
        NssDatabase(user.home / ".pki/nssdb", user),
        NssDatabase(user.home / ".local/share/pki/nssdb", user),
    )


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ([{"path": "sql:/srv/k"}], "tables"),
        ([{"path": "sql:/srv/k", "owner": "nobody", "mode": 1}], "tables"),
        ([{"path": "/srv/k", "owner": "nobody"}], "use 'sql:' and an absolute path"),
        ([{"path": "sql:/srv/k", "owner": "no-such-user-trustinstaller"}], "no user"),
        ([{"path": "sql:/srv/k", "owner": "root"}], "is root"),
        (["sql:/srv/k", {"path": "sql:/srv/k", "owner": "nobody"}], "two different owners"),
        (["sql:/srv/../root/k"], "no '..'"),
        ([3], "must be a list"),
        ("sql:/srv/k", "must be a list"),
    ],
)
def test_bad_nss_databases_are_refused(value: object, message: str) -> None:
    """A database entry of the wrong shape, owner or path is a configuration error."""
    with pytest.raises(ConfigError, match=f"nss_databases: .*{re.escape(message)}"):
        config.from_mapping({"nss_databases": value})


# In a new mount namespace, root's home gets a throwaway overlay (writes land in $1, never in
# the host's /root), with or without ~/.pki/nssdb; then the configuration's default is printed.
ROOT_HOME_OVERLAY = r"""
set -eu
scratch=$1; legacy=$2; home=$3; shift 3
mkdir -p "$scratch/upper" "$scratch/work"
mount -t overlay overlay -o "lowerdir=$home,upperdir=$scratch/upper,workdir=$scratch/work" "$home"
mountpoint -q "$home"
rm -rf "$home/.pki"
[ "$legacy" = no ] || mkdir -p "$home/.pki/nssdb"
exec "$@"
"""


@pytest.mark.root
@pytest.mark.parametrize("legacy", ["no", "yes"])
def test_neither_key_means_no_nss_database(tmp_path: Path, legacy: str) -> None:
    """With neither key, no NSS database at all, whatever root's home holds: Chromium trusts
    through its managed policy, and the defaults probe nothing on the host."""
    home = Account.lookup("root").home
    done = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", ROOT_HOME_OVERLAY, "sh",
         str(tmp_path), legacy, str(home), sys.executable, "-c",
         "from trustinstaller import config\n"
         "c = config.from_mapping({})\n"
         "print(len(c.nss_databases), *c.chromium_policies)"],
        capture_output=True, text=True, timeout=60, check=False, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [
        "0", "/etc/chromium/policies/managed", "/etc/opt/chrome/policies/managed"
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (["no-such-user-trustinstaller"], "no user 'no-such-user-trustinstaller'"),
        ("browser", "must be a list"),
        ([""], "must be a list"),
    ],
)
def test_bad_browser_users_are_refused(value: object, message: str) -> None:
    """An unknown user or a wrong type is a configuration error naming the key."""
    with pytest.raises(ConfigError, match=f"browser_users: {message}"):
        config.from_mapping({"browser_users": value})


def test_runtime_dir_defaults_beside_the_state_directory() -> None:
    """The default is /run/trustinstaller-env: outside the 0700 state directory."""
    assert config.Config().runtime_env_dir == Path("/run/trustinstaller-env")
    assert config.from_mapping({"state_dir": "/srv/ti"}).runtime_env_dir == Path("/srv/ti-env")
    cfg = config.from_mapping({"runtime_dir": "/var/lib/ti-env"})
    assert cfg.runtime_env_dir == Path("/var/lib/ti-env")


# -- trustinstaller verify ----------------------------------------------------------


def nss_db(tmp_path: Path, *cas: Issued) -> NssDatabase:
    """A fresh NSS database trusting ``cas`` for TLS servers."""
    d = tmp_path / "nssdb"
    d.mkdir()
    run = ["certutil", "-d", f"sql:{d}"]
    subprocess.run([*run, "-N", "--empty-password"], check=True, timeout=30,
                   stdin=subprocess.DEVNULL, capture_output=True)  # fmt: skip
    for i, ca in enumerate(cas):
        der = tmp_path / f"ca{i}.der"
        der.write_bytes(ca.der)
        subprocess.run([*run, "-A", "-n", f"ca{i}", "-t", "C,,", "-i", str(der)], check=True,
                       timeout=30, stdin=subprocess.DEVNULL, capture_output=True)  # fmt: skip
    return NssDatabase(d)


def verdicts_for(url: str, tmp_path: Path, trusted_ca: Issued | None) -> list[verify.Verdict]:
    """Verdicts with an OS bundle lacking the CA and a combined bundle and NSS db holding it."""
    os_bundle = tmp_path / "os.pem"
    os_bundle.write_text(make_ca("unrelated root").pem)
    combined = tmp_path / "combined.pem"
    combined.write_text(os_bundle.read_text() + (trusted_ca.pem if trusted_ca else ""))
    db = nss_db(tmp_path, *([trusted_ca] if trusted_ca else []))
    return verify.verify_url(
        url, os_bundle=os_bundle, combined_bundle=combined, nss_databases=[db], runner=_run.run
    )


def test_verify_tells_which_path_accepts(tmp_path: Path) -> None:
    """The OS bundle refuses an unknown CA; the combined bundle and NSS accept."""
    ca = make_ca("verify root")
    with https_server(ca) as url:
        v = verdicts_for(url, tmp_path, ca)
    assert [(x.label, x.accepted, x.reason) for x in v] == [
        ("os bundle (openssl default)", False, "unknown CA"),
        ("os bundle (python/urllib3 strict)", False, "unknown CA"),
        ("combined bundle (openssl default)", True, ""),
        ("combined bundle (python/urllib3 strict)", True, ""),
        ("nss", True, ""),
    ]
    assert "REFUSES  os bundle" in verify.render(url, v)
    assert "ACCEPTS  nss" in verify.render(url, v)


@pytest.mark.parametrize(
    ("leaf_kw", "reason"),
    [
        ({"not_before": NOW - dt.timedelta(days=30), "not_after": NOW - dt.timedelta(days=1)},
         "expired"),
        # NSS forgives a notBefore up to a day ahead (its "pending slop"): go past it.
        ({"not_before": NOW + dt.timedelta(days=3), "not_after": NOW + dt.timedelta(days=30)},
         "not yet valid"),
        ({"dns": "wrong.example", "not_before": NOW - dt.timedelta(days=1),
          "not_after": NOW + dt.timedelta(days=30)}, "name mismatch"),
    ],
)  # fmt: skip
def test_verify_names_the_reason(tmp_path: Path, leaf_kw: dict[str, Any], reason: str) -> None:
    """Expired, not yet valid and misnamed leaves are refused by every path, each with why."""
    ca = make_ca("reasons root")
    with serve_leaf(make_leaf_at(ca, **leaf_kw)) as url:
        v = verdicts_for(url, tmp_path, ca)
    assert [x.reason for x in v[:2]] == ["unknown CA", "unknown CA"]
    # NSS has one error code for "not valid now" in both directions.
    nss_reason = "expired" if reason == "not yet valid" else reason
    assert [(x.label, x.accepted, x.reason) for x in v[2:]] == [
        ("combined bundle (openssl default)", False, reason),
        ("combined bundle (python/urllib3 strict)", False, reason),
        ("nss", False, nss_reason),
    ]


def test_verify_reports_missing_stores(tmp_path: Path) -> None:
    """A bundle or database that was never written is reported as missing, not as a crash."""
    with https_server(make_ca("missing")) as url:
        v = verify.verify_url(
            url,
            os_bundle=tmp_path / "none.pem",
            combined_bundle=tmp_path / "none2.pem",
            nss_databases=[NssDatabase(tmp_path / "nodb")],
            runner=_run.run,
        )
    assert [(x.accepted, x.reason) for x in v] == [(False, "missing")] * 5


@pytest.mark.parametrize("url", ["http://example.com/", "https:///x", "https://h:99999/"])
def test_verify_refuses_a_bad_url(url: str) -> None:
    """Only https URLs with a host and a valid port are accepted."""
    with pytest.raises(BadURLError):
        verify.parse_url(url)


def test_verify_cli_exit_codes(tmp_path: Path) -> None:
    """``verify`` exits 3 when any path refuses and prints JSON with --json; 2 on a bad URL."""
    ca = make_ca("cli verify")
    cfg = tmp_path / "config.toml"
    cfg.write_text(
        f'state_dir = "{tmp_path / "state"}"\nnss_databases = ["sql:{tmp_path / "nodb"}"]\n'
        "firefox_policies = []\nchromium_policies = []\n"
    )
    with https_server(ca) as url:
        done = cli("--config", str(cfg), "verify", url, "--json")
    assert done.returncode == 3, done.stderr
    assert [v["reason"] for v in json.loads(done.stdout)][2:] == ["missing"] * 3
    done = cli("--config", str(cfg), "verify", "http://nope/")
    assert done.returncode == 2
    assert "must be https" in done.stderr


def test_env_cli_before_and_after_an_install(tmp_path: Path) -> None:
    """``env`` prints nothing (and says why) before an install, and the lines after."""
    cfg = tmp_path / "config.toml"
    cfg.write_text(f'state_dir = "{tmp_path / "state"}"\n')
    done = cli("--config", str(cfg), "env")
    assert (done.returncode, done.stdout) == (0, "")
    assert "no CA installed yet" in done.stderr
    store = RuntimeEnvStore(tmp_path / "state-env", tmp_path / "none.pem")
    store.install([trusted(make_ca("env cli"))], Journal())
    done = cli("--config", str(cfg), "env", "--export")
    assert done.returncode == 0, done.stderr
    assert done.stdout == runtime_env.render_env(
        runtime_env.env_pairs(tmp_path / "state-env"), export=True
    )


# -- NSS databases in a user's home -----------------------------------------------


@pytest.fixture
def user_home() -> Iterator[tuple[Path, int]]:
    """A home directory under /tmp (reachable by its owner) owned by an unused uid."""
    uid = free_uid()
    home = Path(tempfile.mkdtemp(prefix="ti-nss-home-"))
    home.chmod(0o755)
    os.chown(home, uid, uid)
    yield home, uid
    shutil.rmtree(home, ignore_errors=True)


@pytest.mark.root
def test_users_database_is_created_and_written_as_the_user(user_home: tuple[Path, int]) -> None:
    """Every directory and file of a database made in a user's home belongs to that user."""
    assert os.geteuid() == 0, "this test runs as root in CI"
    home, uid = user_home
    db = home / ".local" / "share" / "pki" / "nssdb"
    store = NssStore(_run.run, NssDatabase(db, Account("ti-user", uid, uid, home)))
    ca = trusted(make_ca("user db"))
    store.install([ca], Journal())
    store.verify([ca])
    for p in [home / ".local", home / ".local" / "share", db.parent, db, *db.iterdir()]:
        st = p.stat()
        assert (st.st_uid, st.st_gid) == (uid, uid), p
        assert stat.S_IMODE(st.st_mode) & 0o077 == 0, p


@pytest.mark.root
def test_a_symlink_planted_in_a_users_database_is_not_followed_as_root(
    user_home: tuple[Path, int], tmp_path: Path
) -> None:
    """certutil runs as the user, so a cert9.db link into root's files cannot make root write."""
    assert os.geteuid() == 0, "this test runs as root in CI"
    home, uid = user_home
    db = home / ".pki" / "nssdb"
    db.mkdir(parents=True)
    for p in (db.parent, db):
        os.chown(p, uid, uid)
    target = Path(tempfile.mkdtemp(prefix="ti-root-only-"))
    try:
        (db / "cert9.db").symlink_to(target / "cert9.db")
        os.lchown(db / "cert9.db", uid, uid)
        store = NssStore(_run.run, NssDatabase(db, Account("ti-user", uid, uid, home)))
        with pytest.raises(HostError, match="certutil"):
            store.install([trusted(make_ca("trap"))], Journal())
        assert list(target.iterdir()) == []
    finally:
        shutil.rmtree(target)
