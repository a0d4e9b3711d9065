"""The sandbox's hostile modes, one render poisoned among good ones: the poisoned entry carries a
precise error (or finishes anyway), every other entry is ``done``, and nothing is unexpected."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from outbox import Outbox, Settings, State
from outbox.sandbox import Sandbox
from outbox.schedule import Schedule

DATA = {"inspector": "Ada", "site": "North"}


def _outbox(db: Path, sb: Sandbox, **settings: Any) -> Outbox:
    return Outbox(
        db,
        api_key=sb.api_key,
        base_url=sb.base_url,
        settings=Settings(
            connect_timeout=2.0,
            read_timeout=5.0,
            schedule=Schedule(offline_grace=1.0),
            **settings,
        ),
    )


@pytest.mark.parametrize(
    ("fault", "settings", "error"),
    [
        ({"render_id": "../../x"}, {}, "render id outbox cannot use ('../../x'"),
        ({"render_id": "a?b=c#d"}, {}, "render id outbox cannot use ('a?b=c#d'"),
        ({"huge_poll": "300MB"}, {}, "more than 1,048,576 bytes"),
        ({"slow_body": 20}, {"request_timeout": 2.0}, "the request ran out of time"),
        ({"huge_pdf": "2MB"}, {"max_pdf_bytes": 1_000_000}, "more than the 1,000,000 bytes"),
        (
            {"huge_pdf": "2MB", "pdf_no_length": True},
            {"max_pdf_bytes": 1_000_000},
            "larger than the 1,000,000 bytes allowed",
        ),
        ({"slow_pdf": 50}, {"download_timeout": 2.0}, "the request ran out of time"),
    ],
)
def test_one_poisoned_render_keeps_its_error_and_the_others_finish(
    tmp_path: Path, fault: dict[str, Any], settings: dict[str, Any], error: str
) -> None:
    with Sandbox(render_seconds=0.05, seed=5, pdf_size=20_000) as sb:
        sb.set_faults(keys={"poisoned": fault})
        with _outbox(tmp_path / "j.db", sb, **settings) as ob:
            for n in range(3):
                ob.enqueue("inspection-report", DATA, key=f"good-{n}")
            poisoned = ob.enqueue("inspection-report", DATA, key="poisoned")
            report = ob.flush(timeout=8)
            assert not report.unexpected, report.unexpected
            assert report.exit_code == 75, report.problems
            assert ob.counts()[State.DONE] == 3, report.problems
            entry = ob.get(poisoned.id)
            assert entry.state is not State.DONE
            assert entry.error is not None and error in entry.error, entry.error


@pytest.mark.parametrize(
    "fault",
    [
        {"duration_ms": "NaN"},
        {"duration_ms": "Infinity"},
        {"duration_ms": "-1"},
        {"duration_ms": "1e308"},
        {"poll_answer": "non_finite"},
    ],
)
def test_odd_numbers_in_answers_are_ignored_and_every_entry_finishes(
    tmp_path: Path, fault: dict[str, Any]
) -> None:
    with Sandbox(render_seconds=0.05, seed=5) as sb:
        sb.set_faults(keys={"odd": fault})
        with _outbox(tmp_path / "j.db", sb) as ob:
            for n in range(3):
                ob.enqueue("inspection-report", DATA, key=f"good-{n}")
            odd = ob.enqueue("inspection-report", DATA, key="odd")
            report = ob.flush(timeout=10)
            assert not report.unexpected, report.unexpected
            assert ob.counts()[State.DONE] >= 3, report.problems
            assert ob.get(odd.id).state in (State.DONE, State.SUBMITTED)


@pytest.mark.parametrize("retry_after", ["nan", "inf", "-5", "1e12", "soon"])
def test_odd_retry_after_never_ends_a_flush_with_an_error(tmp_path: Path, retry_after: str) -> None:
    with Sandbox(render_seconds=0.05, seed=1) as sb:
        sb.set_faults(error_429_before=0.5, retry_after=retry_after)
        with _outbox(tmp_path / "j.db", sb) as ob:
            for n in range(6):
                ob.enqueue("inspection-report", DATA, key=f"entry-{n}")
            report = ob.flush(timeout=5)
            assert not report.unexpected, report.unexpected
            assert report.exit_code in (0, 75), report.problems
            counts = ob.counts()
            assert counts[State.FAILED] == counts[State.REJECTED] == 0
        assert sb.stats()["faults_injected"]["error_429_before"] >= 1
