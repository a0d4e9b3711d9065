"""The :class:`Outbox` facade: the one class most users need.

It wires the journal, the Craftkit client, the dispatcher and the replay loop together. Every
method that only touches the journal works offline and without an API key.
"""

from __future__ import annotations

import builtins
import enum
import logging
import os
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import timedelta
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from . import outcomes, platform, worker
from .clock import Clock
from .config import DEFAULT_BASE_URL, Settings, default_downloads
from .deliveries import Delivery, DeliveryState, delivery_requests
from .errors import ConfigError, IllegalTransition, InvalidArgument, NoPdf, PdfNotReady
from .logs import ActivityLog
from .models import (
    UNFINISHED_STATES,
    Entry,
    EntryPage,
    Event,
    RenderRequest,
    State,
    key_conflict,
)
from .store import Durability, Journal
from .templates import CachedTemplate
from .validation import Checker, CheckOutcome, DataCheck, ValidationMode, validation_mode
from .worker import ErrorCallback, Supervisor

if TYPE_CHECKING:
    import httpx

    from .client import Share
    from .dashboard import DashboardServer
    from .engine import Engine, FlushReport

log = logging.getLogger(__name__)

#: Seconds a request on the wire may still take once :meth:`Outbox.stop` is called.
STOP_GRACE = 2.0


class Keep(enum.Enum):
    """The default of :meth:`Outbox.amend`'s arguments: keep what the entry has."""

    KEEP = "keep"


#: Leave this part of the request as it is (see :meth:`Outbox.amend`).
KEEP = Keep.KEEP


