"""Attacks on the OS store's hooks started beside the rehash (debian_fast.EARLY_HOOKS)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from tests.support.certs import make_ca
from tests.support.ns import PrivateNamespace
from tests.test_namespace import HAS_JAVA_HOOK
from trustinstaller import _fs
from trustinstaller.stores import debian_fast, remove_temporaries

CAS = [make_ca(f"early hook review CA {i}").pem for i in range(2)]

# An install's OS store step, whose hooks start beside the rehash where they are proven.
_INSTALL = """
from trustinstaller import _run
from trustinstaller.stores.debian_fast import FastDebianStore
store = FastDebianStore(_run.run, command="/usr/sbin/update-ca-certificates")
try:
    store._update()
    print(f"ok early_hooks={store.early_hooks}")
except Exception as exc:
    print(f"failed={type(exc).__name__} early_hooks={store.early_hooks}: {exc}")
"""

# openssl, its rehash slowed, and update-ca-certificates: each logs its start and end.
_SHIMS = {
    "openssl": """#!/bin/sh
[ "$1" = rehash ] || exec /usr/bin/openssl "$@"
echo "rehash start" >> "$STEP_LOG"
sleep 2
/usr/bin/openssl "$@"; rc=$?
echo "rehash end" >> "$STEP_LOG"
exit $rc
""",
    "update-ca-certificates": """#!/bin/sh
echo "script start" >> "$STEP_LOG"
/usr/sbin/update-ca-certificates "$@"; rc=$?
echo "script end" >> "$STEP_LOG"
exit $rc
""",
}


@pytest.mark.slow
@pytest.mark.root
@pytest.mark.skipif(not HAS_JAVA_HOOK, reason="needs ca-certificates-java's hook")
def test_an_early_hook_never_runs_update_ca_certificates_beside_our_rehash(
    tmp_path: Path,
) -> None:
    """jks-keystore runs ``dpkg --triggers-only --pending``, which processes every pending
    trigger, ca-certificates' own (update-ca-certificates) included: started beside our
    rehash, that script must not rewrite the links and the bundle while we do."""
    if not debian_fast.proven_early("/etc/ca-certificates/update.d/jks-keystore"):
        pytest.skip("this host's Java hook is not in EARLY_HOOKS")
    with PrivateNamespace(tmp_path / "ns") as ns:
        done = ns.run(["update-ca-certificates"])
        assert done.returncode == 0, done.stderr
        # A trigger left pending (an interrupted apt, a package's --no-await activation).
        done = ns.run(["dpkg-trigger", "--no-await", "update-ca-certificates"])
        assert done.returncode == 0, done.stderr
        ours = ns.path("/usr/local/share/ca-certificates") / "trustinstaller"
        ours.mkdir()
        for i, pem in enumerate(CAS):
            (ours / f"{i:064x}.crt").write_text(pem)
        shims = tmp_path / "shims"
        shims.mkdir()
        for name, text in _SHIMS.items():
            (shims / name).write_text(text)
            (shims / name).chmod(0o755)
        log = tmp_path / "steps.log"
        env = {"PYTHONPATH": str(Path(__file__).parents[1]), "STEP_LOG": str(log),
               "PATH": f"{shims}:{os.environ['PATH']}"}  # fmt: skip
        done = ns.run([sys.executable, "-c", _INSTALL], cwd="/", env=env)
        assert done.returncode == 0, done.stdout + done.stderr
        # With a trigger pending, the hooks wait for the bundle, as the script runs them.
        assert "ok early_hooks=False" in done.stdout, done.stdout + done.stderr
        events = log.read_text().splitlines()
        assert "rehash start" in events, events
        # No update-ca-certificates may be running while our rehash is.
        running: set[str] = set()
        for event in events:
            step, what = event.split()
            if what == "start":
                running.add(step)
            else:
                running.discard(step)
            assert running != {"rehash", "script"}, f"overlapped: {events}"


def test_remove_temporaries_takes_only_the_temporaries_of_the_names_given(tmp_path: Path) -> None:
    """A killed write's ``.NAME.<hex>.tmp`` goes; another file's, a link, a directory stay."""
    d = tmp_path / "d"
    d.mkdir()
    keep = tmp_path / "keep"
    keep.write_text("not ours")
    (d / ".env.0123456789ab.tmp").write_text("ours")
    (d / ".env.fedcba987654.tmp").symlink_to(keep)
    (d / ".env.0a0a0a0a0a0a.tmp").mkdir()
    (d / ".ca-bundle.pem.0123456789ab.tmp").write_text("another name's")
    (d / "env").write_text("the file itself")
    with _fs.opened_dir(d) as fd:
        remove_temporaries(fd, ["env"])
    assert sorted(os.listdir(d)) == [".ca-bundle.pem.0123456789ab.tmp", ".env.0a0a0a0a0a0a.tmp",
                                     "env"]  # fmt: skip
    assert keep.read_text() == "not ours"


@pytest.mark.parametrize(
    ("unincorp", "status", "update", "pending"),
    [
        (b"", b"Package: a\nStatus: install ok installed\n", None, False),
        (b"update-ca-certificates ca-certificates\n", b"", None, True),
        (
            b"",
            b"Package: a\nStatus: install ok triggers-pending\nTriggers-Pending: x\n",
            None,
            True,
        ),
        (b"", b"Package: a\nStatus: install ok installed\n", b"Triggers-Pending: x\n", True),
    ],
)
def test_a_pending_trigger_keeps_the_hooks_after_the_bundle(
    tmp_path: Path, unincorp: bytes, status: bytes, update: bytes | None, pending: bool
) -> None:
    """Any trigger dpkg holds, incorporated or not, or in its update journal, counts."""
    (tmp_path / "triggers").mkdir()
    (tmp_path / "updates").mkdir()
    (tmp_path / "triggers" / "Unincorp").write_bytes(unincorp)
    (tmp_path / "status").write_bytes(status)
    if update is not None:
        (tmp_path / "updates" / "0000").write_bytes(update)
    assert debian_fast.triggers_pending(tmp_path) is pending
    (tmp_path / "status").unlink()
    (tmp_path / "status").symlink_to(tmp_path / "triggers" / "Unincorp")
    assert debian_fast.triggers_pending(tmp_path)  # never read through a link: cannot tell
