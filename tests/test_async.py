"""AsyncOutbox: the Outbox API awaited, on the same engine, without blocking the event loop."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import inspect
import os
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from support import FAST, INSPECTION, FakeClock, renders_per_entry_ok

from outbox import AsyncOutbox, Event, Outbox, Settings, State
from outbox.errors import (
    EntryNotFound,
    IllegalTransition,
    InvalidArgument,
    JournalBusy,
    JournalError,
    JournalMissing,
)
from outbox.models import can_move
from outbox.sandbox import Faults, Sandbox


def async_connected(db: Path, sb: Sandbox | SandboxProcess, **kwargs: Any) -> AsyncOutbox:
    """An AsyncOutbox on ``db`` that talks to ``sb``: in-process through its transport, or
    over a socket to a sandbox in another process."""
    options: dict[str, Any] = {"settings": FAST, **kwargs}
    if isinstance(sb, Sandbox):
        options.setdefault("transport", sb.transport())
    return AsyncOutbox(db, api_key=sb.api_key, base_url=sb.base_url, **options)


def leased(db: Path) -> int:
    """How many entries hold a lease, read straight from the file."""
    with contextlib.closing(sqlite3.connect(db)) as conn:
        return int(
            conn.execute("SELECT count(*) FROM entries WHERE lease_owner IS NOT NULL").fetchone()[0]
        )


def assert_legal_histories(db: Path) -> None:
    """Every entry's events form a legal path through the states, ending where it stands."""
    with Outbox(db) as ob:
        for entry in ob.list():
            events = ob.history(entry.id)
            assert events[0].from_state is None and events[0].to_state is State.PENDING
            for before, after in zip(events, events[1:], strict=False):
                assert after.from_state is before.to_state, (entry.id, events)
                assert can_move(after.from_state, after.to_state), (entry.id, events)
            assert events[-1].to_state is entry.state


# -- the API ---------------------------------------------------------------------------------


def test_every_public_outbox_method_has_an_async_twin() -> None:
    """Adding a method to Outbox without its async twin fails here."""
    members = [(n, m) for n, m in inspect.getmembers(Outbox) if not n.startswith("_")]
    public = [name for name, member in members if callable(member)]
    assert {"enqueue", "flush", "changes", "status"} <= set(public)
    for name in (name for name, member in members if isinstance(member, property)):
        assert isinstance(getattr(AsyncOutbox, name, None), property), name
    replaced_by_cancellation = {"flush": {"stop"}}
    for name in public:
        twin = getattr(AsyncOutbox, name, None)
        assert twin is not None, f"AsyncOutbox has no twin of Outbox.{name}"
        if name in {"changes", "stream"}:
            returns = inspect.signature(twin).return_annotation
            assert "AsyncGenerator" in str(returns), name
        else:
            assert inspect.iscoroutinefunction(twin), f"AsyncOutbox.{name} is not async"
        sync_params = set(inspect.signature(getattr(Outbox, name)).parameters)
        twin_params = set(inspect.signature(twin).parameters)
        assert twin_params == sync_params - replaced_by_cancellation.get(name, set()), name
    assert inspect.signature(AsyncOutbox).parameters.keys() == (
        inspect.signature(Outbox).parameters.keys()
    )


