"""Time, passed in rather than read from globals, so tests never sleep for a backoff.

Persisted times are wall-clock UTC seconds (``now()``); durations inside one process use
``monotonic()``, which does not jump when a field device's clock is changed.
"""

from __future__ import annotations

import math
import threading
import time
from datetime import datetime


class Clock:
    """The real clock. Subclass or replace it in tests (or use freezegun)."""

    def now(self) -> float:
        """Wall-clock UTC time in seconds since the epoch."""
        return time.time()

    def monotonic(self) -> float:
        """Seconds from an arbitrary point; only differences mean anything."""
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        """Sleep ``seconds`` (the client's quick in-call retries)."""
        time.sleep(max(0.0, seconds))

    def wait(self, event: threading.Event, seconds: float) -> bool:
        """Sleep up to ``seconds`` or until ``event`` is set; returns whether it was set."""
        return event.wait(max(0.0, seconds))


def iso(ts: float) -> str:
    """UTC ISO-8601 with milliseconds and a ``Z``, the format Craftkit uses.

    The same text as ``datetime.fromtimestamp(ts, UTC)`` formatted (microseconds rounded half
    to even, then cut to milliseconds), made without a datetime: every enqueue stamps one.
    The date and time to the second are kept for the last second stamped (the next stamps
    are mostly in the same second).
    """
    global _last_second
    fraction, whole = math.modf(ts)
    micro = round(fraction * 1e6)
    if micro >= 1_000_000:
        whole, micro = whole + 1, micro - 1_000_000
    elif micro < 0:
        whole, micro = whole - 1, micro + 1_000_000
    second, text = _last_second
    if second != whole:
        t = time.gmtime(whole)
        text = (
            f"{t.tm_year:04d}-{t.tm_mon:02d}-{t.tm_mday:02d}T{t.tm_hour:02d}:{t.tm_min:02d}:"
            f"{t.tm_sec:02d}."
        )
        _last_second = (whole, text)  # one tuple: threads see the old pair or the new one
    return f"{text}{micro // 1000:03d}Z"


#: The last whole second :func:`iso` stamped, and its text up to the fraction.
_last_second: tuple[float, str] = (math.nan, "")


def parse_iso(text: str) -> float:
    """Inverse of :func:`iso`; also accepts ``+00:00`` offsets."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
