"""The drop folder across real processes: the CLI, SIGKILL at the worst moment, two watchers."""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from support import OutboxProcess, process_env, wait_until
from test_watcher import JOB, drop, finish, listing, result

from outbox import Outbox, State

pytestmark = pytest.mark.e2e


def start_watcher(db: Path, folder: Path) -> OutboxProcess:
    """``outbox -v watch FOLDER`` in a real process, ready once it says it is watching."""
    return OutboxProcess("--db", str(db), "-v", "watch", str(folder), ready_text="watching ")


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    path = tmp_path / "drop"
    path.mkdir()
    return path


def _jobs_left(folder: Path) -> list[str]:
    return [name for name in listing(folder) if name.endswith(".json")]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_watch_command_prints_each_file_and_stops_cleanly(
    db_path: Path, folder: Path, signum: int
) -> None:
    drop(folder, "present-at-start.json", JOB)
    watcher = start_watcher(db_path, folder)
    wait_until(lambda: any("present-at-start.json" in line for line in watcher.stderr))
    drop(folder, "later.json", {**JOB, "key": "later-1"})
    drop(folder, "list.json", [JOB])

    def files_told() -> list[str]:
        return [line for line in watcher.stderr if line.startswith(("accepted ", "rejected "))]

    wait_until(lambda: len(files_told()) == 3, what="three lines")
    assert watcher.stop(signum) == 0, watcher.stderr
    accepted = [line for line in files_told() if line.startswith("accepted ")]
    assert len(accepted) == 2 and any("later.json -> entry " in line for line in accepted)
    assert any(
        line.startswith("rejected list.json: the file must hold a JSON object")
        for line in files_told()
    )
    assert watcher.stdout == []  # the log is on stderr, one line per file
    assert not any("Traceback" in line for line in watcher.stderr)
    with Outbox(db_path) as ob:
        assert sorted(e.key for e in ob.list())[-1] == "later-1" and len(ob.list()) == 2


HOLD_AFTER_ENQUEUE = textwrap.dedent(
    """
    import sys, time
    from outbox import Outbox
    from outbox.watcher import DropFolder

    def hold(entries):
        print("enqueued", len(entries), flush=True)
        time.sleep(3600)  # the files are not moved yet: the test kills us here

    with Outbox(sys.argv[1]) as ob:
        DropFolder(ob, sys.argv[2], after_enqueue=hold).scan()
    """
)


def test_sigkill_between_enqueue_and_move_then_restart_makes_no_second_entry(
    db_path: Path, folder: Path
) -> None:
    names = [f"job-{i:02d}.json" for i in range(60)]
    for i, name in enumerate(names):
        job = {**JOB, "data": {"n": i}}
        drop(folder, name, {**job, "key": f"key-{i}"} if i % 2 else job)
    Outbox(db_path).close()
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD_AFTER_ENQUEUE, str(db_path), str(folder)],
        stdout=subprocess.PIPE,
        text=True,
        env=process_env(),
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "enqueued 60"
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=30)  # reaps it and closes the pipe
    with Outbox(db_path) as ob:
        assert len(ob.list()) == 60  # committed...
    assert _jobs_left(folder) == names  # ...but not one file moved
    watcher = start_watcher(db_path, folder)
    wait_until(lambda: not _jobs_left(folder), what="the files to be moved")
    assert watcher.stop() == 0, watcher.stderr
    with Outbox(db_path) as ob:
        entries = ob.list()
        assert len(entries) == 60
        assert sorted(e.data["n"] for e in entries) == list(range(60))
        assert all(len(ob.history(e.id)) == 1 for e in entries)
    assert listing(folder / "accepted") == names


def test_sigkills_right_after_commits_never_lose_or_double_a_job(
    db_path: Path, folder: Path, tmp_path: Path
) -> None:
    """Kill the real command the moment entries are committed and files not yet all moved.

    No test hook: the test watches the journal and the folder from outside and sends SIGKILL
    as soon as it sees that window open (sometimes a few milliseconds later, mid-move).
    """
    staging = tmp_path / "staging"
    staging.mkdir()
    names = [f"job-{i:04d}.json" for i in range(1500)]
    for i, name in enumerate(names):
        job = {**JOB, "data": {"n": i}}
        (staging / name).write_text(json.dumps({**job, "key": f"key-{i}"} if i % 3 else job))
    Outbox(db_path).close()
    reader = sqlite3.connect(db_path)
    accepted = folder / "accepted"
    rng = random.Random(1234)
    windows_hit = 0
    for round_ in range(5):
        for name in names[round_ * 300 : (round_ + 1) * 300]:
            os.rename(staging / name, folder / name)
        before = reader.execute("SELECT count(*) FROM entries").fetchone()[0]
        watcher = start_watcher(db_path, folder)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            committed = reader.execute("SELECT count(*) FROM entries").fetchone()[0]
            if committed > before:
                if len(listing(accepted)) < committed:
                    time.sleep(rng.choice([0, 0, 0.002, 0.005]))
                    windows_hit += 1
                break  # in the window, or it closed between the two looks
        watcher.kill()
    reader.close()
    assert windows_hit >= 1, "no kill landed between a commit and the moves"
    watcher = start_watcher(db_path, folder)
    wait_until(lambda: not _jobs_left(folder), timeout=120, what="every file to be moved")
    assert watcher.stop() == 0, watcher.stderr
    with Outbox(db_path) as ob:
        entries = ob.list()
        assert sorted(e.data["n"] for e in entries) == list(range(1500))
        assert all(len(ob.history(e.id)) == 1 for e in entries)
        assert ob.journal.integrity_check() == "ok"
    assert listing(accepted) == names


def test_two_watchers_on_one_folder_make_each_entry_once(db_path: Path, folder: Path) -> None:
    Outbox(db_path).close()
    watchers = [start_watcher(db_path, folder), start_watcher(db_path, folder)]
    names = [f"job-{i:04d}.json" for i in range(1000)]
    for i, name in enumerate(names):
        drop(folder, name, {**JOB, "data": {"n": i}})
    wait_until(lambda: not _jobs_left(folder), timeout=120, what="every file to be moved")
    for watcher in watchers:
        assert watcher.stop() == 0, watcher.stderr
        assert not any("Traceback" in line or "WARNING" in line for line in watcher.stderr)
    with Outbox(db_path) as ob:
        entries = ob.list()
        assert sorted(e.data["n"] for e in entries) == list(range(1000))
        assert all(len(ob.history(e.id)) == 1 for e in entries)
    assert listing(folder / "accepted") == names


def test_results_appear_when_another_process_finishes_the_entries(
    db_path: Path, folder: Path
) -> None:
    watcher = start_watcher(db_path, folder)
    outcomes = (State.DONE, State.FAILED, State.REJECTED)
    for state in outcomes:
        drop(folder, f"{state.value}.json", {**JOB, "key": f"job-{state.value}"})
    wait_until(lambda: listing(folder / "accepted") == sorted(f"{s}.json" for s in outcomes))
    # This test process is not the watcher: it plays the dispatcher and replay loop.
    with Outbox(db_path) as ob:
        for entry in ob.list():
            finish(ob, entry.id, State(entry.key.removeprefix("job-")))
    wait_until(
        lambda: all(result(folder, s.value) for s in outcomes), what="the three result files"
    )
    assert watcher.stop() == 0, watcher.stderr
    for state in outcomes:
        assert (result(folder, state.value) or {})["state"] == state.value
    assert sorted(line for line in watcher.stderr if line.startswith("result ")) == [
        "result done.json: done",
        "result failed.json: failed",
        "result rejected.json: rejected",
    ]
