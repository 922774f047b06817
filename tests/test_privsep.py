"""A hostile browser user attacks an install for real (issue 9, attacks 1 to 5), and a uid
recorder shows that no process running as root touches anything under the user's home.

Every attack runs in a private mount namespace (tests/support/attack.py) whose /root is a
throwaway directory holding root's own NSS database, with ``browser_users`` naming a user that
exists only there. The user acts as itself through ``setpriv``: real symlinks, real
renameat2(RENAME_EXCHANGE) swaps, real SIGSTOP/SIGKILL of its own certutil, a real shared
library named in a ``pkcs11.txt``. The assertions are about outcomes only: an install may
succeed or fail cleanly, but root's files never change hands, root's database never changes,
and the user's code never runs as root.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.support import attack, strace_uids
from tests.support.attack import ROOT_DB, ROOT_PKI, Arena
from tests.support.moto import MotoServer
from tests.support.shims import write_shim

pytestmark = pytest.mark.root

RACE_TRIES = 20
# The chown race is the narrowest (a stat, then a chown by path): more tries.
CHOWN_TRIES = 30
# Between two exchanges: the loop flips ~10,000 times a second, fast against certutil's startup,
# yet leaves root's install a core of its own on a 2-core machine.
SWAP_PAUSE_US = 20


@pytest.fixture(scope="module")
def arena(tmp_path_factory: pytest.TempPathFactory, moto: MotoServer) -> Iterator[Arena]:
    """The namespace, the throwaway /root, the browser user and its tools, for the module."""
    for tool in ("gcc", "strace", "setpriv", "certutil", "nsenter"):
        assert shutil.which(tool), f"{tool} missing: run 'make deps' (packaging/install-deps.sh)"
    arena, ns = attack.make_arena(tmp_path_factory.mktemp("privsep"), moto)
    try:
        yield arena
    finally:
        attack.cleanup(arena)
        ns.stop()


@pytest.fixture
def fresh(arena: Arena, tmp_path: Path) -> Iterator[Arena]:
    """The arena with an empty home, root's database as at the start, and no PATH shims."""
    arena.reset()
    arena.shims = None
    yield arena
    arena.shims = None
    arena.restore_root()


# update-ca-certificates fails after 2 s (the NSS work is done by then); the rollback's own
# run (--fresh) passes through to the real one.
FAIL_LATE = 'case "$1" in --fresh) ;; *) sleep 2; exit 1;; esac'


def slow_update(arena: Arena, tmp_path: Path, body: str = "sleep 2") -> None:
    """Make root's update-ca-certificates slow (as its Java hook is in real life): a wide window."""
    write_shim(tmp_path / "shims", "update-ca-certificates", body)
    arena.shims = tmp_path / "shims"


# -- 1 and 3: renameat2 races on ~/.pki -----------------------------------------------------


@dataclass
class RaceTally:
    """What the races did to root, try by try."""

    tries: int = 0
    swaps: list[int] = field(default_factory=list)
    ran_as_root: list[int] = field(default_factory=list)
    root_changed: list[int] = field(default_factory=list)
    given_to_user: list[int] = field(default_factory=list)
    failed_installs: int = 0
    details: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """One line per kind of damage, with the try numbers."""
        return (
            f"{self.tries} tries ({self.failed_installs} installs failed), swaps per try "
            f"{min(self.swaps, default=0)}..{max(self.swaps, default=0)}; "
            f"library ran as root in {len(self.ran_as_root)} ({self.ran_as_root}); "
            f"root's database changed in {len(self.root_changed)} ({self.root_changed}); "
            f"root-owned entries given to the user in {len(self.given_to_user)} "
            f"({self.given_to_user})\n" + "\n".join(self.details[:12])
        )


