"""Work due entries and deliveries of every kind at once, a few at a time, with leases.

The dispatcher, the replay loop and the courier each describe their work as a :class:`Phase`:
how to claim what is due (compare-and-set leases, so other processes on the same journal never
get the same entry), how to handle one item, how to give one back. :meth:`Crew.work` runs the
phases together as a pipeline sharing the request slots: whenever a slot is free it claims
whatever is due, finishing work first (downloads, then polls, then deliveries, then new
submissions), so PDFs land while later entries are still being submitted; it stops when nothing
is due or in flight, the gate blocks, the deadline passes or a stop is requested.

:meth:`Crew.apply` carries out what :mod:`outbox.outcomes` decided about each answer. The gate
hears it at once; the journal gets it in a group commit: the scheduler writes every outcome that
came in, together with its next claims, as one transaction. Routine moves are committed without
an fsync (the next durable commit carries them); a move that finishes an entry is durable before
anyone hears of it, and is held up to ``Schedule.group_commit_window`` so that entries finishing
close together share one fsync.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Executor, Future, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

from .clock import Clock, iso
from .deliveries import Delivery
from .errors import (
    JournalBusy,
    JournalError,
    JournalFull,
    LostRace,
    RateLimited,
    RemoteError,
    ServerError,
)
from .files import fsync_dir
from .gate import Gate
from .limit import ConcurrencyLimit
from .logs import fields
from .models import Entry, RemoteStatus, State
from .outcomes import DeliveryOutcome, GiveBack, Move, Network, Outcome
from .schedule import Schedule
from .store import Journal

log = logging.getLogger(__name__)

#: The most unexpected errors a crew keeps for the report (the oldest go first), and the most
#: unknown render statuses it remembers having logged: a process that runs for weeks keeps
#: neither list growing.
UNEXPECTED_KEPT = 100
UNKNOWN_STATUSES_KEPT = 100

#: What a phase works on: entries, or the deliveries of done entries.
Item = TypeVar("Item", Entry, Delivery)


@dataclass(frozen=True)
class Phase(Generic[Item]):
    """One kind of work: claim up to n due items, handle one (on a worker thread), give one
    back untouched or put it aside after a bug, and say when the next item falls due."""

    name: str
    claim: Callable[[int], list[Item]]
    handle: Callable[[Item], None]
    release: Callable[[Item], None]
    put_aside: Callable[[Item, float], object]
    next_due: Callable[[], float | None]


@dataclass(frozen=True)
class _Answer:
    """An outcome waiting for the scheduler's next group commit."""

    entry: Entry
    outcome: Outcome
    #: A folder whose new names must be durable before this move is committed.
    sync_first: Path | None = None

    @property
    def durable(self) -> bool:
        """Whether the move finishes the entry: then nobody may hear of it before it is on
        disk (a routine move is carried by the next durable commit)."""
        return isinstance(self.outcome, Move) and self.outcome.target.is_terminal


