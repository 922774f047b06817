"""Apply certificates to every store as one transaction: install, verify, or roll back.

The journal lives in the state directory. Every store step is recorded there
before it is taken, so after a crash at any point the next start knows what
may have happened and can undo it. A journal whose phase is ``committed``
means the install finished and only the lock remains to be confirmed.
"""

from __future__ import annotations

import concurrent.futures
import secrets
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from trustinstaller import log
from trustinstaller.clock import iso
from trustinstaller.errors import TrustInstallerError
from trustinstaller.state import StateDir
from trustinstaller.stores import Entry, Recorder, Store

if TYPE_CHECKING:  # annotations only: keeps cryptography off the path to ready
    from trustinstaller.validate import TrustedCA

APPLYING = "applying"
VERIFYING = "verifying"
COMMITTED = "committed"


class Journal:
    """The write-ahead record of one install."""

    def __init__(self, state: StateDir, summary: dict[str, Any]) -> None:
        self.state = state
        self.data: dict[str, Any] = {
            "id": secrets.token_hex(8),
            "started_at": iso(state.clock()),
            "phase": APPLYING,
            "summary": summary,
            "entries": [],
        }
        self.state.write_journal(self.data)

    def recorder(self, store: str) -> Recorder:
        """A recorder that tags each entry with ``store`` and persists it at once."""

        def record(action: str, **fields: Any) -> None:
            self.data["entries"].append({"store": store, "action": action, **fields})
            self.state.write_journal(self.data)

        return record

    def set_phase(self, phase: str) -> None:
        """Persist the install's phase."""
        self.data["phase"] = phase
        self.state.write_journal(self.data)


def apply(
    stores: Sequence[Store],
    certs: Sequence[TrustedCA],
    state: StateDir,
    summary: dict[str, Any],
    resolve: Callable[[str], Store],
) -> dict[str, str]:
    """Install ``certs`` into every store and verify; on any failure roll everything back.

    A store that depends on no other (an NSS database) is installed and verified in a thread of
    its own while the other stores run in order on this thread: certutil then overlaps
    update-ca-certificates and its hooks, the slowest step. The journal records every step
    before it is taken, whichever thread takes it, and every branch has finished before a
    rollback starts, so the rollback never races a store command.

    An optional store (a user's own NSS database) that fails is rolled back alone, and the
    install goes on without it: that user controls the store and could otherwise veto the
    install for everyone. Returns {store name: reason} for those; the summary's certificates
    lose the store and gain a warning.
    """
    # In order: the runtime-env store copies the bundle that the OS store just regenerated.
    serial = [s for s in stores if not s.parallel]
    parallel = [s for s in stores if s.parallel]
    journal_lock = threading.Lock()
    skipped: dict[str, str] = {}

    def tolerant(step: Callable[[Store], None]) -> Callable[[Store], None]:
        def run(store: Store) -> None:
            if store.name in skipped:
                return
            try:
                step(store)
            except TrustInstallerError as exc:
                if not store.optional:
                    raise
                with journal_lock:
                    skipped[store.name] = " ".join(str(exc).split())[:500]
                log.get().warning("store_skipped", store=store.name, error=skipped[store.name])

        return run

    def on_every_store(step: Callable[[Store], None]) -> None:
        futures = [pool.submit(step, s) for s in parallel]
        try:
            for s in serial:
                step(s)
        finally:
            # Both branches end before this returns or raises, so a rollback never races.
            concurrent.futures.wait(futures)
        for f in futures:
            f.result()  # raises that branch's failure

    def install(store: Store) -> None:
        record = journal.recorder(store.name)

        def record_in_turn(action: str, **fields: Any) -> None:
            with journal_lock:
                record(action, **fields)

        store.install(certs, record_in_turn)

    with concurrent.futures.ThreadPoolExecutor(
        max_workers=max(1, len(parallel)), thread_name_prefix="store"
    ) as pool:
        on_every_store(tolerant(lambda s: s.preflight()))
        journal = Journal(state, summary)
        try:
            on_every_store(tolerant(install))
            journal.set_phase(VERIFYING)
            on_every_store(tolerant(lambda s: s.verify(certs)))
            by_store = _entries_by_store(journal.data)
            for s in stores:
                if s.name in skipped:
                    s.rollback(by_store.get(s.name, []))
        except BaseException as exc:
            # Even when this thread was interrupted: no store command may still be running.
            pool.shutdown(wait=True)
            try:
                rollback(journal.data, resolve)
            except TrustInstallerError as rb_exc:
                # The journal stays, so the next start tries the rollback again.
                exc.add_note(
                    f"rollback failed too, and will be retried at the next start: {rb_exc}"
                )
                raise exc from rb_exc
            state.clear_journal()
            raise
        for cert in summary.get("certificates", []):
            cert["stores"] = [n for n in cert["stores"] if n not in skipped]
            cert["warnings"] += [
                f"not installed in {name}, which failed and was rolled back alone: {why}"
                for name, why in skipped.items()
            ]
        journal.data["summary"] = summary
        journal.set_phase(COMMITTED)
    return skipped


def _entries_by_store(journal: dict[str, Any]) -> dict[str, list[Entry]]:
    by_store: dict[str, list[Entry]] = {}
    for entry in journal.get("entries", []):
        by_store.setdefault(entry["store"], []).append(entry)
    return by_store


def rollback(journal: dict[str, Any], resolve: Callable[[str], Store]) -> None:
    """Undo a journal's entries, stores in reverse order of first appearance."""
    by_store = _entries_by_store(journal)
    for name in reversed(list(by_store)):
        resolve(name).rollback(by_store[name])


def recover(
    state: StateDir,
    resolve: Callable[[str], Store],
    *,
    confirm: Callable[[dict[str, Any]], None],
    rolled_back: Callable[[], None],
) -> bool:
    """Finish an install a crash interrupted; False when no journal was there.

    A committed journal is confirmed (``confirm`` gets its summary, to record the lock); any
    other is rolled back (then ``rolled_back`` records it). Each is told before the journal is
    removed, so a crash in between only repeats this.
    """
    journal = state.read_journal()
    if journal is None:
        return False
    if journal.get("phase") == COMMITTED:
        confirm(journal.get("summary", {}))
    else:
        rollback(journal, resolve)
        rolled_back()
    state.clear_journal()
    return True
