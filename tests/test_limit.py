"""The adaptive concurrency limit (AIMD): one more after a round of flat answers, half after
an overload, once per round; and the engine reaching for it in a flush."""

from __future__ import annotations

from pathlib import Path

import pytest
from support import FakeClock, fill, renders_per_entry_ok, simulated

from outbox import Settings, State
from outbox.cli_output import status_lines
from outbox.limit import ConcurrencyLimit
from outbox.sandbox import Faults, Sandbox


def test_one_more_after_each_round_of_flat_answers_up_to_the_maximum() -> None:
    limit = ConcurrencyLimit(2, 4)
    for expected in (3, 4):
        for _ in range(limit.value - 1):
            limit.answered("submit", 0.02)
        assert limit.value == expected - 1, "not before a whole round"
        limit.answered("submit", 0.02)
        assert limit.value == expected
    for _ in range(50):
        limit.answered("submit", 0.02)
    assert limit.value == 4


def test_a_slow_answer_stops_growth_for_the_round() -> None:
    limit = ConcurrencyLimit(3, 8)
    limit.answered("poll", 0.02)
    limit.answered("poll", 0.02)
    limit.answered("poll", 0.05)  # more than twice the quickest: the API slows down
    limit.answered("poll", 0.02)
    limit.answered("poll", 0.02)
    assert limit.value == 3
    limit.answered("poll", 0.02)
    assert limit.value == 4


def test_latency_is_compared_with_answers_of_the_same_kind() -> None:
    limit = ConcurrencyLimit(2, 8)
    limit.answered("poll", 0.02)
    limit.answered("download", 0.5)  # a big PDF, not a slow API
    assert limit.value == 3


def test_an_overload_halves_the_limit_once_per_round() -> None:
    limit = ConcurrencyLimit(8, 16)
    limit.overloaded()
    assert limit.value == 4
    limit.overloaded()  # an answer to a request sent before the decrease
    assert limit.value == 4
    for _ in range(8):  # the eight sent before the decrease, answered
        limit.answered("submit", 0.02)
    assert limit.value == 5
    limit.overloaded()
    assert limit.value == 2
    low = ConcurrencyLimit(1, 4)
    low.overloaded()
    assert low.value == 1, "never below one"


def test_not_a_limit() -> None:
    with pytest.raises(ValueError):
        ConcurrencyLimit(5, 4)
    with pytest.raises(ValueError, match="max_concurrency"):
        Settings(max_concurrency=0)
    assert Settings(concurrency=20).concurrency_ceiling == 20


def test_a_flush_with_quick_answers_grows_to_the_maximum_and_status_shows_it(
    tmp_path: Path, clock: FakeClock
) -> None:
    db = tmp_path / "j.db"
    fill(db, 40)
    settings = Settings(concurrency=2, max_concurrency=6)
    with Sandbox(render_seconds=0.3, clock=clock, seed=2) as sb:
        with simulated(db, sb, clock, settings=settings) as ob:
            assert ob.flush(timeout=60).exit_code == 0
            assert ob.counts()[State.DONE] == 40
            facts = ob.status()
        renders_per_entry_ok(sb, 40)
    assert facts["concurrency"] == {"current": 6, "configured": 2, "max": 6}
    lines = status_lines(
        journal="j.db", schema=1, downloads="r", base_url="u", counts={}, facts=facts
    )
    assert any(line.startswith("requests   6 at once (configured 2, at most 6") for line in lines)


def test_a_flush_that_meets_429s_shrinks(tmp_path: Path, clock: FakeClock) -> None:
    db = tmp_path / "j.db"
    fill(db, 30)
    settings = Settings(concurrency=8, max_concurrency=8)
    faults = Faults(error_429_before=0.5, retry_after="0")
    with Sandbox(render_seconds=0.3, clock=clock, seed=2, faults=faults) as sb:
        with simulated(db, sb, clock, settings=settings) as ob:
            assert ob.flush(timeout=600).exit_code == 0
            facts = ob.status()
        renders_per_entry_ok(sb, 30)
    assert facts["concurrency"]["current"] < 8
