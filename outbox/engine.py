"""The engine: runs the submit, poll and download phases until the work is done.

``flush`` runs cycles until everything is drained, the API is unreachable, the key is refused
or the timeout passes, and reports what happened. ``run`` keeps cycling until told to stop,
waiting out outages. Both leave every entry in a well-defined state when they return.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from . import outcomes
from .client import CraftkitClient
from .clock import Clock
from .config import ENV_API_KEY, Settings
from .courier import Courier
from .deliveries import Delivery, DeliveryState
from .dispatcher import Dispatcher
from .errors import EntryNotFound, JournalError
from .exit_codes import ExitCode
from .gate import Gate
from .limit import ConcurrencyLimit
from .models import UNFINISHED_STATES, Entry, Event, State
from .platform import process_alive
from .pool import Crew, Phase
from .replay import Replay
from .schedule import RenderTimes
from .store import Journal

log = logging.getLogger(__name__)

_UNFINISHED = sorted(UNFINISHED_STATES)
_REFUSED_DELIVERIES = (DeliveryState.FAILED, DeliveryState.REJECTED)
_FINISHED_DELIVERIES = frozenset(
    state.value for state in (DeliveryState.DELIVERED, *_REFUSED_DELIVERIES)
)
#: The unfinished states in the order an entry goes through them.
_IN_ORDER = [state for state in State if state in UNFINISHED_STATES]
#: States an entry reaches from ``pending`` when Craftkit accepted it.
_ACCEPTED = (State.SUBMITTED, State.DOWNLOADING, State.FAILED)


@dataclass(frozen=True)
class Waiting:
    """The unfinished entries of one state after a flush: how many, when the first of them is
    next due (wall-clock seconds; None: now) and why it waits (None: nothing went wrong, it
    is simply rendering or queued)."""

    state: State
    count: int
    next_due: float | None
    reason: str | None
    entry_id: str | None = None


@dataclass
class FlushReport:
    """What one ``flush`` did and what is left. ``exit_code`` follows the CLI's contract.

    ``counts`` is the whole journal after the run; ``submitted`` (entries Craftkit accepted
    in this run), ``written`` (entries whose PDF this run saved), ``failed`` and ``rejected``
    are this run's; ``waiting`` says what is left, when it is next due and why.
    """

    counts: dict[State, int]
    moved: dict[State, int] = field(default_factory=dict)
    failed: list[Entry] = field(default_factory=list)
    rejected: list[Entry] = field(default_factory=list)
    offline: str | None = None
    auth_error: str | None = None
    rate_limited: int = 0
    timed_out: bool = False
    waiting: list[Waiting] = field(default_factory=list)
    stuck: list[Entry] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    journal_trouble: str | None = None
    #: Deliveries (share links, emails) that this run finished: delivered, failed or rejected.
    deliveries: list[Delivery] = field(default_factory=list)
    #: Deliveries of done entries still on their way (pending or unconfirmed).
    deliveries_waiting: list[Delivery] = field(default_factory=list)
    submitted: int = 0
    written: list[Entry] = field(default_factory=list)

    @property
    def drained(self) -> bool:
        """Nothing pending or in progress, deliveries of done entries included."""
        return not self.deliveries_waiting and not any(
            self.counts.get(state, 0) for state in UNFINISHED_STATES
        )

    @property
    def failed_deliveries(self) -> list[Delivery]:
        """Deliveries this run moved to ``failed`` or ``rejected``."""
        return [d for d in self.deliveries if d.state in _REFUSED_DELIVERIES]

    @property
    def this_run(self) -> dict[str, int]:
        """This run's counts: entries submitted, done, failed and rejected."""
        return {
            "submitted": self.submitted,
            "done": len(self.written),
            "failed": len(self.failed),
            "rejected": len(self.rejected),
        }

    @property
    def exit_code(self) -> ExitCode:
        """What ``outbox flush`` exits with after this run (see :class:`ExitCode`)."""
        if self.unexpected:
            return ExitCode.UNEXPECTED
        if self.auth_error:
            return ExitCode.KEY_REFUSED
        if not self.drained or self.journal_trouble:
            return ExitCode.TRY_LATER
        if self.failed or self.rejected or self.failed_deliveries:
            return ExitCode.DATA_ERROR
        return ExitCode.OK

    @property
    def notes(self) -> list[str]:
        """What happened that needs nobody: the rate limit, a deadline reached mid-work."""
        lines: list[str] = []
        if self.rate_limited:
            lines.append(
                f"rate limited {self.rate_limited} time(s) by Craftkit; requests were slowed down"
            )
        if self.timed_out:
            lines.append("the --timeout ended this run with work due; it carries on next time")
        return lines

    @property
    def problems(self) -> list[str]:
        """One line per problem a person must act on, each saying what to do about it.

        Waiting for the network, a server that is down or a render that is not finished are
        not problems: :attr:`waiting` says when the work is due again.
        """
        lines: list[str] = []
        if self.auth_error:
            lines.append(
                f"{self.auth_error}: fix the API key (the CLI reads it from {ENV_API_KEY}); "
                "nothing was consumed"
            )
        if self.journal_trouble:
            lines.append(f"journal: {self.journal_trouble}")
        for entry in self.rejected:
            lines.append(f"rejected {entry.id} ({entry.template}, key {entry.key}): {entry.error}")
            for name, messages in (entry.field_errors or {}).items():
                lines.append(f"  field {name}: {'; '.join(messages)}")
        for entry in self.failed:
            lines.append(
                f"failed {entry.id} ({entry.template}): {entry.error}; retry it to render again"
            )
        for delivery in self.failed_deliveries:
            lines.append(
                f"{delivery.state.value} {delivery.entry_id} {delivery.describe()}: "
                f"{delivery.error}; the entry stays done"
            )
            for name, messages in (delivery.field_errors or {}).items():
                lines.append(f"  field {name}: {'; '.join(messages)}")
        for entry in self.stuck:
            lines.append(f"stuck {entry.id} ({entry.state}): {entry.error}")
        lines.extend(self.unexpected)
        return lines


