"""Faults injected for real: failing, hanging and killed store commands, and concurrent clients.

After every fault the store must be either fully installed and locked, or byte for byte as it
was: the bundle, the hash links, the local directory, and the NSS listing.
"""

from __future__ import annotations

import concurrent.futures
import http.client
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from tests.support import osroot
from tests.support.builders import manifest, unique
from tests.support.certs import make_ca
from tests.support.daemon import Daemon, apply_killed_at_first_rename, cli, write_config
from tests.support.moto import MotoServer
from tests.support.shims import BLOCK_ON_CALL, kill_group_of, wait_for, write_shim
from trustinstaller.config import Config
from trustinstaller.documents import State, Status, status_to_json
from trustinstaller.errors import HostError, StoreError
from trustinstaller.installer import Installer

# certutil shims: calls go -L (list), then one -A per certificate.
FAIL_SECOND_ADD = """if [ "$1" = "-A" ] && [ -e "$STATE/added-one" ]; then exit 1; fi
[ "$1" = "-A" ] && touch "$STATE/added-one"
"""
BLOCK_SECOND_ADD = """if [ "$1" = "-A" ]; then
    A=$(( $(cat "$STATE/adds" 2>/dev/null || echo 0) + 1 )); echo "$A" > "$STATE/adds"
    if [ "$A" = 2 ]; then echo $$ > "$STATE/blocked.pid"; sleep 600; fi
fi"""


def nss_dir(config: Config) -> Path:
    return config.nss_databases[0].directory


def store_state(config: Config) -> dict[str, Any]:
    """Everything an install may change, byte for byte."""
    return {
        "os": osroot.snapshot_store(config.os_store),
        "nss": osroot.nss_listing(nss_dir(config)),
        # Which database files and directories exist. Their bytes are not compared: certutil -D
        # restores the listing, not the sqlite pages, and the listing is what NSS clients see.
        "nss_files": sorted(osroot.snapshot_tree(nss_dir(config).parent)),
    }


@pytest.fixture
def three_cas(moto: MotoServer) -> list[str]:
    """Three valid CAs in Secrets Manager."""
    return [moto.put_secret(unique(), make_ca(f"fault {i}").pem) for i in range(3)]


def assert_rolled_back(config: Config, before: dict[str, Any], installer: Installer) -> None:
    """The store is as it was, the state is failed, and nothing is locked."""
    assert store_state(config) == before
    status = status_to_json(installer.status())
    assert status["state"] == "failed"
    assert status["errors"]
    assert not (config.state_dir / "journal.json").exists()


def test_failing_update_ca_certificates_rolls_everything_back(
    config: Config, shims: Path, three_cas: list[str]
) -> None:
    """update-ca-certificates exiting 1 undoes the files and the NSS adds."""
    write_shim(shims, "update-ca-certificates", 'case "$1" in --fresh) ;; *) exit 1;; esac')
    before = store_state(config)
    installer = Installer(config)
    with pytest.raises(HostError, match="update-ca-certificates"):
        installer.submit(manifest(three_cas))
    assert_rolled_back(config, before, installer)
    (shims / "update-ca-certificates").unlink()
    assert installer.submit(manifest(three_cas)).state == "locked"


def test_failing_hook_is_a_failure_even_though_the_script_exits_0(
    config: Config, three_cas: list[str]
) -> None:
    """A hook in update.d that fails prints 'E: ...'; that is detected and rolled back."""
    flag = config.os_store.hooks_dir.parent / "failed-once"
    hook = config.os_store.hooks_dir / "50broken"
    hook.write_text(f"#!/bin/sh\ncat >/dev/null\n[ -e {flag} ] && exit 0\ntouch {flag}\nexit 3\n")
    hook.chmod(0o755)
    before = store_state(config)
    installer = Installer(config)
    with pytest.raises(HostError, match="a hook failed"):
        installer.submit(manifest(three_cas))
    assert_rolled_back(config, before, installer)


