"""When to act: every timing decision outbox makes, in one :class:`Schedule`.

The strategies are small frozen objects, in the style of tenacity's wait strategies:
:class:`Backoff` (capped exponential, jittered), :class:`PollSchedule` (how often to ask about
an unfinished render), :class:`RenderTimeEstimate` (when the first poll is likely to find a
render finished) and :class:`Pacing` (how requests spread out after a 429). A
:class:`Schedule` gathers them with the plain intervals, and
:attr:`outbox.config.Settings.schedule` carries it to every module that waits for anything.

Randomness comes from each :class:`Backoff`'s ``rng``, so tests pass a seeded
:class:`random.Random` (:meth:`Schedule.with_rng`). Delays are stored per entry as ``due_at``
in the journal, so the schedule survives restarts and no thread sleeps through a backoff.
"""

from __future__ import annotations

import dataclasses
import random
import statistics
import threading
from collections import deque
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Backoff:
    """Capped exponential backoff with jitter: ``base``, ``2·base``, ``4·base`` ... up to ``cap``.

    The n-th delay lies between ``(1 - jitter)`` and all of its ceiling
    ``min(cap, base · 2^(n-1))``: ``jitter=0.5`` is "between half and full", ``jitter=1`` is
    tenacity's ``wait_random_exponential``, ``jitter=0`` is no randomness at all.
    """

    base: float
    cap: float
    jitter: float = 0.5
    rng: random.Random = field(default_factory=random.Random, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not (0 < self.base <= self.cap and 0 <= self.jitter <= 1):
            raise ValueError(f"not a backoff: base {self.base}, cap {self.cap}, {self.jitter=}")

    def ceiling(self, attempt: int) -> float:
        """The longest the ``attempt``-th delay can be (attempts count from 1)."""
        doublings = min(max(0, attempt - 1), 64)  # 2^64·base is past any cap already
        return min(self.cap, self.base * 2.0**doublings)

    def delay(self, attempt: int) -> float:
        """Seconds to wait before the ``attempt``-th try again."""
        ceiling = self.ceiling(attempt)
        return ceiling * (1 - self.jitter) + self.rng.uniform(0, ceiling * self.jitter)


@dataclass(frozen=True)
class PollSchedule:
    """How long to wait between two polls of a render that is not finished yet.

    Follows the docs' schedule (``steps``) while the render is young; one that stays unfinished
    for long is polled less and less often (``age_fraction`` of its age, at most ``cap``), so
    thousands of old renders never hammer the API. Nothing ever stops polling.
    """

    #: Craftkit's documented polling back-off while someone is watching: 250 ms up to 5 s.
    steps: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0, 5.0)
    #: After this long unfinished, a render is polled at a fraction of its age.
    patient_after: float = 30.0
    age_fraction: float = 0.25
    #: Longest gap between two polls of an unfinished render.
    cap: float = 300.0

    def delay(self, polls: int, age: float) -> float:
        """Seconds until the next poll of a render polled ``polls`` times, ``age`` seconds old."""
        if age < self.patient_after:
            return self.steps[min(polls, len(self.steps) - 1)]
        return min(self.cap, max(self.steps[-1], age * self.age_fraction))


@dataclass(frozen=True)
class RenderTimeEstimate:
    """When to poll a new render first: about when three in four recent renders were done.

    Polling at 250 ms, 750 ms, 1.75 s ... costs three polls for a one-second render; waiting
    about as long as recent renders took usually needs just one. Before anything is known (the
    first flush of a new journal), a few ``probes`` are polled on the docs' schedule, to learn
    quickly, while the others wait for the ``prior``; the first render that finishes sets the
    estimate for the rest of the batch (see :class:`RenderTimes`).
    """

    #: How many recent durations to remember.
    window: int = 50
    #: Below this many known durations, nothing is known: probes and the prior.
    min_samples: int = 1
    #: Which quartile of recent durations to wait for (3: three in four were done by then).
    quartile: int = 3
    #: A little longer than that, so the poll does not arrive just before the PDF.
    margin: float = 1.05
    #: How many recent durations a journal keeps for the next process.
    saved: int = 20
    #: While nothing is known, this many renders are polled on the docs' schedule ...
    probes: int = 2
    #: ... and the others wait this long for their first poll (or until a probe finishes).
    prior: float = 1.0

    def first_poll_delay(self, durations: list[float], polling: PollSchedule) -> float:
        """Seconds from submitting to the first poll, given recent render durations: never
        sooner than the poll schedule's first step (the docs' 250 ms) nor later than its last.
        While too little is known, the prior."""
        shortest, longest = polling.steps[0], polling.steps[-1]
        if len(durations) < max(1, self.min_samples):
            typical = self.prior
        elif len(durations) == 1:
            typical = durations[0] * self.margin
        else:
            typical = statistics.quantiles(durations, n=4)[self.quartile - 1] * self.margin
        return min(max(shortest, typical), longest)


