"""The service manager's environment: services started after the install get the variables.

It holds the env file's own variables, set in systemd's manager environment (PID 1's, the one
every unit started from then on inherits) with ``systemctl set-environment``, and taken out with
``systemctl unset-environment`` on rollback. The values are the paths of ``runtime_dir`` and
the OS store's hashed directory, from the configuration; nothing a client sends reaches them.

Quirks and rules this module exists for, one per line:
- systemd is the running manager exactly when /run/systemd/system is a directory (sd_booted(3));
  in a container without it, and when not root, the registry leaves the store out and logs why,
  so the status does not name it.
- As root, systemctl talks to PID 1 over /run/systemd/private, which PID 1 trusts from root
  without polkit and without any capability: the unit needs no allowance for it.
- ``unset-environment KEY=VALUE`` removes KEY only while it still holds VALUE, so a rollback
  never removes a value that someone else set after us.
- A variable the manager already held is recorded before it is replaced, and put back on
  rollback; ``show-environment`` quotes a value with special characters as ``$'...'``, which is
  refused rather than guessed at.
- A unit's own Environment= and EnvironmentFile= override the manager's: a service that names
  its own roots keeps them.
- The journal records the step before it is taken, so a crash at any point is undone by the
  next start's recovery before any stale path can outlive its bundle.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from trustinstaller import _run, log
from trustinstaller.documents import Entry, Step
from trustinstaller.errors import StoreError
from trustinstaller.stores import Recorder
from trustinstaller.stores.runtime_env import env_pairs, hashed_dir, quote

if TYPE_CHECKING:  # annotations only: keeps cryptography off the path to ready
    from trustinstaller.stores.registry import Registry
    from trustinstaller.validate import TrustedCA


# This store's own journal entry.
@dataclass(frozen=True)
class ManagerEnv(Step, action="setenv"):
    """Variables about to be set in systemd's manager environment, and the values they replace."""

    assigned: dict[str, str]
    original: dict[str, str]

    def __post_init__(self) -> None:
        for held in (self.assigned, self.original):
            if not isinstance(held, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in held.items()
            ):
                raise TypeError("assigned and original must map names to strings")


PREFIX = "systemd"
MARKER = Path("/run/systemd/system")
# PID 1 answers in milliseconds; a hung manager must not hold the install for long.
TIMEOUT = 10.0
SYSTEMCTL = ("systemctl", "--no-ask-password", "--no-pager")


def manager_running(marker: Path = MARKER) -> str | None:
    """None when this store can reach systemd's manager; else why it cannot, in our words."""
    if os.geteuid() != 0:
        return "not running as root: only root may change the service manager's environment"
    try:
        st = os.lstat(marker)
    except OSError:
        return f"systemd is not the running service manager (no {marker})"
    if not stat.S_ISDIR(st.st_mode):
        return f"systemd is not the running service manager ({marker} is not a directory)"
    return None


def parse_environment(text: str) -> dict[str, str | None]:
    """``systemctl show-environment`` as a mapping; a ``$'...'``-quoted value maps to None."""
    out: dict[str, str | None] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if not sep or not key:
            continue
        out[key] = None if value.startswith("$'") else value
    return out


def assignments(pairs: Mapping[str, str]) -> list[str]:
    """``KEY=VALUE`` arguments, each value checked to be one of our own plain paths."""
    return [f"{k}={quote(v, PREFIX)[1:-1]}" for k, v in pairs.items()]


def undo_plan(entry: ManagerEnv, current: Mapping[str, str | None]) -> tuple[list[str], list[str]]:
    """What a rollback runs: the ``unset-environment`` and the ``set-environment`` arguments.

    Ours are unset only where they still hold our value; an original value is put back only
    where ours is still there, so nothing set after us is touched.
    """
    unset = [f"{k}={v}" for k, v in entry.assigned.items() if k not in entry.original]
    restore = [
        f"{k}={v}"
        for k, v in entry.original.items()
        if k in entry.assigned and current.get(k) == entry.assigned[k]
    ]
    return unset, restore


