"""The reconcile phase: follow every submitted render until it ends, then land its PDF.

``GET /v1/renders/:id`` stays valid forever, so nothing here ever gives up on an entry by
itself: an unfinished render is polled on a schedule kept in the journal (``due_at``), backing
off as it ages; a render Craftkit does not know (404) is kept and its error shown; a download
that fails is retried and never kept half-done.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from .client import KNOWN_STATUSES, CraftkitClient, NotReady, Render
from .clock import parse_iso
from .downloads import safe_filename, save_pdf
from .errors import (
    DownloadError,
    NotFound,
    RemoteError,
    ServerError,
    StorageFull,
)
from .models import Entry, State
from .pool import Crew
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
        self._unknown_statuses: set[str] = set()

    # -- polling -------------------------------------------------------------------------

    def poll_due(
        self, *, deadline: float | None = None, stop: threading.Event | None = None
    ) -> int:
        """Poll every submitted entry that is due; returns how many were handled."""
        return self.crew.run(
            State.SUBMITTED,
            lambda entry: self.poll(entry, deadline=deadline),
            deadline=deadline,
            stop=stop,
        )

    def poll(self, entry: Entry, *, deadline: float | None) -> None:
        """Poll one leased submitted entry and record what changed."""
        crew = self.crew
        assert entry.render_id is not None, "a submitted entry always has a render id"
        try:
            render = self.client.get_render(entry.render_id, deadline=deadline)
        except RemoteError as exc:
            self._poll_error(entry, exc)
            return
        crew.gate.answered()
        crew.gate.key_accepted()
        now = crew.clock.now()
        polls = entry.polls + 1
        if render.status == "succeeded":
            self._learn_duration(render)
            crew.journal.transition(
                entry.id,
                State.SUBMITTED,
                State.DOWNLOADING,
                owner=crew.owner,
                http_status=200,
                detail=f"render {render.id} succeeded",
                remote_status=render.status,
                download_url=render.download_url,
                polls=polls,
                error=None,
                error_code=None,
                due_at=now,
                finished_at=now,
            )
        elif render.status in ("failed", "cancelled"):
            message = render.error_message or f"the render was {render.status}"
            crew.journal.transition(
                entry.id,
                State.SUBMITTED,
                State.FAILED,
                owner=crew.owner,
                http_status=200,
                detail=f"render {render.id} {render.status}: {message}",
                remote_status=render.status,
                polls=polls,
                error=message,
                error_code=f"render_{render.status}",
                finished_at=now,
            )
        else:
            if render.status not in KNOWN_STATUSES and render.status not in self._unknown_statuses:
                self._unknown_statuses.add(render.status)
                log.warning(
                    "Craftkit reported an unknown render status %r; treating it as unfinished",
                    render.status,
                )
            due_at = now + crew.schedule.polling.delay(polls, self._age(entry, now))
            if render.status != entry.remote_status or entry.error:
                crew.journal.transition(
                    entry.id,
                    State.SUBMITTED,
                    State.SUBMITTED,
                    owner=crew.owner,
                    http_status=200,
                    detail=f"render {render.id} is {render.status}",
                    remote_status=render.status,
                    polls=polls,
                    error=None,
                    error_code=None,
                    due_at=due_at,
                )
            else:
                crew.journal.reschedule(
                    entry.id, State.SUBMITTED, owner=crew.owner, polls=polls, due_at=due_at
                )

    def _poll_error(self, entry: Entry, exc: RemoteError) -> None:
        crew = self.crew
        if crew.put_off(entry, exc):
            return
        now = crew.clock.now()
        polls = entry.polls + 1
        schedule = crew.schedule
        if isinstance(exc, ServerError):
            crew.gate.server_error(exc)
        else:
            crew.gate.answered()
        if isinstance(exc, NotFound):
            # Never drop it: the render exists somewhere, most likely under another project.
            message = (
                f"Craftkit does not know render {entry.render_id} ({exc.message}); is the API key "
                "one of the project that created it? Still checking."
            )
            delay = schedule.polling.delay(
                polls, max(self._age(entry, now), schedule.unknown_render_age)
            )
        else:
            message = f"checking render {entry.render_id} failed: {exc.message}"
            delay = min(
                schedule.poll_retry.delay(polls),
                schedule.polling.delay(polls, self._age(entry, now)) * schedule.poll_retry_factor,
            )
        self._note_problem(entry, State.SUBMITTED, exc, message, polls=polls, due_at=now + delay)

    def _learn_duration(self, render: Render) -> None:
        if render.created_at and render.completed_at:
            try:
                seconds = parse_iso(render.completed_at) - parse_iso(render.created_at)
            except ValueError:
                return
            self.render_times.add(seconds)
        elif render.duration_ms is not None:
            self.render_times.add(render.duration_ms / 1000)

    def _age(self, entry: Entry, now: float) -> float:
        submitted_at = entry.submitted_at if entry.submitted_at is not None else now
        return max(0.0, now - submitted_at)

    # -- downloading ---------------------------------------------------------------------

    def download_due(
        self, *, deadline: float | None = None, stop: threading.Event | None = None
    ) -> int:
        """Download every finished render that is due; returns how many were handled."""
        return self.crew.run(
            State.DOWNLOADING,
            lambda entry: self.download(entry, deadline=deadline),
            deadline=deadline,
            stop=stop,
        )

    def download(self, entry: Entry, *, deadline: float | None) -> None:
        """Download, verify and save one leased entry's PDF, or schedule another try."""
        crew = self.crew
        assert entry.render_id is not None, "a downloading entry always has a render id"
        render = Render(entry.render_id, "succeeded", entry.download_url, None)
        name = safe_filename(entry.filename, entry.id)
        now = crew.clock.now()
        tries = entry.polls + 1
        try:
            with self.client.open_pdf(render, deadline=deadline) as (length, chunks):
                saved = save_pdf(
                    chunks,
                    folder=self.downloads,
                    name=name,
                    entry_id=entry.id,
                    expected_size=length,
                )
        except NotReady:
            crew.journal.reschedule(
                entry.id,
                State.DOWNLOADING,
                owner=crew.owner,
                polls=tries,
                due_at=now + crew.schedule.download_retry.delay(tries),
            )
            return
        except StorageFull as exc:
            self._note_problem(
                entry,
                State.DOWNLOADING,
                exc,
                exc.args[0],
                polls=tries,
                due_at=now + crew.schedule.storage_retry,
            )
            return
        except (DownloadError, RemoteError) as exc:
            if crew.put_off(entry, exc):
                return
            message = exc.message if isinstance(exc, RemoteError) else str(exc)
            self._note_problem(
                entry,
                State.DOWNLOADING,
                exc,
                f"download failed, will retry: {message}",
                polls=tries,
                due_at=now + crew.schedule.download_retry.delay(tries),
            )
            return
        except OSError as exc:
            self._note_problem(
                entry,
                State.DOWNLOADING,
                exc,
                f"cannot write the PDF into {self.downloads}: {exc.strerror or exc}",
                polls=tries,
                due_at=now + crew.schedule.storage_retry,
            )
            return
        crew.gate.answered()
        crew.journal.transition(
            entry.id,
            State.DOWNLOADING,
            State.DONE,
            owner=crew.owner,
            http_status=200,
            detail=f"saved {saved.path.name} ({saved.size} bytes, sha256 {saved.sha256[:12]}…)",
            pdf_path=str(saved.path),
            pdf_bytes=saved.size,
            pdf_sha256=saved.sha256,
            error=None,
            error_code=None,
            finished_at=crew.clock.now(),
        )

    # -- shared --------------------------------------------------------------------------

    def _note_problem(
        self,
        entry: Entry,
        state: State,
        exc: Exception,
        message: str,
        *,
        polls: int,
        due_at: float,
    ) -> None:
        """Keep the entry where it is, show the problem, and try again at ``due_at``.

        An event is added only when the problem is new, so a long outage does not flood the
        history with identical lines.
        """
        crew = self.crew
        code = getattr(exc, "code", None) or type(exc).__name__
        if message == entry.error:
            crew.journal.reschedule(entry.id, state, owner=crew.owner, polls=polls, due_at=due_at)
            return
        crew.journal.transition(
            entry.id,
            state,
            state,
            owner=crew.owner,
            http_status=getattr(exc, "status", None),
            detail=message,
            error=message,
            error_code=code,
            polls=polls,
            due_at=due_at,
        )
