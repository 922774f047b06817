"""The Debian package in a clean Debian root, booted under a real systemd.

The release is debroot.SUITE (make test-system runs bookworm and trixie, each with its own
package from make deb).

One root is shared by the module: the tests run in order, as one session would (the lock that
the third test takes is what the later ones check). The daemon reaches a real moto server on
127.0.0.1, since the root shares the host's network.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes

from tests.support.certs import Issued, make_ca
from tests.support.moto import FAKE_ENV, MotoServer
from tests.system import debroot
from tests.system.conftest import manifest
from trustinstaller.stores.debian import bundle_ders
from trustinstaller.stores.nss import parse_listing

pytestmark = pytest.mark.system

TOP = Path(__file__).resolve().parents[2]
NSS_DB = "sql:/root/.local/share/pki/nssdb"  # root's default when neither database exists yet
# The release's own JRE (17 on Debian 12, 21 on Debian 13).
JAVA = ("ca-certificates-java", "default-jre-headless")
BROWSER_DIRS = ("/home/browser/.pki", "/home/browser/.local/share/pki")
FIREFOX_POLICIES = "/etc/firefox/policies/policies.json"


def in_java_keystore(booted: debroot.Booted, ca: Issued) -> bool:
    """Whether Java's system keystore trusts ``ca`` (ca-certificates-java names it by file)."""
    alias = f"debian:{ca.cert.fingerprint(hashes.SHA256()).hex()}.pem"
    done = booted.run("keytool", "-list", "-cacerts", "-storepass", "changeit", "-alias", alias,
                      check=False)  # fmt: skip
    return done.returncode == 0


