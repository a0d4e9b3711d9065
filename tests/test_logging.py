"""What outbox logs: one line per outcome from the journal's change events, through
``logging`` under ``outbox.*``; the library prints nothing; the CLI's text and JSON log."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import textwrap
from pathlib import Path

import httpx
import pytest
from support import (
    API_KEY_IN_TESTS,
    INSPECTION,
    FakeClock,
    run_cli,
    sandbox_env,
    simulated,
    wait_until,
)

from outbox import Outbox, State
from outbox.logs import ActivityLog
from outbox.sandbox import Sandbox

QUIET_LIBRARY = textwrap.dedent(
    """
    import sys
    from outbox import Outbox, Schedule, Settings
    from outbox.sandbox import Sandbox

    settings = Settings(connect_timeout=1.0, schedule=Schedule(offline_grace=0.3))
    with Sandbox(render_seconds=0.05) as sb:
        with Outbox(sys.argv[1], api_key=sb.api_key, base_url=sb.base_url,
                    settings=settings) as ob:
            ob.enqueue("inspection-report", {"inspector": "Ada", "site": "N"}, key="a")
            ob.enqueue("always-fails", {}, key="b")
            ob.enqueue("no-such-template", {}, key="c")
            sb.stop()
            offline = ob.flush(timeout=2)
            sb.start()
            online = ob.flush(timeout=30)
            print(offline.offline is not None, online.exit_code)
    """
)


def test_the_library_prints_nothing_to_the_host_apps_stderr(tmp_path: Path) -> None:
    """Offline, back online, done, failed, rejected: an app without a logging set-up of its
    own sees none of it (Python would print warnings to stderr without the NullHandler)."""
    result = subprocess.run(
        [sys.executable, "-c", QUIET_LIBRARY, str(tmp_path / "j.db")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["True", "65"]
    assert result.stderr == ""


def test_outcome_lines_come_from_the_journals_change_events(
    tmp_path: Path, timed: Sandbox, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="outbox")
    with simulated(tmp_path / "j.db", timed, clock) as ob:
        good = ob.enqueue("inspection-report", INSPECTION, key="good")
        failing = ob.enqueue("always-fails", {}, key="failing")
        refused = ob.enqueue("inspection-report", {"site": "North"}, key="refused")
        ob.flush(timeout=600)
        done = ob.get(good.id)
    lines = {r.getMessage().split()[1]: r for r in caplog.records if r.name == "outbox.activity"}
    assert set(lines) == {good.id, failing.id, refused.id}
    assert lines[good.id].getMessage().split() == [
        "done",
        good.id,
        "inspection-report",
        str(done.pdf_path),
        str(done.pdf_bytes),
        "bytes",
    ]
    assert lines[good.id].levelno == logging.INFO
    rejected = lines[refused.id]
    assert rejected.levelno == logging.WARNING
    assert rejected.getMessage().startswith(f"rejected  {refused.id}  inspection-report  ")
    assert "invalid_input_data: " in rejected.getMessage()
    assert rejected.getMessage().endswith("; inspector: Required")
    assert rejected.__dict__["outbox"]["field_errors"] == {"inspector": ["Required"]}
    assert lines[failing.id].getMessage().startswith(f"failed    {failing.id}  always-fails  ")
    assert "render_failed: " in lines[failing.id].getMessage()


def test_a_persons_change_and_a_background_worker_are_logged_alike(
    tmp_path: Path, sb: Sandbox, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="outbox.activity")
    with Outbox(tmp_path / "j.db", api_key=sb.api_key, base_url=sb.base_url) as ob:
        entry = ob.enqueue("inspection-report", INSPECTION, key="k")
        ob.cancel(entry.id)
        worked = ob.enqueue("inspection-report", INSPECTION, key="k2")
        ob.start()
        try:
            wait_until(lambda: ob.get(worked.id).state is State.DONE, what="the render")
        finally:
            ob.stop()
    messages = [r.getMessage() for r in caplog.records if r.name == "outbox.activity"]
    assert f"cancelled {entry.id}  inspection-report" in messages
    assert any(m.startswith(f"done      {worked.id}  ") for m in messages)
    assert any(m.startswith(f"{entry.id}  inspection-report  new -> pending") for m in messages)


def test_the_outcome_log_reads_nothing_while_nobody_listens(tmp_path: Path) -> None:
    """Below the level in force the listener returns before reading the entry, so enqueue
    costs no extra read; a purged entry's late event is skipped, not an error."""
    with Outbox(tmp_path / "j.db") as ob:
        entry = ob.enqueue("inspection-report", INSPECTION, key="k")
        event = ob.history(entry.id)[0]
        reads: list[str] = []
        journal = ob.journal
        original = journal.get

        def counting(entry_id: str) -> object:
            reads.append(entry_id)
            return original(entry_id)

        journal.get = counting  # type: ignore[method-assign,assignment]
        logging.getLogger("outbox.activity").setLevel(logging.WARNING)
        try:
            ActivityLog(journal)(event)
        finally:
            logging.getLogger("outbox.activity").setLevel(logging.NOTSET)
        assert reads == []


