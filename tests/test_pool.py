"""The crew: a lost race is left to the winner; an illegal move is reported as a bug."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from outbox import Outbox, State
from outbox.client import CraftkitClient
from outbox.clock import Clock
from outbox.gate import Gate
from outbox.limit import ConcurrencyLimit
from outbox.models import Entry
from outbox.pool import UNEXPECTED_KEPT, UNKNOWN_STATUSES_KEPT, Crew
from outbox.store import Journal


@pytest.fixture
def crew(db_path: Path) -> Iterator[Crew]:
    journal = Journal(db_path)
    client = CraftkitClient("http://127.0.0.1:9", "unused")  # never called here
    with ThreadPoolExecutor(2) as executor:
        yield Crew(
            journal=journal,
            gate=Gate(client, journal, clock=Clock()),
            clock=Clock(),
            owner="me",
            executor=executor,
            limit=ConcurrencyLimit(2, 2),
            lease_seconds=60,
        )
    client.close()
    journal.close()


def test_a_lost_race_leaves_the_entry_to_the_worker_that_won(crew: Crew, db_path: Path) -> None:
    with Outbox(db_path) as ob:
        entry = ob.enqueue("invoice", {})
    journal = crew.journal

    def slow_worker(claimed: Entry) -> None:
        # Our lease ran out mid-request; another worker took the entry and submitted it.
        journal.release(claimed.id, crew.owner)
        [taken] = journal.claim_due(
            State.PENDING, owner="other", lease_seconds=60, limit=1, horizon=3600
        )
        journal.transition(taken.id, State.PENDING, State.SUBMITTED, owner="other", render_id="r2")
        journal.transition(claimed.id, State.PENDING, State.SUBMITTED, owner=crew.owner)

    assert crew.run(State.PENDING, slow_worker, deadline=None, stop=None) == 1
    assert list(crew.unexpected) == []
    moved = journal.get(entry.id)
    assert moved.state is State.SUBMITTED and moved.render_id == "r2"


def test_an_illegal_move_is_reported_as_unexpected(crew: Crew, db_path: Path) -> None:
    with Outbox(db_path) as ob:
        entry = ob.enqueue("invoice", {})

    def buggy_worker(claimed: Entry) -> None:
        crew.journal.transition(claimed.id, State.PENDING, State.DONE, owner=crew.owner)

    crew.run(State.PENDING, buggy_worker, deadline=None, stop=None)
    assert list(crew.unexpected) == [
        f"entry {entry.id}: unexpected IllegalTransition: an entry cannot move from pending to done"
    ]
    assert crew.journal.get(entry.id).state is State.PENDING


def test_a_long_run_keeps_the_latest_unexpected_errors_only(crew: Crew, db_path: Path) -> None:
    with Outbox(db_path) as ob:
        ob.enqueue_many(
            {"template": "invoice", "data": {"n": n}} for n in range(UNEXPECTED_KEPT + 5)
        )

    def buggy_worker(claimed: Entry) -> None:
        raise RuntimeError(f"bug {claimed.data['n']}")

    assert crew.run(State.PENDING, buggy_worker, deadline=None, stop=None) == UNEXPECTED_KEPT + 5
    assert len(crew.unexpected) == UNEXPECTED_KEPT
    assert (
        sorted(int(text.rsplit(" ", 1)[1]) for text in crew.unexpected)[-1] == UNEXPECTED_KEPT + 4
    )


def test_unknown_statuses_are_remembered_up_to_a_bound(
    crew: Crew, caplog: pytest.LogCaptureFixture
) -> None:
    for n in range(UNKNOWN_STATUSES_KEPT + 50):
        crew.notice_status(f"odd-{n}")
        crew.notice_status(f"odd-{n}")
    crew.notice_status("succeeded")
    assert len(crew._unknown_statuses) == UNKNOWN_STATUSES_KEPT
    assert len(caplog.records) == UNKNOWN_STATUSES_KEPT  # each logged once, the first 100