@dataclass(frozen=True)
class Pacing:
    """How requests are spread out after a 429 (additive increase, multiplicative decrease)."""

    #: Requests per second right after a 429 is at most this fraction of the recent rate.
    decrease: float = 0.5
    #: Requests per second added back for each successful answer.
    increase: float = 0.2
    #: The slowest pace ever set, in requests per second.
    slowest: float = 0.2
    #: The recent rate is measured over this many seconds.
    window: float = 2.0
    #: Fallback wait when a 429 carries no ``Retry-After``.
    default_retry_after: float = 1.0
    #: The longest ``Retry-After`` honoured; a larger one is clamped (and logged).
    max_retry_after: float = 600.0

    def pause_after(self, retry_after: float | None) -> float:
        """How long everyone waits after a 429 that asked for ``retry_after`` seconds."""
        return self.default_retry_after if retry_after is None else retry_after


@dataclass(frozen=True)
class Schedule:
    """Every timing decision of outbox, with today's tuned values as defaults."""

    # -- submitting --
    #: Between two submissions of one entry after a lost answer or a 5xx (1, 2, 4 s ... 5 min).
    submit_retry: Backoff = Backoff(1.0, 300.0)
    #: Quick retries inside one call (a dropped connection, one 5xx), as tenacity waits them.
    quick_retry: Backoff = Backoff(0.1, 1.0, jitter=1.0)
    #: No quick retry is started with less than this many seconds left before the deadline.
    quick_retry_margin: float = 1.0
    #: A request started just before its deadline still gets this long to complete.
    min_request_timeout: float = 0.05

    # -- following renders --
    polling: PollSchedule = PollSchedule()
    first_poll: RenderTimeEstimate = RenderTimeEstimate()
    #: After a failed poll (a lost answer, a 5xx): at most this backoff ...
    poll_retry: Backoff = Backoff(1.0, 300.0)
    #: ... and at most this many times the usual gap between polls.
    poll_retry_factor: float = 4.0
    #: A render Craftkit does not know (404) is polled as if it were at least this old.
    unknown_render_age: float = 60.0

    # -- downloading --
    #: Between two tries of a download (no PDF yet, a broken transfer).
    download_retry: Backoff = Backoff(0.5, 60.0)
    #: Before trying a download again when the disk was full or not writable.
    storage_retry: float = 30.0

    # -- delivering (share links and emails) --
    #: Between two tries of a delivery: after a lost answer or a 5xx (its shares are listed
    #: first), a 409 ``not_ready``, or a failed listing (1, 2, 4 s ... 5 min).
    delivery_retry: Backoff = Backoff(1.0, 300.0)
    #: A delivery whose create may be on the wire is not looked for among the render's shares
    #: sooner than this after the create was sent, so one that a dying sender left with the
    #: server has landed by then.
    delivery_settle: float = 2.0
    #: A listed share counts as made by an attempt if Craftkit created it no more than this
    #: many seconds before the attempt started by this device's clock (clocks disagree).
    share_clock_slack: float = 120.0

    # -- the network as a whole --
    pacing: Pacing = Pacing()
    #: Between two health checks while offline (0.25 s, 0.5 s ... 10 s).
    health_probe: Backoff = Backoff(0.25, 10.0, jitter=0.0)
    #: An ok health check is believed this long when deciding whether an odd answer (a
    #: redirect, a body that is not the API's) means offline or concerns one entry only.
    health_confirm_ttl: float = 2.0
    #: How long ``flush`` keeps checking an unreachable API before leaving the work for later.
    offline_grace: float = 3.0
    #: How long a long-running outbox waits after a refused API key before trying again.
    auth_retry: float = 300.0
    #: The longest the gate sleeps at once while waiting for a request's turn.
    gate_wait_slice: float = 1.0

    # -- the engine --
    #: How often a long-running outbox looks for work enqueued by other processes.
    idle_interval: float = 1.0
    #: How often to look again when the due work is leased by another process.
    busy_elsewhere_wait: float = 0.2
    #: The shortest wait between two passes that did some work.
    between_passes: float = 0.005
    #: A move that finishes an entry (``done``, ``failed``, ``rejected``) waits up to this long
    #: for others to share its fsync (group commit); nobody hears of it before it is on disk.
    group_commit_window: float = 0.05
    #: Routine moves (a lease, a render accepted, "still rendering") are committed without an
    #: fsync; the next durable commit carries them, or a sync once the oldest is this old.
    sync_within: float = 1.0
    #: How often ``flush`` reports counts to its progress callback, at most.
    progress_interval: float = 0.25
    #: How often a long-running engine purges finished entries older than the retention
    #: (when ``Settings.retention`` is set).
    retention_every: float = 3600.0
    #: How often a long-running engine saves what it learned about render times.
    save_render_times_every: float = 60.0
    #: Before the background worker starts again after an error escaped it (1 s ... 1 min).
    worker_restart: Backoff = Backoff(1.0, 60.0)
    #: A recorded rate limit is cleared by a clean answer this many seconds after the last 429.
    rate_limit_clear: float = 60.0
    #: How often a running worker renews its status fact (``outbox status`` shows it alive,
    #: with its next due time); one not renewed for three times this long counts as gone.
    heartbeat: float = 30.0
    #: An unexpected error in a handler puts the entry aside for this long.
    unexpected_error_delay: float = 60.0
    #: No schedule is ever further ahead than this; a ``due_at`` beyond it means the clock
    #: jumped, and counts as due.
    horizon: float = 3600.0

    # -- the template cache --
    #: A rejection does not re-read a template that another rejection refreshed less than this
    #: many seconds ago: a batch queued against an old version would otherwise fetch it once
    #: per entry. (The cache's own records still tell each entry what changed.)
    template_refresh_interval: float = 30.0
    #: The longest a refresh after a rejection may take.
    template_refresh_timeout: float = 10.0

    # -- the drop folder --
    #: A file that does not parse must stay unchanged this long before it is rejected.
    drop_settle: float = 2.0
    #: A file that parses must keep its size and mtime this long before it is read as complete.
    drop_recheck: float = 0.03
    #: Between full rescans, the safety net for missed file-system events.
    drop_rescan: float = 3.0
    #: Between checks of the journal for finished entries (and of settle deadlines).
    drop_tick: float = 0.5
    #: File-system events are gathered this long (in ms) before the watcher acts on them ...
    drop_debounce_ms: int = 50
    #: ... looking for more every this many ms.
    drop_step_ms: int = 20

    def with_rng(self, rng: random.Random) -> Schedule:
        """This schedule with every backoff drawing from ``rng`` (seeded, in tests)."""
        return dataclasses.replace(
            self,
            **{
                item.name: dataclasses.replace(getattr(self, item.name), rng=rng)
                for item in dataclasses.fields(self)
                if isinstance(getattr(self, item.name), Backoff)
            },
        )


