"""A rollback acts only on entries its store records: a journal naming anything else, however it
got into the state directory, makes root write, remove or set nothing.

The table asks each real store, built from a configuration, which entries it owns; the last
test plants such a journal and starts the installer on it."""

from __future__ import annotations

import base64
import json
import os
import stat
from dataclasses import replace
from pathlib import Path

import pytest

from tests.support.daemon import write_config
from trustinstaller import documents
from trustinstaller.config import Config
from trustinstaller.documents import Entry, Mkdir, Write
from trustinstaller.errors import StateError, TrustInstallerError
from trustinstaller.installer import Installer
from trustinstaller.stores.debian import Update
from trustinstaller.stores.nss import AddCert, CreateDb
from trustinstaller.stores.registry import Registry
from trustinstaller.stores.systemd_env import ManagerEnv

FP = "ab" * 32


@pytest.fixture
def cfg(config: Config, tmp_path: Path) -> Config:
    return replace(
        config,
        chromium_policies=(tmp_path / "chromium" / "managed",),
        firefox_policies=(tmp_path / "firefox" / "policies.json",),
    )


def cases(cfg: Config) -> list[tuple[str, Entry, bool]]:
    our = cfg.os_store.our_dir
    chromium = cfg.chromium_policies[0]
    firefox = cfg.firefox_policies[0]
    env = cfg.runtime_env_dir
    db = cfg.nss_databases[0]
    spec = db.spec
    return [
        ("os", Write(str(our), f"{FP}.crt"), True),
        ("os", Mkdir(str(our)), True),
        ("os", Update(), True),
        ("os", Write(str(our), "evil.txt"), False),
        ("os", Write("/etc", f"{FP}.crt"), False),
        ("os", Mkdir("/etc/cron.d"), False),
        (f"chromium:{chromium}", Write(str(chromium), "zz-trustinstaller.json", "e30K", 0o644),
         True),
        (f"chromium:{chromium}", Mkdir(str(chromium.parent)), True),
        (f"chromium:{chromium}", Write(str(chromium), "other.json", "e30K"), False),
        (f"chromium:{chromium}", Write("/etc/apt/apt.conf.d", "zz-trustinstaller.json"), False),
        (f"chromium:{chromium}", Mkdir(str(chromium / "below")), False),
        (f"firefox:{firefox}", Write(str(firefox.parent), "policies.json", "e30K"), True),
        (f"firefox:{firefox}", Write(str(firefox.parent), "evil", "e30K"), False),
        ("env", Write(str(env), "env"), True),
        ("env", Mkdir(str(env)), True),
        ("env", Write(str(env), "env", original="e30K"), False),
        ("env", Write(str(env), "profile"), False),
        ("env", Mkdir(str(env.parent)), False),
        (f"nss:{db.directory}", AddCert(spec, "trustinstaller-ab"), True),
        (f"nss:{db.directory}", CreateDb(spec), True),
        (f"nss:{db.directory}", Mkdir(str(db.directory.parent)), True),
        (f"nss:{db.directory}", AddCert("sql:/root/.pki/nssdb", "trustinstaller-ab"), False),
        (f"nss:{db.directory}", Write(str(db.directory), "cert9.db"), False),
    ]  # fmt: skip


def test_each_store_owns_only_what_it_records(cfg: Config) -> None:
    registry = Registry(cfg)
    wrong = [(name, entry, want) for name, entry, want in cases(cfg)
             if registry.named(name).owns(entry) is not want]  # fmt: skip
    assert wrong == []


def test_the_service_managers_store_owns_only_its_own_variables(cfg: Config) -> None:
    store = Registry(replace(cfg, systemd_environment=True)).named("systemd")
    pairs = dict(store.pairs)  # type: ignore[attr-defined]
    key = next(iter(pairs))
    assert store.owns(ManagerEnv(pairs, {key: "/old"}))
    assert not store.owns(ManagerEnv(pairs, {"PATH": "/tmp/evil:/usr/bin"}))
    assert not store.owns(ManagerEnv({**pairs, "LD_PRELOAD": "/tmp/evil.so"}, {}))


@pytest.mark.parametrize("name", ["chromium:/etc", "firefox:/etc/passwd", "nss:sql:/srv/db"])
def test_a_store_the_configuration_lacks_is_not_made_from_its_name(cfg: Config, name: str) -> None:
    with pytest.raises(StateError, match="this configuration does not have"):
        Registry(cfg).named(name)


def test_a_planted_journal_makes_root_write_and_remove_nothing(cfg: Config, tmp_path: Path) -> None:
    """However a journal naming other paths got into the state directory, the start rolls back
    nothing it names: the victim stays, no set-id file appears, and the journal stays."""
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep.txt").write_text("root's\n")
    chromium = cfg.chromium_policies[0]
    evil = base64.b64encode(b"#!/bin/sh\nid\n").decode()
    entries = [
        {"store": "chromium:/etc", "action": "write", "dir": str(victim), "name": "x",
         "original": evil, "mode": 0o4755},
        {"store": f"chromium:{chromium}", "action": "write", "dir": str(victim),
         "name": "zz-trustinstaller.json", "original": evil, "mode": 0o4755},
        {"store": "os", "action": "write", "dir": str(victim), "name": "keep.txt",
         "original": None, "mode": None},
    ]  # fmt: skip
    planted = {"entries": entries, "id": "planted", "phase": "applying",
               "started_at": "2026-12-06T00:00:00Z", "summary": {"certificates": []}}  # fmt: skip
    documents.journal_from_json(planted)  # one the recovery would act on
    cfg.state_dir.mkdir(mode=0o700)
    (cfg.state_dir / "journal.json").write_text(json.dumps(planted))
    write_config(cfg, tmp_path / "c.toml")
    with pytest.raises(TrustInstallerError, match="undo that install by hand"):
        Installer(cfg).prepare()
    assert (victim / "keep.txt").read_text() == "root's\n"
    assert sorted(p.name for p in victim.iterdir()) == ["keep.txt"]
    assert json.loads((cfg.state_dir / "journal.json").read_text()) == planted
    assert not any(stat.S_IMODE(os.lstat(p).st_mode) & 0o6000 for p in victim.iterdir())
