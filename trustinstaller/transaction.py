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
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from trustinstaller import documents, log
from trustinstaller.clock import iso
from trustinstaller.documents import CertEntry, Entry, Journal, Phase, Recorded
from trustinstaller.errors import RollbackFailedError, StoreError, TrustInstallerError, own_words
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

        def record(*entries: Entry) -> None:
            with self.lock:
                for entry in entries:
                    self.journal = documents.with_entry(self.journal, store, entry)
                self.state.write_journal(self.journal)

        return record

    def update(self, **changes: Any) -> None:
        """Persist a new phase or summary."""
        with self.lock:
            self.journal = replace(self.journal, **changes)
            self.state.write_journal(self.journal)


@dataclass(frozen=True)
class Applied:
    """What an install left out: for the installer to word in the status."""

    # Each optional store that failed and was rolled back alone: its name, and why (our words).
    skipped: dict[str, str] = field(default_factory=dict)
    # Warnings stores have about certificates they installed, by SHA-256 fingerprint.
    notes: dict[str, list[str]] = field(default_factory=dict)


class Transaction:
    """One install across every store: preflight, install, verify and commit, or roll back.

    A store that depends on no other (an NSS database) runs each step in a thread of its own
    while the other stores run in order on this thread: certutil then overlaps
    update-ca-certificates and its hooks, the slowest step (``_each`` decides). What a store's
    install leaves as its rest (the OS store's hooks, once its bundle is written) runs in a
    thread too, beside the stores after it and the verify, which reads no hook's output (the
    OS store's verify reads the bundle); every rest ends before the install is done. The
    journal records every step before it is taken, whichever thread takes it, and every branch
    has finished before a rollback starts, so the rollback never races a store command.

    An optional store (a user's own NSS database) that fails is rolled back alone, and the
    install goes on without it: that user controls the store and could otherwise veto the
    install for everyone. It comes back in ``Applied.skipped``.
    """

    def __init__(
        self,
        stores: Sequence[Store],
        certs: Sequence[TrustedCA],
        state: StateDir,
        resolve: Callable[[str], Store],
    ) -> None:
        self.stores, self.certs, self.state, self.resolve = stores, certs, state, resolve
        # In order: the runtime-env store copies the bundle that the OS store just regenerated.
        self._serial = [s for s in stores if not s.parallel]
        self._parallel = [s for s in stores if s.parallel]
        self._lock = threading.Lock()
        self._applied = Applied()
        self._writer: JournalWriter | None = None
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None

    def run(self, certificates: Sequence[CertEntry]) -> Applied:
        """Preflight, install and verify; on any failure roll back and raise.

        The rollback's own failure raises RollbackFailedError, which carries both; the journal then
        stays for the next start.
        """
        # One worker more than the parallel stores: a rest starts as soon as it is submitted.
        with concurrent.futures.ThreadPoolExecutor(
            max_workers=len(self._parallel) + 1, thread_name_prefix="store"
        ) as self._pool:
            self._each(lambda s: s.preflight())
            self._writer = JournalWriter(self.state, certificates)
            try:
                rests: list[concurrent.futures.Future[None]] = []
                self._each(lambda s: self._install(s, rests))
                self._journal().update(phase=Phase.VERIFYING)
                self._each(lambda s: s.verify(self.certs))
                self._each(self._notice)
                for f in concurrent.futures.as_completed(rests):
                    f.result()  # raises that rest's failure
                by_store = self._journal().journal.by_store()
                for s in self.stores:
                    if s.name in self._applied.skipped:
                        s.rollback(by_store.get(s.name, []))
            except BaseException as exc:
                # Even when this thread was interrupted: no store command may still be running.
                self._pool.shutdown(wait=True)
                self._roll_back_after(exc)
                raise
        return self._applied

    def commit(self, certificates: Sequence[CertEntry]) -> None:
        """Record the install as finished, with the certificates as the status will show them."""
        self._journal().update(certificates=tuple(certificates), phase=Phase.COMMITTED)

    def _journal(self) -> JournalWriter:
        if self._writer is None:
            raise RuntimeError("the transaction has not started")
        return self._writer

    def _roll_back_after(self, exc: BaseException) -> None:
        """Undo the journal, after ``exc``; return so the caller re-raises it, or raise."""
        try:
            rollback(self._journal().journal, self.resolve)
        except TrustInstallerError as failed:
            # The journal stays, so the next start tries the rollback again.
            if isinstance(exc, Exception):
                raise RollbackFailedError(exc, failed) from exc
            raise exc from failed  # KeyboardInterrupt, SystemExit: as they are
        self.state.clear_journal()

    def _install(self, store: Store, rests: list[concurrent.futures.Future[None]]) -> None:
        """Install ``store``, and start the rest it leaves, if any, in the pool."""
        rest = store.install(self.certs, self._journal().recorder(store.name))
        if rest is None:
            return
        if self._pool is None:
            raise RuntimeError("the transaction has not started")
        finish = self._tolerant(lambda _: rest())
        with self._lock:
            rests.append(self._pool.submit(finish, store))

    def _notice(self, store: Store) -> None:
        found = store.notices(self.certs)
        with self._lock:
            for fingerprint, warnings in found.items():
                self._applied.notes.setdefault(fingerprint, []).extend(warnings)

    def _each(self, step: Callable[[Store], None]) -> None:
        """Take ``step`` on every store not skipped: the parallel ones in the pool, the rest in
        order here; both branches end before this returns or raises."""
        if self._pool is None:
            raise RuntimeError("the transaction has not started")
        tolerant = self._tolerant(step)
        futures = [self._pool.submit(tolerant, s) for s in self._parallel]
        try:
            for s in self._serial:
                tolerant(s)
        finally:
            concurrent.futures.wait(futures)
        for f in futures:
            f.result()  # raises that branch's failure

    def _tolerant(self, step: Callable[[Store], None]) -> Callable[[Store], None]:
        def run(store: Store) -> None:
            if store.name in self._applied.skipped:
                return
            try:
                step(store)
            # Any failure of an optional store, not only ours: its owner controls what its
            # commands see and print, so the kind of error is the owner's choice too.
            except Exception as exc:
                if not store.optional:
                    raise
                why = own_words(exc)  # the owner's process may have printed anything at all
                with self._lock:
                    self._applied.skipped[store.name] = why
                log.get().warning("store_skipped", store=store.name, error=why)

        return run


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
        foreign = [e for e in by_store[name] if not store.owns(e)]
        if foreign:
            # Never acted on: a rollback writes and removes what an entry names, as root.
            failures.append(StoreError(name[:100], f"the journal has a {foreign[0].action} "
                                       "entry outside what this store writes; undo that "
                                       "install by hand, then remove journal.json"))  # fmt: skip
            continue
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
    defer_optional: bool = False,
) -> bool:
    """Finish an install a crash interrupted; False when no journal was there.

    A committed journal is confirmed (``confirm`` gets its certificates, to record the lock); any
    other is rolled back (then ``rolled_back`` records it). Each is told before the journal is
    removed, so a crash in between only repeats this.

    With ``defer_optional``, only root's stores are rolled back now; the journal is then
    replaced by the optional stores' entries alone (a user's databases), for a later call to
    undo: the daemon gets ready without waiting on a user's steps.
    """
    journal = state.read_journal()
    if journal is None:
        return False
    if journal.phase is Phase.COMMITTED:
        confirm(journal.certificates)
    else:
        later = _optional_entries(journal, resolve) if defer_optional else ()
        if later:
            now = tuple(r for r in journal.entries if r not in later)
            rollback(replace(journal, entries=now), resolve)
            state.write_journal(replace(journal, entries=later))
            rolled_back()
            return True
        rollback(journal, resolve)
        rolled_back()
    state.clear_journal()
    return True


def _optional_entries(journal: Journal, resolve: Callable[[str], Store]) -> tuple[Recorded, ...]:
    """The entries of the journal's optional stores (a user's databases)."""
    optional: set[str] = set()
    for name in journal.by_store():
        try:
            if resolve(name).optional:
                optional.add(name)
        except TrustInstallerError:
            pass  # rolled back (and reported) with root's stores
    return tuple(r for r in journal.entries if r.store in optional)