class RenderTimes:
    """Recent render durations, remembered to time the first poll as ``schedule`` says (see
    :class:`RenderTimeEstimate`). Thread-safe."""

    def __init__(self, schedule: Schedule | None = None) -> None:
        self.schedule = schedule or Schedule()
        self._lock = threading.Lock()
        self._seconds: deque[float] = deque(maxlen=self.schedule.first_poll.window)
        self._probes: set[str | None] = set()

    def add(self, seconds: float) -> bool:
        """Remember one render's duration; returns whether it is the first thing known (then
        renders waiting for the prior may be polled sooner)."""
        if not 0 <= seconds < self.schedule.horizon:
            return False
        with self._lock:
            unknown = not self._known()
            self._seconds.append(seconds)
            return unknown and self._known()

    def seed(self, values: list[float]) -> None:
        for value in values:
            self.add(value)

    def snapshot(self) -> list[float]:
        with self._lock:
            return list(self._seconds)

    def recent(self) -> list[float]:
        """The durations worth keeping for the next process (the most recent ones)."""
        return self.snapshot()[-self.schedule.first_poll.saved :]

    def first_poll_delay(self, entry_id: str | None = None) -> float:
        """Wait about as long as three in four recent renders took. While nothing is known,
        the first few renders (``entry_id`` names the render's entry) are probes, polled every
        250 ms (the docs' first step) until one finishes; the others wait for the prior."""
        estimate = self.schedule.first_poll
        with self._lock:
            if not self._known() and len(self._probes) < estimate.probes:
                self._probes.add(entry_id)
                return self.schedule.polling.steps[0]
            durations = list(self._seconds)
        return estimate.first_poll_delay(durations, self.schedule.polling)

    def probing(self, entry_id: str) -> bool:
        """Whether this entry's render is a probe and nothing is known yet."""
        with self._lock:
            return entry_id in self._probes and not self._known()

    def prior_saved(self) -> float:
        """How much sooner than the prior a render waiting for it should be polled, now that
        something is known (0 when the estimate is not shorter)."""
        estimate = self.schedule.first_poll
        wait = estimate.first_poll_delay(self.snapshot(), self.schedule.polling)
        return max(0.0, estimate.prior - wait) if self.known() else 0.0

    def known(self) -> bool:
        """Whether any render time is known yet."""
        with self._lock:
            return self._known()

    def _known(self) -> bool:
        return len(self._seconds) >= max(1, self.schedule.first_poll.min_samples)
