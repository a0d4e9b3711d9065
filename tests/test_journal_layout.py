"""The journal's layout for scale: time-ordered ids, indexes that match the queries, counts
kept by triggers, an enqueue that writes only what its features need, and no full scan on any
path that runs per flush or per command.

Plans are checked with ``EXPLAIN QUERY PLAN`` on every statement the journal really runs (its
connection's trace), so a new query on those paths is checked too.
"""

from __future__ import annotations

import dataclasses
import random
import re
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlite_utils
from support import INSPECTION, FakeClock, run_cli, simulated

from outbox import Entry, Event, Outbox, State
from outbox.clock import iso
from outbox.deliveries import UNFINISHED_DELIVERY_STATES
from outbox.ids import IdMaker
from outbox.migrations import APPLICATION_ID, MIGRATIONS
from outbox.models import TERMINAL_STATES, UNFINISHED_STATES
from outbox.sandbox import Sandbox
from outbox.store import FINISHED_ENTRY, UNFINISHED_DELIVERY, UNFINISHED_ENTRY, Journal

#: The sandbox's template.
T = "inspection-report"

# -- ids -------------------------------------------------------------------------------


def test_ids_sort_in_the_order_entries_were_made(db_path: Path, clock: FakeClock) -> None:
    made: list[str] = []
    with Outbox(db_path, clock=clock) as ob:
        for batch in range(5):
            made += [
                e.id for e in ob.enqueue_many({"template": "t", "data": {}} for _ in range(300))
            ]
            made.append(ob.enqueue("t", {}).id)
            clock.advance(0.4 if batch % 2 else 3.0)
        assert all(re.fullmatch(r"[0-9a-f]{16}", entry_id) for entry_id in made)
        assert made == sorted(made) and len(set(made)) == len(made)
        # Newest first by insertion is newest first by id, too.
        assert [e.id for e in ob.list(limit=10)] == made[::-1][:10]


def test_generated_keys_sort_in_the_order_they_were_made(db_path: Path) -> None:
    """A key outbox makes lands at the end of the keys' index, as the id does; its random
    half keeps it unique among processes."""
    with Outbox(db_path) as ob:
        keys = [e.key for e in ob.enqueue_many({"template": "t", "data": {}} for _ in range(500))]
        keys += [ob.enqueue("t", {}).key for _ in range(5)]
    assert all(re.fullmatch(r"outbox-[0-9a-f]{32}", key) for key in keys)
    assert keys == sorted(keys) and len(set(keys)) == len(keys)


def test_ids_keep_growing_when_the_clock_goes_back() -> None:
    make = IdMaker(random.Random(3))
    ahead = [make(2_000_000_000.0) for _ in range(50)]
    behind = [make(1_900_000_000.0) for _ in range(50)]
    assert ahead + behind == sorted(ahead + behind) and len(set(ahead + behind)) == 100


def test_ids_of_one_second_run_into_the_next_rather_than_repeat() -> None:
    make = IdMaker(random.Random(5))
    made = [make(1_800_000_000.5) for _ in range(200_000)]  # more than one second's room
    assert made == sorted(made) and len(set(made)) == len(made)
    assert int(made[0][:8], 16) == 1_800_000_000 < int(made[-1][:8], 16)


def test_the_time_part_is_the_second_an_entry_was_made(db_path: Path, clock: FakeClock) -> None:
    journal = Journal(db_path, clock=clock, new_id=IdMaker())
    try:
        with Outbox(db_path) as ob:
            entry = journal.enqueue(ob.prepare("t", {}))
    finally:
        journal.close()
    assert int(entry.id[:8], 16) == int(clock.now())


