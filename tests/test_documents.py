"""The status and the journal keep their JSON format: stored examples decode and encode back to
the same bytes, and what is not one of ours is refused with ValueError."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from trustinstaller import documents
from trustinstaller.errors import ProblemKind
from trustinstaller.stores import debian, nss

EXAMPLES = Path(__file__).parent / "examples"


def _load(name: str) -> Any:
    return json.loads((EXAMPLES / name).read_text())


def _dump(doc: object) -> str:
    return json.dumps(doc, indent=2, sort_keys=True) + "\n"


@pytest.mark.parametrize("name", ["status-locked.json", "status-failed.json", "status-open.json"])
def test_a_stored_status_encodes_back_to_the_same_bytes(name: str) -> None:
    status = documents.status_from_json(_load(name))
    assert _dump(documents.status_to_json(status)) == (EXAMPLES / name).read_text()


def test_a_stored_journal_encodes_back_to_the_same_bytes() -> None:
    journal = documents.journal_from_json(_load("journal.json"))
    assert _dump(documents.journal_to_json(journal)) == (EXAMPLES / "journal.json").read_text()


def test_a_decoded_status_has_our_types() -> None:
    status = documents.status_from_json(_load("status-locked.json"))
    assert status.locked
    cert = status.certificates[0]
    assert cert.source == documents.Source("tool", 0, cert.source.arn)
    assert cert.duplicates[0].level == "session"
    assert cert.stores[0] == "os"
    assert status.fetch == documents.FetchReport(1, 3, 2, 1, 0.613, 0.745, False)
    failed = documents.status_from_json(_load("status-failed.json"))
    assert [p.kind for p in failed.errors] == [
        ProblemKind.FETCH_FAILED,
        ProblemKind.ROLLBACK_FAILED,
    ]
    assert failed.locked_at is None


def test_a_decoded_journal_has_our_types() -> None:
    journal = documents.journal_from_json(_load("journal.json"))
    assert journal.phase is documents.Phase.VERIFYING
    kinds = [type(r.entry) for r in journal.entries]
    assert kinds == [documents.Mkdir, documents.Write, documents.Write, debian.Update,
                     nss.CreateDb, nss.AddCert]  # fmt: skip
    write = journal.entries[2].entry
    assert write == documents.Write("/etc/chromium/policies/managed", "zz-trustinstaller.json",
                                    "e30K", 0o644)  # fmt: skip
    assert list(journal.by_store()) == ["os", "chromium:/etc/chromium/policies/managed",
                                        "nss:sql:/srv/nssdb"]  # fmt: skip


def _status(**change: object) -> dict[str, Any]:
    doc: dict[str, Any] = _load("status-locked.json")
    doc.update(change)
    return doc


def _cert(**change: object) -> dict[str, Any]:
    doc = _status()
    doc["certificates"][0].update(change)
    return doc


@pytest.mark.parametrize(
    ("doc", "why"),
    [
        ([], "not an object"),
        (_status(state="exploded"), "(?i)state"),
        (_status(state=None), "state"),
        (_status(warnings="one"), "list"),
        (_status(warnings=[1]), "string"),
        (_status(locked_at=5), "locked_at"),
        (_status(errors=[{"kind": "nope", "object": "x", "message": "m"}]), "kind"),
        (_status(errors=[{"kind": "busy", "object": "x"}]), "not a string"),
        (_status(fetch={"calls": "3"}), "fetch"),
        (_status(fetch={"timed_out": 1}), "fetch"),
        (_status(fetch={"secrets": 1.5}), "fetch"),
        (_status(fetch=[]), "not an object"),
        (_status(certificates=[{}]), "not a string"),
        (_cert(source={"level": "tool", "index": "0", "arn": "a"}), "index"),
        (_cert(source={"level": "tool", "index": True, "arn": "a"}), "index"),
        (_cert(stores=[None]), "string"),
    ],
)
def test_a_status_that_is_not_ours_is_refused(doc: object, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        documents.status_from_json(doc)


def _journal(**change: object) -> dict[str, Any]:
    doc: dict[str, Any] = _load("journal.json")
    doc.update(change)
    return doc


@pytest.mark.parametrize(
    ("doc", "why"),
    [
        ("x", "not an object"),
        (_journal(id=None), "id"),
        (_journal(phase="done"), "(?i)phase"),
        (_journal(entries=None), "list"),
        (_journal(entries=[{"store": "os", "action": "format"}]), "unknown action"),
        (_journal(entries=[{"store": "os", "action": "mkdir", "path": "/x", "rm": 1}]), "unknown"),
        (_journal(entries=[{"store": "os", "action": "mkdir"}]), "mkdir"),
        (_journal(entries=[{"action": "update"}]), "store"),
        (_journal(summary=[]), "not an object"),
    ],
)
def test_a_journal_that_is_not_ours_is_refused(doc: object, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        documents.journal_from_json(doc)


@pytest.mark.parametrize(
    ("name", "has_status"),
    [("answer-put.json", True), ("answer-error.json", False), ("answer-forbidden.json", False)],
)
def test_a_stored_answer_encodes_back_to_the_same_bytes(name: str, has_status: bool) -> None:
    """Every HTTP body is an Answer: a PUT's (the status, its outcome and message), a refused
    request's (its error), and a refused peer's (an outcome and message without a status)."""
    answer = documents.answer_from_json(_load(name))
    assert (answer.status is not None) == has_status
    assert _dump(documents.answer_to_json(answer)) == (EXAMPLES / name).read_text()


def test_an_answer_that_is_not_ours_is_refused() -> None:
    with pytest.raises(ValueError, match=r"answer\.error: not a string"):
        documents.answer_from_json({"error": 5})
    with pytest.raises(ValueError, match="state"):
        documents.answer_from_json({"state": "exploded", "outcome": "busy"})


def test_a_stores_own_entry_decodes_where_no_store_was_loaded() -> None:
    """A journal naming an NSS step decodes in a process that imported only the documents: the
    registry loads every store, whose modules define their own kinds."""
    code = (
        "import sys\n"
        "from trustinstaller import documents\n"
        "assert 'trustinstaller.stores.nss' not in sys.modules\n"
        "j = documents.journal_from_json({'id': 'i', 'started_at': 't', 'phase': 'applying',\n"
        "    'entries': [{'store': 'nss:/x', 'action': 'add', 'db': 'sql:/x', 'nickname': 'n'}]})\n"
        "print(type(j.entries[0].entry).__module__)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True, cwd=Path(__file__).parents[1])  # fmt: skip
    assert done.stdout.split() == ["trustinstaller.stores.nss"]


def test_two_kinds_cannot_share_an_action() -> None:
    """A second kind with an action already taken is refused as it is defined."""
    with pytest.raises(TypeError, match="journal action 'add' is taken"):

        class Again(documents.Step, action="add"):
            pass