def test_cli_verbosity_decisions_and_http(tmp_path: Path, sb: Sandbox) -> None:
    db = tmp_path / "j.db"
    with Outbox(db) as ob:
        entry = ob.enqueue("inspection-report", INSPECTION, key="k1")
    env = sandbox_env(sb, db)
    plain = run_cli("flush", env=env)
    assert plain.returncode == 0, plain.stderr
    done = [line for line in plain.stderr.splitlines() if line.startswith("done ")]
    assert len(done) == 1 and entry.id in done[0]
    assert "claimed" not in plain.stderr and "-> POST" not in plain.stderr

    with Outbox(db) as ob:
        second = ob.enqueue("inspection-report", {**INSPECTION, "site": "S"}, key="k2")
    decisions = run_cli("flush", "-v", env=env)
    assert f"claimed 1 pending entry: {second.id}" in decisions.stderr
    assert f"{second.id}  inspection-report  pending -> submitted" in decisions.stderr
    assert "-> POST" not in decisions.stderr

    with Outbox(db) as ob:
        third = ob.enqueue("inspection-report", {**INSPECTION, "site": "T"}, key="k3")
    http = run_cli("-vv", "flush", env=env)
    assert "-> POST /v1/templates/inspection-report/render" in http.stderr
    assert "<- 202 POST /v1/templates/inspection-report/render" in http.stderr
    assert f"done      {third.id}" in http.stderr
    for output in (plain, decisions, http):
        assert sb.api_key not in output.stderr + output.stdout
        assert API_KEY_IN_TESTS not in output.stderr
    # A public download URL is shown by host only: its path may be its secret.
    with Outbox(db) as ob:
        public = ob.get(third.id).download_url
    assert public and public.startswith("http")
    assert public not in http.stderr and httpx.URL(public).path not in http.stderr
    assert f"-> GET {httpx.URL(public).scheme}://{httpx.URL(public).host}/…" in http.stderr


def test_cli_json_log_lines_for_collectors(tmp_path: Path, sb: Sandbox) -> None:
    db = tmp_path / "j.db"
    with Outbox(db) as ob:
        good = ob.enqueue("inspection-report", INSPECTION, key="good")
        refused = ob.enqueue("inspection-report", {"site": "N"}, key="refused")
    result = run_cli("flush", "--log-format", "json", env=sandbox_env(sb, db))
    assert result.returncode == 65, result.stderr
    records = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    by_event = {r["event"]: r for r in records if r.get("logger") == "outbox.activity"}
    assert set(by_event) == {"done", "rejected"}
    assert by_event["done"]["entry_id"] == good.id and by_event["done"]["pdf_bytes"] > 0
    assert by_event["done"]["level"] == "info" and by_event["done"]["time"].endswith("Z")
    assert by_event["rejected"]["entry_id"] == refused.id
    assert by_event["rejected"]["error_code"] == "invalid_input_data"
    assert by_event["rejected"]["field_errors"] == {"inspector": ["Required"]}
    # The problem lines that follow the log are the person's to-do list, not log records.
    problems = [line for line in result.stderr.splitlines() if not line.startswith("{")]
    assert problems[0].startswith(f"rejected {refused.id} (inspection-report, key refused)")


def test_quiet_flush_prints_only_what_a_person_must_act_on(tmp_path: Path, sb: Sandbox) -> None:
    db = tmp_path / "j.db"
    with Outbox(db) as ob:
        ob.enqueue("inspection-report", INSPECTION, key="good")
    result = run_cli("flush", "--quiet", env=sandbox_env(sb, db))
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
    with Outbox(db) as ob:
        refused = ob.enqueue("inspection-report", {"site": "N"}, key="refused")
    result = run_cli("flush", "-q", env=sandbox_env(sb, db))
    assert result.returncode == 65 and result.stdout == ""
    with Outbox(db) as ob:
        error = ob.get(refused.id).error
    assert result.stderr.splitlines() == [
        f"rejected {refused.id} (inspection-report, key refused): {error}",
        "  field inspector: Required",
    ]
