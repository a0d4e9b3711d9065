"""Run a handler over due entries of one state, a few at a time, with leases.

The dispatcher, the replay loop and the courier share this: claim what is due (compare-and-set leases, so
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
from typing import TypeVar

from .clock import Clock
from .deliveries import Delivery
from .errors import JournalBusy, JournalFull, LostRace, RemoteError
from .gate import Gate
from .models import Entry, RemoteStatus, State
from .outcomes import DeliveryOutcome, GiveBack, Network, Outcome
from .schedule import Schedule
from .store import Journal

log = logging.getLogger(__name__)

#: What a phase works on: entries, or the deliveries of done entries.
Item = TypeVar("Item", Entry, Delivery)


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
        journal = self.journal
        return self._work(
            lambda limit: journal.claim_due(
                state,
                owner=self.owner,
                lease_seconds=self.lease_seconds,
                limit=limit,
                horizon=self.schedule.horizon,
            ),
            handle,
            lambda entry: journal.release(entry.id, self.owner),
            lambda entry, due_at: journal.reschedule(
                entry.id, entry.state, owner=self.owner, due_at=due_at
            ),
            deadline,
            stop,
        )

    def run_deliveries(
        self,
        handle: Callable[[Delivery], None],
        *,
        deadline: float | None,
        stop: threading.Event | None,
        only: str | None = None,
    ) -> int:
        """Handle every due delivery of a ``done`` entry (or only the delivery with the id
        ``only``), as :meth:`run` does entries."""
        journal = self.journal
        return self._work(
            lambda limit: journal.claim_due_deliveries(
                owner=self.owner,
                lease_seconds=self.lease_seconds,
                limit=limit,
                horizon=self.schedule.horizon,
                delivery_id=only,
            ),
            handle,
            lambda delivery: journal.release_delivery(delivery.id, self.owner),
            lambda delivery, due_at: journal.reschedule_delivery(
                delivery.id, delivery.state, owner=self.owner, due_at=due_at
            ),
            deadline,
            stop,
        )

    def _work(
        self,
        claim: Callable[[int], list[Item]],
        handle: Callable[[Item], None],
        release: Callable[[Item], None],
        put_aside: Callable[[Item, float], object],
        deadline: float | None,
        stop: threading.Event | None,
    ) -> int:
        in_flight: set[Future[None]] = set()
        handled = 0
        while True:
            if self._may_claim(deadline, stop) and len(in_flight) < self.concurrency:
                batch = claim(self.concurrency - len(in_flight))
                in_flight |= {
                    self.executor.submit(
                        self._guarded, handle, item, release, put_aside, deadline, stop
                    )
                    for item in batch
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
        self._tell_gate(outcome, error)
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

    def apply_delivery(
        self, delivery: Delivery, outcome: DeliveryOutcome, error: Exception | None = None
    ) -> Delivery | None:
        """Carry out a delivery's outcome, as :meth:`apply` does an entry's; returns the
        delivery as it now stands (None when the lease was given back untouched)."""
        self._tell_gate(outcome, error)
        if isinstance(outcome, GiveBack):
            self.journal.release_delivery(delivery.id, self.owner)
            return None
        if outcome.detail is None:
            return self.journal.reschedule_delivery(
                delivery.id, delivery.state, owner=self.owner, **outcome.changes
            )
        return self.journal.move_delivery(
            delivery.id,
            delivery.state,
            outcome.target,
            owner=self.owner,
            keep_lease=outcome.keep_lease,
            http_status=outcome.http_status,
            detail=outcome.detail,
            **outcome.changes,
        )

    def _tell_gate(self, outcome: Outcome | DeliveryOutcome, error: Exception | None) -> None:
        """What the outcome says about the network, for every request (see :mod:`.gate`)."""
        if outcome.network is Network.TROUBLE:
            assert isinstance(error, RemoteError), "only a remote error is network trouble"
            self.gate.note(error)
        elif outcome.network is not Network.NOTHING:
            self.gate.answered()
            if outcome.network is Network.KEY_ACCEPTED:
                self.gate.key_accepted()

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
        handle: Callable[[Item], None],
        item: Item,
        release: Callable[[Item], None],
        put_aside: Callable[[Item, float], object],
        deadline: float | None,
        stop: threading.Event | None,
    ) -> None:
        """Wait for the gate, then handle the entry (or delivery); give it back if the wait
        was in vain."""
        if not self.gate.acquire(deadline, stop):
            release(item)
            return
        try:
            handle(item)
        except (JournalBusy, JournalFull) as exc:
            # The journal cannot take the outcome right now; the lease runs out and the entry
            # is worked again later, with the same key. Nothing is lost.
            log.error("%s: %s", _name(item), exc)
            self.journal_trouble = str(exc)
        except LostRace as exc:
            # Our lease ran out during a slow request and another worker took the entry over:
            # its outcome stands, ours is dropped. It sends the same key, so nothing doubles.
            # (If we still hold the lease — a delivery whose share another one recorded first
            # — it is given back, so the delivery is looked at again at once.)
            log.warning("%s: %s; leaving it to the worker that took it over", _name(item), exc)
            release(item)
        except Exception as exc:
            log.exception("unexpected error while handling %s", _name(item))
            self.unexpected.append(f"{_name(item)}: unexpected {type(exc).__name__}: {exc}")
            try:
                put_aside(item, self.clock.now() + self.schedule.unexpected_error_delay)
            except Exception:
                log.warning("could not put %s aside", _name(item), exc_info=True)


def _name(item: Entry | Delivery) -> str:
    if isinstance(item, Delivery):
        return f"entry {item.entry_id}'s {item.describe()}"
    return f"entry {item.id}"
