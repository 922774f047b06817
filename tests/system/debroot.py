"""A clean Debian root (12 or 13) from debootstrap, and a real systemd booted in it as PID 1.

systemd-nspawn fails on these machines ("Parent died too early"), but systemd boots as PID 1 in a
new PID and mount namespace: bind the root on itself, mount /proc, rbind /sys and /dev, put
tmpfs on /run and /tmp, and exec it through chroot. SIGKILL from outside ends the namespace and
with it every mount, so nothing is left on the host.

The debootstrap root is cached (``$TRUSTINSTALLER_TEST_CACHE``, /var/cache/trustinstaller-test)
and built from nothing when missing; each test run works on a copy. The release is
``$TRUSTINSTALLER_SYSTEM_RELEASE`` (bookworm unless set; make test-system runs each).
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

CACHE = Path(os.environ.get("TRUSTINSTALLER_TEST_CACHE", "/var/cache/trustinstaller-test"))
SUITE = os.environ.get("TRUSTINSTALLER_SYSTEM_RELEASE") or "bookworm"
INCLUDE = "systemd,systemd-sysv,dbus"
RELEASES = ("bookworm", "trixie")
# Units that wait for consoles this root has not got, and (systemd 257, Debian 13) the kernel
# module loader, which fails in a namespace that shares the host's kernel: masked so that boot
# reaches "running".
MASKED = ("getty.target", "serial-getty@ttyS0.service", "console-getty.service",
          "systemd-modules-load.service")  # fmt: skip


def apt_mirror(sources: Sequence[str] = ()) -> str:
    """The Debian mirror this machine's apt uses for the main archive (never a security one).

    Any suite of it will do: the same archive serves every release, so a Debian 12 machine's
    sources give the mirror for a Debian 13 root too.
    """
    files = list(sources) or sorted(
        [
            *glob.glob("/etc/apt/sources.list.d/*.sources"),
            "/etc/apt/sources.list",
            *glob.glob("/etc/apt/sources.list.d/*.list"),
        ]
    )
    for name in files:
        try:
            text = Path(name).read_text()
        except OSError:
            continue
        if name.endswith(".sources"):
            for stanza in text.split("\n\n"):
                fields: dict[str, str] = {}
                for line in stanza.splitlines():
                    if ":" in line and not line.startswith(("#", " ")):
                        k, v = line.split(":", 1)
                        fields[k.strip().lower()] = v.strip()
                if _is_main(fields.get("types", ""), fields.get("uris", ""),
                            fields.get("suites", ""), fields.get("components", "")):  # fmt: skip
                    return fields["uris"].split()[0]
        else:
            for line in text.splitlines():
                parts = [p for p in line.split() if not p.startswith("[")]
                if len(parts) >= 4 and _is_main(parts[0], parts[1], parts[2], " ".join(parts[3:])):
                    return parts[1]
    raise RuntimeError(f"no Debian main archive in apt's sources ({', '.join(files)})")


def _is_main(types: str, uris: str, suites: str, components: str) -> bool:
    return (
        "deb" in types.split()
        and any(s.split("-")[0] in RELEASES for s in suites.split())
        and "main" in components.split()
        and "security" not in uris
        and uris.startswith(("http://", "https://"))
    )


def base_root() -> Path:
    """The cached debootstrap root; built with debootstrap when missing."""
    base = CACHE / f"{SUITE}-minbase"
    if (base / ".trustinstaller-complete").exists():
        return base
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = CACHE / f"{SUITE}-minbase.partial"
    remove_tree(tmp)
    remove_tree(base)
    _run(["debootstrap", "--variant=minbase", f"--include={INCLUDE}", SUITE, str(tmp),
          apt_mirror()], timeout=1800)  # fmt: skip
    (tmp / ".trustinstaller-complete").write_text(f"{SUITE} {INCLUDE}\n")
    tmp.rename(base)
    return base


def clone(base: Path, dest: Path) -> Path:
    """A private copy of ``base`` (links, owners and modes kept)."""
    _run(["cp", "-a", "--reflink=auto", str(base), str(dest)], timeout=600)
    return dest


def remove_tree(path: Path) -> None:
    """Delete a root, refusing while anything is still mounted under it."""
    if not path.exists():
        return
    resolved = str(path.resolve())
    with open("/proc/self/mounts") as f:
        mounted = [line.split()[1] for line in f if line.split()[1].startswith(resolved + "/")]
    if mounted:
        raise RuntimeError(f"refusing to delete {path}: still mounted: {mounted[:3]}")
    _run(["rm", "-rf", "--one-file-system", resolved], timeout=600)


@contextlib.contextmanager
def package_root(deb: Path, work: Path, *packages: str) -> Iterator[Path]:
    """A copy of the cached root in ``work``, with ``deb`` and ``packages`` installed by apt.

    apt resolves the mirror with the host's resolv.conf and keeps what it downloads in the cache
    for the next run. The root is deleted when the block ends.
    """
    path = clone(base_root(), work / "root")
    try:
        (path / "etc/resolv.conf").write_bytes(Path("/etc/resolv.conf").read_bytes())
        (path / "root" / deb.name).write_bytes(deb.read_bytes())
        archives = CACHE / f"apt-archives-{SUITE}"
        (archives / "partial").mkdir(parents=True, exist_ok=True)
        binds = [(archives, "/var/cache/apt/archives")]
        env = {"DEBIAN_FRONTEND": "noninteractive"}
        chroot_run(path, ["apt-get", "update", "-qq"], binds=binds, env=env)
        chroot_run(path, ["apt-get", "install", "-y", "-qq", "--no-install-recommends",
                          f"/root/{deb.name}", *packages], binds=binds, env=env)  # fmt: skip
        yield path
    finally:
        remove_tree(path)


def chroot_run(
    root: Path,
    argv: Sequence[str],
    *,
    binds: Sequence[tuple[Path, str]] = (),
    env: dict[str, str] | None = None,
    check: bool = True,
    timeout: float = 900,
) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` chrooted in ``root`` with /proc, /dev and /sys, in a private mount namespace."""
    mounts = ['mount -t proc proc "$R/proc"', 'mount --rbind /dev "$R/dev"',
              'mount --rbind /sys "$R/sys"']  # fmt: skip
    for i, (_src, target) in enumerate(binds):
        mounts.append(f'mkdir -p "$R{target}" && mount --bind "$B{i}" "$R{target}"')
    script = "set -e; " + "; ".join(mounts) + '; exec chroot "$R" "$@"'
    child_env = {
        "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "LANG": "C.UTF-8",
        "HOME": "/root",
        "R": str(root),
        **{f"B{i}": str(src) for i, (src, _) in enumerate(binds)},
        **(env or {}),
    }
    return _run(["unshare", "--mount", "--propagation", "private", "--", "bash", "-c", script,
                 "bash", *argv], env=child_env, check=check, timeout=timeout)  # fmt: skip