def test_an_id_another_process_made_already_is_drawn_again(db_path: Path, clock: FakeClock) -> None:
    """Two processes whose random draws agree (same seed, same second) make the same id: the
    second one's insert must neither fail nor be taken for an existing key."""
    first = Journal(db_path, clock=clock, new_id=IdMaker(random.Random(9)))
    second = Journal(db_path, clock=clock, new_id=IdMaker(random.Random(9)))
    try:
        with Outbox(db_path, clock=clock) as ob:
            mine = first.enqueue(ob.prepare("t", {"n": 1}, key="a"))
            theirs = second.enqueue(ob.prepare("t", {"n": 2}, key="b"))
            assert mine.id != theirs.id
            assert ob.get(theirs.id).key == "b" and ob.get(mine.id).key == "a"
    finally:
        first.close()
        second.close()


def _scripted(*ids: str) -> Callable[[float], str]:
    """An id maker that hands out ``ids`` in turn (whatever the time)."""
    given = iter(ids)
    return lambda now: next(given)


def test_a_delivery_id_another_process_made_already_is_drawn_again(
    db_path: Path, clock: FakeClock
) -> None:
    first = Journal(db_path, clock=clock, new_id=_scripted("a" * 16, "b" * 16))
    second = Journal(db_path, clock=clock, new_id=_scripted("c" * 16, "b" * 16, "d" * 16))
    try:
        with Outbox(db_path, clock=clock) as ob:
            mine = first.enqueue(ob.prepare("t", {"n": 1}, share=True))
            theirs = second.enqueue(ob.prepare("t", {"n": 2}, share=True))
            assert [d.id for d in mine.deliveries] == ["b" * 16]
            assert [d.id for d in theirs.deliveries] == ["d" * 16]
            assert ob.get(theirs.id).deliveries == theirs.deliveries
    finally:
        first.close()
        second.close()


def test_get_by_a_unique_prefix_of_six_or_more(db_path: Path, clock: FakeClock) -> None:
    # Its own id maker: ids made earlier in this process (at the real time, ahead of the
    # fake clock) would otherwise keep these running ahead of the clock.
    journal = Journal(db_path, clock=clock, new_id=IdMaker())
    try:
        with Outbox(db_path, clock=clock) as ob:
            first = journal.enqueue(ob.prepare("t", {"n": 1}))
            clock.advance(100_000)  # another day: the ids differ in their first six digits
            second = journal.enqueue(ob.prepare("t", {"n": 2}))
            assert ob.get(first.id[:6]).id == first.id and ob.get(second.id[:6]).id == second.id
            same_second = journal.enqueue(ob.prepare("t", {"n": 3}))
            shared = len(_common_prefix(second.id, same_second.id))
            assert shared >= 8  # the second they were made in
            assert ob.get(same_second.id[: shared + 1]).id == same_second.id
            with pytest.raises(Exception, match="no entry with id"):
                ob.get(second.id[:shared])  # two entries share it
    finally:
        journal.close()


def test_entries_from_random_id_journals_are_still_found(db_path: Path) -> None:
    """Ids of older journals (16 random hex digits) are kept: nothing anyone wrote down
    (a script, a PDF name, a drop folder's marks) stops pointing at its entry."""
    with Outbox(db_path) as ob:
        new = ob.enqueue("t", {"n": 1})
        with sqlite3.connect(db_path) as conn:
            conn.execute("UPDATE entries SET id = 'f00dfeedc0ffee42' WHERE id = ?", (new.id,))
            conn.execute("UPDATE events SET entry_id = 'f00dfeedc0ffee42'")
        assert ob.get("f00dfe").data == {"n": 1}
        assert [e.to_state for e in ob.history("f00dfeedc0ffee42")] == [State.PENDING]


def _common_prefix(a: str, b: str) -> str:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return a[:n]


# -- what enqueue returns --------------------------------------------------------------


