"""The outcome table, pure: every outcome x every entry state -> the move, or a refusal.

Each case is one answer (or error, or person's action) with the row of the README's "What
happens on each answer" tables it belongs to. No I/O: entries are built in memory, the time is a
number and the randomness is seeded.
"""

from __future__ import annotations

import errno
import random
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest

from outbox import outcomes
from outbox.client import NotReady, Render
from outbox.downloads import SavedPdf
from outbox.errors import (
    AuthError,
    DownloadError,
    ForeignAnswer,
    IllegalTransition,
    InvalidArgument,
    NotFound,
    Offline,
    OutcomeUnknown,
    PermanentError,
    PublicCopyBroken,
    RateLimited,
    RemoteError,
    ServerError,
    StorageFull,
)
from outbox.models import Changes, Entry, RenderRequest, State, can_move
from outbox.outcomes import GiveBack, Move, Network, Outcome, Rule
from outbox.schedule import Backoff, Schedule

NOW = 1_780_000_000.0
SCHEDULE = Schedule().with_rng(random.Random(13))
README = Path(__file__).resolve().parent.parent / "README.md"


def entry(state: State, **fields: Any) -> Entry:
    """An entry as the journal would hand it to a worker (or to the facade)."""
    base: dict[str, Any] = {
        "id": "e1",
        "template": "invoice",
        "data": {},
        "key": "inspection-42",
        "base_key": "inspection-42",
        "state": state,
        "remote_status": None,
        "render_id": None,
        "attempts": 0,
        "error": None,
        "error_code": None,
        "field_errors": None,
        "filename": None,
        "version": None,
        "pdf_path": None,
        "pdf_bytes": None,
        "pdf_sha256": None,
        "source": None,
        "created_at": "2026-06-05T10:00:00.000Z",
        "updated_at": "2026-06-05T10:00:00.000Z",
        "due_at": NOW,
    }
    if state is not State.PENDING:
        base.update(render_id="r1", remote_status="queued", attempts=1, submitted_at=NOW - 10)
    base.update(fields)
    return Entry(**base)


def render(status: str, **fields: Any) -> Render:
    url = "https://cdn.example/r1.pdf" if status == "succeeded" else None
    message = "font missing" if status == "failed" else None
    return Render("r1", status, fields.pop("download_url", url), message, **fields)


@dataclass(frozen=True)
class Case:
    """One outcome, the state it can arrive in, and what it must lead to."""

    name: str
    phase: State
    decide: Callable[[Entry], Outcome]
    rule: Rule
    #: None: the entry is given back untouched.
    target: State | None
    event: bool
    network: Network
    changes: Changes = field(default_factory=lambda: Changes())
    http_status: int | None = None
    #: Extra fields of the entry the outcome arrives for.
    before: dict[str, Any] = field(default_factory=dict)


def submitted(status: str, replayed: bool = False) -> Callable[[Entry], Outcome]:
    return lambda e: outcomes.submit_answered(
        e, render(status), replayed=replayed, now=NOW, first_poll=0.8
    )


def submit_error(
    error: RemoteError, note: str | None = None, health_ok: bool = False
) -> Callable[[Entry], Outcome]:
    return lambda e: outcomes.submit_failed(
        e, error, now=NOW, schedule=SCHEDULE, note=note, health_ok=health_ok
    )


def polled(status: str) -> Callable[[Entry], Outcome]:
    return lambda e: outcomes.poll_answered(e, render(status), now=NOW, schedule=SCHEDULE)


def poll_error(error: RemoteError, health_ok: bool = False) -> Callable[[Entry], Outcome]:
    return lambda e: outcomes.poll_failed(e, error, now=NOW, schedule=SCHEDULE, health_ok=health_ok)


def download_error(error: Exception, health_ok: bool = False) -> Callable[[Entry], Outcome]:
    return lambda e: outcomes.download_failed(
        e, error, now=NOW, schedule=SCHEDULE, folder="/srv/renders", health_ok=health_ok
    )


#: Each phase with the outcome function of its errors.
PHASES: list[tuple[State, Callable[[RemoteError], Callable[[Entry], Outcome]]]] = [
    (State.PENDING, submit_error),
    (State.SUBMITTED, poll_error),
    (State.DOWNLOADING, download_error),
]

