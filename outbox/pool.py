"""Run a handler over due entries of one state, a few at a time, with leases.

The dispatcher and the replay loop share this: claim what is due (compare-and-set leases, so
other processes on the same journal never get the same entry), hand each entry to a worker
thread, claim more as workers free up, and stop when nothing is due, the gate blocks, the
deadline passes or a stop is requested. :meth:`Crew.apply` carries out what
:mod:`outbox.outcomes` decided about each answer.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Executor, Future, wait
from dataclasses import dataclass, field

from .clock import Clock
from .errors import JournalBusy, JournalFull, LostRace, RemoteError
from .gate import Gate
from .models import Entry, RemoteStatus, State
from .outcomes import GiveBack, Network, Outcome
from .schedule import Schedule
from .store import Journal

log = logging.getLogger(__name__)


@dataclass
class Crew:
    """What every phase needs to claim and work: the journal, who we are, and the threads."""

    journal: Journal
    gate: Gate
    clock: Clock
    owner: str
    executor: Executor
    concurrency: int
    lease_seconds: float
    schedule: Schedule = field(default_factory=Schedule)
    unexpected: list[str] = field(default_factory=list)
    journal_trouble: str | None = None
    _unknown_statuses: set[str] = field(default_factory=set, repr=False)

    def run(
        self,
        state: State,
        handle: Callable[[Entry], None],
        *,
        deadline: float | None,
        stop: threading.Event | None,
    ) -> int:
        """Handle every due entry of ``state``; returns how many were handled.

        Each ``handle(entry)`` runs on a worker thread once the gate lets a request start; an
        entry whose turn never comes (offline, stopped, out of time) is given back untouched.
        """
        in_flight: set[Future[None]] = set()
        handled = 0
        while True:
            if self._may_claim(deadline, stop) and len(in_flight) < self.concurrency:
                batch = self.journal.claim_due(
                    state,
                    owner=self.owner,
                    lease_seconds=self.lease_seconds,
                    limit=self.concurrency - len(in_flight),
                    horizon=self.schedule.horizon,
                )
                in_flight |= {
                    self.executor.submit(self._guarded, handle, e, deadline, stop) for e in batch
                }
            if not in_flight:
                return handled
            done, in_flight = wait(in_flight, return_when=FIRST_COMPLETED)
            handled += len(done)

    def apply(self, entry: Entry, outcome: Outcome, error: Exception | None = None) -> None:
        """Carry out what :mod:`outbox.outcomes` decided for a leased entry.

        The gate hears what the outcome says about the network first (``error`` is the error
        it acts on for :attr:`Network.TROUBLE`); then the journal records the move, or the
        lease is given back untouched.
        """
        if outcome.network is Network.TROUBLE:
            assert isinstance(error, RemoteError), "only a remote error is network trouble"
            self.gate.note(error)
        elif outcome.network is not Network.NOTHING:
            self.gate.answered()
            if outcome.network is Network.KEY_ACCEPTED:
                self.gate.key_accepted()
        if isinstance(outcome, GiveBack):
            self.journal.release(entry.id, self.owner)
        elif outcome.detail is None:
            self.journal.reschedule(entry.id, entry.state, owner=self.owner, **outcome.changes)
        else:
            self.journal.transition(
                entry.id,
                entry.state,
                outcome.target,
                owner=self.owner,
                http_status=outcome.http_status,
                detail=outcome.detail,
                **outcome.changes,
            )

    def notice_status(self, status: str) -> None:
        """Log, once per status, that Craftkit answered a render status it does not document."""
        if RemoteStatus.of(status) is None and status not in self._unknown_statuses:
            self._unknown_statuses.add(status)
            log.warning(
                "Craftkit reported an unknown render status %r; treating it as unfinished", status
            )

    def _may_claim(self, deadline: float | None, stop: threading.Event | None) -> bool:
        if self.gate.blocked or (stop is not None and stop.is_set()):
            return False
        return deadline is None or self.clock.monotonic() < deadline

    def _guarded(
        self,
        handle: Callable[[Entry], None],
        entry: Entry,
        deadline: float | None,
        stop: threading.Event | None,
    ) -> None:
        """Wait for the gate, then handle the entry; give it back if the wait was in vain."""
        if not self.gate.acquire(deadline, stop):
            self.journal.release(entry.id, self.owner)
            return
        try:
            handle(entry)
        except (JournalBusy, JournalFull) as exc:
            # The journal cannot take the outcome right now; the lease runs out and the entry
            # is worked again later, with the same key. Nothing is lost.
            log.error("entry %s: %s", entry.id, exc)
            self.journal_trouble = str(exc)
        except LostRace as exc:
            # Our lease ran out during a slow request and another worker took the entry over:
            # its outcome stands, ours is dropped. It sends the same key, so nothing doubles.
            log.warning("entry %s: %s; leaving it to the worker that took it over", entry.id, exc)
        except Exception as exc:
            log.exception("unexpected error while handling entry %s", entry.id)
            self.unexpected.append(f"entry {entry.id}: unexpected {type(exc).__name__}: {exc}")
            try:
                self.journal.reschedule(
                    entry.id,
                    entry.state,
                    owner=self.owner,
                    due_at=self.clock.now() + self.schedule.unexpected_error_delay,
                )
            except Exception:
                log.warning("could not put entry %s aside", entry.id, exc_info=True)
