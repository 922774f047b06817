"""The Firefox policy store: the merge as a table, the store on a temporary root, the installer's
rollback after a later store fails or after a crash, the ``firefox_policies`` key, and the
Firefox path of ``trustinstaller verify`` with real handshakes.

The real Firefox, driven over WebDriver BiDi, is in tests/test_firefox_browser.py.
"""

from __future__ import annotations

import base64
import concurrent.futures
import datetime as dt
import http.client
import json
import os
import re
import signal
import stat
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from tests.support import osroot
from tests.support.builders import Journal, manifest, trusted, unique
from tests.support.certs import make_ca
from tests.support.daemon import Daemon, write_config
from tests.support.moto import MotoServer
from tests.support.shims import kill_group_of, wait_for, write_shim
from tests.support.tls import https_server
from trustinstaller import config as config_mod
from trustinstaller import verify
from trustinstaller.config import Config
from trustinstaller.documents import Mkdir, Write
from trustinstaller.errors import ConfigError, StoreError
from trustinstaller.installer import Installer
from trustinstaller.stores import firefox
from trustinstaller.stores.debian import DebianPaths, cert_filename
from trustinstaller.stores.firefox import FirefoxStore, PolicyError, merge
from trustinstaller.validate import TrustedCA

NOW = dt.datetime.now(dt.UTC)
# What an image builder or a managed platform may have put there before us.
EXISTING = (
    b'{\n    "policies": {\n        "DisableTelemetry": true,\n'
    b'        "Certificates": {"Install": ["/opt/corp/proxy.pem"], "ImportEnterpriseRoots": true}'
    b"\n    }\n}\n"
)


# -- the merge, as a table ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("original", "install", "expected"),
    [
        (None, ["/a.crt"], {"policies": {"Certificates": {"Install": ["/a.crt"]}}}),
        (b"{}", ["/a.crt", "/a.crt"], {"policies": {"Certificates": {"Install": ["/a.crt"]}}}),
        (
            b'{"policies": {"DisableTelemetry": true}}',
            ["/a.crt"],
            {"policies": {"DisableTelemetry": True, "Certificates": {"Install": ["/a.crt"]}}},
        ),
        (
            b'{"policies": {"Certificates": {"Install": ["/x.pem", "/a.crt"], "Y": 1}}}',
            ["/a.crt", "/b.crt"],
            {"policies": {"Certificates": {"Install": ["/x.pem", "/a.crt", "/b.crt"], "Y": 1}}},
        ),
        (b'{"other": [1], "policies": {}}', ["/a.crt"],
         {"other": [1], "policies": {"Certificates": {"Install": ["/a.crt"]}}}),
    ],
)  # fmt: skip
def test_merge_keeps_every_other_policy_and_entry(
    original: bytes | None, install: list[str], expected: dict[str, Any]
) -> None:
    """Our paths are appended once; every other key and every existing entry stays."""
    merged = merge(original, install)
    assert merged is not None
    assert json.loads(merged) == expected
    assert merged.endswith(b"\n")


@pytest.mark.parametrize(
    "original",
    [None, b'{"policies": {"Certificates": {"Install": ["/a.crt"]}}}'],
)
def test_merge_with_nothing_missing_writes_nothing(original: bytes | None) -> None:
    """When every path is already installed (or none is asked for) there is nothing to write."""
    assert merge(original, [] if original is None else ["/a.crt"]) is None


@pytest.mark.parametrize(
    ("original", "reason"),
    [
        (b"{not json", "not valid JSON"),
        (b"\xff\xfe", "not valid JSON"),
        (b"[1, 2]", "the document is a JSON array, not an object"),
        (b'{"policies": []}', '"policies" is a JSON array, not an object'),
        (b'{"policies": "x"}', '"policies" is a JSON string, not an object'),
        (b'{"policies": {"Certificates": true}}', '"policies.Certificates" is a JSON boolean'),
        (b'{"policies": {"Certificates": {"Install": "/a"}}}', 'Install" is a JSON string'),
    ],
)
def test_merge_refuses_what_it_cannot_merge_into(original: bytes, reason: str) -> None:
    """Invalid JSON, or a policies, Certificates or Install of the wrong type, is refused."""
    with pytest.raises(PolicyError, match=re.escape(reason)):
        merge(original, ["/a.crt"])