def test_hooks_are_told_about_removals_on_rollback(config: Config, three_cas: list[str]) -> None:
    """On rollback each hook gets '-<pem>' lines for the removed certificates, as on removal."""
    seen = config.os_store.hooks_dir.parent / "hook-input"
    hook = config.os_store.hooks_dir / "10record"
    hook.write_text(f"#!/bin/sh\ncat >> {seen}\n")
    hook.chmod(0o755)
    fail = config.os_store.hooks_dir / "90fail-once"
    flag = config.os_store.hooks_dir.parent / "failed-once"
    fail.write_text(f"#!/bin/sh\ncat >/dev/null\n[ -e {flag} ] && exit 0\ntouch {flag}\nexit 1\n")
    fail.chmod(0o755)
    with pytest.raises(HostError):
        Installer(config).submit(manifest(three_cas))
    lines = seen.read_text().split()
    removed = sorted(line[1:] for line in lines if line.startswith("-"))
    assert len(removed) == 3
    assert all(r.startswith(str(config.os_store.etc_certs_dir)) for r in removed)
    assert not any(Path(r).exists() for r in removed)


def test_hanging_update_times_out_and_rolls_back(
    config: Config, shims: Path, three_cas: list[str]
) -> None:
    """A hung update-ca-certificates is killed at the timeout and everything is undone."""
    write_shim(shims, "update-ca-certificates", 'case "$1" in --fresh) ;; *) sleep 60;; esac')
    cfg = replace(config, update_timeout=1.0)
    before = store_state(cfg)
    installer = Installer(cfg)
    with pytest.raises(HostError, match="timed out"):
        installer.submit(manifest(three_cas))
    assert_rolled_back(cfg, before, installer)


def test_certutil_failing_on_second_add_undoes_the_first(
    config: Config, shims: Path, three_cas: list[str]
) -> None:
    """The second certutil -A fails: the first nickname, the new database and the OS files go."""
    write_shim(shims, "certutil", FAIL_SECOND_ADD)
    before = store_state(config)
    installer = Installer(config)
    with pytest.raises(HostError, match="certutil"):
        installer.submit(manifest(three_cas))
    assert_rolled_back(config, before, installer)
    assert not nss_dir(config).exists()


def test_a_password_protected_database_fails_the_batch_fast_and_keeps_its_entries(
    config: Config, three_cas: list[str], tmp_path: Path
) -> None:
    """Root's database has a password: the one certutil -B, given an empty password file, fails
    at its first add instead of prompting, and the install is undone with nothing added."""
    db = nss_dir(config)
    db.mkdir(parents=True)
    password = tmp_path / "password"
    password.write_text("not empty\n")
    subprocess.run(["certutil", "-N", "-d", f"sql:{db}", "-f", str(password)], check=True,
                   stdin=subprocess.DEVNULL)  # fmt: skip
    before = store_state(config)
    installer = Installer(config)
    with pytest.raises(HostError, match=r"certutil -B"):
        installer.submit(manifest(three_cas))
    assert_rolled_back(config, before, installer)


def test_existing_nss_database_keeps_its_own_entries_on_rollback(
    config: Config, shims: Path, three_cas: list[str], tmp_path: Path
) -> None:
    """A database that existed keeps its other certificates; only our nicknames are removed."""
    db = nss_dir(config)
    db.mkdir(parents=True)
    subprocess.run(["certutil", "-N", "-d", f"sql:{db}", "--empty-password"], check=True,
                   stdin=subprocess.DEVNULL)  # fmt: skip
    other = tmp_path / "other.pem"
    other.write_text(make_ca("already there").pem)
    subprocess.run(["certutil", "-A", "-d", f"sql:{db}", "-n", "corp existing", "-t", "C,,",
                    "-a", "-i", str(other)], check=True, stdin=subprocess.DEVNULL)  # fmt: skip
    write_shim(shims, "certutil", FAIL_SECOND_ADD)
    before = store_state(config)
    installer = Installer(config)
    with pytest.raises(HostError):
        installer.submit(manifest(three_cas))
    assert_rolled_back(config, before, installer)
    assert "corp existing" in osroot.nss_listing(db)


# -- crash recovery: SIGKILL at chosen points, then a fresh start ------------------------------


@pytest.fixture
def daemon_files(config: Config, tmp_path: Path) -> tuple[Path, Path]:
    """The config file and socket path for a daemon under this test's temporary root."""
    sock = tmp_path / "d" / "ti.sock"
    sock.parent.mkdir()
    return write_config(replace(config, socket=sock), tmp_path / "config.toml"), sock


