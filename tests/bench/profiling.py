"""Where the time goes: py-spy over one install, and ``-X importtime`` over the path to ready.

``python -m tests.bench.profiling`` starts the agent under ``py-spy record --idle`` in a fresh
namespace, submits a 20-certificate manifest, and prints, for the thread that served the
PUT, the wall time spent under each of the agent's own functions and under each external
command. A second start, with ``-X importtime``, prints the slowest imports before ready.
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from tests.bench import common
from tests.support.daemon import request
from tests.support.moto import moto_server

DEFAULT_PYSPY = common.REPO / ".venv" / "bench" / "pyspy" / "bin" / "py-spy"
RATE = 250  # samples per second
# A raw py-spy frame: "function (path/to/file.py:123)".
_FRAME = re.compile(r"^(?P<func>.+?) \((?P<file>[^()]*?):(?P<line>\d+)\)$")


def frame_name(frame: str) -> str:
    """``func (…/trustinstaller/x.py:12)`` -> ``trustinstaller/x.py:func``."""
    m = _FRAME.match(frame.strip())
    if not m:
        return frame.strip()
    path = m["file"]
    for anchor in ("trustinstaller/", "site-packages/", "python3.11/"):
        if anchor in path:
            path = path[path.index(anchor) :]
            break
    return f"{path}:{m['func']}"


def summarize(raw: str, *, marker: str = "do_PUT", top: int = 30) -> list[tuple[str, float]]:
    """Inclusive wall seconds per function, over the stacks that pass through ``marker``."""
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if marker not in stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        seen = {frame_name(f) for f in stack.split(";")[2:]}  # skip process and thread
        for name in seen:
            inclusive[name] += n
    rows = [("(all samples under the PUT)", total / RATE)]
    rows += [(name, n / RATE) for name, n in inclusive.most_common(top)]
    return rows


def profile_install(pyspy: Path, count: int, tree: str | None) -> str:
    """One install under py-spy; return the raw collapsed stacks."""
    with moto_server() as moto, common.scratch_root() as base:
        secrets = common.make_secrets(moto, count, "profile")
        with common.fresh_namespace(base, "profile") as ns:
            cfg, sock = common.agent_config(ns, moto.endpoint)
            out = ns.scratch / "pyspy.txt"
            log = (ns.scratch / "agent.log").open("wb")
            spy = ns.popen([str(pyspy), "record", "--idle", "--threads", "--nonblocking",
                            "--rate", str(RATE), "--format", "raw", "-o", str(out), "--",
                            str(common.AGENT), "--config", str(cfg), "serve"],
                           stdout=log, stderr=log,
                           env={"PYTHONPATH": tree} if tree else None)  # fmt: skip
            try:
                common.wait_answering(sock, spy, deadline_s=60)
                time.sleep(2.0)  # let any background warm-up finish, as before a real session
                t0 = time.perf_counter()
                code, doc = request(sock, "PUT", "/v1/manifest", common.manifest(secrets))
                elapsed = time.perf_counter() - t0
                if code != 200:
                    raise RuntimeError(f"agent answered {code}: {doc.get('message')}")
                print(f"PUT -> installed under py-spy: {elapsed:.3f} s", file=sys.stderr)
                # SIGTERM the agent (py-spy's child): it stops cleanly and py-spy writes out.
                children = Path(f"/proc/{spy.pid}/task/{spy.pid}/children").read_text().split()
                for pid in children:
                    os.kill(int(pid), 15)
                spy.wait(timeout=60)
            finally:
                common.stop(spy)
                log.close()
            return out.read_text()


def import_times(top: int, tree: str | None) -> list[tuple[str, float, float]]:
    """The slowest imports on the way to ready: (module, self s, cumulative s)."""
    with common.scratch_root() as base, common.fresh_namespace(base, "imports") as ns:
        cfg, sock = common.agent_config(ns, "http://127.0.0.1:9")
        err = ns.scratch / "importtime.txt"
        with err.open("wb") as f:
            proc = ns.popen([sys.executable, "-X", "importtime", str(common.AGENT),
                             "--config", str(cfg), "serve"], stdout=f, stderr=f,
                            env={"PYTHONPATH": tree} if tree else None)  # fmt: skip
        try:
            common.wait_answering(sock, proc)
        finally:
            common.stop(proc)
        rows = []
        for line in err.read_text().splitlines():
            if "daemon_ready" in line:
                break  # later imports are the background warm-up's, off the path to ready
            if not line.startswith("import time:") or "self [us]" in line:
                continue
            head, cum_us, name = line.split("|", 2)
            # One space before a top-level module, two more per level of nesting.
            rows.append((name[1:], int(head.split(":")[1]) / 1e6, int(cum_us) / 1e6))
    top_level = [r for r in rows if not r[0].startswith(" ")]
    print(f"imports before ready, all told: {sum(r[2] for r in top_level):.3f} s "
          f"({len(rows)} modules)", file=sys.stderr)  # fmt: skip
    return sorted(rows, key=lambda r: r[2], reverse=True)[:top]


def main(argv: Sequence[str] | None = None) -> int:
    """Print the install profile and the import profile."""
    p = argparse.ArgumentParser(prog="python -m tests.bench.profiling", description=__doc__)
    p.add_argument("--count", type=int, default=20, help="certificates (default 20)")
    p.add_argument("--py-spy", default=str(DEFAULT_PYSPY), help="the py-spy binary")
    p.add_argument("--top", type=int, default=30, help="rows to print")
    p.add_argument("--raw", metavar="PATH", help="keep py-spy's raw stacks here")
    p.add_argument("--agent-tree", metavar="DIR", help="profile the trustinstaller package in DIR")
    args = p.parse_args(argv)
    common.clean_environment()
    raw = profile_install(Path(args.py_spy).resolve(), args.count, args.agent_tree)
    if args.raw:
        Path(args.raw).write_text(raw)
    print(f"\nwall seconds under each function, thread serving PUT /v1/manifest ({args.count} "
          "certificates, inclusive, from py-spy --idle):")  # fmt: skip
    for name, secs in summarize(raw, top=args.top):
        print(f"  {secs:7.3f}  {name}")
    print("\nslowest imports before ready (python -X importtime; cumulative, self):")
    for name, self_s, cum_s in import_times(args.top, args.agent_tree):
        print(f"  {cum_s:7.3f}  {self_s:7.3f}  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