# -- the store on a temporary root ----------------------------------------------------------


def make_store(tmp_path: Path) -> FirefoxStore:
    """A store whose policies file and OS certificate directory are under ``tmp_path``."""
    os_paths = DebianPaths(local_certs_dir=tmp_path / "local")
    os_paths.our_dir.mkdir(parents=True)
    return FirefoxStore(tmp_path / "etc" / "firefox" / "policies" / "policies.json", os_paths)


def write_crt(store: FirefoxStore, ca: TrustedCA) -> str:
    """Put the certificate where the OS store would; return the path the policy names."""
    path = store.os_paths.our_dir / cert_filename(ca)
    path.write_text(ca.pem)
    return str(path)


def test_store_creates_directories_and_file_then_rollback_removes_them(tmp_path: Path) -> None:
    """Missing directories are recorded then made 0755, the file is 0644; rollback removes all."""
    (tmp_path / "etc").mkdir()
    store = make_store(tmp_path)
    cas = [trusted(make_ca("ff one")), trusted(make_ca("ff two"))]
    paths = [write_crt(store, ca) for ca in cas]
    journal = Journal()
    old = os.umask(0o077)  # a strict umask must not hide the policy from the browser user
    try:
        store.preflight()
        store.install(cas, journal)
    finally:
        os.umask(old)
    assert store.name == f"firefox:{tmp_path}/etc/firefox/policies/policies.json"
    assert journal.entries == [
        Mkdir(str(tmp_path / "etc" / "firefox")),
        Mkdir(str(tmp_path / "etc" / "firefox" / "policies")),
        Write(str(store.policies.parent), "policies.json", original=None, mode=None),
    ]
    for d in (store.policies.parent.parent, store.policies.parent):
        assert stat.S_IMODE(d.stat().st_mode) == 0o755
    assert stat.S_IMODE(store.policies.stat().st_mode) == 0o644
    assert json.loads(store.policies.read_bytes()) == {
        "policies": {"Certificates": {"Install": paths}}
    }
    store.verify(cas)
    store.rollback(journal.entries)
    assert list((tmp_path / "etc").iterdir()) == []
    store.rollback(journal.entries)  # idempotent


def test_existing_policies_survive_install_and_rollback_restores_the_bytes(tmp_path: Path) -> None:
    """Another policy and an existing Install entry stay; rollback puts back the exact bytes."""
    store = make_store(tmp_path)
    store.policies.parent.mkdir(parents=True)
    store.policies.write_bytes(EXISTING)
    store.policies.chmod(0o640)
    ca = trusted(make_ca("ff existing"))
    path = write_crt(store, ca)
    journal = Journal()
    store.preflight()
    store.install([ca], journal)
    assert journal.entries == [
        Write(str(store.policies.parent), "policies.json",
              original=base64.b64encode(EXISTING).decode(), mode=0o640),
    ]  # fmt: skip
    policies = json.loads(store.policies.read_bytes())["policies"]
    assert policies["DisableTelemetry"] is True
    assert policies["Certificates"] == {
        "Install": ["/opt/corp/proxy.pem", path],
        "ImportEnterpriseRoots": True,
    }
    store.verify([ca])
    # A second install of the same certificate changes nothing and records nothing.
    again = Journal()
    merged = store.policies.read_bytes()
    store.install([ca], again)
    assert (again.entries, store.policies.read_bytes()) == ([], merged)
    store.rollback(journal.entries)
    assert store.policies.read_bytes() == EXISTING
    assert stat.S_IMODE(store.policies.stat().st_mode) == 0o640


