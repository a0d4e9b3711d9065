"""The operator's commands: ``path``, ``events``, ``doctor``, ``purge --dry-run`` (and the
drop folder's results that purge waits for), and what ``status`` says about workers and facts."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from datetime import timedelta
from pathlib import Path

import pytest
from freezegun import freeze_time
from support import (
    INSPECTION,
    FakeClock,
    connected,
    fill,
    process_env,
    run_cli,
    sandbox_env,
    simulated,
    wait_until,
)

from outbox import DropFolder, NoPdf, Outbox, PdfNotReady, Schedule, Settings, State
from outbox.sandbox import Sandbox

# -- path ------------------------------------------------------------------------------------


def test_path_prints_the_pdf_of_a_done_entry_and_fails_otherwise(
    tmp_path: Path, sb: Sandbox
) -> None:
    db = tmp_path / "j.db"
    with Outbox(db) as ob:
        good = ob.enqueue("inspection-report", INSPECTION, key="good")
        failing = ob.enqueue("always-fails", {}, key="failing")
        waiting = ob.enqueue("inspection-report", {**INSPECTION, "site": "S"}, key="waiting")
        ob.cancel(waiting.id)
        later = ob.enqueue("inspection-report", {**INSPECTION, "site": "L"}, key="later")
    env = sandbox_env(sb, db)
    pending = run_cli("path", later.id, env=env)
    assert pending.returncode == 75 and pending.stdout == ""
    assert f"entry {later.id} is pending: no PDF yet" in pending.stderr
    with Outbox(db) as ob:
        ob.cancel(later.id)
    run_cli("flush", "--quiet", env=env)
    done = run_cli("path", good.id, env=env)
    assert done.returncode == 0, done.stderr
    pdf = Path(done.stdout.strip())
    assert pdf.read_bytes().startswith(b"%PDF-") and done.stdout == f"{pdf}\n"
    as_json = json.loads(run_cli("path", good.id, "--json", env=env).stdout)
    assert as_json["pdf_path"] == str(pdf) and as_json["state"] == "done"
    failed = run_cli("path", failing.id, "--json", env=env)
    assert failed.returncode == 65
    error = json.loads(failed.stdout)["error"]
    assert (error["code"], error["entry_id"], error["state"]) == ("no_pdf", failing.id, "failed")
    assert run_cli("path", waiting.id, env=env).returncode == 65  # cancelled: never
    pdf.unlink()
    gone = run_cli("path", good.id, env=env)
    assert gone.returncode == 65 and "is gone" in gone.stderr
    assert run_cli("path", "0000000000000000", env=env).returncode == 65


def test_the_library_pdf_raises_by_kind(tmp_path: Path) -> None:
    with Outbox(tmp_path / "j.db") as ob:
        entry = ob.enqueue("inspection-report", INSPECTION, key="k")
        with pytest.raises(PdfNotReady):
            ob.pdf(entry.id)
        ob.cancel(entry.id)
        with pytest.raises(NoPdf) as refused:
            ob.pdf(entry.id)
        assert not isinstance(refused.value, PdfNotReady) and refused.value.state == "cancelled"


# -- events ----------------------------------------------------------------------------------


def test_events_as_lines_and_as_json_lines(tmp_path: Path) -> None:
    db = tmp_path / "j.db"
    with Outbox(db) as ob:
        first = ob.enqueue("inspection-report", INSPECTION, key="a")
        second = ob.enqueue("invoice", {"amount": 1}, key="b")
        ob.cancel(second.id)
    env = {"OUTBOX_DB": str(db)}
    lines = run_cli("events", env=env).stdout.splitlines()
    assert len(lines) == 3
    assert lines[0].startswith("1  ") and f"{first.id}  new -> pending  attempt 0" in lines[0]
    assert f"{second.id}  pending -> cancelled" in lines[2]
    records = [
        json.loads(line) for line in run_cli("events", "--json", env=env).stdout.splitlines()
    ]
    assert [r["id"] for r in records] == [1, 2, 3]
    assert records[2] == {**records[2], "entry_id": second.id, "to_state": "cancelled"}
    only = run_cli("events", "--json", "--entry", second.id, env=env).stdout.splitlines()
    assert [json.loads(line)["id"] for line in only] == [2, 3]
    since = run_cli("events", "--since", "2", env=env).stdout.splitlines()
    assert len(since) == 1 and since[0].startswith("3  ")
    missing = run_cli("events", "--entry", "0000000000000000", "--json", env=env)
    assert missing.returncode == 65 and json.loads(missing.stdout)["error"]["code"] == (
        "entry_not_found"
    )


@pytest.mark.e2e
def test_events_follow_prints_changes_made_by_other_processes(tmp_path: Path) -> None:
    db = tmp_path / "j.db"
    with Outbox(db) as ob:
        ob.enqueue("inspection-report", INSPECTION, key="before")
    follower = subprocess.Popen(
        [sys.executable, "-m", "outbox", "events", "--follow", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=process_env({"OUTBOX_DB": str(db)}),
    )
    try:
        assert follower.stdout is not None
        assert json.loads(follower.stdout.readline())["detail"] == "enqueued"
        with Outbox(db) as ob:  # another process's change
            later = ob.enqueue("inspection-report", {**INSPECTION, "site": "S"}, key="later")
            ob.cancel(later.id)
        seen = [json.loads(follower.stdout.readline()) for _ in range(2)]
        assert [(e["entry_id"], e["to_state"]) for e in seen] == [
            (later.id, "pending"),
            (later.id, "cancelled"),
        ]
        follower.terminate()  # SIGTERM: a clean stop
        assert follower.wait(timeout=30) == 0
    finally:
        if follower.poll() is None:
            follower.kill()
        follower.communicate()


# -- doctor ----------------------------------------------------------------------------------


def _doctor(env: dict[str, str]) -> tuple[int, dict[str, dict[str, object]]]:
    result = run_cli("doctor", "--json", env=env)
    checks = {c["name"]: c for c in json.loads(result.stdout)["checks"]}
    assert json.loads(result.stdout)["exit_code"] == result.returncode
    return result.returncode, checks


def test_doctor_on_a_healthy_setup_passes_with_warnings_that_say_what_to_do(
    tmp_path: Path, sb: Sandbox
) -> None:
    db = tmp_path / "j.db"
    fill(db, 1)
    code, checks = _doctor(sandbox_env(sb, db))
    assert code == 0
    verdicts = {name: check["verdict"] for name, check in checks.items()}
    assert verdicts == {
        "journal": "ok",
        "base url": "ok",
        "network": "ok",
        "health": "ok",
        "api key": "ok",
        "templates": "warn",
        "downloads": "ok",
        "worker": "warn",
    }
    assert "1 entries (1 unfinished); owner-only" in str(checks["journal"]["detail"])
    assert checks["templates"]["fix"] == "run `outbox templates sync` while online"
    assert "writable" in str(checks["downloads"]["detail"])
    text = run_cli("doctor", env=sandbox_env(sb, db)).stdout
    assert "WARN  templates  none cached" in text and "fix: run `outbox templates sync`" in text


def test_doctor_names_the_first_thing_to_fix(tmp_path: Path, sb: Sandbox) -> None:
    missing = tmp_path / "typo.db"
    code, checks = _doctor(sandbox_env(sb, missing))
    assert code == 78 and checks["journal"]["verdict"] == "fail"
    assert "`outbox enqueue` creates one" in str(checks["journal"]["fix"])
    assert not missing.exists() and not (tmp_path / "renders").exists()  # creates nothing

    db = tmp_path / "j.db"
    fill(db, 1)
    code, checks = _doctor(sandbox_env(sb, db, CRAFTKIT_API_KEY="ck_live_wrong"))
    assert code == 77 and checks["api key"]["verdict"] == "fail"
    assert "ck_live_wrong" not in json.dumps(checks)

    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    code, checks = _doctor(sandbox_env(sb, db, CRAFTKIT_BASE_URL=f"http://127.0.0.1:{port}"))
    assert code == 75 and checks["network"]["verdict"] == "fail"
    assert checks["api key"]["verdict"] == "warn"  # set, but could not be checked

    sb.set_faults(captive_portal=True)
    code, checks = _doctor(sandbox_env(sb, db))
    assert code == 75 and checks["health"]["verdict"] == "fail"
    assert "portal" in str(checks["health"]["fix"])
    sb.set_faults(captive_portal=False)

    unset = {k: v for k, v in sandbox_env(sb, db).items() if k != "CRAFTKIT_API_KEY"}
    code, checks = _doctor(unset)
    assert code == 78 and checks["api key"]["detail"] == "CRAFTKIT_API_KEY is not set"
    code, checks = _doctor(sandbox_env(sb, db, CRAFTKIT_API_KEY=sb.api_key + "\r"))
    assert code == 78 and checks["api key"]["detail"] == (
        "unusable: CRAFTKIT_API_KEY contains a carriage return at its end "
        "(saved with Windows line endings?)"
    )
    assert sb.api_key not in json.dumps(checks)

    readonly = tmp_path / "readonly"
    readonly.mkdir()
    readonly.chmod(0o500)
    if os.access(readonly, os.W_OK):  # root writes anywhere: make the folder a file instead
        readonly.chmod(0o700)
        readonly.rmdir()
        readonly.write_text("not a folder")
    code, checks = _doctor(sandbox_env(sb, db, OUTBOX_DOWNLOADS=str(readonly)))
    assert code == 78 and checks["downloads"]["verdict"] == "fail"


def test_doctor_sees_a_running_worker(tmp_path: Path, sb: Sandbox) -> None:
    db = tmp_path / "j.db"
    fill(db, 1)
    with connected(db, sb) as ob:
        ob.start()
        try:
            code, checks = _doctor(sandbox_env(sb, db))
            status = run_cli("status", env=sandbox_env(sb, db)).stdout
        finally:
            ob.stop()
    assert checks["worker"]["verdict"] == "ok"
    assert f"pid {os.getpid()} running (start since " in str(checks["worker"]["detail"])
    worker = next(line for line in status.splitlines() if line.startswith("worker"))
    assert f"pid {os.getpid()} running (start since " in worker and "alive at " in worker


# -- the worker's heartbeat ------------------------------------------------------------------


def test_a_running_watch_shows_as_a_worker_until_it_stops(tmp_path: Path) -> None:
    db, folder = tmp_path / "j.db", tmp_path / "drop"
    folder.mkdir()
    with Outbox(db) as ob:
        stop = threading.Event()
        watcher = threading.Thread(target=DropFolder(ob, folder).run, args=(stop,))
        watcher.start()
        try:
            line = wait_until(
                lambda: next(
                    (
                        line
                        for line in run_cli("--db", str(db), "status").stdout.splitlines()
                        if line.startswith("worker")
                    ),
                    None,
                ),
                what="the watcher's worker line",
            )
        finally:
            stop.set()
            watcher.join(30)
    assert f"pid {os.getpid()} running (watch {folder.resolve()} since " in line
    assert "worker" not in run_cli("--db", str(db), "status").stdout


def test_a_running_worker_renews_its_fact_with_the_next_due_time(
    tmp_path: Path, timed: Sandbox, clock: FakeClock
) -> None:
    db = tmp_path / "j.db"
    settings = Settings(schedule=Schedule(heartbeat=30.0, offline_grace=1.0))
    with simulated(db, timed, clock, settings=settings) as ob:
        entry = ob.enqueue("inspection-report", INSPECTION, key="k")
        supervisor = ob._supervise(None, kind="run")
        supervisor.beat()
        (name,) = [n for n in ob.status() if n.startswith("worker:") and not n.endswith("_at")]
        fact, seen = ob.status()[name], ob.status()[name + "_at"]
        assert fact["kind"] == "run" and fact["pid"] == os.getpid()
        assert fact["next_due"] is not None  # the pending entry is due
        clock.advance(10)
        supervisor.beat()  # too soon: not renewed
        assert ob.status()[name + "_at"] == seen
        clock.advance(25)
        ob.cancel(entry.id)
        supervisor.beat()
        assert ob.status()[name + "_at"] != seen and ob.status()[name]["next_due"] is None


def test_status_shows_a_worker_that_runs_elsewhere_and_one_gone_quiet(tmp_path: Path) -> None:
    db = tmp_path / "j.db"
    with Outbox(db) as ob, freeze_time("2030-01-01 10:00:00"):
        ob.set_status(
            "worker:field-pc:4242:abc",
            {
                "pid": 4242,
                "host": "field-pc",
                "kind": "run",
                "heartbeat": 30,
                "started_at": "2030-01-01T09:00:00.000Z",
                "next_due": "2030-01-01T10:05:00.000Z",
                "errors": 0,
                "error": None,
                "error_at": None,
            },
        )
    with freeze_time("2030-01-01 10:00:40"):
        fresh = run_cli("--db", str(db), "status").stdout
    assert "worker     pid 4242 on field-pc running (run since 2030-01-01T09:00:00.000Z, " in fresh
    assert "next due 2030-01-01T10:05:00.000Z), no error" in fresh
    with freeze_time("2030-01-01 10:05:00"):
        quiet = run_cli("--db", str(db), "status").stdout
    assert "pid 4242 on field-pc not seen since 2030-01-01T10:00:00.000Z (run): stopped?" in quiet


# -- status facts are cleared when contradicted ----------------------------------------------


def test_a_rate_limit_is_cleared_by_a_later_clean_run(
    tmp_path: Path, timed: Sandbox, clock: FakeClock
) -> None:
    db = tmp_path / "j.db"
    fill(db, 8)
    timed.set_faults(rate_limit=2)
    remembers = Settings(schedule=Schedule(rate_limit_clear=24 * 3600.0))
    with simulated(db, timed, clock, settings=remembers) as ob:
        assert ob.flush(timeout=3600).rate_limited
        assert ob.status()["rate_limit"]["limited"] is True
    timed.set_faults(rate_limit=None)
    with Outbox(db) as ob:
        ob.enqueue("inspection-report", {**INSPECTION, "site": "X"}, key="clean")
    with simulated(db, timed, clock) as ob:
        assert ob.flush(timeout=3600).exit_code == 0
        assert ob.status()["rate_limit"] == {"limited": False, "reason": None}
    status = run_cli("--db", str(db), "status").stdout
    assert "rate limit none (as of" in status and "hit" not in status


def test_offline_is_cleared_when_a_later_command_reaches_the_server(
    tmp_path: Path, timed: Sandbox, clock: FakeClock
) -> None:
    db = tmp_path / "j.db"
    fill(db, 1)
    timed.set_faults(captive_portal=True)
    with simulated(db, timed, clock) as ob:
        assert ob.flush(timeout=5).offline
    with Outbox(db, create=False) as ob:
        assert "captive portal" in ob.status()["connectivity"]["reason"]
    timed.set_faults(captive_portal=False)
    with simulated(db, timed, clock) as ob:
        ob.sync_templates()  # a sync reaches Craftkit: the old "offline" is contradicted
        assert ob.status()["connectivity"] == {"online": True, "reason": None}


# -- purge -----------------------------------------------------------------------------------


def test_purge_dry_run_counts_and_deletes_nothing(tmp_path: Path) -> None:
    db = tmp_path / "j.db"
    with Outbox(db) as ob:
        entry = ob.enqueue("inspection-report", INSPECTION, key="k")
        ob.cancel(entry.id)
    env = {"OUTBOX_DB": str(db)}
    with freeze_time(timedelta(hours=2)):
        dry = run_cli("purge", "--older-than", "1h", "--dry-run", env=env)
        assert dry.stdout == "would purge 1 finished entries older than 1h (dry run)\n"
        as_json = json.loads(
            run_cli("purge", "--older-than", "1h", "--dry-run", "--json", env=env).stdout
        )
        assert as_json == {"would_purge": 1, "dry_run": True, "older_than": "1h"}
        with Outbox(db) as ob:
            assert ob.get(entry.id).state is State.CANCELLED
        assert "purged 1" in run_cli("purge", "--older-than", "1h", env=env).stdout


def test_purge_keeps_an_entry_until_its_drop_folder_result_is_written(tmp_path: Path) -> None:
    db, folder = tmp_path / "j.db", tmp_path / "drop"
    folder.mkdir()
    (folder / "job.json").write_text(
        json.dumps({"template": "inspection-report", "data": INSPECTION, "key": "job"})
    )
    clock = FakeClock()
    with Outbox(db, clock=clock) as ob:
        watcher = DropFolder(ob, folder)
        (accepted,) = watcher.scan().accepted
        watcher.write_results()
        other = ob.enqueue("invoice", {"amount": 1}, key="not-from-a-file")
        ob.cancel(accepted.entry.id)  # finished while no watcher writes results
        ob.cancel(other.id)
        clock.advance(1)  # both are older than 0 s: only the owed result keeps one
        assert ob.purge(0, dry_run=True) == 1
        assert ob.purge(0) == 1  # only the entry that owes no result file
        assert ob.get(accepted.entry.id).state is State.CANCELLED
        assert not (folder / "results" / "job.result.json").exists()
        watcher.write_results()
        assert json.loads((folder / "results" / "job.result.json").read_text())["state"] == (
            "cancelled"
        )
        assert ob.purge(0) == 1
