"""The submit phase: send every due ``pending`` entry to Craftkit exactly once.

Each entry is sent with its own ``Idempotency-Key``, so a retry after a lost answer returns
the render the first attempt created instead of making a second one. What each answer means is
decided in :mod:`outbox.outcomes`; this module only sends the request and applies the outcome,
which is written to the journal before anything else happens to the entry.
"""

from __future__ import annotations

import threading

from . import outcomes
from .client import CraftkitClient
from .errors import RemoteError
from .models import Entry, State
from .pool import Crew, Phase
from .schedule import RenderTimes
from .template_sync import refresh_after_rejection


class Dispatcher:
    """Claims due pending entries, submits them, and records what Craftkit answered."""

    def __init__(self, crew: Crew, client: CraftkitClient, render_times: RenderTimes) -> None:
        self.crew = crew
        self.client = client
        self.render_times = render_times

    def submit_phase(self, *, deadline: float | None) -> Phase[Entry]:
        """Submitting due pending entries, as a phase of the engine's pipeline."""
        return self.crew.entries(State.PENDING, lambda entry: self.submit(entry, deadline=deadline))

    def submit_due(
        self, *, deadline: float | None = None, stop: threading.Event | None = None
    ) -> int:
        """Submit every pending entry that is due; returns how many were handled."""
        return self.crew.work([self.submit_phase(deadline=deadline)], deadline=deadline, stop=stop)

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
            note = None
            if outcomes.needs_template_refresh(exc):
                # The cached template may be out of date: refresh it, and say if it changed.
                note = refresh_after_rejection(crew.journal, self.client, entry, crew.schedule)
            outcome = outcomes.submit_failed(
                entry,
                exc,
                now=crew.clock.now(),
                schedule=crew.schedule,
                note=note,
                health_ok=outcomes.needs_health_check(exc) and crew.gate.health_ok(deadline),
            )
            crew.apply(entry, outcome, exc)
            return
        crew.notice_status(render.status)
        move = outcomes.submit_answered(
            entry,
            render,
            replayed=replayed,
            now=crew.clock.now(),
            first_poll=self.render_times.first_poll_delay(entry.id),
        )
        crew.apply(entry, move)
