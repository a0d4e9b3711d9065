"""The supervised background worker: whatever escapes the engine, it says so and carries on."""

from __future__ import annotations

import dataclasses
import logging
import signal
import sqlite3
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

import httpx
import pytest
from support import FAST, INSPECTION, OutboxProcess, connected, run_cli, sandbox_env, wait_until

from outbox import ConfigError, Event, ExitCode, JournalBusy, Outbox, State
from outbox.sandbox import Sandbox
from outbox.schedule import Backoff

#: The worker starts again 50 ms after an error (the default waits 1 s, doubling to a minute).
QUICK_RESTART = dataclasses.replace(
    FAST, schedule=dataclasses.replace(FAST.schedule, worker_restart=Backoff(0.05, 0.2))
)


@contextmanager
def write_lock_held(db: Path) -> Iterator[None]:
    """Another program holds the journal's write lock until the block ends."""
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    finally:
        conn.execute("ROLLBACK")
        conn.close()


def _status(db: Path) -> str:
    result = run_cli("--db", str(db), "status")
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_a_locked_journal_does_not_kill_the_background_worker(
    tmp_path: Path, sb: Sandbox, caplog: pytest.LogCaptureFixture
) -> None:
    db = tmp_path / "j.db"
    errors: list[Exception] = []
    with connected(db, sb, busy_timeout=0.2, settings=QUICK_RESTART) as ob:
        first = ob.enqueue("inspection-report", INSPECTION, key="before-the-lock")
        with write_lock_held(db):
            ob.start(on_error=errors.append)
            wait_until(lambda: errors, what="the worker to report the locked journal")
            assert isinstance(errors[0], JournalBusy)
            assert isinstance(ob.worker_error, JournalBusy)
            assert ob._thread is not None and ob._thread.is_alive()
        later = ob.enqueue("inspection-report", {**INSPECTION, "site": "S"}, key="after-the-lock")
        wait_until(
            lambda: ob.get(first.id).state is State.DONE and ob.get(later.id).state is State.DONE,
            what="both entries done once the lock is gone",
        )
        wait_until(lambda: "JournalBusy" in _status(db), what="the error in outbox status")
        worker_line = next(line for line in _status(db).splitlines() if line.startswith("worker"))
        assert (
            "running; last error" in worker_line and "is locked by another process" in worker_line
        )
        ob.stop()
        assert "worker" not in _status(db), "a stopped worker clears its status line"
    assert any(
        record.levelno == logging.ERROR and "starts again" in record.getMessage()
        for record in caplog.records
    )


class HealthCheckBug(httpx.BaseTransport):
    """The network is down, then the health check hits a bug in the transport (not an
    ``httpx`` error, so nothing in outbox expects it), then everything works."""

    def __init__(self, inner: httpx.BaseTransport) -> None:
        self.inner = inner
        self.broken = threading.Event()
        self.broken.set()
        self.bugs = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if self.broken.is_set():
            if request.url.path == "/health":
                self.bugs += 1
                raise RuntimeError("a bug in the transport")
            raise httpx.ConnectError("network is unreachable", request=request)
        return self.inner.handle_request(request)


def test_any_exception_escaping_the_engine_is_reported_and_the_worker_carries_on(
    tmp_path: Path, sb: Sandbox
) -> None:
    db = tmp_path / "j.db"
    transport = HealthCheckBug(sb.transport())
    seen: list[Exception] = []

    def fragile_callback(exc: Exception) -> None:
        seen.append(exc)
        raise ValueError("the app's own callback fails too")

    with connected(db, sb, transport=transport, settings=QUICK_RESTART) as ob:
        entries = [ob.enqueue("inspection-report", {**INSPECTION, "n": n}) for n in range(3)]
        ob.start(on_error=fragile_callback)
        wait_until(lambda: len(seen) >= 2, what="two reported errors")
        assert all(isinstance(exc, RuntimeError) for exc in seen)
        assert str(ob.worker_error) == "a bug in the transport"
        transport.broken.clear()
        wait_until(
            lambda: all(ob.get(e.id).state is State.DONE for e in entries),
            what="every entry done after the errors",
        )
        assert ob._thread is not None and ob._thread.is_alive()
        ob.stop()
        assert ob._thread is None


def test_run_in_the_calling_thread_is_supervised_too(tmp_path: Path, sb: Sandbox) -> None:
    db = tmp_path / "j.db"
    transport = HealthCheckBug(sb.transport())
    with connected(db, sb, transport=transport, settings=QUICK_RESTART) as ob:
        entry = ob.enqueue("inspection-report", INSPECTION)

        def heal_then_stop(exc: Exception) -> None:
            transport.broken.clear()

        def stop_when_done(event: Event) -> None:
            if event.to_state is State.DONE:
                ob.stop(timeout=0)

        ob.on_change(stop_when_done)
        ob.run(on_error=heal_then_stop)  # returns once the entry is done
        assert ob.get(entry.id).state is State.DONE
        assert isinstance(ob.worker_error, RuntimeError)


