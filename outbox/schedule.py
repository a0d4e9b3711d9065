"""When to try again: retry backoff, the polling schedule, and the render-time estimate.

Pure functions of counts and ages; the results are stored per entry as ``due_at`` in the
journal, so the schedule survives restarts and no thread sleeps through a backoff.
"""

from __future__ import annotations

import random
import statistics
import threading
from collections import deque

#: Craftkit's documented polling back-off while someone is watching: 250 ms up to 5 s.
DOCS_POLL_SCHEDULE = (0.25, 0.5, 1.0, 2.0, 5.0)
#: After this long unfinished, a render is polled at a quarter of its age (up to the cap).
PATIENT_AFTER = 30.0
#: Longest gap between two polls of an unfinished render.
POLL_CAP = 300.0
#: Longest gap between two submission attempts.
RETRY_CAP = 300.0
#: No schedule is ever further ahead than this; a ``due_at`` beyond it means the clock jumped.
HORIZON = 3600.0


def retry_delay(attempts: int, *, base: float = 1.0, cap: float = RETRY_CAP) -> float:
    """Capped exponential backoff with jitter (1, 2, 4 ... s, each between half and full)."""
    ceiling = min(cap, base * 2.0 ** max(0, attempts - 1))
    return ceiling / 2 + random.uniform(0, ceiling / 2)


def poll_delay(polls: int, age: float) -> float:
    """Seconds until the next poll of a render that has been polled ``polls`` times.

    Follows the docs' schedule while the render is young; a render that stays unfinished for
    long is polled less and less often (a quarter of its age, at most :data:`POLL_CAP`), so
    thousands of old renders never hammer the API. Nothing ever stops polling.
    """
    if age < PATIENT_AFTER:
        return DOCS_POLL_SCHEDULE[min(polls, len(DOCS_POLL_SCHEDULE) - 1)]
    return min(POLL_CAP, max(DOCS_POLL_SCHEDULE[-1], age / 4))


class RenderTimes:
    """Recent render durations, to make the first poll when a render is likely finished.

    Polling at 250 ms, 750 ms, 1.75 s ... costs three polls for a one-second render; waiting
    about as long as recent renders took usually needs just one.
    """

    def __init__(self, window: int = 50) -> None:
        self._lock = threading.Lock()
        self._seconds: deque[float] = deque(maxlen=window)

    def add(self, seconds: float) -> None:
        if 0 <= seconds < HORIZON:
            with self._lock:
                self._seconds.append(seconds)

    def seed(self, values: list[float]) -> None:
        for value in values:
            self.add(value)

    def snapshot(self) -> list[float]:
        with self._lock:
            return list(self._seconds)

    def first_poll_delay(self) -> float:
        """Wait about as long as three in four recent renders took; the docs' 250 ms if unknown."""
        with self._lock:
            values = list(self._seconds)
        if len(values) < 3:
            return DOCS_POLL_SCHEDULE[0]
        typical = statistics.quantiles(values, n=4)[2]
        return min(max(DOCS_POLL_SCHEDULE[0], typical * 1.05), DOCS_POLL_SCHEDULE[-1])
