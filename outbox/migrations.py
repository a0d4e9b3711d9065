"""What makes a file an outbox journal: its identity, its schema, and the steps that build it.

A journal is a SQLite file whose ``application_id`` header field is :data:`APPLICATION_ID` and
whose ``user_version`` is its schema version. :class:`~outbox.store.Journal` checks both on
open, before it writes anything: a file that is not SQLite, a SQLite database of another
program, or a journal written by a newer outbox is refused and left untouched. An older journal
is upgraded by running the missing :data:`MIGRATIONS` in one transaction.

The schema is built with sqlite-utils (``db.table(...).create``, ``create_index``), which writes
the ``CREATE`` statements from a column map; the few steps it cannot express are SQL.
"""

from __future__ import annotations

import logging
import os
import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path

import sqlite_utils

from .errors import JournalError, JournalTooNew, NotAJournal

log = logging.getLogger(__name__)

#: "OBXJ": marks a SQLite file as an outbox journal.
APPLICATION_ID = 0x4F42584A
SQLITE_HEADER = b"SQLite format 3\x00"


# -- the migrations --------------------------------------------------------------------


def _migrate_1(db: sqlite_utils.Database) -> None:
    entries = db.table("entries")
    entries.create(
        {
            "seq": int,
            "id": str,
            "template": str,
            "data": str,
            "base_key": str,
            "key": str,
            "generation": int,
            "filename": str,
            "version": int,
            "state": str,
            "remote_status": str,
            "render_id": str,
            "download_url": str,
            "attempts": int,
            "polls": int,
            "error": str,
            "error_code": str,
            "field_errors": str,
            "due_at": float,
            "lease_owner": str,
            "lease_until": float,
            "pdf_path": str,
            "pdf_bytes": int,
            "pdf_sha256": str,
            "source": str,
            "created_at": str,
            "updated_at": str,
            "submitted_at": float,
            "finished_at": float,
        },
        pk="seq",
        not_null={
            "id",
            "template",
            "data",
            "base_key",
            "key",
            "generation",
            "state",
            "attempts",
            "polls",
            "due_at",
            "created_at",
            "updated_at",
        },
        defaults={"generation": 1, "attempts": 0, "polls": 0},
    )
    entries.create_index(["id"], unique=True)
    entries.create_index(["base_key"], unique=True)
    entries.create_index(["state", "due_at"])
    entries.create_index(["render_id"])
    events = db.table("events")
    events.create(
        {
            "id": int,
            "entry_id": str,
            "at": str,
            "from_state": str,
            "to_state": str,
            "attempt": int,
            "http_status": int,
            "error_code": str,
            "detail": str,
        },
        pk="id",
        not_null={"entry_id", "at", "to_state", "attempt"},
    )
    events.create_index(["entry_id", "id"])


def _migrate_2(db: sqlite_utils.Database) -> None:
    # Facts about the journal as a whole: last connectivity, pause reason, ...
    db.table("status").create(
        {"name": str, "value": str, "updated_at": str}, pk="name", not_null={"value"}
    )


def _migrate_3(db: sqlite_utils.Database) -> None:
    # The template cache: each template's published manifest and JSON Schema, so that data
    # can be checked before it is queued, offline.
    db.table("templates").create(
        {
            "slug": str,
            "name": str,
            "version": int,
            "published": int,
            "manifest": str,
            "json_schema": str,
            "updated_at": str,
            "synced_at": str,
            "previous_version": int,
            "changed_at": str,
        },
        pk="slug",
        not_null={"published", "synced_at"},
    )


def _migrate_4(db: sqlite_utils.Database) -> None:
    # Event ids must never be handed out twice, even after a purge deleted the newest events:
    # readers of the change feed remember the last id they saw. Only AUTOINCREMENT promises it,
    # and neither sqlite-utils' create() nor transform() can add it: this step is SQL.
    db.execute(
        "CREATE TABLE events_new (id INTEGER PRIMARY KEY AUTOINCREMENT, entry_id TEXT NOT NULL,"
        " at TEXT NOT NULL, from_state TEXT, to_state TEXT NOT NULL, attempt INTEGER NOT NULL,"
        " http_status INTEGER, error_code TEXT, detail TEXT)"
    )
    db.execute(
        "INSERT INTO events_new SELECT id, entry_id, at, from_state, to_state, attempt,"
        " http_status, error_code, detail FROM events"
    )
    db.execute("DROP TABLE events")
    db.execute("ALTER TABLE events_new RENAME TO events")
    db.execute("CREATE INDEX idx_events_entry_id_id ON events (entry_id, id)")