@pytest.mark.parametrize("bad", [b"{not json", b'{"policies": ["x"]}'])
def test_invalid_existing_file_is_a_store_error_naming_it(tmp_path: Path, bad: bytes) -> None:
    """Preflight and install both refuse it with the file's name, and nothing is written."""
    store = make_store(tmp_path)
    store.policies.parent.mkdir(parents=True)
    store.policies.write_bytes(bad)
    ca = trusted(make_ca("ff invalid"))
    with pytest.raises(StoreError, match=f"{store.policies}: .*nothing was written"):
        store.preflight()
    journal = Journal()
    with pytest.raises(StoreError, match=str(store.policies)):
        store.install([ca], journal)
    assert journal.entries == []
    assert store.policies.read_bytes() == bad
    assert sorted(p.name for p in store.policies.parent.iterdir()) == ["policies.json"]


def test_symlinks_are_never_followed(tmp_path: Path) -> None:
    """A symlink at policies.json or at its directory is refused; its target is never written."""
    store = make_store(tmp_path)
    ca = trusted(make_ca("ff symlink"))
    target = tmp_path / "elsewhere.json"
    target.write_bytes(b"{}")
    store.policies.parent.mkdir(parents=True)
    store.policies.symlink_to(target)
    with pytest.raises(StoreError, match="is a symlink"):
        store.install([ca], Journal())
    assert target.read_bytes() == b"{}"
    store.policies.unlink()
    store.policies.parent.rmdir()
    real = tmp_path / "real-policies"
    real.mkdir()
    store.policies.parent.symlink_to(real)
    with pytest.raises(StoreError, match="is a symlink or not a directory"):
        store.install([ca], Journal())
    assert list(real.iterdir()) == []


def test_verify_needs_the_path_in_the_policy_and_the_file_behind_it(tmp_path: Path) -> None:
    """Verify fails when the policy lacks a path, or when the .crt file it names is missing."""
    store = make_store(tmp_path)
    ca = trusted(make_ca("ff verify"))
    store.install([ca], Journal())
    with pytest.raises(StoreError, match="lacks the file the policy names"):
        store.verify([ca])
    write_crt(store, ca)
    store.verify([ca])
    store.policies.write_bytes(b'{"policies": {}}')
    with pytest.raises(StoreError, match="does not install"):
        store.verify([ca])


# -- through the installer: order, status, and a later store failing ------------------------


@pytest.fixture
def ff_config(config: Config, tmp_path: Path) -> Config:
    """The test configuration with one Firefox policies file under the temporary root."""
    return replace(config, firefox_policies=(tmp_path / "firefox" / "policies" / "policies.json",))


def test_installer_runs_the_firefox_store_after_the_os_store(
    ff_config: Config, moto: MotoServer
) -> None:
    """The status names the store; the policy names the OS store's .crt file, which exists."""
    ca = make_ca("ff installer")
    installer = Installer(ff_config)
    names = [s.name for s in installer.registry.all()]
    policies = ff_config.firefox_policies[0]
    assert names.index("os") < names.index(f"firefox:{policies}") < names.index("env")
    status = installer.submit(manifest([moto.put_secret(unique("ff"), ca.pem)]))
    assert status.state == "locked"
    assert f"firefox:{policies}" in status.certificates[0].stores
    (path,) = json.loads(policies.read_bytes())["policies"]["Certificates"]["Install"]
    assert Path(path).read_text() == ca.pem
    assert Path(path).parent == ff_config.os_store.our_dir
    playwright = json.loads((ff_config.runtime_env_dir / "firefox-policies.json").read_bytes())
    assert playwright == {"policies": {"Certificates": {"Install": [path]}}}


def test_invalid_policies_refuse_the_install_before_anything_is_written(
    ff_config: Config, moto: MotoServer
) -> None:
    """A policies.json that is not JSON stops the install at preflight: no store changes."""
    policies = ff_config.firefox_policies[0]
    policies.parent.mkdir(parents=True)
    policies.write_bytes(b"{oops")
    before = osroot.snapshot_store(ff_config.os_store)
    installer = Installer(ff_config)
    with pytest.raises(StoreError, match=f"store firefox:{policies}: {policies}: not valid JSON"):
        installer.submit(manifest([moto.put_secret(unique("ff"), make_ca("ff bad").pem)]))
    assert osroot.snapshot_store(ff_config.os_store) == before
    assert policies.read_bytes() == b"{oops"
    assert installer.status().errors[0].object == f"firefox:{policies}"


