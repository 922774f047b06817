"""The OS store under a busy dpkg: Java's keystore hook runs dpkg, which needs dpkg's locks.

A real fcntl lock, taken the way apt and dpkg take it, is held on the private namespace's copy
of /var/lib/dpkg: for a few seconds (the install waits, then succeeds) and for good (the install
fails cleanly, naming the holder, and leaves the OS bundle, its links and Java as they were).
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import osroot
from tests.support.builders import manifest, unique
from tests.support.certs import make_ca
from tests.support.moto import MotoServer
from tests.support.ns import PrivateNamespace
from tests.support.shims import write_shim
from tests.test_namespace import HAS_JAVA_HOOK, keytool_aliases
from trustinstaller.stores.debian import dpkg_lock_holder

pytestmark = pytest.mark.root

# Takes an exclusive fcntl lock on argv[1] as apt and dpkg do (F_SETLK on the whole file),
# says so, and holds it for argv[2] seconds.
HOLDER = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o640)
fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
print(os.getpid(), flush=True)
time.sleep(float(sys.argv[2]))
"""


@contextlib.contextmanager
def held(ns: PrivateNamespace | None, path: str, seconds: float) -> Iterator[int]:
    """A process holding the lock on ``path`` (inside ``ns`` if given); yields its pid."""
    argv = [sys.executable, "-c", HOLDER, path, str(seconds)]
    if ns is None:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
    else:
        proc = ns.popen(argv, stdout=subprocess.PIPE)
    assert proc.stdout is not None
    with proc, proc.stdout:
        try:
            line = proc.stdout.readline()
            assert line.strip(), "the holder did not take the lock"
            yield int(line)
        finally:
            proc.kill()


@pytest.fixture
def ns(tmp_path: Path) -> Iterator[PrivateNamespace]:
    """A private namespace whose store starts consistent (every local CA linked and in Java)."""
    with PrivateNamespace(tmp_path / "ns") as namespace:
        done = namespace.run(["update-ca-certificates"])
        assert done.returncode == 0, done.stderr
        yield namespace


def config(tmp_path: Path, moto: MotoServer, update_timeout: float) -> Path:
    """The default OS store paths (the namespace's copies), no NSS, this update_timeout."""
    cfg = tmp_path / "config.toml"
    cfg.write_text(
        f'state_dir = "{tmp_path / "state"}"\n'
        f'socket = "{tmp_path / "state" / "ti.sock"}"\n'
        f'endpoint_url = "{moto.endpoint}"\n'
        f"update_timeout = {update_timeout}\n"
        "nss_databases = []\nfirefox_policies = []\n"
    )
    return cfg


def apply(ns: PrivateNamespace, cfg: Path, m: Path) -> subprocess.CompletedProcess[str]:
    """``trustinstaller apply`` inside the namespace."""
    return ns.run([sys.executable, "-m", "trustinstaller", "--config", str(cfg), "apply", str(m)])


def one_ca_manifest(tmp_path: Path, moto: MotoServer, label: str) -> tuple[Path, str]:
    """A manifest naming one new CA; and that CA's PEM."""
    ca = make_ca(label)
    m = tmp_path / f"{label.replace(' ', '-')}.json"
    m.write_bytes(manifest([moto.put_secret(unique(), ca.pem)]))
    return m, ca.pem


def busy_at_verify(
    tmp_path: Path, moto: MotoServer, update_timeout: float, seconds: float
) -> tuple[Path, Path]:
    """A config with one NSS database, and a certutil shim that, in the verify phase only (after
    every store installed), starts a holder of dpkg's lock for ``seconds`` in a session of its
    own (so that it outlives certutil), waits until it holds, and fails. Returns the config and
    the shim directory; the holder's pid is written to ``certutil.state/held`` there."""
    cfg = tmp_path / "config.toml"
    cfg.write_text(
        config(tmp_path, moto, update_timeout)
        .read_text()
        .replace("nss_databases = []", f'nss_databases = ["sql:{tmp_path / "nssdb"}"]')
    )
    holder = tmp_path / "holder.py"
    # Waits for the lock: the verify runs beside the OS store's hooks, and Java's hook may hold
    # dpkg's lock just then; the holder takes it when that dpkg is done, before the rollback.
    holder.write_text(HOLDER.replace("fcntl.LOCK_EX | fcntl.LOCK_NB", "fcntl.LOCK_EX"))
    journal = tmp_path / "state" / "journal.json"
    body = f"""case " $* " in *" -L "*)
    if grep -q '"verifying"' {journal}; then
        setsid {sys.executable} {holder} /var/lib/dpkg/lock {seconds} \\
            > "$STATE/held" 2>&1 < /dev/null &
        while [ ! -s "$STATE/held" ]; do sleep 0.05; done
        exit 1
    fi;;
esac"""
    shims = tmp_path / "shims"
    write_shim(shims, "certutil", body)
    return cfg, shims


