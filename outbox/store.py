"""The SQLite journal: enqueue, leased claims, state changes, the change feed and the caches.

Every state change is a compare-and-set ``UPDATE`` plus its event row in one ``BEGIN IMMEDIATE``
transaction, so a crash leaves either both or neither. Writers take the write lock up front
(``IMMEDIATE``), which makes SQLite's busy timeout apply and keeps ``database is locked`` from
reaching callers while other processes write to the same journal.

Durability comes in two strengths. A durable write (``enqueue``, a person's action, an entry
reaching ``done``, ``failed`` or ``rejected``) is fsynced before it returns, so nobody hears of it
before it would survive a power cut. A routine write of the engine (a lease, a render accepted,
"still rendering") is committed without an fsync: the write-ahead log keeps commits in order, so
it becomes durable with the next durable write, or with :meth:`Journal.sync`, and a power cut
before that only undoes the latest routine steps, which the engine repeats with the same keys.
:meth:`Journal.batch` puts many writes into one transaction: the engine commits everything one
pass produced at once (group commit).

What makes a file a journal, and the schema with its migrations, is in :mod:`outbox.migrations`.

The statements here are plain :mod:`sqlite3`, on purpose: every write is a few statements in
one ``BEGIN IMMEDIATE`` transaction (a compare-and-set ``UPDATE ... RETURNING`` plus its event
row), which sqlite-utils' table methods would neither shorten nor keep as cheap.
"""

from __future__ import annotations

import builtins
import json
import logging
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, Unpack

from . import ids, platform
from .clock import Clock, iso
from .deliveries import (
    UNFINISHED_DELIVERY_STATES,
    Delivery,
    DeliveryChanges,
    DeliveryRequest,
    DeliveryState,
    can_move_delivery,
)
from .errors import (
    EntryBusy,
    EntryNotFound,
    IllegalTransition,
    InvalidArgument,
    JournalBusy,
    JournalError,
    JournalFull,
    JournalMissing,
    LostRace,
)
from .ids import NewId
from .migrations import (
    SCHEMA_VERSION,
    check_file,
    check_identity,
    create_journal,
    damaged,
    schema_version,
    upgrade,
)
from .models import (
    UNFINISHED_STATES,
    Changes,
    Entry,
    EntryPage,
    Event,
    RenderRequest,
    State,
    assembled,
    can_move,
    key_conflict,
    load_data,
)
from .templates import CachedTemplate

log = logging.getLogger(__name__)

Durability = Literal["full", "fast"]
#: The most entries :meth:`Journal.page` returns at once.
MAX_PAGE = 500
#: A condition matching at most this many entries is walked by its own index when paging.
NARROW = 1000
_SYNCHRONOUS: dict[str, str] = {"full": "FULL", "fast": "NORMAL"}

#: Above every entry's ``seq`` (SQLite's largest integer).
_BEYOND_ANY_SEQ = 2**63 - 1

#: The write-ahead log is checkpointed and truncated once its file grows past this many bytes.
#: SQLite checkpoints every 1,000 pages (4 MB) on its own, but while other connections keep
#: reading, those checkpoints cannot start the log over and the file keeps growing; this bound
#: also caps the file SQLite leaves behind (``journal_size_limit``).
WAL_LIMIT = 16 * 1024 * 1024
#: Commits between two looks at the log's size (a ``stat``; a commit adds a few pages).
WAL_CHECK_EVERY = 64
#: How long a truncating checkpoint waits for readers to move on (milliseconds); a reader
#: still holding an old snapshot after that makes it give up until the next look.
WAL_READER_WAIT_MS = 200

#: The most memory SQLite's page cache may take per journal connection (KiB). SQLite's default
#: is 2,000 KiB, filled by every page a connection reads and emptied whenever another process
#: writes: in a long-running ``outbox run`` that was one part of SQLite's memory swinging
#: between 0.5 and 1.6 MB, in the heap. Pages read again come from the operating system's cache.
PAGE_CACHE_KIB = 256

#: Where SQLite keeps a statement's temporary tables and journal: in memory (``MEMORY``), except
#: around a purge or VACUUM (:meth:`Journal._temporary_data_in_files`). With SQLite's default
#: (files), every temporary table a statement opens, even one of four values, starts with a page
#: cache of its own, about 80 KiB: a change of state, which checks its value against the
#: finished states (the partial indexes, the finished-entry counts) with eight of them, took
#: 0.85 MB for an instant, and in a long-running ``outbox run`` those instants grew the heap.
#: In memory it takes 0.2 MB.
TEMP_STORE = "MEMORY"

#: The status fact recording the last full template sync (see ``templates_synced_at``).
TEMPLATES_SYNCED = "templates_synced"
#: Slugs whose cached template :meth:`Journal.template_and_sync` keeps between two changes.
TEMPLATES_KEPT = 256
#: The error code of a pending entry whose stored data today's limits refuse.
UNUSABLE_DATA = "unusable_data"

#: Columns that :meth:`Journal.transition` and :meth:`Journal.reschedule` may set.
_UPDATABLE = frozenset(Changes.__optional_keys__)
#: Columns that :meth:`Journal.move_delivery` and :meth:`Journal.reschedule_delivery` may set.
_DELIVERY_UPDATABLE = frozenset(DeliveryChanges.__optional_keys__)
_UNFINISHED_DELIVERIES = tuple(sorted(state.value for state in UNFINISHED_DELIVERY_STATES))

#: The conditions of the partial indexes of unfinished entries and deliveries (``idx_entries_due``
#: and ``idx_deliveries_due``), word for word: SQLite uses a partial index only for a query
#: that states its condition, and these indexes hold the work in progress, not the journal.
UNFINISHED_ENTRY = "state IN ('pending', 'submitted', 'downloading')"
UNFINISHED_DELIVERY = "state IN ('pending', 'unconfirmed')"
#: The condition of the partial indexes of finished entries (``idx_entries_state_seq`` and
#: ``idx_entries_template_seq``, for paging newest first), word for word. An enqueue writes
#: neither: a new entry is pending, and found among the unfinished through ``idx_entries_due``.
FINISHED_ENTRY = "state IN ('done', 'failed', 'rejected', 'cancelled')"


#: Entries per state: the finished from their maintained rows, the unfinished from one index
#: search each in the partial index of the work in progress.
_COUNTS = " UNION ALL ".join(
    [
        "SELECT state, entries FROM entry_counts",
        *(
            f"SELECT '{state.value}', count(*) FROM entries"
            f" WHERE {UNFINISHED_ENTRY} AND state = '{state.value}'"
            for state in sorted(UNFINISHED_STATES)
        ),
    ]
)


