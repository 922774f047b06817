"""Which stores the configuration asks for, and which store a journal entry belongs to.

The one place that turns the configuration into stores: the installer asks it for every store
of an install, and the recovery asks it for the store each journal entry names. Each store's
module owns its name and its construction from the configuration (``StoreModule``); this module
holds only the table of them, in the order an install takes them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from trustinstaller import _run
from trustinstaller._run import Account
from trustinstaller.config import Config
from trustinstaller.errors import StateError
from trustinstaller.stores import (
    Store,
    chromium,
    debian_fast,
    firefox,
    nss,
    runtime_env,
    systemd_env,
)


class StoreModule(Protocol):
    """What a store's module exports for the registry."""

    # The store's name ("os"), or the start of each of its stores' names ("nss:").
    PREFIX: str

    def all_from_config(self, context: Registry) -> Sequence[Store]:
        """The module's stores that ``context.config`` asks for, in install order."""

    def from_name(self, name: str, context: Registry) -> Store:
        """The store a journal entry names (``name`` is PREFIX or starts with it)."""


# In the order an install takes them, and the reverse of a rollback's.
TABLE: tuple[StoreModule, ...] = (
    debian_fast,
    chromium,
    nss,
    # After the OS store: the policies name the .crt files it writes.
    firefox,
    # After the OS store: its combined bundle copies the OS bundle just regenerated.
    runtime_env,
    # Last, so that the variables name files already written and verified soonest; first
    # undone, so that no service started later gets a path about to go.
    systemd_env,
)


def _owns(module: StoreModule, name: str) -> bool:
    """Whether ``name`` is one of ``module``'s stores: its name, or a name under its prefix."""
    prefix = module.PREFIX
    return name.startswith(prefix) if prefix.endswith(":") else name == prefix


@dataclass(frozen=True)
class Registry:
    """The stores of one configuration, each run through ``runner``.

    One registry serves one install, or one recovery: the steps of each user's databases share
    that user's ``user_store_timeout``, across both databases and the rollback.
    """

    config: Config
    runner: _run.Runner = _run.run
    budgets: dict[str, _run.UserBudget] = field(default_factory=dict, compare=False)

    def all(self) -> list[Store]:
        """Every configured store, in the order an install takes them."""
        return [store for module in TABLE for store in module.all_from_config(self)]

    def named(self, name: str) -> Store:
        """The store a journal entry names; StateError for a name no configured store has.

        Only a configured one: a store is made from its name (a Chromium store from any path
        after ``chromium:``), and its rollback writes what its entries say, as root.
        """
        # The service manager's store is left out of all() where systemd does not run now; its
        # entries, which only it owns, are still its to undo (it checks for a manager itself).
        for module in TABLE:
            if _owns(module, name):
                store = module.from_name(name, self)
                if name == systemd_env.PREFIX or store.name in {s.name for s in self.all()}:
                    return store
                break
        raise StateError(
            str(self.config.state_dir),
            f"the journal names a store this configuration does not have ({name[:100]!r}); "
            "undo that install by hand, then remove journal.json",
        )

    def runner_for(self, owner: Account | None) -> _run.Runner:
        """Root's runner, or ``owner``'s budget: one per user, shared by that user's stores."""
        if owner is None:
            return self.runner
        budget = self.budgets.get(owner.name)
        if budget is None:
            budget = _run.UserBudget(self.runner, owner, self.config.user_store_timeout)
            self.budgets[owner.name] = budget
        return budget

    def systemd_store(self) -> systemd_env.SystemdEnvStore:
        """The service manager's environment's store, whatever the configuration says."""
        return systemd_env.from_name(systemd_env.PREFIX, self)