@pytest.mark.parametrize("name", ["lock-frontend", "lock"])
def test_holder_is_named_with_pid_and_command(tmp_path: Path, name: str) -> None:
    """F_GETLK on dpkg's lock files names the process holding either, and None when free."""
    dpkg = tmp_path / "dpkg"
    dpkg.mkdir()
    for n in ("lock-frontend", "lock"):
        (dpkg / n).touch(mode=0o640)
    assert dpkg_lock_holder(dpkg) is None
    with held(None, str(dpkg / name), 60) as pid:
        holder = dpkg_lock_holder(dpkg)
        assert holder is not None
        assert (holder.path, holder.pid) == (str(dpkg / name), pid)
        assert str(holder).startswith(f"{dpkg / name} is held by pid {pid} (")
        assert "-c" in holder.command
    assert dpkg_lock_holder(dpkg) is None
    assert dpkg_lock_holder(tmp_path / "no-dpkg") is None


@pytest.mark.skipif(not HAS_JAVA_HOOK, reason="needs ca-certificates-java (make deps)")
def test_install_waits_for_a_busy_dpkg_then_succeeds(
    ns: PrivateNamespace, moto: MotoServer, tmp_path: Path
) -> None:
    """dpkg's frontend lock held until the install is seen waiting, then 2 s more: the install
    waits for it, then succeeds, and Java gets the CA."""
    m, pem = one_ca_manifest(tmp_path, moto, "dpkg busy a while")
    before_java = keytool_aliases(ns)
    log = tmp_path / "apply.log"
    argv = [sys.executable, "-m", "trustinstaller", "--config", str(config(tmp_path, moto, 120)),
            "apply", str(m)]  # fmt: skip
    with held(ns, "/var/lib/dpkg/lock-frontend", 3600), log.open("w") as out:
        proc = ns.popen(argv, stdout=out, stderr=out)
        deadline = time.monotonic() + 120
        while "dpkg_busy" not in log.read_text():
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        time.sleep(2)
        assert proc.poll() is None, "the install did not wait: " + log.read_text()
    returncode = proc.wait(timeout=300)
    text = log.read_text()
    assert returncode == 0, text
    waited = [json.loads(line) for line in text.splitlines() if '"dpkg_free"' in line]
    assert waited, text
    assert waited[0]["duration_ms"] >= 2000, text
    status = json.loads((tmp_path / "state" / "status.json").read_text())
    assert status["state"] == "locked"
    fp = status["certificates"][0]["fingerprint_sha256"]
    assert pem in ns.path("/etc/ssl/certs/ca-certificates.crt").read_text()
    assert keytool_aliases(ns) == sorted([*before_java, f"debian:{fp}.pem"])


@pytest.mark.skipif(not HAS_JAVA_HOOK, reason="needs ca-certificates-java (make deps)")
def test_install_under_a_dpkg_that_stays_busy_fails_cleanly(
    ns: PrivateNamespace, moto: MotoServer, tmp_path: Path
) -> None:
    """dpkg's database lock held for good: after update_timeout the install fails naming the
    holder, state failed, no journal, the OS store and Java as before; once dpkg is free, the
    same manifest installs."""
    m, pem = one_ca_manifest(tmp_path, moto, "dpkg busy forever")
    cfg = config(tmp_path, moto, 2)
    before = osroot.snapshot_tree(ns.path("/etc/ssl/certs"))
    before_local = osroot.snapshot_tree(ns.path("/usr/local/share/ca-certificates"))
    before_java = keytool_aliases(ns)
    with held(ns, "/var/lib/dpkg/lock", 3600) as pid:
        done = apply(ns, cfg, m)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "dpkg is busy: /var/lib/dpkg/lock is held by pid" in done.stderr, done.stderr
    assert f"pid {pid} (" in done.stderr
    assert "rollback failed" not in done.stderr
    status = json.loads((tmp_path / "state" / "status.json").read_text())
    assert status["state"] == "failed"
    assert not (tmp_path / "state" / "journal.json").exists()
    assert osroot.snapshot_tree(ns.path("/etc/ssl/certs")) == before
    assert osroot.snapshot_tree(ns.path("/usr/local/share/ca-certificates")) == before_local
    assert keytool_aliases(ns) == before_java
    # The lock is gone with its holder: the next try finishes the job.
    again = apply(ns, cfg, m)
    assert again.returncode == 0, again.stdout + again.stderr
    assert pem in ns.path("/etc/ssl/certs/ca-certificates.crt").read_text()
    assert len(keytool_aliases(ns)) == len(before_java) + 1


