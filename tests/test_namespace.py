"""The real default paths, hooks included, in a private mount namespace.

Here update-ca-certificates runs with no options against /etc/ssl and friends, which are
throwaway copies, and Debian's Java hook (jks-keystore) runs for real.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support import osroot
from tests.support.builders import manifest, unique
from tests.support.certs import make_ca
from tests.support.moto import MotoServer
from tests.support.ns import REFUSED, PrivateNamespace
from tests.support.shims import write_shim
from tests.test_faults import FAIL_SECOND_ADD

pytestmark = pytest.mark.root

HAS_JAVA_HOOK = Path("/etc/ca-certificates/update.d/jks-keystore").exists()


def keytool_aliases(ns: PrivateNamespace) -> list[str]:
    """The aliases in the namespace's Java cacerts keystore."""
    done = ns.run(["keytool", "-list", "-cacerts", "-storepass", "changeit"])
    assert done.returncode == 0, done.stderr
    return sorted(
        line.split(",")[0] for line in done.stdout.splitlines() if "trustedCertEntry" in line
    )


@pytest.fixture
def ns(tmp_path: Path) -> PrivateNamespace:
    """A private namespace for one test."""
    with PrivateNamespace(tmp_path / "ns") as namespace:
        # Start from a consistent store: the image may hold local CAs not yet linked or in Java.
        done = namespace.run(["update-ca-certificates"])
        assert done.returncode == 0, done.stderr
        yield namespace  # type: ignore[misc]


def write_ns_config(tmp_path: Path, moto: MotoServer) -> Path:
    """A config using the default OS store paths (the namespace's copies)."""
    cfg = tmp_path / "config.toml"
    cfg.write_text(
        f'state_dir = "{tmp_path / "state"}"\n'
        f'socket = "{tmp_path / "state" / "ti.sock"}"\n'
        f'nss_databases = ["sql:{tmp_path / "nssdb"}"]\n'
        f'endpoint_url = "{moto.endpoint}"\n'
    )
    return cfg


def apply(ns: PrivateNamespace, cfg: Path, m: Path, env: dict[str, str] | None = None) -> object:
    """``trustinstaller apply`` inside the namespace."""
    import sys

    return ns.run([sys.executable, "-m", "trustinstaller", "--config", str(cfg), "apply", str(m)],
                  env=env)  # fmt: skip


def test_default_paths_install_and_java_hook(
    ns: PrivateNamespace, moto: MotoServer, tmp_path: Path
) -> None:
    """With no path options, the OS store, the bundle and (where installed) Java get the CA."""
    ca = make_ca("namespace root")
    m = tmp_path / "m.json"
    m.write_bytes(manifest([moto.put_secret(unique(), ca.pem)]))
    cfg = write_ns_config(tmp_path, moto)
    before_java = keytool_aliases(ns) if HAS_JAVA_HOOK else []
    done = apply(ns, cfg, m)
    assert done.returncode == 0, done.stdout + done.stderr  # type: ignore[attr-defined]
    status = json.loads((tmp_path / "state" / "status.json").read_text())
    fp = status["certificates"][0]["fingerprint_sha256"]
    assert ns.path("/usr/local/share/ca-certificates").joinpath(f"trustinstaller/{fp}.crt").exists()
    assert ca.pem in ns.path("/etc/ssl/certs/ca-certificates.crt").read_text()
    if HAS_JAVA_HOOK:
        assert keytool_aliases(ns) == sorted([*before_java, f"debian:{fp}.pem"])


def test_rollback_restores_bundle_links_and_java_keystore(
    ns: PrivateNamespace, moto: MotoServer, tmp_path: Path
) -> None:
    """certutil fails after update-ca-certificates ran: bundle, links and Java are as before."""
    arns = [moto.put_secret(unique(), make_ca(f"ns rollback {i}").pem) for i in range(2)]
    m = tmp_path / "m.json"
    m.write_bytes(manifest(arns))
    cfg = write_ns_config(tmp_path, moto)
    shims = tmp_path / "shims"
    write_shim(shims, "certutil", FAIL_SECOND_ADD)
    before = osroot.snapshot_tree(ns.path("/etc/ssl/certs"))
    before_local = osroot.snapshot_tree(ns.path("/usr/local/share/ca-certificates"))
    before_java = keytool_aliases(ns) if HAS_JAVA_HOOK else []
    done = apply(ns, cfg, m, env={"PATH": f"{shims}:/usr/local/bin:/usr/bin:/bin"})
    assert done.returncode == 1, done.stdout + done.stderr  # type: ignore[attr-defined]
    after = osroot.snapshot_tree(ns.path("/etc/ssl/certs"))
    after.pop("java/cacerts", None)  # a rewritten keystore: compared by its entries below
    before.pop("java/cacerts", None)
    assert after == before
    assert osroot.snapshot_tree(ns.path("/usr/local/share/ca-certificates")) == before_local
    if HAS_JAVA_HOOK:
        assert keytool_aliases(ns) == before_java
    shutil.rmtree(shims)