def test_enqueue_returns_exactly_what_the_journal_holds(db_path: Path) -> None:
    with Outbox(db_path) as ob:
        seen: list[Event] = []
        ob.on_change(seen.append)
        entry = ob.enqueue("invoice", {"n": 1}, key="k-1", filename="a.pdf", version=3)
        entries = ob.enqueue_many([{"template": "invoice", "data": {"n": 2}, "share": True}])
        for made in [entry, *entries]:
            assert made == ob.get(made.id)
        assert seen[0] == ob.history(entry.id)[0]
        assert seen[1:] == ob.history(entries[0].id)
    # Built in one step (models.assembled), not by __init__: every field is the object's own.
    built_all: list[Entry | Event] = [entry, *entries, *seen]
    for built in built_all:
        assert set(vars(built)) == {f.name for f in dataclasses.fields(built)}, built


def test_the_enqueue_stamp_is_the_text_datetime_makes() -> None:
    """clock.iso formats without a datetime (it runs on every enqueue) and keeps the last
    second's text; same text, rounding included: microseconds half to even, carried into the
    next second."""

    def by_datetime(ts: float) -> str:
        moment = datetime.fromtimestamp(ts, tz=UTC)
        return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"

    rng = random.Random(15)
    edges = [0.0, 1.0, 59.9999995, 1796012685.9999996, 1796012685.0005, -1.5, 2**32 + 0.25]
    running = [1796012683.9999995 + n / 997 for n in range(3_000)]  # seconds kept, then not
    for ts in [*edges, *running, *(rng.uniform(0, 4e9) for _ in range(20_000)), *edges]:
        assert iso(ts) == by_datetime(ts), ts


# -- counts ----------------------------------------------------------------------------


def _counted(db: Path) -> dict[State, int]:
    counts = {state: 0 for state in State}
    with sqlite3.connect(db) as conn:
        for state, n in conn.execute("SELECT state, count(*) FROM entries GROUP BY state"):
            counts[State(state)] = n
    return counts


def test_counts_follow_every_insert_move_and_delete(
    tmp_path: Path, timed: Sandbox, clock: FakeClock
) -> None:
    db = tmp_path / "j.db"
    with simulated(db, timed, clock) as ob, traced(ob.journal) as statements:
        ids = [
            e.id for e in ob.enqueue_many({"template": T, "data": INSPECTION} for _ in range(30))
        ]
        ids.append(ob.enqueue(T, INSPECTION, share=True).id)
        assert ob.counts() == _counted(db) and ob.counts()[State.PENDING] == 31
        ob.cancel(ids[0])
        ob.flush(timeout=600)
        assert ob.counts() == _counted(db) and ob.counts()[State.DONE] == 30
        ob.amend(ids[0], data={**INSPECTION, "site": "South"})
        assert ob.counts() == _counted(db)
        clock.advance(86_400)
        assert ob.purge(3600) == 30
        assert ob.counts() == _counted(db) == {**{s: 0 for s in State}, State.PENDING: 1}
    # No count row follows an insert: every entry is inserted pending, by the one INSERT.
    inserts = [sql for sql in statements if re.match(r"\s*INSERT INTO entries\b", sql)]
    assert len(inserts) == 31
    assert all(" VALUES (" in sql and "'pending'" in sql for sql in inserts)


# -- query plans -----------------------------------------------------------------------


@contextmanager
def traced(journal: Journal) -> Iterator[list[str]]:
    """Every statement the journal's connection runs inside the block, values inlined."""
    statements: list[str] = []
    journal._conn.set_trace_callback(statements.append)
    try:
        yield statements
    finally:
        journal._conn.set_trace_callback(None)


_TABLES = r"(entries|events|deliveries)"


def full_scans(db: Path, statements: list[str]) -> list[str]:
    """The statements whose plan walks a table of entries, events or deliveries (or one of
    its indexes) from end to end, or sorts rows that were not picked by a partial index of
    the work in progress, each with the plan line that does it.

    A walk that stops at its first rows (no WHERE, a LIMIT: "the newest 5", "is there any")
    is not a full walk.
    """
    found: list[str] = []
    conn = sqlite3.connect(db)
    try:
        for sql in statements:
            if not re.match(r"\s*(SELECT|UPDATE|DELETE|INSERT|WITH)", sql, re.I):
                continue
            plan = [row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + sql)]
            bounded = " WHERE " not in sql and re.search(r" LIMIT \d+$", sql)
            from_work = any(re.search(r"INDEX idx_\w+_(due|leased)\b", line) for line in plan)
            for line in plan:
                scan = re.match(rf"SCAN {_TABLES}\b", line) and not bounded
                sort = line.startswith("USE TEMP B-TREE") and not from_work
                if scan or sort:
                    found.append(f"{line}  <-  {sql}")
    finally:
        conn.close()
    return found


