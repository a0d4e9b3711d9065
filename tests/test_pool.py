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
from outbox.pool import Crew
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
    assert crew.unexpected == []
    moved = journal.get(entry.id)
    assert moved.state is State.SUBMITTED and moved.render_id == "r2"


def test_an_illegal_move_is_reported_as_unexpected(crew: Crew, db_path: Path) -> None:
    with Outbox(db_path) as ob:
        entry = ob.enqueue("invoice", {})

    def buggy_worker(claimed: Entry) -> None:
        crew.journal.transition(claimed.id, State.PENDING, State.DONE, owner=crew.owner)

    crew.run(State.PENDING, buggy_worker, deadline=None, stop=None)
    assert crew.unexpected == [
        f"entry {entry.id}: unexpected IllegalTransition: an entry cannot move from pending to done"
    ]
    assert crew.journal.get(entry.id).state is State.PENDING