@pytest.mark.skipif(not HAS_JAVA_HOOK, reason="needs ca-certificates-java (make deps)")
def test_rollback_waits_for_a_busy_dpkg(
    ns: PrivateNamespace, moto: MotoServer, tmp_path: Path
) -> None:
    """NSS fails verification after update-ca-certificates ran, and dpkg turns busy for 8 s just
    then: the rollback waits for dpkg, and the OS bundle, its links and Java are as before."""
    m, _ = one_ca_manifest(tmp_path, moto, "dpkg busy at rollback")
    cfg, shims = busy_at_verify(tmp_path, moto, 60, 8)
    journal = tmp_path / "state" / "journal.json"
    before = osroot.snapshot_tree(ns.path("/etc/ssl/certs"))
    before_java = keytool_aliases(ns)
    done = ns.run(
        [sys.executable, "-m", "trustinstaller", "--config", str(cfg), "apply", str(m)],
        env={"PATH": f"{shims}:/usr/local/bin:/usr/bin:/bin"},
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert (shims / "certutil.state" / "held").read_text().strip(), "the lock was never held"
    assert "dpkg_busy" in done.stderr, done.stderr
    assert "rollback failed" not in done.stderr, done.stderr
    assert not journal.exists()
    after = osroot.snapshot_tree(ns.path("/etc/ssl/certs"))
    after.pop("java/cacerts", None)  # a rewritten keystore: compared by its entries below
    before.pop("java/cacerts", None)
    assert after == before
    assert keytool_aliases(ns) == before_java


@pytest.mark.skipif(not HAS_JAVA_HOOK, reason="needs ca-certificates-java (make deps)")
def test_a_rollback_under_a_dpkg_that_stays_busy_is_finished_at_the_next_start(
    ns: PrivateNamespace, moto: MotoServer, tmp_path: Path
) -> None:
    """NSS fails verification after update-ca-certificates ran, and dpkg turns busy for good just
    then. The rollback waits update_timeout, rebuilds the OS bundle without the CA all the same
    (only Java's hook fails), and keeps the journal; once dpkg is free, the next start finishes
    the rollback (Java drops the CA) before it installs the next manifest."""
    m, pem = one_ca_manifest(tmp_path, moto, "dpkg busy for good at rollback")
    cfg, shims = busy_at_verify(tmp_path, moto, 2, 3600)
    journal = tmp_path / "state" / "journal.json"
    before = osroot.snapshot_tree(ns.path("/etc/ssl/certs"))
    before_java = keytool_aliases(ns)
    env = {"PATH": f"{shims}:/usr/local/bin:/usr/bin:/bin"}
    argv = [sys.executable, "-m", "trustinstaller", "--config", str(cfg), "apply"]
    held = shims / "certutil.state" / "held"
    try:
        done = ns.run([*argv, str(m)], env=env)
        assert held.read_text().strip(), "the lock was never held"
        assert done.returncode == 1, done.stdout + done.stderr
        assert "rollback failed too" in done.stderr, done.stderr
        assert "the OS bundle was rebuilt without our CAs" in done.stderr, done.stderr
        assert journal.exists()
        # Consistent already: the bundle and its links are as before; only Java lags.
        after = osroot.snapshot_tree(ns.path("/etc/ssl/certs"))
        assert pem not in ns.path("/etc/ssl/certs/ca-certificates.crt").read_text()
        after.pop("java/cacerts", None)
        expected = dict(before)
        expected.pop("java/cacerts", None)
        assert after == expected
    finally:
        if held.exists() and held.read_text().strip():
            ns.run(["kill", "-KILL", held.read_text().strip()])
    # dpkg is free: the next start (an apply of another manifest) finishes the rollback first.
    (shims / "certutil").unlink()
    m2, pem2 = one_ca_manifest(tmp_path, moto, "after dpkg is free")
    again = ns.run([*argv, str(m2)], env=env)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "install_rolled_back" in again.stderr, again.stderr
    bundle = ns.path("/etc/ssl/certs/ca-certificates.crt").read_text()
    assert pem not in bundle
    assert pem2 in bundle
    assert len(keytool_aliases(ns)) == len(before_java) + 1
