"""Which stores the configuration asks for, and which store a journal entry belongs to.

The one place that turns the configuration into stores: the installer asks it for every store
of an install, and the recovery asks it for the store each journal entry names.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from trustinstaller import _run, log
from trustinstaller.config import Config
from trustinstaller.errors import StateError
from trustinstaller.stores import Store, chromium, firefox, systemd_env
from trustinstaller.stores.debian_fast import FastDebianStore
from trustinstaller.stores.nss import NssDatabase, NssStore
from trustinstaller.stores.runtime_env import RuntimeEnvStore, env_pairs, hashed_dir
from trustinstaller.stores.systemd_env import SystemdEnvStore

OS = "os"
ENV = "env"
SYSTEMD = "systemd"
NSS_PREFIX = "nss:"


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
        cfg = self.config
        return [
            self.os_store(),
            *(chromium.ChromiumPolicyStore(d) for d in cfg.chromium_policies),
            *(self.nss_store(db) for db in cfg.nss_databases),
            # After the OS store: the policies name the .crt files it writes.
            *(firefox.FirefoxStore(p, cfg.os_store) for p in cfg.firefox_policies),
            # After the OS store: its combined bundle copies the OS bundle just regenerated.
            self.env_store(),
            # Last, so that the variables name files already written and verified soonest;
            # first undone, so that no service started later gets a path about to go.
            *([self.systemd_store()] if self._systemd_runs() else []),
        ]

    def _systemd_runs(self) -> bool:
        """Whether the systemd store applies: configured, and systemd is the running manager."""
        if not self.config.systemd_environment:
            return False
        why = systemd_env.manager_running()
        if why is not None:
            log.get().info("systemd_environment_skipped", reason=why)
        return why is None

    def named(self, name: str) -> Store:
        """The store a journal entry names; StateError for a name no store has."""
        cfg = self.config
        if name == OS:
            return self.os_store()
        if name == ENV:
            return self.env_store()
        if name == SYSTEMD:
            # Whatever the configuration says now: the journal's entry holds what to undo.
            return self.systemd_store()
        if name.startswith(NSS_PREFIX):
            # The owner comes from the configuration, never from the journal or the disk. A
            # database no longer configured is handled as root's: the checked walk then
            # refuses anything another user could change.
            db = NssDatabase.parse(name.removeprefix(NSS_PREFIX))
            return self.nss_store(
                next((d for d in cfg.nss_databases if d.directory == db.directory), db)
            )
        if name.startswith(chromium.PREFIX):
            return chromium.ChromiumPolicyStore(Path(name.removeprefix(chromium.PREFIX)))
        if name.startswith(firefox.PREFIX):
            return firefox.FirefoxStore(Path(name.removeprefix(firefox.PREFIX)), cfg.os_store)
        raise StateError(
            str(cfg.state_dir),
            f"the journal names a store this version does not know ({name[:100]!r}); "
            "undo that install by hand, then remove journal.json",
        )

    def os_store(self) -> FastDebianStore:
        """The OS store: its proven fast path, or update-ca-certificates itself."""
        return FastDebianStore(self.runner, self.config.os_store,
                               timeout=self.config.update_timeout)  # fmt: skip

    def systemd_store(self) -> SystemdEnvStore:
        """The service manager's environment: the env file's variables, from the configuration."""
        cfg = self.config
        pairs = env_pairs(cfg.runtime_env_dir, hashed_dir(cfg.os_store.bundle))
        return SystemdEnvStore(dict(pairs), self.runner)

    def nss_store(self, db: NssDatabase) -> NssStore:
        """One NSS database's store."""
        runner = self.runner
        if db.owner is not None:
            budget = self.budgets.get(db.owner.name)
            if budget is None:
                budget = _run.UserBudget(self.runner, db.owner, self.config.user_store_timeout)
                self.budgets[db.owner.name] = budget
            runner = budget
        return NssStore(runner, db, timeout=self.config.certutil_timeout)

    def env_store(self) -> RuntimeEnvStore:
        """The runtime trust environment's store."""
        cfg = self.config
        return RuntimeEnvStore(cfg.runtime_env_dir, cfg.os_store.bundle,
                               certs_dir=cfg.os_store.our_dir)  # fmt: skip
