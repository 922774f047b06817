"""The only place that spawns processes.

Every command runs with stdin closed (certutil prompts for a password forever
when stdin is not a TTY), a timeout that kills its whole process group, and a
PATH that includes /usr/sbin, where update-ca-certificates lives.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from trustinstaller.errors import HostError

DEFAULT_TIMEOUT = 120.0
_SBIN = ("/usr/local/sbin", "/usr/sbin", "/sbin")


@dataclass(frozen=True)
class Result:
    """A finished command."""

    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str


class Runner(Protocol):
    """Runs a command and returns its result, or raises HostError."""

    def __call__(
        self,
        argv: Sequence[str],
        *,
        timeout: float = DEFAULT_TIMEOUT,
        check: bool = True,
        env: Mapping[str, str] | None = None,
        input: bytes | None = None,  # noqa: A002 (the subprocess name)
    ) -> Result: ...


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


def run(
    argv: Sequence[str],
    *,
    timeout: float = DEFAULT_TIMEOUT,
    check: bool = True,
    env: Mapping[str, str] | None = None,
    input: bytes | None = None,  # noqa: A002 (the subprocess name)
) -> Result:
    """Run ``argv`` with stdin closed (or fed ``input``) and a timeout.

    Raise HostError if it cannot start, times out, or (with ``check``) exits non-zero.
    """
    args = tuple(argv)
    try:
        proc = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL if input is None else subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=command_env(env),
            start_new_session=True,  # so a timeout can kill the children too
        )
    except OSError as exc:
        raise HostError(args, f"cannot run: {exc.strerror or exc}") from exc
    try:
        out, err = proc.communicate(input=input, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        _kill_group(proc)
        out, err = proc.communicate()
        raise HostError(
            args,
            f"timed out after {timeout:g} s and was killed",
            output=_text(err) or _text(out),
        ) from exc
    except BaseException:
        _kill_group(proc)
        proc.wait()
        raise
    result = Result(args, proc.returncode, _text(out), _text(err))
    if check and proc.returncode != 0:
        raise HostError(
            args, "failed", returncode=proc.returncode, output=result.stderr or result.stdout
        )
    return result


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


def _text(data: bytes | None) -> str:
    return (data or b"").decode("utf-8", errors="replace")
