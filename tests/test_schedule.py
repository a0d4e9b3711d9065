"""The retry and polling schedules (pure functions)."""

from __future__ import annotations

from outbox.schedule import (
    DOCS_POLL_SCHEDULE,
    POLL_CAP,
    RETRY_CAP,
    RenderTimes,
    poll_delay,
    retry_delay,
)


def test_young_renders_follow_the_documented_schedule() -> None:
    assert [poll_delay(n, age=1.0) for n in range(7)] == [0.25, 0.5, 1.0, 2.0, 5.0, 5.0, 5.0]


def test_old_renders_are_polled_less_often_but_never_given_up() -> None:
    assert poll_delay(50, age=60) == 15
    assert poll_delay(50, age=10 * 60) == 150
    assert poll_delay(50, age=30 * 86400) == POLL_CAP
    assert DOCS_POLL_SCHEDULE[-1] <= poll_delay(9, age=31) <= POLL_CAP


def test_retry_backoff_grows_is_jittered_and_capped() -> None:
    for attempt, ceiling in [(1, 1), (2, 2), (3, 4), (6, 32)]:
        delays = {retry_delay(attempt) for _ in range(50)}
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert len(delays) > 1
    assert all(RETRY_CAP / 2 <= retry_delay(40) <= RETRY_CAP for _ in range(20))


def test_first_poll_waits_about_as_long_as_recent_renders_took() -> None:
    times = RenderTimes()
    assert times.first_poll_delay() == 0.25
    times.seed([0.8, 0.9, 1.0, 1.0, 0.95, 0.85])
    assert 0.95 <= times.first_poll_delay() <= 1.1
    times.seed([600.0] * 50)
    assert times.first_poll_delay() == 5.0