def test_start_without_an_api_key_fails_at_once(tmp_path: Path) -> None:
    with Outbox(tmp_path / "j.db") as ob:
        with pytest.raises(ConfigError, match="no Craftkit API key"):
            ob.start()
        assert ob._thread is None, "no worker was started"
        assert ob.worker_error is None


def test_a_stop_before_run_begins_is_not_lost(tmp_path: Path, sb: Sandbox) -> None:
    """A SIGTERM that reaches ``outbox run`` while it starts up ends it once it begins."""
    with connected(tmp_path / "j.db", sb) as ob:
        ob.stop(timeout=0)
        running = threading.Thread(target=ob.run, daemon=True)
        running.start()
        running.join(30)
        stopped_at_once = not running.is_alive()
        if not stopped_at_once:
            ob.stop(timeout=0)
            running.join(30)
        assert stopped_at_once, "the stop that came first was forgotten"
        # Once that run has ended, the next one works until it is stopped.
        entry = ob.enqueue("inspection-report", INSPECTION)

        def stop_when_done(event: Event) -> None:
            if event.to_state is State.DONE:
                ob.stop(timeout=0)

        ob.on_change(stop_when_done)
        ob.run()
        assert ob.get(entry.id).state is State.DONE


def test_a_stop_before_flush_begins_ends_it_with_the_work_left_for_next_time(
    tmp_path: Path, sb: Sandbox
) -> None:
    """The stop event a flush is given, set before the flush begins its loop (a SIGTERM while
    ``outbox flush`` starts up): the flush submits nothing, leaves nothing leased, keeps the
    event set, and reports the work as remaining (exit code 75)."""
    with connected(tmp_path / "j.db", sb) as ob:
        entry = ob.enqueue("inspection-report", INSPECTION)
        stop = threading.Event()
        stop.set()
        report = ob.flush(timeout=600, stop=stop)
        assert report.exit_code == ExitCode.TRY_LATER, report.problems
        assert not report.timed_out and not report.unexpected
        assert stop.is_set(), "the flush must not clear the stop it was given"
        assert ob.get(entry.id).state is State.PENDING
        assert not ob.journal.lease_owners()
    assert sb.stats()["renders_created"] == 0


def test_a_sigterm_while_the_flush_command_starts_up_is_not_lost(
    tmp_path: Path, sb: Sandbox
) -> None:
    """The SIGTERM arrives the moment ``outbox flush`` calls :meth:`Outbox.flush`: its handler
    is in place, the flush's loop has not begun. The flush ends at once with 75 and submits
    nothing (a forgotten stop would drain the journal and exit 0)."""
    db = tmp_path / "j.db"
    with Outbox(db) as ob:
        entry = ob.enqueue("inspection-report", INSPECTION)
    default_handler = signal.getsignal(signal.SIGTERM)
    sent: list[bool] = []

    def stop_as_flush_is_called(frame: FrameType, event: str, arg: object) -> None:
        if event == "call" and frame.f_code is Outbox.flush.__code__ and not sent:
            # Never to a process without the command's handler: that would end the test run.
            assert signal.getsignal(signal.SIGTERM) is not default_handler
            sent.append(True)
            signal.raise_signal(signal.SIGTERM)

    sys.setprofile(stop_as_flush_is_called)
    try:
        result = run_cli("flush", "--timeout", "600", env=sandbox_env(sb, db))
    finally:
        sys.setprofile(None)
    assert sent, "the command never called Outbox.flush"
    assert result.returncode == ExitCode.TRY_LATER, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    with Outbox(db) as ob:
        assert ob.get(entry.id).state is State.PENDING
        assert not ob.journal.lease_owners()
    assert sb.stats()["renders_created"] == 0


@pytest.mark.e2e
def test_sigterm_to_a_real_flush_at_work_ends_it_with_the_work_left(tmp_path: Path) -> None:
    """The same handler in a real process: a render that takes an hour holds ``outbox flush``
    in its loop until the SIGTERM, which ends it with 75 and nothing leased."""
    db = tmp_path / "j.db"
    with Outbox(db) as ob:
        entry = ob.enqueue("inspection-report", INSPECTION)
    with Sandbox(render_seconds=3600, seed=8) as slow:
        flushing = OutboxProcess("flush", "--timeout", "7200", env=sandbox_env(slow, db))
        wait_until(lambda: slow.stats()["renders_created"] == 1, what="the render to be made")
        assert flushing.stop(signal.SIGTERM) == ExitCode.TRY_LATER, flushing.stderr
    assert not any("Traceback" in line for line in flushing.stderr)
    with Outbox(db) as ob:
        assert ob.get(entry.id).state is State.SUBMITTED  # followed again next time
        assert not ob.journal.lease_owners()
