"""The submit phase against the sandbox over a real socket: exactly once, whatever happens."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from support import (
    FAST,
    INSPECTION,
    FakeClock,
    fill,
    process_env,
    renders_per_entry_ok,
    run_cli,
    run_cli_process,
    sandbox_env,
    simulated,
)

from outbox import Outbox, State
from outbox.sandbox import Sandbox


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.e2e
def test_nothing_listening_exits_75_quickly_and_consumes_nothing(tmp_path: Path) -> None:
    db = tmp_path / "j.db"
    fill(db, 3)
    env = {
        "OUTBOX_DB": str(db),
        "CRAFTKIT_API_KEY": "ck_test_whatever",
        "CRAFTKIT_BASE_URL": f"http://127.0.0.1:{_free_port()}",
    }
    # Offline, flush gives up after its short grace, not at --timeout: were it to wait the
    # ten minutes, the process would be stopped at 60 s (the figure is in bench/offline.py).
    result = run_cli_process("flush", "--timeout", "600", env=env, timeout=60)
    assert result.returncode == 75, result.stderr
    assert "offline" in result.stderr and "connection" in result.stderr.lower()
    with Outbox(db) as ob:
        assert all(e.state is State.PENDING and e.attempts == 0 for e in ob.list())
        assert ob.status()["connectivity"]["online"] is False
    status = run_cli("status", env=env)
    assert "network    offline: cannot reach" in status.stdout


def test_refused_key_exits_77_names_the_variable_and_consumes_nothing(
    tmp_path: Path, sandbox: Sandbox
) -> None:
    db = tmp_path / "j.db"
    fill(db, 5)
    bad_key = "ck_test_wrong_key_123456"
    result = run_cli("flush", env=sandbox_env(sandbox, db, CRAFTKIT_API_KEY=bad_key))
    assert result.returncode == 77, result.stderr
    assert "fix the API key (the CLI reads it from CRAFTKIT_API_KEY); nothing was consumed" in (
        result.stderr
    )
    assert bad_key not in result.stderr + result.stdout
    with Outbox(db) as ob:
        assert all(e.state is State.PENDING and e.attempts == 0 for e in ob.list())
        assert ob.status()["auth"]["ok"] is False
        assert bad_key.encode() not in db.read_bytes()
    status = run_cli("status", env=sandbox_env(sandbox, db))
    assert "api key    refused — fix CRAFTKIT_API_KEY" in status.stdout
    # One refused request paused everything: not one request per entry.
    posts = sandbox.stats()["requests"]["POST /v1/templates/:slug/render"]
    assert sum(posts.values()) <= 4  # at most one per worker already on the wire
    assert sandbox.stats()["renders_created"] == 0


def test_missing_key_is_a_configuration_error(tmp_path: Path) -> None:
    result = run_cli("--db", str(tmp_path / "j.db"), "flush")
    assert result.returncode == 78
    assert "CRAFTKIT_API_KEY" in result.stderr


def test_rejections_keep_code_message_and_field_errors(tmp_path: Path, sandbox: Sandbox) -> None:
    db = tmp_path / "j.db"
    with Outbox(db) as ob:
        unknown = ob.enqueue("no-such-template", {"a": 1}, key="unknown")
        invalid = ob.enqueue("inspection-report", {"site": "North"}, key="invalid")
        draft = ob.enqueue("draft-report", {}, key="draft")
        good = ob.enqueue("inspection-report", INSPECTION, key="good")
    result = run_cli("flush", env=sandbox_env(sandbox, db))
    assert result.returncode == 65, result.stderr
    assert "rejected" in result.stderr and "field inspector: Required" in result.stderr
    with Outbox(db) as ob:
        assert ob.get(good.id).state is State.DONE
        assert (ob.get(unknown.id).state, ob.get(unknown.id).error_code) == (
            State.REJECTED,
            "template_not_found",
        )
        assert ob.get(draft.id).error_code == "no_published_version"
        bad = ob.get(invalid.id)
        assert (bad.state, bad.error_code) == (State.REJECTED, "invalid_input_data")
        assert bad.field_errors == {"inspector": ["Required"]}
    shown = run_cli("show", invalid.id, env=sandbox_env(sandbox, db))
    assert "invalid_input_data" in shown.stdout and "inspector: Required" in shown.stdout


def test_lost_answers_and_500s_after_create_never_render_twice(
    tmp_path: Path, timed: Sandbox, clock: FakeClock
) -> None:
    sandbox = timed
    db = tmp_path / "j.db"
    fill(db, 40)
    sandbox.set_faults(drop_after=0.3, error_500_after=0.2)
    with simulated(db, sandbox, clock) as ob:
        report = ob.flush(timeout=60)
        assert report.exit_code == 0, report.problems
        entries = ob.list()
        assert all(e.state is State.DONE for e in entries)
        assert sum(e.attempts for e in entries) >= 40
        replayed = [
            ev for e in entries for ev in ob.history(e.id) if "replayed" in (ev.detail or "")
        ]
    assert replayed, "some answers were lost, so some submits must have been replays"
    renders_per_entry_ok(sandbox, 40)
    lost = sandbox.stats()["requests"]["POST /v1/templates/:slug/render"]
    assert lost.get("500", 0) > 0


@pytest.mark.e2e
def test_two_flush_processes_on_one_journal_render_each_entry_once(
    tmp_path: Path, sandbox: Sandbox
) -> None:
    db = tmp_path / "j.db"
    fill(db, 200)
    sandbox.set_faults(latency=0.01)
    env = sandbox_env(sandbox, db)
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "outbox", "flush", "--timeout", "120"],
            env=process_env({**env, "PATH": "/usr/bin:/bin"}),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    results = [p.communicate(timeout=180) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], results
    renders_per_entry_ok(sandbox, 200)
    with Outbox(db) as ob:
        assert ob.counts()[State.DONE] == 200


def test_rate_limit_slows_the_dispatcher_down(
    tmp_path: Path, timed: Sandbox, clock: FakeClock
) -> None:
    sandbox = timed  # its rate limit counts requests per second of the fake clock
    db = tmp_path / "j.db"
    fill(db, 60)
    sandbox.set_faults(rate_limit=30)
    with simulated(db, sandbox, clock) as ob:
        report = ob.flush(timeout=120)
        assert report.exit_code == 0, report.problems
    stats = sandbox.stats()
    renders_per_entry_ok(sandbox, 60)
    total = sum(sum(route.values()) for route in stats["requests"].values())
    assert stats["rate_limited"] <= 0.1 * total, stats
    status = run_cli("status", env=sandbox_env(sandbox, db)).stdout
    assert "network    online" in status
    assert "rate limit hit — requests were slowed down: rate limited by Craftkit (429" in status


def test_captive_portal_is_not_success(tmp_path: Path, timed: Sandbox, clock: FakeClock) -> None:
    sandbox = timed
    db = tmp_path / "j.db"
    fill(db, 3)
    sandbox.set_faults(captive_portal=True)
    with simulated(db, sandbox, clock) as ob:
        report = ob.flush(timeout=10)
        assert report.exit_code == 75
        assert report.offline and "captive portal" in report.offline
        assert all(e.state is State.PENDING and e.attempts == 0 for e in ob.list())
    sandbox.set_faults(captive_portal=False)
    with simulated(db, sandbox, clock) as ob:
        assert ob.flush(timeout=30).exit_code == 0
    renders_per_entry_ok(sandbox, 3)


@pytest.mark.e2e
def test_hanging_server_never_holds_flush_beyond_its_timeout(
    tmp_path: Path, sandbox: Sandbox
) -> None:
    db = tmp_path / "j.db"
    fill(db, 2)
    # Requests hang for an hour: a flush that waited for them would be stopped at 60 s.
    sandbox.set_faults(hang=1.0, hang_seconds=3600)
    result = run_cli_process("flush", "--timeout", "3", env=sandbox_env(sandbox, db), timeout=60)
    assert result.returncode == 75, result.stderr
    with Outbox(db) as ob:
        assert all(e.state is State.PENDING for e in ob.list())


def test_coming_back_online_resumes_submission(tmp_path: Path, clock: FakeClock) -> None:
    db = tmp_path / "j.db"
    fill(db, 5)
    with Sandbox(render_seconds=0.1, seed=3, clock=clock) as sb:
        sb.stop()
        with simulated(db, sb, clock) as ob:
            assert ob.flush(timeout=5).exit_code == 75
            assert ob.counts()[State.PENDING] == 5
        sb.start()
        with simulated(db, sb, clock) as ob:
            report = ob.flush(timeout=30)
            assert report.exit_code == 0, report.problems
            assert ob.status()["connectivity"]["online"] is True
        renders_per_entry_ok(sb, 5)


@pytest.mark.parametrize("fault", ["error_503_before", "error_500_before"])
def test_server_errors_before_create_are_retried_with_backoff(
    tmp_path: Path, timed: Sandbox, clock: FakeClock, fault: str
) -> None:
    sandbox = timed
    db = tmp_path / "j.db"
    fill(db, 10)
    sandbox.set_faults(**{fault: 0.5})
    # No quick in-call retries: every 5xx then reaches the journal. With them, a 5xx was
    # recorded only when all three tries of one call failed, which missed in about 1 run in 4.
    with simulated(db, sandbox, clock, settings=replace(FAST, retries=0)) as ob:
        report = ob.flush(timeout=3600)  # fake seconds: an unlucky entry's long backoff is free
        assert report.exit_code == 0, report.problems
        # Trouble was recorded while it lasted, and cleared by the answers that followed.
        trouble = [e for e in ob.list() for ev in ob.history(e.id) if ev.http_status in (500, 503)]
        assert trouble
        assert ob.status()["server"]["ok"] is True
    renders_per_entry_ok(sandbox, 10)
    assert json.dumps(sandbox.stats()["requests"]).count("50") >= 1


def test_server_trouble_is_shown_in_status_and_consumes_attempts_not_entries(
    tmp_path: Path, sandbox: Sandbox
) -> None:
    db = tmp_path / "j.db"
    fill(db, 2)
    sandbox.set_faults(error_503_before=1.0)
    result = run_cli("flush", "--timeout", "1", env=sandbox_env(sandbox, db))
    assert result.returncode == 75, result.stderr
    status = run_cli("status", env=sandbox_env(sandbox, db)).stdout
    assert "server     trouble: Craftkit server error (503 queue_unavailable" in status
    with Outbox(db) as ob:
        entries = ob.list()
        assert all(e.state is State.PENDING and e.attempts >= 1 for e in entries)
        assert all(e.error_code == "queue_unavailable" for e in entries)
    assert sandbox.stats()["renders_created"] == 0
