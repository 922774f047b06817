"""The error tree: who must act decides the outcome, the HTTP status and the exit code."""

from __future__ import annotations

import json

import pytest

from trustinstaller.documents import State, Status, status_from_json, status_to_json
from trustinstaller.errors import (
    CertificateError,
    CertificatesRefusedError,
    FetchError,
    Outcome,
    Problem,
    ProblemKind,
    RefusedError,
    StateError,
    UnsafePathError,
)

FETCH = FetchError("arn:a", "access denied (AccessDeniedException)")
BAD = RefusedError("arn:b", "not a CA (basicConstraints CA:FALSE)")

CASES: list[tuple[list[CertificateError], Outcome, int, int, str]] = [
    ([FETCH], Outcome.FETCH_FAILED, 502, 3, "1 certificate could not be fetched"),
    ([FETCH, FETCH], Outcome.FETCH_FAILED, 502, 3, "2 certificates could not be fetched"),
    ([BAD], Outcome.REFUSED, 422, 3, "1 certificate refused"),
    ([FETCH, BAD], Outcome.REFUSED, 422, 3, "2 certificates refused"),
]


@pytest.mark.parametrize(("failures", "outcome", "http", "exit_code", "head"), CASES)
def test_a_fetch_failure_has_an_outcome_of_its_own(
    failures: list[CertificateError], outcome: Outcome, http: int, exit_code: int, head: str
) -> None:
    """Only fetch failures: AWS or IAM must act (502); any refused content: 422. Exit 3 both."""
    exc = CertificatesRefusedError(failures)
    assert exc.outcome is outcome
    assert (exc.outcome.http_status, exc.outcome.exit_code) == (http, exit_code)
    assert str(exc).startswith(head)
    assert ("AWS or IAM must act" in exc.diagnostics()) == (outcome is Outcome.FETCH_FAILED)


def test_state_error_keeps_its_fields_instead_of_parsing_its_message() -> None:
    """The problem's object is the directory, even when the reason holds colons."""
    exc = StateError("/run/x", "journal.json: not valid JSON: line 1")
    assert (exc.path, exc.reason) == ("/run/x", "journal.json: not valid JSON: line 1")
    assert exc.problems()[0].object == "state directory /run/x"


def test_unsafe_path_is_both_an_os_error_and_one_of_ours() -> None:
    """Filesystem code may catch it as OSError; the CLI and the server as one of ours."""
    exc = UnsafePathError(1, "is owned by uid 65534, not root", "/srv/x")
    assert isinstance(exc, OSError)
    assert (exc.errno, exc.filename) == (1, "/srv/x")
    assert str(exc) == "/srv/x: is owned by uid 65534, not root"
    assert exc.outcome is Outcome.STORE_FAILED


@pytest.mark.parametrize("kind", list(ProblemKind))
def test_every_problem_kind_round_trips_through_the_status_file(kind: ProblemKind) -> None:
    """A status's problems keep their kind, as the enum, through the JSON the state holds."""
    status = Status(State.FAILED, errors=(Problem(kind, "obj", "message"),))
    back = status_from_json(json.loads(json.dumps(status_to_json(status))))
    assert back.errors == status.errors
    assert back.errors[0].kind is kind


def test_an_unknown_problem_kind_is_refused_when_read() -> None:
    data = status_to_json(Status(State.FAILED, errors=(Problem(ProblemKind.BUSY, "", "m"),)))
    data["errors"][0]["kind"] = "made_up"
    with pytest.raises(ValueError, match="unknown kind 'made_up'"):
        status_from_json(data)


def test_every_outcome_but_installed_has_a_problem_kind() -> None:
    for outcome in Outcome:
        if outcome is not Outcome.INSTALLED:
            assert ProblemKind.of(outcome).value == outcome.label
