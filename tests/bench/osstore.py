"""One OS-store update and its rollback, timed from inside a bench namespace.

``python -m tests.bench.osstore fast|script`` runs in a namespace whose local CA directory
already holds the certificates under ``trustinstaller/``: it times the store's update (the fast
path, or update-ca-certificates as DebianStore runs it), then the rollback of that install
(our files removed, the store rebuilt and the hooks told), and prints both as JSON.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from collections.abc import Callable

from trustinstaller import _run
from trustinstaller.documents import Entry, Write
from trustinstaller.stores.debian import DebianStore, Update
from trustinstaller.stores.debian_fast import FastDebianStore


def _cpu() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def _timed(step: Callable[[], None]) -> tuple[float, float]:
    cpu0, t0 = _cpu(), time.perf_counter()
    step()
    return time.perf_counter() - t0, _cpu() - cpu0


def main(argv: list[str]) -> int:
    """Time one update and one rollback; print ``{t_store_s, cpu_s, t_rollback_s, ...}``."""
    store = FastDebianStore(_run.run) if argv[0] == "fast" else DebianStore(_run.run)
    our = store.paths.our_dir
    entries: list[Entry] = [Write(str(our), n) for n in sorted(os.listdir(our))]
    entries.append(Update())
    t, cpu = _timed(lambda: store._update())
    ran = store.os_update
    t_rb, cpu_rb = _timed(lambda: store.rollback(entries))
    print(json.dumps({"t_store_s": t, "cpu_s": cpu, "t_rollback_s": t_rb,
                      "cpu_rollback_s": cpu_rb, "fast": float(ran == "fast")}))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
