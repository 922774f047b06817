"""The only place that spawns processes.

Every command runs with stdin closed (certutil prompts for a password forever
when stdin is not a TTY), a timeout that kills its whole process group, and a
PATH that includes /usr/sbin, where update-ca-certificates lives.

A command run for a user (``user=``) drops to that user in the child before it execs:
supplementary groups, then gid, then uid, all three of each (Popen's ``extra_groups``,
``group`` and ``user``, done in C between fork and exec, so safe beside threads). It starts
in ``/``, not in a directory the user controls, and gets a minimal environment of its own:
nothing of the daemon's (which may hold AWS credentials) reaches a process the user may
read. Its output is read up to a cap and treated as untrusted: the caller may parse it, but it
never goes into a HostError, whose message reaches the status, the answers and the log. The
user chooses what its process prints (a PKCS #11 module it lists in its own pkcs11.txt runs
inside the certutil we start), so a failure is told in our words only: the command, how it
ended, and whose process it was.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, TypedDict, Unpack

from trustinstaller import _contain, log
from trustinstaller.errors import HostError

DEFAULT_TIMEOUT = 120.0
_SBIN = ("/usr/local/sbin", "/usr/sbin", "/sbin")
# Each of stdout and stderr is kept up to this many bytes; a command never needs more.
OUTPUT_CAP = 1024 * 1024
_PIPE_CHUNK = 65536
# How long output may still be read after the child exited.
_DRAIN = 1.0
# How long a killed child may take to be reaped before we stop waiting for it.
_REAP = 2.0
# A user's process gets this PATH, not ours: only root's system directories.
USER_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True)
class Account:
    """A user that work is done for, from the password database (never from a file's owner)."""

    name: str
    uid: int
    gid: int
    home: Path

    @classmethod
    def lookup(cls, name: str) -> Account:
        """The account named ``name``; KeyError when there is none."""
        import pwd

        pw = pwd.getpwnam(name)
        return cls(pw.pw_name, pw.pw_uid, pw.pw_gid, Path(pw.pw_dir))

    def env(self) -> dict[str, str]:
        """The whole environment a process run for this user gets."""
        return {
            "PATH": USER_PATH,
            "HOME": str(self.home),
            "USER": self.name,
            "LOGNAME": self.name,
            "LC_ALL": "C",
        }


@dataclass(frozen=True)
class Result:
    """A finished command."""

    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str


class RunOptions(TypedDict, total=False):
    """The keyword arguments every runner takes; ``run`` documents each."""

    timeout: float
    check: bool
    env: Mapping[str, str] | None
    input: bytes | None
    user: Account | None
    pass_fds: Sequence[int]


class Runner(Protocol):
    """Runs a command and returns its result, or raises HostError."""

    def __call__(self, argv: Sequence[str], **options: Unpack[RunOptions]) -> Result: ...


class UserBudget:
    """One deadline for all of one user's steps in an install, its rollback included.

    It starts with the user's first step. Each step's timeout is cut to what is left, and once
    nothing is left a step is not started: the user's store fails (and is skipped, being
    optional) in our words, and root's stores and the lock go on. However the user's module
    spreads its delays over the steps, the user holds the install for ``seconds`` at most.
    """

    def __init__(self, runner: Runner, user: Account, seconds: float) -> None:
        self._runner, self._user, self._seconds = runner, user, seconds
        self._ends: float | None = None
        self._lock = threading.Lock()

    def left(self) -> float:
        with self._lock:
            if self._ends is None:
                self._ends = time.monotonic() + self._seconds
            return self._ends - time.monotonic()

    def __call__(self, argv: Sequence[str], **options: Unpack[RunOptions]) -> Result:
        left = self.left()
        if left <= 0:
            raise HostError(tuple(argv), f"not run: {self._used()}")
        asked = options.get("timeout", DEFAULT_TIMEOUT)
        options["timeout"] = min(asked, left)
        try:
            return self._runner(argv, **options)
        except HostError as exc:
            if left >= asked or not exc.reason.startswith("timed out"):
                raise
            # Cut short by the budget, not by its own timeout: say which.
            raise HostError(exc.argv, f"killed: {self._used()}", note=exc.note) from exc

    def _used(self) -> str:
        return f"user {self._user.name}'s steps took their user_store_timeout ({self._seconds:g} s)"


def command_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for a child: ours, a PATH with the sbin directories, the C locale."""
    env = dict(os.environ)
    # Appended, not prepended, so an administrator's PATH order still wins.
    parts = [p for p in env.get("PATH", "/usr/bin:/bin").split(":") if p]
    parts += [d for d in _SBIN if d not in parts]
    env["PATH"] = ":".join(parts)
    # Tool output is parsed (the "E: " lines of update-ca-certificates): keep it in English.
    env["LC_ALL"] = "C"
    env.pop("LANGUAGE", None)
    if extra:
        env.update(extra)
    return env


def which(command: str) -> str | None:
    """Where a command root runs would be found: ``command_env``'s PATH; None if nowhere."""
    return shutil.which(command, path=command_env()["PATH"])


def run(argv: Sequence[str], **options: Unpack[RunOptions]) -> Result:
    """Run ``argv`` with stdin closed (or fed ``input``) and a timeout; as ``user`` if given.

    ``timeout`` (seconds, default DEFAULT_TIMEOUT), ``check`` (default True: a non-zero exit
    raises), ``env`` (extra variables), ``input`` (bytes for stdin), ``user`` (an Account to
    drop to) and ``pass_fds`` (descriptors the child inherits).
    Raise HostError if it cannot start, times out, or (with ``check``) exits non-zero.
    """
    timeout = options.get("timeout", DEFAULT_TIMEOUT)
    input = options.get("input")  # noqa: A001 (the subprocess name)
    user = options.get("user")
    args = tuple(argv)
    how = _launch(args, user, options.get("env"))
    try:
        proc = subprocess.Popen(
            how.argv,
            stdin=subprocess.DEVNULL if input is None else subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=how.env,
            start_new_session=True,  # so a timeout can kill the children too
            pass_fds=tuple(options.get("pass_fds", ())),
            user=how.uid,
            group=how.gid,
            extra_groups=how.groups,
            cwd=how.cwd,
        )
    except OSError as exc:
        if how.contain is not None:
            _released(how.contain, how.cell, user)
        raise HostError(args, f"cannot run: {exc.strerror or exc}") from exc
    reaped = True
    try:
        try:
            out, err, finished = _collect(proc, input, timeout)
        except BaseException:
            _kill(proc, how.contain, how.cell)
            raise
        if not finished:
            reaped = _kill(proc, how.contain, how.cell)
    finally:
        # Whatever the step left behind (a process that detached into a session of its own)
        # goes with its cgroup; its PID namespace ended with its init.
        if how.contain is not None:
            _released(how.contain, how.cell, user)
    if not finished:
        raise HostError(
            args,
            f"timed out after {timeout:g} s and was killed"
            + ("" if reaped else f"; it could not be reaped within {_REAP:g} s (traced?)"),
            output="" if user is not None else _text(err) or _text(out),
            note=_whose(user),
        )
    return _result(Result(args, proc.returncode, _text(out), _text(err)), options, user)


def _result(result: Result, options: RunOptions, user: Account | None) -> Result:
    """``result``; or, with ``check`` and a non-zero exit, the HostError that says so."""
    if options.get("check", True) and result.returncode != 0:
        raise HostError(
            result.argv,
            _ended(result.returncode),
            returncode=result.returncode if result.returncode > 0 else None,
            output="" if user is not None else result.stderr or result.stdout,
            note=_whose(user),
        )
    return result


@dataclass
class _Launch:
    """How a command starts: its argv (wrapped for a contained step), environment and drop."""

    argv: tuple[str, ...]
    env: dict[str, str]
    uid: int | None = None
    gid: int | None = None
    groups: list[int] | None = None
    cwd: str | None = None
    contain: _contain.Containment | None = None
    cell: _contain.Cell = field(default_factory=_contain.Cell)


def _launch(args: tuple[str, ...], user: Account | None, env: Mapping[str, str] | None) -> _Launch:
    """How to start ``args``: as we are, or as ``user``, contained where the host allows."""
    if user is None:
        return _Launch(args, command_env(env))
    child_env = {**user.env(), **(env or {})}
    if user.uid == os.geteuid():
        return _Launch(args, child_env)
    if os.geteuid() != 0:
        raise HostError(args, f"cannot run as user {user.name}: not running as root")
    contain = _contain.detect()
    if not contain.available:
        # Dropped in the child, groups first, then gid, then uid; and out of any directory of
        # ours or the user's before it execs.
        return _Launch(args, child_env, user.uid, user.gid, [], "/")
    # Root starts the wrapper, which enters the step's cgroups and PID namespace and only then
    # drops (see _contain). The command is found here, so a missing one is told as it is
    # without the wrapper.
    found = shutil.which(args[0], path=child_env.get("PATH", USER_PATH))
    if found is None:
        raise HostError(args, "cannot run: No such file or directory")
    try:
        cell = contain.cell(user.uid)
    except _contain.UncontainedError as exc:
        raise HostError(args, f"not run: {exc}, so its limits would not hold") from exc
    wrapped = contain.wrap([found, *args[1:]], user.uid, user.gid, cell)
    return _Launch(tuple(wrapped), child_env, cwd="/", contain=contain, cell=cell)


def _whose(user: Account | None) -> str:
    """A user's words never reach our errors (see the module's docstring)."""
    return "" if user is None else f", as user {user.name}; its output is the user's: not shown"


def _ended(returncode: int) -> str:
    """How a command that did not succeed ended, in our words: a signal has a name."""
    if returncode >= 0:
        return "failed"
    try:
        name = signal.Signals(-returncode).name
    except ValueError:
        name = f"signal {-returncode}"
    return f"was killed by {name}"


def _collect(
    proc: subprocess.Popen[bytes], data: bytes | None, timeout: float
) -> tuple[bytes, bytes, bool]:
    """Feed stdin, read stdout and stderr up to OUTPUT_CAP each, until the child has exited.

    Unlike ``communicate()``, this does not wait for the pipes to close once the child has
    exited: a grandchild that left the process group (a user's own, say) could hold them open
    forever. Returns (stdout, stderr, whether the child exited before the timeout).
    """
    deadline = time.monotonic() + timeout
    bufs: dict[int, bytearray] = {}
    if proc.stdout is None or proc.stderr is None:
        raise ValueError("_collect needs both output pipes")
    out_fd, err_fd = proc.stdout.fileno(), proc.stderr.fileno()
    sel = selectors.DefaultSelector()
    pending = memoryview(data or b"")
    try:
        for fd in (out_fd, err_fd):
            os.set_blocking(fd, False)
            bufs[fd] = bytearray()
            sel.register(fd, selectors.EVENT_READ)
        if proc.stdin is not None:
            os.set_blocking(proc.stdin.fileno(), False)
            sel.register(proc.stdin.fileno(), selectors.EVENT_WRITE)
        while sel.get_map():
            if proc.poll() is not None:
                # Exited: take what is already buffered in the pipes, then stop.
                deadline = min(deadline, time.monotonic() + _DRAIN)
            left = deadline - time.monotonic()
            if left <= 0:
                break
            for key, _ in sel.select(min(left, 0.2)):
                if key.fd in bufs:
                    _take(key.fd, bufs[key.fd], sel)
                else:
                    pending = _feed(key.fd, pending, proc, sel)
    finally:
        sel.close()
        for pipe in (proc.stdin, proc.stdout, proc.stderr):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()
    try:
        proc.wait(timeout=max(0.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        return b"", b"", False
    return bytes(bufs[out_fd]), bytes(bufs[err_fd]), True


def _feed(
    fd: int, pending: memoryview, proc: subprocess.Popen[bytes], sel: selectors.BaseSelector
) -> memoryview:
    """Write the next chunk of stdin; close it once all is written (or the child closed it)."""
    try:
        pending = pending[os.write(fd, pending[:_PIPE_CHUNK]) :]
    except BrokenPipeError:
        pending = pending[:0]
    if not pending and proc.stdin is not None:
        sel.unregister(fd)
        proc.stdin.close()
    return pending


def _take(fd: int, buf: bytearray, sel: selectors.BaseSelector) -> None:
    """Read what the pipe has into ``buf``, up to OUTPUT_CAP: past it, read and dropped."""
    try:
        chunk = os.read(fd, _PIPE_CHUNK)
    except BlockingIOError:
        return
    if not chunk:
        sel.unregister(fd)
        return
    buf += chunk[: max(0, OUTPUT_CAP - len(buf))]


def _kill(
    proc: subprocess.Popen[bytes],
    contain: _contain.Containment | None = None,
    cell: _contain.Cell | None = None,
) -> bool:
    """SIGKILL the child's process group; wait for it, but never without end. True if reaped.

    A child traced by another process (a user may trace its own) is reported to its tracer
    first: until the tracer lets go, waitpid cannot see it, however dead it is. Waiting for it
    without a bound would hand that user the daemon. An unreaped child stays a zombie, and
    subprocess reaps it later.
    """
    if contain is not None and cell is not None:
        contain.end(proc, cell)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    try:
        proc.wait(timeout=_REAP)
    except subprocess.TimeoutExpired:
        return False
    return True


def _released(contain: _contain.Containment, cell: _contain.Cell, user: Account | None) -> None:
    """Remove a step's cgroups; log what it could not take along (it stays the user's)."""
    left = contain.release(cell)
    if left.notable:
        log.get().warning(
            "user_step_left_charged",
            owner=None if user is None else user.name,
            removed=left.removed,
            tasks=left.tasks,
            memory_bytes=left.memory,
        )


def _text(data: bytes | None) -> str:
    return (data or b"").decode("utf-8", errors="replace")
