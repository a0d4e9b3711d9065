"""A process that runs for weeks keeps what it holds bounded: memory per entry processed, file
descriptors, threads, the write-ahead log, and the temporary files of interrupted downloads."""

from __future__ import annotations

import gc
import os
import sqlite3
import threading
import tracemalloc
from pathlib import Path

import pytest
from support import INSPECTION, FakeClock, simulated

from outbox import Outbox, State, store
from outbox.models import RenderRequest
from outbox.sandbox import Sandbox
from outbox.store import Journal

#: Python memory an entry may leave behind once it is done (bytes): far above noise, far below
#: anything kept per entry (an id in a set alone costs about 100).
KEPT_PER_ENTRY = 40


def enqueue(ob: Outbox, first: int, count: int) -> None:
    ob.enqueue_many(
        {"template": "inspection-report", "data": {**INSPECTION, "site": f"S{n}"}, "key": f"k{n}"}
        for n in range(first, first + count)
    )


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_memory_fds_and_threads_stay_flat_as_entries_are_processed(
    tmp_path: Path, clock: FakeClock, timed: Sandbox
) -> None:
    """What outbox's own code allocated and still holds (the sandbox's is left out) grows by
    less than KEPT_PER_ENTRY bytes per entry over 800 entries, after a warm-up of 400.

    Tracing starts before the warm-up, so caches of fixed size (filled during it) are seen
    being freed as well as filled.
    """
    ob = simulated(tmp_path / "journal.db", timed, clock, downloads=tmp_path / "pdfs")
    done = 0

    def process(count: int) -> None:
        nonlocal done
        for _ in range(count // 200):
            enqueue(ob, done, 200)
            done += 200
            assert ob.flush(600).drained
        assert ob.counts()[State.DONE] == done

    ours = [
        tracemalloc.Filter(True, "*/outbox/*"),
        tracemalloc.Filter(False, "*/outbox/sandbox/*"),
        # Left out knowingly: files.FolderNames keeps every name of the downloads and results
        # folders (about 370 bytes per PDF saved), to refuse a name that clashes in another
        # case, under keys made by platform.name_key; bounding it needs another way to find
        # such clashes (see the README).
        tracemalloc.Filter(False, "*/outbox/files.py"),
        tracemalloc.Filter(False, "*/outbox/platform.py"),
    ]
    tracemalloc.start(1)
    try:
        process(400)
        gc.collect()
        fds, threads = open_fds(), threading.active_count()
        before = tracemalloc.take_snapshot().filter_traces(ours)
        process(800)
        gc.collect()
        after = tracemalloc.take_snapshot().filter_traces(ours)
    finally:
        tracemalloc.stop()
    growth = after.compare_to(before, "lineno")
    assert sum(stat.size_diff for stat in growth) < KEPT_PER_ENTRY * 800, growth[:5]
    assert open_fds() <= fds
    assert threading.active_count() <= threads
    ob.close()


@pytest.fixture
def small_wal(monkeypatch: pytest.MonkeyPatch) -> int:
    """A 1 MB bound, looked at every 8 commits, so a test writes a few MB, not hundreds."""
    monkeypatch.setattr(store, "WAL_LIMIT", 1024 * 1024)
    monkeypatch.setattr(store, "WAL_CHECK_EVERY", 8)
    return store.WAL_LIMIT


def commit(journal: Journal, n: int) -> None:
    journal.enqueue(RenderRequest("inspection-report", {**INSPECTION, "n": n}, key=f"k{n}"))


def wal_size(db: Path) -> int:
    try:
        return db.with_name(db.name + "-wal").stat().st_size
    except FileNotFoundError:
        return 0


def test_the_wal_stays_bounded_while_another_connection_keeps_reading(
    db_path: Path, small_wal: int
) -> None:
    journal = Journal(db_path, durability="fast")
    stop = threading.Event()
    reads = 0

    def reader() -> None:  # a dashboard or a producer: reads all the time, each one short
        nonlocal reads
        conn = sqlite3.connect(db_path, isolation_level=None)
        while not stop.is_set():
            conn.execute("BEGIN")
            conn.execute("SELECT count(*) FROM entries").fetchone()
            conn.execute("COMMIT")
            reads += 1
        conn.close()

    thread = threading.Thread(target=reader)
    thread.start()
    largest = 0
    try:
        for n in range(1500):
            commit(journal, n)
            largest = max(largest, wal_size(db_path))
    finally:
        stop.set()
        thread.join()
    journal.close()
    assert reads > 100
    # Between two looks, 8 commits of a few pages each may add to the limit.
    assert largest < small_wal * 1.5, largest


def test_a_reader_holding_a_snapshot_pins_the_wal_only_while_it_holds_it(
    db_path: Path, small_wal: int
) -> None:
    journal = Journal(db_path, durability="fast")
    commit(journal, 0)
    reader = sqlite3.connect(db_path, isolation_level=None)
    reader.execute("BEGIN")
    reader.execute("SELECT count(*) FROM entries").fetchone()  # holds this snapshot
    for n in range(1, 600):
        commit(journal, n)
    assert wal_size(db_path) > small_wal  # nothing can be given back while it reads
    reader.execute("COMMIT")
    for n in range(600, 620):
        commit(journal, n)
    assert wal_size(db_path) <= small_wal
    assert journal.counts()[State.PENDING] == 620
    reader.close()
    journal.close()
