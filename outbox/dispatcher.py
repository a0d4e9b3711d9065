"""The submit phase: send every due ``pending`` entry to Craftkit exactly once.

Each entry is sent with its own ``Idempotency-Key``, so a retry after a lost answer returns
the render the first attempt created instead of making a second one. The outcome is written to
the journal before anything else happens to the entry.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from .client import KNOWN_STATUSES, CraftkitClient, Render
from .errors import (
    OutcomeUnknown,
    PermanentError,
    RemoteError,
    TransientError,
)
from .models import Entry, State
from .pool import Crew
from .schedule import RenderTimes
from .template_sync import INVALID_INPUT_DATA, refresh_after_rejection

log = logging.getLogger(__name__)


class Dispatcher:
    """Claims due pending entries, submits them, and records what Craftkit answered."""

    def __init__(self, crew: Crew, client: CraftkitClient, render_times: RenderTimes) -> None:
        self.crew = crew
        self.client = client
        self.render_times = render_times

    def submit_due(
        self, *, deadline: float | None = None, stop: threading.Event | None = None
    ) -> int:
        """Submit every pending entry that is due; returns how many were handled."""
        return self.crew.run(
            State.PENDING,
            lambda entry: self.submit(entry, deadline=deadline),
            deadline=deadline,
            stop=stop,
        )

    def submit(self, entry: Entry, *, deadline: float | None) -> None:
        """Submit one leased entry and persist the outcome."""
        crew = self.crew
        try:
            render, replayed = self.client.submit(
                entry.template,
                entry.data,
                key=entry.key,
                filename=entry.filename,
                version=entry.version,
                deadline=deadline,
            )
        except RemoteError as exc:
            self._record_error(entry, exc)
            return
        crew.gate.answered()
        crew.gate.key_accepted()
        self._record_render(entry, render, replayed)

    def _record_render(self, entry: Entry, render: Render, replayed: bool) -> None:
        now = self.crew.clock.now()
        changes: dict[str, Any] = {
            "render_id": render.id,
            "remote_status": render.status,
            "attempts": entry.attempts + 1,
            "error": None,
            "error_code": None,
            "field_errors": None,
            "submitted_at": now,
            "polls": 0,
        }
        how = "replayed (key already known)" if replayed else "accepted"
        detail = f"{how}: render {render.id} is {render.status}"
        if render.status == "succeeded":
            target = State.DOWNLOADING
            changes.update(download_url=render.download_url, due_at=now, finished_at=now)
        elif render.status in ("failed", "cancelled"):
            target = State.FAILED
            message = render.error_message or f"the render was {render.status}"
            changes.update(error=message, error_code=f"render_{render.status}", finished_at=now)
            detail += f": {message}"
        else:
            if render.status not in KNOWN_STATUSES:
                log.warning("Craftkit reported an unknown render status %r", render.status)
            target = State.SUBMITTED
            changes.update(due_at=now + self.render_times.first_poll_delay())
        self.crew.journal.transition(
            entry.id,
            State.PENDING,
            target,
            owner=self.crew.owner,
            http_status=200 if replayed else 202,
            detail=detail,
            **changes,
        )

    def _record_error(self, entry: Entry, exc: RemoteError) -> None:
        crew = self.crew
        now = crew.clock.now()
        if crew.put_off(entry, exc):
            return  # offline, key refused or 429: no attempt is used up
        if isinstance(exc, TransientError):
            if not isinstance(exc, OutcomeUnknown):
                crew.gate.note(exc)
            attempts = entry.attempts + 1
            delay = crew.schedule.submit_retry.delay(attempts)
            code = exc.code or ("outcome_unknown" if isinstance(exc, OutcomeUnknown) else "server")
            crew.journal.transition(
                entry.id,
                State.PENDING,
                State.PENDING,
                owner=crew.owner,
                http_status=exc.status,
                detail=f"submit failed, retrying in {delay:.1f} s with the same key",
                attempts=attempts,
                error=exc.message,
                error_code=code,
                due_at=now + delay,
            )
        elif isinstance(exc, PermanentError):
            crew.gate.answered()
            crew.gate.key_accepted()
            detail = exc.message
            if exc.code == INVALID_INPUT_DATA:
                # The cached template may be out of date: refresh it, and say if it changed.
                note = refresh_after_rejection(crew.journal, self.client, entry, crew.schedule)
                detail = f"{detail.rstrip('.')}; {note}" if note else detail
            crew.journal.transition(
                entry.id,
                State.PENDING,
                State.REJECTED,
                owner=crew.owner,
                http_status=exc.status,
                detail=detail,
                attempts=entry.attempts + 1,
                error=detail,
                error_code=exc.code,
                field_errors=exc.field_errors,
                finished_at=now,
            )
        else:  # pragma: no cover - every RemoteError subclass is handled above
            raise exc