class Engine:
    """Owns the client, the gate and the worker threads for one journal."""

    def __init__(
        self,
        journal: Journal,
        *,
        api_key: str,
        base_url: str,
        downloads: Path,
        settings: Settings,
        clock: Clock,
        transport: httpx.BaseTransport | None = None,
        purge: Callable[[float], int] | None = None,
    ) -> None:
        self.journal = journal
        #: Purges finished entries older than so many seconds (``Outbox.purge``, which keeps
        #: what a drop folder is still owed); without it, the journal's own purge.
        self.purge: Callable[[float], int] = purge or (
            lambda seconds: journal.purge(self.clock.now() - seconds)
        )
        self.settings = settings
        self.schedule = schedule = settings.schedule
        self.clock = clock
        self.client = CraftkitClient(
            base_url,
            api_key,
            connect_timeout=settings.connect_timeout,
            read_timeout=settings.read_timeout,
            request_timeout=settings.request_timeout,
            download_timeout=settings.download_timeout,
            max_pdf_bytes=settings.max_pdf_bytes,
            max_connections=settings.concurrency_ceiling * 2,
            retries=settings.retries,
            transport=transport,
            monotonic=clock.monotonic,
            sleep=clock.sleep,
            schedule=schedule,
        )
        self.gate = Gate(self.client, journal, clock=clock, schedule=schedule)
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        self.executor = started_pool(settings.concurrency_ceiling)
        self.limit = ConcurrencyLimit(settings.concurrency, settings.concurrency_ceiling)
        self.crew = Crew(
            journal=journal,
            gate=self.gate,
            clock=clock,
            owner=self.owner,
            executor=self.executor,
            limit=self.limit,
            lease_seconds=settings.lease_seconds,
            schedule=schedule,
        )
        self.render_times = RenderTimes(schedule)
        saved = journal.status().get("render_seconds")
        if isinstance(saved, list):
            self.render_times.seed([float(v) for v in saved if isinstance(v, int | float)])
        self._saved_render_times = self.render_times.snapshot()
        self._saved_concurrency: dict[str, int] | None = None
        self.dispatcher = Dispatcher(self.crew, self.client, self.render_times)
        self.replay = Replay(self.crew, self.client, self.render_times, downloads)
        self.courier = Courier(self.crew, self.client)
        self._nudge = threading.Event()
        self._remove_listener = journal.add_listener(self._on_change)
        #: Called on every pass of :meth:`run` (a supervisor's heartbeat).
        self.pulse: Callable[[], None] = _nothing

    def _on_change(self, event: Event) -> None:
        if event.from_state is None or event.to_state is State.PENDING:
            self._nudge.set()  # new or retried work: a waiting run loop should look now

    def nudge(self) -> None:
        """Wake a waiting :meth:`run` loop (new work, or time to stop)."""
        self._nudge.set()

    def close(self) -> None:
        """Stop the workers, give back our leases, remember render times, close connections."""
        self._remove_listener()
        self.executor.shutdown(wait=True, cancel_futures=True)
        try:
            released = self.journal.release_all(self.owner)
            if released:
                log.debug("gave back %d leases", released)
            self._save_render_times()
        finally:
            self.client.close()

    def _save_render_times(self) -> None:
        """Remember recent render durations, so the next process polls well from the start,
        and record the concurrency reached (``outbox status`` shows it)."""
        recent = self.render_times.recent()
        if recent and recent != self._saved_render_times:
            self.journal.set_status("render_seconds", recent)
            self._saved_render_times = recent
        concurrency = {
            "current": self.limit.value,
            "configured": self.settings.concurrency,
            "max": self.limit.maximum,
        }
        if concurrency != self._saved_concurrency:
            self.journal.set_status("concurrency", concurrency)
            self._saved_concurrency = concurrency

    # -- one pass ------------------------------------------------------------------------

    def cycle(self, *, deadline: float | None, stop: threading.Event | None) -> int:
        """Download, poll, deliver and submit whatever falls due, as one pipeline, until
        nothing is due or in flight; returns how many items were handled.

        The phases share the request slots: finishing work goes first, so the first PDFs land
        while later entries are still being submitted.
        """
        phases: list[Phase[Any]] = [
            self.replay.download_phase(deadline=deadline),
            self.replay.poll_phase(deadline=deadline),
            self.courier.delivery_phase(deadline=deadline),
            self.dispatcher.submit_phase(deadline=deadline),
        ]
        return self.crew.work(phases, deadline=deadline, stop=stop)

    def deliver_now(self, delivery_id: str, timeout: float) -> Delivery:
        """Carry out one delivery at once (``Outbox.share``); returns it as it then stands.

        If it cannot be finished now (offline, a lost answer), it stays in the journal and a
        later flush or run finishes it, reconciled like any other.
        """
        self.reclaim_dead_leases()
        deadline = self.clock.monotonic() + timeout
        while True:
            self.courier.deliver_due(deadline=deadline, only=delivery_id)
            delivery = self.journal.get_delivery(delivery_id)
            if delivery.state.is_finished or self.gate.blocked:
                return delivery
            wait = max(delivery.due_at - self.clock.now(), self.schedule.between_passes)
            if self.clock.monotonic() + wait >= deadline:
                return delivery
            self.clock.wait(self._nudge, wait)

    def reclaim_dead_leases(self) -> None:
        """Take back leases of processes on this machine that died (e.g. killed mid-request)."""
        host = socket.gethostname()
        for owner in self.journal.lease_owners():
            owner_host, _, rest = owner.partition(":")
            pid_text = rest.partition(":")[0]
            if owner_host != host or not pid_text.isdigit() or owner == self.owner:
                continue
            if not process_alive(int(pid_text)):
                count = self.journal.release_all(owner)
                log.debug("took back %d leases of a stopped process (%s)", count, owner)

    def next_due(self) -> float | None:
        """When the earliest unfinished entry is due (wall clock), or None if there is none."""
        return self.journal.next_due_at(_UNFINISHED, horizon=self.schedule.horizon)

    def _until_due(self, handled: int) -> float | None:
        """Seconds until unfinished work is due (None: there is none).

        If work looks due but this pass handled nothing, another process holds it: look again
        shortly rather than spinning.
        """
        horizon = self.schedule.horizon
        dues = [
            due
            for due in (
                self.journal.next_due_at(_UNFINISHED, horizon=horizon),
                self.journal.next_delivery_due_at(horizon=horizon),
            )
            if due is not None
        ]
        if not dues:
            return None
        next_due = min(dues)
        wait = next_due - self.clock.now()
        floor = self.schedule.between_passes if handled else self.schedule.busy_elsewhere_wait
        return max(wait, floor)

    # -- flush ---------------------------------------------------------------------------

    def flush(
        self,
        timeout: float,
        *,
        stop: threading.Event | None = None,
        progress: Callable[[dict[State, int]], None] | None = None,
    ) -> FlushReport:
        """Work until drained, offline, refused, stopped or ``timeout`` seconds have passed."""
        deadline = self.clock.monotonic() + timeout
        finished: dict[str, State] = {}
        submitted: set[str] = set()
        moved: dict[State, int] = {}
        delivered: dict[str, None] = {}

        def collect(event: Event) -> None:
            if event.delivery_id is not None and event.delivery_state in _FINISHED_DELIVERIES:
                delivered[event.delivery_id] = None
            if event.from_state != event.to_state:
                moved[event.to_state] = moved.get(event.to_state, 0) + 1
                if event.to_state in (State.FAILED, State.REJECTED, State.DONE):
                    finished[event.entry_id] = event.to_state
                if event.from_state is State.PENDING and event.to_state in _ACCEPTED:
                    submitted.add(event.entry_id)

        remove = self.journal.add_listener(collect)
        self.crew.unexpected.clear()  # the report tells what this flush met
        timed_out = False
        next_progress = 0.0
        self.reclaim_dead_leases()
        try:
            while True:
                handled = self.cycle(deadline=deadline, stop=stop)
                if progress is not None and self.clock.monotonic() >= next_progress:
                    progress(self.journal.counts())  # a full count: at most a few times a second
                    next_progress = self.clock.monotonic() + self.schedule.progress_interval
                if (stop is not None and stop.is_set()) or self.gate.auth_error:
                    break
                if self.gate.offline_reason:
                    grace = min(deadline, self.clock.monotonic() + self.schedule.offline_grace)
                    if self.gate.probe_until_online(grace, stop):
                        continue
                    break
                wait = self._until_due(handled)
                if wait is None:
                    break
                now = self.clock.monotonic()
                if now + wait >= deadline:
                    # Work that is due when the time is up was cut short; work due later
                    # simply waits (the report says until when, and why).
                    timed_out = now >= deadline
                    break
                self.clock.wait(stop or self._nudge, min(wait, self.schedule.idle_interval))
        finally:
            remove()
        self._save_render_times()
        self.journal.sync()  # whatever this flush reports is on disk
        return self._report(moved, finished, submitted, timed_out, list(delivered))

    def _report(
        self,
        moved: dict[State, int],
        finished: dict[str, State],
        submitted: set[str],
        timed_out: bool,
        delivered: list[str],
    ) -> FlushReport:
        counts = self.journal.counts()
        deliveries_waiting = self.journal.unfinished_deliveries()
        entries = []
        for entry_id in finished:
            try:
                entries.append(self.journal.get(entry_id))
            except EntryNotFound:
                continue  # purged since
        stuck = [
            entry
            for state in (State.SUBMITTED, State.DOWNLOADING)
            for entry in self.journal.list(state=state)
            if outcomes.needs_a_person(entry)
        ]
        return FlushReport(
            counts=counts,
            moved=moved,
            failed=[e for e in entries if e.state is State.FAILED],
            rejected=[e for e in entries if e.state is State.REJECTED],
            offline=self.gate.offline_reason,
            auth_error=self.gate.auth_error.message if self.gate.auth_error else None,
            rate_limited=self.gate.rate_limited_count,
            timed_out=timed_out
            and (bool(deliveries_waiting) or any(counts[s] for s in UNFINISHED_STATES)),
            waiting=[w for state in _IN_ORDER if (w := self.waiting(state, counts[state]))],
            stuck=stuck[:20],
            unexpected=list(self.crew.unexpected),
            journal_trouble=self.crew.journal_trouble,
            deliveries=[self.journal.get_delivery(delivery_id) for delivery_id in delivered],
            deliveries_waiting=deliveries_waiting,
            submitted=len(submitted),
            written=[e for e in entries if e.state is State.DONE],
        )

    def waiting(self, state: State, count: int) -> Waiting | None:
        """When the first unfinished entry of ``state`` is due, and why it waits."""
        if not count:
            return None
        entry = self.journal.next_due(state, horizon=self.schedule.horizon)
        if entry is None:
            return None
        now = self.clock.now()
        due = entry.due_at if now < entry.due_at <= now + self.schedule.horizon else None
        return Waiting(state, count, due, self._why_waiting(entry, due), entry.id)

    def _why_waiting(self, entry: Entry, due: float | None) -> str | None:
        if self.gate.auth_error is not None:
            return "the API key was refused"
        if self.gate.offline_reason is not None:
            return f"offline: {self.gate.offline_reason}"
        if entry.error:
            return entry.error
        if due is not None and self.gate.rate_limited_count:
            return "rate limited by Craftkit; requests are slowed down"
        if entry.state is State.SUBMITTED:
            return f"rendering at Craftkit ({entry.remote_status or 'queued'})"
        return None

    # -- long-running --------------------------------------------------------------------

    def purge_expired(self) -> int:
        """Purge finished entries older than ``settings.retention`` (none if it is None);
        returns how many went. Their pages are reused by new entries, so a journal with a
        retention stops growing; ``outbox vacuum`` gives the space back to the disk."""
        retention = self.settings.retention
        if retention is None:
            return 0
        try:
            purged = self.purge(retention)
        except JournalError as exc:
            log.warning("could not purge finished entries (%s); trying again later", exc)
            return 0
        if purged:
            log.info("purged %d finished entries older than the retention", purged)
        return purged

    def run(self, stop: threading.Event) -> None:
        """Cycle until ``stop`` is set, waiting out outages and refused keys."""
        self.reclaim_dead_leases()
        saved_at = self.clock.monotonic()
        purged_at: float | None = None
        while not stop.is_set():
            if self.clock.monotonic() - saved_at > self.schedule.save_render_times_every:
                self._save_render_times()
                saved_at = self.clock.monotonic()
            if purged_at is None or (
                self.clock.monotonic() - purged_at > self.schedule.retention_every
            ):
                self.purge_expired()
                purged_at = self.clock.monotonic()
            self._nudge.clear()
            handled = self.cycle(deadline=None, stop=stop)
            if stop.is_set():
                break
            self.pulse()
            if self.gate.auth_error:
                self.clock.wait(stop, self.schedule.auth_retry)
                self.gate.forget_auth_failure()
                continue
            if self.gate.offline_reason:
                self.gate.probe_until_online(None, stop)
                continue
            wait = self._until_due(handled)
            idle = self.schedule.idle_interval
            wait = idle if wait is None else min(wait, idle)
            if wait >= self.schedule.sync_within:
                self.journal.sync()  # idle for a while: nothing routine waits for a sync
            self.clock.wait(self._nudge, wait)


def _nothing() -> None:
    pass


def started_pool(workers: int) -> ThreadPoolExecutor:
    """A pool of ``workers`` threads, all started now: a long run's thread count is the same
    from its first minute to its last, rather than growing whenever the adaptive concurrency
    reaches a level it had not reached before (a thread pool starts threads only when a task
    finds none idle)."""
    pool = ThreadPoolExecutor(workers, thread_name_prefix="outbox")
    everyone = threading.Barrier(workers + 1)
    for _ in range(workers):
        pool.submit(everyone.wait)  # each waits, so the next task finds no idle thread
    everyone.wait()
    return pool
