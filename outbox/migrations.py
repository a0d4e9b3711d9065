"""What makes a file an outbox journal: its identity, its schema, and the steps that build it.

A journal is a SQLite file whose ``application_id`` header field is :data:`APPLICATION_ID` and
whose ``user_version`` is its schema version. :class:`~outbox.store.Journal` checks both in the
file's raw header before SQLite opens it (:func:`check_file`), so nothing is ever written to a
file before it is proven to be a journal: a file that is not SQLite, a SQLite database of
another program (even an empty one), an empty file, a journal cut short, or a journal written
by a newer outbox is refused and left untouched. A new journal is built whole under a temporary
name and then linked into place (:func:`create_journal`), so a file at a journal's path is
never a half-made journal. An older journal is upgraded by running the missing
:data:`MIGRATIONS` in one transaction.

The schema is built with sqlite-utils (``db.table(...).create``, ``create_index``), which writes
the ``CREATE`` statements from a column map; the few steps it cannot express are SQL.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import sqlite3
import stat
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from . import platform
from .errors import JournalDamaged, JournalError, JournalTooNew, NotAJournal
from .files import ensure_folder, fsync_dir, hard_link, rename_if_free

if TYPE_CHECKING:
    import sqlite_utils

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


def _migrate_7(db: sqlite_utils.Database) -> None:
    # Deliveries: share links and emails made once an entry is done, each with its own state,
    # lease and schedule. Their history is the entry's events, marked with the delivery's id.
    deliveries = db.table("deliveries")
    deliveries.create(
        {
            "seq": int,
            "id": str,
            "entry_id": str,
            "channel": str,
            "recipient": str,
            "recipient_name": str,
            "message": str,
            "expires_at": str,
            "by_hand": int,
            "state": str,
            "attempts": int,
            "due_at": float,
            "lease_owner": str,
            "lease_until": float,
            "attempt_started_at": float,
            "share_id": str,
            "share_token": str,
            "share_url": str,
            "email_message_id": str,
            "sent_at": str,
            "revoked_at": str,
            "error": str,
            "error_code": str,
            "field_errors": str,
            "created_at": str,
            "updated_at": str,
        },
        pk="seq",
        not_null={
            "id",
            "entry_id",
            "channel",
            "by_hand",
            "state",
            "attempts",
            "due_at",
            "created_at",
            "updated_at",
        },
        defaults={"attempts": 0, "by_hand": 0},
    )
    deliveries.create_index(["id"], unique=True)
    deliveries.create_index(["entry_id"])
    deliveries.create_index(["state", "due_at"])
    # One share is recorded by one delivery at most: two deliveries never adopt the same one.
    deliveries.create_index(["share_id"], unique=True)
    db.execute("ALTER TABLE events ADD COLUMN delivery_id TEXT")
    db.execute("ALTER TABLE events ADD COLUMN delivery_state TEXT")


def _migrate_8(db: sqlite_utils.Database) -> None:
    # Indexes for what the engine asks on every pass, sized by the work in progress rather
    # than by the journal: due work among unfinished entries only, and leases among the few
    # leased entries (the queries name the index's condition word for word, so SQLite uses it).
    db.execute("DROP INDEX IF EXISTS idx_entries_state_due_at")
    db.execute(
        "CREATE INDEX idx_entries_due ON entries (state, due_at)"
        " WHERE state IN ('pending', 'submitted', 'downloading')"
    )
    db.execute(
        "CREATE INDEX idx_entries_leased ON entries (lease_owner, lease_until)"
        " WHERE lease_owner IS NOT NULL"
    )
    db.execute("DROP INDEX IF EXISTS idx_deliveries_state_due_at")
    db.execute(
        "CREATE INDEX idx_deliveries_due ON deliveries (state, due_at)"
        " WHERE state IN ('pending', 'unconfirmed')"
    )
    db.execute(
        "CREATE INDEX idx_deliveries_leased ON deliveries (lease_owner, lease_until)"
        " WHERE lease_owner IS NOT NULL"
    )
    # Entries per state, kept by triggers in the transaction of every insert, move and
    # delete, so that counting reads seven rows instead of every entry.
    db.execute(
        "CREATE TABLE entry_counts (state TEXT PRIMARY KEY, entries INTEGER NOT NULL) WITHOUT ROWID"
    )
    db.execute(
        "INSERT INTO entry_counts (state, entries) SELECT state, count(*) FROM entries"
        " GROUP BY state"
    )
    db.execute(
        "INSERT OR IGNORE INTO entry_counts (state, entries) VALUES ('pending', 0),"
        " ('submitted', 0), ('downloading', 0), ('done', 0), ('failed', 0), ('rejected', 0),"
        " ('cancelled', 0)"
    )
    db.execute(
        "CREATE TRIGGER entries_count_insert AFTER INSERT ON entries BEGIN"
        " UPDATE entry_counts SET entries = entries + 1 WHERE state = NEW.state; END"
    )
    db.execute(
        "CREATE TRIGGER entries_count_delete AFTER DELETE ON entries BEGIN"
        " UPDATE entry_counts SET entries = entries - 1 WHERE state = OLD.state; END"
    )
    db.execute(
        "CREATE TRIGGER entries_count_move AFTER UPDATE OF state ON entries"
        " WHEN NEW.state IS NOT OLD.state BEGIN"
        " UPDATE entry_counts SET entries = entries - 1 WHERE state = OLD.state;"
        " UPDATE entry_counts SET entries = entries + 1 WHERE state = NEW.state; END"
    )


def _migrate_9(db: sqlite_utils.Database) -> None:
    # An enqueue writes only what its features need: the entry, its keys, its place among the
    # work in progress, and its event. What enqueue wrote besides is moved off its path.
    #
    # Event ids are never handed out twice: readers of the change feed remember the last id
    # they saw. AUTOINCREMENT kept that promise by writing its counter (sqlite_sequence) on
    # every event; now ``event_ids`` records the highest id a purge ever deleted, and an
    # event takes the next id above both it and the newest event left (see store.py). Its
    # starting value is AUTOINCREMENT's counter, which remembers ids purged before now.
    db.execute("CREATE TABLE event_ids (purged_through INTEGER NOT NULL)")
    db.execute(
        "INSERT INTO event_ids (purged_through) SELECT coalesce("
        "(SELECT seq FROM sqlite_sequence WHERE name = 'events'), 0)"
    )
    db.execute(
        "CREATE TABLE events_new (id INTEGER PRIMARY KEY, entry_id TEXT NOT NULL,"
        " at TEXT NOT NULL, from_state TEXT, to_state TEXT NOT NULL, attempt INTEGER NOT NULL,"
        " http_status INTEGER, error_code TEXT, detail TEXT, delivery_id TEXT,"
        " delivery_state TEXT)"
    )
    db.execute(
        "INSERT INTO events_new SELECT id, entry_id, at, from_state, to_state, attempt,"
        " http_status, error_code, detail, delivery_id, delivery_state FROM events"
    )
    db.execute("DROP TABLE events")
    db.execute("ALTER TABLE events_new RENAME TO events")
    db.execute("CREATE INDEX idx_events_entry_id_id ON events (entry_id, id)")
    # Counts: unfinished entries are counted from idx_entries_due (index-only, sized by the
    # work in progress); only finished states keep a maintained row, changed when an entry
    # moves into or out of them or is deleted, so an enqueue changes no count row.
    for trigger in ("insert", "delete", "move"):
        db.execute(f"DROP TRIGGER entries_count_{trigger}")
    db.execute(f"DELETE FROM entry_counts WHERE state NOT IN {_FINISHED}")
    db.execute(
        "CREATE TRIGGER entries_count_insert AFTER INSERT ON entries"
        f" WHEN NEW.state IN {_FINISHED} BEGIN"
        " UPDATE entry_counts SET entries = entries + 1 WHERE state = NEW.state; END"
    )
    db.execute(
        "CREATE TRIGGER entries_count_delete AFTER DELETE ON entries"
        f" WHEN OLD.state IN {_FINISHED} BEGIN"
        " UPDATE entry_counts SET entries = entries - 1 WHERE state = OLD.state; END"
    )
    db.execute(
        "CREATE TRIGGER entries_count_move AFTER UPDATE OF state ON entries"
        f" WHEN NEW.state IS NOT OLD.state AND (OLD.state IN {_FINISHED}"
        f" OR NEW.state IN {_FINISHED}) BEGIN"
        " UPDATE entry_counts SET entries = entries - 1 WHERE state = OLD.state;"
        " UPDATE entry_counts SET entries = entries + 1 WHERE state = NEW.state; END"
    )
    # Paging newest first by state or by template (the dashboard): these indexes hold finished
    # entries only; the unfinished ones are found through idx_entries_due.
    db.execute("DROP INDEX idx_entries_state_seq")
    db.execute("DROP INDEX idx_entries_template_seq")
    db.execute(
        f"CREATE INDEX idx_entries_state_seq ON entries (state, seq) WHERE state IN {_FINISHED}"
    )
    db.execute(
        f"CREATE INDEX idx_entries_template_seq ON entries (template, seq) WHERE state IN {_FINISHED}"
    )


def _migrate_10(db: sqlite_utils.Database) -> None:
    # Entries are only ever inserted pending (the one INSERT, in store.py, says 'pending'), and
    # the counts keep rows for finished states only: the insert trigger of migration 9 never
    # fired, yet its condition was evaluated on every enqueue (about 3 us of each). Moves and
    # deletes keep their triggers.
    db.execute("DROP TRIGGER entries_count_insert")


#: The finished states, as the partial indexes and the count triggers of migration 9 name them.
_FINISHED = "('done', 'failed', 'rejected', 'cancelled')"


#: Index ``i`` upgrades a journal from version ``i`` to ``i + 1``. Append only; never edit.
MIGRATIONS: Sequence[Callable[[sqlite_utils.Database], None]] = (
    _migrate_1,
    _migrate_2,
    _migrate_3,
    _migrate_4,
    _migrate_5,
    _migrate_6,
    _migrate_7,
    _migrate_8,
    _migrate_9,
    _migrate_10,
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
    import sqlite_utils  # only a journal to build or upgrade needs it

    # No plugins and no connection settings of sqlite-utils' own: it only writes the schema.
    db = sqlite_utils.Database(conn, recursive_triggers=False, execute_plugins=False)
    if version:
        log.info("upgrading journal %s from schema %d to %d", path, version, SCHEMA_VERSION)
    for step in range(version, SCHEMA_VERSION):
        log.debug("journal %s: schema %d to %d", path, step, step + 1)
        MIGRATIONS[step](db)
    conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")


# -- identity checks -------------------------------------------------------------------

#: SQLite's database header: the first 100 bytes of every database file.
HEADER_SIZE = 100


def check_file(path: Path) -> bool:
    """Check, from its raw bytes and before SQLite opens it, that ``path`` is a journal to open.

    Returns False when there is no file at all (so a new journal is to be made with
    :func:`create_journal`). Raises, writing nothing, for anything else that is not an outbox
    journal of this outbox or older: a folder, a file that is not SQLite, a SQLite database of
    another program, an empty file (outbox never takes one over: it may be a journal that lost
    its content), a journal cut short (shorter than its header says), or one from a newer
    outbox.
    """
    try:
        info = path.stat()
    except FileNotFoundError:
        _refuse_orphaned_wal(path)
        return False
    except OSError as exc:
        raise JournalError(f"cannot read the journal {path}: {exc.strerror}") from exc
    if not stat.S_ISREG(info.st_mode):
        raise NotAJournal(f"{path} is not a regular file; point --db at a journal file")
    try:
        with path.open("rb") as handle:
            header = handle.read(HEADER_SIZE)
    except OSError as exc:
        raise JournalError(f"cannot read the journal {path}: {exc.strerror}") from exc
    if not header:
        _refuse_empty_file(path)
    if not header.startswith(SQLITE_HEADER[: len(header)]):
        raise NotAJournal(
            f"{path} is not an outbox journal (not a SQLite file at all); it was left untouched"
        )
    if len(header) < HEADER_SIZE:
        raise JournalDamaged(
            f"{path} is damaged: it is only {len(header)} bytes, cut off inside SQLite's "
            f"{HEADER_SIZE}-byte header; it was left untouched. {_RESTORE}"
        )
    app_id = int.from_bytes(header[68:72], "big")
    if app_id != APPLICATION_ID:
        raise NotAJournal(
            f"{path} is a SQLite database but not an outbox journal "
            f"(tables: {_table_names(path)}); it was left untouched. Point --db at another file."
        )
    version = int.from_bytes(header[60:64], "big")
    if version > SCHEMA_VERSION:
        raise JournalTooNew(
            f"{path} was written by a newer outbox (journal schema {version}, this "
            f"outbox knows up to {SCHEMA_VERSION}); upgrade outbox to open it. "
            "The file was left untouched."
        )
    expected = _size_in_header(header)
    if expected is not None and info.st_size < expected and not _wal_size(path):
        raise JournalDamaged(
            f"{path} is damaged: it is {info.st_size:,} bytes, but its header says "
            f"{expected:,} (cut short by a crash, a full disk or an incomplete copy?); it was "
            f"left untouched. {_RESTORE}"
        )
    return True


_RESTORE = "Restore the journal from a backup, or move it aside to start a new one."


def _refuse_empty_file(path: Path) -> None:
    wal = _wal_size(path)
    if wal:
        raise JournalDamaged(
            f"{path} is damaged: it is empty (0 bytes) while {path.name}-wal beside it holds "
            f"{wal:,} bytes of changes, so the journal lost its main file's content (a crash, "
            f"a full disk or an incomplete copy?); both were left untouched. {_RESTORE}"
        )
    raise NotAJournal(
        f"{path} is an empty file (0 bytes), not an outbox journal: outbox makes its journal "
        "itself and never takes over an empty file, which may be a journal that lost its "
        "content in a crash. It was left untouched; delete it (or point --db at a path where "
        "nothing is) to start a new journal."
    )


def _refuse_orphaned_wal(path: Path) -> None:
    wal = _wal_size(path)
    if wal:
        raise JournalDamaged(
            f"{path} is missing, but {path.name}-wal beside it holds {wal:,} bytes of a "
            "journal's changes: the journal's main file was deleted or moved. Put it back; "
            f"to start a new journal instead, delete {path.name}-wal and {path.name}-shm. "
            "Nothing was created."
        )


def _wal_size(path: Path) -> int:
    """Bytes in the journal's write-ahead log (0 if there is none)."""
    try:
        return path.with_name(path.name + "-wal").stat().st_size
    except OSError:
        return 0