class Outbox:
    """An offline-first render queue backed by a SQLite journal at ``db``.

    ``api_key`` is only needed to talk to Craftkit (``flush``, ``start``); it is kept in memory
    and never written anywhere. ``downloads`` defaults to ``renders/`` beside the journal.
    ``validation`` says what :meth:`prepare` (so every enqueue) does with data that the cached
    template refuses: ``"reject"`` it (raise :class:`~outbox.errors.DataInvalid`), ``"warn"``
    (log it and queue anyway) or ``"off"`` (do not check). See :meth:`check`.

    ``transport`` replaces the network under every request to Craftkit, as httpx's own
    ``Client(transport=...)`` does: pass an ``httpx.MockTransport(handler)`` to answer requests
    in-process (tests, demos), or a tuned ``httpx.HTTPTransport``.

    The journal is created (with its folder) when there is none, as an app that enqueues
    wants. ``create=False`` opens an existing journal only: a missing one raises
    :class:`~outbox.errors.JournalMissing` and nothing is created — for code that only reads
    or acts on entries already there, so a wrong path cannot leave an empty journal behind.
    """

    def __init__(
        self,
        db: str | os.PathLike[str],
        *,
        api_key: str | None = None,
        base_url: str = DEFAULT_BASE_URL,
        downloads: str | os.PathLike[str] | None = None,
        durability: Durability = "full",
        busy_timeout: float = 30.0,
        settings: Settings | None = None,
        clock: Clock | None = None,
        validation: ValidationMode = "reject",
        transport: httpx.BaseTransport | None = None,
        create: bool = True,
    ) -> None:
        self.clock = clock or Clock()
        self.validation = validation_mode(validation)
        self._checker = Checker()
        self.settings = settings or Settings()
        self._engine: Engine | None = None
        self._engine_lock = threading.Lock()
        self._noted_uncached: set[str] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._supervisor: Supervisor | None = None
        self.journal = Journal(
            db, durability=durability, busy_timeout=busy_timeout, clock=self.clock, create=create
        )
        self.journal.add_listener(ActivityLog(self.journal))
        self.downloads = Path(downloads) if downloads is not None else default_downloads(db)
        self.base_url = base_url.rstrip("/")
        self._api_key = api_key
        self._transport = transport
        self._dashboards: builtins.list[DashboardServer] = []

    def __repr__(self) -> str:
        return f"<Outbox {str(self.journal.path)!r} base_url={self.base_url!r}>"

    @property
    def path(self) -> Path:
        """The journal file."""
        return self.journal.path

    @property
    def schema_version(self) -> int:
        """The journal's schema version (upgraded on open to the newest this outbox knows)."""
        return self.journal.schema_version

    # -- lifecycle -----------------------------------------------------------------------

    def close(self) -> None:
        """Stop background work and close the journal. Unfinished entries stay for next time."""
        while self._dashboards:
            self._dashboards.pop().close()
        self.stop()
        if self._engine is not None:
            self._engine.close()
            self._engine = None
        self.journal.close()

    def __enter__(self) -> Outbox:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- writing -------------------------------------------------------------------------

    def enqueue(
        self,
        template: str,
        data: Mapping[str, Any],
        *,
        key: str | None = None,
        filename: str | None = None,
        version: int | None = None,
        validation: ValidationMode | None = None,
        share: bool | Mapping[str, Any] | Sequence[Any] | None = None,
        email: str | Mapping[str, Any] | Sequence[Any] | None = None,
    ) -> Entry:
        """Save a render request; durable when this returns. Needs no network and no API key.

        Enqueueing the same request again under the same ``key`` returns the existing entry;
        a different request under a key already used raises
        :class:`~outbox.errors.KeyConflict` naming that entry (see
        :func:`~outbox.models.request_differences` for what "the same" means; change an
        entry's request with :meth:`amend`). Without a key one is generated; give one derived
        from the business event (``inspection-42``) so that a retried ``enqueue`` after a crash
        cannot create a second entry. The data is checked against the cached template first
        (see :meth:`prepare`; ``validation`` overrides the outbox's mode for this call).

        ``share`` and ``email`` hand the document to people once its PDF is done, each exactly
        once: ``share=True`` (or ``{"expires_at": "2026-07-01T00:00:00Z", "message": ...}``)
        makes a guest link, ``email={"to": ..., "recipient_name": ..., "message": ...,
        "expires_at": ...}`` (or just the address) sends it; a list asks for several. They
        are checked now (see the README's "Delivering documents").
        """
        return self.journal.enqueue(
            self.prepare(
                template,
                data,
                key=key,
                filename=filename,
                version=version,
                validation=validation,
                share=share,
                email=email,
            )
        )

    def enqueue_many(
        self, requests: Iterable[RenderRequest | Mapping[str, Any]]
    ) -> builtins.list[Entry]:
        """Save many requests in one transaction: all of them or, on error, none. Keys follow
        the rule of :meth:`enqueue` (a conflict anywhere saves nothing).

        Each item is a :class:`RenderRequest` (from :meth:`prepare`) or a mapping with
        ``template``, ``data`` and optionally ``key``, ``filename``, ``version``, ``share``,
        ``email``.
        """
        cache = _CacheView(self.journal)  # one lookup per template per batch
        return self.journal.enqueue_many(
            [
                item if isinstance(item, RenderRequest) else self._prepare_mapping(item, cache)
                for item in requests
            ]
        )

    def prepare(
        self,
        template: str,
        data: Mapping[str, Any],
        *,
        key: str | None = None,
        filename: str | None = None,
        version: int | None = None,
        source: str | None = None,
        validation: ValidationMode | None = None,
        share: bool | Mapping[str, Any] | Sequence[Any] | None = None,
        email: str | Mapping[str, Any] | Sequence[Any] | None = None,
    ) -> RenderRequest:
        """Check a request without saving it; raises :class:`InvalidArgument` naming the problem.

        ``share`` and ``email`` are checked as :meth:`enqueue` describes: addresses, messages
        of at most 2,000 characters, names of at most 200, expiry times in the future.

        ``source`` records where the request came from (for example a drop-folder file).
        The data is also checked against the cached template (see :meth:`check`), as
        ``validation`` (default: the outbox's mode) says; in ``"reject"`` mode bad data raises
        :class:`~outbox.errors.DataInvalid` listing Craftkit's field errors, unless ``key``
        already holds this very request (enqueueing it again returns that entry as it is).
        """
        return self._prepare(
            template,
            data,
            key,
            filename,
            version,
            source,
            validation,
            _CacheView(self.journal),
            share,
            email,
        )

    def _prepare(
        self,
        template: str,
        data: Mapping[str, Any],
        key: str | None,
        filename: str | None,
        version: int | None,
        source: str | None,
        validation: ValidationMode | None,
        cache: _CacheView,
        share: Any = None,
        email: Any = None,
    ) -> RenderRequest:
        deliveries = delivery_requests(share, email, now=self.clock.now())
        request = RenderRequest(
            template, _as_dict(data), key, filename, version, source, deliveries
        )
        self._check_name_fits(request.filename)
        mode = self.validation if validation is None else validation
        check = self._apply_check(request, key, mode, cache)
        if check is not None and not check.passed:
            log.warning("%s; queued anyway (validation=warn)", check.message())
        elif check is not None and check.message() and self._first_note(check):
            log.info("%s", check.message())
        return request

    def _check_name_fits(self, filename: str | None) -> None:
        """Refuse a ``filename`` longer than the downloads folder's file system allows (most
        take 255 bytes, which the request itself checks; eCryptfs takes 143), so that the
        render is never made only for its PDF to find no name."""
        if filename is None:
            return
        size, limit = len(filename.encode("utf-8")), platform.name_limit(self.downloads)
        if size > limit:
            raise InvalidArgument(
                f"filename {filename!r} is not allowed: it is {size} bytes in UTF-8; the file "
                f"system holding {self.downloads} allows at most {limit}"
            )

    def _first_note(self, check: DataCheck) -> bool:
        """Whether ``check``'s note is new: "template X is not cached" is said once per
        template, not once per entry of a batch or of a drop folder."""
        if check.outcome is not CheckOutcome.UNCACHED:
            return True
        if check.template in self._noted_uncached:  # said already (the usual case: no lock)
            return False
        with self._engine_lock:
            if check.template in self._noted_uncached:
                return False
            self._noted_uncached.add(check.template)
            return True

    def check_request(
        self, request: RenderRequest, *, validation: ValidationMode | None = None
    ) -> DataCheck | None:
        """Apply the data check to a prepared request, as ``enqueue`` does, and return it.

        For callers that show the outcome themselves (the ``enqueue`` command prints the
        note or warning): in ``"reject"`` mode bad data raises
        :class:`~outbox.errors.DataInvalid`; otherwise the :class:`DataCheck` comes back, or
        None when nothing was checked (``validation="off"``, or bad data under a key that
        already holds this very request: enqueueing returns that entry). Logs nothing.
        """
        mode = self.validation if validation is None else validation
        return self._apply_check(request, request.key, mode, _CacheView(self.journal))

    def _apply_check(
        self,
        request: RenderRequest,
        key: str | None,
        mode: ValidationMode,
        cache: _CacheView,
    ) -> DataCheck | None:
        """Check a prepared request's data as ``mode`` says (see :meth:`check_request`).

        ``key`` is the key the caller gave (None when outbox generated one, which no entry
        can have yet: no need to look it up).
        """
        if validation_mode(mode) == "off":
            return None
        check = self._check_against_cache(cache, request.template, request.data, request.version)
        if not check.passed and key is not None:
            # A key already in use decides first: the same request is that entry, whatever
            # its data; another request is a conflict, whatever the data says.
            existing = self.journal.find_by_key(key)
            if existing is not None:
                conflict = key_conflict(existing, request)
                if conflict is None:
                    return None
                raise conflict
        check.enforce(mode)
        return check

    def _check_against_cache(
        self, cache: _CacheView, template: str, data: Mapping[str, Any], version: int | None
    ) -> DataCheck:
        """The check of ``data``; a template missing from the cache is looked up among those
        the last full sync listed (it then does not exist at Craftkit)."""
        cached = cache.template(template)
        synced_at = cache.synced_at() if cached is None else None
        return self._checker.check(cached, template, data, version=version, synced_at=synced_at)

    def _prepare_mapping(self, item: Mapping[str, Any], cache: _CacheView) -> RenderRequest:
        if not isinstance(item, Mapping):
            raise InvalidArgument(
                f"each request must be a RenderRequest or a mapping, not {type(item).__name__}"
            )
        unknown = set(item) - {"template", "data", "key", "filename", "version", "share", "email"}
        if unknown:
            raise InvalidArgument(f"unknown request fields: {sorted(unknown)}")
        return self._prepare(
            item.get("template"),  # type: ignore[arg-type]
            item.get("data"),  # type: ignore[arg-type]
            item.get("key"),
            item.get("filename"),
            item.get("version"),
            None,
            None,
            cache,
            item.get("share"),
            item.get("email"),
        )

    def cancel(self, entry_id: str) -> Entry:
        """Cancel a ``pending`` entry. Entries Craftkit already accepted cannot be cancelled
        (:class:`~outbox.errors.IllegalTransition`); one whose request is on the wire right
        now raises :class:`~outbox.errors.EntryBusy`."""
        entry = self.journal.get(entry_id)
        return self._apply(entry, outcomes.cancel_requested(entry))

    def retry(self, entry_id: str) -> Entry:
        """Put a ``failed`` or ``rejected`` entry back to ``pending``.

        A failed render sticks to its idempotency key at Craftkit, so a failed entry gets a new
        derived key (``KEY~2``); a rejected one keeps its key, since nothing was created. The
        history records the old key and render.
        """
        entry = self.journal.get(entry_id)
        return self._apply(entry, outcomes.retry_requested(entry, now=self.clock.now()))

    def amend(
        self,
        entry_id: str,
        *,
        data: Mapping[str, Any] | Keep = KEEP,
        filename: str | None | Keep = KEEP,
        version: int | None | Keep = KEEP,
        validation: ValidationMode | None = None,
    ) -> Entry:
        """Replace an entry's request — its ``data``, ``filename`` or ``version`` (None: no
        filename, or the current version); what is left out stays — keeping its id and history.

        For fixing a request Craftkit refused (``rejected``), one that ``failed``, or one not
        sent yet. The entry goes (back) to ``pending`` with the new request, and its history
        lists each changed field, old and new. Its key stays while Craftkit provably holds
        nothing for it (never sent, rejected, cancelled before it was sent); a failed entry, or
        one whose earlier submission's outcome is unknown, moves to a new derived key
        (``KEY~2``), as :meth:`retry` does, so Craftkit cannot hand back the old render.
        Entries Craftkit accepted (submitted, downloading, done) raise
        :class:`~outbox.errors.IllegalTransition`; one whose request is on the wire right now
        :class:`~outbox.errors.EntryBusy`. The new request is checked like an :meth:`enqueue`
        (``validation`` overrides the outbox's mode); an unchanged one raises
        :class:`~outbox.errors.InvalidArgument`.
        """
        entry = self.journal.get(entry_id)
        request = RenderRequest(
            entry.template,
            entry.data if data is KEEP else _as_dict(data),
            entry.base_key,
            entry.filename if filename is KEEP else filename,
            entry.version if version is KEEP else version,
        )
        self._check_name_fits(request.filename)
        move = outcomes.amend_requested(entry, request, now=self.clock.now())
        mode = self.validation if validation is None else validation
        check = self._apply_check(request, None, mode, _CacheView(self.journal))
        if check is not None and not check.passed:
            log.warning("%s; amended anyway (validation=warn)", check.message())
        return self._apply(entry, move)

    def _apply(self, entry: Entry, move: outcomes.Move) -> Entry:
        """Record a person's move, decided on ``entry`` as read; if a worker holds the entry
        right now (:class:`~outbox.errors.EntryBusy`) or moved it or sent it since
        (:class:`~outbox.errors.LostRace`), nothing changes."""
        return self.journal.transition(
            entry.id,
            entry.state,
            move.target,
            unleased=True,
            attempts_were=entry.attempts,
            detail=move.detail,
            **move.changes,
        )

    def purge(self, older_than: float | timedelta, *, dry_run: bool = False) -> int:
        """Delete finished entries (done, failed, rejected, cancelled) untouched for longer
        than ``older_than`` (seconds or a timedelta); returns how many. Never touches
        pending, submitted or downloading entries, never an entry whose drop-folder result
        file is not written yet (``results/NAME.result.json``: it would never be), and never
        deletes PDFs. ``dry_run`` only counts them."""
        from .resultfiles import results_owed  # the drop folder's side lives there

        seconds = older_than.total_seconds() if isinstance(older_than, timedelta) else older_than
        if seconds < 0:
            raise InvalidArgument("older_than must not be negative")
        owed, aliased = results_owed(self)
        return self.journal.purge(
            self.clock.now() - seconds, dry_run=dry_run, owed=owed, watched_ids=aliased
        )

    def vacuum(self) -> tuple[int, int]:
        """Give the space of purged entries back to the disk; returns the journal's size in
        bytes before and after. Rewrites the journal: writers wait meanwhile, and it needs
        free space the size of the journal. Not needed to keep the journal bounded (purged
        space is reused), only to shrink it."""
        return self.journal.vacuum()

    # -- talking to Craftkit -------------------------------------------------------------

    def flush(
        self,
        timeout: float = 30.0,
        *,
        progress: Callable[[dict[State, int]], None] | None = None,
        stop: threading.Event | None = None,
    ) -> FlushReport:
        """Submit everything pending, follow the renders and download the PDFs.

        Returns when nothing is left to do, when the API is unreachable or refuses the key, or
        after ``timeout`` seconds; unfinished work stays in the journal for next time.
        ``progress`` is called with the counts per state after every pass. Setting ``stop``
        (from another thread) ends this flush early, as :meth:`stop` ends one without it:
        requests on the wire get :data:`STOP_GRACE` seconds to finish, their outcomes are
        recorded, and nothing stays leased. Every request ends by the flush's deadline,
        however slowly the server answers.
        """
        engine = self._get_engine()
        if self._thread is None:
            engine.client.resume()  # requests cut short by an earlier stop() may run again
        if stop is None:
            if self._thread is None:
                self._stop.clear()  # a stop() that ended an earlier flush must not end this one
            stop = self._stop
        return engine.flush(timeout, stop=stop, progress=progress)

    def run(self, *, on_error: ErrorCallback | None = None) -> None:
        """Work in the calling thread until :meth:`stop` is called (from another thread or a
        signal handler): submit, poll and download, waiting out outages.

        The work is supervised as in :meth:`start`: an error never ends it. A :meth:`stop`
        that comes before the work begins (a signal while the command starts up) ends it as
        soon as it begins; once the run has ended, the next one starts afresh.
        """
        try:
            supervisor = self._supervise(on_error, kind="run")
            supervisor.run(self._stop)
        finally:
            self._stop.clear()

    def start(self, *, on_error: ErrorCallback | None = None) -> None:
        """Do :meth:`run` on a background thread (for GUI and other long-running apps).

        The worker is supervised: an exception escaping the work (a journal locked for longer
        than ``busy_timeout``, a bug) is logged with its traceback, kept as
        :attr:`worker_error`, passed to ``on_error(exc)`` (called in the worker's thread), and
        recorded in the journal for ``outbox status``; the work then starts again after a
        backoff (``Schedule.worker_restart``: 1 s doubling up to a minute). It never dies
        silently. Raises :class:`~outbox.errors.ConfigError` at once if there is no API key.
        """
        if self._thread is not None and self._thread.is_alive():
            return
        supervisor = self._supervise(on_error, kind="start")
        self._stop.clear()
        self._thread = threading.Thread(
            target=supervisor.run, args=(self._stop,), name="outbox", daemon=True
        )
        self._thread.start()

    @property
    def worker_error(self) -> Exception | None:
        """The last exception that escaped the background work (:meth:`start` or :meth:`run`),
        or None; the worker carried on after it."""
        return self._supervisor.last_error if self._supervisor is not None else None

    def _supervise(self, on_error: ErrorCallback | None, *, kind: str) -> Supervisor:
        """The worker that runs the engine, with its status fact: recorded when it starts,
        renewed every ``Schedule.heartbeat`` seconds while it works or waits (with the next
        due time), updated on errors, removed when it stops."""
        engine = self._get_engine()
        engine.client.resume()  # requests cut short by an earlier stop() may run again
        name = worker.fact_name()

        def record(fact: dict[str, Any] | None) -> None:
            if fact is None:
                self.journal.forget_status(name)
            else:
                self.journal.set_status(name, fact)

        self._supervisor = Supervisor(
            engine.run,
            clock=self.clock,
            backoff=self.settings.schedule.worker_restart,
            record=record,
            on_error=on_error,
            kind=kind,
            heartbeat=self.settings.schedule.heartbeat,
            next_due=engine.next_due,
        )
        engine.pulse = engine.gate.pulse = self._supervisor.beat
        return self._supervisor

    def stop(self, timeout: float | None = None) -> None:
        """Ask :meth:`run` / :meth:`start` work to stop, and wait for the background thread.

        Requests on the wire get :data:`STOP_GRACE` seconds to finish, then are cut short
        (safe: a submit is repeated with the same key, a download starts over); leases are
        given back on :meth:`close`.
        """
        self._stop.set()
        if self._engine is not None:
            self._engine.client.interrupt(STOP_GRACE)
            self._engine.nudge()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    # -- delivering by hand ----------------------------------------------------------------

    def share(
        self,
        entry_id: str,
        *,
        expires_at: str | None = None,
        message: str | None = None,
        timeout: float = 30.0,
    ) -> Delivery:
        """Make a guest link to a ``done`` entry's PDF now, and return the delivery holding it.

        The link is journalled like a requested one and made exactly once: if the answer is
        lost, the delivery stays ``unconfirmed`` and is reconciled (adopted, not made again)
        here or by the next flush or run. ``state`` says how it stands: ``delivered`` with
        ``share_url``, or still ``pending``/``unconfirmed`` (offline, say) with ``error``.
        """
        engine = self._get_engine()
        entry = self.journal.get(entry_id)
        outcomes.share_requested(entry)
        wanted = {
            name: value
            for name, value in (("expires_at", expires_at), ("message", message))
            if value is not None
        }
        request = delivery_requests(wanted or True, None, now=self.clock.now())[0]
        delivery = self.journal.add_delivery(entry.id, request)
        return engine.deliver_now(delivery.id, timeout)

    def shares(self, entry_id: str, *, timeout: float = 30.0) -> builtins.list[Share]:
        """Every share of the entry's render at Craftkit (newest first, revoked ones included,
        with click counts); needs the network."""
        engine = self._get_engine()
        render_id = self._render_id(entry_id)
        return engine.client.list_shares(render_id, deadline=self.clock.monotonic() + timeout)

    def revoke(self, entry_id: str, share_id: str, *, timeout: float = 30.0) -> str | None:
        """Revoke a share of the entry's render, so its link no longer opens; returns when
        (Craftkit's ``revokedAt``). A delivery that recorded the share becomes ``revoked``.
        An unknown or already revoked share raises :class:`~outbox.errors.NotFound`."""
        engine = self._get_engine()
        render_id = self._render_id(entry_id)
        deadline = self.clock.monotonic() + timeout
        revoked_at = engine.client.revoke_share(render_id, share_id, deadline=deadline)
        for delivery in self.journal.get(entry_id).deliveries:
            if delivery.share_id == share_id and delivery.state is DeliveryState.DELIVERED:
                move = outcomes.revoke_recorded(delivery, revoked_at, now=self.clock.now())
                self.journal.move_delivery(
                    delivery.id,
                    delivery.state,
                    move.target,
                    http_status=move.http_status,
                    detail=move.detail or "",
                    **move.changes,
                )
        return revoked_at

    def _render_id(self, entry_id: str) -> str:
        entry = self.journal.get(entry_id)
        if entry.render_id is None:
            raise IllegalTransition(
                f"entry {entry.id} is {entry.state} and has no render at Craftkit yet"
            )
        return entry.render_id

    def _get_engine(self) -> Engine:
        with self._engine_lock:
            if self._engine is None:
                from .engine import Engine  # only who talks to Craftkit loads the network stack

                if not self._api_key:
                    raise ConfigError(
                        "no Craftkit API key: pass api_key= (the CLI reads CRAFTKIT_API_KEY)"
                    )
                self._engine = Engine(
                    self.journal,
                    api_key=self._api_key,
                    base_url=self.base_url,
                    downloads=self.downloads,
                    settings=self.settings,
                    clock=self.clock,
                    transport=self._transport,
                    purge=self.purge,
                )
            return self._engine

    # -- reading -------------------------------------------------------------------------

    def get(self, entry_id: str) -> Entry:
        """The entry with this id (or unique id prefix of 6+ characters)."""
        return self.journal.get(entry_id)

    def pdf(self, entry_id: str) -> Path:
        """The verified PDF of a done entry, on disk. Raises :class:`~outbox.errors.PdfNotReady`
        while the entry is unfinished, and :class:`~outbox.errors.NoPdf` when it never will
        have one (failed, rejected, cancelled) or its file was deleted since."""
        entry = self.journal.get(entry_id)
        if not entry.state.is_terminal:
            raise PdfNotReady(
                f"entry {entry.id} is {entry.state}: no PDF yet; `outbox flush` (or a running "
                "`outbox run`) finishes it",
                entry_id=entry.id,
                state=entry.state.value,
            )
        if entry.state is not State.DONE or entry.pdf_path is None:
            raise NoPdf(
                f"entry {entry.id} is {entry.state}: it has no PDF"
                + (f" ({entry.error})" if entry.error else ""),
                entry_id=entry.id,
                state=entry.state.value,
            )
        path = Path(entry.pdf_path)
        if not path.is_file():
            raise NoPdf(
                f"entry {entry.id} is done, but its PDF {path} is gone (moved or deleted)",
                entry_id=entry.id,
                state=entry.state.value,
            )
        return path

    def find_by_key(self, key: str) -> Entry | None:
        """The entry first enqueued with this idempotency key, if any (a retry's ``KEY~2``
        still finds it under ``KEY``)."""
        return self.journal.find_by_key(key)

    def list(
        self, state: State | str | None = None, limit: int | None = None
    ) -> builtins.list[Entry]:
        """Entries, newest first; all of them unless ``limit``."""
        return self.journal.list(state=state, limit=limit)

    def stream(self, state: State | str | None = None, limit: int | None = None) -> Iterator[Entry]:
        """The entries :meth:`list` returns, read a few hundred at a time as you iterate:
        memory stays flat however large the journal is (``outbox list`` prints this way)."""
        return self.journal.stream(state=state, limit=limit)

    def page(
        self,
        *,
        state: State | str | None = None,
        template: str | None = None,
        key_prefix: str | None = None,
        after: str | None = None,
        limit: int = 50,
    ) -> EntryPage:
        """One page of entries, newest first (by key when searching by ``key_prefix``).

        Pass the returned page's ``next`` as ``after`` for the page after it; every page
        costs about the same, however large the journal.
        """
        return self.journal.page(
            state=state, template=template, key_prefix=key_prefix, after=after, limit=limit
        )

    def counts(self) -> dict[State, int]:
        """Entries per state, zeros included."""
        return self.journal.counts()

    def history(self, entry_id: str) -> builtins.list[Event]:
        """The entry's event journal, oldest first."""
        return self.journal.history(entry_id)

    def on_change(self, callback: Callable[[Event], None]) -> Callable[[], None]:
        """Call ``callback(event)`` after every change this process makes; returns a remover.

        The callback runs in the thread that made the change (the background worker after
        :meth:`start`), so GUI apps should hand it over to their UI thread.
        """
        return self.journal.add_listener(callback)

    def changes(
        self,
        since: int | None = None,
        *,
        timeout: float | None = None,
        poll_interval: float = 0.25,
        stop: threading.Event | None = None,
    ) -> Iterator[Event]:
        """Yield events as they happen, including changes made by other processes.

        Starts after event id ``since`` (default: from now on). Changes made in this process
        arrive at once; other processes' within ``poll_interval``. Stops once ``timeout``
        seconds pass without an event, or within ``poll_interval`` of ``stop`` being set;
        runs forever if neither is given.
        """
        start = self.journal.last_event_id() if since is None else since
        return self._follow(start, timeout, poll_interval, stop)

    def events_after(self, event_id: int, *, limit: int = 1000) -> builtins.list[Event]:
        """Up to ``limit`` events of all entries with an id above ``event_id``, oldest first,
        whichever process made them; returns at once (:meth:`changes` waits for more).

        Event ids only grow and are never handed out twice, even after a purge, so a reader
        that keeps the last id it handled (with :meth:`set_status`, say) misses no change.
        """
        return self.journal.events_after(event_id, limit=limit)

    def _follow(
        self,
        last: int,
        timeout: float | None,
        poll_interval: float,
        stop: threading.Event | None,
    ) -> Iterator[Event]:
        wake = threading.Event()
        remove = self.journal.add_listener(lambda _event: wake.set())
        try:
            idle_since = self.clock.monotonic()
            while stop is None or not stop.is_set():
                wake.clear()
                batch = self.journal.events_after(last)
                if batch:
                    for event in batch:
                        last = event.id
                        yield event
                    idle_since = self.clock.monotonic()
                    continue
                wait = poll_interval
                if timeout is not None:
                    remaining = timeout - (self.clock.monotonic() - idle_since)
                    if remaining <= 0:
                        return
                    wait = min(wait, remaining)
                self.clock.wait(wake, wait)
        finally:
            remove()

    def next_due(self) -> float | None:
        """When the earliest unfinished entry is next due (wall-clock seconds; a time in the
        past means now), or None when nothing is unfinished. Works offline."""
        return self.journal.next_due_at(
            sorted(UNFINISHED_STATES), horizon=self.settings.schedule.horizon
        )

    def status(self) -> dict[str, Any]:
        """Journal-wide facts: last connectivity check, pause reason, ..."""
        return self.journal.status()

    def set_status(self, name: str, value: Any) -> None:
        """Record a journal-wide fact (JSON-serialisable) under ``name``, for every process.

        :meth:`status` returns it, with ``NAME_at`` saying when it was recorded. outbox keeps
        its own facts there too (``connectivity``, ``auth``, ``drop_folder:PATH``...): give
        yours a name of its own.
        """
        self.journal.set_status(name, value)

    def dashboard(
        self, *, host: str = "127.0.0.1", port: int = 8800, token: str | None = None
    ) -> DashboardServer:
        """Serve the dashboard, a live web page of this journal with its actions, in a
        background thread; returns the running server.

        Open its ``url``: it carries the access token (random unless ``token`` is given), so
        give it only to whoever may act on the queue. ``close()`` stops it, as does closing
        the outbox. Listening on another ``host`` than 127.0.0.1 exposes it to the network.
        To show the page inside your own web app, mount
        :class:`outbox.dashboard.DashboardApp` (a WSGI application) instead.
        """
        from .dashboard import DashboardServer  # only who serves the page loads the server

        server = DashboardServer(self, host=host, port=port, token=token).start()
        self._dashboards.append(server)
        return server

    # -- template cache ------------------------------------------------------------------

    def check(
        self, template: str, data: Mapping[str, Any], *, version: int | None = None
    ) -> DataCheck:
        """Check ``data`` against the cached template, offline, the way Craftkit would.

        Never raises for bad data: the result's ``outcome`` says whether the data matches,
        does not (``field_errors`` in Craftkit's shape and words), names a template Craftkit
        did not list at the last full sync (``unknown_template``), or could not be checked
        (the template is not cached and no full sync ran, or ``version`` pins another version
        than the cached one: the cache holds each template's current published version only).
        """
        if not isinstance(data, Mapping):
            raise InvalidArgument(
                f"data must be a JSON object ({{...}}), not {type(data).__name__}"
            )
        return self._check_against_cache(_CacheView(self.journal), template, data, version)

    def templates(self) -> builtins.list[CachedTemplate]:
        """The cached templates (see :meth:`sync_templates`), by slug. Works offline."""
        return self.journal.cached_templates()

    def sync_templates(self, timeout: float = 60.0) -> builtins.list[CachedTemplate]:
        """Cache every template's published manifest, schema and version; needs the network.

        Run it while online so that data can be checked offline before it is queued. The
        cache is replaced as a whole (templates deleted at Craftkit leave it) or, if the
        network or the key fails, left as it was. Returns the cache as it now stands.
        """
        from . import template_sync

        engine = self._get_engine()
        cached = template_sync.sync_templates(
            self.journal, engine.client, deadline=self.clock.monotonic() + timeout
        )
        # It reached Craftkit with the key: an "offline" or "key refused" that an earlier
        # run recorded is contradicted now (`outbox status` shows the fresh facts).
        engine.gate.answered()
        engine.gate.key_accepted()
        return cached


class _CacheView:
    """The template cache as one request, or one batch, sees it: each lookup is made once."""

    def __init__(self, journal: Journal) -> None:
        self._journal = journal
        self._templates: dict[str, CachedTemplate | None] = {}
        self._synced_at: tuple[str | None] | None = None

    def template(self, slug: str) -> CachedTemplate | None:
        if slug not in self._templates:
            # One read for both: a template missing from the cache needs the sync time next.
            cached, synced_at = self._journal.template_and_sync(slug)
            self._templates[slug] = cached
            if self._synced_at is None:
                self._synced_at = (synced_at,)
        return self._templates[slug]

    def synced_at(self) -> str | None:
        """When the last full template sync ran (None: never)."""
        if self._synced_at is None:
            self._synced_at = (self._journal.templates_synced_at(),)
        return self._synced_at[0]


def _as_dict(data: Mapping[str, Any]) -> dict[str, Any]:
    return dict(data) if isinstance(data, Mapping) else data
