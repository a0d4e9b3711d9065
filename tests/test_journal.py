"""The journal on a real SQLite file: enqueue, reading, compare-and-set moves, leases."""

from __future__ import annotations

import stat
import time
from pathlib import Path

import pytest
from freezegun import freeze_time
from support import API_KEY_IN_TESTS, run_cli_process

from outbox import EntryBusy, EntryNotFound, IllegalTransition, LostRace, Outbox, State
from outbox.store import Journal


def test_enqueue_is_durable_and_readable_after_reopen(db_path: Path) -> None:
    with Outbox(db_path) as ob:
        entry = ob.enqueue(
            "inspection-report", {"inspector": "Ada"}, key="inspection-42", filename="n.pdf"
        )
        assert entry.state is State.PENDING and entry.attempts == 0
    with Outbox(db_path) as ob:
        again = ob.get(entry.id)
    assert again.data == {"inspector": "Ada"}
    assert (again.key, again.filename, again.template) == (
        "inspection-42",
        "n.pdf",
        "inspection-report",
    )
    assert [e.to_state for e in Outbox(db_path).history(entry.id)] == [State.PENDING]


def test_same_key_returns_the_existing_entry(ob: Outbox) -> None:
    first = ob.enqueue("inspection-report", {"a": 1, "b": [1.5]}, key="same")
    second = ob.enqueue("inspection-report", {"b": [1.5], "a": 1.0}, key="same")
    assert second.id == first.id and second.data == {"a": 1, "b": [1.5]}
    assert sum(ob.counts().values()) == 1
    assert len(ob.history(first.id)) == 1


def test_enqueue_many_is_one_transaction(ob: Outbox) -> None:
    entries = ob.enqueue_many(
        [{"template": "invoice", "data": {"n": i}, "key": f"inv-{i}"} for i in range(100)]
    )
    assert len({e.id for e in entries}) == 100
    with pytest.raises(Exception, match="not a valid slug"):
        ob.enqueue_many([{"template": "invoice", "data": {}}, {"template": "BAD", "data": {}}])
    assert ob.counts()[State.PENDING] == 100


def test_list_is_newest_first_and_filters(ob: Outbox) -> None:
    ids = [ob.enqueue("invoice", {"n": i}).id for i in range(5)]
    assert [e.id for e in ob.list()] == ids[::-1]
    assert [e.id for e in ob.list(limit=2)] == ids[:2:-1]
    ob.cancel(ids[0])
    assert [e.id for e in ob.list(state="cancelled")] == [ids[0]]
    assert ob.counts()[State.CANCELLED] == 1 and ob.counts()[State.PENDING] == 4


def test_get_by_unique_prefix_and_unknown_id(ob: Outbox) -> None:
    entry = ob.enqueue("invoice", {})
    assert ob.get(entry.id[:8]).id == entry.id
    with pytest.raises(EntryNotFound, match="no entry with id 'ffffffffzz'"):
        ob.get("ffffffffzz")


def test_illegal_moves_raise_and_change_nothing(db_path: Path) -> None:
    journal = Journal(db_path)
    with Outbox(db_path) as ob:
        entry = ob.enqueue("invoice", {})
        ob.cancel(entry.id)
        with pytest.raises(IllegalTransition, match="only pending entries can be cancelled"):
            ob.cancel(entry.id)
    with pytest.raises(IllegalTransition, match="cannot move from cancelled to submitted"):
        journal.transition(entry.id, State.CANCELLED, State.SUBMITTED)
    # A compare-and-set against a stale idea of the state loses.
    with pytest.raises(LostRace, match="is cancelled, not pending"):
        journal.transition(entry.id, State.PENDING, State.SUBMITTED, render_id="r1")
    assert journal.get(entry.id).state is State.CANCELLED
    assert [e.to_state for e in journal.history(entry.id)] == [State.PENDING, State.CANCELLED]


def test_claims_lease_entries_once_until_the_lease_expires(db_path: Path) -> None:
    with freeze_time("2027-01-15 10:00:00") as frozen:
        journal = Journal(db_path)
        with Outbox(db_path) as ob:
            entries = [ob.enqueue("invoice", {"n": i}) for i in range(3)]
        first = journal.claim_due(State.PENDING, owner="a", lease_seconds=30, limit=2, horizon=3600)
        second = journal.claim_due(
            State.PENDING, owner="b", lease_seconds=30, limit=5, horizon=3600
        )
        assert [e.id for e in first] == [entries[0].id, entries[1].id]
        assert [e.id for e in second] == [entries[2].id]
        # A leased entry cannot be cancelled while its request may be on the wire.
        with pytest.raises(EntryBusy, match="being worked on right now"):
            Outbox(db_path).cancel(entries[0].id)
        # Owner "a" crashed: once its lease runs out, someone else takes the entry over.
        frozen.tick(31)
        third = journal.claim_due(State.PENDING, owner="c", lease_seconds=30, limit=5, horizon=3600)
        assert {e.id for e in third} == {e.id for e in entries}
        with pytest.raises(LostRace, match="no longer leased by this process"):
            journal.transition(entries[0].id, State.PENDING, State.SUBMITTED, owner="a")
        moved = journal.transition(
            entries[0].id, State.PENDING, State.SUBMITTED, owner="c", render_id="r-1"
        )
        assert moved.render_id == "r-1" and journal.lease_holder(moved.id) is None


