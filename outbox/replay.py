"""The reconcile phase: follow every submitted render until it ends, then land its PDF.

``GET /v1/renders/:id`` stays valid forever, so nothing here ever gives up on an entry by
itself: an unfinished render is polled on a schedule kept in the journal (``due_at``), backing
off as it ages; a render Craftkit does not know (404) is kept and its error shown; a download
that fails is retried and never kept half-done. What each answer means is decided in
:mod:`outbox.outcomes`; this module does the requests and the file, and applies the outcome.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from . import outcomes
from .client import CraftkitClient, NotReady, Render
from .clock import parse_iso
from .downloads import safe_filename, save_pdf
from .errors import RemoteError, StorageFull
from .models import Entry, State
from .pool import Crew, Phase
from .schedule import RenderTimes

log = logging.getLogger(__name__)


class Replay:
    """Polls submitted renders and downloads finished ones."""

    def __init__(
        self,
        crew: Crew,
        client: CraftkitClient,
        render_times: RenderTimes,
        downloads: Path,
    ) -> None:
        self.crew = crew
        self.client = client
        self.render_times = render_times
        self.downloads = downloads

    # -- polling -------------------------------------------------------------------------

    def poll_phase(self, *, deadline: float | None) -> Phase[Entry]:
        """Polling due submitted entries, as a phase of the engine's pipeline."""
        return self.crew.entries(State.SUBMITTED, lambda entry: self.poll(entry, deadline=deadline))

    def poll_due(
        self, *, deadline: float | None = None, stop: threading.Event | None = None
    ) -> int:
        """Poll every submitted entry that is due; returns how many were handled."""
        return self.crew.work([self.poll_phase(deadline=deadline)], deadline=deadline, stop=stop)

    def poll(self, entry: Entry, *, deadline: float | None) -> None:
        """Poll one leased submitted entry and record what changed."""
        crew = self.crew
        assert entry.render_id is not None, "a submitted entry always has a render id"
        try:
            render = self.client.get_render(entry.render_id, deadline=deadline)
        except RemoteError as exc:
            outcome = outcomes.poll_failed(
                entry,
                exc,
                now=crew.clock.now(),
                schedule=crew.schedule,
                health_ok=outcomes.needs_health_check(exc) and crew.gate.health_ok(deadline),
            )
            crew.apply(entry, outcome, exc)
            return
        crew.notice_status(render.status)
        if render.status == "succeeded":
            self._learn_duration(render)
        crew.apply(
            entry,
            outcomes.poll_answered(
                entry,
                render,
                now=crew.clock.now(),
                schedule=crew.schedule,
                learning=self.render_times.probing(entry.id),
            ),
        )

    def _learn_duration(self, render: Render) -> None:
        if render.created_at and render.completed_at:
            try:
                seconds = parse_iso(render.completed_at) - parse_iso(render.created_at)
            except ValueError:
                return
        elif render.duration_ms is not None:
            seconds = render.duration_ms / 1000
        else:
            return
        if self.render_times.add(seconds):
            self._poll_waiting_sooner()

    def _poll_waiting_sooner(self) -> None:
        """The first render time learned: renders submitted before, waiting for the prior,
        are polled about when they should be done instead (learning within the batch)."""
        sooner = self.render_times.prior_saved()
        if sooner > 0:
            prior = self.crew.schedule.first_poll.prior
            moved = self.crew.journal.poll_sooner(waiting_at_most=prior, by=sooner)
            log.debug("first render time known: %d renders polled %.2f s sooner", moved, sooner)

    # -- downloading ---------------------------------------------------------------------

    def download_phase(self, *, deadline: float | None) -> Phase[Entry]:
        """Downloading finished renders, as a phase of the engine's pipeline."""
        return self.crew.entries(
            State.DOWNLOADING, lambda entry: self.download(entry, deadline=deadline)
        )

    def download_due(
        self, *, deadline: float | None = None, stop: threading.Event | None = None
    ) -> int:
        """Download every finished render that is due; returns how many were handled."""
        return self.crew.work(
            [self.download_phase(deadline=deadline)], deadline=deadline, stop=stop
        )

    def download(self, entry: Entry, *, deadline: float | None) -> None:
        """Download, verify and save one leased entry's PDF, or schedule another try."""
        crew = self.crew
        assert entry.render_id is not None, "a downloading entry always has a render id"
        render = Render(entry.render_id, "succeeded", entry.download_url, None)
        name = safe_filename(entry.filename, entry.id)
        try:
            with self.client.open_pdf(render, deadline=deadline) as (length, chunks):
                saved = save_pdf(
                    chunks,
                    folder=self.downloads,
                    name=name,
                    entry_id=entry.id,
                    expected_size=length,
                    sync_folder=False,  # synced once per group commit, before ``done``
                )
        except (NotReady, StorageFull, RemoteError, OSError) as exc:
            health_ok = (
                isinstance(exc, RemoteError)
                and not entry.download_url  # the bucket's answers never need the API's view
                and outcomes.needs_health_check(exc)
                and crew.gate.health_ok(deadline)
            )
            outcome = outcomes.download_failed(
                entry,
                exc,
                now=crew.clock.now(),
                schedule=crew.schedule,
                folder=str(self.downloads),
                health_ok=health_ok,
            )
            crew.apply(entry, outcome, exc)
            return
        crew.apply(
            entry,
            outcomes.download_saved(entry, saved, now=crew.clock.now()),
            sync_first=self.downloads,
        )
