"""Attacks on the Chromium policy store: a crash mid-write, a browser user's writable file, and
files Chromium reads differently from the agent (each difference measured on Chromium 156)."""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

import pytest

from tests.support.builders import Journal, b64, manifest, policy, snapshot, trusted, unique
from tests.support.certs import make_ca
from tests.support.daemon import apply_killed_at_first_rename, write_config
from tests.support.moto import MotoServer
from trustinstaller.config import Config
from trustinstaller.errors import StoreError
from trustinstaller.installer import Installer
from trustinstaller.stores.chromium import FILENAME, ChromiumPolicyStore


def managed(base: Path) -> Path:
    """A managed-policy directory that every user may search, as Chromium needs."""
    d = base / "managed"
    d.mkdir()
    d.chmod(0o755)
    return d


@pytest.mark.slow
@pytest.mark.root
def test_a_sigkill_before_the_rename_leaves_nothing_chromium_reads_after_recovery(
    config: Config, moto: MotoServer, tmp_path: Path
) -> None:
    """Killed between the temp file's fsync and its rename, the next start removes the temp
    file too: Chromium reads dot files, so it would go on trusting the CA."""
    directory = managed(tmp_path)
    cfg = replace(config, chromium_policies=(directory,), nss_databases=())
    cfg_path = write_config(cfg, tmp_path / "config.toml")
    arn = moto.put_secret(unique("crash"), make_ca("crash").pem)
    (tmp_path / "m.json").write_bytes(manifest(session=[arn]))
    before = snapshot(directory)
    # The first rename in the directory is the policy file's.
    done = apply_killed_at_first_rename(directory, cfg_path, tmp_path / "m.json")
    assert done.returncode != 0, done.stdout + done.stderr
    assert any(n.startswith(f".{FILENAME}.") for n in os.listdir(directory)), "no crash point"
    Installer(cfg).prepare()  # the next start rolls the journal back
    assert snapshot(directory) == before


@pytest.mark.root
@pytest.mark.parametrize("name", ["00-user.json", "zzz-user.json"])
@pytest.mark.parametrize(("owner", "mode"), [(64150, 0o644), (0, 0o666)])
def test_a_file_the_browser_user_may_write_is_refused_whatever_it_holds_now(
    tmp_path: Path, name: str, owner: int, mode: int
) -> None:
    """A file the browser user may write is refused even while it sets nothing: one write later
    it could list the user's CA for every user, or distrust ours, under a locked status."""
    directory = managed(tmp_path)
    f = directory / name
    f.write_bytes(policy(HomepageLocation="https://example.com/"))
    os.chown(f, owner, owner)
    f.chmod(mode)
    with pytest.raises(StoreError, match=name.replace(".", r"\.")):
        ChromiumPolicyStore(directory).preflight()


def test_a_later_file_naming_the_key_with_an_x_escape_is_refused(tmp_path: Path) -> None:
    """Chromium reads "CACertificate\\x73" as CACertificates: that later file wins over ours."""
    directory = managed(tmp_path)
    (directory / "zzz.json").write_bytes(b'{"CACertificate\\x73": []}')
    with pytest.raises(StoreError, match=r"zzz\.json"):
        ChromiumPolicyStore(directory).preflight()


def test_an_earlier_file_too_large_to_read_is_refused(tmp_path: Path) -> None:
    """Chromium reads a 5 MiB file whole; unread here, its CAs would silently lose to ours."""
    directory = managed(tmp_path)
    big = {"CACertificates": [b64(make_ca("big"))], "X": "x" * (5 << 20)}
    (directory / "00-big.json").write_bytes(json.dumps(big).encode())
    with pytest.raises(StoreError, match=r"00-big\.json"):
        ChromiumPolicyStore(directory).preflight()


def test_a_fifo_is_refused_wherever_it_sorts(tmp_path: Path) -> None:
    """Chromium blocks at start on a FIFO in the directory: the install must not report done."""
    directory = managed(tmp_path)
    os.mkfifo(directory / "00-pipe.json", 0o644)
    with pytest.raises(StoreError, match=r"00-pipe\.json"):
        ChromiumPolicyStore(directory).preflight()


def test_an_earlier_file_not_every_user_may_read_is_refused(tmp_path: Path) -> None:
    """A 0600 file's CAs reach only root's Chromium: carried into our 0644 file they reach all."""
    directory = managed(tmp_path)
    secret = directory / "00-root-only.json"
    secret.write_bytes(policy(CACertificates=[b64(make_ca("root only"))]))
    secret.chmod(0o600)
    with pytest.raises(StoreError, match=r"00-root-only\.json"):
        ChromiumPolicyStore(directory).preflight()


@pytest.mark.parametrize(
    "extra",
    [b'"X": NaN', b'"X": Infinity', b'"X": "\\ud800"', b'"X": ' + b"[" * 250 + b"]" * 250],
)
def test_an_earlier_file_chromium_skips_lends_no_cas(tmp_path: Path, extra: bytes) -> None:
    """Chromium skips a file with NaN, a lone surrogate or deep nesting: none of its CAs are
    carried into ours, where they would become trusted."""
    directory = managed(tmp_path)
    skipped = b64(make_ca("skipped by chromium"))
    (directory / "00-odd.json").write_bytes(b'{"CACertificates": ["%s"], %s}' % (
        skipped.encode(), extra))  # fmt: skip
    ca = trusted(make_ca("ours"))
    ChromiumPolicyStore(directory).install([ca], Journal())
    assert skipped not in json.loads((directory / FILENAME).read_bytes())["CACertificates"]


def test_verify_fails_when_a_parent_is_not_searchable_by_every_user(public_tmp: Path) -> None:
    """Chromium, as the browser user, reads nothing under a 0700 parent: verify must say so."""
    top = public_tmp / "world"
    top.mkdir()
    top.chmod(0o755)
    directory = top / "policies" / "managed"
    directory.mkdir(parents=True)
    directory.chmod(0o755)
    ca = trusted(make_ca("hidden"))
    store = ChromiumPolicyStore(directory)
    store.install([ca], Journal())
    (top / "policies").chmod(0o700)
    with pytest.raises(StoreError, match="is not searchable by every user"):
        store.verify([ca])
