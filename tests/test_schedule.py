"""The timing strategies and the Schedule that gathers them (pure, seeded randomness)."""

from __future__ import annotations

import random

import pytest

from outbox import Schedule, Settings
from outbox.schedule import Backoff, Pacing, PollSchedule, RenderTimes


def test_young_renders_follow_the_documented_schedule() -> None:
    polling = PollSchedule()
    assert [polling.delay(n, age=1.0) for n in range(7)] == [0.25, 0.5, 1.0, 2.0, 5.0, 5.0, 5.0]


def test_old_renders_are_polled_less_often_but_never_given_up() -> None:
    polling = PollSchedule()
    assert polling.delay(50, age=60) == 15
    assert polling.delay(50, age=10 * 60) == 150
    assert polling.delay(50, age=30 * 86400) == polling.cap == 300
    assert polling.steps[-1] <= polling.delay(9, age=31) <= polling.cap


def test_backoff_grows_is_jittered_and_capped() -> None:
    backoff = Backoff(1.0, 300.0, rng=random.Random(3))
    for attempt, ceiling in [(1, 1), (2, 2), (3, 4), (6, 32)]:
        delays = {backoff.delay(attempt) for _ in range(50)}
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert len(delays) > 1
    assert all(150 <= backoff.delay(40) <= 300 for _ in range(20))
    assert 150 <= backoff.delay(10**6) <= 300  # no overflow however long it goes on


def test_backoff_jitter_spans_from_none_to_full() -> None:
    fixed = Backoff(0.25, 10.0, jitter=0.0)
    assert [fixed.delay(n) for n in range(1, 8)] == [0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 10.0]
    full = Backoff(0.1, 1.0, jitter=1.0, rng=random.Random(5))
    delays = [full.delay(2) for _ in range(200)]
    assert all(0 <= d <= 0.2 for d in delays) and min(delays) < 0.05
    with pytest.raises(ValueError, match="not a backoff"):
        Backoff(2.0, 1.0)


def test_a_seeded_rng_makes_every_backoff_repeatable() -> None:
    def draws(schedule: Schedule) -> list[float]:
        return [
            backoff.delay(attempt)
            for attempt in range(1, 6)
            for backoff in (schedule.submit_retry, schedule.download_retry, schedule.quick_retry)
        ]

    first = draws(Schedule().with_rng(random.Random(42)))
    assert first == draws(Schedule().with_rng(random.Random(42)))
    assert first != draws(Schedule().with_rng(random.Random(43)))
    shared = random.Random(1)
    schedule = Schedule().with_rng(shared)
    assert schedule.poll_retry.rng is shared and schedule.health_probe.rng is shared


def test_first_poll_waits_about_as_long_as_recent_renders_took() -> None:
    times = RenderTimes()
    # Nothing known: two probes on the docs' schedule, then the prior for the rest.
    assert [times.first_poll_delay(f"e{i}") for i in range(4)] == [0.25, 0.25, 1.0, 1.0]
    assert times.probing("e1") and not times.probing("e2")
    assert times.prior_saved() == 0.0
    assert times.add(0.4) is True  # the first thing known
    assert not times.probing("e1")
    assert times.first_poll_delay() == pytest.approx(0.42)
    assert times.prior_saved() == pytest.approx(0.58)
    assert times.add(0.4) is False
    times.seed([0.8, 0.9, 1.0, 1.0, 0.95, 0.85] * 5)
    assert 0.95 <= times.first_poll_delay() <= 1.1
    times.seed([600.0] * 50)
    assert times.first_poll_delay() == 5.0
    assert len(times.recent()) == 20
    times.add(7200.0)  # beyond the horizon: a clock jump, not a render time
    assert 7200.0 not in times.snapshot()


def test_a_429_waits_what_it_asks_or_a_second() -> None:
    pacing = Pacing()
    assert pacing.pause_after(12.5) == 12.5
    assert pacing.pause_after(None) == pacing.default_retry_after == 1.0


def test_settings_carry_one_schedule_with_todays_values() -> None:
    schedule = Settings().schedule
    assert schedule == Schedule()
    assert (schedule.submit_retry.base, schedule.submit_retry.cap) == (1.0, 300.0)
    assert (schedule.download_retry.base, schedule.download_retry.cap) == (0.5, 60.0)
    assert (schedule.offline_grace, schedule.idle_interval, schedule.auth_retry) == (3, 1, 300)
    assert schedule.horizon == 3600 and schedule.storage_retry == 30
    tuned = Settings(schedule=Schedule(offline_grace=1.0))
    assert tuned.schedule.offline_grace == 1.0 and tuned.schedule.polling == PollSchedule()