#: What a captive portal, a proxy or a broken server sends instead of the API's answer.
FOREIGN = ForeignAnswer("api.craftkit.dev answered 307 (a redirect to /login)", status=307)
PUBLIC_URL = "https://bucket.example/r1.pdf"


SAVED = SavedPdf(path=Path("/srv/renders/north-42.pdf"), size=48213, sha256="ab" * 32)
REFUSED = PermanentError(
    "400 invalid_input_data: Invalid input.",
    status=400,
    code="invalid_input_data",
    field_errors={"customer.name": ["Required"]},
)

CASES = [
    # -- any request: the same in every phase --
    *[
        Case(f"{phase}-{name}", phase, decide(error), rule, None, False, Network.TROUBLE)
        for phase, decide in PHASES
        for name, error, rule in [
            ("offline", Offline("cannot reach"), Rule.OFFLINE),
            ("foreign-answer-and-no-health", FOREIGN, Rule.OFFLINE),
            ("key-refused", AuthError("refused", status=401), Rule.KEY_REFUSED),
        ]
    ],
    Case(
        "submit-foreign-answer-while-healthy",
        State.PENDING,
        submit_error(FOREIGN, health_ok=True),
        Rule.FOREIGN_ANSWER,
        State.PENDING,
        True,
        Network.ANSWERED,
        Changes(
            attempts=2,
            error="submitting got an answer that is not Craftkit's (api.craftkit.dev answered "
            "307 (a redirect to /login)) while the API's health check answers ok, so only this "
            "entry waits",
            error_code="foreign_answer",
        ),
        307,
        {"attempts": 1},
    ),
    Case(
        "poll-foreign-answer-while-healthy",
        State.SUBMITTED,
        poll_error(FOREIGN, health_ok=True),
        Rule.FOREIGN_ANSWER,
        State.SUBMITTED,
        True,
        Network.ANSWERED,
        Changes(polls=1, error_code="ForeignAnswer"),
        307,
    ),
    Case(
        "download-foreign-answer-while-healthy",
        State.DOWNLOADING,
        download_error(FOREIGN, health_ok=True),
        Rule.FOREIGN_ANSWER,
        State.DOWNLOADING,
        True,
        Network.ANSWERED,
        Changes(polls=1, error_code="ForeignAnswer"),
        307,
    ),
    *[
        Case(
            f"{phase}-rate-limited-{wait}",
            phase,
            decide(RateLimited("429", status=429, retry_after=wait)),
            Rule.RATE_LIMITED,
            phase,
            False,
            Network.TROUBLE,
            Changes(due_at=NOW + (1.0 if wait is None else wait)),
        )
        for phase, decide in PHASES
        for wait in (7.0, None)
    ],
    # -- submitting --
    Case(
        "accepted-queued",
        State.PENDING,
        submitted("queued"),
        Rule.ACCEPTED,
        State.SUBMITTED,
        True,
        Network.KEY_ACCEPTED,
        Changes(render_id="r1", remote_status="queued", attempts=1, polls=0, due_at=NOW + 0.8),
        202,
    ),
    Case(
        "replayed-rendering",
        State.PENDING,
        submitted("rendering", replayed=True),
        Rule.ACCEPTED,
        State.SUBMITTED,
        True,
        Network.KEY_ACCEPTED,
        Changes(remote_status="rendering", attempts=3, error=None, submitted_at=NOW),
        200,
        {"attempts": 2, "error": "503 queue_unavailable"},
    ),
    Case(
        "accepted-undocumented-status",
        State.PENDING,
        submitted("paused"),
        Rule.ACCEPTED,
        State.SUBMITTED,
        True,
        Network.KEY_ACCEPTED,
        Changes(remote_status="paused", due_at=NOW + 0.8),
        202,
    ),
    Case(
        "replayed-succeeded",
        State.PENDING,
        submitted("succeeded", replayed=True),
        Rule.ACCEPTED_SUCCEEDED,
        State.DOWNLOADING,
        True,
        Network.KEY_ACCEPTED,
        Changes(download_url="https://cdn.example/r1.pdf", due_at=NOW, finished_at=NOW),
        200,
    ),
    *[
        Case(
            f"replayed-{status}",
            State.PENDING,
            submitted(status, replayed=True),
            Rule.ACCEPTED_FAILED,
            State.FAILED,
            True,
            Network.KEY_ACCEPTED,
            Changes(error=message, error_code=f"render_{status}", finished_at=NOW),
            200,
        )
        for status, message in [
            ("failed", "font missing"),
            ("cancelled", "the render was cancelled"),
        ]
    ],
    Case(
        "submit-outcome-unknown",
        State.PENDING,
        submit_error(OutcomeUnknown("read timeout")),
        Rule.SUBMIT_OUTCOME_UNKNOWN,
        State.PENDING,
        True,
        Network.NOTHING,
        Changes(attempts=2, error="read timeout", error_code="outcome_unknown"),
        None,
        {"attempts": 1},
    ),
    *[
        Case(
            f"submit-{status}",
            State.PENDING,
            submit_error(ServerError(f"{status}", status=status, code=code)),
            Rule.SUBMIT_SERVER_ERROR,
            State.PENDING,
            True,
            Network.TROUBLE,
            Changes(attempts=1, error_code=code or "server"),
            status,
        )
        for status, code in [(500, "internal"), (503, "queue_unavailable"), (504, None)]
    ],
    Case(
        "submit-refused",
        State.PENDING,
        submit_error(REFUSED),
        Rule.SUBMIT_REFUSED,
        State.REJECTED,
        True,
        Network.KEY_ACCEPTED,
        Changes(
            attempts=1,
            error="400 invalid_input_data: Invalid input.",
            error_code="invalid_input_data",
            field_errors={"customer.name": ["Required"]},
            finished_at=NOW,
        ),
        400,
    ),
    Case(
        "submit-refused-template-changed",
        State.PENDING,
        submit_error(REFUSED, note="template invoice has changed since it was cached"),
        Rule.SUBMIT_REFUSED,
        State.REJECTED,
        True,
        Network.KEY_ACCEPTED,
        Changes(
            error="400 invalid_input_data: Invalid input; "
            "template invoice has changed since it was cached"
        ),
        400,
    ),
    Case(
        "submit-template-not-found",
        State.PENDING,
        submit_error(PermanentError("404", status=404, code="template_not_found")),
        Rule.SUBMIT_REFUSED,
        State.REJECTED,
        True,
        Network.KEY_ACCEPTED,
        Changes(error_code="template_not_found"),
        404,
    ),
    # -- polling --
    Case(
        "poll-still-queued",
        State.SUBMITTED,
        polled("queued"),
        Rule.POLL_UNFINISHED,
        State.SUBMITTED,
        False,
        Network.KEY_ACCEPTED,
        Changes(polls=3, due_at=NOW + 10.0),  # 40 s old: a quarter of its age
        None,
        {"polls": 2, "submitted_at": NOW - 40},
    ),
    Case(
        "poll-now-rendering",
        State.SUBMITTED,
        polled("rendering"),
        Rule.POLL_UNFINISHED,
        State.SUBMITTED,
        True,
        Network.KEY_ACCEPTED,
        Changes(remote_status="rendering", polls=1, error=None, due_at=NOW + 0.5),
        200,
    ),
    Case(
        "poll-queued-after-an-error",
        State.SUBMITTED,
        polled("queued"),
        Rule.POLL_UNFINISHED,
        State.SUBMITTED,
        True,
        Network.KEY_ACCEPTED,
        Changes(error=None, error_code=None),
        200,
        {"error": "checking render r1 failed: 503"},
    ),
    Case(
        "poll-undocumented-status",
        State.SUBMITTED,
        polled("paused"),
        Rule.POLL_UNFINISHED,
        State.SUBMITTED,
        True,
        Network.KEY_ACCEPTED,
        Changes(remote_status="paused"),
        200,
    ),
    Case(
        "poll-succeeded",
        State.SUBMITTED,
        polled("succeeded"),
        Rule.POLL_SUCCEEDED,
        State.DOWNLOADING,
        True,
        Network.KEY_ACCEPTED,
        Changes(download_url="https://cdn.example/r1.pdf", due_at=NOW, finished_at=NOW),
        200,
    ),
    *[
        Case(
            f"poll-{status}",
            State.SUBMITTED,
            polled(status),
            Rule.POLL_FAILED,
            State.FAILED,
            True,
            Network.KEY_ACCEPTED,
            Changes(error_code=f"render_{status}", finished_at=NOW),
            200,
        )
        for status in ("failed", "cancelled")
    ],
    Case(
        "poll-not-found",
        State.SUBMITTED,
        poll_error(NotFound("404 not_found", status=404, code="not_found")),
        Rule.POLL_NOT_FOUND,
        State.SUBMITTED,
        True,
        Network.ANSWERED,
        Changes(error_code="not_found", polls=1, due_at=NOW + 15.0),
        404,
    ),
    Case(
        "poll-not-found-again",
        State.SUBMITTED,
        poll_error(NotFound("404 not_found", status=404, code="not_found")),
        Rule.POLL_NOT_FOUND,
        State.SUBMITTED,
        False,
        Network.ANSWERED,
        Changes(polls=5),
        None,
        {
            "polls": 4,
            "error": "Craftkit does not know render r1 (404 not_found); is the API key one of "
            "the project that created it? Still checking.",
        },
    ),
    Case(
        "poll-server-error",
        State.SUBMITTED,
        poll_error(ServerError("503", status=503, code="queue_unavailable")),
        Rule.POLL_ERROR,
        State.SUBMITTED,
        True,
        Network.TROUBLE,
        Changes(error="checking render r1 failed: 503", error_code="queue_unavailable"),
        503,
    ),
    Case(
        "poll-outcome-unknown",
        State.SUBMITTED,
        poll_error(OutcomeUnknown("read timeout")),
        Rule.POLL_ERROR,
        State.SUBMITTED,
        True,
        Network.ANSWERED,
        Changes(error_code="OutcomeUnknown"),
    ),
    Case(
        "poll-other-4xx",
        State.SUBMITTED,
        poll_error(PermanentError("400 invalid_request", status=400, code="invalid_request")),
        Rule.POLL_ERROR,
        State.SUBMITTED,
        True,
        Network.ANSWERED,
        Changes(error_code="invalid_request"),
        400,
    ),
    # -- downloading --
    Case(
        "saved",
        State.DOWNLOADING,
        lambda e: outcomes.download_saved(e, SAVED, now=NOW),
        Rule.SAVED,
        State.DONE,
        True,
        Network.ANSWERED,
        Changes(
            pdf_path="/srv/renders/north-42.pdf",
            pdf_bytes=48213,
            pdf_sha256="ab" * 32,
            error=None,
            finished_at=NOW,
        ),
        200,
    ),
    Case(
        "not-ready",
        State.DOWNLOADING,
        download_error(NotReady("no PDF yet", status=404)),
        Rule.NOT_READY,
        State.DOWNLOADING,
        False,
        Network.NOTHING,
        Changes(polls=1),
    ),
    *[
        Case(
            f"public-copy-{name}",
            State.DOWNLOADING,
            download_error(error, health_ok=health_ok),
            Rule.PUBLIC_COPY_BROKEN,
            State.DOWNLOADING,
            True,
            Network.NOTHING,
            Changes(download_url=None, due_at=NOW),
            error.status,
            {"download_url": PUBLIC_URL},
        )
        for name, error, health_ok in [
            ("refused", PublicCopyBroken("connection refused by bucket.example"), False),
            ("unauthorized", PublicCopyBroken("bucket.example answered 401", status=401), False),
            ("not-a-pdf", DownloadError("the download is not a PDF"), False),
            ("cut-off", OutcomeUnknown("no complete answer"), False),
            ("redirect", FOREIGN, True),
            # Whatever class an error from the bucket has, it never judges the API or the key.
            ("offline-by-mistake", Offline("cannot reach bucket.example"), False),
            ("key-by-mistake", AuthError("refused", status=401), False),
        ]
    ],
    Case(
        "truncated",
        State.DOWNLOADING,
        download_error(DownloadError("got 10 of 48213 bytes")),
        Rule.DOWNLOAD_BROKEN,
        State.DOWNLOADING,
        True,
        Network.NOTHING,
        Changes(error="download failed, will retry: got 10 of 48213 bytes"),
    ),
    Case(
        "download-server-error",
        State.DOWNLOADING,
        download_error(ServerError("502", status=502)),
        Rule.DOWNLOAD_BROKEN,
        State.DOWNLOADING,
        True,
        Network.NOTHING,
        Changes(error_code="ServerError"),
        502,
    ),
    Case(
        "disk-full",
        State.DOWNLOADING,
        download_error(StorageFull("no space left on the disk holding /srv/renders")),
        Rule.DISK_FULL,
        State.DOWNLOADING,
        True,
        Network.NOTHING,
        Changes(error="no space left on the disk holding /srv/renders", due_at=NOW + 30),
    ),
    Case(
        "folder-unwritable",
        State.DOWNLOADING,
        download_error(PermissionError(errno.EACCES, "Permission denied")),
        Rule.FOLDER_UNWRITABLE,
        State.DOWNLOADING,
        True,
        Network.NOTHING,
        Changes(error="cannot write the PDF into /srv/renders: Permission denied", due_at=NOW + 30),
    ),
]