class Journal:
    """An open outbox journal. Thread-safe; several processes may open the same file.

    ``durability="full"`` (the default) fsyncs every commit, so an entry acknowledged by
    :meth:`enqueue` survives a power cut. ``"fast"`` (``synchronous=NORMAL``) survives a crash
    of the process but may lose the last commits on power loss, in exchange for cheaper writes.
    ``create=False`` opens an existing journal only (:class:`JournalMissing` otherwise).
    ``new_id`` makes the ids of new entries and deliveries (see :mod:`outbox.ids`).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        durability: Durability = "full",
        busy_timeout: float = 30.0,
        clock: Clock | None = None,
        create: bool = True,
        new_id: NewId = ids.new_id,
    ) -> None:
        if durability not in _SYNCHRONOUS:
            raise ValueError(f"durability must be 'full' or 'fast', not {durability!r}")
        self.path = Path(path)
        self.busy_timeout = busy_timeout
        self.clock = clock or Clock()
        self._new_id = new_id
        self._lock = threading.RLock()
        self._listeners: builtins.list[Callable[[Event], None]] = []
        self._durable_level = _SYNCHRONOUS[durability]
        self._synchronous = self._durable_level
        #: Monotonic time of the oldest commit not fsynced yet (None: all are on disk).
        self._unsynced_since: float | None = None
        self._batch: _Batch | None = None
        self._commits = 0
        #: While a reader pins the write-ahead log: looks to skip before waiting for it again.
        self._wal_backoff = 1
        self._wal_looks_to_skip = 0
        #: What :meth:`template_and_sync` read, by slug, valid while this connection's
        #: ``data_version`` is :attr:`_templates_read_at` (see there).
        self._templates_read: dict[str, tuple[CachedTemplate | None, str | None]] = {}
        self._templates_read_at: int | None = None
        self._identity: tuple[int, int] | None = _register_open_file(
            self.path, _SYNCHRONOUS[durability], create
        )
        try:
            self._conn = sqlite3.connect(
                self.path,
                timeout=busy_timeout,
                isolation_level=None,
                check_same_thread=False,
            )
        except sqlite3.Error as exc:
            self._release_open_file()
            raise JournalError(f"cannot open the journal {self.path}: {exc}") from exc
        self._conn.row_factory = sqlite3.Row
        try:
            check_identity(self._conn, self.path)
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute(f"PRAGMA synchronous={self._synchronous}")
            for pragma in platform.journal_pragmas():
                self._conn.execute(pragma)
            self._conn.execute(f"PRAGMA journal_size_limit={WAL_LIMIT}")
            self._conn.execute(f"PRAGMA cache_size=-{PAGE_CACHE_KIB}")
            self._conn.execute(f"PRAGMA temp_store={TEMP_STORE}")
            self._migrate()
        except BaseException:
            self._conn.close()
            self._release_open_file()
            raise

    # -- opening -------------------------------------------------------------------------

    def _migrate(self) -> None:
        # Opening an up-to-date journal must not need the write lock another process may hold.
        if self.schema_version == SCHEMA_VERSION:
            return
        with self._write() as conn:
            upgrade(conn, self.path)

    @property
    def schema_version(self) -> int:
        with self._read() as conn:
            return schema_version(conn)

    def close(self) -> None:
        with self._lock:
            self._conn.close()
            self._release_open_file()

    def _release_open_file(self) -> None:
        """Count this journal's file as no longer open in this process (see _OPEN_FILES)."""
        identity, self._identity = self._identity, None
        if identity is not None:
            _unregister_open_file(identity)

    # -- transactions --------------------------------------------------------------------

    @contextmanager
    def _write(
        self, *, durable: bool = True, keeps_templates: bool = False
    ) -> Iterator[sqlite3.Connection]:
        """One ``BEGIN IMMEDIATE`` transaction; SQLite errors become journal errors.

        ``durable``: fsynced when it commits (``synchronous=FULL``); otherwise a routine write,
        durable with the next durable one (see the module's docstring). Inside this thread's
        :meth:`batch` it is a savepoint of the batch's transaction instead, undone alone if it
        fails. ``keeps_templates``: the write touches neither the template cache nor the
        status facts, so what :meth:`template_and_sync` read stays true; any other write of
        this connection forgets it (SQLite's ``data_version`` tells of other connections' writes
        only).
        """
        with self._lock:
            if not keeps_templates:
                self._templates_read.clear()
            batch = self._batch
            if batch is not None:
                with self._savepoint(batch, durable=durable) as conn:
                    yield conn
                return
            level = self._durable_level if durable else "NORMAL"
            try:
                if level != self._synchronous:
                    self._conn.execute(f"PRAGMA synchronous={level}")
                    self._synchronous = level
                self._conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise self._translate(exc) from exc
            try:
                yield self._conn
                self._conn.execute("COMMIT")
            except BaseException as exc:
                if self._conn.in_transaction:
                    try:
                        self._conn.execute("ROLLBACK")
                    except sqlite3.Error:
                        log.warning("rollback failed on %s", self.path, exc_info=True)
                if isinstance(exc, sqlite3.Error):
                    raise self._translate(exc) from exc
                raise
            if level == "FULL":
                self._unsynced_since = None
            elif self._unsynced_since is None and level != self._durable_level:
                self._unsynced_since = self.clock.monotonic()
            self._commits += 1
            if self._commits % WAL_CHECK_EVERY == 0:
                self.keep_wal_small()

    @contextmanager
    def _savepoint(self, batch: _Batch, *, durable: bool) -> Iterator[sqlite3.Connection]:
        """A write inside a batch: undone alone if it fails, so the batch's others stay."""
        batch.durable_writes |= durable
        try:
            self._conn.execute("SAVEPOINT write")
        except sqlite3.Error as exc:
            raise self._translate(exc) from exc
        try:
            yield self._conn
            self._conn.execute("RELEASE write")
        except BaseException as exc:
            try:
                self._conn.execute("ROLLBACK TO write")
                self._conn.execute("RELEASE write")
            except sqlite3.Error:
                log.warning("rollback to a savepoint failed on %s", self.path, exc_info=True)
            if isinstance(exc, sqlite3.Error):
                raise self._translate(exc) from exc
            raise

    @contextmanager
    def batch(self, *, durable: bool = False) -> Iterator[None]:
        """Make every write of this thread inside the block one transaction: one commit, and
        at most one fsync, for many changes (group commit).

        ``durable``: fsync the commit. A durable write inside a routine batch makes the batch
        durable all the same (it is synced right after its commit). A write that fails inside
        is undone alone; an error escaping the block undoes them all. Other threads wait for
        the journal meanwhile, so a batch holds database work only, never a request.
        Listeners hear of the changes once they are committed (and synced, if durable).
        """
        with self._lock:
            if self._batch is not None:  # part of the batch around it
                yield
                return
            batch = _Batch(threading.get_ident())
            with self._write(durable=durable):
                self._batch = batch
                try:
                    yield
                finally:
                    self._batch = None
            if batch.durable_writes and not durable:
                self.sync()
        self._notify(batch.events)

    def _durable_after_all(self) -> None:
        """A routine write that turned out to finish entries: make it durable before anyone
        hears of it (at the end of this thread's batch, or now)."""
        batch = self._batch
        if batch is not None and batch.thread == threading.get_ident():
            batch.durable_writes = True
        else:
            self.sync()

    def sync(self, *, older_than: float = 0.0) -> bool:
        """Make every committed change durable now, if some are not yet and the oldest of them
        was committed ``older_than`` seconds ago or more; returns whether it synced.

        One fsync of the write-ahead log covers every commit before it: SQLite's recovery keeps
        the log up to the first frame that is not whole, so what is synced is a prefix.
        """
        with self._lock:
            since = self._unsynced_since
            if since is None or self.clock.monotonic() - since < older_than:
                return False
            wal = os.path.realpath(self.path) + "-wal"
            try:
                # Writable: Windows flushes a file's buffers only through a handle that may write.
                fd = os.open(wal, os.O_RDWR | platform.BINARY)
            except FileNotFoundError:
                pass  # checkpointed and removed: the checkpoint synced the database file
            else:
                try:
                    platform.sync_file(fd)
                finally:
                    os.close(fd)
            self._unsynced_since = None
            return True

    def keep_wal_small(self) -> bool:
        """Checkpoint and truncate the write-ahead log if it grew past :data:`WAL_LIMIT`;
        returns whether it is within the limit now.

        Runs after every :data:`WAL_CHECK_EVERY` commits of this journal. A passive checkpoint
        first copies what it can without waiting. Then the log is started over and truncated,
        waiting :data:`WAL_READER_WAIT_MS` at most for readers to move on; a reader that holds
        its snapshot longer than that keeps the log until a later look, and while it does, the
        looks that would wait for it again are spaced out (1, 2, 4 ... 64 looks), so a reader
        that never lets go does not slow the writer down. Nothing is lost either way: this only
        moves committed pages into the main file.
        """
        wal = self.path.with_name(self.path.name + "-wal")
        with self._lock:
            try:
                if wal.stat().st_size <= WAL_LIMIT:
                    return True
            except FileNotFoundError:
                return True
            try:
                _, logged, copied = self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                if copied < logged and self._wal_looks_to_skip > 0:
                    self._wal_looks_to_skip -= 1
                    return False
                self._conn.execute(f"PRAGMA busy_timeout={WAL_READER_WAIT_MS}")
                try:
                    busy = self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
                finally:
                    self._conn.execute(f"PRAGMA busy_timeout={int(self.busy_timeout * 1000)}")
            except sqlite3.Error as exc:
                log.debug("could not checkpoint %s: %s", self.path, exc)
                return False
            if busy:
                log.debug("a reader keeps the write-ahead log of %s from shrinking", self.path)
                self._wal_backoff = min(self._wal_backoff * 2, 64)
                self._wal_looks_to_skip = self._wal_backoff
                return False
            self._wal_backoff, self._wal_looks_to_skip = 1, 0
            return True

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                yield self._conn
            except sqlite3.Error as exc:
                raise self._translate(exc) from exc

    @contextmanager
    def _temporary_data_in_files(self) -> Iterator[None]:
        """Keep SQLite's temporary data in files for the block, as SQLite does by default: for
        statements that may touch much of the journal. A purge's delete journals the pages it
        changes until it ends (13 MB for 3,000 entries, in memory), VACUUM copies the whole
        journal. Outside a transaction only (SQLite cannot switch within one); inside a batch
        the block runs with temporary data in memory."""
        with self._lock:
            switch = not self._conn.in_transaction
            if switch:
                self._set_temp_store("FILE")
            try:
                yield
            finally:
                if switch:
                    self._set_temp_store(TEMP_STORE)

    def _set_temp_store(self, where: str) -> None:
        try:
            self._conn.execute(f"PRAGMA temp_store={where}")
        except sqlite3.Error as exc:
            raise self._translate(exc) from exc

    def _translate(self, exc: sqlite3.Error) -> JournalError:
        text = str(exc)
        corrupt = damaged(self.path, exc)
        if corrupt is not None:
            return corrupt
        if "locked" in text or "busy" in text:
            return JournalBusy(
                f"the journal {self.path} is locked by another process and stayed locked for "
                f"{self.busy_timeout:g} s; nothing was lost, try again when it is free"
            )
        if "full" in text:
            return JournalFull(
                f"the disk holding the journal {self.path} is full; nothing was written. "
                "Free some space and try again."
            )
        return JournalError(f"journal {self.path}: {text}")

    # -- enqueue -------------------------------------------------------------------------

    def enqueue(self, request: RenderRequest) -> Entry:
        """Add one entry, or return the existing entry with the same key and the same request
        (:class:`~outbox.errors.KeyConflict` if its request differs). Durable on return."""
        return self.enqueue_many([request])[0]

    def enqueue_many(self, requests: Sequence[RenderRequest]) -> builtins.list[Entry]:
        """Add many entries in one transaction; a key that exists with the same request returns
        its entry, one that exists with another request raises
        :class:`~outbox.errors.KeyConflict` and nothing of the batch is saved."""
        now = self.clock.now()
        stamp = iso(now)
        result: builtins.list[Entry] = []
        events: builtins.list[Event] = []
        with self._write(keeps_templates=True) as conn:
            for request in requests:
                entry = self._insert_entry(conn, request, now, stamp)
                if entry is None:
                    existing = _with_deliveries(
                        conn,
                        [
                            _entry(
                                conn.execute(
                                    "SELECT * FROM entries WHERE base_key = ?", (request.key,)
                                ).fetchone()
                            )
                        ],
                    )[0]
                    conflict = key_conflict(existing, request)
                    if conflict is not None:
                        raise conflict  # the whole batch is rolled back
                    result.append(existing)
                    continue
                events.append(
                    _append_event(
                        conn,
                        entry.id,
                        stamp,
                        None,
                        State.PENDING,
                        0,
                        detail="enqueued" + (f" from {request.source}" if request.source else ""),
                    )
                )
                if request.deliveries:
                    deliveries = [
                        _insert_delivery(
                            conn, entry.id, wanted, now, stamp, by_hand=False, new_id=self._new_id
                        )
                        for wanted in request.deliveries
                    ]
                    for delivery in deliveries:
                        events.append(
                            _delivery_event(
                                conn,
                                delivery,
                                stamp,
                                State.PENDING,
                                f"{delivery.describe()} asked for; made once the PDF is done",
                            )
                        )
                    entry = replace(entry, deliveries=tuple(deliveries))
                result.append(entry)
        self._notify(events)
        return result

    def _insert_entry(
        self, conn: sqlite3.Connection, request: RenderRequest, now: float, stamp: str
    ) -> Entry | None:
        """Insert a new pending entry; None if its key is taken (nothing was written).

        The entry is built from what was written, not read back. Its id is new: in the
        unlikely case that another process made the same one, another is drawn.
        """
        key = request.key
        assert key is not None, "a RenderRequest always has a key"
        while True:
            entry_id = self._new_id(now)
            inserted = conn.execute(
                _NEW_ENTRY,
                (
                    entry_id,
                    request.template,
                    request.data_json,
                    request.key,
                    request.key,
                    request.filename,
                    request.version,
                    now,
                    request.source,
                    stamp,
                    stamp,
                ),
            ).rowcount
            if inserted:
                return assembled(
                    Entry,
                    id=entry_id,
                    template=request.template,
                    data=request.data,
                    key=key,
                    base_key=key,
                    state=State.PENDING,
                    remote_status=None,
                    render_id=None,
                    attempts=0,
                    error=None,
                    error_code=None,
                    field_errors=None,
                    filename=request.filename,
                    version=request.version,
                    pdf_path=None,
                    pdf_bytes=None,
                    pdf_sha256=None,
                    source=request.source,
                    created_at=stamp,
                    updated_at=stamp,
                    due_at=now,
                    generation=1,
                    polls=0,
                    submitted_at=None,
                    download_url=None,
                    deliveries=(),
                    data_problem=None,
                )
            taken = conn.execute(
                "SELECT 1 FROM entries WHERE base_key = ?", (request.key,)
            ).fetchone()
            if taken is not None:
                return None
            log.info("entry id %s was taken already; drawing another", entry_id)

    # -- reading -------------------------------------------------------------------------

    def get(self, entry_id: str) -> Entry:
        """The entry with this id, or with this unique id prefix (at least 6 characters)."""
        with self._read() as conn:
            row = conn.execute("SELECT * FROM entries WHERE id = ?", (entry_id,)).fetchone()
            if (
                row is None
                and len(entry_id) >= 6
                and all(c in "0123456789abcdef" for c in entry_id)
            ):
                rows = conn.execute(
                    "SELECT * FROM entries WHERE id >= ? AND id < ? LIMIT 2",
                    (entry_id, entry_id + "g"),
                ).fetchall()
                row = rows[0] if len(rows) == 1 else None
            if row is None:
                raise EntryNotFound(f"no entry with id {entry_id!r} in {self.path}")
            return _with_deliveries(conn, [_entry(row)])[0]

    def find_by_key(self, key: str) -> Entry | None:
        """The entry enqueued with this idempotency key, if any."""
        with self._read() as conn:
            row = conn.execute("SELECT * FROM entries WHERE base_key = ?", (key,)).fetchone()
            return None if row is None else _with_deliveries(conn, [_entry(row)])[0]

    def list(
        self, *, state: State | str | None = None, limit: int | None = None
    ) -> builtins.list[Entry]:
        """Entries, newest first, optionally of one state and at most ``limit`` of them."""
        return builtins.list(self.stream(state=state, limit=limit))

    def stream(
        self, *, state: State | str | None = None, limit: int | None = None
    ) -> Iterator[Entry]:
        """Entries, newest first, read :data:`MAX_PAGE` at a time as the caller takes them.

        Memory stays flat at any journal size, and no read stays open between batches (a
        slow reader never holds back the write-ahead log). Each batch continues below the
        last one's ``seq``, walking the table (or the state's index) backwards, so every
        batch costs the same.
        """
        where = "" if state is None else f" AND state = ? AND {_state_class(State(state))}"
        params: builtins.list[Any] = [] if state is None else [State(state).value]
        left = limit
        below = _BEYOND_ANY_SEQ  # the first batch starts at the newest
        while left is None or left > 0:
            size = MAX_PAGE if left is None else min(MAX_PAGE, left)
            with self._read() as conn:
                rows = conn.execute(
                    _newest_unfinished_first(
                        f"SELECT * FROM entries WHERE seq < ?{where} ORDER BY seq DESC LIMIT ?",
                        None if state is None else _state_class(State(state)),
                        False,
                    ),
                    [below, *params, size],
                ).fetchall()
                batch = _with_deliveries(conn, [_entry(row) for row in rows])
            yield from batch
            if len(rows) < size:
                return
            below = rows[-1]["seq"]
            if left is not None:
                left -= len(rows)

    def page(
        self,
        *,
        state: State | str | None = None,
        template: str | None = None,
        key_prefix: str | None = None,
        after: str | None = None,
        limit: int = 50,
    ) -> EntryPage:
        """One page of entries: newest first, or by key when searching by ``key_prefix``.

        Keyset pagination: ``after`` is the previous page's ``next`` cursor, so a page costs an
        index walk of about ``limit`` rows wherever it lies in a journal of any size. With two
        conditions, the one that matches few entries (if any does) picks the index to walk.
        Finished entries are walked in the indexes by state and by template, unfinished ones
        are found in the index of the work in progress: so a page by template alone is two
        walks (finished, unfinished), merged newest first.
        """
        if not 1 <= limit <= MAX_PAGE:
            raise InvalidArgument(f"limit must be from 1 to {MAX_PAGE}, not {limit}")
        conditions: builtins.list[tuple[str, str, Any]] = []
        classes: builtins.list[str | None] = [None]  # the halves to walk (see the docstring)
        if state is not None:
            conditions.append(("state", "state = ?", State(state).value))
            classes = [_state_class(State(state))]
        elif template is not None:
            classes = [FINISHED_ENTRY, UNFINISHED_ENTRY]
        if template is not None:
            conditions.append(("template", "template = ?", template))
        by_key = bool(key_prefix)
        if key_prefix:
            # One lower bound (SQLite walks from just one), then the end of the prefix: keys are
            # printable ASCII, so every key starting with the prefix sorts below it + DEL.
            if after is not None and after >= key_prefix:
                conditions.append(("key", "base_key > ?", after))
            else:
                conditions.append(("key", "base_key >= ?", key_prefix))
            conditions.append(("key", "base_key < ?", key_prefix + "\x7f"))
        elif after is not None:
            if after.isascii() and after.isdigit():
                conditions.append(("seq", "seq < ?", int(after)))
            else:
                raise InvalidArgument(f"not a page cursor: {after!r}")
        with self._read() as conn:
            walk = None  # the column whose index to walk; None lets SQLite choose
            if len({column for column, _, _ in conditions} - {"seq"}) > 1:
                walk = self._narrow_condition(conn, conditions, classes) or (
                    "key" if by_key else None
                )
            # A '+' keeps SQLite from using that column's index, leaving only ``walk``'s.
            terms = [
                sql if walk is None or column in (walk, "seq") else "+" + sql
                for column, sql, _ in conditions
            ]
            order = " ORDER BY base_key" if by_key else " ORDER BY seq DESC"
            values = [value for _, _, value in conditions]
            halves = []
            for half in classes:
                where = terms if half is None else [*terms, half if walk != "key" else "+" + half]
                sql = "SELECT * FROM entries"
                if where:
                    sql += " WHERE " + " AND ".join(where)
                halves.append(_newest_unfinished_first(f"{sql}{order} LIMIT ?", half, by_key))
            if len(halves) == 1:
                sql, params = halves[0], [*values, limit + 1]
            else:
                sql = " UNION ALL ".join(f"SELECT * FROM ({half})" for half in halves)
                sql += f"{order} LIMIT ?"
                params = [*values, limit + 1] * len(halves) + [limit + 1]
            rows = conn.execute(sql, params).fetchall()
        more = len(rows) > limit
        rows = rows[:limit]
        cursor = None
        if more:
            cursor = rows[-1]["base_key"] if by_key else str(rows[-1]["seq"])
        return EntryPage([_entry(row) for row in rows], cursor)

    @staticmethod
    def _narrow_condition(
        conn: sqlite3.Connection,
        conditions: Sequence[tuple[str, str, Any]],
        classes: Sequence[str | None],
    ) -> str | None:
        """The state or template condition that matches few entries, if one provably does
        (counted in each half the page walks, through the index that half would walk)."""
        for column, sql, value in conditions:
            if column in ("state", "template"):
                found = sum(
                    conn.execute(
                        f"SELECT count(*) FROM (SELECT 1 FROM entries WHERE {sql}"
                        f"{'' if half is None else ' AND ' + half} LIMIT ?)",
                        (value, NARROW + 1),
                    ).fetchone()[0]
                    for half in classes
                )
                if found <= NARROW:
                    return column
        return None

    def templates_in_use(self) -> builtins.list[str]:
        """The templates that entries use, sorted: one index step per template among the
        finished entries, and those of the work in progress."""
        finished = f"entries INDEXED BY idx_entries_template_seq WHERE {FINISHED_ENTRY}"
        with self._read() as conn:
            rows = conn.execute(
                f"WITH RECURSIVE used(slug) AS (SELECT min(template) FROM {finished}"
                f" UNION ALL SELECT (SELECT min(template) FROM {finished} AND template > slug)"
                " FROM used WHERE slug IS NOT NULL) SELECT slug FROM used WHERE slug IS NOT NULL"
                f" UNION SELECT template FROM entries WHERE {UNFINISHED_ENTRY}"
            ).fetchall()
        return sorted(row[0] for row in rows)

    def counts(self) -> dict[State, int]:
        """How many entries are in each state (every state present, zeros included).

        Finished states are read from the ``entry_counts`` table, which triggers keep in the
        transaction of every move into or out of them and every delete; unfinished ones are
        counted in ``idx_entries_due``, which holds the work in progress only. So counting
        costs the same at a million entries as at ten, and an enqueue writes no count.
        """
        counts = {state: 0 for state in State}
        with self._read() as conn:
            for row in conn.execute(_COUNTS):
                counts[State(row[0])] = row[1]
        return counts

    def history(self, entry_id: str) -> builtins.list[Event]:
        """The entry's event journal, oldest first."""
        entry = self.get(entry_id)
        with self._read() as conn:
            rows = conn.execute(
                "SELECT * FROM events WHERE entry_id = ? ORDER BY id", (entry.id,)
            ).fetchall()
        return [_event(row) for row in rows]

    # -- claiming and state changes ------------------------------------------------------

    def claim_due(
        self,
        state: State,
        *,
        owner: str,
        lease_seconds: float,
        limit: int,
        horizon: float,
    ) -> builtins.list[Entry]:
        """Lease up to ``limit`` entries of ``state`` that are due, oldest due first.

        An entry is due when its ``due_at`` has passed, or lies more than ``horizon`` seconds
        ahead: no schedule is ever that far out, so the clock must have jumped backwards.
        A lease that expired (its holder crashed) or lies beyond the horizon is taken over.
        """
        now = self.clock.now()
        claimed: builtins.list[Entry] = []
        events: builtins.list[Event] = []
        with self._write(durable=False) as conn:
            rows = conn.execute(
                "UPDATE entries SET lease_owner = ?, lease_until = ? WHERE seq IN ("
                f" SELECT seq FROM entries WHERE {UNFINISHED_ENTRY} AND state = ?"
                " AND (due_at <= ? OR due_at > ?)"
                " AND (lease_until IS NULL OR lease_until <= ? OR lease_until > ?)"
                " ORDER BY due_at LIMIT ?) RETURNING *",
                (
                    owner,
                    now + lease_seconds,
                    State(state).value,
                    now,
                    now + horizon,
                    now,
                    now + horizon,
                    limit,
                ),
            ).fetchall()
            rows.sort(key=lambda row: row["due_at"])
            for row in rows:
                if State(state) is not State.PENDING:
                    claimed.append(_entry(row))
                    continue
                try:
                    data = load_data(row["data"])
                except InvalidArgument as exc:
                    events.append(self._quarantine(conn, row, str(exc), now))
                    continue
                claimed.append(_entry(row, data=data))
        if events:
            self._durable_after_all()  # a quarantine finishes entries: on disk before it is heard
        self._notify(events)
        return claimed

    def _quarantine(
        self, conn: sqlite3.Connection, row: sqlite3.Row, problem: str, now: float
    ) -> Event:
        """Reject a pending entry whose stored data today's enqueue would refuse.

        Only journals from before the enqueue limits can hold such data; sending it could
        crash the sender, so it is refused here, with the reason, and nothing is sent.
        """
        error = f"the stored data cannot be sent: {problem}; nothing was sent to Craftkit"
        stamp = iso(now)
        conn.execute(
            "UPDATE entries SET state = 'rejected', error = ?, error_code = ?, updated_at = ?,"
            " finished_at = ?, lease_owner = NULL, lease_until = NULL WHERE seq = ?",
            (error, UNUSABLE_DATA, stamp, now, row["seq"]),
        )
        log.error("entry %s rejected: %s", row["id"], error)
        return _append_event(
            conn,
            row["id"],
            stamp,
            State.PENDING,
            State.REJECTED,
            row["attempts"],
            error_code=UNUSABLE_DATA,
            detail=error,
        )

    def next_due_at(self, states: Sequence[State], *, horizon: float) -> float | None:
        """The earliest ``due_at`` among entries of ``states`` (None if there are none).

        A ``due_at`` more than ``horizon`` seconds ahead counts as now (the clock jumped).
        Leases are ignored: an entry someone else is working on may look due already.
        """
        now = self.clock.now()
        earliest: float | None = None
        with self._read() as conn:
            for state in states:
                # Two index lookups per state: the first due, and whether any lies beyond.
                value, beyond = conn.execute(
                    f"SELECT (SELECT min(due_at) FROM entries WHERE {UNFINISHED_ENTRY}"
                    " AND state = ?1 AND due_at <= ?2),"
                    f" EXISTS (SELECT 1 FROM entries WHERE {UNFINISHED_ENTRY}"
                    " AND state = ?1 AND due_at > ?2)",
                    (State(state).value, now + horizon),
                ).fetchone()
                if beyond:
                    value = now
                if value is not None and (earliest is None or value < earliest):
                    earliest = float(value)
        return earliest

    def next_due(self, state: State, *, horizon: float) -> Entry | None:
        """The entry of ``state`` due first (one whose ``due_at`` lies beyond ``horizon``
        seconds counts as due now: the clock jumped), or None when there is none."""
        now = self.clock.now()
        with self._read() as conn:
            row = conn.execute(
                f"SELECT * FROM entries WHERE {UNFINISHED_ENTRY} AND state = ? AND due_at > ?"
                " LIMIT 1",
                (State(state).value, now + horizon),
            ).fetchone()
            if row is None:
                row = conn.execute(
                    f"SELECT * FROM entries WHERE {UNFINISHED_ENTRY} AND state = ?"
                    " ORDER BY due_at LIMIT 1",
                    (State(state).value,),
                ).fetchone()
        return None if row is None else _entry(row)

    def lease_owners(self) -> builtins.list[str]:
        """Everyone holding a live lease right now."""
        now = self.clock.now()
        with self._read() as conn:
            # Both walk a partial index of leased rows only (lease_owner IS NOT NULL).
            rows = conn.execute(
                "SELECT lease_owner FROM entries WHERE lease_owner IS NOT NULL"
                " AND lease_until > ?1 UNION SELECT lease_owner FROM deliveries"
                " WHERE lease_owner IS NOT NULL AND lease_until > ?1",
                (now,),
            ).fetchall()
        return [row[0] for row in rows]

    def release_all(self, owner: str) -> int:
        """Give back every lease ``owner`` holds (it stopped, or it died); returns how many."""
        with self._write() as conn:
            released = 0
            for table in ("entries", "deliveries"):
                released += conn.execute(
                    f"UPDATE {table} SET lease_owner = NULL, lease_until = NULL"
                    " WHERE lease_owner = ?",
                    (owner,),
                ).rowcount
            return released

    def purge(
        self,
        finished_before: float,
        *,
        dry_run: bool = False,
        owed: Callable[[str, str | None, int], bool] | None = None,
        watched_ids: Sequence[str] = (),
    ) -> int:
        """Delete terminal entries (and their events) last changed before ``finished_before``.

        Unfinished entries (pending, submitted, downloading) are never touched. ``dry_run``
        only counts what would be deleted. ``owed(entry_id, source, last_event_id)`` keeps an
        entry that is still owed something (a drop folder's result file); it is asked about
        entries made from a file (with a ``source``) and those in ``watched_ids``.
        """
        cutoff = iso(finished_before)
        terminal = [s.value for s in State if s.is_terminal]
        marks = ",".join("?" for _ in terminal)
        # A done entry whose link or email is still on its way is not finished yet.
        busy = ",".join("?" for _ in _UNFINISHED_DELIVERIES)
        old = (
            f"state IN ({marks}) AND updated_at < ? AND id NOT IN"
            f" (SELECT entry_id FROM deliveries WHERE state IN ({busy}) AND entry_id IN"
            " (SELECT id FROM entries WHERE state = 'done'))"
        )
        params = [*terminal, cutoff, *_UNFINISHED_DELIVERIES]
        with self._temporary_data_in_files(), self._write() as conn:
            kept = self._kept(conn, old, params, owed, watched_ids)
            purgeable = f"SELECT id FROM entries WHERE {old} AND id NOT IN temp.purge_keep"
            if dry_run:
                count = int(
                    conn.execute(f"SELECT count(*) FROM ({purgeable})", params).fetchone()[0]
                )
                conn.execute("DELETE FROM temp.purge_keep")
                return count
            # Readers of the change feed remember the last event id they saw: the ids
            # deleted here are never handed out again (see _NEW_EVENT).
            conn.execute(
                "UPDATE event_ids SET purged_through = max(purged_through,"
                " coalesce((SELECT max(id) FROM events), 0))"
            )
            conn.execute(f"DELETE FROM events WHERE entry_id IN ({purgeable})", params)
            conn.execute(f"DELETE FROM deliveries WHERE entry_id IN ({purgeable})", params)
            cursor = conn.execute(f"DELETE FROM entries WHERE id IN ({purgeable})", params)
            conn.execute("DELETE FROM temp.purge_keep")
            if kept:
                log.debug("purge kept %d entries still owed a drop-folder result", kept)
            return cursor.rowcount

    @staticmethod
    def _kept(
        conn: sqlite3.Connection,
        old: str,
        params: builtins.list[Any],
        owed: Callable[[str, str | None, int], bool] | None,
        watched_ids: Sequence[str],
    ) -> int:
        """Fill ``temp.purge_keep`` with the old entries ``owed`` keeps; returns how many."""
        conn.execute("CREATE TEMP TABLE IF NOT EXISTS purge_keep (id TEXT PRIMARY KEY)")
        conn.execute("DELETE FROM temp.purge_keep")
        if owed is None:
            return 0
        conn.execute("CREATE TEMP TABLE IF NOT EXISTS purge_watched (id TEXT PRIMARY KEY)")
        conn.execute("DELETE FROM temp.purge_watched")
        conn.executemany(
            "INSERT OR IGNORE INTO temp.purge_watched (id) VALUES (?)", [(i,) for i in watched_ids]
        )
        rows = conn.execute(
            "SELECT id, source, (SELECT max(e.id) FROM events e WHERE e.entry_id = entries.id)"
            f" FROM entries WHERE {old} AND (source IS NOT NULL OR id IN"
            " (SELECT id FROM temp.purge_watched))",
            params,
        ).fetchall()
        keep = [(row[0],) for row in rows if owed(row[0], row[1], int(row[2] or 0))]
        conn.executemany("INSERT INTO temp.purge_keep (id) VALUES (?)", keep)
        conn.execute("DELETE FROM temp.purge_watched")
        return len(keep)

    def vacuum(self) -> tuple[int, int]:
        """Rewrite the journal without the pages purged entries left free, then truncate the
        write-ahead log the rewrite went through; returns the file's size before and after."""
        before = self.path.stat().st_size
        with self._temporary_data_in_files(), self._read() as conn:
            conn.execute("VACUUM")
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        return before, self.path.stat().st_size

    def transition(
        self,
        entry_id: str,
        source: State,
        target: State,
        *,
        owner: str | None = None,
        unleased: bool = False,
        attempts_were: int | None = None,
        http_status: int | None = None,
        detail: str | None = None,
        event_code: str | None = None,
        durable: bool = True,
        **changes: Unpack[Changes],
    ) -> Entry:
        """Move an entry from ``source`` to ``target`` and record the event, atomically.

        Raises :class:`IllegalTransition` if the transition table forbids the move. Then
        compare-and-set: fails with :class:`LostRace` if the entry is no longer in ``source``,
        no longer has ``attempts_were`` attempts (when given: a submission happened since it
        was read) or (when ``owner`` is given) is no longer leased by ``owner``, and with
        :class:`EntryBusy` when ``unleased`` is asked and anyone leases it right now.
        Releases the lease. ``durable=False`` makes it a routine write (see the module).
        """
        if not can_move(source, target):
            raise IllegalTransition(f"an entry cannot move from {source} to {target}")
        stamp = iso(self.clock.now())
        assignments, params = _assignments(changes)
        with self._write(durable=durable) as conn:
            row = self._compare_and_set(
                conn,
                entry_id,
                source,
                owner,
                "state = ?, updated_at = ?, lease_owner = NULL, lease_until = NULL" + assignments,
                [target.value, stamp, *params],
                unleased=unleased,
                attempts_were=attempts_were,
            )
            event = _append_event(
                conn,
                entry_id,
                stamp,
                source,
                target,
                row["attempts"],
                http_status=http_status,
                error_code=event_code if event_code is not None else changes.get("error_code"),
                detail=detail,
            )
        self._notify([event])
        return _entry(row)

    def reschedule(
        self,
        entry_id: str,
        source: State,
        *,
        owner: str | None = None,
        **changes: Unpack[Changes],
    ) -> Entry:
        """Update bookkeeping (``due_at``, poll count...) without a state change or event.

        Used for routine outcomes such as "still rendering", which would otherwise flood the
        event journal; a routine write (see the module). Releases the lease.
        """
        assignments, params = _assignments(changes)
        with self._write(durable=False) as conn:
            row = self._compare_and_set(
                conn,
                entry_id,
                source,
                owner,
                "lease_owner = NULL, lease_until = NULL" + assignments,
                params,
            )
        return _entry(row)

    def poll_sooner(self, *, waiting_at_most: float, by: float) -> int:
        """Bring forward by ``by`` seconds the first poll of submitted renders not polled yet
        and due within ``waiting_at_most`` seconds (those waiting for the render-time prior,
        now that a finished render told how long they take; never into the past). A routine
        write; returns how many."""
        now = self.clock.now()
        with self._write(durable=False) as conn:
            return conn.execute(
                "UPDATE entries SET due_at = max(?, due_at - ?)"
                f" WHERE {UNFINISHED_ENTRY} AND state = ? AND due_at > ? AND due_at <= ?"
                " AND polls = 0"
                " AND lease_owner IS NULL",
                (now, by, State.SUBMITTED.value, now, now + waiting_at_most),
            ).rowcount

    def release(self, entry_id: str, owner: str) -> None:
        """Give a lease back untouched (for example when a flush stops early)."""
        with self._write(durable=False) as conn:
            conn.execute(
                "UPDATE entries SET lease_owner = NULL, lease_until = NULL"
                " WHERE id = ? AND lease_owner = ?",
                (entry_id, owner),
            )

    def _compare_and_set(
        self,
        conn: sqlite3.Connection,
        entry_id: str,
        source: State,
        owner: str | None,
        assignments: str,
        params: Sequence[Any],
        *,
        unleased: bool = False,
        attempts_were: int | None = None,
    ) -> sqlite3.Row:
        sql = f"UPDATE entries SET {assignments} WHERE id = ? AND state = ?"
        where: builtins.list[Any] = [entry_id, source.value]
        if attempts_were is not None:
            sql += " AND attempts = ?"
            where.append(attempts_were)
        if owner is not None:
            sql += " AND lease_owner = ?"
            where.append(owner)
        if unleased:
            sql += " AND (lease_until IS NULL OR lease_until <= ?)"
            where.append(self.clock.now())
        row: sqlite3.Row | None = conn.execute(sql + " RETURNING *", [*params, *where]).fetchone()
        if row is not None:
            return row
        current = conn.execute(
            "SELECT state, lease_owner, attempts FROM entries WHERE id = ?", (entry_id,)
        ).fetchone()
        if current is None:
            raise EntryNotFound(f"no entry with id {entry_id!r} in {self.path}")
        if current["state"] != source.value:
            raise LostRace(
                f"entry {entry_id} is {current['state']}, not {source}; someone else moved it"
            )
        if attempts_were is not None and current["attempts"] != attempts_were:
            raise LostRace(
                f"entry {entry_id} was sent to Craftkit since it was read; read it again"
            )
        if unleased:
            raise EntryBusy(
                f"entry {entry_id} is being worked on right now (a request for it is on the "
                "wire); try again in a moment"
            )
        raise LostRace(f"entry {entry_id} is no longer leased by this process")

    def lease_holder(self, entry_id: str) -> str | None:
        """Who holds a live lease on the entry right now, if anyone."""
        now = self.clock.now()
        with self._read() as conn:
            row = conn.execute(
                "SELECT lease_owner FROM entries WHERE id = ? AND lease_until > ?",
                (entry_id, now),
            ).fetchone()
        return None if row is None else row[0]

    def integrity_check(self) -> str:
        """SQLite's ``PRAGMA integrity_check``: ``"ok"`` for a healthy journal."""
        with self._read() as conn:
            return "; ".join(row[0] for row in conn.execute("PRAGMA integrity_check"))

    # -- deliveries ----------------------------------------------------------------------

    def add_delivery(self, entry_id: str, request: DeliveryRequest) -> Delivery:
        """Add a delivery made by hand to a ``done`` entry, with its event; durable on return.

        Raises :class:`IllegalTransition` if the entry is not done (its PDF is what is shared).
        """
        now = self.clock.now()
        stamp = iso(now)
        with self._write() as conn:
            row = conn.execute("SELECT state FROM entries WHERE id = ?", (entry_id,)).fetchone()
            if row is None:
                raise EntryNotFound(f"no entry with id {entry_id!r} in {self.path}")
            if row["state"] != State.DONE.value:
                raise IllegalTransition(
                    f"entry {entry_id} is {row['state']}; a link can be made once it is done"
                )
            delivery = _insert_delivery(
                conn, entry_id, request, now, stamp, by_hand=True, new_id=self._new_id
            )
            event = _delivery_event(
                conn, delivery, stamp, State.DONE, f"{delivery.describe()} asked for by hand"
            )
        self._notify([event])
        return delivery

    def get_delivery(self, delivery_id: str) -> Delivery:
        """The delivery with this id."""
        with self._read() as conn:
            row = conn.execute("SELECT * FROM deliveries WHERE id = ?", (delivery_id,)).fetchone()
        if row is None:
            raise EntryNotFound(f"no delivery with id {delivery_id!r} in {self.path}")
        return _delivery(row)

    def recorded_share_ids(self, entry_id: str) -> set[str]:
        """The share ids the entry's deliveries have recorded: shares that are spoken for."""
        with self._read() as conn:
            rows = conn.execute(
                "SELECT share_id FROM deliveries WHERE entry_id = ? AND share_id IS NOT NULL",
                (entry_id,),
            ).fetchall()
        return {row[0] for row in rows}

    def claim_due_deliveries(
        self,
        *,
        owner: str,
        lease_seconds: float,
        limit: int,
        horizon: float,
        delivery_id: str | None = None,
    ) -> builtins.list[Delivery]:
        """Lease up to ``limit`` unfinished deliveries of ``done`` entries that are due.

        Due, leases and clock jumps as in :meth:`claim_due`. With ``delivery_id``, only that
        delivery is claimed (if it is due and free).
        """
        now = self.clock.now()
        only = " AND d.id = ?" if delivery_id is not None else ""
        with self._write(durable=False) as conn:
            rows = conn.execute(
                "UPDATE deliveries SET lease_owner = ?, lease_until = ? WHERE seq IN ("
                " SELECT d.seq FROM deliveries d JOIN entries e ON e.id = d.entry_id"
                f" WHERE d.{UNFINISHED_DELIVERY} AND e.state = 'done'"
                " AND (d.due_at <= ? OR d.due_at > ?)"
                " AND (d.lease_until IS NULL OR d.lease_until <= ? OR d.lease_until > ?)"
                f"{only} ORDER BY d.due_at LIMIT ?) RETURNING *",
                (
                    owner,
                    now + lease_seconds,
                    now,
                    now + horizon,
                    now,
                    now + horizon,
                    *([delivery_id] if delivery_id is not None else []),
                    limit,
                ),
            ).fetchall()
        rows.sort(key=lambda row: row["due_at"])
        return [_delivery(row) for row in rows]

    def next_delivery_due_at(self, *, horizon: float) -> float | None:
        """The earliest ``due_at`` of an unfinished delivery of a ``done`` entry (None if
        there is none); one more than ``horizon`` seconds ahead counts as now."""
        now = self.clock.now()
        with self._read() as conn:
            value = conn.execute(
                "SELECT min(CASE WHEN d.due_at > ? THEN ? ELSE d.due_at END)"
                " FROM deliveries d JOIN entries e ON e.id = d.entry_id"
                f" WHERE d.{UNFINISHED_DELIVERY} AND e.state = 'done'",
                (now + horizon, now),
            ).fetchone()[0]
        return None if value is None else float(value)

    def unfinished_deliveries(self) -> builtins.list[Delivery]:
        """Deliveries of ``done`` entries that are not finished yet, oldest first."""
        with self._read() as conn:
            rows = conn.execute(
                "SELECT d.* FROM deliveries d JOIN entries e ON e.id = d.entry_id"
                f" WHERE d.{UNFINISHED_DELIVERY} AND e.state = 'done' ORDER BY d.seq",
            ).fetchall()
        return [_delivery(row) for row in rows]

    def move_delivery(
        self,
        delivery_id: str,
        source: DeliveryState,
        target: DeliveryState,
        *,
        owner: str | None = None,
        keep_lease: bool = False,
        http_status: int | None = None,
        detail: str,
        **changes: Unpack[DeliveryChanges],
    ) -> Delivery:
        """Move a delivery from ``source`` to ``target`` and add ``detail`` to its entry's
        history, atomically; a compare-and-set like :meth:`transition`.

        Releases the lease unless ``keep_lease`` (the holder is about to send a request).
        Recording a share id another delivery holds raises :class:`LostRace`.
        """
        if not can_move_delivery(source, target):
            raise IllegalTransition(f"a delivery cannot move from {source} to {target}")
        stamp = iso(self.clock.now())
        assignments, params = _delivery_assignments(changes)
        lease = "" if keep_lease else ", lease_owner = NULL, lease_until = NULL"
        with self._write() as conn:
            try:
                row = self._delivery_compare_and_set(
                    conn,
                    delivery_id,
                    source,
                    owner,
                    "state = ?, updated_at = ?" + lease + assignments,
                    [target.value, stamp, *params],
                )
            except sqlite3.IntegrityError as exc:
                raise LostRace(
                    f"share {changes.get('share_id')} is already recorded by another delivery"
                ) from exc
            delivery = _delivery(row)
            state = conn.execute(
                "SELECT state FROM entries WHERE id = ?", (delivery.entry_id,)
            ).fetchone()[0]
            event = _delivery_event(
                conn,
                delivery,
                stamp,
                State(state),
                detail,
                http_status=http_status,
                error_code=changes.get("error_code"),
            )
        self._notify([event])
        return delivery

    def reschedule_delivery(
        self,
        delivery_id: str,
        source: DeliveryState,
        *,
        owner: str | None = None,
        **changes: Unpack[DeliveryChanges],
    ) -> Delivery:
        """Update a delivery's bookkeeping without an event; releases the lease."""
        assignments, params = _delivery_assignments(changes)
        with self._write(durable=False) as conn:
            row = self._delivery_compare_and_set(
                conn,
                delivery_id,
                source,
                owner,
                "lease_owner = NULL, lease_until = NULL" + assignments,
                params,
            )
        return _delivery(row)

    def release_delivery(self, delivery_id: str, owner: str) -> None:
        """Give a delivery's lease back untouched."""
        with self._write(durable=False) as conn:
            conn.execute(
                "UPDATE deliveries SET lease_owner = NULL, lease_until = NULL"
                " WHERE id = ? AND lease_owner = ?",
                (delivery_id, owner),
            )

    def _delivery_compare_and_set(
        self,
        conn: sqlite3.Connection,
        delivery_id: str,
        source: DeliveryState,
        owner: str | None,
        assignments: str,
        params: Sequence[Any],
    ) -> sqlite3.Row:
        sql = f"UPDATE deliveries SET {assignments} WHERE id = ? AND state = ?"
        where: builtins.list[Any] = [delivery_id, source.value]
        if owner is not None:
            sql += " AND lease_owner = ?"
            where.append(owner)
        row: sqlite3.Row | None = conn.execute(sql + " RETURNING *", [*params, *where]).fetchone()
        if row is not None:
            return row
        current = conn.execute(
            "SELECT state FROM deliveries WHERE id = ?", (delivery_id,)
        ).fetchone()
        if current is None:
            raise EntryNotFound(f"no delivery with id {delivery_id!r} in {self.path}")
        if current["state"] != source.value:
            raise LostRace(
                f"delivery {delivery_id} is {current['state']}, not {source}; someone else moved it"
            )
        raise LostRace(f"delivery {delivery_id} is no longer leased by this process")

    # -- change feed ---------------------------------------------------------------------

    def add_listener(self, listener: Callable[[Event], None]) -> Callable[[], None]:
        """Call ``listener(event)`` after every change this process commits; returns a remover.

        Listeners run in the thread that made the change, after the commit; an exception in a
        listener is logged and does not undo or block the change.
        """
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    def _notify(self, events: Sequence[Event]) -> None:
        batch = self._batch
        if batch is not None and batch.thread == threading.get_ident():
            batch.events.extend(events)  # heard once the batch is committed
            return
        for event in events:
            for listener in builtins.list(self._listeners):
                try:
                    listener(event)
                except Exception:
                    log.exception("a change listener failed on event %d", event.id)

    def events_after(self, event_id: int, *, limit: int = 1000) -> builtins.list[Event]:
        """Events of all entries with an id above ``event_id``, oldest first.

        Event ids only grow, so a reader that remembers the last id it saw gets every change,
        including those made by other processes.
        """
        with self._read() as conn:
            rows = conn.execute(
                "SELECT * FROM events WHERE id > ? ORDER BY id LIMIT ?", (event_id, limit)
            ).fetchall()
        return [_event(row) for row in rows]

    def last_event_id(self) -> int:
        with self._read() as conn:
            return int(conn.execute("SELECT coalesce(max(id), 0) FROM events").fetchone()[0])

    # -- journal-wide status -------------------------------------------------------------

    def set_status(self, name: str, value: Any) -> None:
        """Record a journal-wide fact (JSON-serialisable), e.g. the last connectivity check."""
        with self._write() as conn:
            conn.execute(
                "INSERT INTO status (name, value, updated_at) VALUES (?, ?, ?)"
                " ON CONFLICT(name) DO UPDATE SET value = excluded.value,"
                " updated_at = excluded.updated_at",
                (name, json.dumps(value), iso(self.clock.now())),
            )

    def forget_status(self, name: str) -> None:
        """Delete a journal-wide fact (one that stopped being true, like a worker's)."""
        with self._write() as conn:
            conn.execute("DELETE FROM status WHERE name = ?", (name,))

    def status(self) -> dict[str, Any]:
        """Every journal-wide fact, with ``NAME_at`` giving when it was recorded."""
        facts: dict[str, Any] = {}
        with self._read() as conn:
            for row in conn.execute("SELECT name, value, updated_at FROM status ORDER BY name"):
                facts[row["name"]] = json.loads(row["value"])
                facts[row["name"] + "_at"] = row["updated_at"]
        return facts

    # -- template cache ------------------------------------------------------------------

    def save_templates(
        self, templates: Sequence[CachedTemplate], *, replace_all: bool = False
    ) -> None:
        """Store cached templates in one transaction; ``replace_all`` (a full sync) also
        forgets the others and records when it happened (:meth:`templates_synced_at`).

        When a template's version differs from the one cached, the old version and the time of
        the change are kept (``previous_version``, ``changed_at``).
        """
        with self._write() as conn:
            for template in templates:
                conn.execute(
                    "INSERT INTO templates (slug, name, version, published, manifest, json_schema,"
                    " updated_at, synced_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
                    " ON CONFLICT(slug) DO UPDATE SET"
                    " previous_version = CASE WHEN templates.version IS excluded.version"
                    " THEN templates.previous_version ELSE templates.version END,"
                    " changed_at = CASE WHEN templates.version IS excluded.version"
                    " THEN templates.changed_at ELSE excluded.synced_at END,"
                    " name = excluded.name, version = excluded.version,"
                    " published = excluded.published, manifest = excluded.manifest,"
                    " json_schema = excluded.json_schema, updated_at = excluded.updated_at,"
                    " synced_at = excluded.synced_at",
                    (
                        template.slug,
                        template.name,
                        template.version,
                        int(template.published),
                        _json_or_null(template.manifest),
                        _json_or_null(template.json_schema),
                        template.updated_at,
                        template.synced_at,
                    ),
                )
            if replace_all:
                keep = [template.slug for template in templates]
                if keep:
                    marks = ",".join("?" for _ in keep)
                    conn.execute(f"DELETE FROM templates WHERE slug NOT IN ({marks})", keep)
                else:
                    conn.execute("DELETE FROM templates")
                # From now on a slug missing from the cache is one Craftkit did not list.
                conn.execute(
                    "INSERT INTO status (name, value, updated_at) VALUES (?, ?, ?)"
                    " ON CONFLICT(name) DO UPDATE SET value = excluded.value,"
                    " updated_at = excluded.updated_at",
                    (
                        TEMPLATES_SYNCED,
                        json.dumps({"templates": len(templates)}),
                        templates[0].synced_at if templates else iso(self.clock.now()),
                    ),
                )

    def templates_synced_at(self) -> str | None:
        """When the whole template cache was last replaced by a full sync (None: never).

        After a full sync the cache lists every template Craftkit has (as of then), so a slug
        missing from it does not exist there.
        """
        with self._read() as conn:
            row = conn.execute(
                "SELECT updated_at FROM status WHERE name = ?", (TEMPLATES_SYNCED,)
            ).fetchone()
        return None if row is None else str(row[0])

    def forget_template(self, slug: str) -> bool:
        """Drop a template from the cache (it no longer exists); returns whether it was there."""
        with self._write() as conn:
            return conn.execute("DELETE FROM templates WHERE slug = ?", (slug,)).rowcount > 0

    def cached_template(self, slug: str) -> CachedTemplate | None:
        """The cached template with this slug, if any."""
        with self._read() as conn:
            row = conn.execute("SELECT * FROM templates WHERE slug = ?", (slug,)).fetchone()
        return None if row is None else _template(row)

    def template_and_sync(self, slug: str) -> tuple[CachedTemplate | None, str | None]:
        """The cached template with this slug (if any) and :meth:`templates_synced_at`: what
        checking a request before it is queued asks, on every enqueue.

        Read once and then kept, until the journal changes: ``PRAGMA data_version`` (a look
        at a counter in shared memory, no table read) moves whenever another connection (of
        this process or another) commits, and this connection's own writes forget what was
        kept (see :meth:`_write`). So a template changed anywhere is seen by the next check,
        and a stream of enqueues reads it once. At most :data:`TEMPLATES_KEPT` slugs are kept.
        """
        with self._read() as conn:
            changes = conn.execute("PRAGMA data_version").fetchone()[0]
            if changes != self._templates_read_at or len(self._templates_read) >= TEMPLATES_KEPT:
                self._templates_read.clear()
                self._templates_read_at = changes
            known = self._templates_read.get(slug)
            if known is not None:
                return known
            row = conn.execute(
                "SELECT (SELECT updated_at FROM status WHERE name = ?) AS templates_synced,"
                " templates.* FROM (SELECT 1) LEFT JOIN templates ON templates.slug = ?",
                (TEMPLATES_SYNCED, slug),
            ).fetchone()
            synced = None if row["templates_synced"] is None else str(row["templates_synced"])
            known = (None if row["slug"] is None else _template(row)), synced
            self._templates_read[slug] = known
            return known

    def cached_templates(self) -> builtins.list[CachedTemplate]:
        """Every cached template, by slug."""
        with self._read() as conn:
            rows = conn.execute("SELECT * FROM templates ORDER BY slug").fetchall()
        return [_template(row) for row in rows]


