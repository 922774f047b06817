"""Where a process run for a user lives: a PID namespace and a cgroup of its own.

A user's step (a ``certutil`` or ``tstclnt`` in the user's NSS database, which loads whatever
PKCS #11 module the user lists) must not be able to use up the daemon's tasks or memory, and
must leave nothing behind when it ends. Two kernel tools do this, each when the host allows it:

- **A PID namespace** (``unshare --pid --fork``, needs CAP_SYS_ADMIN): the step's command is
  init, so when the command exits, or we kill it, the kernel kills every process it
  started, including those that left its process group or session.
- **A cgroup per user, and one per step inside it** (a writable ``pids`` and ``memory``
  hierarchy: cgroup v1, or cgroup v2 delegated by systemd's ``Delegate=``). The user's cgroup
  (``trustinstaller-user-UID``) holds the limits, ``pids.max`` and a memory limit, for all of
  that user's steps together. A step's own cgroup is what is emptied when the step ends
  (``cgroup.kill`` on v2), so that it ends without a PID namespace too.

A step can leave a charge behind that outlives its processes: pages of a memfd it passed to a
process of the user's outside the step, or zombies that the user's tracer never waits for. The
kernel keeps such a charge on the (removed) step cgroup, and so on the user's cgroup above it.
That is why the limits are the user's, not the step's: however many steps the user runs, what
they hold at once, and what they leave behind, stays within one ``TASKS_MAX`` and one
``MEMORY_MAX``, and the rest of the service's budget stays root's. A user's cgroup is kept for
the life of the process, and removed at its exit only when it holds no charge at all, so that
a later run in the same cgroup counts what is left against the same limits. Swap counts too: a
step gets none (``memory.swap.max`` 0 on v2; on v1 ``memory.memsw.limit_in_bytes`` bounds memory
and swap together).

Only cgroups that root alone controls are used: our own cgroup, its ``cgroup.procs`` and every
directory above it up to the mount must belong to uid 0, and on v2 only systemd's
``trusted.delegate`` (which only a privileged process can set) counts as a delegation. A root
process that sits in a user's delegated cgroup (``sudo`` in a user's session) would otherwise
let that user move, freeze or kill the steps and the daemon.

Where limits were found, a step that cannot get its cgroups does not run: ``cell()`` raises
``UncontainedError``, and the caller skips the user's store, as for any failed step.

What was found is logged once (``user_steps_contained``). With neither, a step still runs in a
session of its own whose process group is killed at a timeout, as before; the README says what
each case gets. Everything here runs as root before the drop, from root's own binaries: the
wrapper writes its own PID into the cgroups, ``unshare`` makes the namespace, and root's own
interpreter drops to the user and execs the command.
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import itertools
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

# All of one user's steps, and whatever they left charged, may hold this many tasks (processes
# and threads) at once: a certutil needs one or two.
TASKS_MAX = 64
# And this much memory.
MEMORY_MAX = 256 * 1024 * 1024
# A step that leaves more memory than this charged to the user's cgroup is logged. What a step
# leaves in any case (page cache of what it read, its libraries) stays well under it.
_MEMORY_NOTE = 16 * 1024 * 1024
# Fresh names tried for a step's cgroup when one is taken (left by an earlier run with the same
# PID whose members would not go).
_NAME_TRIES = 3
# How long the members of an ended step's cgroup may take to be gone, from the first attempt to
# end it to its removal, before we give up on it.
_EMPTY = 2.0
_SBIN_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
# The wrapper's script: write our PID into each cgroup.procs named, then exec the rest.
_ENTER = 'unset PWD OLDPWD; n=$1; shift; while [ "$n" -gt 0 ]; do echo $$ >"$1" || exit 125; shift; n=$((n-1)); done; exec "$@"'  # noqa: E501
_SELF_LEAF = "trustinstaller-daemon"
# The drop, run by root's interpreter: argv is UID GID PROGRAM ARGS...
_DROP = (
    "import os, sys\n"
    "uid, gid = int(sys.argv[1]), int(sys.argv[2])\n"
    "os.setgroups([])\n"
    "os.setresgid(gid, gid, gid)\n"
    "os.setresuid(uid, uid, uid)\n"
    "os.execv(sys.argv[3], sys.argv[3:])\n"
)


class UncontainedError(Exception):
    """A user's step cannot get the cgroups its limits live in; it must not run."""


