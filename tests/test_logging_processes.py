"""``outbox run`` in a real process logs one line per finished entry, in text and in JSON,
and the network's transitions, on stderr (what journald or a collector reads)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pytest
from support import INSPECTION, process_env, sandbox_env, wait_until

from outbox import Outbox
from outbox.sandbox import Sandbox

pytestmark = pytest.mark.e2e


class Running:
    """``python -m outbox ... run`` with its stderr collected line by line as it comes."""

    def __init__(self, env: dict[str, str], *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "outbox", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=process_env(env),
        )
        self.lines: list[str] = []
        self.out: list[str] = []
        self._readers = [
            threading.Thread(target=self._collect, args=(self.proc.stderr, self.lines)),
            threading.Thread(target=self._collect, args=(self.proc.stdout, self.out)),
        ]
        for reader in self._readers:
            reader.start()

    @staticmethod
    def _collect(stream: IO[str], into: list[str]) -> None:
        with stream:
            for line in stream:
                into.append(line.rstrip("\n"))

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=60)
        for reader in self._readers:
            reader.join(10)
        return code

    def kill(self) -> None:
        """End the process if a failed test left it running."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)
        for reader in self._readers:
            reader.join(10)


@pytest.fixture
def started() -> Iterator[list[Running]]:
    """Every process a test starts; any still running at the end is killed."""
    processes: list[Running] = []
    yield processes
    for process in processes:
        process.kill()


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
    tmp_path: Path, started: list[Running]
) -> None:
    db = tmp_path / "j.db"
    ids = _enqueue_three(db)
    with Sandbox(render_seconds=0.1) as sb:
        sb.stop()  # start offline: the log says so, then says when it is back
        env = sandbox_env(sb, db)
        running = Running(env, "run")
        started.append(running)
        wait_until(lambda: any(line.startswith("offline: ") for line in running.lines))
        sb.start()
        wait_until(lambda: _all_finished(db), timeout=60, what="every entry to finish")
        wait_until(
            lambda: (
                sum(line.startswith(("done", "failed", "rejected")) for line in running.lines) == 3
            )
        )
        assert running.stop() == 0, running.lines
    outcome_lines = [
        line for line in running.lines if line.startswith(("done ", "failed ", "rejected "))
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
    online = [line for line in running.lines if line.startswith("online again: ")]
    assert online == [f"online again: {sb.base_url} answers"]
    assert running.lines.index(online[0]) > min(
        i for i, line in enumerate(running.lines) if line.startswith("offline: ")
    )
    assert not any("Traceback" in line or line[:4].isdigit() for line in running.lines)


def test_run_logs_json_lines_for_collectors(tmp_path: Path, started: list[Running]) -> None:
    db = tmp_path / "j.db"
    ids = _enqueue_three(db)
    with Sandbox(render_seconds=0.1) as sb:
        running = Running(sandbox_env(sb, db), "run", "--log-format", "json")
        started.append(running)
        wait_until(lambda: _all_finished(db), timeout=60, what="every entry to finish")

        def outcomes() -> list[dict[str, object]]:
            records = [json.loads(line) for line in list(running.lines)]
            return [r for r in records if r.get("event") in ("done", "failed", "rejected")]

        wait_until(lambda: len(outcomes()) == 3, what="three outcome records")
        assert running.stop() == 0, running.lines
    records = [json.loads(line) for line in running.lines]  # every line is one JSON object
    finished = {r["entry_id"]: r for r in outcomes()}
    assert {entry_id: r["event"] for entry_id, r in finished.items()} == {
        entry_id: word for word, entry_id in ids.items()
    }
    assert finished[ids["done"]]["pdf_bytes"] > 0  # type: ignore[operator]
    assert finished[ids["rejected"]]["error_code"] == "invalid_input_data"
    assert finished[ids["failed"]]["level"] == "warning"
    assert all({"time", "level", "logger", "message"} <= set(r) for r in records)