def test_journal_calls_work_offline_without_a_key(db_path: Path) -> None:
    clock = FakeClock()

    async def main() -> None:
        ob = AsyncOutbox(db_path, clock=clock)
        assert "not opened yet" in repr(ob)
        async with ob:
            entry = await ob.enqueue("inspection-report", INSPECTION, key="insp-1")
            again = await ob.enqueue("inspection-report", INSPECTION, key="insp-1")
            assert again.id == entry.id
            batch = await ob.enqueue_many(
                [{"template": "invoice", "data": {"n": i}, "key": f"inv-{i}"} for i in range(3)]
            )
            request = await ob.prepare("inspection-report", INSPECTION, key="insp-2")
            [prepared] = await ob.enqueue_many([request])
            assert (await ob.get(entry.id)).state is State.PENDING
            assert [e.id for e in await ob.list(state="pending", limit=2)] == [
                prepared.id,
                batch[2].id,
            ]
            assert (await ob.counts())[State.PENDING] == 5
            first_page = await ob.page(state="pending", limit=3)
            assert [e.id for e in first_page.entries] == [prepared.id, batch[2].id, batch[1].id]
            assert [e.to_state for e in await ob.history(entry.id)] == [State.PENDING]
            assert (await ob.check("inspection-report", INSPECTION)).outcome == "uncached"
            assert await ob.templates() == []
            assert await ob.status() == {}
            await ob.set_status("app:last-sync", {"n": 3})
            assert (await ob.status())["app:last-sync"] == {"n": 3}
            assert (await ob.find_by_key("insp-1")) == entry
            assert await ob.find_by_key("nobody") is None
            assert [e.entry_id for e in await ob.events_after(0, limit=2)] == [
                entry.id,
                batch[0].id,
            ]
            assert await ob.check_request(request) is not None
            assert (ob.path, ob.schema_version) == (db_path, ob.sync.schema_version)
            board = await ob.dashboard(port=0)
            async with httpx.AsyncClient() as http:
                assert (await http.get(board.url, follow_redirects=True)).status_code == 200
            amended = await ob.amend(entry.id, data={**INSPECTION, "site": "South"})
            assert (amended.id, amended.key, amended.data["site"]) == (entry.id, "insp-1", "South")
            cancelled = await ob.cancel(batch[0].id)
            assert cancelled.state is State.CANCELLED
            clock.advance(60)
            assert await ob.purge(30) == 1
            with pytest.raises(EntryNotFound):
                await ob.get(batch[0].id)
            with pytest.raises(InvalidArgument, match="not a valid slug"):
                await ob.enqueue("Not A Slug", INSPECTION)
            with pytest.raises(IllegalTransition):
                await ob.retry(entry.id)
            assert ob.sync.journal.path == db_path
        assert "closed" in repr(ob)
        with pytest.raises(JournalError, match="closed"):
            await ob.get(entry.id)
        with pytest.raises(JournalMissing):
            await AsyncOutbox(db_path.with_name("missing.db"), create=False).open()
        assert not db_path.with_name("missing.db").exists()

    asyncio.run(main())
    with Outbox(db_path) as ob:  # everything was written through the sync engine's journal
        assert ob.counts()[State.PENDING] == 4


def test_flush_retry_sync_templates_against_the_sandbox(db_path: Path, sandbox: Sandbox) -> None:
    async def main() -> None:
        loop_thread = threading.get_ident()
        callback_threads: set[int] = set()
        changes: list[tuple[str, State]] = []
        progress: list[dict[State, int]] = []

        def on_change(event: Event) -> None:
            callback_threads.add(threading.get_ident())
            changes.append((event.entry_id, event.to_state))

        def on_progress(counts: dict[State, int]) -> None:
            callback_threads.add(threading.get_ident())
            progress.append(counts)

        async with async_connected(db_path, sandbox) as ob:
            templates = await ob.sync_templates()
            assert "inspection-report" in [t.slug for t in templates]
            bad = await ob.check("inspection-report", {"inspector": 42})
            assert bad.outcome == "invalid"
            remove = await ob.on_change(on_change)
            good = await ob.enqueue("inspection-report", INSPECTION, key="good")
            doomed = await ob.enqueue("always-fails", {"title": "x"}, key="doomed")
            report = await ob.flush(timeout=30, progress=on_progress)
            assert report.exit_code == 65, report.problems
            assert (await ob.get(good.id)).state is State.DONE
            assert Path((await ob.get(good.id)).pdf_path or "").exists()
            assert (await ob.get(doomed.id)).state is State.FAILED
            retried = await ob.retry(doomed.id)
            assert (retried.state, retried.key) == (State.PENDING, "doomed~2")
            remove()
            await ob.flush(timeout=30)
            assert (await ob.status())["connectivity"] == {"online": True, "reason": None}
        # Callbacks ran on the event loop's thread, never on outbox's worker threads.
        assert callback_threads == {loop_thread}
        assert (good.id, State.DONE) in changes and (doomed.id, State.FAILED) in changes
        assert (doomed.id, State.PENDING) in changes
        assert progress and all(sum(counts.values()) == 2 for counts in progress)
        # The removed callback heard nothing of the second flush.
        assert [c for c in changes if c[0] == doomed.id].count((doomed.id, State.FAILED)) == 1

    asyncio.run(main())


