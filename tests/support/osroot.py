"""A temporary root for the real update-ca-certificates, and byte-for-byte store snapshots.

update-ca-certificates takes --certsconf/--certsdir/--localcertsdir/--etccertsdir/--hooksdir,
so a test can run the real script against a throwaway tree and never touch the host's store.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

from trustinstaller._run import command_env
from trustinstaller.stores.debian import DebianPaths

HOST_CONF = Path("/etc/ca-certificates.conf")
HOST_CERTS_DIR = Path("/usr/share/ca-certificates")


def build_os_root(base: Path) -> DebianPaths:
    """Lay out an OS store under ``base`` with the distribution's CAs and no hooks."""
    paths = DebianPaths(
        local_certs_dir=base / "usr/local/share/ca-certificates",
        etc_certs_dir=base / "etc/ssl/certs",
        certs_dir=HOST_CERTS_DIR,  # read only: links point into it
        certs_conf=base / "etc/ca-certificates.conf",
        hooks_dir=base / "etc/ca-certificates/update.d",
    )
    for d in (paths.local_certs_dir, paths.etc_certs_dir, paths.hooks_dir):
        d.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(HOST_CONF, paths.certs_conf)
    update_ca_certificates(paths, "--fresh")
    return paths


def clone_os_root(template: Path, base: Path) -> DebianPaths:
    """Copy a built root (links kept as links) and return its paths."""
    shutil.copytree(template, base, symlinks=True, dirs_exist_ok=True)
    paths = DebianPaths(
        local_certs_dir=base / "usr/local/share/ca-certificates",
        etc_certs_dir=base / "etc/ssl/certs",
        certs_dir=HOST_CERTS_DIR,
        certs_conf=base / "etc/ca-certificates.conf",
        hooks_dir=base / "etc/ca-certificates/update.d",
    )
    # Links into the template's local dir must point into the clone's instead.
    for link in paths.etc_certs_dir.iterdir():
        if link.is_symlink():
            target = os.readlink(link)
            if target.startswith(str(template)):
                link.unlink()
                link.symlink_to(str(base) + target[len(str(template)) :])
    return paths


def update_ca_certificates(paths: DebianPaths, *extra: str) -> str:
    """Run the real update-ca-certificates on ``paths``; return its output."""
    argv = [
        "update-ca-certificates", *extra,
        "--certsconf", str(paths.certs_conf), "--certsdir", str(paths.certs_dir),
        "--localcertsdir", str(paths.local_certs_dir), "--etccertsdir", str(paths.etc_certs_dir),
        "--hooksdir", str(paths.hooks_dir),
    ]  # fmt: skip
    done = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        check=True,
        env=command_env(),
        stdin=subprocess.DEVNULL,
    )
    return done.stdout + done.stderr


def snapshot_tree(root: Path) -> dict[str, tuple[str, str]]:
    """Every entry under ``root``: links by target, files by SHA-256 and mode."""
    out: dict[str, tuple[str, str]] = {}
    if not root.exists():
        return out
    for dirpath, dirnames, filenames in os.walk(root):
        for name in sorted(dirnames + filenames):
            p = Path(dirpath, name)
            rel = str(p.relative_to(root))
            if p.is_symlink():
                out[rel] = ("link", os.readlink(p))
            elif p.is_dir():
                out[rel] = ("dir", oct(p.stat().st_mode & 0o7777))
            else:
                digest = hashlib.sha256(p.read_bytes()).hexdigest()
                out[rel] = ("file", f"{digest} {oct(p.stat().st_mode & 0o7777)}")
    return out


def snapshot_store(paths: DebianPaths) -> dict[str, dict[str, tuple[str, str]]]:
    """The OS store, byte for byte: the bundle, hash links, and the local directory."""
    return {
        "etc_certs_dir": snapshot_tree(paths.etc_certs_dir),
        "local_certs_dir": snapshot_tree(paths.local_certs_dir),
    }


def nss_listing(db_dir: Path) -> str:
    """``certutil -L`` of a database, or '' when it does not exist."""
    if not (db_dir / "cert9.db").exists():
        return ""
    done = subprocess.run(
        ["certutil", "-L", "-d", f"sql:{db_dir}"],
        capture_output=True, text=True, check=True, stdin=subprocess.DEVNULL, timeout=30,
    )  # fmt: skip
    return done.stdout


# A script for `python -c` inside a namespace: update the OS store the way argv[1] names ("fast"
# or "script") when argv[2] is "install", else roll back that install, whose journal holds a
# Write for each of the files argv[3:] names (default: every file in our directory) and the
# Update; it prints which way the store ran.
OS_STORE_STEP = """
import os, sys
from trustinstaller import _run
from trustinstaller.documents import Write
from trustinstaller.stores.debian import DebianStore, Update
from trustinstaller.stores.debian_fast import FastDebianStore
store = (FastDebianStore if sys.argv[1] == "fast" else DebianStore)(_run.run)
if sys.argv[2] == "install":
    store._update()
else:
    our = store.paths.our_dir
    names = sys.argv[3:] or sorted(os.listdir(our))
    store.rollback([*(Write(str(our), n) for n in names), Update()])
print(f"early_hooks={getattr(store, 'early_hooks', False)}", store.os_update)
"""