def _state_class(state: State) -> str:
    """The partial-index condition that holds the entries of ``state``, word for word."""
    return UNFINISHED_ENTRY if state in UNFINISHED_STATES else FINISHED_ENTRY


def _newest_unfinished_first(sql: str, half: str | None, by_key: bool) -> str:
    """``sql`` (``SELECT * FROM entries WHERE ... ORDER BY seq DESC LIMIT ?``) for the
    unfinished entries: their ``seq`` values are sorted in idx_entries_due (which holds them),
    then only the page's rows are read, not every unfinished row (7x faster with 200,000
    pending). Other queries walk an index in their order already and are left as they are."""
    if half != UNFINISHED_ENTRY or by_key:
        return sql
    inner = sql.replace("SELECT * FROM", "SELECT seq FROM", 1)
    return f"SELECT * FROM entries WHERE seq IN ({inner}) ORDER BY seq DESC"


def _json_or_null(value: Any) -> str | None:
    return None if value is None else json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _template(row: sqlite3.Row) -> CachedTemplate:
    return CachedTemplate(
        slug=row["slug"],
        name=row["name"],
        version=row["version"],
        published=bool(row["published"]),
        manifest=json.loads(row["manifest"]) if row["manifest"] else None,
        json_schema=json.loads(row["json_schema"]) if row["json_schema"] else None,
        updated_at=row["updated_at"],
        synced_at=row["synced_at"],
        previous_version=row["previous_version"],
        changed_at=row["changed_at"],
    )