def test_start_run_and_stop_work_in_the_background(db_path: Path, sandbox: Sandbox) -> None:
    def worker_threads() -> list[threading.Thread]:
        return [t for t in threading.enumerate() if t.name == "outbox"]

    async def wait_done(ob: AsyncOutbox, entry_id: str) -> None:
        async for event in ob.changes(since=0):
            if event.entry_id == entry_id and event.to_state is State.DONE:
                return

    async def main() -> None:
        async with async_connected(db_path, sandbox) as ob:
            await ob.start()
            assert len(worker_threads()) == 1
            first = await ob.enqueue("inspection-report", INSPECTION, key="bg-1")
            await asyncio.wait_for(wait_done(ob, first.id), 60)
            await ob.stop()
            assert worker_threads() == []

            runner = asyncio.create_task(ob.run())
            second = await ob.enqueue("inspection-report", INSPECTION, key="bg-2")
            await asyncio.wait_for(wait_done(ob, second.id), 60)
            runner.cancel()
            with pytest.raises(asyncio.CancelledError):
                await runner
            assert worker_threads() == []
        assert leased(db_path) == 0

    asyncio.run(main())


def test_worker_errors_are_reported_on_the_loop(db_path: Path, sandbox: Sandbox) -> None:
    """A journal locked for longer than busy_timeout escapes the work: the supervised worker
    reports it (on the event loop) and carries on."""

    async def main() -> None:
        loop_thread = threading.get_ident()
        reported: list[tuple[int, Exception]] = []
        heard = asyncio.Event()

        def on_error(exc: Exception) -> None:
            reported.append((threading.get_ident(), exc))
            heard.set()

        async with async_connected(db_path, sandbox, busy_timeout=0.1) as ob:
            assert ob.worker_error is None
            with contextlib.closing(sqlite3.connect(db_path, isolation_level=None)) as other:
                other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
                await ob.start(on_error=on_error)
                await asyncio.wait_for(heard.wait(), 60)
                other.execute("ROLLBACK")
            assert reported[0][0] == loop_thread
            assert isinstance(reported[0][1], JournalBusy)
            assert ob.worker_error is not None
            await ob.stop()

    asyncio.run(main())


# -- the change feed ---------------------------------------------------------------------


def test_changes_without_since_starts_where_the_call_was_made(db_path: Path) -> None:
    """Iterating later still sees an enqueue made after ``changes()`` was called."""

    async def main() -> None:
        async with AsyncOutbox(db_path) as ob:
            await ob.enqueue("inspection-report", INSPECTION, key="before")
            feed = ob.changes(timeout=0.5)
            after = await ob.enqueue("inspection-report", INSPECTION, key="after")
            seen = [event async for event in feed]
            assert [(e.entry_id, e.to_state) for e in seen] == [(after.id, State.PENDING)]
            replay = [event async for event in ob.changes(since=0, timeout=0.2)]
            assert [e.id for e in replay] == [1, 2]

    asyncio.run(main())