def race(arena: Arena, layouts: list[tuple[str, str]], tries: int = RACE_TRIES) -> RaceTally:
    """Exchange ~/.pki with ~/.swap in a loop while root runs ``tries`` installs, each in a fresh
    session. Try n takes layout n modulo their number, (what the user's ~/.swap holds, the root
    path ~/.pki starts linked to): 'evil-db' is a database whose pkcs11.txt names evil.so,
    'plain-db' one without, 'empty' nothing.
    """
    tally = RaceTally()
    home = arena.home
    for n in range(tries):
        layout, target = layouts[n % len(layouts)]
        arena.reset()
        if layout == "empty":
            arena.user_run(f'mkdir "{home}/.swap"')
        else:
            arena.user_db(f"{home}/.swap/nssdb", evil=layout == "evil-db")
        arena.user_run(f'ln -s {target} "{home}/.pki"')
        before = arena.root_state()
        argv = [str(arena.tools / "swap"), f"{home}/.pki", f"{home}/.swap", "120",
                str(SWAP_PAUSE_US)]  # fmt: skip
        swapper = arena.user_popen(argv)
        try:
            time.sleep(0.05)  # the loop is running before root starts
            done = arena.apply()
        finally:
            out = attack.stop(swapper)
        tally.tries += 1
        tally.swaps.append(int(out.strip() or 0))
        tally.failed_installs += done.returncode != 0
        uid_lines = arena.evil_log.read_text().splitlines()
        if arena.marker.exists() or any(line.endswith(" euid=0") for line in uid_lines):
            tally.ran_as_root.append(n + 1)
            tally.details.append(f"try {n + 1}: evil.so loads: {uid_lines}")
        after = arena.root_state()
        changes = attack.diff(before, after)
        if changes:
            tally.root_changed.append(n + 1)
            tally.details.append(f"try {n + 1}: root's home changed: {changes}")
        # Anything under root's home that is now the user's: handed over, whether it was there
        # before (root's database files) or root made it during the install.
        stolen = [k for k, v in after.items() if v[1] == arena.user.uid]
        if stolen:
            tally.given_to_user.append(n + 1)
            tally.details.append(f"try {n + 1}: now the user's: {stolen}")
    assert min(tally.swaps, default=0) > 0, f"the swap loop did not run: {tally.swaps}"
    return tally


def test_swapping_pki_never_makes_root_load_the_users_pkcs11_module(fresh: Arena) -> None:
    """With ~/.pki flipped in a loop between root's pki directory and the user's database whose
    pkcs11.txt names the user's library, that library never runs as root and root's database
    never changes, in any of 20 installs."""
    tally = race(fresh, [("evil-db", ROOT_PKI)])
    assert not tally.ran_as_root, tally.summary()
    assert not tally.root_changed, tally.summary()


def test_swapping_pki_never_hands_anything_in_roots_home_to_the_user(fresh: Arena) -> None:
    """With ~/.pki flipped in a loop between a directory of the user's and a symlink into root's
    pki directory, nothing under root's home is owned by the user after any of 30 installs.

    Even tries: the user's database against root's pki directory (root stats the database
    directory, then lstats and chowns each file by path). Odd tries: an empty directory against
    root's database directory (root stats the parent, makes nssdb, then chowns it by path).
    """
    tally = race(fresh, [("plain-db", ROOT_PKI), ("empty", ROOT_DB)], tries=CHOWN_TRIES)
    assert not tally.given_to_user, tally.summary()


# -- 2: the rollback against root's database ------------------------------------------------


