"""Counts per state for the dashboard, kept up to date by a background thread.

Counting every entry of a big journal takes tens of milliseconds (a walk of a whole index), so
page requests never do it: a thread recounts on its own SQLite connection (WAL readers do not
wait for each other, nor for the connection the page's other requests share) at most once a
``interval`` after the change feed moved, and every ``resync`` seconds in any case (a purge in
another process deletes entries without events). Requests read the last count at once.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from ..clock import Clock
from ..models import State
from ..store import Journal

log = logging.getLogger(__name__)


class Tally:
    """The latest counts of the journal at ``path`` and the last event they include."""

    def __init__(
        self,
        path: Path,
        *,
        clock: Clock | None = None,
        interval: float = 1.0,
        resync: float = 30.0,
    ) -> None:
        self.clock = clock or Clock()
        self.interval = interval
        self.resync = resync
        self._journal = Journal(path, clock=self.clock)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._counted_at = self.clock.monotonic()
        self._counts, self._through = self._count()
        self._thread = threading.Thread(
            target=self._run, name="outbox-dashboard-tally", daemon=True
        )
        self._thread.start()

    def snapshot(self) -> tuple[dict[State, int], int]:
        """The counts per state, and the id of the last event they include."""
        with self._lock:
            return dict(self._counts), self._through

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self._journal.close()

    def _count(self) -> tuple[dict[State, int], int]:
        through = self._journal.last_event_id()  # first: the counts include at least this
        return self._journal.counts(), through

    def _run(self) -> None:
        while not self.clock.wait(self._stop, self.interval):
            try:
                moved = self._journal.last_event_id() != self._through
                stale = self.clock.monotonic() - self._counted_at >= self.resync
                if moved or stale:
                    counts, through = self._count()
                    with self._lock:
                        self._counts, self._through = counts, through
                        self._counted_at = self.clock.monotonic()
            except Exception:  # a busy journal: keep the last counts, try again next time
                log.warning("could not count the journal's entries", exc_info=True)
