"""The process runner: what a child run for a user gets, and what it cannot do to the daemon."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from trustinstaller import _run
from trustinstaller.errors import HostError

NOBODY = _run.Account("nobody", 65534, 65534, Path("/nonexistent"))


@pytest.mark.root
def test_a_child_run_for_a_user_has_dropped_everything_before_it_runs() -> None:
    """Real, effective and saved uid and gid are the user's, no supplementary group, cwd /."""
    assert os.geteuid() == 0, "this test runs as root in CI"
    done = _run.run(
        ["sh", "-c", "grep -E '^(Uid|Gid|Groups):' /proc/self/status; pwd"], user=NOBODY
    )
    lines = dict(line.split(":", 1) for line in done.stdout.strip().splitlines()[:3])
    assert lines["Uid"].split() == ["65534"] * 4
    assert lines["Gid"].split() == ["65534"] * 4
    assert lines["Groups"].split() == []
    assert done.stdout.strip().splitlines()[-1] == "/"


# Run by a fresh interpreter: give this process supplementary groups (adm, shadow), then run a
# child for nobody and print the groups it has.
GROUPS_CHILD = """
import os, pathlib
from trustinstaller import _run
os.setgroups([4, 42])
nobody = _run.Account("nobody", 65534, 65534, pathlib.Path("/nonexistent"))
print(_run.run(["sh", "-c", "grep '^Groups:' /proc/self/status"], user=nobody).stdout)
"""


@pytest.mark.root
def test_a_child_run_for_a_user_keeps_none_of_the_parents_supplementary_groups() -> None:
    """A daemon that has supplementary groups (adm, shadow) passes none of them to the user."""
    done = subprocess.run([sys.executable, "-c", GROUPS_CHILD], capture_output=True, text=True,
                          timeout=60, check=True, stdin=subprocess.DEVNULL)  # fmt: skip
    assert done.stdout.split() == ["Groups:"], done.stdout


@pytest.mark.root
def test_a_child_run_for_a_user_gets_none_of_the_daemons_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Credentials in the daemon's environment never reach a process the user may read."""
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "daemon-secret-never-shown")
    monkeypatch.setenv("LD_PRELOAD", "/tmp/nothing.so")
    done = _run.run(["env"], user=NOBODY)
    env = dict(line.split("=", 1) for line in done.stdout.splitlines())
    assert env == NOBODY.env()


def test_output_past_the_cap_is_read_and_dropped() -> None:
    """A child printing without end costs the daemon OUTPUT_CAP bytes, not its memory."""
    done = _run.run(["head", "-c", str(5 * _run.OUTPUT_CAP), "/dev/zero"])
    assert len(done.stdout) == _run.OUTPUT_CAP


def test_a_grandchild_holding_the_pipes_does_not_hang_the_run() -> None:
    """Once the child exits, the run returns even if something it left keeps stdout open."""
    started = time.monotonic()
    done = _run.run(["sh", "-c", "setsid sleep 30 & echo started"], timeout=20)
    assert done.stdout == "started\n"
    assert time.monotonic() - started < 20


def test_a_child_past_its_timeout_is_killed_with_its_group() -> None:
    """A stopped or hanging child is killed at the timeout and reported as a host error."""
    with pytest.raises(HostError, match=r"timed out after 0\.5 s"):
        _run.run(["sh", "-c", "kill -STOP $$"], timeout=0.5)


def test_input_larger_than_a_pipe_is_fed_whole() -> None:
    """stdin is written as the child reads it, past the pipe's buffer."""
    data = os.urandom(300_000)
    done = _run.run(["sh", "-c", "wc -c"], input=data)
    assert done.stdout.strip() == str(len(data))