@pytest.mark.e2e
def test_changes_sees_another_process_enqueue(db_path: Path) -> None:
    async def main() -> None:
        async with AsyncOutbox(db_path) as ob:
            feed = ob.changes(poll_interval=0.05)
            await ob.counts()  # the feed's starting point is now fixed
            env = {**os.environ, "OUTBOX_DB": str(db_path)}
            other = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "outbox",
                "enqueue",
                "inspection-report",
                "--data",
                '{"inspector": "Bea", "site": "South"}',
                "--key",
                "other-process",
                env=env,
                stdout=asyncio.subprocess.PIPE,
            )
            out, _ = await other.communicate()
            assert other.returncode == 0
            event = await asyncio.wait_for(anext(feed), 30)
            assert event.entry_id == out.decode().strip()
            assert (event.from_state, event.to_state) == (None, State.PENDING)
            await feed.aclose()

    asyncio.run(main())


# -- the event loop is never blocked -----------------------------------------------------


@dataclass(frozen=True)
class SandboxProcess:
    base_url: str
    api_key: str


@pytest.fixture
def sandbox_process(tmp_path: Path) -> Iterator[SandboxProcess]:
    """The sandbox in a child process, so that its work does not compete for our GIL."""
    with subprocess.Popen(
        [sys.executable, "-m", "outbox.sandbox", "--port", "0", "--state", str(tmp_path / "sb")]
        + ["--render-seconds", "0.05"],
        stdout=subprocess.PIPE,
        text=True,
    ) as process:
        try:
            assert process.stdout is not None
            base_url = process.stdout.readline().strip().rsplit(" ", 1)[-1]
            api_key = process.stdout.readline().strip().rsplit(" ", 1)[-1]
            yield SandboxProcess(base_url, api_key)
        finally:
            process.terminate()
            process.wait(10)


class Ticker:
    """A task that sleeps 2 ms at a time and records how late the loop woke it."""

    TICK = 0.002

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def run(self) -> None:
        while True:
            before = time.perf_counter()
            await asyncio.sleep(self.TICK)
            self.delays.append(time.perf_counter() - before - self.TICK)

    @contextmanager
    def stalls(self) -> Iterator[list[float]]:
        """The delays recorded while the block runs."""
        start = len(self.delays)
        measured: list[float] = []
        yield measured
        measured.extend(self.delays[start:])


#: The loop must never stall longer than this (the ticker's worst delay). The target is 50 ms,
#: which bench/async.py measures precisely. A test on a busy 2-core machine also sees other
#: processes and Python's garbage collector (which stops every thread), hence the margin; when
#: the machine is so busy that the blocking call below takes long, the margin grows with it.
STALL_BOUND = 0.15


@pytest.mark.e2e
def test_the_event_loop_keeps_ticking_during_flush_and_enqueue_many(
    tmp_path: Path, sandbox_process: SandboxProcess
) -> None:
    """A flush of 200 entries and an enqueue_many of 10,000 run at once; the loop ticks on."""

    def batch(prefix: str, count: int) -> list[dict[str, Any]]:
        return [
            {
                "template": "inspection-report",
                "data": {**INSPECTION, "site": f"Site {i}"},
                "key": f"{prefix}{i}",
            }
            for i in range(count)
        ]

    async def main() -> None:
        ticker = Ticker()
        tick_task = asyncio.create_task(ticker.run())
        flushed = async_connected(tmp_path / "flush.db", sandbox_process, settings=Settings())
        filled = AsyncOutbox(tmp_path / "many.db")
        async with flushed, filled:
            await flushed.enqueue_many(batch("f-", 200))
            await asyncio.sleep(0.05)
            with ticker.stalls() as during:
                report, _ = await asyncio.gather(
                    flushed.flush(timeout=120), filled.enqueue_many(batch("m-", 10_000))
                )
            assert report.counts[State.DONE] == 200, report.problems
            assert (await filled.counts())[State.PENDING] == 10_000
            # The probe does see a blocked loop: the sync call made straight from a coroutine.
            with ticker.stalls() as blocked:
                started = time.perf_counter()
                filled.sync.enqueue_many(batch("b-", 10_000))
                blocking_call = time.perf_counter() - started
                await asyncio.sleep(0.05)
        tick_task.cancel()
        assert len(during) > 10
        assert max(blocked) >= blocking_call * 0.9
        bound = max(STALL_BOUND, blocking_call / 4)
        assert max(during) < bound, (sorted(during)[-5:], blocking_call)

    # A full garbage collection stops every thread for as long as it takes to walk every
    # object in the process, and a long test session holds far more objects than an app:
    # leave them out of the collector's walk, so that what is measured is outbox's work.
    gc.collect()
    gc.freeze()
    try:
        asyncio.run(main())
    finally:
        gc.unfreeze()