def test_stopping_certutil_and_relinking_pki_never_lets_the_rollback_delete_roots_db(
    fresh: Arena,
) -> None:
    """The user SIGSTOPs its own certutil, points ~/.pki at root's pki directory, then SIGKILLs
    certutil so the install rolls back: root's database is still there, byte for byte."""
    staged: list[int] = []  # tries in which the user stopped and killed its certutil
    moved = 0  # of those, how many found ~/.pki made by the install and moved it aside
    damaged: list[str] = []
    home = fresh.home
    for n in range(8):
        fresh.reset()
        before = fresh.root_state()
        hunter = fresh.user_popen([str(fresh.tools / "hunt"), "certutil", "0.3", "30"])
        time.sleep(0.05)
        proc, _ = fresh.start_apply()
        try:
            pids, _ = hunter.communicate(timeout=60)
            if hunter.returncode == 0 and pids.split():
                # Only the user's own certutil was stopped; now the user relinks and kills it.
                relinked = fresh.user_run(
                    f'if [ -d "{home}/.pki" ] && [ ! -L "{home}/.pki" ]; then '
                    f'mv "{home}/.pki" "{home}/.pki-aside"; echo relinked; fi; '
                    f'ln -sfn {ROOT_PKI} "{home}/.pki"; '
                    # One of them may have finished meanwhile (a stopped one never does).
                    f'for p in {" ".join(pids.split())}; do kill -KILL "$p" 2>/dev/null || :; done'
                )
                staged.append(n + 1)
                moved += "relinked" in relinked.stdout
        finally:
            proc.communicate(timeout=180)
            attack.stop(hunter)
        changes = attack.diff(before, fresh.root_state())
        if changes:
            damaged.append(f"try {n + 1} (exit {proc.returncode}): {changes}")
        fresh.restore_root()
        if len(staged) >= 3:
            break
    assert not damaged, (
        f"root's database damaged in {len(damaged)} of {n + 1} tries (certutil stopped and "
        f"killed in {len(staged)}, ~/.pki moved aside in {moved}):\n" + "\n".join(damaged)
    )
    assert staged, "the user never caught its own certutil: the attack did not run"


def test_a_dangling_pki_given_a_target_in_roots_home_never_lets_the_rollback_delete_roots_db(
    fresh: Arena, tmp_path: Path
) -> None:
    """~/.pki is a dangling link; while the install runs, the user gives it a target in root's
    home (before the rollback): root's database is still there, byte for byte."""
    slow_update(fresh, tmp_path, FAIL_LATE)  # the install fails late and rolls back
    home = fresh.home
    damaged: list[str] = []
    staged = 0
    tries = 3
    for n in range(tries):
        fresh.reset()
        fresh.user_run(f'ln -s "{home}/t" "{home}/.pki"')
        before = fresh.root_state()
        # The user waits for the install to reach its NSS work (or 1.5 s), then links ~/t.
        watcher = fresh.user_popen(["sh", "-c",
            f'i=0; while [ ! -e "{home}/.local/share/pki/nssdb/cert9.db" ] && [ $i -lt 150 ]; '
            f'do sleep 0.01; i=$((i+1)); done; ln -s {ROOT_PKI} "{home}/t"; echo linked',
        ])  # fmt: skip
        proc, _ = fresh.start_apply()
        out, _ = proc.communicate(timeout=180)
        seen, _ = watcher.communicate(timeout=30)
        staged += "linked" in seen
        changes = attack.diff(before, fresh.root_state())
        if changes:
            damaged.append(f"try {n + 1} (exit {proc.returncode}): {changes}\n{out[-600:]}")
        fresh.restore_root()
    assert not damaged, f"root's database damaged in {len(damaged)} of {tries} tries:\n" + (
        "\n".join(damaged)
    )
    assert staged == tries


# -- 4: planted links, no race --------------------------------------------------------------

PLANTED = {
    "pki to root's pki directory": {".pki": ROOT_PKI},
    "pki to root's home": {".pki": "/root"},
    "local to root's .local": {".local": "/root/.local"},
    "local/share/pki to root's pki directory": {".local/share/pki": ROOT_PKI},
    "local/share/pki to /etc/ssl": {".local/share/pki": "/etc/ssl"},
    "pki to another user's directory": {".pki": "{other}/pki"},
}