def test_failure_in_a_later_store_rolls_the_firefox_store_back(
    ff_config: Config, moto: MotoServer
) -> None:
    """The runtime environment fails after the policy was merged: the policy's bytes come back."""
    policies = ff_config.firefox_policies[0]
    policies.parent.mkdir(parents=True)
    policies.write_bytes(EXISTING)
    # A non-empty directory where the env file goes: the rename over it fails, for real.
    (ff_config.runtime_env_dir / "env" / "x").mkdir(parents=True)
    before = osroot.snapshot_store(ff_config.os_store)
    installer = Installer(ff_config)
    with pytest.raises(StoreError, match="store env"):
        installer.submit(manifest([moto.put_secret(unique("ff"), make_ca("ff later").pem)]))
    assert policies.read_bytes() == EXISTING
    assert osroot.snapshot_store(ff_config.os_store) == before
    assert installer.status().state == "failed"


def test_failure_rolls_back_the_directories_made_for_the_policy(
    ff_config: Config, moto: MotoServer
) -> None:
    """With no policies.json before, the rollback removes the file and the directories made."""
    (ff_config.runtime_env_dir / "env" / "x").mkdir(parents=True)
    installer = Installer(ff_config)
    with pytest.raises(StoreError, match="store env"):
        installer.submit(manifest([moto.put_secret(unique("ff"), make_ca("ff dirs").pem)]))
    assert not ff_config.firefox_policies[0].parent.parent.exists()


BLOCK_SECOND_ADD = """if [ "$1" = "-A" ]; then
    A=$(( $(cat "$STATE/adds" 2>/dev/null || echo 0) + 1 )); echo "$A" > "$STATE/adds"
    if [ "$A" = 2 ]; then echo $$ > "$STATE/blocked.pid"; sleep 600; fi
fi"""