def _kill_during(
    config: Config,
    daemon_files: tuple[Path, Path],
    shims: Path,
    arns: list[str],
    blocked_pid: Path,
) -> Daemon:
    """Start a daemon, PUT in the background, wait for the block, SIGKILL daemon and children."""
    cfg_path, sock = daemon_files
    d = Daemon(cfg_path, sock, env={"PATH": os.environ["PATH"]})
    d.start()
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        fut = pool.submit(d.put, manifest(arns))
        wait_for(blocked_pid)
        assert d.proc is not None
        # As systemd does with the unit's KillMode=mixed once the daemon is dead: the hung
        # command is killed (at TimeoutStopSec), and every other command the daemon started, in
        # whichever store thread (the OS store runs beside NSS), runs to its end before the
        # restart. Stopped first, so that the daemon starts nothing after the listing.
        d.proc.send_signal(signal.SIGSTOP)
        stat = Path(f"/proc/{d.proc.pid}/stat")
        while stat.read_text().rpartition(")")[2].split()[0] != "T":
            time.sleep(0.001)
        children = [int(c) for task in Path(f"/proc/{d.proc.pid}/task").iterdir()
                    for c in (task / "children").read_text().split()]  # fmt: skip
        d.proc.send_signal(signal.SIGKILL)
        d.proc.wait()
        kill_group_of(blocked_pid)
        for child in children:
            _wait_gone(child)
        with pytest.raises(http.client.RemoteDisconnected):  # the daemon died mid-answer
            fut.result(timeout=30)
    return d


def _wait_gone(pid: int, timeout: float = 120) -> None:
    """Wait until ``pid`` has exited (an orphan: reaped by init, or a zombie until then)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
        except (FileNotFoundError, ProcessLookupError):  # gone between open and read
            return
        if state in {"Z", "X"}:
            return
        time.sleep(0.01)
    raise TimeoutError(f"pid {pid} still running after {timeout} s")


def _restart_clean(d: Daemon, shims: Path) -> None:
    for p in shims.iterdir():
        if p.is_file():
            p.unlink()
    d.start()


@pytest.mark.parametrize("point", ["after_files_written", "between_nss_adds"])
def test_sigkill_mid_install_is_rolled_back_at_next_start(
    config: Config,
    daemon_files: tuple[Path, Path],
    shims: Path,
    three_cas: list[str],
    point: str,
) -> None:
    """Killed after the .crt files are written, or between certutil adds: rolled back on start."""
    if point == "after_files_written":
        write_shim(shims, "update-ca-certificates", BLOCK_ON_CALL.format(n=1))
        pid_file = shims / "update-ca-certificates.state" / "blocked.pid"
    else:
        # Calls: -L (list), -A, -A ... : block on the second add.
        write_shim(shims, "certutil", BLOCK_SECOND_ADD)
        pid_file = shims / "certutil.state" / "blocked.pid"
    before = store_state(config)
    d = _kill_during(config, daemon_files, shims, three_cas, pid_file)
    journal = json.loads((config.state_dir / "journal.json").read_text())
    assert journal["phase"] == "applying"
    if point == "after_files_written":
        assert len(list(config.os_store.our_dir.iterdir())) == 3
    else:
        assert osroot.nss_listing(nss_dir(config)).count("trustinstaller-") == 1
    _restart_clean(d, shims)
    try:
        status = d.status()
        assert status["state"] == "failed"
        assert status["errors"][0]["kind"] == "interrupted"
        assert store_state(config) == before
        assert not (config.state_dir / "journal.json").exists()
        code, answer = d.put(manifest(three_cas))
        assert (code, answer["state"]) == (200, "locked")
    finally:
        d.stop()


def test_sigkill_while_update_ca_certificates_runs(
    config: Config, daemon_files: tuple[Path, Path], shims: Path, three_cas: list[str]
) -> None:
    """Killed inside update-ca-certificates (bundle and links already rewritten): rolled back."""
    hook = config.os_store.hooks_dir / "50stall"
    state_dir = shims / "hook.state"
    state_dir.mkdir()
    hook.write_text(f"#!/bin/sh\ncat >/dev/null\nS={state_dir}\n"
                    '[ -e "$S/stalled" ] && exit 0\ntouch "$S/stalled"\n'
                    'echo $$ > "$S/blocked.pid"\nsleep 600\n')  # fmt: skip
    hook.chmod(0o755)
    before = store_state(config)
    d = _kill_during(config, daemon_files, shims, three_cas, state_dir / "blocked.pid")
    # The real script got as far as the bundle: our certificates are in it right now.
    assert store_state(config)["os"] != before["os"]
    d.start()
    try:
        assert d.status()["state"] == "failed"
        assert store_state(config) == before
    finally:
        d.stop()


# Waits until the runtime environment's file (a later store's) exists, then stalls for good.
STALL_AFTER_ENV = """#!/bin/sh
cat > /dev/null
S={state}
[ -e "$S/stalled" ] && exit 0
i=0
while [ ! -e {env} ]; do
    i=$((i + 1)); [ $i -lt 600 ] || exit 1
    sleep 0.05