@dataclass(frozen=True)
class Hierarchy:
    """A cgroup directory of ours under which each step gets a child."""

    version: int  # 1 or 2
    controllers: frozenset[str]  # what a child's limits use: "pids", "memory"
    path: Path


@dataclass
class Cell:
    """One step's cgroups (one per hierarchy, each inside its user's), made before it starts,
    removed after."""

    dirs: tuple[tuple[Hierarchy, Path], ...] = ()
    uid: int | None = None  # whose step: a tracer of this uid's is ended with it
    _until: float | None = None

    def procs(self) -> list[str]:
        return [str(d / "cgroup.procs") for _, d in self.dirs]

    def until(self) -> float:
        """The one deadline for emptying this cell, set by the first attempt to empty it."""
        if self._until is None:
            self._until = time.monotonic() + _EMPTY
        return self._until


@dataclass(frozen=True)
class Left:
    """What an ended step left: whether its cgroups are gone, and what stays charged."""

    removed: bool = True
    tasks: int = 0  # zombies that a tracer of the user's holds, say
    memory: int = 0  # bytes

    @property
    def notable(self) -> bool:
        return not self.removed or self.tasks > 0 or self.memory > _MEMORY_NOTE


@dataclass
class Containment:
    """What this host lets us do with a user's step; found once by ``detect()``."""

    unshare: str | None = None  # the unshare binary, when a PID namespace can be made
    root: bool = False  # running as root, so that a step can be made to drop
    hierarchies: tuple[Hierarchy, ...] = ()
    problem: str | None = None  # why the limits are not what the host seemed to offer
    _names: itertools.count[int] = field(default_factory=itertools.count)
    _users: dict[tuple[Path, int], Path] = field(default_factory=dict)
    _users_lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def available(self) -> bool:
        return self.root and (self.unshare is not None or bool(self.hierarchies))

    def describe(self) -> dict[str, object]:
        """For the log: what a user's step gets here."""
        limits = sorted({c for h in self.hierarchies for c in h.controllers})
        return {
            "pid_namespace": self.unshare is not None,
            "cgroup": ",".join(f"v{h.version}:{h.path}" for h in self.hierarchies) or None,
            "limits": ",".join(limits) or None,
            "tasks_max": TASKS_MAX if "pids" in limits else None,
            "memory_max": MEMORY_MAX if "memory" in limits else None,
        }

    def cell(self, uid: int) -> Cell:
        """Make one step's cgroups, inside ``uid``'s.

        Raise UncontainedError if a hierarchy that carries limits refuses, after undoing what was
        made; a hierarchy used only to kill the step as one (v2 without delegation) is left
        out when it refuses.
        """
        made: list[tuple[Hierarchy, Path]] = []
        try:
            for h in self.hierarchies:
                d = self._step(h, uid)
                if d is not None:
                    made.append((h, d))
                elif h.controllers:
                    raise UncontainedError(f"cannot make a step's cgroup in {h.path}")
        except BaseException:
            self.release(Cell(tuple(made), uid))
            raise
        return Cell(tuple(made), uid)

    def _step(self, h: Hierarchy, uid: int) -> Path | None:
        for _ in range(_NAME_TRIES):
            user = self._user(h, uid)
            if user is None:
                return None
            d = user / f"trustinstaller-step-{os.getpid()}-{next(self._names)}"
            try:
                d.mkdir(mode=0o755)
            except FileExistsError:
                continue
            except FileNotFoundError:
                # Another run of ours in the same cgroup removed the user's at its exit.
                with self._users_lock:
                    self._users.pop((h.path, uid), None)
                continue
            except OSError:
                return None
            return d
        return None

    def _user(self, h: Hierarchy, uid: int) -> Path | None:
        """``uid``'s cgroup in ``h``, made with its limits on first use; None if refused."""
        with self._users_lock:
            known = self._users.get((h.path, uid))
            if known is not None:
                return known
            d = h.path / f"trustinstaller-user-{uid}"
            try:
                d.mkdir(mode=0o755)
            except FileExistsError:
                pass  # left by an earlier run, still charged: its limits are set again here
            except OSError:
                return None
            if not _set_limits(h, d):
                return None
            self._users[(h.path, uid)] = d
            return d

    def wrap(self, argv: Sequence[str], uid: int, gid: int, cell: Cell) -> list[str]:
        """The argv that runs ``argv`` (its program an absolute path) as ``uid``/``gid`` inside
        ``cell`` and, when there is one, a PID namespace."""
        # Root's own interpreter drops: groups, then gid, then uid, as Popen does; unlike
        # setpriv it needs no capset, which the unit's system call filter does not allow.
        drop = [sys.executable, "-I", "-S", "-c", _DROP, str(uid), str(gid), *argv]
        inner = drop
        if self.unshare is not None:
            inner = [self.unshare, "--pid", "--fork", "--kill-child", "--", *drop]
        procs = cell.procs()
        if not procs:
            return inner
        return ["/bin/sh", "-c", _ENTER, "sh", str(len(procs)), *procs, *inner]

    def end(self, proc: subprocess.Popen[bytes], cell: Cell) -> bool:
        """Kill whatever the step left, in its namespace and its cgroups; True if all is gone."""
        # The namespace's init is the wrapper's child: kill it first, so that the kernel ends
        # everything in the namespace, even what left the process group (setsid).
        for pid in _children(proc.pid):
            _kill_checked(pid, lambda p: p in _children(proc.pid))
            _end_tracer(pid, cell.uid)
        _end_tracer(proc.pid, cell.uid)  # without a namespace, the step's command itself
        gone = True
        for h, d in cell.dirs:
            gone = _empty(h, d, cell.until(), cell.uid) and gone
        return gone

    def release(self, cell: Cell) -> Left:
        """Empty and remove a step's cgroups once the step has been reaped; say what is left.

        What stays charged after its members are gone (zombies, a passed memfd's pages) is
        read before the removal; it stays on the user's cgroup.
        """
        removed, tasks, memory = True, 0, 0
        for h, d in cell.dirs:
            removed = _empty(h, d, cell.until(), cell.uid) and removed
            if "pids" in h.controllers:
                tasks = max(tasks, _read_int(d / "pids.current"))
            if "memory" in h.controllers:
                memory = max(memory, _usage(h, d))
            try:
                d.rmdir()
            except OSError:
                removed = False
        return Left(removed, tasks, memory)

    def close(self) -> None:
        """At exit: remove the step cgroups whose members would not go, once they are empty,
        and each user's cgroup that holds no charge at all. One still charged is kept, so that
        the next run here counts the charge against the same limits.

        Steps of other threads may still run: a cgroup in use is busy and stays.
        """
        with self._users_lock:
            for (path, uid), d in list(self._users.items()):
                try:
                    steps = [s for s in d.iterdir() if s.name.startswith("trustinstaller-step-")]
                except OSError:
                    steps = []
                for step in steps:
                    with contextlib.suppress(OSError):
                        step.rmdir()
                h = next(x for x in self.hierarchies if x.path == path)
                if _charged(h, d):
                    continue
                with contextlib.suppress(OSError):
                    d.rmdir()
                    del self._users[(path, uid)]


