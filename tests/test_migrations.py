"""Opening journals of other schema versions, and files that are not journals at all."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import threading
from pathlib import Path

import pytest
import sqlite_utils
from support import run_cli

from outbox import JournalDamaged, JournalTooNew, NotAJournal, Outbox, State
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


def _journal_with_entries(path: Path, count: int = 300) -> None:
    with Outbox(path) as ob:
        ob.enqueue_many(
            [{"template": "invoice", "data": {"n": n, "pad": "x" * 200}} for n in range(count)]
        )
    assert not path.with_name(path.name + "-wal").exists(), "a closed journal has no WAL"


def _refused_by_cli(path: Path, *words: str) -> None:
    result = run_cli("--db", str(path), "list")
    assert result.returncode == 78, result.stderr
    assert "Traceback" not in result.stderr
    for word in words:
        assert word in result.stderr


@pytest.mark.parametrize("size", [10, 99, 100, 4096, 50_000])
def test_a_journal_cut_short_is_called_damaged_and_left_untouched(
    tmp_path: Path, size: int
) -> None:
    path = tmp_path / "cut.db"
    _journal_with_entries(path)
    os.truncate(path, size)
    before = _fingerprint(path)
    with pytest.raises(JournalDamaged, match=f"{path.name} is damaged") as refused:
        Outbox(path)
    assert "not an outbox journal" not in str(refused.value)
    _refused_by_cli(path, "is damaged", "left untouched", "backup")
    assert _fingerprint(path) == before


def test_a_corrupt_journal_is_called_damaged_in_sqlites_words(tmp_path: Path) -> None:
    path = tmp_path / "corrupt.db"
    _journal_with_entries(path)
    with path.open("r+b") as handle:  # scribble over pages 4 to 23, keeping the header
        handle.seek(3 * 4096)
        handle.write(b"\xde\xad" * 2048 * 20)
    with (
        pytest.raises(JournalDamaged, match="SQLite says: database disk image is malformed"),
        Outbox(path) as ob,
    ):
        ob.list()
    _refused_by_cli(path, "is damaged (SQLite says: database disk image is malformed)")


def test_an_empty_file_is_refused_never_taken_over(tmp_path: Path) -> None:
    path = tmp_path / "empty.db"
    path.touch()
    before = _fingerprint(path)
    with pytest.raises(NotAJournal, match="empty file .0 bytes.*delete it"):
        Outbox(path)
    _refused_by_cli(path, "empty file (0 bytes)")
    assert _fingerprint(path) == before


def test_an_emptied_journal_beside_its_wal_is_called_damaged(tmp_path: Path) -> None:
    path = tmp_path / "emptied.db"
    _journal_with_entries(path)
    wal = path.with_name(path.name + "-wal")
    wal.write_bytes(b"changes that belonged to the lost main file" * 10)
    os.truncate(path, 0)
    before = _fingerprint(path)
    with pytest.raises(JournalDamaged, match="empty .0 bytes. while emptied.db-wal beside it"):
        Outbox(path)
    assert _fingerprint(path) == before


def test_a_missing_journal_beside_its_wal_is_not_recreated(tmp_path: Path) -> None:
    path = tmp_path / "gone.db"
    path.with_name(path.name + "-wal").write_bytes(b"x" * 4096)
    with pytest.raises(JournalDamaged, match="gone.db is missing, but gone.db-wal"):
        Outbox(path)
    _refused_by_cli(path, "is missing")
    assert not path.exists()


@pytest.mark.parametrize("version", [0, 3, SCHEMA_VERSION + 2])
def test_an_empty_sqlite_database_of_another_program_is_not_written_to(
    tmp_path: Path, version: int
) -> None:
    path = tmp_path / "other.db"
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version={version}")
    conn.commit()
    conn.close()
    before = _fingerprint(path)
    with pytest.raises(
        NotAJournal, match="SQLite database but not an outbox journal .tables: none"
    ):
        Outbox(path)
    _refused_by_cli(path, "not an outbox journal")
    assert _fingerprint(path) == before


def test_a_new_journal_appears_whole_even_when_many_create_it_at_once(tmp_path: Path) -> None:
    path = tmp_path / "new" / "journal.db"
    errors: list[BaseException] = []
    ids: list[str] = []

    def open_and_enqueue(n: int) -> None:
        try:
            with Outbox(path) as ob:
                ids.append(ob.enqueue("invoice", {"n": 1}, key="same").id)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=open_and_enqueue, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(set(ids)) == 1 and len(ids) == 8
    assert sorted(p.name for p in path.parent.iterdir()) == ["journal.db"]
    assert path.stat().st_mode & 0o777 == 0o600
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


def _journal_of_schema_8(path: Path) -> None:
    """A journal as outbox wrote it before migration 9: event ids by AUTOINCREMENT, counts of
    every state kept by triggers, and a purge that deleted the newest events."""
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA application_id={APPLICATION_ID}")
    for migrate in MIGRATIONS[:8]:
        migrate(sqlite_utils.Database(conn))
    states = ["pending", "submitted", "downloading", "done", "done", "failed", "rejected"]
    for n, state in enumerate([*states, "cancelled", "done"]):
        conn.execute(
            "INSERT INTO entries (id, template, data, base_key, key, state, due_at, created_at,"
            " updated_at) VALUES (?, ?, '{}', ?, ?, ?, ?, '2026-01-01T00:00:00.000Z',"
            " '2026-01-01T00:00:00.000Z')",
            (f"{n:016x}", "invoice" if n % 2 else "letter", f"k{n}", f"k{n}", state, n),
        )
        conn.execute(
            "INSERT INTO events (entry_id, at, to_state, attempt, detail) VALUES (?,"
            " '2026-01-01T00:00:00.000Z', ?, 0, 'enqueued')",
            (f"{n:016x}", state),
        )
    # The last two entries were purged, with their events (ids 8 and 9).
    conn.execute("DELETE FROM events WHERE id > 7")
    conn.execute("DELETE FROM entries WHERE seq > 7")
    conn.execute("PRAGMA user_version=8")
    conn.commit()
    conn.close()


def test_a_schema_8_journal_is_converted_keeping_entries_events_counts_and_used_ids(
    tmp_path: Path,
) -> None:
    path = tmp_path / "v8.db"
    _journal_of_schema_8(path)
    with sqlite3.connect(path) as conn:
        events_before = conn.execute("SELECT * FROM events ORDER BY id").fetchall()
        assert conn.execute("SELECT seq FROM sqlite_sequence").fetchall() == [(9,)]
    conn.close()
    with Outbox(path) as ob:
        assert ob.journal.schema_version == SCHEMA_VERSION
        assert ob.counts() == {
            State.PENDING: 1,
            State.SUBMITTED: 1,
            State.DOWNLOADING: 1,
            State.DONE: 2,
            State.FAILED: 1,
            State.REJECTED: 1,
            State.CANCELLED: 0,
        }
        assert [e.key for e in ob.page(state="done").entries] == ["k4", "k3"]
        assert [e.key for e in ob.page(template="invoice").entries] == ["k5", "k3", "k1"]
        assert ob.journal.templates_in_use() == ["invoice", "letter"]
        assert ob.journal.last_event_id() == 7
        entry = ob.enqueue("invoice", {"n": 1}, key="after-the-upgrade")
        assert [event.id for event in ob.history(entry.id)] == [10]  # 8 and 9 stay used
        assert ob.counts()[State.PENDING] == 2
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT * FROM events WHERE id <= 7 ORDER BY id").fetchall() == (
            events_before
        )
        events_sql = conn.execute("SELECT sql FROM sqlite_master WHERE name = 'events'")
        assert "AUTOINCREMENT" not in events_sql.fetchone()[0]
        assert conn.execute("SELECT count(*) FROM sqlite_sequence").fetchone()[0] == 0
        triggers = conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'")
        assert sorted(name for (name,) in triggers) == [
            "entries_count_delete",
            "entries_count_move",
        ]  # schema 10: an insert (always pending) changes no count
    conn.close()


def test_event_ids_purged_from_a_new_journal_are_never_handed_out_again(tmp_path: Path) -> None:
    """Without AUTOINCREMENT, SQLite would give the next event the newest remaining id + 1:
    the ids of the purged newest events again, which a change-feed reader has seen."""
    path = tmp_path / "j.db"
    with Outbox(path, validation="off") as ob:
        kept = ob.enqueue("invoice", {"n": 1}, key="kept")
        gone = [ob.enqueue("invoice", {"n": n}, key=f"gone-{n}") for n in range(3)]
        for entry in gone:
            ob.cancel(entry.id)
        newest = ob.journal.last_event_id()
        assert ob.journal.purge(ob.clock.now() + 1) == 3  # the newest events go with them
        assert ob.journal.last_event_id() == ob.history(kept.id)[-1].id < newest
    with Outbox(path, validation="off") as ob:  # reopened: the promise is in the file
        later = ob.enqueue("invoice", {"n": 9}, key="later")
        assert ob.history(later.id)[0].id == newest + 1
        assert [e.id for e in ob.journal.events_after(newest - 1)] == [newest + 1]