def test_sigkill_after_the_policy_is_merged_is_rolled_back_at_next_start(
    ff_config: Config, tmp_path: Path, moto: MotoServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Killed while NSS hangs, after the serial stores wrote the policy: the next start restores it.

    The NSS database runs in a thread of its own, beside the OS, Firefox and env stores; the
    second certutil add hangs, so the others finish and the kill comes after the policy merge.
    """
    shims = tmp_path / "shims"
    write_shim(shims, "certutil", BLOCK_SECOND_ADD)
    monkeypatch.setenv("PATH", f"{shims}:{os.environ['PATH']}")
    policies = ff_config.firefox_policies[0]
    policies.parent.mkdir(parents=True)
    policies.write_bytes(EXISTING)
    arns = [moto.put_secret(unique("ff"), make_ca(f"ff crash {i}").pem) for i in range(3)]
    before = osroot.snapshot_store(ff_config.os_store)
    sock = tmp_path / "d" / "ti.sock"
    sock.parent.mkdir()
    cfg_path = write_config(replace(ff_config, socket=sock), tmp_path / "config.toml")
    d = Daemon(cfg_path, sock, env={"PATH": os.environ["PATH"]})
    d.start()
    try:
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            fut = pool.submit(d.put, manifest(arns))
            wait_for(shims / "certutil.state" / "blocked.pid")
            deadline = time.monotonic() + 120
            while policies.read_bytes() == EXISTING:
                assert time.monotonic() < deadline, "the policy was never merged"
                time.sleep(0.02)
            assert d.proc is not None
            d.proc.send_signal(signal.SIGKILL)
            d.proc.wait()
            kill_group_of(shims / "certutil.state" / "blocked.pid")
            with pytest.raises(http.client.RemoteDisconnected):  # the daemon died mid-answer
                fut.result(timeout=30)
        journal = json.loads((ff_config.state_dir / "journal.json").read_text())
        assert any(e["store"] == f"firefox:{policies}" for e in journal["entries"])
        assert policies.read_bytes() != EXISTING
        (shims / "certutil").unlink()
        d.start()
        status = d.status()
        assert status["state"] == "failed"
        assert status["errors"][0]["kind"] == "interrupted"
        assert policies.read_bytes() == EXISTING
        assert osroot.snapshot_store(ff_config.os_store) == before
    finally:
        d.stop()


# -- configuration --------------------------------------------------------------------------


def test_default_follows_firefox_on_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The default is /etc/firefox/policies/policies.json with firefox or firefox-esr, else none."""
    monkeypatch.setenv("PATH", str(tmp_path))
    assert config_mod.from_mapping({}).firefox_policies == ()
    for name in ("firefox-esr", "firefox"):
        exe = tmp_path / name
        exe.write_text("#!/bin/sh\n")
        exe.chmod(0o755)
        assert config_mod.from_mapping({}).firefox_policies == (firefox.POLICIES,)
        assert str(firefox.POLICIES) == "/etc/firefox/policies/policies.json"
        exe.unlink()


def test_the_default_configuration_probes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``Config()`` is plain values: Firefox on PATH changes only what from_mapping resolves."""
    monkeypatch.setenv("PATH", str(tmp_path))
    exe = tmp_path / "firefox"
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    assert config_mod.Config().firefox_policies == ()
    assert config_mod.from_mapping({}).firefox_policies == (firefox.POLICIES,)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ([], ()),
        (["/a/policies.json", "/a/policies.json", "/b/p.json"],
         (Path("/a/policies.json"), Path("/b/p.json"))),
    ],
)  # fmt: skip
def test_firefox_policies_key(value: list[str], expected: tuple[Path, ...]) -> None:
    """``firefox_policies`` lists absolute paths, duplicates once; ``[]`` turns the store off."""
    assert config_mod.from_mapping({"firefox_policies": value}).firefox_policies == expected


@pytest.mark.parametrize(
    "value", ["/etc/firefox/policies/policies.json", ["rel.json"], [1], ["/"], ["/a/../b.json"]]
)
def test_firefox_policies_key_refuses_bad_values(value: object) -> None:
    """Not a list, a relative path, a non-string, the root or '..' is a configuration error."""
    with pytest.raises(ConfigError, match="firefox_policies"):
        config_mod.from_mapping({"firefox_policies": value})


# -- trustinstaller verify: the Firefox path ------------------------------------------------


def test_verify_firefox_accepts_only_with_the_policys_ca(tmp_path: Path) -> None:
    """ACCEPTS when the policy installs the server's CA; REFUSES (unknown CA, missing) otherwise."""
    ca, other = make_ca("ff verify server"), make_ca("ff verify other")
    policies = tmp_path / "policies.json"
    (tmp_path / "ca.crt").write_text(ca.pem)
    (tmp_path / "other.der").write_bytes(other.der)
    with https_server(ca) as url:
        host, port = verify.parse_url(url)
        missing = verify.check_firefox(host, port, policies, timeout=10)
        assert (missing.accepted, missing.reason) == (False, verify.MISSING)
        os.mkfifo(tmp_path / "fifo.crt")  # must neither hang the check nor count
        policies.write_bytes(firefox.policies_document(
            [str(tmp_path / "other.der"), str(tmp_path / "gone.crt"), "rel.crt",
             str(tmp_path / "fifo.crt")]))  # fmt: skip
        refused = verify.check_firefox(host, port, policies, timeout=10)
        assert (refused.accepted, refused.reason) == (False, verify.UNKNOWN_CA)
        assert "no CA that the policy installs" in refused.detail
        assert f"{tmp_path / 'gone.crt'}: No such file" in refused.detail
        assert "rel.crt: not an absolute path" in refused.detail
        assert f"{tmp_path / 'fifo.crt'}: not a regular file" in refused.detail
        policies.write_bytes(firefox.policies_document(
            [str(tmp_path / "other.der"), str(tmp_path / "ca.crt")]))  # fmt: skip
        accepted = verify.check_firefox(host, port, policies, timeout=10)
        assert accepted == verify.Verdict("firefox", str(policies), True)
        policies.write_text('{"policies": 3}')
        bad = verify.check_firefox(host, port, policies, timeout=10)
        assert (bad.accepted, bad.reason) == (False, "bad policy")
        assert '"policies" is a JSON number' in bad.detail