@pytest.mark.parametrize("state", list(State))
@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
def test_every_outcome_in_every_state(case: Case, state: State) -> None:
    before = entry(state, **case.before)
    if state is not case.phase:
        # An answer for an entry in another state would be a bug; nothing is decided.
        with pytest.raises(IllegalTransition, match=f"for entry e1, which is {state}"):
            case.decide(before)
        return
    outcome = case.decide(before)
    assert outcome.rule is case.rule
    assert outcome.network is case.network
    if case.target is None:
        assert isinstance(outcome, GiveBack)
        return
    assert isinstance(outcome, Move)
    assert outcome.target is case.target
    assert can_move(state, outcome.target)
    assert (outcome.detail is not None) is case.event
    if not case.event:
        assert outcome.target is state, "a move without an event never changes the state"
    assert outcome.http_status == case.http_status
    assert {name: outcome.changes.get(name, "absent") for name in case.changes} == case.changes


@pytest.mark.parametrize("state", list(State))
def test_cancel_in_every_state(state: State) -> None:
    before = entry(state)
    if state is not State.PENDING:
        with pytest.raises(IllegalTransition, match="only pending entries can be cancelled"):
            outcomes.cancel_requested(before)
        return
    move = outcomes.cancel_requested(before)
    assert (move.rule, move.target, move.changes) == (Rule.CANCEL, State.CANCELLED, {})
    assert move.detail == "cancelled by the user"
    unknown = outcomes.cancel_requested(replace(before, attempts=1))
    assert unknown.detail is not None and "Craftkit may hold a render" in unknown.detail