@pytest.fixture(scope="module")
def root(deb: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A copy of the cached debootstrap root with the package installed by apt, as in a chroot."""
    # Java's keystore hook comes along: the hardened unit must still run it (see
    # test_memory_deny_write_execute_would_break_the_java_hook).
    with debroot.package_root(deb, tmp_path_factory.mktemp("debroot"), *JAVA) as path:
        yield path


@pytest.fixture(scope="module")
def boot_ca() -> Issued:
    """The CA the booted service installs."""
    return make_ca("trustinstaller boot test CA")


@pytest.fixture(scope="module")
def booted(root: Path, moto: MotoServer) -> Iterator[debroot.Booted]:
    """The root booted under systemd, configured for the local moto server."""
    conf = root / "etc/trustinstaller/config.toml"
    conf.write_text(
        conf.read_text() + f'\nendpoint_url = "{moto.endpoint}"\n'
        f'nss_databases = ["{NSS_DB}"]\nbrowser_users = ["browser"]\n'
        # Explicit: the root has no Firefox, so the default would be none.
        f'firefox_policies = ["{FIREFOX_POLICIES}"]\n'
    )
    # A browser user, and the drop-in docs/hardening.md gives for NSS databases in a user's home.
    debroot.chroot_run(root, ["useradd", "--create-home", "--shell", "/bin/sh", "browser"])
    debroot.chroot_run(root, ["install", "-d", "-o", "browser", "-g", "browser", "-m", "0700",
                              *BROWSER_DIRS])  # fmt: skip
    dropin = root / "etc/systemd/system/trustinstaller.service.d/browser.conf"
    dropin.parent.mkdir(parents=True, exist_ok=True)
    dropin.write_text(
        "[Service]\n"
        f"ReadWritePaths={' '.join(BROWSER_DIRS)}\n"
        "CapabilityBoundingSet=CAP_SETUID CAP_SETGID\n"
        "SystemCallFilter=@setuid\n"
        # A cgroup of its own for each step run as the user, with its own task limit.
        "Delegate=pids memory\n"
        "ProtectControlGroups=no\n"
    )
    debroot.mask_consoles(root)
    with debroot.Booted(root, root.parent / "systemd.log") as system:
        yield system


def test_postinst_enabled_the_socket_and_started_nothing(root: Path) -> None:
    """In the chroot, the socket is enabled for the next boot and nothing was started."""
    wants = root / "etc/systemd/system/sockets.target.wants/trustinstaller.socket"
    assert wants.is_symlink()
    # debhelper puts units in /lib on Debian 12 and in /usr/lib on Debian 13 (merged /usr).
    unit_dir = "/lib" if debroot.SUITE == "bookworm" else "/usr/lib"
    assert os.readlink(wants) == f"{unit_dir}/systemd/system/trustinstaller.socket"
    # Not enabled on its own: the socket starts it.
    assert not list((root / "etc/systemd/system").glob("*.wants/trustinstaller.service"))
    assert not (root / "run/trustinstaller.sock").exists()
    assert not (root / "run/trustinstaller").exists()
    # tmpfiles.d made the parent of root's NSS database, so that the unit can open it up.
    assert (root / "root/.local/share/pki").is_dir()


def test_every_shipped_units_documentation_is_there(root: Path) -> None:
    """Each file a shipped unit's Documentation= names is in the package (dh_compress renames)."""
    unit_dir = root / ("lib" if debroot.SUITE == "bookworm" else "usr/lib") / "systemd/system"
    units = sorted(p for p in unit_dir.iterdir() if "trustinstaller" in p.name)
    assert len(units) == 5, units
    for unit in units:
        docs = [line.split("=", 1)[1].split() for line in unit.read_text().splitlines()
                if line.startswith("Documentation=")]  # fmt: skip
        assert docs, unit.name
        for uri in docs[0]:
            if uri.startswith("file://"):
                assert (root / uri.removeprefix("file:///")).is_file(), f"{unit.name}: {uri}"


def test_package_runs_in_the_clean_root(root: Path) -> None:
    """The packaged command runs from its own virtual environment."""
    done = debroot.chroot_run(root, ["trustinstaller", "--version"])
    m = re.search(r'^__version__ = "(.+)"$', (TOP / "trustinstaller/__init__.py").read_text(), re.M)
    assert m is not None
    version = m.group(1)
    assert done.stdout.strip() == f"trustinstaller {version}"
    assert (root / "etc/trustinstaller/config.toml").is_file()
    status = root / "var/lib/dpkg/status"
    assert "Package: trustinstaller\nStatus: install ok installed" in status.read_text()


RUN_DIRS = ("/run/trustinstaller", "/run/trustinstaller-env")


@contextlib.contextmanager
def run_filled_by_the_browser_user(booted: debroot.Booted) -> Iterator[None]:
    """/run made small, then filled by the browser user through a directory every user may
    write (as /run/lock is on some hosts), until not even root may write a byte to it; put back
    as it was at the end."""
    size_kib, used_kib = booted.run("df", "--output=size,used", "-k", "/run").stdout.split()[-2:]
    booted.run("mount", "-o", f"remount,size={int(used_kib) + 2048}k", "/run")
    try:
        booted.run("install", "-d", "-m", "1777", "/run/shared")
        fill = booted.run("setpriv", "--reuid=browser", "--regid=browser", "--init-groups",
                          "dd", "if=/dev/zero", "of=/run/shared/fill", "bs=64k",
                          check=False)  # fmt: skip
        assert fill.returncode != 0
        assert "No space left" in fill.stderr, fill.stderr
        # The attack is real: /run itself takes no more, not even from root.
        full = booted.run("dd", "if=/dev/zero", "of=/run/probe", "bs=64k", "count=1",
                          check=False)  # fmt: skip
        assert "No space left" in full.stderr, full.stderr
        yield
    finally:
        booted.run("rm", "-rf", "/run/shared", "/run/probe")
        booted.run("mount", "-o", f"remount,size={size_kib}k", "/run")


def test_socket_is_listening_before_any_service(booted: debroot.Booted) -> None:
    """After boot the socket listens, root only, and the service has not started."""
    assert booted.systemctl("is-active", "trustinstaller.socket").stdout.strip() == "active"
    listen = booted.show("trustinstaller.socket", "Listen")["Listen"]
    assert listen == "/run/trustinstaller.sock (Stream)"
    assert booted.run("stat", "-c", "%a %U", "/run/trustinstaller.sock").stdout.split() == [
        "600",
        "root",
    ]
    state = booted.systemctl("is-active", "trustinstaller.service", check=False).stdout.strip()
    assert state == "inactive"
    # The socket pulled in both directories' mounts at boot, before any user could fill /run.
    for d in RUN_DIRS:
        unit = booted.run("systemd-escape", "-p", "--suffix=mount", d).stdout.strip()
        assert booted.show(unit, "ActiveState")["ActiveState"] == "active"


def test_a_user_who_fills_run_before_the_first_connection_cannot_stop_the_start(
    booted: debroot.Booted,
) -> None:
    """Before anything has connected, the browser user fills /run through a directory every user
    may write; the first connection still starts the service, which reaches ready and answers.
    (Its inodes are another matter: without one, systemd cannot set up any hardened unit's mount
    namespace, ours included, 226/NAMESPACE; see docs/threat-model.md.)"""
    assert booted.show("trustinstaller.service", "ActiveState")["ActiveState"] == "inactive"
    with run_filled_by_the_browser_user(booted):
        booted.run("trustinstaller", "status", "--json")
        booted.wait_for(
            lambda: booted.show("trustinstaller.service", "ActiveState")["ActiveState"],
            {"active"},
            limit=60,
        )
        done = booted.run("trustinstaller", "status")
        assert "source: daemon\n" in done.stdout, done.stdout  # not the state file: it answered
        assert "state: open" in done.stdout, done.stdout


def test_first_connection_activates_the_service_until_ready(booted: debroot.Booted) -> None:
    """A status request starts the service, which reaches ready with its STATUS= text."""
    done = booted.run("trustinstaller", "status", "--json")
    assert json.loads(done.stdout)["state"] == "open"
    booted.wait_for(
        lambda: booted.show("trustinstaller.service", "ActiveState")["ActiveState"], {"active"}
    )
    props = booted.show("trustinstaller.service", "Type", "StatusText", "MainPID", "SubState")
    assert props["Type"] == "notify"
    assert props["SubState"] == "running"
    assert props["StatusText"].startswith("open:")
    # The state directory is root's alone, whatever RuntimeDirectoryMode= said.
    assert booted.run("stat", "-c", "%a", "/run/trustinstaller").stdout.strip() == "700"


def test_state_and_runtime_dirs_are_tmpfs_mounts_of_their_own(booted: debroot.Booted) -> None:
    """The service pulled in a tmpfs for each of its two directories, which root cannot stop."""
    for d in RUN_DIRS:
        found = booted.run("findmnt", "-n", "-o", "FSTYPE,TARGET", "--mountpoint", d).stdout
        assert found.split() == ["tmpfs", d]
        unit = booted.run("systemd-escape", "-p", "--suffix=mount", d).stdout.strip()
        assert booted.show(unit, "ActiveState")["ActiveState"] == "active"
        # Unmounting would drop the lock: only a reboot (the session's end) takes it away.
        assert booted.systemctl("stop", unit, check=False).returncode != 0
        assert booted.show(unit, "ActiveState")["ActiveState"] == "active"


def test_a_user_who_fills_run_cannot_fill_the_state_or_runtime_dir(booted: debroot.Booted) -> None:
    """The browser user fills /run through a directory every user may write (as /run/lock is on
    some hosts); root's writes in the state and runtime directories still succeed."""
    with run_filled_by_the_browser_user(booted):
        for d in RUN_DIRS:
            probe = f"{d}/.fill-probe"
            booted.run("dd", "if=/dev/zero", f"of={probe}", "bs=64k", "count=16", "conv=fsync")
            booted.run("rm", "-f", probe)


def test_manifest_installs_into_the_roots_stores(
    booted: debroot.Booted, root: Path, moto: MotoServer, boot_ca: Issued
) -> None:
    """Submitted through the socket, the CA lands in the OS bundle and root's NSS database."""
    arn = moto.put_secret("boot-test-ca", boot_ca.pem)
    (root / "root/manifest.json").write_text(manifest(arn))
    done = booted.run("trustinstaller", "submit", "/root/manifest.json", check=False)
    assert done.returncode == 0, done.stderr
    assert boot_ca.der in bundle_ders(root / "etc/ssl/certs/ca-certificates.crt")
    fp = boot_ca.cert.fingerprint(hashes.SHA256()).hex()
    assert (root / f"usr/local/share/ca-certificates/trustinstaller/{fp}.crt").is_file()
    listing = parse_listing(booted.run("certutil", "-L", "-d", NSS_DB).stdout)
    assert listing[f"trustinstaller-{fp}"] == "C,,"
    # The browser user's databases, through the drop-in: the CA, and files the user owns.
    for d in BROWSER_DIRS:
        listing = parse_listing(booted.run("certutil", "-L", "-d", f"sql:{d}/nssdb").stdout)
        assert listing[f"trustinstaller-{fp}"] == "C,,"
        owners = booted.run("stat", "-c", "%U", f"{d}/nssdb", f"{d}/nssdb/cert9.db").stdout
        assert owners.split() == ["browser", "browser"]
    # update-ca-certificates ran Java's hook under the hardening (dpkg trigger, then keytool).
    assert in_java_keystore(booted, boot_ca)
    # The host's own store never saw it.
    assert boot_ca.der not in bundle_ders(Path("/etc/ssl/certs/ca-certificates.crt"))
    # The daemon mirrors its state into STATUS= (it looks about once a second).
    booted.wait_for(
        lambda: booted.show("trustinstaller.service", "StatusText")["StatusText"].split(":")[0],
        {"locked"},
    )


def test_packaged_unit_writes_the_firefox_policy(
    booted: debroot.Booted, root: Path, boot_ca: Issued
) -> None:
    """Under the hardened unit (ReadWritePaths=-/etc/firefox), the policy names the CA's file."""
    fp = boot_ca.cert.fingerprint(hashes.SHA256()).hex()
    crt = f"/usr/local/share/ca-certificates/trustinstaller/{fp}.crt"
    doc = json.loads((root / FIREFOX_POLICIES.lstrip("/")).read_text())
    assert doc == {"policies": {"Certificates": {"Install": [crt]}}}
    modes = booted.run("stat", "-c", "%a %U", "/etc/firefox/policies", FIREFOX_POLICIES).stdout
    assert modes.split() == ["755", "root", "644", "root"]
    status = json.loads(booted.run("trustinstaller", "status", "--json").stdout)
    assert f"firefox:{FIREFOX_POLICIES}" in status["certificates"][0]["stores"]


def test_packaged_unit_writes_chromiums_and_chromes_managed_policy(
    booted: debroot.Booted, root: Path, boot_ca: Issued
) -> None:
    """Under the hardened unit, both managed directories get CACertificates, root's and 0644."""
    status = json.loads(booted.run("trustinstaller", "status", "--json").stdout)
    for managed in ("/etc/chromium/policies/managed", "/etc/opt/chrome/policies/managed"):
        path = f"{managed}/zz-trustinstaller.json"
        doc = json.loads((root / path.lstrip("/")).read_text())
        assert doc == {"CACertificates": [base64.b64encode(boot_ca.der).decode()]}
        assert booted.run("stat", "-c", "%a %U", managed, path).stdout.split() == [
            "755", "root", "644", "root"
        ]  # fmt: skip
        assert f"chromium:{managed}" in status["certificates"][0]["stores"]


def test_second_manifest_is_refused_as_locked(booted: debroot.Booted, root: Path) -> None:
    """The session is locked: exit code 4, nothing changes."""
    bundle = (root / "etc/ssl/certs/ca-certificates.crt").read_bytes()
    (root / "root/empty.json").write_text("{}")
    done = booted.run("trustinstaller", "submit", "/root/empty.json", check=False)
    assert done.returncode == 4, done.stderr
    assert "locked" in done.stderr
    assert (root / "etc/ssl/certs/ca-certificates.crt").read_bytes() == bundle


def test_systemctl_status_shows_the_status_text(booted: debroot.Booted) -> None:
    """`systemctl status` shows what the daemon reported with STATUS=."""
    # The unit's idle exit (10 s) may have ended the locked daemon by now: a status request
    # starts it again, and it reports its state with STATUS= once ready.
    booted.run("trustinstaller", "status", "--json")
    booted.wait_for(
        lambda: booted.show("trustinstaller.service", "StatusText")["StatusText"].split(":")[0],
        {"locked"},
    )
    out = booted.systemctl("status", "--no-pager", "trustinstaller", check=False).stdout
    assert 'Status: "locked: 1 certificate(s) installed' in out


def test_lock_outlives_stop_and_start(booted: debroot.Booted) -> None:
    """SIGTERM stops it cleanly; after stop and start, and after re-activation, it stays locked."""
    booted.systemctl("stop", "trustinstaller.service")
    props = booted.show("trustinstaller.service", "Result", "ExecMainStatus", "ActiveState")
    assert props == {"Result": "success", "ExecMainStatus": "0", "ActiveState": "inactive"}
    assert booted.run("test", "-f", "/run/trustinstaller/status.json", check=False).returncode == 0
    booted.systemctl("start", "trustinstaller.service")  # returns once READY=1 arrived
    assert booted.show("trustinstaller.service", "StatusText")["StatusText"].startswith("locked:")
    booted.systemctl("stop", "trustinstaller.service")
    # Re-activated by the connection itself.
    done = booted.run("trustinstaller", "submit", "/root/empty.json", check=False)
    assert done.returncode == 4, done.stderr


def test_idle_exit_and_reactivation_keep_the_lock(booted: debroot.Booted, root: Path) -> None:
    """A locked, idle service exits on its own (status 0) and the next connection revives it."""
    dropin = root / "etc/systemd/system/trustinstaller.service.d/idle.conf"
    dropin.parent.mkdir(parents=True, exist_ok=True)
    dropin.write_text("[Service]\nEnvironment=TRUSTINSTALLER_IDLE_EXIT=2\n")
    booted.systemctl("daemon-reload")
    booted.systemctl("restart", "trustinstaller.service")
    booted.wait_for(
        lambda: booted.show("trustinstaller.service", "ActiveState")["ActiveState"], {"inactive"}
    )
    props = booted.show("trustinstaller.service", "Result", "ExecMainStatus", "NRestarts")
    assert props == {"Result": "success", "ExecMainStatus": "0", "NRestarts": "0"}
    assert booted.systemctl("is-active", "trustinstaller.socket").stdout.strip() == "active"
    done = booted.run("trustinstaller", "status", "--json")
    assert json.loads(done.stdout)["state"] == "locked"
    done = booted.run("trustinstaller", "submit", "/root/empty.json", check=False)
    assert done.returncode == 4, done.stderr


def test_journal_has_the_audit_events_and_no_secret(booted: debroot.Booted) -> None:
    """The service logs JSON events to the journal, never the manifest's credentials."""
    out = booted.run("journalctl", "-u", "trustinstaller", "--no-pager", "-o", "cat").stdout
    assert '"event": "cert_installed"' in out
    assert '"event": "daemon_ready"' in out
    assert FAKE_ENV["AWS_SECRET_ACCESS_KEY"] not in out


def test_a_users_steps_run_in_cgroups_of_their_own_under_the_unit(
    booted: debroot.Booted,
) -> None:
    """Under the drop-in, the browser user's steps get their user's task limit."""
    out = booted.run("journalctl", "-u", "trustinstaller", "--no-pager", "-o", "cat").stdout
    found = [json.loads(line) for line in out.splitlines() if "user_steps_contained" in line]
    assert found, out[-3000:]
    assert "pids" in (found[-1]["limits"] or ""), found[-1]
    assert found[-1]["tasks_max"] == 64, found[-1]
    # None is left behind: the step cgroups are gone once the install has ended.
    find = ("find /sys/fs/cgroup -maxdepth 6 -name 'trustinstaller-step-*' "
            "-path '*trustinstaller.service*' 2>/dev/null || true")  # fmt: skip
    cgroups = booted.run("sh", "-c", find).stdout
    assert cgroups == "", cgroups


def test_memory_deny_write_execute_would_break_the_java_hook(
    booted: debroot.Booted, root: Path, moto: MotoServer
) -> None:
    """Why the unit allows W+X memory: with MemoryDenyWriteExecute=yes, Java cannot start, so
    Debian 12's hook fails (and the install is rolled back) and Debian 13's skips Java's keystore
    without a word. (The unit as shipped put the CA into Java's keystore in
    test_manifest_installs_into_the_roots_stores.)"""
    ca = make_ca("trustinstaller java hook CA")
    arn = moto.put_secret("java-hook-ca", ca.pem)
    (root / "root/java.json").write_text(manifest(arn))
    bundle = root / "etc/ssl/certs/ca-certificates.crt"
    dropin = root / "etc/systemd/system/trustinstaller.service.d/mdwe.conf"
    dropin.write_text("[Service]\nMemoryDenyWriteExecute=yes\n")
    booted.systemctl("daemon-reload")
    # A new session: what a reboot would do to /run.
    booted.systemctl("stop", "trustinstaller.service")
    # The tests before started the service often enough to reach systemd's start limit (5 in
    # 10 s), which a fast machine does: the next activation would fail before the daemon runs.
    booted.systemctl("reset-failed", "trustinstaller.service", "trustinstaller.socket")
    booted.systemctl("start", "trustinstaller.socket")
    booted.run("sh", "-c", "rm -rf /run/trustinstaller/* /run/trustinstaller-env/*")
    before = bundle.read_bytes()
    try:
        done = booted.run("trustinstaller", "submit", "/root/java.json", check=False)
        if debroot.SUITE == "bookworm":
            assert done.returncode == 1, done.stderr  # a host error
            assert "update.d/jks-keystore exited with code" in done.stderr
            assert bundle.read_bytes() == before
            assert not in_java_keystore(booted, ca)
        else:
            # Worse on Debian 13: ca-certificates-java's postinst exits 0 when `java -version`
            # fails, so the install "succeeds" and Java's keystore silently lacks the CA.
            assert done.returncode == 0, done.stderr
            assert not in_java_keystore(booted, ca)
    finally:
        dropin.unlink()
        booted.systemctl("daemon-reload")
        # The failed trigger left ca-certificates-java half-configured: until this, dpkg skips
        # its trigger and later hook runs "succeed" without touching Java's keystore.
        booted.run("dpkg", "--configure", "-a")


def test_apply_runs_in_the_clean_root_without_the_daemon(
    root: Path, booted: debroot.Booted, moto: MotoServer
) -> None:
    """`trustinstaller apply` installs in-process, with its own state directory and NSS db."""
    ca = make_ca("trustinstaller apply test CA")
    arn = moto.put_secret("apply-test-ca", ca.pem)
    (root / "root/apply.json").write_text(manifest(arn))
    (root / "root/apply.toml").write_text(
        f'state_dir = "/root/apply-state"\nruntime_dir = "/root/apply-env"\n'
        f'nss_databases = ["sql:/root/apply-nssdb"]\nendpoint_url = "{moto.endpoint}"\n'
    )
    booted.kill()  # apply needs no systemd: run it in the plain chroot
    done = debroot.chroot_run(
        root, ["trustinstaller", "--config", "/root/apply.toml", "apply", "/root/apply.json"],
        check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert ca.der in bundle_ders(root / "etc/ssl/certs/ca-certificates.crt")
    status = json.loads((root / "root/apply-state/status.json").read_text())
    assert status["state"] == "locked"