def _limits(h: Hierarchy) -> list[tuple[str, int, bool]]:
    """(file, value, whether the file must exist) of a user's cgroup, in the order written.

    Swap is limited where the kernel accounts it: the files exist only then.
    """
    out = []
    if "pids" in h.controllers:
        out.append(("pids.max", TASKS_MAX, True))
    if "memory" in h.controllers and h.version == 2:
        out += [("memory.max", MEMORY_MAX, True), ("memory.swap.max", 0, False)]
    elif "memory" in h.controllers:
        # memsw bounds memory and swap together, and may not be set below the memory limit.
        out += [
            ("memory.limit_in_bytes", MEMORY_MAX, True),
            ("memory.memsw.limit_in_bytes", MEMORY_MAX, False),
        ]
    return out


def _set_limits(h: Hierarchy, d: Path) -> bool:
    """Write ``h``'s limits on the user's cgroup ``d``; False if one cannot be had.

    A second round writes what the first refused: v1 takes no memory limit above the memsw
    limit an earlier run left, until that is raised.
    """
    if h.version == 1 and "memory" in h.controllers and not _v1_hierarchical(d):
        return False
    wanted = _limits(h)
    for _ in range(2):
        refused = []
        for name, value, needed in wanted:
            try:
                (d / name).write_text(f"{value}\n")
            except FileNotFoundError:
                if needed:
                    return False
                # Not there without swap accounting. With swap, v1's memcg reclaim is told
                # not to swap instead; v2 has no such knob (told at start, see detect).
                if h.version == 1 and _swap_on():
                    with contextlib.suppress(OSError):
                        (d / "memory.swappiness").write_text("0\n")
                    if _limit(d / "memory.swappiness") != 0:
                        return False
            except OSError:
                refused.append((name, value, needed))
        wanted = refused
    # v1 refuses a memory limit below what is charged already: keep a lower one.
    return all(_limit(d / name) <= value for name, value, _ in wanted)