@pytest.mark.parametrize("state", list(State))
def test_retry_in_every_state(state: State) -> None:
    before = entry(state, key="inspection-42~2", generation=2, error="font missing")
    if state not in (State.FAILED, State.REJECTED):
        with pytest.raises(IllegalTransition, match="only failed or rejected entries can be"):
            outcomes.retry_requested(before, now=NOW)
        return
    move = outcomes.retry_requested(before, now=NOW)
    assert move.target is State.PENDING and can_move(state, move.target)
    changes = move.changes
    fresh = (changes["attempts"], changes["polls"], changes["render_id"], changes["error"])
    assert fresh == (0, 0, None, None)
    assert move.changes["due_at"] == NOW
    if state is State.FAILED:  # the failed render sticks to its key: a new one is needed
        assert move.rule is Rule.RETRY_FAILED
        assert (move.changes["key"], move.changes["generation"]) == ("inspection-42~3", 3)
    else:  # nothing was created under the key: keep it
        assert move.rule is Rule.RETRY_REJECTED
        assert (move.changes["key"], move.changes["generation"]) == ("inspection-42~2", 2)


AMENDED = {"inspector": "Ada", "site": "North", "photo": "x" * 300}


@pytest.mark.parametrize("attempts", [0, 2])
@pytest.mark.parametrize("state", list(State))
def test_amend_in_every_state(state: State, attempts: int) -> None:
    """The key stays only while Craftkit provably holds nothing for it."""
    fields: dict[str, Any] = {"key": "inspection-42~2", "generation": 2, "attempts": attempts}
    fields["data"] = {"inspector": "Ada", "site": {"name": "Pier"}}
    if state in (State.PENDING, State.CANCELLED, State.REJECTED):
        fields.update(render_id=None, remote_status=None)
    before = entry(state, **fields)
    request = RenderRequest("invoice", AMENDED, "inspection-42", "north.pdf", 3)
    if state in (State.SUBMITTED, State.DOWNLOADING, State.DONE):
        with pytest.raises(IllegalTransition, match="Craftkit already accepted its request"):
            outcomes.amend_requested(before, request, now=NOW)
        return
    move = outcomes.amend_requested(before, request, now=NOW)
    assert move.target is State.PENDING and can_move(state, move.target)
    changes = move.changes
    assert (changes["data"], changes["filename"], changes["version"]) == (AMENDED, "north.pdf", 3)
    fresh = (changes["attempts"], changes["polls"], changes["render_id"], changes["error"])
    assert fresh == (0, 0, None, None) and changes["due_at"] == NOW
    keeps = state is State.REJECTED or (state is not State.FAILED and attempts == 0)
    if keeps:
        assert move.rule is Rule.AMEND_SAME_KEY
        assert (changes["key"], changes["generation"]) == ("inspection-42~2", 2)
    else:  # failed, or sent with an unknown outcome: Craftkit may hand back the old render
        assert move.rule is Rule.AMEND_NEW_KEY
        assert (changes["key"], changes["generation"]) == ("inspection-42~3", 3)
    detail = move.detail or ""
    assert detail.startswith(f"amended, {'same' if keeps else 'new'} key {changes['key']} (")
    # The history line holds each change, old and new; long values are shortened.
    assert 'site.name: "Pier" → (none)' in detail and 'site: (none) → "North"' in detail
    assert 'photo: (none) → "' + "x" * 118 + "…;" in detail
    assert "filename: (none) → north.pdf" in detail and "version: (current) → 3" in detail