def test_due_at_far_in_the_future_counts_as_due_after_a_clock_jump(db_path: Path) -> None:
    with freeze_time("2027-01-15 10:00:00") as frozen:
        journal = Journal(db_path)
        entry = Outbox(db_path).enqueue("invoice", {})
        journal.reschedule(entry.id, State.PENDING, due_at=time.time() + 60)
        claimed = journal.claim_due(
            State.PENDING, owner="a", lease_seconds=5, limit=9, horizon=3600
        )
        assert claimed == []
        # The device clock jumps back a year: the schedule is now absurdly far ahead.
        frozen.move_to("2026-01-15 10:00:00")
        claimed = journal.claim_due(
            State.PENDING, owner="a", lease_seconds=5, limit=9, horizon=3600
        )
        assert [e.id for e in claimed] == [entry.id]


def test_journal_file_is_private_and_never_holds_the_api_key(db_path: Path) -> None:
    with Outbox(db_path, api_key=API_KEY_IN_TESTS) as ob:
        for i in range(20):
            ob.enqueue("invoice", {"n": i}, key=f"k-{i}")
        assert API_KEY_IN_TESTS not in repr(ob)
        for suffix in ("", "-wal", "-shm"):
            path = Path(str(db_path) + suffix)
            if path.exists():
                assert stat.S_IMODE(path.stat().st_mode) == 0o600, suffix
                assert API_KEY_IN_TESTS.encode() not in path.read_bytes()
    assert stat.S_IMODE(db_path.stat().st_mode) == 0o600
    assert API_KEY_IN_TESTS.encode() not in db_path.read_bytes()


def test_status_facts_round_trip_with_the_time_they_were_learned(ob: Outbox) -> None:
    with freeze_time("2027-01-15 10:00:00.250"):
        ob.journal.set_status("connectivity", {"online": False, "reason": "connection refused"})
    facts = ob.status()
    assert facts["connectivity"] == {"online": False, "reason": "connection refused"}
    assert facts["connectivity_at"] == "2027-01-15T10:00:00.250Z"


def test_on_change_reports_every_change_made_in_this_process(ob: Outbox) -> None:
    seen: list[tuple[str, State | None, State]] = []
    remove = ob.on_change(
        lambda event: seen.append((event.entry_id, event.from_state, event.to_state))
    )
    entry = ob.enqueue("invoice", {})
    ob.cancel(entry.id)
    remove()
    ob.enqueue("invoice", {"after": "removal"})
    assert seen == [(entry.id, None, State.PENDING), (entry.id, State.PENDING, State.CANCELLED)]


@pytest.mark.e2e
def test_changes_yields_events_made_by_other_processes(db_path: Path) -> None:
    with Outbox(db_path) as ob:
        before = ob.enqueue("invoice", {"n": 0})
        feed = ob.changes(timeout=10, poll_interval=0.05)
        other = run_cli_process("--db", str(db_path), "enqueue", "invoice", "--data", '{"n": 1}')
        assert other.returncode == 0, other.stderr
        event = next(feed)
        assert event.entry_id == other.stdout.strip() != before.id
        assert event.to_state is State.PENDING
        # Replaying from the start gives the whole history, in order.
        replay = list(ob.changes(since=0, timeout=0.1))
        assert [e.entry_id for e in replay] == [before.id, event.entry_id]


@pytest.mark.e2e
def test_a_second_outbox_on_the_same_file_in_one_process_loses_nothing(db_path: Path) -> None:
    # Opening a file that SQLite has open, then closing it, drops the whole process's POSIX
    # locks on it. Another process then sees no reader, takes the journal for its own when it
    # closes, and deletes the write-ahead log: what the first outbox writes next would vanish.
    with Outbox(db_path) as first:
        first.enqueue("invoice", {"n": 1}, key="before")
        with Outbox(db_path):  # e.g. the dashboard's counting connection
            other = run_cli_process("--db", str(db_path), "cancel", first.list()[0].id)
            assert other.returncode == 0, other.stderr
            kept = first.enqueue("invoice", {"n": 2}, key="after")
            # Durable on return means every process sees it now, not only once we close.
            seen = run_cli_process("--db", str(db_path), "show", kept.id)
            assert seen.returncode == 0, seen.stderr
