"""The state directory's documents: an unreadable one is an error, never a blank slate."""

from __future__ import annotations

from pathlib import Path

import pytest

from trustinstaller.config import Config
from trustinstaller.errors import StateError
from trustinstaller.installer import Installer
from trustinstaller.state import StateDir

pytestmark = pytest.mark.root

BAD = [b"{not json", b"[]", b'{"phase": "applying"}', b"\xff\xfe"]


@pytest.mark.parametrize("raw", BAD)
def test_a_malformed_journal_is_an_error_naming_it_not_nothing_in_flight(
    tmp_path: Path, raw: bytes
) -> None:
    """Read as "no install in flight", a half-done install would never be rolled back."""
    state = StateDir(tmp_path / "state")
    state.ensure()
    (state.path / "journal.json").write_bytes(raw)
    with pytest.raises(StateError, match=r"journal\.json is not a journal"):
        state.read_journal()


@pytest.mark.parametrize("raw", [*BAD, b'{"state": "unlocked"}'])
def test_a_malformed_status_is_an_error_not_an_open_session(tmp_path: Path, raw: bytes) -> None:
    """Read as an empty status, a broken file would unlock a locked session."""
    state = StateDir(tmp_path / "state")
    state.ensure()
    (state.path / "status.json").write_bytes(raw)
    with pytest.raises(StateError, match=r"status\.json is not a status"):
        state.read_status()


def test_recovery_at_start_refuses_a_malformed_journal(config: Config) -> None:
    """Installer.prepare, which the daemon runs before READY=1, raises instead of going on."""
    state = StateDir(config.state_dir)
    state.ensure()
    (state.path / "journal.json").write_text('{"phase": "applying", "entries": 3}')
    with pytest.raises(StateError, match=r"journal\.json"):
        Installer(config).prepare()
