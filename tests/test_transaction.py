"""The transaction's rollback order and failure rules, with stores that only record their calls."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import pytest

from trustinstaller import transaction
from trustinstaller.documents import Entry, Journal, Mkdir, Write, with_entry
from trustinstaller.errors import StoreError


@dataclass
class Recording:
    """A store whose rollback is recorded in ``log``, and fails when ``fails`` says so."""

    name: str
    log: list[str]
    fails: type[Exception] | None = None
    seen: list[Entry] = field(default_factory=list)
    optional: bool = False

    def owns(self, entry: Entry) -> bool:
        """Every entry but a write into /etc, which no test store writes."""
        return getattr(entry, "dir", None) != "/etc"

    def rollback(self, entries: Sequence[Entry]) -> None:
        """Record the call, then fail if told to."""
        self.log.append(self.name)
        self.seen.extend(entries)
        if self.fails is StoreError:
            raise StoreError(self.name, "cannot undo")
        if self.fails is not None:
            raise self.fails("the owner's doing")


def journal(*names: str) -> Journal:
    """A journal with one mkdir entry for each store, in this order."""
    j = Journal("id", "2026-12-02T00:00:00Z")
    for n in names:
        j = with_entry(j, n, Mkdir(f"/x/{n}"))
    return j


@pytest.mark.parametrize(
    ("failing", "kind"),
    [("c", StoreError), ("b", StoreError), ("a", StoreError), ("b", RuntimeError)],
)
def test_every_store_is_rolled_back_before_the_first_failure_is_raised(
    failing: str, kind: type[Exception]
) -> None:
    """Stores roll back in reverse order; one failing, of any kind, stops none of the others."""
    log: list[str] = []
    stores = {n: Recording(n, log, kind if n == failing else None) for n in "abc"}
    with pytest.raises(StoreError) as caught:
        transaction.rollback(journal("a", "b", "c"), stores.__getitem__)
    assert log == ["c", "b", "a"]
    assert caught.value.store == failing
    assert all(s.seen == [Mkdir(f"/x/{s.name}")] for s in stores.values())


def test_an_entry_outside_its_store_is_never_rolled_back() -> None:
    """A store whose entries include one it does not own is not rolled back at all (the journal
    stays), and says so; the other stores still are."""
    log: list[str] = []
    stores = {n: Recording(n, log) for n in "ab"}
    j = with_entry(journal("a", "b"), "b", Write("/etc", "passwd", original="cm9vdA=="))
    with pytest.raises(StoreError, match="write entry outside what this store writes") as caught:
        transaction.rollback(j, stores.__getitem__)
    assert caught.value.store == "b"
    assert log == ["a"]
    assert stores["b"].seen == []


@pytest.mark.parametrize(
    ("order", "users", "expected"),
    [
        ("abc", "", "cba"),
        ("abc", "b", "cab"),
        ("abcd", "bc", "dacb"),
        ("abc", "abc", "cba"),
        ("abc", "a", "cba"),
        ("abc", "c", "bac"),
    ],
)
def test_users_databases_are_rolled_back_after_roots_stores(
    order: str, users: str, expected: str
) -> None:
    """Root's stores first, in reverse order; then the users' (optional) ones, also reversed."""
    log: list[str] = []
    stores = {n: Recording(n, log, optional=n in users) for n in order}
    transaction.rollback(journal(*order), stores.__getitem__)
    assert "".join(log) == expected


def test_the_first_of_several_failures_is_raised_after_all_ran() -> None:
    """With two failing rollbacks, both ran and the first in rollback order is raised."""
    log: list[str] = []
    stores = {"a": Recording("a", log, StoreError), "b": Recording("b", log),
              "c": Recording("c", log, StoreError)}  # fmt: skip
    with pytest.raises(StoreError) as caught:
        transaction.rollback(journal("a", "b", "c"), stores.__getitem__)
    assert (log, caught.value.store) == (["c", "b", "a"], "c")