#: A new pending entry; nothing is written if its key (or, rarely, its id) is taken.
_NEW_ENTRY = (
    "INSERT INTO entries (id, template, data, base_key, key, filename, version, state, due_at,"
    " source, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, 'pending', ?, ?, ?, ?)"
    " ON CONFLICT DO NOTHING"
)
#: One event row. Its id is above the newest event's and above the highest id a purge ever
#: deleted: two index lookups, where AUTOINCREMENT wrote its counter's page on every event.
_NEW_EVENT = (
    "INSERT INTO events (id, entry_id, at, from_state, to_state, attempt, http_status,"
    " error_code, detail, delivery_id, delivery_state) VALUES (max(coalesce((SELECT max(id)"
    " FROM events), 0), (SELECT purged_through FROM event_ids)) + 1,"
    " ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


def _append_event(
    conn: sqlite3.Connection,
    entry_id: str,
    stamp: str,
    source: State | None,
    target: State,
    attempt: int,
    *,
    http_status: int | None = None,
    error_code: str | None = None,
    detail: str | None = None,
    delivery_id: str | None = None,
    delivery_state: DeliveryState | None = None,
) -> Event:
    """Write one event row; the event is built from what was written, not read back.

    Its id is the next above the newest event and above every id a purge deleted
    (``event_ids``), so no id is ever handed out twice (see :data:`_NEW_EVENT`).
    """
    cursor = conn.execute(
        _NEW_EVENT,
        (
            entry_id,
            stamp,
            source.value if source else None,
            target.value,
            attempt,
            http_status,
            error_code,
            detail,
            delivery_id,
            delivery_state.value if delivery_state else None,
        ),
    )
    assert cursor.lastrowid is not None
    return assembled(
        Event,
        id=cursor.lastrowid,
        entry_id=entry_id,
        at=stamp,
        from_state=source,
        to_state=target,
        attempt=attempt,
        http_status=http_status,
        error_code=error_code,
        detail=detail,
        delivery_id=delivery_id,
        delivery_state=delivery_state.value if delivery_state else None,
    )


def _insert_delivery(
    conn: sqlite3.Connection,
    entry_id: str,
    request: DeliveryRequest,
    now: float,
    stamp: str,
    *,
    by_hand: bool,
    new_id: NewId,
) -> Delivery:
    """Insert a new pending delivery. Its id is new: in the unlikely case that another process
    made the same one, another is drawn (the insert writes nothing then)."""
    row = None
    while row is None:
        row = conn.execute(
            "INSERT INTO deliveries (id, entry_id, channel, recipient, recipient_name, message,"
            " expires_at, by_hand, state, due_at, created_at, updated_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'pending', ?, ?, ?)"
            " ON CONFLICT(id) DO NOTHING RETURNING *",
            (
                new_id(now),
                entry_id,
                request.channel,
                request.to,
                request.recipient_name,
                request.message,
                request.expires_at,
                int(by_hand),
                now,
                stamp,
                stamp,
            ),
        ).fetchone()
    return _delivery(row)


def _delivery_event(
    conn: sqlite3.Connection,
    delivery: Delivery,
    stamp: str,
    entry_state: State,
    detail: str,
    *,
    http_status: int | None = None,
    error_code: str | None = None,
) -> Event:
    """An event of the delivery's entry that leaves the entry's state as it is."""
    return _append_event(
        conn,
        delivery.entry_id,
        stamp,
        entry_state,
        entry_state,
        delivery.attempts,
        http_status=http_status,
        error_code=error_code,
        detail=detail,
        delivery_id=delivery.id,
        delivery_state=delivery.state,
    )


def _with_deliveries(
    conn: sqlite3.Connection, entries: builtins.list[Entry]
) -> builtins.list[Entry]:
    """``entries`` with their deliveries filled in (one query per 500 entries)."""
    if not entries or conn.execute("SELECT 1 FROM deliveries LIMIT 1").fetchone() is None:
        return entries
    found: dict[str, builtins.list[Delivery]] = {}
    ids = [entry.id for entry in entries]
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        marks = ",".join("?" for _ in chunk)
        for row in conn.execute(
            f"SELECT * FROM deliveries WHERE entry_id IN ({marks}) ORDER BY entry_id, seq", chunk
        ):
            found.setdefault(row["entry_id"], []).append(_delivery(row))
    return [
        replace(entry, deliveries=tuple(found[entry.id])) if entry.id in found else entry
        for entry in entries
    ]


def _delivery_assignments(changes: DeliveryChanges) -> tuple[str, builtins.list[Any]]:
    unknown = set(changes) - _DELIVERY_UPDATABLE
    if unknown:
        raise ValueError(f"not updatable: {sorted(unknown)}")
    sql = "".join(f", {name} = ?" for name in changes)
    params = [
        json.dumps(value) if name == "field_errors" and value is not None else value
        for name, value in changes.items()
    ]
    return sql, params


def _delivery(row: sqlite3.Row) -> Delivery:
    field_errors = row["field_errors"]
    return Delivery(
        id=row["id"],
        entry_id=row["entry_id"],
        channel=row["channel"],
        to=row["recipient"],
        recipient_name=row["recipient_name"],
        message=row["message"],
        expires_at=row["expires_at"],
        state=DeliveryState(row["state"]),
        attempts=row["attempts"],
        share_id=row["share_id"],
        share_token=row["share_token"],
        share_url=row["share_url"],
        email_message_id=row["email_message_id"],
        sent_at=row["sent_at"],
        revoked_at=row["revoked_at"],
        error=row["error"],
        error_code=row["error_code"],
        field_errors=json.loads(field_errors) if field_errors else None,
        by_hand=bool(row["by_hand"]),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        due_at=row["due_at"],
        attempt_started_at=row["attempt_started_at"],
    )


def _assignments(changes: Changes) -> tuple[str, list[Any]]:
    unknown = set(changes) - _UPDATABLE
    if unknown:
        raise ValueError(f"not updatable: {sorted(unknown)}")
    sql = "".join(f", {name} = ?" for name in changes)
    params = [_column_value(name, value) for name, value in changes.items()]
    return sql, params


def _column_value(name: str, value: Any) -> Any:
    """A changed field as its column stores it: the JSON ones as JSON text."""
    if name == "data":
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    if name == "field_errors" and value is not None:
        return json.dumps(value)
    return value


def _entry(row: sqlite3.Row, *, data: dict[str, Any] | None = None) -> Entry:
    field_errors = row["field_errors"]
    problem = None
    if data is None:
        try:
            data = load_data(row["data"], strict=False)
        except InvalidArgument as exc:
            data, problem = {}, str(exc)
    return Entry(
        id=row["id"],
        template=row["template"],
        data=data,
        key=row["key"],
        base_key=row["base_key"],
        state=State(row["state"]),
        remote_status=row["remote_status"],
        render_id=row["render_id"],
        attempts=row["attempts"],
        error=row["error"],
        error_code=row["error_code"],
        field_errors=json.loads(field_errors) if field_errors else None,
        filename=row["filename"],
        version=row["version"],
        pdf_path=row["pdf_path"],
        pdf_bytes=row["pdf_bytes"],
        pdf_sha256=row["pdf_sha256"],
        source=row["source"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        due_at=row["due_at"],
        generation=row["generation"],
        polls=row["polls"],
        submitted_at=row["submitted_at"],
        download_url=row["download_url"],
        data_problem=problem,
    )


def _event(row: sqlite3.Row) -> Event:
    return Event(
        id=row["id"],
        entry_id=row["entry_id"],
        at=row["at"],
        from_state=State(row["from_state"]) if row["from_state"] else None,
        to_state=State(row["to_state"]),
        attempt=row["attempt"],
        http_status=row["http_status"],
        error_code=row["error_code"],
        detail=row["detail"],
        delivery_id=row["delivery_id"],
        delivery_state=row["delivery_state"],
    )


#: Journal files this process has open, by (device, inode), with how many connections each.
#: Reading such a file with open() and close() would drop every POSIX lock the process holds on
#: it, SQLite's included; another process would then find the journal unused when it closes it
#: and delete the write-ahead log that our connections still write to. So a file that is already
#: open here is never read outside SQLite.
_OPEN_FILES: dict[tuple[int, int], int] = {}
_OPEN_FILES_LOCK = threading.Lock()


@dataclass
class _Batch:
    """The writes of one :meth:`Journal.batch`: whose they are, and what they owe."""

    thread: int
    #: Some write inside wants to be durable.
    durable_writes: bool = False
    #: Events of the batch, heard by the listeners once it is committed.
    events: builtins.list[Event] = field(default_factory=builtins.list)


def _register_open_file(path: Path, synchronous: str, create: bool) -> tuple[int, int]:
    """Check (unless it is open here already) or create the journal file; count it open.

    Without ``create``, a missing journal raises :class:`JournalMissing` and nothing (no file,
    no folder) is made.
    """
    with _OPEN_FILES_LOCK:
        identity = _file_identity(path)
        if identity not in _OPEN_FILES:
            if not check_file(path):
                if not create:
                    raise JournalMissing(
                        f"no journal at {path} (nothing was created)", path=str(path)
                    )
                create_journal(path, synchronous)
            identity = _file_identity(path)
        assert identity is not None
        _OPEN_FILES[identity] = _OPEN_FILES.get(identity, 0) + 1
        return identity


def _unregister_open_file(identity: tuple[int, int]) -> None:
    with _OPEN_FILES_LOCK:
        _OPEN_FILES[identity] -= 1
        if not _OPEN_FILES[identity]:
            del _OPEN_FILES[identity]


def _file_identity(path: Path) -> tuple[int, int] | None:
    try:
        info = path.stat()
    except OSError:
        return None
    return info.st_dev, info.st_ino