def test_an_unchanged_amendment_is_refused() -> None:
    before = entry(State.REJECTED, render_id=None, data={"a": 1})
    same = RenderRequest("invoice", {"a": 1.0}, "inspection-42")
    with pytest.raises(InvalidArgument, match="nothing was changed; `retry` sends it again"):
        outcomes.amend_requested(before, same, now=NOW)


def test_the_cases_cover_every_row() -> None:
    from test_delivery_outcomes import COVERED as DELIVERY_RULES

    covered = {case.rule for case in CASES} | DELIVERY_RULES
    covered |= {Rule.CANCEL, Rule.RETRY_FAILED, Rule.RETRY_REJECTED, Rule.NOT_ALLOWED}
    covered |= {Rule.AMEND_SAME_KEY, Rule.AMEND_NEW_KEY}
    assert covered == set(Rule)


def test_backoffs_come_from_the_schedule() -> None:
    pending = entry(State.PENDING, attempts=3)
    outcome = outcomes.submit_failed(pending, ServerError("503"), now=NOW, schedule=SCHEDULE)
    assert isinstance(outcome, Move)
    assert NOW + 4.0 <= outcome.changes["due_at"] <= NOW + 8.0  # 4th attempt: 4-8 s
    fixed = Schedule(submit_retry=Backoff(9.0, 9.0, jitter=0.0))
    outcome = outcomes.submit_failed(pending, ServerError("503"), now=NOW, schedule=fixed)
    assert isinstance(outcome, Move) and outcome.changes["due_at"] == NOW + 9.0
    # A failed poll waits for its backoff, but never longer than 4x the usual gap.
    young = entry(State.SUBMITTED, polls=7, submitted_at=NOW - 2)
    outcome = outcomes.poll_failed(young, ServerError("503"), now=NOW, schedule=SCHEDULE)
    assert isinstance(outcome, Move) and outcome.changes["due_at"] <= NOW + 4 * 5.0


def test_an_error_that_is_not_a_download_problem_is_not_swallowed() -> None:
    with pytest.raises(KeyError):
        outcomes.download_failed(
            entry(State.DOWNLOADING), KeyError("bug"), now=NOW, schedule=SCHEDULE, folder="/x"
        )


def readme_rows() -> list[str]:
    """The first cell of every table row in the README's "What happens on each answer"."""
    text = README.read_text(encoding="utf-8")
    section = text.split("## What happens on each answer", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ")]
    cells = [re.split(r"(?<!\\)\|", row)[1].strip() for row in rows]
    return [cell for cell in cells if cell not in ("answer", "action")]


def test_the_readme_table_has_the_same_rows_in_the_same_order() -> None:
    assert readme_rows() == [rule.value for rule in Rule]