@pytest.mark.parametrize("links", list(PLANTED.values()), ids=list(PLANTED))
def test_planted_links_change_nothing_outside_the_users_home(
    fresh: Arena, links: dict[str, str]
) -> None:
    """A symlink planted in the home never makes root create or change anything in /root,
    /etc/ssl or another user's directory, nor add the CA to root's database."""
    home = fresh.home
    for name, target in links.items():
        target = target.format(other=fresh.other_dir)
        fresh.user_run(f'mkdir -p "$(dirname "{home}/{name}")" && ln -s "{target}" "{home}/{name}"')
    etc_ssl = fresh.ns.path("/etc/ssl")
    assert str(etc_ssl).startswith(str(fresh.scratch))  # the namespace's copy, never the host's

    def etc_ssl_state() -> dict[str, tuple[str, int, int, str]]:
        # certs/ is the OS store's own output: an install rewrites it.
        return {k: v for k, v in attack.tree_state(etc_ssl).items()
                if k != "certs" and not k.startswith("certs/")}  # fmt: skip

    before = (fresh.root_state(), etc_ssl_state(), attack.tree_state(fresh.other_dir))
    done = fresh.apply()
    after = (fresh.root_state(), etc_ssl_state(), attack.tree_state(fresh.other_dir))
    changes = [c for b, a in zip(before, after, strict=True) for c in attack.diff(b, a)]
    if done.nickname in attack.nicknames(fresh.root_pki / "nssdb"):
        changes.insert(0, "root's database lists the CA (certutil -L)")
    assert not changes, f"install exit {done.returncode}; changed:\n" + "\n".join(changes)


# -- 5: the runtime directory ---------------------------------------------------------------

RUNTIME_CASES = {
    "0777 parent, made before": ("0777", "before"),
    "1777 parent, made before": ("1777", "before"),
    "0777 parent, made during the install": ("0777", "during"),
    "1777 parent, made during the install": ("1777", "during"),
}

INSPECT = r"""
d=$1
if [ -d "$d" ]; then
    stat -c 'dir %u %a' "$d"
    for f in "$d"/* "$d"/.[!.]*; do [ -e "$f" ] && stat -c "file %u %a %n" "$f"; done
    echo ---
    cat "$d/env" 2>/dev/null || true
fi
"""


@pytest.mark.parametrize(("mode", "when"), list(RUNTIME_CASES.values()), ids=list(RUNTIME_CASES))
def test_a_runtime_dir_the_user_makes_never_receives_roots_files_or_a_user_env(
    fresh: Arena, tmp_path: Path, mode: str, when: str
) -> None:
    """With runtime_dir in a directory others can write, made by the user before or during the
    install: root writes no file into the user's directory, and an env file from an install that
    succeeded is root's, in a directory of root's, without the user's LD_PRELOAD."""
    slow_update(fresh, tmp_path, "sleep 1")  # the env is written after the OS store: a window
    home = fresh.home
    parent = f"/run/shared-{mode}"
    fresh.ns.run(["sh", "-c", f"mkdir -p {parent} && chmod {mode} {parent}"])
    runtime = f"{parent}/ti-env-{fresh.tries + 1}"
    make = (f'mkdir "{runtime}" && chmod 755 "{runtime}" && '
            f"printf 'LD_PRELOAD={home}/evil.so\\n' > \"{runtime}/env\"")  # fmt: skip
    watcher = None
    if when == "before":
        fresh.user_run(make)
    else:
        # The user waits for the install to reach its NSS work, after the preflight, then makes it.
        watcher = fresh.user_popen(["sh", "-c",
            f'i=0; while [ ! -e "{home}/.pki/nssdb" ] && [ $i -lt 300 ]; '
            f'do sleep 0.005; i=$((i+1)); done; mkdir "{runtime}" && chmod 755 "{runtime}" '
            "&& echo made"])  # fmt: skip
    done = fresh.apply(runtime_dir=runtime)
    if watcher is not None:
        made, _ = watcher.communicate(timeout=30)
        assert "made" in made or done.returncode != 0, "the user never made the directory"
    # Afterwards the user tries to put LD_PRELOAD into the env file a client would source.
    subprocess.run(fresh.as_user(["sh", "-c",
        f"printf 'LD_PRELOAD={home}/evil.so\\n' > \"{runtime}/env.new\" && "
        f'mv -f "{runtime}/env.new" "{runtime}/env"']),
        capture_output=True, check=False, timeout=30)  # fmt: skip
    seen = fresh.ns.run(["sh", "-c", INSPECT, "inspect", runtime]).stdout
    listing, _, env = seen.partition("---\n")
    entries = [line.split() for line in listing.splitlines()]
    dir_uid = next((int(e[1]) for e in entries if e[0] == "dir"), None)
    roots_files = [e[3] for e in entries if e[0] == "file" and e[1] == "0"]
    if dir_uid == fresh.user.uid:
        assert not roots_files, (
            f"root wrote {roots_files} into the user's {runtime} (install exit {done.returncode})"
        )
    if done.returncode == 0:
        [d] = [e for e in entries if e[0] == "dir"]
        env_entry = [e for e in entries if e[0] == "file" and e[3].endswith("/env")]
        assert d[1] == "0", f"{runtime} after a success: {listing}"
        assert int(d[2], 8) & 0o022 == 0, f"{runtime} after a success: {listing}"
        assert env_entry, listing
        assert env_entry[0][1] == "0", listing
        assert "LD_PRELOAD" not in env, env


