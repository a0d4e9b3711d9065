"""The reconcile phase and downloads, end to end against the sandbox over a real socket."""

from __future__ import annotations

import hashlib
import io
import json
import os
import signal
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import httpx
import pypdf
import pytest
from freezegun import freeze_time
from support import (
    INSPECTION,
    FakeClock,
    connected,
    fill,
    process_env,
    renders_per_entry_ok,
    run_cli,
    run_cli_process,
    sandbox_env,
    simulated,
    wait_until,
)

from outbox import EntryNotFound, Outbox, Schedule, Settings, State
from outbox.engine import Engine
from outbox.sandbox import Sandbox


def _assert_verified_pdf(path: str, size: int | None, sha256: str | None) -> None:
    data = Path(path).read_bytes()
    assert len(data) == size
    assert hashlib.sha256(data).hexdigest() == sha256
    reader = pypdf.PdfReader(io.BytesIO(data), strict=True)
    assert len(reader.pages) >= 1


def test_full_lifecycle_lands_verified_pdfs(tmp_path: Path, sandbox: Sandbox) -> None:
    db = tmp_path / "j.db"
    with Outbox(db) as ob:
        entry = ob.enqueue(
            "inspection-report", INSPECTION, key="inspection-42", filename="north-42.pdf"
        )
        other = ob.enqueue(
            "invoice",
            {
                "customer": {"name": "Bo"},
                "amount": 12.5,
                "items": [{"description": "x", "qty": 1, "price": 2}],
            },
        )
    with connected(db, sandbox) as ob:
        progress: list[dict[State, int]] = []
        report = ob.flush(timeout=30, progress=progress.append)
        assert report.exit_code == 0 and report.drained, report.problems
        assert progress and set(progress[0]) == set(State)
        assert sum(progress[0].values()) == 2
        learned = ob.status()["render_seconds"]  # saved by the flush, for the next process
        assert len(learned) == 2 and all(0 < s < 5 for s in learned)
        done = ob.get(entry.id)
        assert done.state is State.DONE and done.remote_status == "succeeded"
        assert done.pdf_path == str(tmp_path / "renders" / "north-42.pdf")
        _assert_verified_pdf(done.pdf_path, done.pdf_bytes, done.pdf_sha256)
        assert Path(ob.get(other.id).pdf_path or "").name == f"{other.id}.pdf"
        path = [(e.from_state, e.to_state) for e in ob.history(entry.id)]
        assert path[0] == (None, State.PENDING)
        assert path[1] == (State.PENDING, State.SUBMITTED)
        assert path[-2:] == [(State.SUBMITTED, State.DOWNLOADING), (State.DOWNLOADING, State.DONE)]
    assert not list((tmp_path / "renders").glob(".outbox-*"))
    renders_per_entry_ok(sandbox, 2)