@pytest.fixture
def busy_journal(tmp_path: Path, timed: Sandbox, clock: FakeClock) -> Path:
    """A journal with entries in every state, deliveries, and leases."""
    db = tmp_path / "busy.db"
    with simulated(db, timed, clock) as ob:
        ob.enqueue_many(
            {"template": T, "data": {**INSPECTION, "n": i}, "share": i % 3 == 0} for i in range(40)
        )
        assert ob.flush(timeout=600).counts[State.DONE] == 40
        pending = ob.enqueue_many(
            {"template": T, "data": {**INSPECTION, "n": i}} for i in range(10)
        )
        ob.cancel(pending[0].id)
        ob.journal.claim_due(State.PENDING, owner="h:1:a", lease_seconds=60, limit=2, horizon=3600)
    return db


def test_no_full_scan_in_a_flush_with_nothing_to_do(
    busy_journal: Path, timed: Sandbox, clock: FakeClock
) -> None:
    with simulated(busy_journal, timed, clock) as ob:
        ob.journal.release_all("h:1:a")
        with traced(ob.journal) as statements:
            ob.flush(timeout=600)
        assert any("entry_counts" in sql for sql in statements)
        assert full_scans(busy_journal, statements) == []


@pytest.mark.parametrize(
    "step",
    [
        pytest.param(lambda j: j.lease_owners(), id="lease_owners"),
        pytest.param(lambda j: j.release_all("h:1:a"), id="release_all"),
        pytest.param(lambda j: j.counts(), id="counts"),
        pytest.param(lambda j: j.next_due_at(sorted(UNFINISHED_STATES), horizon=3600), id="due"),
        pytest.param(lambda j: j.next_delivery_due_at(horizon=3600), id="delivery_due"),
        pytest.param(lambda j: j.unfinished_deliveries(), id="unfinished_deliveries"),
        pytest.param(
            lambda j: [
                j.claim_due(s, owner="me", lease_seconds=1, limit=4, horizon=3600)
                for s in sorted(UNFINISHED_STATES)
            ],
            id="claims",
        ),
        pytest.param(
            lambda j: j.claim_due_deliveries(owner="me", lease_seconds=1, limit=4, horizon=3600),
            id="delivery_claims",
        ),
    ],
)
def test_the_per_pass_queries_walk_indexes_only(
    busy_journal: Path, clock: FakeClock, step: Callable[[Journal], Any]
) -> None:
    journal = Journal(busy_journal, clock=clock)
    try:
        with traced(journal) as statements:
            step(journal)
        assert statements
        assert full_scans(busy_journal, statements) == []
    finally:
        journal.close()


@pytest.mark.parametrize(
    "args",
    [
        ("status",),
        ("enqueue", "t", "--data", '{"n": 1}', "--key", "a-new-one"),
        ("enqueue", "t", "--data", '{"n": 1}', "--key", "a-new-one", "--share"),
        ("show", "LAST"),
        ("list", "--limit", "5"),
        ("list", "--state", "pending", "--limit", "5"),
        ("cancel", "LAST"),
    ],
)
def test_no_full_scan_in_the_everyday_commands(
    busy_journal: Path, monkeypatch: pytest.MonkeyPatch, args: tuple[str, ...]
) -> None:
    with Outbox(busy_journal) as ob:
        last = ob.list(limit=1)[0].id
    statements: list[str] = []
    connect = sqlite3.connect

    def tracing_connect(*a: Any, **kw: Any) -> sqlite3.Connection:
        conn: sqlite3.Connection = connect(*a, **kw)
        conn.set_trace_callback(statements.append)
        return conn

    monkeypatch.setattr(sqlite3, "connect", tracing_connect)
    result = run_cli("--db", str(busy_journal), *(last if a == "LAST" else a for a in args))
    monkeypatch.undo()
    assert result.returncode == 0, result.stderr
    assert statements
    assert full_scans(busy_journal, statements) == []


