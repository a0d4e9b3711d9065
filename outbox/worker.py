"""The supervised worker: long-running work that survives its own errors and reports them.

``Outbox.start()`` and ``Outbox.run()`` (so ``outbox run``) do their work through a
:class:`Supervisor`. Whatever escapes the engine — a journal locked for longer than the busy
timeout, a bug — is logged with its traceback, kept as :attr:`Supervisor.last_error`, handed to
the app's ``on_error`` callback and recorded in the journal as the worker's status fact (so
``outbox status`` shows it from any process); the work then starts again after a backoff. The
worker never dies silently, and one error never stops the queue for good.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .clock import Clock, iso, parse_iso
from .platform import process_alive
from .schedule import Backoff

log = logging.getLogger(__name__)

#: Journal status facts of running workers are named ``worker:HOST:PID``.
FACT_PREFIX = "worker:"

ErrorCallback = Callable[[Exception], None]


class Supervisor:
    """Runs ``work(stop)`` until ``stop`` is set, starting it again after any exception.

    ``record`` stores the worker's status fact (None: the worker stopped); it is best effort,
    since the error being reported may be the journal itself refusing writes. ``on_error`` is
    called with every error, in the worker's thread; an exception it raises is logged and
    ignored.
    """

    def __init__(
        self,
        work: Callable[[threading.Event], None],
        *,
        clock: Clock,
        backoff: Backoff,
        record: Callable[[dict[str, Any] | None], None],
        on_error: ErrorCallback | None = None,
        kind: str = "worker",
        heartbeat: float = 30.0,
        next_due: Callable[[], float | None] | None = None,
    ) -> None:
        self.work = work
        self.clock = clock
        self.backoff = backoff
        self.record = record
        self.on_error = on_error
        #: What runs (``run``, ``app``...), for ``outbox status``.
        self.kind = kind
        #: At most how often :meth:`beat` renews the fact, in seconds.
        self.heartbeat = heartbeat
        self.next_due = next_due
        self.started_at = iso(clock.now())
        self._beat_at: float | None = None
        #: The last exception that escaped the work (None if none has yet).
        self.last_error: Exception | None = None
        #: How many exceptions escaped the work.
        self.errors = 0

    def run(self, stop: threading.Event) -> None:
        """Do the work until ``stop`` is set, whatever it raises."""
        failures = 0
        recorded = self._record(None)
        try:
            while not stop.is_set():
                if not recorded:  # the journal refused the last record: say it now
                    recorded = self._record(self.last_error)
                started = self.clock.monotonic()
                try:
                    self.work(stop)
                except Exception as exc:
                    if self.clock.monotonic() - started > self.backoff.cap:
                        failures = 0  # it worked for a good while: start the backoff afresh
                    failures += 1
                    delay = self.backoff.delay(failures)
                    recorded = self._failed(exc, delay)
                    self.clock.wait(stop, delay)
                else:
                    return  # the work returns only once it was told to stop
        finally:
            self._forget()

    def _failed(self, exc: Exception, delay: float) -> bool:
        """Report an error every way there is; returns whether the journal recorded it."""
        self.last_error = exc
        self.errors += 1
        log.error(
            "the outbox worker met an unexpected error (%s); it starts again in %.1f s",
            describe(exc),
            delay,
            exc_info=exc,
        )
        recorded = self._record(exc)
        if self.on_error is not None:
            try:
                self.on_error(exc)
            except Exception:
                log.exception("the on_error callback failed")
        return recorded

    def beat(self) -> None:
        """Renew the fact if the last renewal is ``heartbeat`` seconds old: the worker is alive,
        and its next work is due then. The work calls this on every pass and while it waits."""
        if self._beat_at is None or self.clock.monotonic() - self._beat_at >= self.heartbeat:
            self._record(self.last_error)

    def _record(self, exc: Exception | None) -> bool:
        self._beat_at = self.clock.monotonic()
        fact: dict[str, Any] = {"pid": os.getpid(), "host": socket.gethostname()}
        fact["kind"] = self.kind
        fact["started_at"] = self.started_at
        fact["heartbeat"] = self.heartbeat
        fact["next_due"] = self._next_due()
        fact["errors"] = self.errors
        fact["error"] = describe(exc) if exc is not None else None
        fact["error_at"] = iso(self.clock.now()) if exc is not None else None
        try:
            self.record(fact)
        except Exception as record_error:
            log.warning("could not record the worker's status: %s", describe(record_error))
            return False
        return True

    def _next_due(self) -> str | None:
        if self.next_due is None:
            return None
        try:
            due = self.next_due()
        except Exception as exc:
            log.debug("could not read the next due time: %s", describe(exc))
            return None
        return iso(due) if due is not None else None

    def _forget(self) -> None:
        try:
            self.record(None)
        except Exception as record_error:
            log.warning("could not clear the worker's status: %s", describe(record_error))


def describe(exc: BaseException) -> str:
    """``JournalBusy: the journal … is locked …`` — the kind and the words of an error."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def fact_name() -> str:
    """A new worker's status fact name: ``worker:HOST:PID:RANDOM``."""
    return f"{FACT_PREFIX}{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