# -- cancellation ------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["task.cancel", "asyncio.timeout"])
def test_a_cancelled_flush_leaves_nothing_leased_and_a_later_flush_renders_once(
    db_path: Path, how: str
) -> None:
    count = 24
    with Sandbox(render_seconds=0.05, seed=5, faults=Faults(latency=0.05)) as sb:

        async def main() -> None:
            async with async_connected(db_path, sb) as ob:
                await ob.enqueue_many(
                    {
                        "template": "inspection-report",
                        "data": {**INSPECTION, "site": f"Site {i}"},
                        "key": f"c-{i}",
                    }
                    for i in range(count)
                )
                first_submit = asyncio.Event()
                on_first_submit: list[Callable[[], None]] = []

                def submitted(event: Event) -> None:
                    if event.to_state is State.SUBMITTED and not first_submit.is_set():
                        first_submit.set()
                        for hook in on_first_submit:
                            hook()

                await ob.on_change(submitted)
                if how == "task.cancel":
                    flush = asyncio.create_task(ob.flush(timeout=120))
                    await asyncio.wait_for(first_submit.wait(), 60)
                    flush.cancel()
                    with pytest.raises(asyncio.CancelledError):
                        await flush
                else:  # the deadline passes as soon as the first entry is submitted
                    loop = asyncio.get_running_loop()
                    with pytest.raises(TimeoutError):
                        async with asyncio.timeout(None) as deadline:
                            on_first_submit.append(lambda: deadline.reschedule(loop.time()))
                            await ob.flush(timeout=120)
                    assert first_submit.is_set()
                # At the CancelledError, the flush is over: nothing leased, nothing running.
                assert leased(db_path) == 0
                moves = [e.id async for e in ob.changes(since=0, timeout=0.3)]
                assert [e.id async for e in ob.changes(since=0, timeout=0.3)] == moves
                counts = await ob.counts()
                assert counts[State.PENDING] > 0, counts  # it really stopped mid-way
                assert counts[State.PENDING] < count, counts
                assert_legal_histories(db_path)
                report = await ob.flush(timeout=120)
                assert report.counts[State.DONE] == count, report.problems
            renders_per_entry_ok(sb, count)

        asyncio.run(main())


def test_cancelling_a_journal_call_waits_for_it_or_drops_it(db_path: Path) -> None:
    """A started call finishes before the CancelledError; a queued one never runs."""
    entered, release = threading.Event(), threading.Event()

    def slow_requests() -> Iterator[dict[str, Any]]:
        """Requests read on the journal thread, as slowly as the test says."""
        entered.set()
        release.wait(60)
        yield {"template": "inspection-report", "data": INSPECTION, "key": "s"}

    async def main() -> None:
        async with AsyncOutbox(db_path) as ob:
            started = asyncio.create_task(ob.enqueue_many(slow_requests()))
            queued = asyncio.create_task(ob.enqueue("inspection-report", INSPECTION, key="q"))
            await asyncio.to_thread(entered.wait, 60)  # the first call is running
            queued.cancel()
            started.cancel()
            with pytest.raises(asyncio.CancelledError):
                await queued
            await asyncio.sleep(0.2)
            assert not started.done()  # its work is still running, so its caller waits
            release.set()
            with pytest.raises(asyncio.CancelledError):
                await started
            keys = [e.key for e in await ob.list()]
            assert keys == ["s"]  # the started enqueue committed; the queued one never ran

    asyncio.run(main())
