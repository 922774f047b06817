"""The main job: one manifest in, every CA fetched, validated and trusted, then locked.

Side effects come in as parameters (the config's paths, the command runner,
the clock and the Secrets Manager client factory), so that the daemon, the
``apply`` command and the tests all run this same code.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from trustinstaller import _run, fetch, log, manifest, state, transaction
from trustinstaller.clock import Clock, iso, utc_now
from trustinstaller.config import Config
from trustinstaller.errors import (
    CertificateError,
    CertificatesRefusedError,
    LockedError,
    Problem,
    TrustInstallerError,
    redact,
)
from trustinstaller.manifest import CertificateRef, Credentials
from trustinstaller.stores.registry import Registry

if TYPE_CHECKING:
    from trustinstaller.validate import TrustedCA

ClientFactoryMaker = Callable[[Credentials | None], fetch.ClientFactory]


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
    make_clients: ClientFactoryMaker | None = None
    logger: Any = field(default_factory=log.get)

    def __post_init__(self) -> None:
        self.state = state.StateDir(self.config.state_dir, self.clock)
        # The last fetch phase's cost, for the status and the log; None before any fetch.
        self.fetch_stats: fetch.FetchStats | None = None

    # -- stores ---------------------------------------------------------------

    @property
    def registry(self) -> Registry:
        """The configured stores, and the store a journal entry names."""
        return Registry(self.config, self.runner)

    # -- lifecycle -----------------------------------------------------------

    def prepare(self, wait: float = 0.0) -> dict[str, Any]:
        """Create the state directory and finish any interrupted install; return the status.

        ``wait`` is how long to wait for a concurrent install (``apply``) to finish first.
        """
        self.state.ensure()
        with self.state.exclusive(wait=wait):
            self._recover()
        return self.status()

    def status(self) -> dict[str, Any]:
        """The current status document."""
        return self.state.read_status()

    def submit(self, data: bytes) -> dict[str, Any]:
        """Apply one manifest. Raise a TrustInstallerError (after recording it) on failure."""
        self.state.ensure()
        locked, since = self.state.is_locked()
        if locked:
            self.logger.warning("manifest_refused", reason="locked", outcome="locked")
            raise LockedError(since)
        with self.state.exclusive():
            self._recover()
            locked, since = self.state.is_locked()
            if locked:
                self.logger.warning("manifest_refused", reason="locked", outcome="locked")
                raise LockedError(since)
            self.fetch_stats = None
            try:
                return self._install(data)
            except TrustInstallerError as exc:
                self._record_failure(exc)
                raise
            except BaseException as exc:
                self._record_failure(exc)
                raise

    def _install(self, data: bytes) -> dict[str, Any]:
        parsed = manifest.parse(data)
        self.state.write_status({**state.empty_status(), "state": state.INSTALLING})
        now = self.clock()
        planned = self._fetch_and_validate(parsed.certificates, parsed.credentials, now)
        del parsed  # the credentials are not needed past the fetch
        certs = [p.ca for p in planned]
        stores = self.registry.all() if certs else []
        entries = [self._cert_status(p, [s.name for s in stores]) for p in planned]
        summary = {"certificates": entries}
        if certs:
            transaction.apply(stores, certs, self.state, summary, self.registry.named)
        status = self._locked_status(entries)
        if self.fetch_stats is not None:
            status["fetch"] = self.fetch_stats.as_dict()
        self.state.write_status(status)
        self.state.clear_journal()
        for e in entries:
            self.logger.info(
                "cert_installed",
                fingerprint_sha256=e["fingerprint_sha256"],
                subject=e["subject"],
                arn=e["source"]["arn"],
                stores=e["stores"],
                warnings=e["warnings"],
            )
        self.logger.info("lock_taken", count=len(entries), state=state.LOCKED)
        # One event per manifest, with what the fetch cost, so that an operator can see an
        # account nearing its Secrets Manager quota before sessions start failing.
        self.logger.info("manifest_installed", count=len(entries), state=state.LOCKED,
                         fetch=status.get("fetch"))  # fmt: skip
        return status

    def _fetch_and_validate(
        self, refs: Sequence[CertificateRef], credentials: Credentials | None, now: dt.datetime
    ) -> list[Planned]:
        if not refs:
            return []
        # Imported here, not at the top: cryptography is not needed on the path to ready.
        from trustinstaller.validate import validate

        maker = self.make_clients or self._default_clients
        self.fetch_stats = fetch.FetchStats()
        values = fetch.fetch_all(refs, maker(credentials), timeout=self.config.fetch_timeout,
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

    def _default_clients(self, credentials: Credentials | None) -> fetch.ClientFactory:
        return fetch.client_factory(credentials, endpoint_url=self.config.endpoint_url)

    def _cert_status(self, p: Planned, stores: list[str]) -> dict[str, Any]:
        first, *dups = p.refs
        warnings = list(p.ca.warnings)
        for d in dups:
            warnings.append(
                f"named again at {d.path} ({d.arn}): same certificate as {first.path}; "
                "installed once"
            )
        return {
            "fingerprint_sha256": p.ca.fingerprint_sha256,
            "subject": p.ca.subject,
            "not_before": iso(p.ca.not_before),
            "not_after": iso(p.ca.not_after),
            "source": first.as_dict(),
            "duplicates": [d.as_dict() for d in dups],
            "stores": stores,
            "warnings": warnings,
        }

    def _locked_status(self, entries: list[dict[str, Any]]) -> dict[str, Any]:
        warnings = [f"{e['source']['arn']}: {w}" for e in entries for w in e["warnings"]]
        return {
            "state": state.LOCKED,
            "locked_at": iso(self.clock()),
            "certificates": entries,
            "warnings": warnings,
            "errors": [],
        }

    def _record_failure(self, exc: BaseException) -> None:
        if isinstance(exc, TrustInstallerError):
            problems = [p.as_dict() for p in exc.problems()]
        else:
            problems = [Problem("internal_error", "", f"{type(exc).__name__}").as_dict()]
        problems += [
            Problem("rollback_failed", "", note).as_dict() for note in getattr(exc, "__notes__", [])
        ]
        failed = {**state.empty_status(), "state": state.FAILED, "errors": problems}
        if self.fetch_stats is not None:
            failed["fetch"] = self.fetch_stats.as_dict()
        self.state.write_status(failed)
        self.logger.warning(
            "manifest_refused",
            outcome=exc.outcome.label if isinstance(exc, TrustInstallerError) else "internal_error",
            errors=problems,
            fetch=failed.get("fetch"),
        )

    def _recover(self) -> None:
        """Finish an interrupted install: roll it back, or confirm a committed one."""

        def confirm(summary: dict[str, Any]) -> None:
            entries = summary.get("certificates", [])
            self.state.write_status(self._locked_status(entries))
            self.logger.info("install_confirmed", count=len(entries), state=state.LOCKED)

        def rolled_back() -> None:
            self.state.write_status({
                **state.empty_status(), "state": state.FAILED,
                "errors": [Problem("interrupted", "", "an install was interrupted and has been "
                                   "rolled back; submit the manifest again").as_dict()],
            })  # fmt: skip
            self.logger.warning("install_rolled_back", state=state.FAILED)

        found = transaction.recover(self.state, self.registry.named, confirm=confirm,
                                    rolled_back=rolled_back)  # fmt: skip
        if not found and self.state.read_status().get("state") == state.INSTALLING:
            self.state.write_status({
                **state.empty_status(), "state": state.FAILED,
                "errors": [Problem("interrupted", "", "an install was interrupted before "
                                   "anything was written; nothing to undo").as_dict()],
            })  # fmt: skip