@dataclass(frozen=True)
class WorkerFact:
    """A running worker as recorded in the journal, for ``outbox status`` and ``doctor``.

    ``seen_at`` is when it last renewed its fact; ``next_due`` when its next work is due
    (None: nothing unfinished); ``stale`` when a worker of another machine has not been seen
    for three heartbeats (it may have stopped without clearing its fact).
    """

    name: str
    host: str
    pid: int
    error: str | None
    error_at: str | None
    errors: int
    kind: str = "worker"
    started_at: str | None = None
    seen_at: str | None = None
    next_due: str | None = None
    stale: bool = False

    def describe(self) -> str:
        """``pid 123 running (run since …, alive at …, next due …)`` in one phrase."""
        where = f"pid {self.pid}" + (
            "" if self.host == socket.gethostname() else f" on {self.host}"
        )
        if self.stale:
            return f"{where} not seen since {self.seen_at} ({self.kind}): stopped?"
        details = [self.kind + (f" since {self.started_at}" if self.started_at else "")]
        if self.seen_at:
            details.append(f"alive at {self.seen_at}")
        details.append(f"next due {self.next_due}" if self.next_due else "nothing due")
        return f"{where} running ({', '.join(details)})"

    def line(self) -> str:
        if self.error is None:
            return f"{'worker'.ljust(10)} {self.describe()}, no error"
        where, _, details = self.describe().partition(" (")
        return (
            f"{'worker'.ljust(10)} {where}; last error (of {self.errors}) at "
            f"{self.error_at}: {self.error} ({details}"
        )


def worker_facts(facts: Mapping[str, Any], *, now: float | None = None) -> list[WorkerFact]:
    """The workers recorded in ``facts`` that are still running (those of this machine whose
    process is gone are left out: a killed worker cannot clear its own fact; those of other
    machines not seen for three heartbeats before ``now`` are marked stale)."""
    found = []
    here = socket.gethostname()
    for name, value in facts.items():
        if not (name.startswith(FACT_PREFIX) and isinstance(value, dict)):
            continue
        host, pid = value.get("host"), value.get("pid")
        if not isinstance(host, str) or not isinstance(pid, int):
            continue
        if host == here and not process_alive(pid):
            continue
        error, error_at, errors = value.get("error"), value.get("error_at"), value.get("errors")
        seen_at = facts.get(name + "_at")
        heartbeat = value.get("heartbeat")
        stale = (
            host != here
            and now is not None
            and isinstance(seen_at, str)
            and isinstance(heartbeat, int | float)
            and now - parse_iso(seen_at) > 3 * heartbeat
        )
        found.append(
            WorkerFact(
                name,
                host,
                pid,
                error if isinstance(error, str) else None,
                error_at if isinstance(error_at, str) else None,
                errors if isinstance(errors, int) else 0,
                kind=_text(value.get("kind")) or "worker",
                started_at=_text(value.get("started_at")),
                seen_at=_text(seen_at),
                next_due=_text(value.get("next_due")),
                stale=bool(stale),
            )
        )
    return found


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None