def _v1_hierarchical(d: Path) -> bool:
    """Whether a v1 memory cgroup's limit covers its children (always, since Linux 5.11);
    turned on while ``d`` has none yet."""
    flag = d / "memory.use_hierarchy"
    if not flag.exists():
        return True
    with contextlib.suppress(OSError):
        if flag.read_text().strip() != "1":
            flag.write_text("1\n")
    return _limit(flag) == 1


def _swap_on() -> bool:
    """Whether any swap device is active."""
    try:
        return len(Path("/proc/swaps").read_text().splitlines()) > 1
    except OSError:
        return False


def _limit(path: Path) -> float:
    """A limit file's value; "max", or one that cannot be read, is no limit."""
    try:
        text = path.read_text().strip()
    except OSError:
        return float("inf")
    return int(text) if text.isdigit() else float("inf")


def _usage(h: Hierarchy, d: Path) -> int:
    """Memory and swap charged to ``d``."""
    if h.version == 2:
        return _read_int(d / "memory.current") + _read_int(d / "memory.swap.current")
    memsw = d / "memory.memsw.usage_in_bytes"
    return _read_int(memsw) if memsw.exists() else _read_int(d / "memory.usage_in_bytes")


def _read_int(path: Path) -> int:
    try:
        text = path.read_text().strip()
    except OSError:
        return 0
    return int(text) if text.isdigit() else 0


def _charged(h: Hierarchy, d: Path) -> bool:
    """Whether ``d`` still holds any task, memory or swap, read from its counters alone: a
    reclaim or force_empty could block for as long as the charge takes to page out."""
    if "pids" in h.controllers and _read_int(d / "pids.current") > 0:
        return True
    return "memory" in h.controllers and _usage(h, d) > 0


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def _kill_checked(pid: int, still: Callable[[int], bool]) -> None:
    """SIGKILL the process ``pid`` names only while ``still(pid)`` holds for that process.

    A PID read from a listing may be reused once its process is gone. The pidfd pins the
    process first; the check then runs while that process is alive (a live process keeps its
    PID), and the signal goes to it through the pidfd, never to a newcomer with its PID.
    """
    try:
        fd = os.pidfd_open(pid)
    except OSError:
        return
    try:
        if still(pid):
            with contextlib.suppress(OSError):
                signal.pidfd_send_signal(fd, signal.SIGKILL)
    finally:
        os.close(fd)