@dataclass
class SystemdEnvStore:
    """Sets the runtime trust variables in systemd's manager environment, and takes them out."""

    pairs: dict[str, str]
    runner: _run.Runner = _run.run
    marker: Path = MARKER
    timeout: float = TIMEOUT
    name: str = PREFIX
    parallel: bool = False
    optional: bool = False

    def preflight(self) -> None:
        """Every value must be a plain path, and the manager must answer with values we can read."""
        assignments(self.pairs)
        current = self._show()
        quoted = sorted(k for k in self.pairs if k in current and current[k] is None)
        if quoted:
            raise StoreError(
                self.name,
                f"the service manager's environment holds {quoted[0]} with characters that "
                "cannot be read back; unset it with systemctl unset-environment, or set "
                "systemd_environment = false",
            )

    def install(self, certs: Sequence[TrustedCA], record: Recorder) -> None:
        """Record what the manager held, then set ours in one call."""
        current = self._show()
        # Even a value equal to ours: another install set it, and it must stay after our rollback.
        original = {k: v for k in self.pairs if (v := current.get(k)) is not None}
        record(ManagerEnv(dict(self.pairs), original))
        self._systemctl("set-environment", *assignments(self.pairs))
        log.get().info("systemd_environment_set", names=sorted(self.pairs))

    def verify(self, certs: Sequence[TrustedCA]) -> None:
        """The manager must hold each variable with our value."""
        current = self._show()
        wrong = sorted(k for k, v in self.pairs.items() if current.get(k) != v)
        if wrong:
            raise StoreError(self.name, f"the service manager's environment lacks {wrong[0]}")

    def notices(self, certs: Sequence[TrustedCA]) -> dict[str, list[str]]:
        """None: the variables name our files, not a certificate."""
        return {}

    def owns(self, entry: Entry) -> bool:
        """Our variables only, assigned as this configuration assigns them."""
        return (isinstance(entry, ManagerEnv) and entry.assigned == self.pairs
                and set(entry.original) <= set(self.pairs))  # fmt: skip

    def rollback(self, entries: Sequence[Entry]) -> None:
        """Unset ours where they still hold our values, and put back what they replaced."""
        steps = [e for e in entries if isinstance(e, ManagerEnv)]
        if not steps:
            return
        why = manager_running(self.marker)
        if why is not None:
            # No manager now means none then either (/run does not outlive a boot).
            log.get().info("systemd_environment_skipped", reason=why)
            return
        for entry in reversed(steps):
            unset, restore = undo_plan(entry, self._show())
            if unset:
                self._systemctl("unset-environment", *unset)
            if restore:
                self._systemctl("set-environment", *restore)
        log.get().info("systemd_environment_unset", names=sorted(steps[0].assigned))

    def _show(self) -> dict[str, str | None]:
        return parse_environment(self._systemctl("show-environment").stdout)

    def _systemctl(self, *args: str) -> _run.Result:
        return self.runner([*SYSTEMCTL, *args], timeout=self.timeout)


def all_from_config(context: Registry) -> list[SystemdEnvStore]:
    """The store when configured and systemd is the running manager; else none, and why."""
    if not context.config.systemd_environment:
        return []
    why = manager_running()
    if why is not None:
        log.get().info("systemd_environment_skipped", reason=why)
        return []
    return [from_name(PREFIX, context)]


def from_name(name: str, context: Registry) -> SystemdEnvStore:
    """The store, whatever the configuration says now: the journal's entry holds what to undo.

    Its variables are the env file's, from the configuration.
    """
    cfg = context.config
    pairs = env_pairs(cfg.runtime_env_dir, hashed_dir(cfg.os_store.bundle))
    return SystemdEnvStore(dict(pairs), context.runner_for(None))