def test_the_partial_index_conditions_name_exactly_the_unfinished_states() -> None:
    assert set(re.findall(r"'(\w+)'", UNFINISHED_ENTRY)) == {s.value for s in UNFINISHED_STATES}
    assert set(re.findall(r"'(\w+)'", FINISHED_ENTRY)) == {s.value for s in TERMINAL_STATES}
    assert set(State) == TERMINAL_STATES | UNFINISHED_STATES
    assert set(re.findall(r"'(\w+)'", UNFINISHED_DELIVERY)) == {
        s.value for s in UNFINISHED_DELIVERY_STATES
    }


def test_the_partial_indexes_hold_the_work_in_progress_only(busy_journal: Path) -> None:
    with sqlite3.connect(busy_journal) as conn:
        due = conn.execute(
            f"SELECT count(*) FROM entries INDEXED BY idx_entries_due WHERE {UNFINISHED_ENTRY}"
        ).fetchone()[0]
        leased = conn.execute(
            "SELECT count(*) FROM entries INDEXED BY idx_entries_leased"
            " WHERE lease_owner IS NOT NULL"
        ).fetchone()[0]
        total = conn.execute("SELECT count(*) FROM entries").fetchone()[0]
    assert (due, leased, total) == (9, 2, 50)


def test_the_paging_indexes_and_the_count_rows_hold_finished_entries_only(
    busy_journal: Path,
) -> None:
    """What an enqueue no longer writes: a pending entry has no place in the indexes by state
    and by template (it is found through idx_entries_due) and changes no count row."""
    finished = {s.value for s in TERMINAL_STATES}
    with sqlite3.connect(busy_journal) as conn:
        for index in ("idx_entries_state_seq", "idx_entries_template_seq"):
            held = conn.execute(
                f"SELECT count(*) FROM entries INDEXED BY {index} WHERE {FINISHED_ENTRY}"
            ).fetchone()[0]
            assert held == 41, index  # 40 done + 1 cancelled, of 50
        rows = {state for (state,) in conn.execute("SELECT state FROM entry_counts")}
        triggers = {
            name: sql
            for name, sql in conn.execute(
                "SELECT name, sql FROM sqlite_master WHERE type = 'trigger'"
            )
        }
    assert rows == finished
    assert set(triggers) == {"entries_count_move", "entries_count_delete"}  # none on insert
    assert FINISHED_ENTRY.replace("state", "OLD.state") in triggers["entries_count_delete"]


@pytest.mark.parametrize(
    "step",
    [
        pytest.param(lambda ob: ob.page(state="pending", limit=3), id="page-by-state"),
        pytest.param(lambda ob: ob.page(template=T, limit=3), id="page-by-template"),
        pytest.param(lambda ob: ob.list(state="pending", limit=3), id="list-by-state"),
    ],
)
def test_pages_of_unfinished_entries_sort_their_seqs_in_the_due_index_then_read_the_page(
    busy_journal: Path, step: Callable[[Outbox], Any]
) -> None:
    """Unfinished entries are not in the paging indexes: their newest are picked from the
    due index alone (covering: it holds state, due_at and seq), and only the page's rows are
    read, so a large backlog is not read whole for every page."""
    with Outbox(busy_journal) as ob, traced(ob.journal) as statements:
        step(ob)
    unfinished = [sql for sql in statements if UNFINISHED_ENTRY in sql]
    assert unfinished
    with sqlite3.connect(busy_journal) as conn:
        for sql in unfinished:
            plan = [row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + sql)]
            assert any("USING INTEGER PRIMARY KEY (rowid=?)" in line for line in plan), plan
            assert any("COVERING INDEX idx_entries_due" in line for line in plan) or (
                "template" in sql
            ), plan
    conn.close()
    assert full_scans(busy_journal, statements) == []