def _size_in_header(header: bytes) -> int | None:
    """The database size in bytes that SQLite's header records, if that record is valid
    (non-zero, and written by the same change as the header: see SQLite's file format)."""
    page_size = int.from_bytes(header[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    pages = int.from_bytes(header[28:32], "big")
    valid = header[24:28] == header[92:96]
    return page_size * pages if valid and pages and page_size >= 512 else None


def _table_names(path: Path) -> str:
    """The tables of a foreign SQLite file, for the message refusing it; read without locking,
    so nothing is created or changed beside it (not even a ``-shm`` file)."""
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro&immutable=1", uri=True)
        try:
            names = [
                row[0]
                for row in conn.execute(
                    "SELECT name FROM sqlite_master WHERE type='table' ORDER BY name"
                )
            ]
        finally:
            conn.close()
    except sqlite3.Error:
        return "unreadable"
    return ", ".join(names[:5]) + (", ..." if len(names) > 5 else "") if names else "none"


def create_journal(path: Path, synchronous: str) -> None:
    """Make a new, complete journal at ``path``, readable by its owner only.

    The journal is built under a hidden temporary name beside ``path`` (schema, identity,
    WAL mode), fsynced, and only then linked to ``path``, which it never replaces. So a file at
    a journal's path is always a whole journal: a crash while creating leaves no file (an empty
    one would be refused), and processes creating the same journal at once all end up with the
    one that was linked first.
    """
    ensure_folder(path.parent, mode=0o700)  # its name durable before the journal's
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(6)}.new")
    try:
        fd = os.open(temporary, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        os.close(fd)
        conn = sqlite3.connect(temporary, isolation_level=None)
        try:
            conn.execute(f"PRAGMA synchronous={synchronous}")
            for pragma in platform.journal_pragmas():
                conn.execute(pragma)
            conn.execute("BEGIN IMMEDIATE")
            upgrade(conn, path)
            conn.execute("COMMIT")
            conn.execute("PRAGMA journal_mode=WAL")
        finally:
            conn.close()
        fd = os.open(temporary, os.O_RDONLY | platform.BINARY)
        try:
            platform.sync_file(fd)
        finally:
            os.close(fd)
        try:
            if not hard_link(temporary, path):
                rename_if_free(temporary, path)
        except FileExistsError:
            pass  # another process made the journal first: use theirs
        fsync_dir(path.parent)
    except sqlite3.Error as exc:
        raise JournalError(f"cannot create the journal {path}: {exc}") from exc
    except OSError as exc:
        raise JournalError(f"cannot create the journal {path}: {exc.strerror or exc}") from exc
    finally:
        for leftover in ("", "-wal", "-shm", "-journal"):
            with contextlib.suppress(OSError):
                platform.remove(Path(f"{temporary}{leftover}"))


def damaged(path: Path, exc: sqlite3.Error) -> JournalDamaged | None:
    """The error to raise when SQLite says the journal is corrupt; None for other errors."""
    name = getattr(exc, "sqlite_errorname", "")
    if name.startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB")) or "malformed" in str(exc):
        return JournalDamaged(
            f"{path} is damaged (SQLite says: {exc}); it was left as it is. {_RESTORE}"
        )
    return None


def check_identity(conn: sqlite3.Connection, path: Path) -> None:
    """Confirm, through SQLite, what :func:`check_file` read in the header; write nothing.

    The header said this is an outbox journal, so a file SQLite cannot read is a damaged
    journal, not someone else's file.
    """
    try:
        app_id = conn.execute("PRAGMA application_id").fetchone()[0]
        version = schema_version(conn)
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.DatabaseError as exc:
        raise damaged(path, exc) or JournalDamaged(
            f"{path} cannot be read as a journal (SQLite says: {exc}); it was left as it is. "
            f"{_RESTORE}"
        ) from exc
    if app_id != APPLICATION_ID:  # changed between the header check and now
        raise NotAJournal(f"{path} is not an outbox journal; it was left untouched")
    if version > SCHEMA_VERSION:
        raise JournalTooNew(
            f"{path} was written by a newer outbox (journal schema {version}, this "
            f"outbox knows up to {SCHEMA_VERSION}); upgrade outbox to open it. "
            "The file was left untouched."
        )
