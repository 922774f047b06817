"""The service manager's environment: the pure parts with tables, and the no-op without systemd.

systemd is not PID 1 on the machines that run these tests, so what PID 1 does with the variables
is shown by tests/system/test_sysenv.py, with the real systemctl against a booted root.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import structlog

from trustinstaller import config, documents
from trustinstaller.config import Config
from trustinstaller.documents import Journal, Write
from trustinstaller.errors import ConfigError, StoreError
from trustinstaller.stores import runtime_env, systemd_env
from trustinstaller.stores.registry import Registry
from trustinstaller.stores.systemd_env import ManagerEnv, SystemdEnvStore

OURS = {"SSL_CERT_FILE": "/run/e/ca-bundle.pem", "NODE_EXTRA_CA_CERTS": "/run/e/custom-cas.pem"}
NO_SYSTEMD = systemd_env.manager_running() is not None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", {}),
        ("LANG=C.UTF-8\nPATH=/usr/bin:/bin\n", {"LANG": "C.UTF-8", "PATH": "/usr/bin:/bin"}),
        ("A=x=y\n", {"A": "x=y"}),
        ("A=\n", {"A": ""}),
        # Quoted by systemctl: not guessed at.
        ("A=$'a\\nb'\nB=plain\n", {"A": None, "B": "plain"}),
        ("no equals sign\n=novalue\n", {}),
    ],
)
def test_show_environment_is_parsed_without_guessing(
    text: str, expected: dict[str, str | None]
) -> None:
    """Plain lines become values; a $'...' value is unknown, and stray lines are ignored."""
    assert systemd_env.parse_environment(text) == expected


@pytest.mark.parametrize(
    ("original", "current", "unset", "restore"),
    [
        # Ours were new: unset each, only while it still holds our value.
        ({}, OURS, ["SSL_CERT_FILE=/run/e/ca-bundle.pem",
                    "NODE_EXTRA_CA_CERTS=/run/e/custom-cas.pem"], []),
        # One replaced a value: that one is put back, the other unset.
        ({"SSL_CERT_FILE": "/etc/ssl/certs/ca-certificates.crt"}, OURS,
         ["NODE_EXTRA_CA_CERTS=/run/e/custom-cas.pem"],
         ["SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt"]),
        # Someone set it again after us: theirs stays.
        ({"SSL_CERT_FILE": "/old"}, {**OURS, "SSL_CERT_FILE": "/theirs"},
         ["NODE_EXTRA_CA_CERTS=/run/e/custom-cas.pem"], []),
        # It held our value already (set by another install): it stays.
        ({"SSL_CERT_FILE": "/run/e/ca-bundle.pem"}, OURS,
         ["NODE_EXTRA_CA_CERTS=/run/e/custom-cas.pem"], ["SSL_CERT_FILE=/run/e/ca-bundle.pem"]),
        # A crash before set-environment: nothing of ours is there, nothing is put back.
        ({"SSL_CERT_FILE": "/old"}, {"SSL_CERT_FILE": "/old"},
         ["NODE_EXTRA_CA_CERTS=/run/e/custom-cas.pem"], []),
    ],
)  # fmt: skip
def test_undo_plan_touches_only_what_still_holds_our_values(
    original: dict[str, str], current: dict[str, str], unset: list[str], restore: list[str]
) -> None:
    """A rollback unsets ours by value and restores an original only over our own value."""
    assert systemd_env.undo_plan(ManagerEnv(OURS, original), current) == (unset, restore)


@pytest.mark.parametrize(
    "value", ["/run/a b", "/run/a'b", "/run/a\nB=c", "/run/$HOME", "/run/a\\b", ""]
)
def test_a_value_that_is_not_a_plain_path_is_refused(value: str) -> None:
    """No value with a space, quote, newline, $ or backslash reaches systemctl."""
    with pytest.raises(StoreError, match=r"store systemd: .*runtime_dir"):
        systemd_env.assignments({"SSL_CERT_FILE": value})


def test_assignments_are_the_env_files_variables() -> None:
    """The store sets exactly what the env file holds, for the same directory."""
    pairs = runtime_env.env_pairs(Path("/run/trustinstaller-env"))
    args = systemd_env.assignments(dict(pairs))
    assert args == [f"{k}={v}" for k, v in pairs]
    assert "SSL_CERT_FILE=/run/trustinstaller-env/ca-bundle.pem" in args


def test_manager_is_told_by_the_marker_directory(tmp_path: Path) -> None:
    """Only a directory at the marker counts: missing, a file or a symlink is no systemd."""
    marker = tmp_path / "system"
    assert "no " in (systemd_env.manager_running(marker) or "")
    marker.write_text("")
    assert "not a directory" in (systemd_env.manager_running(marker) or "")
    marker.unlink()
    (tmp_path / "real").mkdir()
    marker.symlink_to(tmp_path / "real")
    assert "not a directory" in (systemd_env.manager_running(marker) or "")
    marker.unlink()
    marker.mkdir()
    assert systemd_env.manager_running(marker) is None


@pytest.mark.skipif(not NO_SYSTEMD, reason="this host runs systemd as root: the no-op needs none")
def test_without_systemd_the_store_is_left_out_and_logged(tmp_path: Path) -> None:
    """No running systemd (a container): no store, so the status names none, and the log says."""
    cfg = Config(state_dir=tmp_path / "state", firefox_policies=(), chromium_policies=())
    with structlog.testing.capture_logs() as logs:
        names = [s.name for s in Registry(cfg).all()]
    assert systemd_env.PREFIX not in names
    assert names[-1] == runtime_env.PREFIX
    skipped = [e for e in logs if e["event"] == "systemd_environment_skipped"]
    assert len(skipped) == 1
    assert "systemd" in skipped[0]["reason"] or "root" in skipped[0]["reason"]


def test_turned_off_there_is_no_store_and_nothing_to_log(tmp_path: Path) -> None:
    """systemd_environment = false: the store is not asked about at all."""
    cfg = Config(state_dir=tmp_path / "state", firefox_policies=(), chromium_policies=(),
                 systemd_environment=False)  # fmt: skip
    with structlog.testing.capture_logs() as logs:
        names = [s.name for s in Registry(cfg).all()]
    assert systemd_env.PREFIX not in names
    assert not [e for e in logs if e["event"] == "systemd_environment_skipped"]


@pytest.mark.skipif(not NO_SYSTEMD, reason="this host runs systemd as root: the no-op needs none")
def test_rollback_without_systemd_runs_nothing(tmp_path: Path) -> None:
    """Recovery on a host without systemd: the real systemctl is not run (it would fail)."""
    store = Registry(Config(state_dir=tmp_path / "state")).named(systemd_env.PREFIX)
    assert isinstance(store, SystemdEnvStore)
    with structlog.testing.capture_logs() as logs:
        store.rollback([Write("/x", "y"), ManagerEnv(OURS, {})])
    assert [e["event"] for e in logs] == ["systemd_environment_skipped"]


def test_the_stores_values_come_from_the_configuration_only(tmp_path: Path) -> None:
    """The variables name runtime_dir's files and the OS store's hashed directory, nothing else."""
    cfg = Config(state_dir=tmp_path / "state", runtime_dir=Path("/run/elsewhere"))
    store = Registry(cfg).systemd_store()
    assert store.pairs["SSL_CERT_FILE"] == "/run/elsewhere/ca-bundle.pem"
    assert store.pairs["NODE_EXTRA_CA_CERTS"] == "/run/elsewhere/custom-cas.pem"
    assert store.pairs["SSL_CERT_DIR"] == str(cfg.os_store.bundle.parent)
    assert set(store.pairs) == {k for k, _ in runtime_env.env_pairs(Path("/run/elsewhere"))}


def test_the_journal_entry_round_trips() -> None:
    """A setenv entry comes back from journal.json as it was written."""
    j = documents.with_entry(Journal("id", "t"), systemd_env.PREFIX, ManagerEnv(OURS, {"A": "/b"}))
    back = documents.journal_from_json(documents.journal_to_json(j))
    assert back == j
    assert back.by_store() == {systemd_env.PREFIX: [ManagerEnv(OURS, {"A": "/b"})]}


@pytest.mark.parametrize(
    "fields",
    [{"assigned": ["A"], "original": {}}, {"assigned": {"A": 1}, "original": {}},
     {"assigned": {}, "original": {"A": None}}, {"assigned": {}}],
)  # fmt: skip
def test_a_malformed_journal_entry_is_refused(fields: dict[str, object]) -> None:
    """A setenv entry whose maps are not names to strings is not a journal we wrote."""
    doc = documents.journal_to_json(Journal("id", "t"))
    doc["entries"] = [{"store": systemd_env.PREFIX, "action": "setenv", **fields}]
    with pytest.raises(ValueError, match="setenv"):
        documents.journal_from_json(doc)


@pytest.mark.parametrize(("value", "ok"), [(True, True), (False, True), ("no", False), (0, False)])
def test_systemd_environment_is_a_boolean_on_by_default(value: object, ok: bool) -> None:
    """The key takes true or false only; without it the store is on."""
    assert Config().systemd_environment is True
    if ok:
        assert config.from_mapping({"systemd_environment": value}).systemd_environment is value
    else:
        with pytest.raises(ConfigError, match="systemd_environment: must be true or false"):
            config.from_mapping({"systemd_environment": value})
