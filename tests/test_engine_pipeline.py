"""The engine as a pipeline: PDFs land while later entries are still being submitted, and a
new journal learns render times within its first batch instead of polling every render early.

Requests are counted by the sandbox that answered them; order comes from the event journal.
"""

from __future__ import annotations

from pathlib import Path

from support import FakeClock, connected, fill, renders_per_entry_ok, simulated

from outbox import Settings, State
from outbox.clock import parse_iso
from outbox.sandbox import Faults, Sandbox


def _requests(sb: Sandbox) -> int:
    """Requests the sandbox answered, its control routes aside (downloads included)."""
    return sum(
        sum(statuses.values())
        for route, statuses in sb.stats()["requests"].items()
        if " /_sandbox/" not in route
    )


def test_a_fresh_journal_learns_render_times_within_its_first_batch(
    tmp_path: Path, clock: FakeClock
) -> None:
    """30 renders of 0.8 s, nothing known: a couple of probes poll on the docs' schedule, the
    rest wait for the prior, so the batch costs close to the minimum of three requests per
    render (submit, one poll, download) rather than five."""
    db = tmp_path / "j.db"
    fill(db, 30)
    with Sandbox(render_seconds=0.8, clock=clock, seed=3) as sb, simulated(db, sb, clock) as ob:
        assert "render_seconds" not in ob.status()
        report = ob.flush(timeout=60)
        assert report.exit_code == 0, report.problems
        assert ob.counts()[State.DONE] == 30
        per_render = _requests(sb) / 30
        assert per_render <= 3.3, sb.stats()["requests"]
        renders_per_entry_ok(sb, 30)


def test_renders_waiting_for_the_prior_are_polled_once_a_probe_tells_how_long_they_take(
    tmp_path: Path, clock: FakeClock
) -> None:
    """Renders of 0.3 s: the probes find them done at their first poll, and the renders
    waiting for the one-second prior are brought forward, so none of them is polled late."""
    db = tmp_path / "j.db"
    fill(db, 12)
    with Sandbox(render_seconds=0.3, clock=clock, seed=4) as sb, simulated(db, sb, clock) as ob:
        submitted_at = clock.now()
        report = ob.flush(timeout=60)
        assert report.exit_code == 0, report.problems
        done = ob.list(state="done")
        assert len(done) == 12
        prior = ob.settings.schedule.first_poll.prior
        succeeded = [
            parse_iso(event.at)
            for entry in done
            for event in ob.history(entry.id)
            if event.to_state is State.DOWNLOADING
        ]
        assert len(succeeded) == 12
        assert max(succeeded) - submitted_at < prior, "a render waited for the prior"
        assert _requests(sb) == 12 * 3 + 2  # the two probes polled once too soon


def test_first_pdf_lands_before_the_last_entry_is_submitted(tmp_path: Path) -> None:
    """Downloads and polls share the request slots with submissions and go first: with 200
    entries to send four at a time (the limit held there, so that sending takes a while), the
    first PDF is on disk while entries are still being submitted."""
    db = tmp_path / "j.db"
    fill(db, 200)
    settings = Settings(concurrency=4, max_concurrency=4)
    with Sandbox(render_seconds=0.05, seed=8, faults=Faults(latency=0.02)) as sb:
        with connected(db, sb, settings=settings) as ob:
            order: list[tuple[State | None, State]] = []
            ob.on_change(lambda event: order.append((event.from_state, event.to_state)))
            report = ob.flush(timeout=120)
            assert report.exit_code == 0, report.problems
            first_done = order.index((State.DOWNLOADING, State.DONE))
            submits = [
                i for i, move in enumerate(order) if move == (State.PENDING, State.SUBMITTED)
            ]
            assert len(submits) == 200
            last_submit = submits[-1]
            assert first_done < last_submit, "every submit came before the first PDF"
            entry = next(e for e in ob.list(state="done"))
            assert entry.pdf_path and Path(entry.pdf_path).is_file()
        renders_per_entry_ok(sb, 200)
