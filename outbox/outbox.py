"""The :class:`Outbox` facade: the one class most users need.

It wires the journal, the Craftkit client, the dispatcher and the replay loop together. Every
method that only touches the journal works offline and without an API key.
"""

from __future__ import annotations

import builtins
import logging
import os
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

from .clock import Clock
from .config import DEFAULT_BASE_URL, default_downloads
from .errors import IllegalTransition, InvalidArgument
from .models import Entry, Event, RenderRequest, State
from .store import Durability, Journal

log = logging.getLogger(__name__)


class Outbox:
    """An offline-first render queue backed by a SQLite journal at ``db``.

    ``api_key`` is only needed to talk to Craftkit (``flush``, ``start``); it is kept in memory
    and never written anywhere. ``downloads`` defaults to ``renders/`` beside the journal.
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
        clock: Clock | None = None,
    ) -> None:
        self.clock = clock or Clock()
        self.journal = Journal(
            db, durability=durability, busy_timeout=busy_timeout, clock=self.clock
        )
        self.downloads = Path(downloads) if downloads is not None else default_downloads(db)
        self.base_url = base_url.rstrip("/")
        self._api_key = api_key

    def __repr__(self) -> str:
        return f"<Outbox {str(self.journal.path)!r} base_url={self.base_url!r}>"

    # -- lifecycle -----------------------------------------------------------------------

    def close(self) -> None:
        """Close the journal. Unfinished entries stay in it for next time."""
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
    ) -> Entry:
        """Save a render request; durable when this returns. Needs no network and no API key.

        Enqueueing again with the same ``key`` returns the existing entry. Without a key one is
        generated; give one derived from the business event (``inspection-42``) so that a
        retried ``enqueue`` after a crash cannot create a second entry.
        """
        return self.journal.enqueue(
            self.prepare(template, data, key=key, filename=filename, version=version)
        )

    def enqueue_many(
        self, requests: Iterable[RenderRequest | Mapping[str, Any]]
    ) -> builtins.list[Entry]:
        """Save many requests in one transaction: all of them or, on error, none.

        Each item is a :class:`RenderRequest` (from :meth:`prepare`) or a mapping with
        ``template``, ``data`` and optionally ``key``, ``filename``, ``version``.
        """
        return self.journal.enqueue_many(
            [
                item if isinstance(item, RenderRequest) else self._prepare_mapping(item)
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
    ) -> RenderRequest:
        """Check a request without saving it; raises :class:`InvalidArgument` naming the problem.

        ``source`` records where the request came from (for example a drop-folder file).
        """
        return RenderRequest(template, _as_dict(data), key, filename, version, source)

    def _prepare_mapping(self, item: Mapping[str, Any]) -> RenderRequest:
        if not isinstance(item, Mapping):
            raise InvalidArgument(
                f"each request must be a RenderRequest or a mapping, not {type(item).__name__}"
            )
        unknown = set(item) - {"template", "data", "key", "filename", "version"}
        if unknown:
            raise InvalidArgument(f"unknown request fields: {sorted(unknown)}")
        return self.prepare(
            item.get("template"),  # type: ignore[arg-type]
            item.get("data"),  # type: ignore[arg-type]
            key=item.get("key"),
            filename=item.get("filename"),
            version=item.get("version"),
        )

    def cancel(self, entry_id: str) -> Entry:
        """Cancel a ``pending`` entry. Entries Craftkit already accepted cannot be cancelled."""
        entry = self.journal.get(entry_id)
        if entry.state is not State.PENDING:
            raise IllegalTransition(
                f"entry {entry.id} is {entry.state}; only pending entries can be cancelled"
                + (f" (Craftkit already has render {entry.render_id})" if entry.render_id else "")
            )
        detail = "cancelled by the user"
        if entry.attempts:
            detail += "; an earlier submission's outcome was unknown, so Craftkit may hold a render"
        return self.journal.transition(
            entry.id, State.PENDING, State.CANCELLED, unleased=True, detail=detail
        )

    # -- reading -------------------------------------------------------------------------

    def get(self, entry_id: str) -> Entry:
        """The entry with this id (or unique id prefix of 6+ characters)."""
        return self.journal.get(entry_id)

    def list(
        self, state: State | str | None = None, limit: int | None = None
    ) -> builtins.list[Entry]:
        """Entries, newest first; all of them unless ``limit``."""
        return self.journal.list(state=state, limit=limit)

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
    ) -> Iterator[Event]:
        """Yield events as they happen, including changes made by other processes.

        Starts after event id ``since`` (default: from now on). Changes made in this process
        arrive at once; other processes' within ``poll_interval``. Stops once ``timeout``
        seconds pass without an event; runs forever if it is None.
        """
        start = self.journal.last_event_id() if since is None else since
        return self._follow(start, timeout, poll_interval)

    def _follow(self, last: int, timeout: float | None, poll_interval: float) -> Iterator[Event]:
        wake = threading.Event()
        remove = self.journal.add_listener(lambda _event: wake.set())
        try:
            idle_since = self.clock.monotonic()
            while True:
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

    def status(self) -> dict[str, Any]:
        """Journal-wide facts: last connectivity check, pause reason, ..."""
        return self.journal.status()


def _as_dict(data: Mapping[str, Any]) -> dict[str, Any]:
    return dict(data) if isinstance(data, Mapping) else data
