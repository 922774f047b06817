"""A hostile browser user, for real: its tools, and an arena in which it attacks an install.

The arena is a private mount namespace (tests/support/ns.py) in which:
- /root is a throwaway directory (bind-mounted, checked to be a mountpoint) holding root's own
  NSS database, so nothing here can reach the host's /root;
- the browser user exists only there (tests/support/browseruser.py), with a home under /tmp;
- the OS store is the namespace's copy of /etc/ssl, with no update hooks (the Java hook is
  slow and plays no part in these attacks);
- ``trustinstaller apply`` runs as root with a fresh state directory per try.

The user's tools are small C programs built with gcc in the test: ``swap`` exchanges two names
with renameat2(RENAME_EXCHANGE) in a loop, ``hunt`` SIGSTOPs the user's own certutil, and
``evil.so`` is a shared library whose constructor records its uids and, only when its euid is 0,
creates a marker file the user could never create itself.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.browseruser import BrowserUser, add_browser_user, free_uid
from tests.support.builders import manifest, unique
from tests.support.certs import make_ca
from tests.support.moto import MotoServer
from tests.support.ns import PrivateNamespace

ROOT_PKI = "/root/.local/share/pki"
ROOT_DB = f"{ROOT_PKI}/nssdb"

SWAP_C = r"""
#define _GNU_SOURCE
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static volatile sig_atomic_t stop;
static void on_term(int sig) { (void)sig; stop = 1; }

/* swap A B SECONDS PAUSE_US: exchange A and B until SIGTERM or SECONDS pass, pausing PAUSE_US
   microseconds between exchanges (so root's install still gets a core); end as they began. */
int main(int argc, char **argv) {
    if (argc != 5) return 2;
    struct timespec pause = {0, atol(argv[4]) * 1000L};
    signal(SIGTERM, on_term);
    double limit = atof(argv[3]);
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    unsigned long n = 0;
    while (!stop) {
        if (renameat2(AT_FDCWD, argv[1], AT_FDCWD, argv[2], RENAME_EXCHANGE) != 0) {
            perror("renameat2");
            return 1;
        }
        n++;
        if (pause.tv_nsec) nanosleep(&pause, NULL);
        if ((n & 255) == 0) {
            clock_gettime(CLOCK_MONOTONIC, &t);
            if ((t.tv_sec - t0.tv_sec) + (t.tv_nsec - t0.tv_nsec) / 1e9 > limit) break;
        }
    }
    if (n & 1) renameat2(AT_FDCWD, argv[1], AT_FDCWD, argv[2], RENAME_EXCHANGE);
    printf("%lu\n", n);
    return 0;
}
"""

HUNT_C = r"""
#include <dirent.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

/* hunt NAME WINDOW TIMEOUT: SIGSTOP every process called NAME that we own; after the first,
   keep stopping new ones for WINDOW seconds; print their pids. Exit 1 if none by TIMEOUT. */
int main(int argc, char **argv) {
    if (argc != 4) return 2;
    const char *name = argv[1];
    double window = atof(argv[2]), deadline = now() + atof(argv[3]), first = 0;
    uid_t me = getuid();
    int stopped[64], n = 0;
    for (;;) {
        double t = now();
        if (n && t > first + window) break;
        if (!n && t > deadline) return 1;
        DIR *proc = opendir("/proc");
        if (!proc) return 3;
        struct dirent *e;
        while ((e = readdir(proc))) {
            int pid = atoi(e->d_name);
            if (pid <= 0) continue;
            char path[64], comm[64] = "";
            struct stat st;
            snprintf(path, sizeof path, "/proc/%d", pid);
            if (stat(path, &st) != 0 || st.st_uid != me) continue;
            snprintf(path, sizeof path, "/proc/%d/comm", pid);
            FILE *f = fopen(path, "r");
            if (!f) continue;
            if (!fgets(comm, sizeof comm, f)) comm[0] = 0;
            fclose(f);
            comm[strcspn(comm, "\n")] = 0;
            if (strcmp(comm, name) != 0) continue;
            int seen = 0;
            for (int i = 0; i < n; i++) seen |= stopped[i] == pid;
            if (seen || n == 64) continue;
            if (kill(pid, SIGSTOP) == 0) {
                if (!n) first = now();
                stopped[n++] = pid;
            }
        }
        closedir(proc);
    }
    for (int i = 0; i < n; i++) printf("%d\n", stopped[i]);
    return 0;
}
"""

EVIL_C = r"""
#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>

