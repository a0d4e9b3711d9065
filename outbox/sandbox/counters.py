"""In-memory request counters: how many requests each route answered, by status."""

from __future__ import annotations

import threading


class RequestCounters:
    """Counts ``{"GET /v1/renders/:id": {"200": n, "404": m}}``; thread-safe.

    Routes are patterns, never concrete ids. Besides HTTP statuses, the outcome ``"dropped"``
    counts requests whose connection was closed without an answer.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[str, dict[str, int]] = {}

    def record(self, route: str, outcome: int | str) -> None:
        """Count one answered (or dropped) request."""
        key = str(outcome)
        with self._lock:
            by_status = self._counts.get(route)
            if by_status is None:
                by_status = self._counts[route] = {}
            by_status[key] = by_status.get(key, 0) + 1

    def snapshot(self) -> dict[str, dict[str, int]]:
        """A copy of the counts."""
        with self._lock:
            return {route: dict(by_status) for route, by_status in self._counts.items()}

    def total(self, outcome: int | str) -> int:
        """How many requests, over all routes, ended with ``outcome``."""
        key = str(outcome)
        with self._lock:
            return sum(by_status.get(key, 0) for by_status in self._counts.values())
