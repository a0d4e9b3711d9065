"""How many requests may be in flight at once, adapted to what the API can take (AIMD).

Like TCP's congestion window and Netflix's concurrency-limits: start at the configured value;
after a whole round of answers (as many as the limit) whose latency stayed flat, allow one
more (additive increase), up to a configured maximum; on a sign of overload (a 429 or a 503)
halve it (multiplicative decrease), at most once per round: the requests that were already on the
wire then answer the same. "Flat" compares each answer with the quickest recent answer of its kind
(a submit with submits, a download with downloads), so a big PDF is not mistaken for a slow API.
"""

from __future__ import annotations

import threading
from collections import deque

#: How many recent answers of a kind set its baseline (the quickest of them).
_BASELINE_WINDOW = 50


class ConcurrencyLimit:
    """The current limit on requests in flight. Thread-safe."""

    def __init__(
        self,
        initial: int,
        maximum: int,
        *,
        tolerance: float = 2.0,
        decrease: float = 0.5,
        minimum: int = 1,
    ) -> None:
        if not 1 <= minimum <= initial <= maximum:
            raise ValueError(f"not a concurrency limit: {minimum} <= {initial} <= {maximum}")
        self.maximum = maximum
        self.minimum = minimum
        self.tolerance = tolerance
        self.decrease = decrease
        self._lock = threading.Lock()
        self._value = initial
        self._flat = 0  # answers with flat latency since the limit last changed
        self._since_decrease: int | None = None  # answers since the last decrease
        self._in_flight_then = 0  # the limit before the last decrease
        self._latencies: dict[str, deque[float]] = {}

    @property
    def value(self) -> int:
        with self._lock:
            return self._value

    def answered(self, kind: str, seconds: float) -> None:
        """A request of ``kind`` got an answer that does not say "overloaded", after
        ``seconds``: grow by one after a whole round of flat answers."""
        with self._lock:
            recent = self._latencies.setdefault(kind, deque(maxlen=_BASELINE_WINDOW))
            baseline = min(recent, default=seconds)
            recent.append(seconds)
            if self._since_decrease is not None:
                self._since_decrease += 1
            if seconds > baseline * self.tolerance:
                self._flat = 0  # the API (or the link) slows down: no growth this round
                return
            self._flat += 1
            if self._flat >= self._value and self._value < self.maximum:
                self._value += 1
                self._flat = 0

    def overloaded(self) -> None:
        """The API said it is overloaded (429, 503): halve the limit, once per round."""
        with self._lock:
            if self._since_decrease is not None and self._since_decrease < self._in_flight_then:
                return  # an answer to a request sent before the last decrease
            self._in_flight_then = self._value
            self._value = max(self.minimum, int(self._value * self.decrease))
            self._flat = 0
            self._since_decrease = 0
