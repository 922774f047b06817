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
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from trustinstaller import documents, log
from trustinstaller.clock import iso
from trustinstaller.documents import CertEntry, Entry, Journal, Phase
from trustinstaller.errors import StoreError, TrustInstallerError, own_words
from trustinstaller.state import StateDir
from trustinstaller.stores import Recorder, Store

if TYPE_CHECKING:  # annotations only: keeps cryptography off the path to ready
    from trustinstaller.validate import TrustedCA


class JournalWriter:
    """Keeps the write-ahead record of one install, persisting it before each step."""

    def __init__(self, state: StateDir, certificates: Sequence[CertEntry]) -> None:
        self.state = state
        self.lock = threading.Lock()  # store threads record in turn
        self.journal = Journal(secrets.token_hex(8), iso(state.clock()),
                               certificates=tuple(certificates))  # fmt: skip
        self.state.write_journal(self.journal)

    def recorder(self, store: str) -> Recorder:
        """A recorder that tags each entry with ``store`` and persists it at once."""

        def record(entry: Entry) -> None:
            with self.lock:
                self.journal = documents.with_entry(self.journal, store, entry)
                self.state.write_journal(self.journal)

        return record

    def update(self, **changes: Any) -> None:
        """Persist a new phase or summary."""
        with self.lock:
            self.journal = replace(self.journal, **changes)
            self.state.write_journal(self.journal)


def apply(
    stores: Sequence[Store],
    certs: Sequence[TrustedCA],
    state: StateDir,
    certificates: Sequence[CertEntry],
    resolve: Callable[[str], Store],
) -> tuple[CertEntry, ...]:
    """Install ``certs`` into every store and verify; on any failure roll everything back.

    A store that depends on no other (an NSS database) is installed and verified in a thread of
    its own while the other stores run in order on this thread: certutil then overlaps
    update-ca-certificates and its hooks, the slowest step. The journal records every step
    before it is taken, whichever thread takes it, and every branch has finished before a
    rollback starts, so the rollback never races a store command.

    An optional store (a user's own NSS database) that fails is rolled back alone, and the
    install goes on without it: that user controls the store and could otherwise veto the
    install for everyone. Returns ``certificates`` as installed: without such a store, and
    with a warning that names it.
    """
    # In order: the runtime-env store copies the bundle that the OS store just regenerated.
    serial = [s for s in stores if not s.parallel]
    parallel = [s for s in stores if s.parallel]
    skipped_lock = threading.Lock()
    skipped: dict[str, str] = {}

    def tolerant(step: Callable[[Store], None]) -> Callable[[Store], None]:
        def run(store: Store) -> None:
            if store.name in skipped:
                return
            try:
                step(store)
            # Any failure of an optional store, not only ours: its owner controls what its
            # commands see and print, so the kind of error is the owner's choice too.
            except Exception as exc:
                if not store.optional:
                    raise
                with skipped_lock:
                    # Our words only: the owner's process may have printed anything at all.
                    skipped[store.name] = own_words(exc)
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
        store.install(certs, writer.recorder(store.name))

    notes: dict[str, list[str]] = {}

    def notice(store: Store) -> None:
        found = store.notices(certs)
        with skipped_lock:
            for fingerprint, warnings in found.items():
                notes.setdefault(fingerprint, []).extend(warnings)

    with concurrent.futures.ThreadPoolExecutor(
        max_workers=max(1, len(parallel)), thread_name_prefix="store"
    ) as pool:
        on_every_store(tolerant(lambda s: s.preflight()))
        writer = JournalWriter(state, certificates)
        try:
            on_every_store(tolerant(install))
            writer.update(phase=Phase.VERIFYING)
            on_every_store(tolerant(lambda s: s.verify(certs)))
            on_every_store(tolerant(notice))
            by_store = writer.journal.by_store()
            for s in stores:
                if s.name in skipped:
                    s.rollback(by_store.get(s.name, []))
        except BaseException as exc:
            # Even when this thread was interrupted: no store command may still be running.
            pool.shutdown(wait=True)
            try:
                rollback(writer.journal, resolve)
            except TrustInstallerError as rb_exc:
                # The journal stays, so the next start tries the rollback again.
                exc.add_note(
                    f"rollback failed too, and will be retried at the next start: {rb_exc}"
                )
                raise exc from rb_exc
            state.clear_journal()
            raise
        installed = tuple(
            replace(
                c,
                stores=tuple(n for n in c.stores if n not in skipped),
                warnings=(*c.warnings, *(
                    f"not installed in {name}, which failed and was rolled back alone: {why}"
                    for name, why in skipped.items()
                ), *notes.get(c.fingerprint_sha256, ())),
            )
            for c in certificates
        )  # fmt: skip
        writer.update(certificates=installed, phase=Phase.COMMITTED)
    return installed


def rollback(journal: Journal, resolve: Callable[[str], Store]) -> None:
    """Undo a journal's entries, stores in reverse order of first appearance, users' last.

    Every store is rolled back even when one fails, so that no store can keep the others from
    being undone; then the first failure is raised (the journal stays for the next start).
    A user's own database (an optional store, which depends on no other) comes after root's
    stores, so that a user who stalls its steps cannot hold root's rollback back.
    """
    by_store = journal.by_store()
    failures: list[TrustInstallerError] = []
    stores: list[tuple[str, Store]] = []
    for name in reversed(list(by_store)):
        try:
            stores.append((name, resolve(name)))
        except TrustInstallerError as exc:
            failures.append(exc)
    stores.sort(key=lambda named: named[1].optional)  # stable: the order stays within each
    for name, store in stores:
        try:
            store.rollback(by_store[name])
        except TrustInstallerError as exc:
            failures.append(exc)
        except Exception as exc:  # noqa: BLE001 (reported below, after the other stores)
            failures.append(StoreError(name, f"rollback failed ({type(exc).__name__})"))
    if failures:
        raise failures[0]


def recover(
    state: StateDir,
    resolve: Callable[[str], Store],
    *,
    confirm: Callable[[tuple[CertEntry, ...]], None],
    rolled_back: Callable[[], None],
) -> bool:
    """Finish an install a crash interrupted; False when no journal was there.

    A committed journal is confirmed (``confirm`` gets its certificates, to record the lock); any
    other is rolled back (then ``rolled_back`` records it). Each is told before the journal is
    removed, so a crash in between only repeats this.
    """
    journal = state.read_journal()
    if journal is None:
        return False
    if journal.phase is Phase.COMMITTED:
        confirm(journal.certificates)
    else:
        rollback(journal, resolve)
        rolled_back()
    state.clear_journal()
    return True
