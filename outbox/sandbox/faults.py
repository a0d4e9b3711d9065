"""Fault injection: what can go wrong between a client and Craftkit, on demand.

:class:`Faults` is the plain description (all off by default), including per-key overrides
that poison the renders of one idempotency key while every other render stays healthy.
:class:`FaultInjector` holds the current :class:`Faults`, a seeded random generator (so a
seeded sandbox injects the same faults for the same sequence of requests), a sliding-window
rate limiter, and counters of the faults it injected. It is shared by every request thread, so
all its methods are thread-safe.
"""

from __future__ import annotations

import dataclasses
import math
import random
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

#: Faults that are probabilities (0.0 = never, 1.0 = always).
PROBABILITIES = (
    "error_500_before",
    "error_503_before",
    "error_429_before",
    "error_500_after",
    "drop_after",
    "truncate_downloads",
    "hang",
    "email_send_failed",
)

#: Faults that are sizes in bytes (an int, or a text such as ``"300MB"``); None = off.
SIZES = ("huge_poll", "huge_errors", "huge_pdf")

#: Faults that are rates in bytes per second; None = full speed.
RATES = ("slow_body", "slow_pdf")

#: How ``download_url`` breaks the public ``downloadUrl`` of a render.
DOWNLOAD_URL_MODES = ("refused", "redirect", "file", "unauthorized", "wrong_body", "not_found")

#: How ``poll_answer`` poisons the answers of ``GET /v1/renders/:id``.
POLL_ANSWER_MODES = ("garbage_json", "non_finite", "unknown_status", "wrong_shape", "empty")

#: Statuses ``redirect_post`` may answer with.
REDIRECT_STATUSES = (301, 302, 303, 307, 308)

#: Faults that hit a request before it is routed, so they cannot be set for one key.
REQUEST_WIDE = ("latency", "hang", "hang_seconds", "rate_limit", "captive_portal")

#: Where ``render_id`` puts the real id (a pattern for every render must contain it).
ID_PLACEHOLDER = "{id}"

_SIZE = re.compile(r"(?i)\s*([0-9]+(?:\.[0-9]+)?)\s*(b|k|kb|kib|m|mb|mib|g|gb|gib)?\s*")
_UNITS = {
    "": 1,
    "b": 1,
    "k": 1024,
    "kb": 1000,
    "kib": 1024,
    "m": 1024**2,
    "mb": 1000**2,
    "mib": 1024**2,
    "g": 1024**3,
    "gb": 1000**3,
    "gib": 1024**3,
}
_JSON_NUMBER = re.compile(r"-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?")
_NON_FINITE = {
    "nan": "NaN",
    "infinity": "Infinity",
    "inf": "Infinity",
    "+infinity": "Infinity",
    "+inf": "Infinity",
    "-infinity": "-Infinity",
    "-inf": "-Infinity",
}


def parse_size(text: str) -> int:
    """``"5000"``, ``"64k"``, ``"100MB"``, ``"1.5MiB"`` -> bytes."""
    match = _SIZE.fullmatch(text)
    if not match:
        raise ValueError(f"not a size: {text!r}")
    return int(float(match.group(1)) * _UNITS[(match.group(2) or "").lower()])


def parse_fault_value(name: str, text: str) -> Any:
    """A fault's value from command-line text (``"0.5"``, ``"true"``, ``"300MB"``, ``"nan"``;
    ``""`` or ``"none"`` switches off a fault that can be None); :class:`Faults` checks it
    further."""
    defaults = {f.name: f.default for f in fields(Faults)}
    if name not in defaults or name == "keys":
        raise ValueError(f"unknown fault {name!r}; known: {', '.join(Faults.per_key_names())}")
    if defaults[name] is None and text.strip().lower() in ("", "none"):
        return None
    if name in ("captive_portal", "pdf_no_length", "email_not_configured"):
        flags = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}
        if text.lower() not in flags:
            raise ValueError(f"{name} must be true or false, not {text!r}")
        return flags[text.lower()]
    if name in (*PROBABILITIES, *RATES, "latency", "hang_seconds", "rate_limit"):
        try:
            return float(text)
        except ValueError:
            raise ValueError(f"{name} must be a number, not {text!r}") from None
    if name == "redirect_post":
        try:
            return int(text)
        except ValueError:
            raise ValueError(f"{name} must be a 3xx status, not {text!r}") from None
    return text