# -- 6: the uid recorder --------------------------------------------------------------------

STRACE_SNIPPET = """\
100 execve("/usr/bin/python3", ["python3", "-m", "trustinstaller"], 0x7ffd /* 9 vars */) = 0
100 newfstatat(AT_FDCWD</work>, "/home/b/.pki", {st_mode=S_IFDIR|0755, ...}, 0) = 0
100 clone3({flags=CLONE_VM|CLONE_FS, child_tid=0x7f, exit_signal=0}, 88 <unfinished ...>
101 openat(AT_FDCWD</work>, "/etc/passwd", O_RDONLY|O_CLOEXEC) = 3</etc/passwd>
100 <... clone3 resumed>) = 101
100 vfork( <unfinished ...>
102 setgroups(0, [])                  = 0
102 setresgid(64100, 64100, 64100)    = 0
102 setresuid(64100, 64100, 64100)    = 0
102 execve("/usr/bin/certutil", ["certutil", "-d", "sql:/home/b/.pki"], 0x5 <unfinished ...>
100 <... vfork resumed>)              = 102
102 <... execve resumed>)             = 0
102 openat(AT_FDCWD</tmp>, "/home/b/.pki/cert9.db", O_RDWR|O_CREAT, 0600) = 5</home/b/.pki/x>
102 --- SIGSTOP {si_signo=SIGSTOP, si_code=SI_USER, si_pid=7, si_uid=64100} ---
101 unlinkat(4</home/b/.pki/nssdb>, "key4.db", 0) = 0
100 fork()                            = 103
103 setreuid(-1, 64100 <unfinished ...>
103 <... setreuid resumed>)           = 0
103 mkdir("/home/b/.local", 0700)     = 0
103 setuid(0)                         = -1 EPERM (Operation not permitted)
103 rmdir("/home/b/.local")           = 0
100 execve("/usr/bin/setpriv", ["setpriv", "--", "certutil", "sql:/home/b/x"], 0x5 /* 3 vars */) = 0
100 chown("/home/bob/.pki", 0, 0)     = 0
"""


def test_strace_parser_tracks_uids_through_forks_and_setuid_calls() -> None:
    """Children inherit their parent's uid at the clone, set*uid changes it only on success, and
    only the calls made as root that name a path under the home are flagged."""
    calls = strace_uids.parse(STRACE_SNIPPET.splitlines())
    got = [(c.pid, c.euid, c.name) for c in calls]
    assert got == [
        (100, 0, "execve"),
        (100, 0, "newfstatat"),
        (101, 0, "openat"),
        (100, 0, "clone3"),
        (102, 0, "setgroups"),
        (102, 0, "setresgid"),
        (102, 0, "setresuid"),
        (100, 0, "vfork"),
        (102, 64100, "execve"),
        (102, 64100, "openat"),
        (101, 0, "unlinkat"),
        (100, 0, "fork"),
        (103, 0, "setreuid"),
        (103, 64100, "mkdir"),
        (103, 64100, "setuid"),
        (103, 64100, "rmdir"),
        (100, 0, "execve"),
        (100, 0, "chown"),
    ]
    flagged = [(c.pid, c.name) for c in strace_uids.root_calls_under(calls, "/home/b")]
    # The execve of setpriv names the home only in its argv, which is text, not a path it opens;
    # /home/bob is not under /home/b.
    assert flagged == [(100, "newfstatat"), (101, "unlinkat")]


