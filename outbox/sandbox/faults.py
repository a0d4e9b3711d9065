"""Fault injection: what can go wrong between a client and Craftkit, on demand.

:class:`Faults` is the plain description (all off by default). :class:`FaultInjector` holds
the current :class:`Faults`, a seeded random generator (so a seeded sandbox injects the same
faults for the same sequence of requests), a sliding-window rate limiter, and counters of the
faults it injected. It is shared by every request thread, so all its methods are thread-safe.
"""

from __future__ import annotations

import dataclasses
import math
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any

#: Faults that are probabilities (0.0 = never, 1.0 = always).
PROBABILITIES = (
    "error_500_before",
    "error_503_before",
    "error_500_after",
    "drop_after",
    "truncate_downloads",
    "hang",
)


@dataclass(frozen=True)
class Faults:
    """Faults the sandbox injects; every one is off by default.

    - ``latency``: seconds added to every request (control endpoints excepted).
    - ``error_500_before`` / ``error_503_before``: probability that a render POST answers
      500 ``internal`` / 503 ``queue_unavailable`` before anything is created.
    - ``error_500_after``: probability that a new render is created and then 500 is returned.
    - ``drop_after``: probability that a new render is created and then the connection is
      closed without any response (the client never learns the outcome).
    - ``rate_limit``: requests per second allowed over all ``/v1/*`` requests (None = no
      limit); above it 429 ``rate_limited`` with a ``Retry-After`` header in whole seconds.
    - ``truncate_downloads``: probability that a PDF download announces the full
      ``Content-Length`` but sends only part of the body, then closes the connection.
    - ``hang``: probability that a ``/v1/*`` request waits ``hang_seconds`` before it is
      handled (a stop of the sandbox ends the wait and drops the connection).
    - ``captive_portal``: every request (``/health`` included, control endpoints excepted)
      gets ``200 text/html`` with a login page, like a hotel Wi-Fi portal.
    """

    latency: float = 0.0
    error_500_before: float = 0.0
    error_503_before: float = 0.0
    error_500_after: float = 0.0
    drop_after: float = 0.0
    rate_limit: float | None = None
    truncate_downloads: float = 0.0
    hang: float = 0.0
    hang_seconds: float = 600.0
    captive_portal: bool = False

    def __post_init__(self) -> None:
        for name in PROBABILITIES:
            value = getattr(self, name)
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not 0.0 <= value <= 1.0
            ):
                raise ValueError(f"{name} must be a probability between 0 and 1, not {value!r}")
        for name in ("latency", "hang_seconds"):
            value = getattr(self, name)
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or value < 0
                or not math.isfinite(value)
            ):
                raise ValueError(f"{name} must be a number of seconds >= 0, not {value!r}")
        if self.rate_limit is not None and (
            isinstance(self.rate_limit, bool)
            or not isinstance(self.rate_limit, int | float)
            or self.rate_limit <= 0
        ):
            raise ValueError(f"rate_limit must be > 0 or None, not {self.rate_limit!r}")
        if not isinstance(self.captive_portal, bool):
            raise ValueError(f"captive_portal must be true or false, not {self.captive_portal!r}")

    def replace(self, **changes: Any) -> Faults:
        """A copy with ``changes`` applied; unknown names raise :class:`TypeError`."""
        unknown = set(changes) - {f.name for f in fields(self)}
        if unknown:
            raise TypeError(f"unknown fault(s): {', '.join(sorted(unknown))}")
        return dataclasses.replace(self, **changes)

    def to_json(self) -> dict[str, Any]:
        """The faults as a JSON object (the body ``POST /_sandbox/faults`` accepts)."""
        return dataclasses.asdict(self)

    @classmethod
    def names(cls) -> tuple[str, ...]:
        """Every fault's name."""
        return tuple(f.name for f in fields(cls))


class FaultInjector:
    """The live faults of one sandbox, with their randomness and counters."""

    def __init__(
        self,
        faults: Faults | None = None,
        seed: int | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._faults = faults or Faults()
        self._random = random.Random(seed)
        self._lock = threading.Lock()
        self._monotonic = monotonic
        self._window: deque[float] = deque()
        self._injected: dict[str, int] = {}

    @property
    def faults(self) -> Faults:
        """The faults in force."""
        return self._faults

    def update(self, changes: Mapping[str, Any]) -> Faults:
        """Change some faults; unknown names raise :class:`TypeError`, bad values ValueError."""
        with self._lock:
            self._faults = self._faults.replace(**dict(changes))
            if self._faults.rate_limit is None:
                self._window.clear()
            return self._faults

    def chance(self, name: str) -> bool:
        """Decide whether the probability fault ``name`` strikes this time (and count it)."""
        probability = float(getattr(self._faults, name))
        if probability <= 0.0:
            return False
        with self._lock:
            strikes = probability >= 1.0 or self._random.random() < probability
            if strikes:
                self._injected[name] = self._injected.get(name, 0) + 1
        return strikes

    def note(self, name: str) -> None:
        """Count an injected fault that is not a probability (e.g. a 429)."""
        with self._lock:
            self._injected[name] = self._injected.get(name, 0) + 1

    def uniform(self, low: float, high: float) -> float:
        """A seeded random number in ``[low, high]`` (render times use it)."""
        with self._lock:
            return self._random.uniform(low, high)

    def rate_limited(self) -> int | None:
        """Admit one request, or return the whole seconds to wait when over the limit."""
        limit = self._faults.rate_limit
        if limit is None:
            return None
        now = self._monotonic()
        with self._lock:
            window = self._window
            while window and window[0] <= now - 1.0:
                window.popleft()
            if len(window) < limit:
                window.append(now)
                return None
            self._injected["rate_limit"] = self._injected.get("rate_limit", 0) + 1
            wait = window[0] + 1.0 - now
            return max(1, math.ceil(wait))

    def injected(self) -> dict[str, int]:
        """How many times each fault was injected since the injector was made."""
        with self._lock:
            return dict(self._injected)
