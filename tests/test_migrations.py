"""Opening journals of other schema versions, and files that are not journals at all."""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

import pytest
import sqlite_utils
from support import run_cli

from outbox import JournalTooNew, NotAJournal, Outbox, State
from outbox.migrations import APPLICATION_ID, MIGRATIONS, SCHEMA_VERSION


def _fingerprint(path: Path) -> tuple[str, list[str]]:
    siblings = sorted(p.name for p in path.parent.iterdir())
    return hashlib.sha256(path.read_bytes()).hexdigest(), siblings


def _write_journal_at_version(path: Path, version: int) -> None:
    conn = sqlite3.connect(path)
    db = sqlite_utils.Database(conn)
    conn.execute(f"PRAGMA application_id={APPLICATION_ID}")
    for migrate in MIGRATIONS[:version]:
        migrate(db)
    conn.execute(
        "INSERT INTO entries (id, template, data, base_key, key, state, due_at, created_at,"
        " updated_at) VALUES ('0123456789abcdef', 'invoice', '{\"n\": 1}', 'old-key', 'old-key',"
        " 'pending', 0, '2026-01-01T00:00:00.000Z', '2026-01-01T00:00:00.000Z')"
    )
    conn.execute(f"PRAGMA user_version={version}")
    conn.commit()
    conn.close()


def test_older_journal_is_upgraded_on_open_and_keeps_its_entries(tmp_path: Path) -> None:
    assert SCHEMA_VERSION >= 2, "there must be an older schema to upgrade from"
    path = tmp_path / "old.db"
    _write_journal_at_version(path, 1)
    with Outbox(path) as ob:
        assert ob.journal.schema_version == SCHEMA_VERSION
        entry = ob.get("0123456789abcdef")
        assert (entry.key, entry.state, entry.data) == ("old-key", State.PENDING, {"n": 1})
        ob.journal.set_status("connectivity", "online")  # the table migration 2 adds
        assert ob.enqueue("invoice", {"n": 1}, key="old-key").id == entry.id


def test_newer_journal_is_refused_and_left_untouched(tmp_path: Path) -> None:
    path = tmp_path / "new.db"
    _write_journal_at_version(path, SCHEMA_VERSION)
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    conn.commit()
    conn.close()
    before = _fingerprint(path)
    with pytest.raises(JournalTooNew, match="written by a newer outbox"):
        Outbox(path)
    assert _fingerprint(path) == before


def test_garbage_file_is_refused_and_left_untouched(tmp_path: Path) -> None:
    path = tmp_path / "notes.db"
    path.write_bytes(b"these are my notes, not a database\n" * 100)
    before = _fingerprint(path)
    with pytest.raises(NotAJournal, match="not a SQLite file at all"):
        Outbox(path)
    result = run_cli("--db", str(path), "list")
    assert result.returncode == 78
    assert "not an outbox journal" in result.stderr and "left untouched" in result.stderr
    assert "Traceback" not in result.stderr
    assert _fingerprint(path) == before


def test_foreign_sqlite_database_is_refused_and_left_untouched(tmp_path: Path) -> None:
    path = tmp_path / "crm.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT)")
    conn.execute("INSERT INTO customers (name) VALUES ('Ada')")
    conn.commit()
    conn.close()
    before = _fingerprint(path)
    with pytest.raises(NotAJournal, match="tables: customers"):
        Outbox(path)
    result = run_cli("--db", str(path), "enqueue", "invoice", "--data", "{}")
    assert result.returncode == 78, result.stderr
    assert "is a SQLite database but not an outbox journal" in result.stderr
    assert _fingerprint(path) == before


def test_empty_file_becomes_a_journal(tmp_path: Path) -> None:
    path = tmp_path / "empty.db"
    path.touch()
    with Outbox(path) as ob:
        assert ob.journal.schema_version == SCHEMA_VERSION


def test_directory_at_db_path_is_refused(tmp_path: Path) -> None:
    with pytest.raises(NotAJournal, match="not a regular file"):
        Outbox(tmp_path)


def test_event_ids_are_never_reused_after_a_purge(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    _write_journal_at_version(path, 3)
    with Outbox(path) as ob:  # upgraded to AUTOINCREMENT event ids
        entry = ob.enqueue("invoice", {"n": 2})
        ob.cancel(entry.id)
        newest = ob.journal.last_event_id()
        ob.journal.purge(ob.clock.now() + 1)  # the cancelled entry and its newest events go
        assert ob.journal.last_event_id() < newest
        later = ob.enqueue("invoice", {"n": 3})
        assert ob.history(later.id)[0].id > newest
