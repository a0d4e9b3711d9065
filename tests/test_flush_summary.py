"""``flush`` reports this run: what it submitted, finished and wrote, what still waits (when it
is next due, and why), and as problems only what a person must act on."""

from __future__ import annotations

import json
from pathlib import Path

from support import INSPECTION, FakeClock, fill, run_cli, sandbox_env, simulated

from outbox import Outbox, State
from outbox.cli_output import flush_summary, when
from outbox.sandbox import Sandbox


def test_a_run_that_drains_lists_its_counts_and_the_pdfs_it_wrote(
    tmp_path: Path, sb: Sandbox
) -> None:
    db = tmp_path / "j.db"
    with Outbox(db) as ob:
        earlier = ob.enqueue("inspection-report", INSPECTION, key="earlier")
    assert run_cli("flush", "--quiet", env=sandbox_env(sb, db)).returncode == 0
    fill(db, 2)
    result = run_cli("flush", env=sandbox_env(sb, db))
    assert result.returncode == 0, result.stderr
    with Outbox(db) as ob:
        paths = sorted(str(e.pdf_path) for e in ob.list(state=State.DONE) if e.id != earlier.id)
    lines = result.stdout.splitlines()
    assert lines[0] == "this run  submitted 2, done 2, failed 0, rejected 0"  # not the journal's 3
    assert sorted(line.removeprefix("written   ") for line in lines[1:3]) == paths
    assert lines[3:] == [
        "journal   pending 0  submitted 0  downloading 0  done 3  failed 0  rejected 0  cancelled 0"
    ]
    assert result.stderr.count("\ndone ") + result.stderr.startswith("done ") == 2
    as_json = json.loads(run_cli("flush", "--json", env=sandbox_env(sb, db)).stdout)
    assert as_json["this_run"] == {"submitted": 0, "done": 0, "failed": 0, "rejected": 0}
    assert as_json["written"] == [] and as_json["waiting"] == []


def test_entries_waiting_for_a_retry_say_when_and_why_not_timed_out(
    tmp_path: Path, timed: Sandbox, clock: FakeClock
) -> None:
    fill(tmp_path / "j.db", 2)
    timed.set_faults(error_503_before=1.0)
    with simulated(tmp_path / "j.db", timed, clock) as ob:
        report = ob.flush(timeout=30)
        now = clock.now()
    assert report.exit_code == 75 and not report.timed_out
    (waiting,) = report.waiting
    assert (waiting.state, waiting.count) == (State.PENDING, 2)
    assert waiting.next_due is not None and now < waiting.next_due <= now + 300
    assert waiting.reason is not None and "503 queue_unavailable" in waiting.reason
    assert report.problems == [] and report.notes == []
    summary = flush_summary(report, now=now)
    line = f"waiting   2 pending: next {when(waiting.next_due, now)} ({waiting.entry_id})"
    assert f"{line} — {waiting.reason}" in summary
    assert not any("timed out" in line for line in summary)


def test_cli_flush_with_every_entry_waiting_for_a_retry(tmp_path: Path, sb: Sandbox) -> None:
    db = tmp_path / "j.db"
    fill(db, 1)
    sb.set_faults(error_503_before=1.0)
    result = run_cli("flush", "--timeout", "1", env=sandbox_env(sb, db))
    assert result.returncode == 75, result.stderr
    waiting = [line for line in result.stdout.splitlines() if line.startswith("waiting ")]
    assert len(waiting) == 1 and waiting[0].startswith("waiting   1 pending: next at ")
    assert "503 queue_unavailable" in waiting[0]
    assert "timed out" not in result.stdout + result.stderr
    assert not any(
        line.startswith(("rejected", "failed", "stuck")) for line in result.stderr.splitlines()
    )


def test_a_rate_limit_is_a_note_not_a_problem(
    tmp_path: Path, timed: Sandbox, clock: FakeClock
) -> None:
    fill(tmp_path / "j.db", 8)
    timed.set_faults(rate_limit=2)
    with simulated(tmp_path / "j.db", timed, clock) as ob:
        report = ob.flush(timeout=3600)
    assert report.exit_code == 0 and report.rate_limited > 0
    assert report.problems == []
    assert report.notes == [
        f"rate limited {report.rate_limited} time(s) by Craftkit; requests were slowed down"
    ]


def test_offline_is_why_the_work_waits_not_a_problem(tmp_path: Path) -> None:
    db = tmp_path / "j.db"
    fill(db, 1)
    with Sandbox() as sb:
        env = sandbox_env(sb, db)
    result = run_cli("flush", "--timeout", "5", env=env)  # the sandbox is gone
    assert result.returncode == 75
    (waiting,) = [line for line in result.stdout.splitlines() if line.startswith("waiting ")]
    assert waiting.startswith("waiting   1 pending: next now (")
    assert " — offline: cannot reach " in waiting
    assert result.stderr.startswith("offline: cannot reach ")  # the transition, logged
    problems = [line for line in result.stderr.splitlines() if not line.startswith("offline: ")]
    assert problems == []
    # A hook's quiet flush says nothing at all: being offline needs nobody.
    quiet = run_cli("flush", "--timeout", "5", "--quiet", env=env)
    assert (quiet.returncode, quiet.stdout, quiet.stderr) == (75, "", "")