def mask_consoles(root: Path) -> None:
    """Mask the getty units, as `systemctl mask` would, before the first boot."""
    etc = root / "etc/systemd/system"
    etc.mkdir(parents=True, exist_ok=True)
    for unit in MASKED:
        link = etc / unit
        if not link.is_symlink():
            link.symlink_to("/dev/null")


class Booted:
    """systemd running as PID 1 of its own PID and mount namespace, in ``root``."""

    def __init__(self, root: Path, log: Path) -> None:
        self.root = root
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None
        self.pid = 0

    def __enter__(self) -> Booted:
        """Boot (see start); a boot that fails is killed before the error goes on."""
        try:
            self.start()
        except BaseException:
            self.kill()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()

    def start(self) -> None:
        """Boot, and wait until `systemctl is-system-running` says running."""
        script = (
            "set -e; "
            'mount --bind "$R" "$R"; '
            'mount -t proc proc "$R/proc"; '
            'mount --rbind /sys "$R/sys"; '
            'mount --rbind /dev "$R/dev"; '
            # As systemd mounts /run at boot: root's alone (mode 0755), unlike a plain tmpfs.
            'mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs "$R/run"; '
            'mount -t tmpfs tmpfs "$R/tmp"; '
            'exec chroot "$R" /lib/systemd/systemd --system'
        )
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                ["unshare", "--pid", "--fork", "--mount", "--uts", "--ipc",
                 "--propagation", "private", "--", "bash", "-c", script],
                env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "R": str(self.root)},
                stdin=subprocess.DEVNULL, stdout=out, stderr=out,
            )  # fmt: skip
        self.pid = self._child_pid()
        state = self.wait_for(
            lambda: self.systemctl("is-system-running", check=False).stdout.strip(),
            {"running", "degraded"},
        )
        if state != "running":
            failed = self.systemctl("--failed", "--no-pager", check=False).stdout
            raise AssertionError(f"boot ended {state}:\n{failed}")

    def _child_pid(self) -> int:
        assert self.proc is not None
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                pids = children.read_text().split()
                if pids and Path(f"/proc/{pids[0]}/exe").resolve().name == "systemd":
                    return int(pids[0])
            if self.proc.poll() is not None:
                raise AssertionError(f"systemd did not start; see {self.log}")
            time.sleep(0.1)
        raise AssertionError(f"systemd did not start; see {self.log}")

    def run(
        self, *argv: str, check: bool = True, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run a command inside, in systemd's namespaces and root (nsenter)."""
        return _run(["nsenter", "-t", str(self.pid), "-m", "-p", "-r", "-w", "--", *argv],
                    check=check, input=input, timeout=600,
                    env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8",
                         "HOME": "/root"})  # fmt: skip

    def systemctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """``systemctl ARGS`` inside."""
        return self.run("systemctl", *args, check=check)

    def show(self, unit: str, *props: str) -> dict[str, str]:
        """``systemctl show -p ...`` as a dict."""
        out = self.systemctl("show", unit, *(f"--property={p}" for p in props)).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def wait_for(self, probe: object, wanted: set[str], limit: float = 180) -> str:
        """Poll ``probe()`` until it returns one of ``wanted`` (a hang guard, not a timing test)."""
        assert callable(probe)
        deadline = time.monotonic() + limit
        last = ""
        while time.monotonic() < deadline:
            last = str(probe())
            if last in wanted:
                return last
            time.sleep(0.2)
        raise AssertionError(f"still {last!r}, never one of {sorted(wanted)}")

    def kill(self) -> None:
        """SIGKILL systemd; the namespace, its processes and its mounts go with it."""
        if self.pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
        if self.proc is not None:
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _run(
    argv: Sequence[str],
    *,
    timeout: float,
    check: bool = True,
    env: dict[str, str] | None = None,
    input: str | None = None,
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        list(argv), capture_output=True, text=True, timeout=timeout, env=env, input=input,
        stdin=None if input is not None else subprocess.DEVNULL, check=False,
    )  # fmt: skip
    if check and done.returncode != 0:
        raise AssertionError(
            f"{' '.join(argv[:8])} exited {done.returncode}\n"
            f"stdout: {done.stdout[-3000:]}\nstderr: {done.stderr[-3000:]}"
        )
    return done


def which(name: str) -> str | None:
    """``shutil.which`` with the sbin directories on PATH."""
    return shutil.which(name, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")