# Run inside a chroot by test_helper_inside_a_chroot_never_reaches_the_hosts_store: it uses the
# helper there as a test would, then tries the old way in (nsenter without --root) behind the
# same guard, with a command that would only print. Its findings go out as one JSON line.
_IN_CHROOT = r"""
import json, subprocess, sys
from pathlib import Path
from tests.support.ns import REFUSED, PrivateNamespace

found = {}
with PrivateNamespace(Path("/tmp/ns")) as ns:
    done = ns.run(["sh", "-c", "echo probe > /etc/ssl/certs/ns-probe.pem && "
                   "echo probe > /usr/local/share/ca-certificates/ns-probe.crt"])
    found["write"] = [done.returncode, done.stderr]
    found["copy_has_probe"] = ns.path("/etc/ssl/certs/ns-probe.pem").exists()
    local = ns.path("/usr/local/share/ca-certificates/ns-probe.crt")
    found["local_copy_has_probe"] = local.exists()
    # nsenter --mount without --root lands on the namespace's own /, the host's: the guard
    # must refuse before the command (a harmless echo) runs.
    guarded = ns.argv(["echo", "RAN"])[len(ns.enter()):]
    escaped = ["nsenter", f"--target={ns.pid}", "--mount", "--", *guarded]
    done = subprocess.run(escaped, capture_output=True, text=True, check=False)
    found["escape"] = [done.returncode, done.stdout, done.stderr]
print(json.dumps(found))
"""


@pytest.fixture
def chroot(tmp_path: Path) -> Path:
    """A chroot made of the host's /usr (read-only) and a copy of its /etc."""
    root = tmp_path / "chroot"
    for d in ("usr", "proc", "dev", "tmp", "src", "run", "var/lib"):
        (root / d).mkdir(parents=True)
    for link in ("bin", "lib", "lib64", "sbin"):
        if Path("/", link).is_symlink():
            (root / link).symlink_to(os.readlink(Path("/", link)))
    done = subprocess.run(["cp", "-a", "/etc", str(root / "etc")], capture_output=True, text=True,
                          check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    return root


def in_chroot(root: Path, script: str) -> subprocess.CompletedProcess[str]:
    """Run Python ``script`` chrooted in ``root``; its mounts live in one throwaway namespace."""
    top = Path(__file__).resolve().parents[1]
    setup = (
        # The chroot's / is a mount point, as in any real chroot set-up: unshare needs one.
        'set -e; mount --bind "$R" "$R"; '
        'mount --bind /usr "$R/usr"; mount -o remount,bind,ro "$R/usr"; '
        'mount --bind -o ro "$T" "$R/src"; mount -o remount,bind,ro "$R/src"; '
        'mount -t proc proc "$R/proc"; mount --rbind /dev "$R/dev"; '
        'mount -t tmpfs tmpfs "$R/tmp"; '
        'cd "$R/src"; exec chroot "$R" sh -c \'cd /src && exec "$@"\' sh "$@"'
    )
    env = {
        "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "R": str(root),
        "T": str(top),
        "PYTHONPATH": "/src",
        "PYTHONDONTWRITEBYTECODE": "1",
        "LANG": "C.UTF-8",
    }
    return subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", setup, "setup",
         "/usr/bin/python3", "-c", script],
        env=env, capture_output=True, text=True, check=False, timeout=300,
    )  # fmt: skip


def test_helper_inside_a_chroot_never_reaches_the_hosts_store(chroot: Path) -> None:
    """From inside a chroot the helper writes only the chroot's copies, refuses the host's /."""
    watched = ("/etc/ssl/certs", "/usr/local/share/ca-certificates")
    host_before = {d: osroot.snapshot_tree(Path(d)) for d in watched}
    chroot_before = osroot.snapshot_tree(chroot / "etc/ssl/certs")
    done = in_chroot(chroot, _IN_CHROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    found = json.loads(done.stdout.splitlines()[-1])
    assert found["write"] == [0, ""]
    assert found["copy_has_probe"]
    assert found["local_copy_has_probe"]
    code, out, err = found["escape"]
    assert (code, out) == (REFUSED, ""), found["escape"]
    assert "refusing" in err
    assert {d: osroot.snapshot_tree(Path(d)) for d in watched} == host_before
    assert osroot.snapshot_tree(chroot / "etc/ssl/certs") == chroot_before