@pytest.mark.e2e
def test_killed_while_polling_the_restart_continues_without_resubmitting(tmp_path: Path) -> None:
    db = tmp_path / "j.db"
    fill(db, 20)
    with Sandbox(render_seconds=2.5, seed=5) as sb:
        env = process_env(sandbox_env(sb, db))
        proc = subprocess.Popen(
            [sys.executable, "-m", "outbox", "flush", "--timeout", "60"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        with Outbox(db) as watcher:
            wait_until(lambda: watcher.counts()[State.SUBMITTED] == 20)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        with Outbox(db) as ob:
            assert ob.counts()[State.SUBMITTED] == 20  # mid-polling: nothing finished yet
        result = run_cli_process("flush", "--timeout", "60", env=sandbox_env(sb, db))
        assert result.returncode == 0, result.stderr
        renders_per_entry_ok(sb, 20)
        posts = sb.stats()["requests"]["POST /v1/templates/:slug/render"]
        assert posts == {"202": 20}, "the restart must not submit anything again"
        with Outbox(db) as ob:
            for entry in ob.list():
                assert entry.state is State.DONE
                _assert_verified_pdf(entry.pdf_path or "", entry.pdf_bytes, entry.pdf_sha256)


def test_no_public_bucket_uses_the_private_stream(tmp_path: Path) -> None:
    db = tmp_path / "j.db"
    fill(db, 3)
    with Sandbox(render_seconds=0.1, public_bucket=False) as sb, connected(db, sb) as ob:
        assert ob.flush(timeout=30).exit_code == 0
        for entry in ob.list():
            _assert_verified_pdf(entry.pdf_path or "", entry.pdf_bytes, entry.pdf_sha256)
        requests = sb.stats()["requests"]
        assert requests["GET /v1/embed/renders/:id/download"].get("200") == 3
        assert not any("public" in route for route in requests)


def test_truncated_downloads_are_retried_and_never_kept(tmp_path: Path, clock: FakeClock) -> None:
    db = tmp_path / "j.db"
    fill(db, 20)
    with (
        Sandbox(render_seconds=0.1, seed=9, pdf_size=200_000, clock=clock) as sb,
        simulated(db, sb, clock) as ob,
    ):
        sb.set_faults(truncate_downloads=0.3)
        report = ob.flush(timeout=60)
        assert report.exit_code == 0, report.problems
        assert sb.stats()["faults_injected"].get("truncate_downloads", 0) > 0
        for entry in ob.list():
            assert entry.state is State.DONE
            _assert_verified_pdf(entry.pdf_path or "", entry.pdf_bytes, entry.pdf_sha256)
            assert (entry.pdf_bytes or 0) >= 200_000
        renders_per_entry_ok(sb, 20)
    leftovers = [p.name for p in (tmp_path / "renders").iterdir()]
    assert sorted(leftovers) == sorted(f"{e.id}.pdf" for e in Outbox(db).list())


def test_failed_render_then_retry_uses_a_new_key_and_keeps_the_lineage(
    tmp_path: Path, sandbox: Sandbox
) -> None:
    db = tmp_path / "j.db"
    with Outbox(db) as ob:
        entry = ob.enqueue("always-fails", {}, key="handover-7")
    env = sandbox_env(sandbox, db)
    first = run_cli("flush", env=env)
    assert first.returncode == 65
    assert "Fieldwork Sans" in first.stderr
    with Outbox(db) as ob:
        failed = ob.get(entry.id)
        assert failed.state is State.FAILED and "Fieldwork Sans" in (failed.error or "")
        first_render = failed.render_id
    retried = run_cli("retry", entry.id, env=env)
    assert retried.returncode == 0 and "handover-7~2" in retried.stdout
    second = run_cli("flush", env=env)
    assert second.returncode == 65
    with Outbox(db) as ob:
        again = ob.get(entry.id)
        assert again.key == "handover-7~2" and again.render_id != first_render
    shown = run_cli("show", entry.id, env=env).stdout
    assert first_render and first_render in shown
    assert again.render_id and again.render_id in shown
    assert "handover-7~2" in shown and "new key" in shown
    assert sandbox.stats()["renders_per_key"] == {"handover-7": 1, "handover-7~2": 1}


def test_rejected_entry_retries_with_the_same_key(tmp_path: Path, sandbox: Sandbox) -> None:
    db = tmp_path / "j.db"
    with connected(db, sandbox) as ob:
        entry = ob.enqueue("inspection-report", {"site": "x"}, key="fix-me")
        assert ob.flush(timeout=10).exit_code == 65
        assert ob.retry(entry.id).key == "fix-me"
        assert ob.get(entry.id).state is State.PENDING


def test_a_render_the_api_does_not_know_is_kept_and_explained(
    tmp_path: Path, clock: FakeClock
) -> None:
    db = tmp_path / "j.db"
    fill(db, 2)
    with Sandbox(render_seconds=1.5, clock=clock) as sb:
        with simulated(db, sb, clock) as ob:
            assert ob.flush(timeout=0.5).exit_code == 75
            assert ob.counts()[State.SUBMITTED] == 2
        wrong = Outbox(
            db,
            api_key=sb.other_project_key,
            base_url=sb.base_url,
            settings=Settings(schedule=Schedule(offline_grace=0.5)),
            clock=clock,
        )
        with wrong:
            report = wrong.flush(timeout=3)
            assert report.exit_code == 75
            for entry in wrong.list():
                assert entry.state is State.SUBMITTED
                assert entry.error and "does not know render" in entry.error
                assert "API key" in entry.error
            assert any("does not know render" in line for line in report.problems)
            for entry in wrong.list():  # time passes: the next poll, backed off, is due
                wrong.journal.reschedule(entry.id, State.SUBMITTED, due_at=0)
        with simulated(db, sb, clock) as ob:
            assert ob.flush(timeout=30).exit_code == 0
            assert all(e.state is State.DONE and e.error is None for e in ob.list())


@pytest.mark.e2e
def test_run_stops_cleanly_on_sigterm_and_the_next_run_finishes(tmp_path: Path) -> None:
    db = tmp_path / "j.db"
    fill(db, 15)
    with Sandbox(render_seconds=3.0, seed=2) as sb:
        env = process_env(sandbox_env(sb, db))
        proc = subprocess.Popen(
            [sys.executable, "-m", "outbox", "run"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        with Outbox(db) as watcher:
            wait_until(lambda: watcher.counts()[State.SUBMITTED] >= 10)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
        assert proc.returncode == 0, err
        assert "stopped" in err
        with Outbox(db) as ob:
            assert ob.journal.lease_owners() == []
            assert ob.counts()[State.DONE] < 15
        proc = subprocess.Popen(
            [sys.executable, "-m", "outbox", "run"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        try:
            with Outbox(db) as watcher:
                wait_until(lambda: watcher.counts()[State.DONE] == 15, timeout=60)
        finally:
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=20)
        assert proc.returncode == 0
        renders_per_entry_ok(sb, 15)


def test_background_worker_and_change_callbacks(tmp_path: Path, sandbox: Sandbox) -> None:
    db = tmp_path / "j.db"
    with connected(db, sandbox) as ob:
        seen: list[State] = []
        ob.on_change(lambda event: seen.append(event.to_state))
        ob.start()
        entry = ob.enqueue("inspection-report", INSPECTION)
        feed = ob.changes(since=0, timeout=20)
        for event in feed:
            if event.entry_id == entry.id and event.to_state is State.DONE:
                break
        ob.stop()
        assert ob.get(entry.id).state is State.DONE
        assert seen[0] is State.PENDING and seen[-1] is State.DONE
        assert State.DOWNLOADING in seen
        # A stopped outbox can still flush: stop() ended the worker, not the outbox.
        later = ob.enqueue("inspection-report", {**INSPECTION, "site": "later"})
        assert ob.flush(timeout=20).exit_code == 0
        assert ob.get(later.id).state is State.DONE


def test_unknown_status_is_not_terminal_and_cancelled_is(tmp_path: Path) -> None:
    """A client unit test with a stand-in transport: Craftkit answers statuses we do not know."""
    statuses = iter(["queued", "paused-for-maintenance", "paused-for-maintenance", "cancelled"])

    def handler(request: httpx.Request) -> httpx.Response:
        render = {
            "id": "r-1",
            "pollUrl": "x",
            "downloadUrl": None,
            "errorMessage": None,
            "createdAt": "2026-06-05T10:00:00.000Z",
        }
        if request.method == "POST":
            return httpx.Response(202, json={**render, "status": "queued"})
        return httpx.Response(200, json={**render, "status": next(statuses)})

    db = tmp_path / "j.db"
    with Outbox(db, clock=FakeClock()) as ob:  # polls are backed off in fake time
        entry = ob.enqueue("inspection-report", INSPECTION)
        engine = Engine(
            ob.journal,
            api_key="k",
            base_url="http://craftkit.test",
            downloads=tmp_path,
            settings=Settings(),
            clock=ob.clock,
            transport=httpx.MockTransport(handler),
        )
        try:
            report = engine.flush(timeout=20)
        finally:
            engine.close()
        final = ob.get(entry.id)
        assert final.state is State.FAILED and final.error_code == "render_cancelled"
        details = [e.detail or "" for e in ob.history(entry.id)]
        assert any("paused-for-maintenance" in d for d in details)
        assert report.exit_code == 65


def test_purge_deletes_only_old_finished_entries(tmp_path: Path, sandbox: Sandbox) -> None:
    db = tmp_path / "j.db"
    with connected(db, sandbox) as ob:
        done = ob.enqueue("inspection-report", INSPECTION)
        ob.flush(timeout=30)
        waiting = ob.enqueue("inspection-report", {**INSPECTION, "site": "later"})
        cancelled = ob.enqueue("invoice", {})
        ob.cancel(cancelled.id)
        assert ob.purge(3600) == 0
        with freeze_time(timedelta(days=2)):  # two days later
            assert ob.purge(timedelta(days=1)) == 2
            assert [e.id for e in ob.list()] == [waiting.id]
            with pytest.raises(EntryNotFound):
                ob.history(done.id)
        assert Path(tmp_path / "renders" / f"{done.id}.pdf").exists(), "PDFs are never deleted"
    result = run_cli("purge", "--older-than", "30x", env={"OUTBOX_DB": str(db)})
    assert result.returncode == 65 and "not an age" in result.stderr
    result = run_cli("purge", "--older-than", "30d", env={"OUTBOX_DB": str(db)})
    assert result.returncode == 0 and "purged 0" in result.stdout
    with freeze_time(timedelta(days=31)):
        result = run_cli("purge", "--older-than", "30d", env={"OUTBOX_DB": str(db)})
    assert result.returncode == 0 and "purged 0" in result.stdout  # pending is never purged
    with Outbox(db) as ob:
        ob.cancel(waiting.id)
    result = run_cli("purge", "--older-than", "1h", env={"OUTBOX_DB": str(db)})
    assert result.returncode == 0 and "purged 0" in result.stdout
    with freeze_time(timedelta(hours=2)):
        result = run_cli("purge", "--older-than", "1h", env={"OUTBOX_DB": str(db)})
    assert result.returncode == 0 and "purged 1" in result.stdout


@pytest.mark.e2e
def test_run_with_a_drop_folder_takes_a_file_all_the_way_to_a_result(
    tmp_path: Path, sandbox: Sandbox
) -> None:
    db, drop = tmp_path / "j.db", tmp_path / "drop"
    drop.mkdir()
    env = process_env(sandbox_env(sandbox, db))
    proc = subprocess.Popen(
        [sys.executable, "-m", "outbox", "run", "--watch", str(drop)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        job = drop / "north-42.json.tmp"
        job.write_text(
            '{"template": "inspection-report", "filename": "north-42.pdf",'
            ' "data": {"inspector": "Ada", "site": "North"}}'
        )
        job.rename(drop / "north-42.json")
        result = drop / "results" / "north-42.result.json"
        wait_until(result.exists, timeout=60)
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "accepted north-42.json" in err and out == ""
    answer = json.loads(result.read_text())
    assert answer["state"] == "done" and answer["pdf_path"].endswith("north-42.pdf")
    _assert_verified_pdf(answer["pdf_path"], answer["pdf_bytes"], answer["pdf_sha256"])
    assert (drop / "accepted" / "north-42.json").exists()
    renders_per_entry_ok(sandbox, 1)
