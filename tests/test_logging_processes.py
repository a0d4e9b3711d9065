"""``outbox run`` in a real process logs one line per finished entry, in text and in JSON,
and the network's transitions, on stderr (what journald or a collector reads)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support import INSPECTION, OutboxProcess, sandbox_env, wait_until

from outbox import Outbox
from outbox.sandbox import Sandbox

pytestmark = pytest.mark.e2e


def start_run(env: dict[str, str], *args: str) -> OutboxProcess:
    """``outbox run ARGS`` in a real process, ready once it says it is running."""
    return OutboxProcess("run", *args, env=env, ready_text="outbox running")


def _enqueue_three(db: Path) -> dict[str, str]:
    with Outbox(db) as ob:
        return {
            "done": ob.enqueue("inspection-report", INSPECTION, key="good").id,
            "failed": ob.enqueue("always-fails", {}, key="failing").id,
            "rejected": ob.enqueue("inspection-report", {"site": "N"}, key="refused").id,
        }


def _all_finished(db: Path) -> bool:
    with Outbox(db) as ob:
        return all(entry.state.is_terminal for entry in ob.list())


def test_run_logs_one_text_line_per_finished_entry_and_the_network_transitions(
    tmp_path: Path,
) -> None:
    db = tmp_path / "j.db"
    ids = _enqueue_three(db)
    with Sandbox(render_seconds=0.1) as sb:
        sb.stop()  # start offline: the log says so, then says when it is back
        env = sandbox_env(sb, db)
        running = start_run(env)
        wait_until(lambda: any(line.startswith("offline: ") for line in running.stderr))
        sb.start()
        wait_until(lambda: _all_finished(db), timeout=60, what="every entry to finish")
        wait_until(
            lambda: (
                sum(line.startswith(("done", "failed", "rejected")) for line in running.stderr) == 3
            )
        )
        assert running.stop() == 0, running.stderr
    outcome_lines = [
        line for line in running.stderr if line.startswith(("done ", "failed ", "rejected "))
    ]
    assert sorted(line.split()[0] for line in outcome_lines) == ["done", "failed", "rejected"]
    for word, entry_id in ids.items():
        (line,) = [line for line in outcome_lines if line.split()[1] == entry_id]
        assert line.split()[0] == word
    with Outbox(db) as ob:
        done = ob.get(ids["done"])
    assert f"done      {done.id}  inspection-report  {done.pdf_path}  {done.pdf_bytes} bytes" in (
        outcome_lines
    )
    online = [line for line in running.stderr if line.startswith("online again: ")]
    assert online == [f"online again: {sb.base_url} answers"]
    assert running.stderr.index(online[0]) > min(
        i for i, line in enumerate(running.stderr) if line.startswith("offline: ")
    )
    assert not any("Traceback" in line or line[:4].isdigit() for line in running.stderr)


def test_run_logs_json_lines_for_collectors(tmp_path: Path) -> None:
    db = tmp_path / "j.db"
    ids = _enqueue_three(db)
    with Sandbox(render_seconds=0.1) as sb:
        running = start_run(sandbox_env(sb, db), "--log-format", "json")
        wait_until(lambda: _all_finished(db), timeout=60, what="every entry to finish")

        def outcomes() -> list[dict[str, object]]:
            records = [json.loads(line) for line in list(running.stderr)]
            return [r for r in records if r.get("event") in ("done", "failed", "rejected")]

        wait_until(lambda: len(outcomes()) == 3, what="three outcome records")
        assert running.stop() == 0, running.stderr
    records = [json.loads(line) for line in running.stderr]  # every line is one JSON object
    finished = {r["entry_id"]: r for r in outcomes()}
    assert {entry_id: r["event"] for entry_id, r in finished.items()} == {
        entry_id: word for word, entry_id in ids.items()
    }
    assert finished[ids["done"]]["pdf_bytes"] > 0  # type: ignore[operator]
    assert finished[ids["rejected"]]["error_code"] == "invalid_input_data"
    assert finished[ids["failed"]]["level"] == "warning"
    assert all({"time", "level", "logger", "message"} <= set(r) for r in records)
