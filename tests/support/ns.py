"""A private mount namespace whose trust store is a throwaway copy of the host's.

Inside it, the real default paths (/etc/ssl, /usr/local/share/ca-certificates,
/etc/ca-certificates, the Java hook's dpkg state, and /etc/chromium and /etc/opt, which hold
Chromium's and Google Chrome's managed policies) are bind mounts of copies
under a scratch directory, and /run and /etc/firefox (Firefox's policies) are
tmpfs. Nothing done inside reaches the host's own trust store. A holder process
(``sleep infinity``) keeps the namespace alive; commands enter it with ``nsenter``.

It must hold wherever it runs, a chroot included. ``nsenter --mount`` alone resets the new
process's root to the namespace's own ``/``: from inside a chroot that is the host's ``/``, and
a command meant for the copies would rewrite the host's store. So commands enter with ``--root``
(the holder's root, which must be ours), and a guard run inside, before the command, refuses
unless every store path it sees is the private copy (same device and inode) and its ``/`` is
the holder's.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

# What the Debian store and its Java hook write: each gets a private copy.
PRIVATE_DIRS = (
    "/etc/ssl",
    "/usr/local/share/ca-certificates",
    "/etc/ca-certificates",
    "/var/lib/ca-certificates-java",
    "/var/lib/dpkg",
    # Chromium's and Google Chrome's managed-policy directories live under these.
    "/etc/chromium",
    "/etc/opt",
)

_SETUP = r"""
set -eu
scratch=$1
shift
# Chromium's policy root, so that a host without Chromium gains at most an empty directory.
[ -d /etc/chromium ] || mkdir -m 0755 /etc/chromium
for d in "$@"; do
    [ -d "$d" ] || continue
    copy="$scratch/copies$d"
    mkdir -p "$(dirname "$copy")"
    cp -a "$d" "$copy"
    mount --bind "$copy" "$d"
    # Refuse to go on unless the bind really took, as seen from in here: never write to the
    # host's store. -ef compares device and inode: the path must now be the copy itself.
    [ "$d" -ef "$copy" ] || { echo "ns-setup: $d is not bound to its copy" >&2; exit 1; }
    echo "$d" >> "$scratch/bound"
done
mount -t tmpfs -o mode=0755 tmpfs /run
# Firefox's system policies, which the Firefox store writes: an empty tmpfs. The host gains at
# most the empty mountpoint, which Firefox reads nothing from.
[ -d /etc/firefox ] || mkdir -m 0755 /etc/firefox
mount -t tmpfs -o mode=0755 tmpfs /etc/firefox
mountpoint -q /etc/firefox
: > "$scratch/ready"
exec sleep infinity
"""

# Exit status of the guard when it refuses; the command itself never ran.
REFUSED = 125

# Runs inside the namespace, as the entered process, just before exec'ing the command.
_GUARD = r"""
holder=$1
scratch=$2
shift 2
if ! [ / -ef "/proc/$holder/root" ]; then
    echo "ns-guard: refusing: this process's root is not the namespace's root" >&2
    exit 125
fi
while [ "$1" != "--" ]; do
    if ! [ "$1" -ef "$scratch/copies$1" ]; then
        echo "ns-guard: refusing: $1 is not the namespace's private copy" >&2
        exit 125
    fi
    shift
done
shift
exec "$@"
"""


class PrivateNamespace:
    """A mount namespace with private copies of the trust store; a context manager."""

    def __init__(self, scratch: Path) -> None:
        self.scratch = scratch.absolute()
        self.holder: subprocess.Popen[bytes] | None = None
        self.bound: tuple[str, ...] = ()

    def __enter__(self) -> PrivateNamespace:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def pid(self) -> int:
        """The holder's pid: the namespace to enter."""
        assert self.holder is not None, "namespace not started"
        return self.holder.pid

    def start(self) -> None:
        """Create the namespace and wait until its mounts are in place."""
        self.scratch.mkdir(parents=True, exist_ok=True)
        ready = self.scratch / "ready"
        ready.unlink(missing_ok=True)
        (self.scratch / "bound").unlink(missing_ok=True)
        self.holder = subprocess.Popen(
            ["unshare", "--mount", "--propagation", "private", "--",
             "sh", "-c", _SETUP, "ns-setup", str(self.scratch), *PRIVATE_DIRS],
            stdin=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while not ready.exists():
            if self.holder.poll() is not None:
                raise RuntimeError(f"namespace setup failed (exit {self.holder.returncode})")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("namespace setup timed out")
            time.sleep(0.02)
        self.bound = tuple((self.scratch / "bound").read_text().splitlines())
        # The holder was forked from us, so this cannot differ unless something chroot()ed in
        # between; still, every command is entered with the holder's root, so check it here.
        if not os.path.samestat(os.stat("/proc/self/root"), os.stat(f"/proc/{self.pid}/root")):
            self.stop()
            raise RuntimeError("namespace holder has another root than this process; refusing")
        if "/etc/ssl" not in self.bound:
            self.stop()
            raise RuntimeError("namespace has no private /etc/ssl; refusing")

    def stop(self) -> None:
        """End the holder; the namespace goes when the last process in it exits."""
        if self.holder is not None and self.holder.poll() is None:
            self.holder.kill()
            self.holder.wait()
        copies = self.scratch / "copies"
        if copies.exists():
            shutil.rmtree(copies, ignore_errors=True)

    def argv(self, argv: Sequence[str]) -> list[str]:
        """``argv`` wrapped to run inside the namespace, behind the guard."""
        return [
            *self.enter(),
            "sh", "-c", _GUARD, "ns-guard", str(self.pid), str(self.scratch), *self.bound, "--",
            *argv,
        ]  # fmt: skip

    def enter(self) -> list[str]:
        """The nsenter prefix: the holder's mount namespace, root and working directory."""
        return ["nsenter", f"--target={self.pid}", "--mount", "--root", "--wd", "--"]

    def run(
        self, argv: Sequence[str], *, env: Mapping[str, str] | None = None, **kw: Any
    ) -> subprocess.CompletedProcess[str]:
        """Run a command inside the namespace and wait for it."""
        kw.setdefault("capture_output", True)
        kw.setdefault("text", True)
        kw.setdefault("stdin", subprocess.DEVNULL)
        kw.setdefault("timeout", 300)
        return subprocess.run(self.argv(argv), env=_env(env), check=False, **kw)

    def popen(
        self, argv: Sequence[str], *, env: Mapping[str, str] | None = None, **kw: Any
    ) -> subprocess.Popen[bytes]:
        """Start a command inside the namespace."""
        kw.setdefault("stdin", subprocess.DEVNULL)
        return subprocess.Popen(self.argv(argv), env=_env(env), **kw)

    def path(self, host_path: str) -> Path:
        """Where the namespace's private copy of ``host_path`` lives, seen from outside."""
        return self.scratch / "copies" / host_path.lstrip("/")


def _env(extra: Mapping[str, str] | None) -> dict[str, str]:
    env = dict(os.environ)
    parts = env.get("PATH", "").split(":")
    env["PATH"] = ":".join([*parts, *(d for d in ("/usr/sbin", "/sbin") if d not in parts)])
    env.update(extra or {})
    return env