def _members(d: Path) -> list[int]:
    try:
        return [int(p) for p in (d / "cgroup.procs").read_text().split()]
    except OSError:
        return []


def _empty(h: Hierarchy, d: Path, deadline: float, uid: int | None = None) -> bool:
    """SIGKILL every process in ``d`` until none is left (or ``deadline`` passes).

    A killed process that a tracer holds in its exit stop stays a member for as long as the
    tracer likes: a tracer of the step's user is ended too (see ``_end_tracer``).
    """
    if h.version == 2:
        with contextlib.suppress(OSError):
            (d / "cgroup.kill").write_text("1\n")
    rounds = 0
    while True:
        members = _members(d)
        if not members:
            return True
        if time.monotonic() >= deadline:
            return False
        # v1 has no cgroup.kill: each round kills every member seen; pids.max bounds the forks.
        for pid in members:
            _kill_checked(pid, lambda p: p in _members(d))
            if rounds:
                _end_tracer(pid, uid)
        rounds += 1
        time.sleep(0.01)


def _end_tracer(pid: int, uid: int | None) -> None:
    """SIGKILL the tracer of process ``pid`` if it is the step's user's, and so on up a chain
    of tracers (a killed tracer held in its own exit stop by another stays the tracer).

    A tracer can hold a killed tracee in its exit stop (PTRACE_O_TRACEEXIT) without end, or keep
    its zombies. Only a tracer of the step's own user is ended (its real or saved uid is the
    user's, as kill(2) would let that user signal it), never root's or another user's; it is
    that user's own process, obstructing the step's end. A step of root's ends no tracer.
    """
    if uid is None or uid == 0:
        return
    seen: set[int] = set()
    while pid not in seen and len(seen) < TASKS_MAX:
        seen.add(pid)
        tracer = _kill_tracer_of(pid, uid)
        if tracer is None:
            return
        pid = tracer


def _kill_tracer_of(pid: int, uid: int) -> int | None:
    """SIGKILL the user's tracer of ``pid``; return its PID, or None if there is none."""
    try:
        pinned = os.pidfd_open(pid)
    except OSError:
        return None
    try:
        tracer = _status_field(pid, "TracerPid")
        if tracer <= 0 or not _users(tracer, uid):
            return None
        signal.pidfd_send_signal(pinned, 0)  # still not reaped: ``pid`` is still it
        _kill_checked(tracer, lambda t: _status_field(pid, "TracerPid") == t and _users(t, uid))
        return tracer
    except OSError:
        return None
    finally:
        os.close(pinned)


def _users(pid: int, uid: int) -> bool:
    """Whether process ``pid``'s real or saved uid is ``uid``."""
    ids = _status_ids(pid, "Uid")
    return len(ids) >= 3 and uid in (ids[0], ids[2])


