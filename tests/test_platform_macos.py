"""outbox as it runs on macOS, end to end on Linux: the CLI in a real process that believes it
runs on macOS (``tests/as_macos.py``: ``sys.platform`` is ``darwin``, ``fcntl(F_FULLFSYNC)`` is
stood in for), creating a journal, enqueueing and rendering a PDF against the sandbox. Every
sync outbox asks for must be ``F_FULLFSYNC`` (``fsync`` leaves data in the drive's cache on a
Mac) and every journal connection must turn on SQLite's ``fullfsync`` before it writes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from support import INSPECTION, process_env, sandbox_env

from outbox import Outbox, State
from outbox.sandbox import Sandbox

AS_MACOS = Path(__file__).parent / "as_macos.py"
WRITES = ("BEGIN", "INSERT", "UPDATE", "DELETE", "COMMIT", "CREATE")


def run_as_macos(tmp_path: Path, env: dict[str, str], *args: str) -> dict[str, Any]:
    report = tmp_path / f"seen-{args[0]}.json"
    result = subprocess.run(
        [sys.executable, str(AS_MACOS), *args],
        capture_output=True,
        text=True,
        env=process_env({**env, "OUTBOX_AS_MACOS_REPORT": str(report)}),
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    seen: dict[str, Any] = json.loads(report.read_text(encoding="utf-8"))
    seen["stdout"] = result.stdout
    return seen


def assert_journal_connections_sync_fully(connections: list[list[str]]) -> None:
    writers = [
        statements
        for statements in connections
        if any(statement.lstrip().upper().startswith(WRITES) for statement in statements)
    ]
    assert writers, connections
    for statements in writers:
        first_write = next(
            n for n, s in enumerate(statements) if s.lstrip().upper().startswith(WRITES)
        )
        before = statements[:first_write]
        assert "PRAGMA fullfsync=ON" in before, statements
        assert "PRAGMA checkpoint_fullfsync=ON" in before, statements


@pytest.mark.e2e
def test_on_macos_every_sync_flushes_the_drive_cache(tmp_path: Path, sandbox: Sandbox) -> None:
    db = tmp_path / "j.db"
    env = sandbox_env(sandbox, db)
    enqueued = run_as_macos(
        tmp_path, env, "enqueue", "inspection-report", "--data", json.dumps(INSPECTION)
    )
    entry_id = enqueued["stdout"].strip()
    flushed = run_as_macos(tmp_path, env, "flush", "--timeout", "60")
    for seen in (enqueued, flushed):
        assert seen["fsync"] == []  # never a plain fsync: it leaves data in the drive's cache
        assert_journal_connections_sync_fully(seen["connections"])
    # The new journal file, its folder's new names, the PDF and the downloads folder's names.
    assert {"file", "folder"} <= set(enqueued["F_FULLFSYNC"])
    assert {"file", "folder"} <= set(flushed["F_FULLFSYNC"])
    with Outbox(db) as ob:
        entry = ob.get(entry_id)
        assert entry.state is State.DONE and entry.pdf_path is not None
        assert Path(entry.pdf_path).read_bytes().startswith(b"%PDF-")
