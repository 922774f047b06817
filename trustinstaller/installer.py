"""The main job: one manifest in, every CA fetched, validated and trusted, then locked.

Side effects come in as parameters (the config's paths, the command runner and
the clock), so that the daemon, the ``apply`` command and the tests all run this
same code; Secrets Manager is reached at the configuration's ``endpoint_url``.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from trustinstaller import _contain, _run, documents, fetch, log, manifest, state, transaction
from trustinstaller.clock import Clock, iso, utc_now
from trustinstaller.config import Config
from trustinstaller.documents import CertEntry, FetchReport, JSONObject, State, Status
from trustinstaller.errors import (
    CertificateError,
    CertificatesRefusedError,
    LockedError,
    Problem,
    ProblemKind,
    TrustInstallerError,
    redact,
)
from trustinstaller.manifest import CertificateRef, Credentials
from trustinstaller.stores.debian import DebianStore
from trustinstaller.stores.registry import Registry

if TYPE_CHECKING:
    from trustinstaller.validate import TrustedCA


def _credential_values(credentials: Credentials | None) -> list[str]:
    if credentials is None:
        return []
    values = [credentials.access_key_id, credentials.secret_access_key]
    return values + ([credentials.session_token] if credentials.session_token else [])


@dataclass(frozen=True)
class Planned:
    """A validated certificate and every manifest entry that named it."""

    ca: TrustedCA
    refs: tuple[CertificateRef, ...]


@dataclass
class Installer:
    """Runs installs against one configuration and state directory."""

    config: Config
    runner: _run.Runner = _run.run
    clock: Clock = utc_now
    logger: Any = field(default_factory=log.get)

    def __post_init__(self) -> None:
        self.state = state.StateDir(self.config.state_dir, self.clock)
        # The last fetch phase's cost, for the status and the log; None before any fetch.
        self.fetch_stats: fetch.FetchStats | None = None

    # -- stores ---------------------------------------------------------------

    @property
    def registry(self) -> Registry:
        """The configured stores, and the store a journal entry names; a new one each time."""
        return Registry(self.config, self.runner)

    # -- lifecycle -----------------------------------------------------------

    def prepare(self, wait: float = 0.0, *, defer_users: bool = False) -> Status:
        """Create the state directory and finish any interrupted install; return the status.

        ``wait`` is how long to wait for a concurrent install (``apply``) to finish first. With
        ``defer_users``, a user's databases in an interrupted install are left in the journal
        for ``finish_recovery()``, so that a start waits on root's stores only.
        """
        self.state.ensure()
        if os.geteuid() == 0 and any(db.owner for db in self.config.nss_databases):
            # What a step run as a user gets on this host (README, "In a container").
            contain = _contain.detect()
            self.logger.info("user_steps_contained", **contain.describe())
            if contain.problem is not None:
                self.logger.warning("user_steps_limits_missing", reason=contain.problem)
        with self.state.exclusive(wait=wait):
            self._recover(defer_users=defer_users)
        return self.status()

    def recovery_left(self) -> bool:
        """Whether ``prepare(defer_users=True)`` left a user's databases to undo."""
        return self.state.read_journal() is not None

    def finish_recovery(self) -> None:
        """Undo what ``prepare(defer_users=True)`` left: a user's databases, within that user's
        ``user_store_timeout``. A submit that takes the lock first does it itself."""
        try:
            with self.state.exclusive(wait=self.config.update_timeout):
                self._recover()
        except TrustInstallerError as exc:
            self.logger.warning("user_rollback_incomplete", reason=exc.outcome.label)

    def status(self) -> Status:
        """The current status document."""
        return self.state.read_status()

    def submit(self, data: bytes) -> Status:
        """Apply one manifest. Raise a TrustInstallerError (after recording it) on failure."""
        self.state.ensure()
        self._refuse_if_locked()
        with self.state.exclusive():
            self._recover()
            # Again, under the lock: the recovery may just have confirmed a committed install.
            self._refuse_if_locked()
            self.fetch_stats = None
            try:
                return self._install(data)
            except TrustInstallerError as exc:
                self._record_failure(exc)
                raise
            except BaseException as exc:
                self._record_failure(exc)
                raise

    def _refuse_if_locked(self) -> None:
        current = self.state.read_status()
        if current.locked:
            self.logger.warning("manifest_refused", reason="locked", outcome="locked")
            raise LockedError(current.locked_at)

    def _install(self, data: bytes) -> Status:
        parsed = manifest.parse(data)
        self.state.write_status(Status(State.INSTALLING))
        now = self.clock()
        planned = self._fetch_and_validate(parsed.certificates, parsed.credentials, now)
        del parsed  # the credentials are not needed past the fetch
        certs = [p.ca for p in planned]
        registry = self.registry  # one for the install: its users' budgets span the rollback
        stores = registry.all() if certs else []
        entries = tuple(self._cert_status(p, [s.name for s in stores]) for p in planned)
        if certs:
            txn = transaction.Transaction(stores, certs, self.state, registry.named)
            entries = self._worded(entries, txn.run(entries))
            txn.commit(entries)
        os_update = next((s.os_update for s in stores if isinstance(s, DebianStore)), None)
        status = self.state.write_status(self._locked_status(entries, os_update))
        self.state.clear_journal()
        for e in entries:
            self.logger.info(
                "cert_installed",
                fingerprint_sha256=e.fingerprint_sha256,
                subject=e.subject,
                arn=e.source.arn,
                stores=list(e.stores),
                warnings=list(e.warnings),
            )
        self.logger.info("lock_taken", count=len(entries), state=State.LOCKED.value)
        # One event per manifest, with what the fetch cost, so that an operator can see an
        # account nearing its Secrets Manager quota before sessions start failing.
        self.logger.info("manifest_installed", count=len(entries), state=State.LOCKED.value,
                         fetch=self._fetch_json(), os_update=os_update)  # fmt: skip
        return status

    def _fetch_report(self) -> FetchReport | None:
        return None if self.fetch_stats is None else self.fetch_stats.report

    def _fetch_json(self) -> JSONObject | None:
        report = self._fetch_report()
        return None if report is None else documents.fetch_to_json(report)

    def _fetch_and_validate(
        self, refs: Sequence[CertificateRef], credentials: Credentials | None, now: dt.datetime
    ) -> list[Planned]:
        if not refs:
            return []
        # Imported here, not at the top: cryptography is not needed on the path to ready.
        from trustinstaller.validate import validate

        self.fetch_stats = fetch.FetchStats()
        clients = fetch.client_factory(credentials, endpoint_url=self.config.endpoint_url)
        values = fetch.fetch_all(refs, clients, timeout=self.config.fetch_timeout,
                                 stats=self.fetch_stats)  # fmt: skip
        # Both kinds of failure are made from what the endpoint sent: scrubbed of the
        # credentials here, the one place that holds both, before anything logs or records them.
        secrets = _credential_values(credentials)
        failures: list[CertificateError] = []
        by_fp: dict[str, Planned] = {}
        for ref, value in zip(refs, values, strict=True):
            if isinstance(value, CertificateError):
                redact(value, secrets)
                failures.append(value)
                continue
            try:
                ca = validate(ref.arn, secret_string=value.secret_string,
                              secret_binary=value.secret_binary, now=now)  # fmt: skip
            except CertificateError as exc:
                redact(exc, secrets)
                failures.append(exc)
                continue
            if ca.fingerprint_sha256 in by_fp:
                first = by_fp[ca.fingerprint_sha256]
                by_fp[ca.fingerprint_sha256] = Planned(first.ca, (*first.refs, ref))
            else:
                by_fp[ca.fingerprint_sha256] = Planned(ca, (ref,))
        if failures:
            for f in failures:
                self.logger.warning("cert_refused", arn=f.arn, kind=f.kind, reason=f.reason)
            raise CertificatesRefusedError(failures)
        return list(by_fp.values())

    def _cert_status(self, p: Planned, stores: list[str]) -> CertEntry:
        first, *dups = p.refs
        warnings = list(p.ca.warnings)
        for d in dups:
            warnings.append(
                f"named again at {d.path} ({d.arn}): same certificate as {first.path}; "
                "installed once"
            )
        return CertEntry(
            fingerprint_sha256=p.ca.fingerprint_sha256,
            subject=p.ca.subject,
            not_before=iso(p.ca.not_before),
            not_after=iso(p.ca.not_after),
            source=first.source(),
            duplicates=tuple(d.source() for d in dups),
            stores=tuple(stores),
            warnings=tuple(warnings),
        )

    @staticmethod
    def _worded(
        entries: Sequence[CertEntry], applied: transaction.Applied
    ) -> tuple[CertEntry, ...]:
        """The certificates as installed: without the stores skipped, with a warning for each."""
        skipped = applied.skipped
        return tuple(
            replace(
                e,
                stores=tuple(n for n in e.stores if n not in skipped),
                warnings=(*e.warnings, *(
                    f"not installed in {name}, which failed and was rolled back alone: {why}"
                    for name, why in skipped.items()
                ), *applied.notes.get(e.fingerprint_sha256, ())),
            )
            for e in entries
        )  # fmt: skip

    def _locked_status(self, entries: Sequence[CertEntry], os_update: str | None = None) -> Status:
        return Status(
            State.LOCKED,
            certificates=tuple(entries),
            warnings=tuple(f"{e.source.arn}: {w}" for e in entries for w in e.warnings),
            locked_at=iso(self.clock()),
            fetch=self._fetch_report(),
            os_update=os_update,
        )

    def _record_failure(self, exc: BaseException) -> None:
        if isinstance(exc, TrustInstallerError):
            problems = list(exc.problems())
        else:
            problems = [Problem(ProblemKind.INTERNAL_ERROR, "", f"{type(exc).__name__}")]
        self.state.write_status(
            Status(State.FAILED, errors=tuple(problems), fetch=self._fetch_report())
        )
        self.logger.warning(
            "manifest_refused",
            outcome=exc.outcome.label if isinstance(exc, TrustInstallerError) else "internal_error",
            errors=[p.as_dict() for p in problems],
            fetch=self._fetch_json(),
        )

    def _recover(self, *, defer_users: bool = False) -> None:
        """Finish an interrupted install: roll it back, or confirm a committed one."""

        def confirm(entries: tuple[CertEntry, ...]) -> None:
            self.state.write_status(self._locked_status(entries))
            self.logger.info("install_confirmed", count=len(entries), state=State.LOCKED.value)

        def rolled_back() -> None:
            self._interrupted("an install was interrupted and has been rolled back; submit the "
                              "manifest again")  # fmt: skip
            self.logger.warning("install_rolled_back", state=State.FAILED.value)

        found = transaction.recover(
            self.state,
            self.registry.named,
            confirm=confirm,
            rolled_back=rolled_back,
            defer_optional=defer_users,
        )
        if not found and self.state.read_status().state is State.INSTALLING:
            self._interrupted("an install was interrupted before anything was written; "
                              "nothing to undo")  # fmt: skip

    def _interrupted(self, message: str) -> None:
        self.state.write_status(
            Status(State.FAILED, errors=(Problem(ProblemKind.INTERRUPTED, "", message),))
        )