done
touch "$S/stalled"
echo $$ > "$S/blocked.pid"
sleep 600
"""


def test_sigkill_while_the_hooks_run_beside_the_later_stores(
    config: Config, daemon_files: tuple[Path, Path], shims: Path, three_cas: list[str]
) -> None:
    """Killed in a hook (the fast path's rest) after a later store installed beside it: the
    journal holds that store's steps too, and the next start undoes both."""
    env_dir = config.runtime_env_dir
    state_dir = shims / "hook.state"
    state_dir.mkdir()
    hook = config.os_store.hooks_dir / "50stall"
    hook.write_text(STALL_AFTER_ENV.format(state=state_dir, env=env_dir / "env"))
    hook.chmod(0o755)
    before = store_state(config)
    had_env = env_dir.exists()
    d = _kill_during(config, daemon_files, shims, three_cas, state_dir / "blocked.pid")
    assert (env_dir / "env").exists()  # the later store did install beside the hooks
    d.start()
    try:
        assert d.status()["state"] == "failed"
        assert store_state(config) == before
        assert env_dir.exists() == had_env
        assert not (config.state_dir / "journal.json").exists()
    finally:
        d.stop()


def test_committed_journal_is_confirmed_as_locked(config: Config, moto: MotoServer) -> None:
    """A journal in phase 'committed' (killed after the install, before the lock was written)."""
    installer = Installer(config)
    installer.state.ensure()
    entry = {"fingerprint_sha256": "ab" * 32, "subject": "CN=x", "not_before": "",
             "not_after": "", "source": {"level": "tool", "index": 0, "arn": "arn"},
             "duplicates": [], "stores": ["os"], "warnings": []}  # fmt: skip
    # As a daemon killed between the commit and the lock left it, byte for byte in form.
    (config.state_dir / "journal.json").write_text(json.dumps({
        "id": "1", "started_at": "2026-12-01T00:00:00Z", "phase": "committed", "entries": [],
        "summary": {"certificates": [entry]},
    }))  # fmt: skip
    installer.state.write_status(Status(State.INSTALLING))
    status = status_to_json(installer.prepare())
    assert status["state"] == "locked"
    assert status["certificates"] == [entry]
    assert installer.state.read_journal() is None


def test_interrupted_before_anything_was_written(config: Config) -> None:
    """State 'installing' without a journal (killed during the fetch) becomes 'failed'."""
    installer = Installer(config)
    installer.state.ensure()
    installer.state.write_status(Status(State.INSTALLING))
    assert installer.prepare().state == "failed"


# -- concurrency ------------------------------------------------------------------------------


@pytest.fixture
def slow_daemon(config: Config, daemon_files: tuple[Path, Path]) -> Iterator[tuple[Daemon, Path]]:
    """A daemon whose installs stall in a hook until the test creates a release file."""
    release = config.os_store.hooks_dir.parent / "release"
    started = config.os_store.hooks_dir.parent / "started"
    hook = config.os_store.hooks_dir / "50wait"
    hook.write_text(f"#!/bin/sh\ncat >/dev/null\ntouch {started}\n"
                    f"while [ ! -e {release} ]; do sleep 0.05; done\n")  # fmt: skip
    hook.chmod(0o755)
    cfg_path, sock = daemon_files
    with Daemon(cfg_path, sock) as d:
        yield d, release


def test_twenty_concurrent_submissions_install_exactly_once(
    slow_daemon: tuple[Daemon, Path], config: Config, moto: MotoServer
) -> None:
    """20 PUTs at once: exactly one installs, the rest are told busy or locked."""
    d, release = slow_daemon
    arns = [moto.put_secret(unique(), make_ca(f"race {i}").pem) for i in range(20)]
    with concurrent.futures.ThreadPoolExecutor(20) as pool:
        futures = [pool.submit(d.put, manifest([arn])) for arn in arns]
        wait_for(release.parent / "started")
        release.touch()
        answers = [f.result(timeout=120) for f in futures]
    codes = sorted(code for code, _ in answers)
    assert codes.count(200) == 1
    assert set(codes) <= {200, 409, 503}
    for code, answer in answers:
        if code != 200:
            assert answer["outcome"] in {"busy", "locked"}
    [winner] = [a for c, a in answers if c == 200]
    assert len(winner["certificates"]) == 1
    listing = osroot.nss_listing(nss_dir(config))
    assert listing.count("trustinstaller-") == 1
    assert len(list(config.os_store.our_dir.iterdir())) == 1


def test_apply_during_a_daemon_install_is_busy(
    slow_daemon: tuple[Daemon, Path],
    config: Config,
    moto: MotoServer,
    daemon_files: tuple[Path, Path],
    tmp_path: Path,
) -> None:
    """``trustinstaller apply`` while the daemon installs: exit 5 (busy), then 4 (locked)."""
    d, release = slow_daemon
    m = tmp_path / "m.json"
    m.write_bytes(manifest([moto.put_secret(unique(), make_ca("apply race").pem)]))
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        fut = pool.submit(d.put, manifest([moto.put_secret(unique(), make_ca("daemon").pem)]))
        wait_for(release.parent / "started")
        done = cli("--config", str(daemon_files[0]), "apply", str(m))
        assert done.returncode == 5, done.stderr
        assert "another install is in progress" in done.stderr
        release.touch()
        assert fut.result(timeout=120)[0] == 200
    done = cli("--config", str(daemon_files[0]), "apply", str(m))
    assert done.returncode == 4


def test_store_error_is_reported_not_raised_raw(config: Config, three_cas: list[str]) -> None:
    """A symlink planted at the trustinstaller/ directory is refused with a clear store error."""
    target = config.os_store.local_certs_dir.parent / "elsewhere"
    target.mkdir()
    config.os_store.our_dir.symlink_to(target)
    before = store_state(config)
    with pytest.raises(StoreError, match="symlink"):
        Installer(config).submit(manifest(three_cas))
    assert list(target.iterdir()) == []
    assert store_state(config) == before


def test_daemon_start_waits_for_a_running_apply(
    config: Config, daemon_files: tuple[Path, Path]
) -> None:
    """While another process holds the install lock, the daemon waits before it serves."""
    cfg_path, sock = daemon_files
    installer = Installer(config)
    installer.state.ensure()
    d = Daemon(cfg_path, sock)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        with installer.state.exclusive():
            fut = pool.submit(d.start)
            # Holding the lock, the daemon cannot have bound its socket yet.
            for _ in range(20):
                assert not sock.exists()
                assert not fut.done()
                time.sleep(0.05)
        fut.result(timeout=60)
    try:
        assert d.status()["state"] == "open"
    finally:
        d.stop()


def test_stale_bundle_from_a_killed_run_is_not_appended_to(
    config: Config, three_cas: list[str]
) -> None:
    """A ca-certificates.crt.new left by a killed run never reaches the bundle."""
    from trustinstaller.stores.debian import bundle_ders

    stale_ca = make_ca("left behind")
    stale = config.os_store.etc_certs_dir / "ca-certificates.crt.new"
    stale.write_text(stale_ca.pem)
    Installer(config).submit(manifest(three_cas))
    assert not stale.exists()
    assert stale_ca.der not in bundle_ders(config.os_store.bundle)
    text = config.os_store.bundle.read_text()
    assert text.count("-----BEGIN CERTIFICATE-----") == len(bundle_ders(config.os_store.bundle))


@pytest.mark.root
def test_a_sigkill_before_a_crt_is_renamed_leaves_no_file_of_ours_after_recovery(
    config: Config, moto: MotoServer, tmp_path: Path
) -> None:
    """Killed between a ``.crt`` file's fsync and its rename, the next start removes its
    temporary file too: a directory the install made would stay for it."""
    ours = config.os_store.our_dir
    ours.mkdir(mode=0o755)  # there before the trace starts, so that -P can name it
    arns = [moto.put_secret(unique("crtcrash"), make_ca(f"crt crash {i}").pem) for i in range(2)]
    cfg_path = write_config(replace(config, nss_databases=()), tmp_path / "config.toml")
    (tmp_path / "m.json").write_bytes(manifest(session=arns))
    # The first rename in the directory is a .crt file's.
    done = apply_killed_at_first_rename(ours, cfg_path, tmp_path / "m.json")
    assert done.returncode != 0, done.stdout + done.stderr
    left = os.listdir(ours)
    assert left, "no crash point"
    assert all(n.startswith(".") and n.endswith(".tmp") for n in left), left
    Installer(config).prepare()  # the next start rolls the journal back
    assert os.listdir(ours) == []