def _migrate_5(db: sqlite_utils.Database) -> None:
    # Nothing looks entries up by render id, and every index costs a page write per enqueue.
    db.execute("DROP INDEX IF EXISTS idx_entries_render_id")


def _migrate_6(db: sqlite_utils.Database) -> None:
    # Paging newest first within one state or one template (the dashboard) walks these indexes
    # instead of sorting every match: a page costs the same at a thousand or a million entries.
    db.execute("CREATE INDEX idx_entries_state_seq ON entries (state, seq)")
    db.execute("CREATE INDEX idx_entries_template_seq ON entries (template, seq)")


#: Index ``i`` upgrades a journal from version ``i`` to ``i + 1``. Append only; never edit.
MIGRATIONS: Sequence[Callable[[sqlite_utils.Database], None]] = (
    _migrate_1,
    _migrate_2,
    _migrate_3,
    _migrate_4,
    _migrate_5,
    _migrate_6,
)
SCHEMA_VERSION = len(MIGRATIONS)


def schema_version(conn: sqlite3.Connection) -> int:
    """The journal's schema version (``user_version``; 0 for a new file)."""
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def upgrade(conn: sqlite3.Connection, path: Path) -> None:
    """Bring the journal to :data:`SCHEMA_VERSION`; call inside a write transaction.

    A new file (version 0) is marked as an outbox journal first.
    """
    version = schema_version(conn)
    if version >= SCHEMA_VERSION:
        return
    if version == 0:
        conn.execute(f"PRAGMA application_id={APPLICATION_ID}")
    # No plugins and no connection settings of sqlite-utils' own: it only writes the schema.
    db = sqlite_utils.Database(conn, recursive_triggers=False, execute_plugins=False)
    for step in range(version, SCHEMA_VERSION):
        log.info("upgrading journal %s from schema %d to %d", path, step, step + 1)
        MIGRATIONS[step](db)
    conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")


# -- identity checks -------------------------------------------------------------------


def refuse_foreign_file(path: Path) -> None:
    """Refuse, without opening it through SQLite, a file that is not SQLite at all."""
    if not path.exists():
        return
    if not path.is_file():
        raise NotAJournal(f"{path} is not a regular file; point --db at a journal file")
    try:
        with path.open("rb") as handle:
            header = handle.read(len(SQLITE_HEADER))
    except OSError as exc:
        raise JournalError(f"cannot read the journal {path}: {exc.strerror}") from exc
    if header and header != SQLITE_HEADER:
        raise NotAJournal(
            f"{path} is not an outbox journal (not a SQLite file at all); it was left untouched"
        )


def create_private_file(path: Path) -> None:
    """Create the journal readable by its owner only, before SQLite creates it with umask."""
    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except FileExistsError:
        return
    except OSError as exc:
        raise JournalError(f"cannot create the journal {path}: {exc.strerror}") from exc
    os.close(fd)


def check_identity(conn: sqlite3.Connection, path: Path) -> None:
    """Refuse a foreign SQLite database or a journal from a newer outbox; write nothing."""
    try:
        app_id = conn.execute("PRAGMA application_id").fetchone()[0]
        version = schema_version(conn)
        tables = [
            row[0]
            for row in conn.execute(
                "SELECT name FROM sqlite_master WHERE type='table' ORDER BY name"
            )
        ]
    except sqlite3.DatabaseError as exc:
        raise NotAJournal(
            f"{path} is not an outbox journal (SQLite says: {exc}); it was left untouched"
        ) from exc
    if app_id == APPLICATION_ID:
        if version > SCHEMA_VERSION:
            raise JournalTooNew(
                f"{path} was written by a newer outbox (journal schema {version}, this "
                f"outbox knows up to {SCHEMA_VERSION}); upgrade outbox to open it. "
                "The file was left untouched."
            )
        return
    if app_id != 0 or tables:
        listed = ", ".join(tables[:5]) + (", ..." if len(tables) > 5 else "")
        raise NotAJournal(
            f"{path} is a SQLite database but not an outbox journal "
            f"(tables: {listed or 'none'}); it was left untouched. Point --db at another file."
        )
