"""Trust stores. Each module exports one class with the same small interface.

A store installs certificates, verifies them, and rolls back from the journal
entries it recorded. It records each step *before* taking it, so that a
rollback after a crash at any point knows everything that may have happened.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:  # annotations only: keeps cryptography off the path to ready
    from trustinstaller.validate import TrustedCA

Entry = dict[str, Any]


class Recorder(Protocol):
    """Persists one journal entry before the step it describes is taken."""

    def __call__(self, action: str, **fields: Any) -> None: ...


class Store(Protocol):
    """One trust store (the OS bundle, an NSS database, ...)."""

    @property
    def name(self) -> str:
        """The store's name in journal entries and status answers."""

    @property
    def parallel(self) -> bool:
        """Whether it depends on no other store, so may run in a thread beside them."""

    @property
    def optional(self) -> bool:
        """Whether its failure is a warning rather than the install's (a user's own database)."""

    def preflight(self) -> None:
        """Check the tools and paths are usable, before anything is written."""

    def install(self, certs: Sequence[TrustedCA], record: Recorder) -> None:
        """Add every certificate; record each step before taking it."""

    def verify(self, certs: Sequence[TrustedCA]) -> None:
        """Raise StoreError unless every certificate is in place."""

    def rollback(self, entries: Sequence[Entry]) -> None:
        """Undo every recorded step; idempotent, and safe on a partial journal."""