@dataclass
class Crew:
    """What every phase needs to claim and work: the journal, who we are, and the threads."""

    journal: Journal
    gate: Gate
    clock: Clock
    owner: str
    executor: Executor
    #: How many requests may be in flight at once (adapted as answers come back).
    limit: ConcurrencyLimit
    lease_seconds: float
    schedule: Schedule = field(default_factory=Schedule)
    unexpected: deque[str] = field(default_factory=lambda: deque(maxlen=UNEXPECTED_KEPT))
    journal_trouble: str | None = None
    _unknown_statuses: set[str] = field(default_factory=set, repr=False)
    _answers: list[_Answer] = field(default_factory=list, repr=False)
    _answers_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    #: Finishing moves held for the next durable commit, and since when (monotonic).
    _held: list[_Answer] = field(default_factory=list, repr=False)
    _held_since: float = 0.0
    #: Whether the answer this worker thread is handling said "overloaded".
    _overload: threading.local = field(default_factory=threading.local, repr=False)

    # -- the phases ----------------------------------------------------------------------

    def entries(self, state: State, handle: Callable[[Entry], None]) -> Phase[Entry]:
        """The work on due entries of ``state``: ``handle(entry)`` for each."""
        journal = self.journal
        horizon = self.schedule.horizon
        return Phase(
            name=state.value,
            claim=lambda limit: _claimed(
                f"{state.value} entry",
                journal.claim_due(
                    state,
                    owner=self.owner,
                    lease_seconds=self.lease_seconds,
                    limit=limit,
                    horizon=horizon,
                ),
            ),
            handle=handle,
            release=lambda entry: journal.release(entry.id, self.owner),
            put_aside=lambda entry, due_at: journal.reschedule(
                entry.id, entry.state, owner=self.owner, due_at=due_at
            ),
            next_due=lambda: journal.next_due_at([state], horizon=horizon),
        )

    def deliveries(
        self, handle: Callable[[Delivery], None], *, only: str | None = None
    ) -> Phase[Delivery]:
        """The work on due deliveries of ``done`` entries (or only the delivery ``only``)."""
        journal = self.journal
        horizon = self.schedule.horizon
        return Phase(
            name="deliveries",
            claim=lambda limit: _claimed(
                "delivery",
                journal.claim_due_deliveries(
                    owner=self.owner,
                    lease_seconds=self.lease_seconds,
                    limit=limit,
                    horizon=horizon,
                    delivery_id=only,
                ),
            ),
            handle=handle,
            release=lambda delivery: journal.release_delivery(delivery.id, self.owner),
            put_aside=lambda delivery, due_at: journal.reschedule_delivery(
                delivery.id, delivery.state, owner=self.owner, due_at=due_at
            ),
            next_due=lambda: journal.next_delivery_due_at(horizon=horizon),
        )

    def run(
        self,
        state: State,
        handle: Callable[[Entry], None],
        *,
        deadline: float | None,
        stop: threading.Event | None,
    ) -> int:
        """Handle every due entry of ``state`` (one phase alone); returns how many."""
        return self.work([self.entries(state, handle)], deadline=deadline, stop=stop)

    def run_deliveries(
        self,
        handle: Callable[[Delivery], None],
        *,
        deadline: float | None,
        stop: threading.Event | None,
        only: str | None = None,
    ) -> int:
        """Handle every due delivery (or only the delivery ``only``); returns how many."""
        return self.work([self.deliveries(handle, only=only)], deadline=deadline, stop=stop)

    # -- the pipeline --------------------------------------------------------------------

    def work(
        self,
        phases: Sequence[Phase[Any]],
        *,
        deadline: float | None,
        stop: threading.Event | None,
    ) -> int:
        """Run ``phases`` together until nothing is due or in flight; returns how many items
        were handled.

        Each ``handle(item)`` runs on a worker thread once the gate lets a request start; an
        item whose turn never comes (offline, stopped, out of time) is given back untouched.
        Earlier phases get free slots first. Every outcome is in the journal when this returns.
        """
        in_flight: set[Future[None]] = set()
        handled = 0
        claiming = True
        while True:
            free = self.limit.value - len(in_flight)
            may_claim = claiming and free > 0 and self._may_claim(deadline, stop)
            try:
                claimed = self._commit(phases if may_claim else (), free, everything=not in_flight)
            except JournalError as exc:
                # The journal cannot take this pass's outcomes and claims now (locked by
                # another process for longer than its busy timeout, or full). Whatever was
                # answered stays leased by us and is written at the next commit, or redone
                # with the same key once the lease runs out. With nothing in flight, the
                # error is the caller's to see, as a failed claim always was.
                self.journal_trouble = str(exc)
                if not in_flight:
                    raise
                log.error("%s", exc)
                claiming = False
                claimed = []
            for phase, item in claimed:
                in_flight.add(self.executor.submit(self._guarded, phase, item, deadline, stop))
            if not in_flight:
                if self._answers or self._held:
                    continue  # the last outcomes came in after the commit above
                return handled
            timeout = self._wait_for(phases if may_claim else (), len(claimed) < free)
            done, in_flight = wait(in_flight, timeout=timeout, return_when=FIRST_COMPLETED)
            handled += len(done)

    def _commit(
        self, phases: Sequence[Phase[Any]], free: int, *, everything: bool
    ) -> list[tuple[Phase[Any], Any]]:
        """Write the outcomes that came in, then claim up to ``free`` due items, in one
        transaction; returns what was claimed, to be started once it is committed.

        Finishing moves are held until the group commit window has passed since the first of
        them (or ``everything`` is asked: nothing more is in flight), then committed durably.
        """
        with self._answers_lock:
            answers = list(self._answers)
        now = self.clock.monotonic()
        finishing = [answer for answer in answers if answer.durable]
        held = self._held + finishing
        held_since = self._held_since if self._held else now
        durable = bool(held) and (
            everything or now - held_since >= self.schedule.group_commit_window
        )
        writes = [answer for answer in answers if not answer.durable]
        if durable:
            writes.extend(held)
        for folder in {answer.sync_first for answer in writes if answer.sync_first is not None}:
            fsync_dir(folder)  # new PDF names durable before the moves that record them
        claimed: list[tuple[Phase[Any], Any]] = []
        if writes or phases:
            with self.journal.batch(durable=durable):
                for answer in writes:
                    self._write(answer)
                for phase in phases:
                    if len(claimed) >= free:
                        break
                    claimed.extend((phase, item) for item in phase.claim(free - len(claimed)))
        # Committed: only now are the answers off our hands (a failed commit keeps them).
        with self._answers_lock:
            del self._answers[: len(answers)]
        self._held, self._held_since = ([] if durable else held), held_since
        if not durable:
            self.journal.sync(older_than=self.schedule.sync_within)
        return claimed

    def _wait_for(self, phases: Sequence[Phase[Any]], slots_left: bool) -> float | None:
        """How long the scheduler may wait for a request to finish before it must look again:
        until held moves are due for their commit, or (with slots left) the next item is due."""
        waits: list[float] = []
        if self._held:
            elapsed = self.clock.monotonic() - self._held_since
            waits.append(self.schedule.group_commit_window - elapsed)
        if slots_left and phases:
            dues = [due for due in (phase.next_due() for phase in phases) if due is not None]
            if dues:
                waits.append(max(min(dues) - self.clock.now(), self.schedule.busy_elsewhere_wait))
        if not waits:
            return None
        return max(self.schedule.between_passes, min(waits))

    def _write(self, answer: _Answer) -> None:
        """Write one outcome inside the scheduler's batch; a problem stays with its entry."""
        entry, outcome = answer.entry, answer.outcome
        try:
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
                    durable=answer.durable,
                    **outcome.changes,
                )
        except (JournalBusy, JournalFull):
            raise  # the whole batch waits for a journal that can take it
        except LostRace as exc:
            log.warning("entry %s: %s; leaving it to the worker that took it over", entry.id, exc)
            self.journal.release(entry.id, self.owner)
        except Exception as exc:
            log.exception("unexpected error while recording entry %s", entry.id)
            self.unexpected.append(f"entry {entry.id}: unexpected {type(exc).__name__}: {exc}")
            self._put_aside_entry(entry)

    def _put_aside_entry(self, entry: Entry) -> None:
        try:
            self.journal.reschedule(
                entry.id,
                entry.state,
                owner=self.owner,
                due_at=self.clock.now() + self.schedule.unexpected_error_delay,
            )
        except Exception:
            log.warning("could not put entry %s aside", entry.id, exc_info=True)

    def apply(
        self,
        entry: Entry,
        outcome: Outcome,
        error: Exception | None = None,
        *,
        sync_first: Path | None = None,
    ) -> None:
        """Carry out what :mod:`outbox.outcomes` decided for a leased entry.

        The gate hears what the outcome says about the network at once (``error`` is the error
        it acts on for :attr:`Network.TROUBLE`); the journal records the move, or gives the
        lease back untouched, at the scheduler's next group commit (see :meth:`work`), after
        fsyncing the folder ``sync_first`` (once for every move of that commit that names it).
        """
        self._tell_gate(outcome, error)
        _log_decision(entry, outcome)
        with self._answers_lock:
            self._answers.append(_Answer(entry, outcome, sync_first))

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

    def _answered(self, kind: str, seconds: float) -> None:
        """A handler finished: unless this thread's answer said "overloaded", its latency
        counts towards a larger limit."""
        if getattr(self._overload, "seen", False):
            self._overload.seen = False
            return
        self.limit.answered(kind, seconds)

    def _tell_gate(self, outcome: Outcome | DeliveryOutcome, error: Exception | None) -> None:
        """What the outcome says about the network, for every request (see :mod:`.gate`)."""
        if isinstance(error, RateLimited) or (
            isinstance(error, ServerError) and error.status == 503
        ):
            self.limit.overloaded()
            self._overload.seen = True
        if outcome.network is Network.TROUBLE:
            assert isinstance(error, RemoteError), "only a remote error is network trouble"
            self.gate.note(error)
        elif outcome.network is not Network.NOTHING:
            self.gate.answered()
            if outcome.network is Network.KEY_ACCEPTED:
                self.gate.key_accepted()

    def notice_status(self, status: str) -> None:
        """Log, once per status, that Craftkit answered a render status it does not document
        (for the first :data:`UNKNOWN_STATUSES_KEPT` such statuses)."""
        known = RemoteStatus.of(status) is not None or status in self._unknown_statuses
        if not known and len(self._unknown_statuses) < UNKNOWN_STATUSES_KEPT:
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
        phase: Phase[Any],
        item: Entry | Delivery,
        deadline: float | None,
        stop: threading.Event | None,
    ) -> None:
        """Wait for the gate, then handle the entry (or delivery); give it back if the wait
        was in vain."""
        if not self.gate.acquire(deadline, stop):
            phase.release(item)
            return
        started = self.clock.monotonic()
        try:
            with self.gate.client.cut_when(stop):  # a stop cuts a dripping answer short
                phase.handle(item)
            self._answered(phase.name, self.clock.monotonic() - started)
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
            phase.release(item)
        except Exception as exc:
            log.exception("unexpected error while handling %s", _name(item))
            self.unexpected.append(f"{_name(item)}: unexpected {type(exc).__name__}: {exc}")
            try:
                phase.put_aside(item, self.clock.now() + self.schedule.unexpected_error_delay)
            except Exception:
                log.warning("could not put %s aside", _name(item), exc_info=True)


def _name(item: Entry | Delivery) -> str:
    if isinstance(item, Delivery):
        return f"entry {item.entry_id}'s {item.describe()}"
    return f"entry {item.id}"


def _claimed(what: str, batch: list[Item]) -> list[Item]:
    """Log a claim (``-v``: outbox's decisions) and hand the batch on."""
    if batch:
        ids = ", ".join(str(getattr(item, "id", item)) for item in batch)
        if len(batch) > 1:
            what = what.replace("entry", "entries").replace("delivery", "deliveries")
        log.debug("claimed %d %s: %s", len(batch), what, ids)
    return batch


def _log_decision(entry: Entry, outcome: Outcome) -> None:
    """Log (``-v``) an entry given back untouched, or kept in its state until a later try."""
    rule = outcome.rule.name.lower()
    if isinstance(outcome, GiveBack):
        log.debug("entry %s given back untouched (%s)", entry.id, rule)
        return
    due_at = outcome.changes.get("due_at")
    if due_at is not None and outcome.target is entry.state:
        log.debug(
            "entry %s stays %s (%s); next try at %s",
            entry.id,
            entry.state.value,
            rule,
            iso(due_at),
            extra=fields(entry_id=entry.id, rule=rule, due_at=iso(due_at)),
        )