@dataclass(frozen=True)
class Faults:
    """Faults the sandbox injects; every one is off by default.

    Request-wide faults (never per key):

    - ``latency``: seconds added to every request (control endpoints excepted).
    - ``rate_limit``: requests per second allowed over all ``/v1/*`` requests (None = no
      limit); above it 429 ``rate_limited`` with a ``Retry-After`` header in whole seconds.
    - ``hang``: probability that a ``/v1/*`` request waits ``hang_seconds`` before it is
      handled (a stop of the sandbox ends the wait and drops the connection).
    - ``captive_portal``: every request (``/health`` included, control endpoints excepted)
      gets ``200 text/html`` with a login page, like a hotel Wi-Fi portal.

    Around creation (a render, share or email POST):

    - ``error_500_before`` / ``error_503_before`` / ``error_429_before``: probability of
      500 ``internal`` / 503 ``queue_unavailable`` / 429 ``rate_limited`` before anything
      is created.
    - ``error_500_after``: probability that the thing is created and then 500 is returned.
    - ``drop_after``: probability that the thing is created and then the connection is
      closed without any response (the client never learns the outcome).
    - ``redirect_post``: every ``/v1`` POST answers this 3xx status with a ``Location``
      pointing at itself, and creates nothing.
    - ``email_not_configured``: ``POST /v1/renders/:id/email`` answers 503
      ``email_not_configured``. ``email_send_failed``: probability that it answers 502
      ``email_send_failed`` (no share is kept, no email is sent).

    - ``fail_render``: renders created end ``failed`` with this ``errorMessage`` (set it for
      one key to make that job fail while the others render; None = off).

    Odd values:

    - ``retry_after``: the raw ``Retry-After`` header of every 429 and 503 answer
      (``"nan"``, ``"inf"``, ``"-5"``, ``"1e12"``...).
    - ``duration_ms``: the raw JSON literal of ``durationMs`` once a render has finished
      (``"NaN"``, ``"Infinity"``, ``"-1"``, ``"1e308"``).
    - ``poll_answer``: ``GET /v1/renders/:id`` answers ``garbage_json`` (200, not JSON),
      ``non_finite`` (``durationMs: NaN`` and ``Infinity`` in every answer),
      ``unknown_status`` (``"status": "processing"``, for ever), ``wrong_shape`` (a JSON
      array) or ``empty`` (200 with no body).
    - ``render_id``: the id shown for a render, e.g. ``"../../x"`` or ``"a?b=c#d"``;
      ``{id}`` stands for the real id (required when set for every render). Requests that
      carry the shown id percent-encoded reach the render.

    Big and slow bodies:

    - ``slow_body``: bytes per second for every response body (control endpoints excepted).
      ``slow_pdf``: the same for PDF bodies only (public URL, private streams, share links).
    - ``huge_poll``: poll answers padded to this many bytes (valid JSON with a long field).
      ``huge_errors``: error bodies padded the same way. ``huge_pdf``: PDFs padded to this
      size. Sizes are bytes or texts like ``"300MB"``; nothing is held in memory.
    - ``pdf_no_length``: PDFs are sent chunked, without ``Content-Length``.
    - ``truncate_downloads``: probability that a PDF download announces the full
      ``Content-Length`` but sends only part of the body, then closes the connection.
    - ``download_url``: the public ``downloadUrl`` is broken: ``refused`` (points at a port
      where nothing listens), ``redirect`` (302 to itself), ``file`` (a ``file://`` URL),
      ``unauthorized`` (401 from the bucket), ``wrong_body`` (200 ``application/pdf`` that
      is an HTML page) or ``not_found`` (404 for ever). The private stream keeps working.

    Per key: ``keys`` maps an idempotency key to faults that apply only to the render made
    with that key (its POST, polls, downloads, shares and emails), overriding the faults
    above; every fault but the request-wide ones can be set this way. Keys match exactly
    (``entry-3`` does not match ``entry-3~2``).
    """

    latency: float = 0.0
    error_500_before: float = 0.0
    error_503_before: float = 0.0
    error_429_before: float = 0.0
    error_500_after: float = 0.0
    drop_after: float = 0.0
    rate_limit: float | None = None
    truncate_downloads: float = 0.0
    hang: float = 0.0
    hang_seconds: float = 600.0
    captive_portal: bool = False
    redirect_post: int | None = None
    retry_after: str | None = None
    duration_ms: str | None = None
    poll_answer: str | None = None
    render_id: str | None = None
    slow_body: float | None = None
    slow_pdf: float | None = None
    huge_poll: int | None = None
    huge_errors: int | None = None
    huge_pdf: int | None = None
    pdf_no_length: bool = False
    download_url: str | None = None
    email_not_configured: bool = False
    email_send_failed: float = 0.0
    fail_render: str | None = None
    keys: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

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
        for name in ("captive_portal", "pdf_no_length", "email_not_configured"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be true or false, not {getattr(self, name)!r}")
        for name in RATES:
            value = getattr(self, name)
            if value is not None and (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not 0 < value < math.inf
            ):
                raise ValueError(f"{name} must be bytes per second > 0 or None, not {value!r}")
        for name in SIZES:
            object.__setattr__(self, name, _size(name, getattr(self, name)))
        object.__setattr__(self, "retry_after", _header_text(self.retry_after))
        object.__setattr__(self, "duration_ms", _json_number(self.duration_ms))
        _choice("poll_answer", self.poll_answer, POLL_ANSWER_MODES)
        _choice("download_url", self.download_url, DOWNLOAD_URL_MODES)
        _choice("redirect_post", self.redirect_post, REDIRECT_STATUSES)
        _check_render_id(self.render_id)
        if self.fail_render is not None and (
            not isinstance(self.fail_render, str) or not self.fail_render.strip()
        ):
            raise ValueError(
                f"fail_render must be an error message or None, not {self.fail_render!r}"
            )
        object.__setattr__(self, "keys", _key_faults(self.keys))

    def replace(self, **changes: Any) -> Faults:
        """A copy with ``changes`` applied; unknown names raise :class:`TypeError`."""
        unknown = set(changes) - {f.name for f in fields(self)}
        if unknown:
            raise TypeError(f"unknown fault(s): {', '.join(sorted(unknown))}")
        return dataclasses.replace(self, **changes)

    def to_json(self) -> dict[str, Any]:
        """The faults as a JSON object (the body ``POST /_sandbox/faults`` accepts)."""
        body = dataclasses.asdict(self)
        body["keys"] = {key: dict(changes) for key, changes in self.keys.items()}
        return body

    def for_key(self, key: str | None) -> Faults:
        """The faults in force for the render made with idempotency key ``key``."""
        changes = self.keys.get(key) if key is not None else None
        if not changes:
            return self
        return dataclasses.replace(self, keys={}, **changes)

    @classmethod
    def names(cls) -> tuple[str, ...]:
        """Every fault's name."""
        return tuple(f.name for f in fields(cls))

    @classmethod
    def per_key_names(cls) -> tuple[str, ...]:
        """The faults that can be set for one key."""
        return tuple(n for n in cls.names() if n not in REQUEST_WIDE and n != "keys")


def _size(name: str, value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = parse_size(value)
        except ValueError:
            raise ValueError(
                f"{name} must be a size in bytes (e.g. 300MB), not {value!r}"
            ) from None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a size in bytes >= 1 or None, not {value!r}")
    return value


def _header_text(value: object) -> str | None:
    """A header value given as text or a number; refuses what would break the header."""
    if value is None:
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        value = repr(value) if isinstance(value, float) else str(value)
    if (
        not isinstance(value, str)
        or not 1 <= len(value) <= 200
        or not all(" " <= char <= "~" for char in value)
    ):
        raise ValueError(
            f"retry_after must be 1-200 printable ASCII characters (a header value), not {value!r}"
        )
    return value


def _json_number(value: object) -> str | None:
    """A JSON number literal, or ``NaN`` / ``Infinity`` / ``-Infinity`` (as JavaScript writes
    them); given as text or a number."""
    if value is None:
        return None
    if isinstance(value, float) and not math.isfinite(value):
        value = "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    elif isinstance(value, int | float) and not isinstance(value, bool):
        value = repr(value)
    if isinstance(value, str):
        text = value.strip()
        if text.lower() in _NON_FINITE:
            return _NON_FINITE[text.lower()]
        if _JSON_NUMBER.fullmatch(text):
            return text
    raise ValueError(f"duration_ms must be a number or NaN, Infinity, -Infinity, not {value!r}")


def _check_render_id(value: object) -> None:
    if value is not None and (not isinstance(value, str) or not 1 <= len(value) <= 500):
        raise ValueError(f"render_id must be a text of 1-500 characters, not {value!r}")


def _choice(name: str, value: object, allowed: tuple[Any, ...]) -> None:
    if value is not None and (isinstance(value, bool) or value not in allowed):
        listed = ", ".join(str(a) for a in allowed)
        raise ValueError(f"{name} must be one of {listed} (or None), not {value!r}")


def _key_faults(keys: object) -> dict[str, dict[str, Any]]:
    """Check and normalise per-key overrides: ``{key: {fault: value}}``."""
    if not isinstance(keys, Mapping):
        raise ValueError(f"keys must map idempotency keys to faults, not {keys!r}")
    allowed = set(Faults.per_key_names())
    checked: dict[str, dict[str, Any]] = {}
    for key, changes in keys.items():
        if not isinstance(key, str) or not key:
            raise ValueError(f"keys: {key!r} is not an idempotency key")
        if not isinstance(changes, Mapping):
            raise ValueError(f"keys[{key!r}] must be an object of faults, not {changes!r}")
        unknown = set(changes) - set(Faults.names())
        if unknown:
            raise TypeError(f"unknown fault(s) for key {key!r}: {', '.join(sorted(unknown))}")
        wide = set(changes) - allowed
        if wide:
            raise ValueError(
                f"{', '.join(sorted(wide))} cannot be set for one key (they hit every request)"
            )
        others = {name: value for name, value in changes.items() if name != "render_id"}
        normalised = Faults(**others)  # the same checks as for every render
        checked[key] = {name: getattr(normalised, name) for name in others}
        if "render_id" in changes:
            _check_render_id(changes["render_id"])
            checked[key]["render_id"] = changes["render_id"]
    return checked


class FaultInjector:
    """The live faults of one sandbox, with their randomness and counters."""

    def __init__(
        self,
        faults: Faults | None = None,
        seed: int | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._faults = faults or Faults()
        self._by_key = self._merge(self._faults)
        self._random = random.Random(seed)
        self._lock = threading.Lock()
        self._monotonic = monotonic
        self._window: deque[float] = deque()
        self._injected: dict[str, int] = {}

    @property
    def faults(self) -> Faults:
        """The faults in force (for renders of keys without overrides)."""
        return self._faults

    @staticmethod
    def _merge(faults: Faults) -> dict[str, Faults]:
        """The faults of each key with overrides; checks what only matters for all renders."""
        if faults.render_id is not None and ID_PLACEHOLDER not in faults.render_id:
            raise ValueError(
                f"render_id for every render must contain {ID_PLACEHOLDER} (ids must stay "
                f"unique); set a fixed id such as {faults.render_id!r} for one key instead"
            )
        return {key: faults.for_key(key) for key in faults.keys}

    def for_key(self, key: str | None) -> Faults:
        """The faults in force for the render made with idempotency key ``key``."""
        if key is None or not self._by_key:
            return self._faults
        return self._by_key.get(key, self._faults)

    def shown_ids(self) -> list[tuple[str, str | None]]:
        """Every ``render_id`` in force, with the key it is set for (None: every render)."""
        faults, by_key = self._faults, self._by_key
        patterns: list[tuple[str, str | None]] = []
        if faults.render_id is not None:
            patterns.append((faults.render_id, None))
        for key, merged in by_key.items():
            if merged.render_id is not None and merged.render_id != faults.render_id:
                patterns.append((merged.render_id, key))
        return patterns

    def update(self, changes: Mapping[str, Any]) -> Faults:
        """Change some faults; unknown names raise :class:`TypeError`, bad values ValueError.
        ``keys``, when given, replaces every per-key override."""
        with self._lock:
            faults = self._faults.replace(**dict(changes))
            self._by_key = self._merge(faults)
            self._faults = faults
            if faults.rate_limit is None:
                self._window.clear()
            return faults

    def chance(self, name: str, faults: Faults | None = None) -> bool:
        """Decide whether the probability fault ``name`` (of ``faults``, by default those for
        every render) strikes this time, and count it."""
        probability = float(getattr(faults or self._faults, name))
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