def _status_ids(pid: int, name: str) -> list[int]:
    """The numbers of a line of /proc/PID/status; [] if unknown."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return []
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key == name:
            return [int(x) for x in value.split() if x.isdigit()]
    return []


def _status_field(pid: int, name: str) -> int:
    """The first number of a line of /proc/PID/status; -1 if unknown."""
    ids = _status_ids(pid, name)
    return ids[0] if ids else -1


def _mounts(mountinfo: str) -> list[tuple[str, str, str, set[str]]]:
    """(fstype, mount root, mount point, super options) of each cgroup mount."""
    out = []
    for line in mountinfo.splitlines():
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        lf, rf = left.split(), right.split()
        if len(lf) < 5 or len(rf) < 3 or rf[0] not in ("cgroup", "cgroup2"):
            continue
        out.append((rf[0], lf[3], _unescape(lf[4]), set(rf[2].split(","))))
    return out


def _unescape(text: str) -> str:
    return text.encode().decode("unicode_escape") if "\\" in text else text


def hierarchies(proc_cgroup: str, mountinfo: str) -> list[tuple[int, frozenset[str], Path]]:
    """Where our own cgroups are, for the controllers we limit with; pure (tested by table).

    Each is (version, controllers, directory). v1 lists one per hierarchy that carries pids or
    memory; v2 lists the unified hierarchy with no controllers: which it may use is read from
    the directory itself.
    """
    mounts = _mounts(mountinfo)
    found: list[tuple[int, frozenset[str], Path]] = []
    for line in proc_cgroup.splitlines():
        num, sep, rest = line.partition(":")
        names, sep2, path = rest.partition(":")
        if not (sep and sep2 and path.startswith("/")):
            continue
        if num == "0" and names == "":
            for fstype, root, point, _ in mounts:
                if fstype == "cgroup2":
                    found.append((2, frozenset(), _join(point, root, path)))
                    break
            continue
        wanted = {"pids", "memory"} & set(names.split(","))
        if not wanted:
            continue
        for fstype, root, point, opts in mounts:
            if fstype == "cgroup" and wanted <= opts:
                found.append((1, frozenset(wanted), _join(point, root, path)))
                break
    return found


def _join(point: str, root: str, path: str) -> Path:
    if root != "/" and (path == root or path.startswith(root + "/")):
        path = path[len(root) :]
    return Path(point) / path.lstrip("/")


def _v2_usable(d: Path) -> tuple[frozenset[str], str | None]:
    """Controllers a v2 child of ``d`` gets, enabling them when ``d`` was delegated to us; and
    why not, when the delegation was found but enabling failed.

    systemd marks a cgroup it delegated (``Delegate=``) to a system unit with the
    ``trusted.delegate`` attribute, which only a privileged process can set; ``user.delegate``
    is what a user's own manager sets, so it does not count. Only there do we enable
    controllers, which first needs the daemon moved into a leaf of its own (no process may sit
    beside a cgroup's enabled controllers). A cgroup nobody delegated is left as it is: its
    child can still be killed as one (``cgroup.kill``), but gets no limits, and that is the
    problem told.
    """
    want = {"pids", "memory"}
    try:
        have = set((d / "cgroup.controllers").read_text().split()) & want
        enabled = set((d / "cgroup.subtree_control").read_text().split()) & want
    except OSError:
        return frozenset(), None
    if have <= enabled:
        return frozenset(enabled), None
    try:
        delegated = os.getxattr(d, "trusted.delegate") == b"1"
    except OSError:
        delegated = False
    if not delegated:
        missing = ",".join(sorted(have - enabled))
        return frozenset(enabled), f"{d} was not delegated to us: no {missing} limits"
    problem = None
    try:
        leaf = d / _SELF_LEAF
        with contextlib.suppress(FileExistsError):
            leaf.mkdir(mode=0o755)
        (leaf / "cgroup.procs").write_text(f"{os.getpid()}\n")
        (d / "cgroup.subtree_control").write_text(" ".join(f"+{c}" for c in sorted(have)))
    except OSError as exc:
        # EBUSY: a process other than us sits in the delegated cgroup itself.
        problem = f"cannot enable {','.join(sorted(have))} in {d}: {exc.strerror or exc}"
    try:
        got = frozenset(set((d / "cgroup.subtree_control").read_text().split()) & want)
    except OSError:
        got = frozenset()
    return got, problem


def _root_owned(d: Path) -> str | None:
    """Why ``d`` is not a cgroup that root alone controls, or None if it is.

    ``d``, the files through which processes are moved into it and its controllers enabled,
    and each directory above it on the same mount must belong to uid 0. A delegation to a
    user (``Delegate=`` in a user's unit, or a user's manager) hands that user the directory
    and those files, and from there everything below.
    """
    try:
        dev = os.lstat(d).st_dev
    except OSError as exc:
        return f"cannot read {d}: {exc.strerror or exc}"
    names = ("cgroup.procs", "cgroup.threads", "tasks", "cgroup.subtree_control")
    checked = [d / n for n in names]
    for p in [*checked, d, *d.parents]:
        try:
            st = os.lstat(p)
        except FileNotFoundError:
            if p in checked:
                continue  # v1 has no cgroup.subtree_control, v2 no tasks
            return f"cannot read {p}"
        except OSError as exc:
            return f"cannot read {p}: {exc.strerror or exc}"
        if st.st_dev != dev:
            break  # above the mount
        if st.st_uid != 0:
            return f"{p} belongs to uid {st.st_uid}, not root: not used"
        if st.st_mode & 0o022:
            return f"{p} is writable by others than root (mode {st.st_mode & 0o777:o}): not used"
    return None


def _others_may_move(point: Path, limit: int = 5000) -> str | None:
    """On v1, a process may move into any cgroup whose ``cgroup.procs`` it may write: one
    anywhere in the hierarchy that a user may write lets that user's step leave its limits
    (for a cgroup of the user's own, not root's). Say where, looking at ``limit`` cgroups."""
    seen = 0
    for top, _dirs, _ in os.walk(point):
        for name in ("cgroup.procs", "tasks"):
            try:
                st = os.lstat(Path(top) / name)
            except OSError:
                continue
            if st.st_uid != 0 or st.st_mode & 0o022:
                return f"{Path(top) / name} may be written by others than root"
        seen += 1
        if seen >= limit:
            return f"{point} has over {limit} cgroups: not all were checked"
    return None


def _mount_of(d: Path) -> Path:
    """The top of the cgroup mount ``d`` is on."""
    dev = os.lstat(d).st_dev
    top = d
    for p in d.parents:
        try:
            if os.lstat(p).st_dev != dev:
                break
        except OSError:
            break
        top = p
    return top


def _writable(d: Path) -> bool:
    probe = d / f"trustinstaller-probe-{os.getpid()}"
    try:
        probe.mkdir()
    except OSError as exc:
        return exc.errno == errno.EEXIST
    with contextlib.suppress(OSError):
        probe.rmdir()
    return True


def _pid_namespace(unshare: str) -> bool:
    try:
        done = subprocess.run(
            [unshare, "--pid", "--fork", "--kill-child", "--", "/bin/true"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


_lock = threading.Lock()
_found: Containment | None = None


def detect() -> Containment:
    """What this host lets us do; found on first use, as root, and kept for the process."""
    global _found
    with _lock:
        if _found is not None:
            return _found
        c = Containment()
        if os.geteuid() == 0:
            c.root = True
            unshare = shutil.which("unshare", path=_SBIN_PATH)
            if unshare and _pid_namespace(unshare):
                c.unshare = unshare
            found: list[Hierarchy] = []
            try:
                own = hierarchies(
                    Path("/proc/self/cgroup").read_text(),
                    Path("/proc/self/mountinfo").read_text(),
                )
            except OSError:
                own = []
            # v1 first: where it gives the limits, v2 is only used for cgroup.kill, and the
            # daemon is not moved into a leaf for controllers it would not use.
            for version, controllers, d in sorted(own, key=lambda h: h[0]):
                refused = _root_owned(d)
                if refused is not None:
                    c.problem = c.problem or refused
                    continue
                if not _writable(d):
                    continue
                usable = controllers
                if version == 2 and not any(h.controllers for h in found):
                    usable, problem = _v2_usable(d)
                    c.problem = c.problem or problem
                    if "memory" in usable and _swap_on() and not (d / "memory.swap.max").exists():
                        c.problem = c.problem or "swap is on but not accounted: no swap limit"
                elif version == 2:
                    usable = frozenset()
                elif usable:
                    c.problem = c.problem or _others_may_move(_mount_of(d))
                found.append(Hierarchy(version, frozenset(usable), d))
            c.hierarchies = tuple(found)
            if not any(h.controllers for h in found):
                c.problem = c.problem or "no writable, root-owned cgroup with pids or memory"
            atexit.register(c.close)
        _found = c
        return c
