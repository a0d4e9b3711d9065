"""What the network lets outbox do right now, shared by the dispatcher and the replay loop.

Three conditions stop or slow every request at once, rather than entry by entry:

- **offline**: the API could not be reached, or something else answered. Requests stop and a
  single prober checks ``GET /health`` with backoff until the real API answers. An odd answer
  (a redirect, a body that is not the API's) is checked against ``GET /health`` first
  (:meth:`Gate.health_ok`): when the API answers ok, it concerns that one request only. Only
  the API's own address decides: a public download URL on another host never does.
- **auth**: the API key was refused (401/403). Everything pauses; nothing is consumed.
- **rate limited**: a 429. Everyone waits out ``Retry-After``, and the pace of new requests is
  halved; it then creeps back up while answers keep coming (additive increase, multiplicative
  decrease), so the dispatcher slows down instead of hammering.

Changes of condition are recorded in the journal's status table for ``outbox status``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from .client import CraftkitClient
from .clock import Clock
from .errors import AuthError, Offline, RateLimited, RemoteError, ServerError
from .logs import fields
from .schedule import Schedule
from .store import Journal

log = logging.getLogger(__name__)


class Gate:
    """Thread-safe shared state: connectivity, authentication and request pacing."""

    def __init__(
        self,
        client: CraftkitClient,
        journal: Journal,
        *,
        clock: Clock,
        schedule: Schedule | None = None,
    ) -> None:
        self.client = client
        self.journal = journal
        self.clock = clock
        self.schedule = schedule or Schedule()
        self.pacing = self.schedule.pacing
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self.offline_reason: str | None = None
        self.auth_error: AuthError | None = None
        self.rate_limited_count = 0
        self._paused_until = 0.0  # monotonic
        self._rate: float | None = None  # requests per second; None = unlimited
        self._next_slot = 0.0  # monotonic
        self._recent: list[float] = []  # monotonic start times of recent requests
        self._answered_before = False
        self._key_accepted_before = False
        self._server_trouble: str | None = None  # the last 5xx while in trouble
        self._healthy_at: float | None = None  # monotonic time of the last ok health check
        self._server_record_lock = threading.Lock()
        self._limit_recorded = False  # this process recorded a rate limit not yet over
        self._limit_fact_lock = threading.Lock()  # orders rate-limit decisions with records
        self._last_limited = 0.0  # monotonic time of the last 429
        #: Called while probing a long outage (a supervisor's heartbeat).
        self.pulse: Callable[[], None] = _nothing

    # -- conditions ----------------------------------------------------------------------

    @property
    def blocked(self) -> bool:
        """True while offline or while the key is refused: no request should be started."""
        return self.offline_reason is not None or self.auth_error is not None

    def went_offline(self, exc: Offline) -> None:
        with self._lock:
            first = self.offline_reason is None
            self.offline_reason = exc.message
            self._healthy_at = None
        if first:
            log.warning(
                "offline: %s", exc.message, extra=fields(event="offline", reason=exc.message)
            )
            self._record("connectivity", {"online": False, "reason": exc.message})

    def key_refused(self, exc: AuthError) -> None:
        with self._lock:
            first = self.auth_error is None
            self.auth_error = exc
        if first:
            log.error(
                "the API key was refused: %s; nothing was consumed",
                exc.message,
                extra=fields(event="key_refused", reason=exc.message),
            )
            self._record("auth", {"ok": False, "reason": exc.message})

    def rate_limited(self, exc: RateLimited) -> float:
        """Pause everyone for ``Retry-After`` and halve the pace; returns the pause length."""
        pacing = self.pacing
        pause = pacing.pause_after(exc.retry_after)
        now = self.clock.monotonic()
        with self._lock:
            self.rate_limited_count += 1
            self._paused_until = max(self._paused_until, now + pause)
            recent = [t for t in self._recent if t > now - pacing.window]
            observed = len(recent) / pacing.window if recent else 1.0
            current = self._rate if self._rate is not None else observed
            self._rate = max(pacing.slowest, min(current, observed) * pacing.decrease)
            self._last_limited = now
        with self._limit_fact_lock:
            with self._lock:
                first = not self._limit_recorded
                self._limit_recorded = True
            if first:
                self._record("rate_limit", {"limited": True, "reason": exc.message})
        if first:
            log.info(
                "rate limited by Craftkit (%s); slowing down",
                exc.message,
                extra=fields(event="rate_limited", reason=exc.message),
            )
        log.debug("rate limited; pausing %.1f s, pace now %.1f requests/s", pause, self._rate)
        return pause

    def server_error(self, exc: ServerError) -> None:
        """Craftkit answered 5xx: it is reachable, but in trouble."""
        self.answered(healthy=False)
        with self._lock:
            first = self._server_trouble is None
            self._server_trouble = exc.message
        if first:
            log.warning(
                "Craftkit server trouble: %s",
                exc.message,
                extra=fields(event="server_trouble", reason=exc.message),
            )
            self._record_server()

    def answered(self, *, healthy: bool = True) -> None:
        """A request got a real answer from the API: online, and the pace may rise."""
        with self._lock:
            was_offline = self.offline_reason is not None
            first = not self._answered_before
            self._answered_before = True
            self.offline_reason = None
            recovered = healthy and self._server_trouble is not None
            if recovered:
                self._server_trouble = None
            if self._rate is not None and healthy:
                self._rate += self.pacing.increase
        if was_offline:
            log.info(
                "online again: %s answers",
                self.client.base_url,
                extra=fields(event="online", base_url=self.client.base_url),
            )
        if recovered:
            log.info("Craftkit server ok again", extra=fields(event="server_ok"))
        if was_offline or first:
            self._record("connectivity", {"online": True, "reason": None})
        if recovered or (first and healthy):
            self._record_server()
        if healthy:
            self._clear_limit_if_over(first_answer=first)

    def _clear_limit_if_over(self, *, first_answer: bool) -> None:
        """A clean answer contradicts a recorded rate limit: at a process's first answer (an
        earlier process's limit), or once no 429 came for ``rate_limit_clear``.

        The decision and its record happen under one lock shared with :meth:`rate_limited`,
        so a 429 answered concurrently can never be recorded before a stale "cleared".
        """
        with self._limit_fact_lock:
            with self._lock:
                over = (first_answer and not self._limit_recorded) or (
                    self._limit_recorded
                    and self.clock.monotonic() - self._last_limited > self.schedule.rate_limit_clear
                )
                if over:
                    self._limit_recorded = False
            if over:
                self._record("rate_limit", {"limited": False, "reason": None})

    def key_accepted(self) -> None:
        """An authenticated request succeeded: clear a recorded authentication failure."""
        with self._lock:
            first = not self._key_accepted_before
            self._key_accepted_before = True
            self.auth_error = None
        if first:
            self._record("auth", {"ok": True, "reason": None})

    def forget_auth_failure(self) -> None:
        """Allow requests again after a refused key (a long-running process tries again later)."""
        with self._lock:
            self.auth_error = None

    def note(self, exc: RemoteError) -> None:
        """Act on an error that concerns every request (offline, key refused, 429, 5xx)."""
        if isinstance(exc, ServerError):
            self.server_error(exc)
        elif isinstance(exc, Offline):
            self.went_offline(exc)
        elif isinstance(exc, AuthError):
            self.key_refused(exc)
        elif isinstance(exc, RateLimited):
            self.rate_limited(exc)

    def health_ok(self, deadline: float | None) -> bool:
        """Whether the API's ``GET /health`` answers ok now (see
        :func:`outbox.outcomes.needs_health_check`).

        An ok answer is believed for ``schedule.health_confirm_ttl`` seconds, so many entries
        that each got one odd answer cost one health check, not one each.
        """
        now = self.clock.monotonic()
        with self._lock:
            recent = self._healthy_at
        if recent is not None and now - recent < self.schedule.health_confirm_ttl:
            return True
        try:
            self.client.health(deadline=deadline)
        except RemoteError as exc:
            log.debug("health check not ok: %s", exc.message)
            return False
        with self._lock:
            self._healthy_at = self.clock.monotonic()
        return True

    # -- waiting -------------------------------------------------------------------------

    def acquire(self, deadline: float | None, stop: threading.Event | None = None) -> bool:
        """Wait for this request's turn; False if blocked, stopped or out of time first."""
        while True:
            if self.blocked or (stop is not None and stop.is_set()):
                return False
            now = self.clock.monotonic()
            with self._lock:
                start = max(now, self._paused_until, self._next_slot)
                if start <= now:
                    if self._rate is not None:
                        self._next_slot = now + 1.0 / self._rate
                    self._recent.append(now)
                    if len(self._recent) > 256:
                        del self._recent[:128]
                    return True
            if deadline is not None and start >= deadline:
                return False
            self.clock.wait(stop or self._wake, min(start - now, self.schedule.gate_wait_slice))

    def probe_until_online(
        self, deadline: float | None, stop: threading.Event | None = None
    ) -> bool:
        """Check ``GET /health`` with backoff until the API answers; False if out of time."""
        probes = 0
        while self.offline_reason is not None:
            try:
                self.client.health(deadline=deadline)
            except Offline as exc:
                log.debug("still offline: %s", exc.message)
                with self._lock:
                    self.offline_reason = exc.message
            except RemoteError as exc:
                # Something answered like an HTTP server but not healthy (e.g. 503): the API is
                # there but not usable yet; keep probing.
                log.debug("health check not ok: %s", exc.message)
            else:
                with self._lock:
                    self._healthy_at = self.clock.monotonic()
                self.answered()
                return True
            probes += 1
            self.pulse()
            delay = self.schedule.health_probe.delay(probes)
            now = self.clock.monotonic()
            if deadline is not None and now + delay >= deadline:
                return False
            if self.clock.wait(stop or self._wake, delay) and stop is not None:
                return False
        return True

    def _record_server(self) -> None:
        """Record the server's health as it is now. Threads that see trouble start and end at
        the same moment record one after the other, each reading the state afresh, so the
        last record is the latest state (not whichever thread happened to write last)."""
        with self._server_record_lock:
            with self._lock:
                trouble = self._server_trouble
            self._record("server", {"ok": trouble is None, "reason": trouble})

    def _record(self, name: str, value: object) -> None:
        try:
            self.journal.set_status(name, value)
        except Exception:  # the status line is informational; never let it break a flush
            log.warning("could not record %s status", name, exc_info=True)


def _nothing() -> None:
    pass
