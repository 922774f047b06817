"""A rollback killed between two of its unlinks, and retried at the next start, still has Java
drop every CA.

The OS store's rollback removes our ``.crt`` files one by one (each unlink made durable), then
rebuilds the store and tells the hooks a ``-`` line per CA. A kill (SIGKILL, power) after the
first unlink and before the last leaves the journal as it was, so the next start rolls back
again. That retry finds some of our files gone already. Were the hooks told only of the files
it removed itself, the first ones' links, dangling by then, would go as orphans with no ``-``
line, and Java's keystore would keep trusting CAs the install never finished installing, after
a rollback that reported success. So the hooks are told of every file the journal names, on
both paths.

The kill is real: strace's fault injection sends SIGKILL to the rollback at its second
``unlinkat``. Debian's own jks-keystore hook runs in a private namespace.
"""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import pytest

from tests.support import osroot
from tests.support.certs import make_ca
from tests.support.ns import PrivateNamespace
from tests.test_namespace import HAS_JAVA_HOOK, keytool_aliases

CAS = [make_ca(f"partial rollback CA {i}").pem for i in range(3)]
NAMES = [f"{i:064x}.crt" for i in range(3)]


# SIGKILL on entry to the rollback's second unlinkat: the first of our files is gone, the
# others are still there.
_KILL_AT_SECOND_UNLINK = [
    "strace", "-f", "-qq", "-o", "/dev/null",
    "-e", "trace=unlinkat", "-e", "inject=unlinkat:signal=KILL:when=2",
]  # fmt: skip


@pytest.mark.slow
@pytest.mark.root
@pytest.mark.skipif(not HAS_JAVA_HOOK, reason="needs ca-certificates-java's hook")
@pytest.mark.parametrize("way", ["fast", "script"])
def test_a_rollback_killed_between_its_unlinks_still_clears_java(tmp_path: Path, way: str) -> None:
    with PrivateNamespace(tmp_path / way) as ns:
        done = ns.run(["update-ca-certificates"])
        assert done.returncode == 0, done.stderr
        before = keytool_aliases(ns)
        ours = ns.path("/usr/local/share/ca-certificates") / "trustinstaller"
        ours.mkdir()
        for name, pem in zip(NAMES, CAS, strict=True):
            (ours / name).write_text(pem)
        env = {"PYTHONPATH": str(Path(__file__).parents[1])}
        step = [sys.executable, "-c", osroot.OS_STORE_STEP, way]
        done = ns.run([*step, "install"], cwd="/", env=env)
        assert done.returncode == 0, done.stdout + done.stderr
        assert len(keytool_aliases(ns)) == len(before) + 3

        killed = ns.run([*_KILL_AT_SECOND_UNLINK, *step, "rollback", *NAMES], cwd="/", env=env)
        assert killed.returncode in (-signal.SIGKILL, 128 + signal.SIGKILL), killed.stderr
        left = sorted(p.name for p in ours.iterdir())
        # Killed part-way through its removals: the first file gone, the others still there.
        assert NAMES[0] not in left, left
        assert left, left

        # The next start: the journal is unchanged, so the same entries are rolled back again.
        done = ns.run([*step, "rollback", *NAMES], cwd="/", env=env)
        assert done.returncode == 0, done.stdout + done.stderr
        assert not list(ours.iterdir())
        assert not [n for n in keytool_aliases(ns) if n not in before], (
            "Java's keystore still trusts CAs whose rollback reported success"
        )
