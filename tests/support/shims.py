"""PATH shims: stand-ins for store commands that fail, hang or stop at a chosen call.

A shim is a small sh script placed first on PATH. It counts its calls in a file beside it,
and can pass a call through to the real command, so a test can make "the second certutil -A"
fail or block while every other call does the real work.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

REAL_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


# certutil's batch (``-B -i FILE``, each line a command's arguments), run as one call of the
# shim per line with the batch call's other arguments: a body that counts, fails or blocks
# "-A" calls sees each add of a batch as it sees a lone one.
SPLIT_BATCH = """if [ "$1" = "-B" ]; then
    shift; rest=""; batch=""
    while [ $# -gt 0 ]; do
        case "$1" in -i) batch=$2; shift 2 ;; *) rest="$rest $1"; shift ;; esac
    done
    while read -r line; do "$0" $line $rest || exit $?; done < "$batch"
    exit 0
fi"""


def write_shim(shim_dir: Path, name: str, body: str) -> Path:
    """Write an executable shim ``name``; ``$REAL`` is the real command, ``$N`` this call's number.

    The body also sees ``$STATE`` (a directory for marker files) and the original arguments.
    A certutil shim runs a batch as one call of itself per line (``SPLIT_BATCH``).
    """
    if name == "certutil":
        body = f"{SPLIT_BATCH}\n{body}"
    shim_dir.mkdir(parents=True, exist_ok=True)
    state = shim_dir / f"{name}.state"
    state.mkdir(exist_ok=True)
    script = f"""#!/bin/sh
REAL=$(PATH={REAL_PATH} command -v {name})
STATE={state}
N=$(( $(cat "$STATE/count" 2>/dev/null || echo 0) + 1 ))
echo "$N" > "$STATE/count"
{body}
exec "$REAL" "$@"
"""
    path = shim_dir / name
    path.write_text(script)
    path.chmod(0o755)
    return path


# A body fragment: on the call numbered $1, record our pid and process group, then hang.
BLOCK_ON_CALL = """if [ "$N" = "{n}" ]; then
    echo "$$" > "$STATE/blocked.pid"
    while [ ! -e "$STATE/release" ]; do sleep 0.05; done
fi"""


def wait_for(path: Path, timeout: float = 60) -> None:
    """Wait until ``path`` exists."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} did not appear")
        time.sleep(0.02)


def kill_group_of(pid_file: Path) -> None:
    """SIGKILL the whole process group of the pid in ``pid_file``, as systemd kills a cgroup."""
    pid = int(pid_file.read_text())
    with contextlib.suppress(ProcessLookupError):
        os.killpg(os.getpgid(pid), signal.SIGKILL)