@pytest.mark.parametrize(
    ("line", "path", "expected"),
    [
        ('1 openat(AT_FDCWD</>, "/home/b", O_RDONLY) = 3</home/b>', "/home/b", True),
        ('1 openat(AT_FDCWD</home/b/x>, "cert9.db", O_RDONLY) = 3', "/home/b", True),
        ('1 openat(5</home/b>, "x", O_RDONLY) = -1 ENOENT (No such file)', "/home/b", True),
        ('1 openat(AT_FDCWD</>, "/etc/x", O_RDONLY) = 3</home/b/y>', "/home/b", False),
        ('1 openat(AT_FDCWD</>, "/home/bc", O_RDONLY) = 3', "/home/b", False),
        ('1 execve("/home/b/evil", ["evil"], 0x1 /* 1 var */) = 0', "/home/b", True),
        ('1 execve("/bin/sh", ["sh", "/home/b/x"], 0x1 /* 1 var */) = 0', "/home/b", False),
    ],
)
def test_mentions_looks_at_the_arguments_only(line: str, path: str, expected: bool) -> None:
    """A path in a quoted argument or in an fd's -y annotation counts; the result does not."""
    [call] = strace_uids.parse([line])
    assert strace_uids.mentions(call, path) is expected


# -s 4096: strace cuts strings at 32 characters by default, which would cut a path under the
# home short of the home itself and hide it from the recorder.
STRACE_FLAGS = ("-f", "-qq", "-y", "-s", "4096", "-e", "trace=%file,%creds,%process")


def strace_apply(arena: Arena, out: Path) -> tuple[int, list[strace_uids.Call]]:
    """Run one ``trustinstaller apply`` under strace -f; its exit status and every call."""
    prefix = ["strace", *STRACE_FLAGS, "-o", str(out)]
    proc, _ = arena.start_apply(prefix=prefix)
    proc.communicate(timeout=300)
    return proc.returncode, strace_uids.parse(out.read_text().splitlines())


def test_no_process_running_as_root_touches_the_home_during_an_install_or_a_rollback(
    fresh: Arena, tmp_path: Path
) -> None:
    """Under strace -f, during one rollback (update-ca-certificates fails after the NSS work)
    and one install, every syscall naming a path under the home is made by the user's uid."""
    home = str(fresh.home)
    slow_update(fresh, tmp_path, FAIL_LATE)
    rc, rollback_calls = strace_apply(fresh, tmp_path / "rollback.strace")
    assert rc != 0, "the failing update-ca-certificates did not fail the install"
    fresh.shims = None
    rc, install_calls = strace_apply(fresh, tmp_path / "install.strace")
    assert rc == 0, "the install did not succeed"
    for label, calls in (("rollback", rollback_calls), ("install", install_calls)):
        users = [c for c in calls if c.euid == fresh.user.uid and strace_uids.mentions(c, home)]
        assert users, f"{label}: the recorder saw no call under the home at all"
        as_root = strace_uids.root_calls_under(calls, home)
        shown = "\n".join(f"  pid {c.pid} {c.name}({c.args[:160]})" for c in as_root[:15])
        assert not as_root, f"{label}: {len(as_root)} calls as root under {home}:\n{shown}"


def test_the_uid_recorder_flags_a_deliberate_root_access_to_the_home(
    fresh: Arena, tmp_path: Path
) -> None:
    """The control: root stat-ing the home is flagged; the same stat through setpriv is not."""
    home = str(fresh.home)
    out = tmp_path / "control.strace"
    user = fresh.user
    script = (f'stat "{home}" >/dev/null; setpriv --reuid={user.uid} --regid={user.uid} '
              f'--clear-groups -- stat "{home}/evil.log" >/dev/null')  # fmt: skip
    done = fresh.ns.run(["strace", *STRACE_FLAGS, "-o", str(out), "sh", "-c", script])
    assert done.returncode == 0, done.stderr
    calls = strace_uids.parse(out.read_text().splitlines())
    flagged = strace_uids.root_calls_under(calls, home)
    assert flagged, "the control's root stat of the home was not flagged"
    assert all("evil.log" not in c.args for c in flagged), flagged
    assert any(c.euid == user.uid and f"{home}/evil.log" in c.args for c in calls)
