"""The part of the NSS store that runs as a database's owner, never as root.

The daemon runs this text with ``python3 -I -S - OP ARGS...`` (on stdin) in a child that has
already dropped to the owner (see ``_run.run(user=...)``), so every path here is looked up
with the owner's rights only: a symlink the owner planted leads where the owner may go, no
further. It uses the standard library alone and imports nothing from the package, so that
the owner's process reads no code but this text. What it prints is untrusted by the daemon:
one line of JSON, checked there.

Operations:
- ``probe DIR``: which of DIR and its parents are missing, and whether DIR holds cert9.db.
- ``mkdirs DIR...``: create each directory, in order, mode 0700; one that exists is fine.
- ``remove DIR [CREATED...]``: remove the database files in DIR, then each created directory
  (last first) when it is empty.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys

DB_FILES = ("cert9.db", "key4.db", "pkcs11.txt")


def probe(directory: str) -> dict[str, object]:
    """The missing directories (outermost first) and whether the database exists."""
    missing: list[str] = []
    d = directory
    while not os.path.lexists(d) and d != os.path.dirname(d):
        missing.append(d)
        d = os.path.dirname(d)
    return {
        "missing": list(reversed(missing)),
        "db": os.path.isfile(os.path.join(directory, "cert9.db")),
    }


def mkdirs(paths: list[str]) -> dict[str, object]:
    """Create each directory in order (0700); those that exist already are left as they are."""
    for p in paths:
        with contextlib.suppress(FileExistsError):
            os.mkdir(p, 0o700)
    return {}


def remove(directory: str, created: list[str]) -> dict[str, object]:
    """Remove the database files, then the created directories that are empty."""
    for name in DB_FILES:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(directory, name))
    for d in reversed(created):
        with contextlib.suppress(OSError):  # not empty: something else lives there
            os.rmdir(d)
    return {}


def main(argv: list[str]) -> int:
    """Run one operation and print its JSON result."""
    op, *args = argv
    if op == "probe":
        result = probe(args[0])
    elif op == "mkdirs":
        result = mkdirs(args)
    elif op == "remove":
        result = remove(args[0], args[1:])
    else:
        print(f"unknown operation {op!r}", file=sys.stderr)
        return 2
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