/* Runs when anything loads this library: NSS does, for a module named in pkcs11.txt. */
__attribute__((constructor)) static void evil(void) {
    char line[128];
    int n = snprintf(line, sizeof line, "pid=%d uid=%d euid=%d\n",
                     (int)getpid(), (int)getuid(), (int)geteuid());
    int fd = open(EVIL_LOG, O_WRONLY | O_APPEND | O_CLOEXEC);
    if (fd >= 0) {
        if (write(fd, line, (size_t)n) < 0) { /* nothing to do */ }
        close(fd);
    }
    if (geteuid() == 0) {
        fd = open(EVIL_MARKER, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
        if (fd >= 0) close(fd);
    }
}
"""

# The module entry that makes NSS load the library: pkcs11.txt entries are separated by a blank.
EVIL_MODULE = "\nlibrary={lib}\nname=trustinstaller test module\n"


def gcc(source: str, out: Path, *flags: str) -> Path:
    """Compile ``source`` (C) to ``out`` with gcc; fail loudly if gcc is missing."""
    src = out.with_suffix(".c")
    src.write_text(source)
    done = subprocess.run(
        ["gcc", "-O2", "-Wall", "-Werror", *flags, "-o", str(out), str(src)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 0, f"gcc failed (make deps installs gcc):\n{done.stderr}"
    return out


def tree_state(root: Path) -> Tree:
    """Every entry at and under ``root`` (links not followed): kind, owner, group, and content."""
    out: Tree = {}

    def one(p: Path) -> None:
        st = p.lstat()
        rel = "." if p == root else str(p.relative_to(root))
        if p.is_symlink():
            out[rel] = ("link", st.st_uid, st.st_gid, os.readlink(p))
        elif p.is_dir():
            out[rel] = ("dir", st.st_uid, st.st_gid, oct(st.st_mode & 0o7777))
        else:
            digest = hashlib.sha256(p.read_bytes()).hexdigest()
            out[rel] = ("file", st.st_uid, st.st_gid, f"{oct(st.st_mode & 0o7777)} {digest}")

    if not root.exists() and not root.is_symlink():
        return out
    one(root)
    if root.is_dir() and not root.is_symlink():
        for dirpath, dirnames, filenames in os.walk(root):
            for name in sorted(dirnames + filenames):
                one(Path(dirpath, name))
    return out


Tree = dict[str, tuple[str, int, int, str]]


def diff(before: Tree, after: Tree) -> list[str]:
    """What changed between two tree states, one line per entry."""
    lines = []
    for k in sorted(set(before) | set(after)):
        if before.get(k) != after.get(k):
            lines.append(f"{k}: {before.get(k)} -> {after.get(k)}")
    return lines


def nicknames(db: Path) -> set[str]:
    """The nicknames in the NSS database ``db``, read from a copy so the original is not opened."""
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "db"
        shutil.copytree(db, copy)
        done = subprocess.run(
            ["certutil", "-L", "-d", f"sql:{copy}"],
            capture_output=True, text=True, check=True, stdin=subprocess.DEVNULL, timeout=30,
        )  # fmt: skip
    names = set()
    for line in done.stdout.splitlines()[4:]:
        nick, _, trust = line.rstrip().rpartition(" ")
        if trust.count(",") == 2 and nick.strip():
            names.add(nick.strip())
    return names


@dataclass
class Try:
    """One install: its exit status and output, and its CA's nickname."""

    returncode: int
    output: str
    nickname: str


@dataclass
class Arena:
    """The namespace, the fake /root, the browser user, another user, and the user's tools."""

    ns: PrivateNamespace
    scratch: Path
    user: BrowserUser
    other_uid: int
    other_dir: Path
    tools: Path
    moto: MotoServer
    fake_root: Path
    root_baseline: Path
    markers: Path
    keep: tuple[str, ...] = ()
    tries: int = 0
    shims: Path | None = None
    extra_config: str = ""
    baseline_state: Tree = field(default_factory=dict)

    # -- where things are --------------------------------------------------------

    @property
    def home(self) -> Path:
        """The browser user's home (the same path inside and outside the namespace)."""
        return self.user.home

    @property
    def root_pki(self) -> Path:
        """Root's pki directory, seen from outside the namespace."""
        return self.fake_root / ".local/share/pki"

    @property
    def marker(self) -> Path:
        """Created by evil.so only when it runs with euid 0."""
        return self.markers / "library-ran-as-root"

    @property
    def evil_log(self) -> Path:
        """Where evil.so records every load: pid, uid and euid."""
        return self.home / "evil.log"

    # -- resetting -----------------------------------------------------------------

    def reset(self) -> None:
        """An empty home (plus the user's tools), root's database as at the start, no marker."""
        for entry in self.home.iterdir():
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
        shutil.copy(self.tools / "evil.so", self.home / "evil.so")
        self.evil_log.touch()
        for p in (self.home / "evil.so", self.evil_log):
            os.chown(p, self.user.uid, self.user.uid)
        self.evil_log.chmod(0o666)
        self.restore_root()
        self.marker.unlink(missing_ok=True)
        self.other_dir.chmod(0o755)
        for entry in self.other_dir.iterdir():
            shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
        (self.other_dir / "pki").mkdir()
        os.chown(self.other_dir / "pki", self.other_uid, self.other_uid)

    def restore_root(self) -> None:
        """Put root's throwaway home back as it was at the start, byte for byte."""
        if tree_state(self.fake_root) == self.baseline_state:
            return
        for entry in self.fake_root.iterdir():
            if entry.name in self.keep:
                continue  # a read-only bind of the interpreter inside the namespace: leave it
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
        shutil.copytree(self.root_baseline, self.fake_root, symlinks=True, dirs_exist_ok=True)
        assert tree_state(self.fake_root) == self.baseline_state

    def root_state(self) -> Tree:
        """Root's throwaway home, every entry."""
        return tree_state(self.fake_root)

    # -- the user's doing ---------------------------------------------------------

    def as_user(self, argv: list[str]) -> list[str]:
        """``argv`` run inside the namespace as the browser user."""
        return self.ns.argv(self.user.argv(argv))

    def user_run(self, script: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Run a sh script as the browser user inside the namespace; it must succeed."""
        done = subprocess.run(
            self.as_user(["sh", "-euc", script]), capture_output=True, text=True,
            stdin=subprocess.DEVNULL, timeout=timeout, check=False,
        )  # fmt: skip
        assert done.returncode == 0, f"as the user: {script}\n{done.stdout}{done.stderr}"
        return done

    def user_popen(self, argv: list[str]) -> subprocess.Popen[str]:
        """Start ``argv`` as the browser user inside the namespace."""
        return subprocess.Popen(
            self.as_user(argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            stdin=subprocess.DEVNULL,
        )  # fmt: skip

    def user_db(self, directory: str, *, evil: bool) -> None:
        """The user makes an NSS database at ``directory``; its pkcs11.txt may name evil.so."""
        script = f'mkdir -p "{directory}" && certutil -N -d "sql:{directory}" --empty-password'
        if evil:
            module = EVIL_MODULE.format(lib=self.home / "evil.so")
            script += f" && printf '%s' '{module}' >> \"{directory}/pkcs11.txt\""
        self.user_run(script)

    # -- root's doing ---------------------------------------------------------------

    def config(self, *, runtime_dir: str | None = None) -> tuple[Path, str]:
        """A configuration with a state directory no earlier try used; and that directory."""
        self.tries += 1
        state = f"/run/ti-try-{self.tries}"
        path = self.scratch / f"config-{self.tries}.toml"
        path.write_text(
            f'state_dir = "{state}"\n'
            f'socket = "{state}/trustinstaller.sock"\n'
            f'runtime_dir = "{runtime_dir or state + "-env"}"\n'
            f'endpoint_url = "{self.moto.endpoint}"\n'
            f'browser_users = ["{self.user.name}"]\n'
            "certutil_timeout = 20\n" + self.extra_config
        )
        return path, state

    def new_manifest(self) -> tuple[Path, str]:
        """A manifest naming a fresh CA (so each try really adds one), and its nickname."""
        ca = make_ca(f"privsep attack {self.tries}")
        arn = self.moto.put_secret(unique("privsep"), ca.pem)
        from cryptography.hazmat.primitives import hashes

        nick = f"trustinstaller-{ca.cert.fingerprint(hashes.SHA256()).hex()}"
        path = self.scratch / f"manifest-{self.tries}-{unique()}.json"
        path.write_bytes(manifest(session=[arn]))
        return path, nick

    def env(self) -> dict[str, str]:
        """The environment for root's commands: shims first on PATH when a test set them."""
        env = dict(os.environ)
        path = env.get("PATH", "/usr/bin:/bin") + ":/usr/sbin:/sbin"
        env["PATH"] = f"{self.shims}:{path}" if self.shims else path
        return env

    def apply(self, *, runtime_dir: str | None = None) -> Try:
        """Run one install to the end."""
        proc, nick = self.start_apply(runtime_dir=runtime_dir)
        out, _ = proc.communicate(timeout=180)
        # The agent's own exit codes are 0 to 7; anything else means it never ran.
        assert proc.returncode in range(8), f"the agent did not run (exit {proc.returncode}): {out}"
        return Try(proc.returncode, out, nick)

    def start_apply(
        self, *, runtime_dir: str | None = None, prefix: list[str] | None = None
    ) -> tuple[subprocess.Popen[str], str]:
        """Start one install (stdout and stderr together), with an optional wrapper like strace."""
        config, _ = self.config(runtime_dir=runtime_dir)
        manifest_path, nick = self.new_manifest()
        argv = self.ns.argv([*(prefix or []), sys.executable, "-m", "trustinstaller",
                             "--config", str(config), "apply", str(manifest_path)])  # fmt: skip
        proc = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            stdin=subprocess.DEVNULL, env=self.env(),
        )  # fmt: skip
        return proc, nick


def stop(proc: subprocess.Popen[str], timeout: float = 10) -> str:
    """SIGTERM a process we started and return its stdout."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=timeout)
    return out


# The interpreter running the tests may live under the real /root (pyenv): that one directory
# is bound read-only into the throwaway /root, so the agent still starts and cannot write there.
SETUP_ROOT = r"""
set -eu
fake=$1
shift
for keep in "$@"; do
    mkdir "$fake/$keep"
    mount --bind "/root/$keep" "$fake/$keep"
    mount -o remount,bind,ro "$fake/$keep"
done
mount --rbind "$fake" /root
mountpoint -q /root
"""


def interpreter_dirs() -> list[str]:
    """The top-level directories of /root that the running interpreter needs (e.g. .pyenv)."""
    needed = {os.path.realpath(sys.executable), os.path.realpath(sys.base_prefix)}
    return sorted({Path(p).relative_to("/root").parts[0] for p in needed if p.startswith("/root/")})


def make_arena(scratch: Path, moto: MotoServer) -> tuple[Arena, PrivateNamespace]:
    """Start the namespace and lay out everything; the caller stops the namespace."""
    ns = PrivateNamespace(scratch / "ns")
    ns.start()
    try:
        fake_root = scratch / "root"
        fake_root.mkdir(mode=0o700)
        canary = fake_root / f".canary-{unique()}"
        canary.touch()
        keep = interpreter_dirs()
        done = ns.run(["sh", "-c", SETUP_ROOT, "setup-root", str(fake_root), *keep])
        if done.returncode != 0:
            raise RuntimeError(f"bind over /root in the namespace failed: {done.stderr}")
        # Refuse to go on unless /root inside is the throwaway one, and outside is untouched.
        seen = ns.run(["sh", "-c", f'mountpoint -q /root && test -e "/root/{canary.name}"'])
        if seen.returncode != 0 or Path("/root", canary.name).exists():
            raise RuntimeError("/root in the namespace is not the throwaway directory; stopping")
        canary.unlink()
        for k in keep:
            # Bound read-only inside the namespace; outside it is just an empty directory.
            (fake_root / k).chmod(0o755)
        # Root's own database, as Chromium run as root would have made it.
        db = fake_root / ".local/share/pki/nssdb"
        db.mkdir(parents=True, mode=0o700)
        for d in (fake_root / ".local", fake_root / ".local/share", fake_root / ".local/share/pki"):
            d.chmod(0o700)
        subprocess.run(["certutil", "-N", "-d", f"sql:{db}", "--empty-password"],
                       check=True, stdin=subprocess.DEVNULL, capture_output=True)  # fmt: skip
        baseline = scratch / "root-baseline"
        shutil.copytree(fake_root, baseline, symlinks=True)
        # The namespace's copy of the update hooks: none (the Java hook is slow and not at issue).
        hooks = ns.path("/etc/ca-certificates/update.d")
        assert str(hooks).startswith(str(scratch)), hooks
        if hooks.is_dir():
            for hook in hooks.iterdir():
                hook.unlink()
        user = add_browser_user(ns)
        other_uid = free_uid(user.uid + 1)
        other_dir = Path(tempfile.mkdtemp(prefix="ti-other-user-"))
        os.chown(other_dir, other_uid, other_uid)
        tools = Path(tempfile.mkdtemp(prefix="ti-attack-tools-"))
        tools.chmod(0o755)
        markers = scratch / "markers"
        markers.mkdir(mode=0o700)
        arena = Arena(ns, scratch, user, other_uid, other_dir, tools, moto, fake_root, baseline,
                      markers)  # fmt: skip
        gcc(SWAP_C, tools / "swap")
        gcc(HUNT_C, tools / "hunt")
        gcc(
            EVIL_C, tools / "evil.so", "-shared", "-fPIC",
            f'-DEVIL_LOG="{arena.evil_log}"', f'-DEVIL_MARKER="{arena.marker}"',
        )  # fmt: skip
        for t in tools.iterdir():
            t.chmod(0o755)
        arena.keep = tuple(keep)
        arena.baseline_state = tree_state(fake_root)
        return arena, ns
    except BaseException:
        ns.stop()
        raise


def cleanup(arena: Arena) -> None:
    """Remove the directories made outside the namespace's scratch."""
    arena.user.remove_home()
    shutil.rmtree(arena.other_dir, ignore_errors=True)
    shutil.rmtree(arena.tools, ignore_errors=True)