def test_an_enqueue_writes_its_row_its_keys_its_due_entry_and_its_event_only(
    db_path: Path,
) -> None:
    """Pages one enqueue writes to the write-ahead log: the entry's row, idx_entries_id,
    idx_entries_base_key, idx_entries_due, the event's row and idx_events_entry_id_id (plus
    the odd page split), where it used to write eleven."""
    with Outbox(db_path, validation="off") as ob:
        ob.enqueue_many({"template": T, "data": {"n": n}} for n in range(50))
        conn = ob.journal._conn
        wal = db_path.with_name(db_path.name + "-wal")
        conn.execute("PRAGMA wal_autocheckpoint=0")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        for n in range(20):
            ob.enqueue(T, {"n": n}, key=f"k-{n}")
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        pages = (wal.stat().st_size - 32) / (page_size + 24) / 20
    assert 6 <= pages < 7.5


def test_every_index_serves_a_query(busy_journal: Path) -> None:
    """The indexes a journal has, and why: one that nothing uses only costs every insert."""
    with sqlite3.connect(busy_journal) as conn:
        names = {
            row[0]
            for row in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL"
            )
        }
    assert names == {
        "idx_entries_id",  # get, every move by id
        "idx_entries_base_key",  # keys: enqueue's conflict check, find_by_key, key search
        "idx_entries_due",  # claims and the next due time: unfinished entries only
        "idx_entries_leased",  # lease_owners and release_all: leased entries only
        "idx_entries_state_seq",  # list and page by state, newest first: finished entries
        "idx_entries_template_seq",  # page by template, templates_in_use: finished entries
        "idx_events_entry_id_id",  # history, purge
        "idx_deliveries_id",  # a delivery by id
        "idx_deliveries_entry_id",  # an entry's deliveries
        "idx_deliveries_due",  # delivery claims and their next due time
        "idx_deliveries_leased",  # lease_owners and release_all for deliveries
        "idx_deliveries_share_id",  # one share is recorded once (unique)
    }


def test_an_older_journal_gets_the_counts_and_indexes_and_keeps_its_ids(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA application_id={APPLICATION_ID}")
    before_counts = 7  # the schema before counts and partial indexes
    for migrate in MIGRATIONS[:before_counts]:
        migrate(sqlite_utils.Database(conn))
    states = ["pending"] * 3 + ["done"] * 5 + ["failed", "cancelled"]
    for n, state in enumerate(states):
        conn.execute(
            "INSERT INTO entries (id, template, data, base_key, key, state, due_at, created_at,"
            " updated_at, lease_owner, lease_until) VALUES (?, 't', '{}', ?, ?, ?, 0,"
            " '2026-01-01T00:00:00.000Z', '2026-01-01T00:00:00.000Z', ?, ?)",
            (f"{n:x}0c0ffee0ddba11", f"k{n}", f"k{n}", state, "h:1:x" if n == 0 else None, 9e9),
        )
    conn.execute(f"PRAGMA user_version={before_counts}")
    conn.commit()
    conn.close()
    with Outbox(path) as ob:
        assert ob.counts() == {
            **{s: 0 for s in State},
            State.PENDING: 3,
            State.DONE: 5,
            State.FAILED: 1,
            State.CANCELLED: 1,
        }
        assert ob.journal.lease_owners() == ["h:1:x"]
        assert ob.get("00c0ffee").key == "k0"
        new = ob.enqueue("t", {})
        assert ob.counts()[State.PENDING] == 4 and ob.get(new.id) == new
    with sqlite3.connect(path) as conn:
        indexes = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
    assert {"idx_entries_due", "idx_entries_leased", "entry_counts"} <= indexes
    assert "idx_entries_state_due_at" not in indexes
