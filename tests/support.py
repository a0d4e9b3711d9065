"""Helpers shared by the tests: the CLI (in-process, as a real process, or as a long-running
real process read as it goes), the one fake clock, the one ``wait_until``, filling a journal,
and sandbox checks."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, TypeVar

import pytest
from click.testing import CliRunner

from outbox import Outbox, Schedule, Settings
from outbox.cli import cli
from outbox.clock import Clock
from outbox.sandbox import Sandbox

API_KEY_IN_TESTS = "ck_test_do_not_leak_1f2e3d4c5b6a"

INSPECTION: dict[str, Any] = {"inspector": "Ada", "site": "North"}

T = TypeVar("T")


@dataclass(frozen=True)
class CliResult:
    """What a command left behind: its exit code and its two output streams."""

    returncode: int
    stdout: str
    stderr: str


def run_cli(*args: str, env: dict[str, str] | None = None, input: str | None = None) -> CliResult:
    """Run ``outbox ARGS`` in this process, the way the console entry point runs it.

    ``env`` is added to the environment for the call. An exception that escapes the command
    is written to stderr as a traceback, as the interpreter would, so tests can insist on none.
    """
    result = CliRunner().invoke(cli, list(args), input=input, env=env, prog_name="outbox")
    stderr = result.stderr
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        assert result.exc_info is not None
        stderr += "Traceback (most recent call last):\n" + "".join(
            traceback.format_exception(*result.exc_info)
        )
    return CliResult(result.exit_code, result.stdout, stderr)


def run_cli_process(
    *args: str,
    env: dict[str, str] | None = None,
    input: str | None = None,
    timeout: float = 60,
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m outbox ARGS`` in a real subprocess (end-to-end tests)."""
    return subprocess.run(
        [sys.executable, "-m", "outbox", *args],
        capture_output=True,
        text=True,
        env=process_env(env),
        input=input,
        timeout=timeout,
    )


class OutboxProcess:
    """``python -m outbox ARGS`` in a real subprocess, its stdout and stderr collected line by
    line while it runs.

    Why: the long-running commands (``run``, ``watch``, a ``share`` held up by a slow answer)
    are tested from outside, as an operator or a supervisor sees them: the test waits for what
    they say, then ends them with a signal (a clean stop) or with SIGKILL (a crash), and looks
    at everything they said. ``stdout`` and ``stderr`` grow as lines come, without the
    newline; they are complete once :meth:`stop` or :meth:`kill` has returned.

    ``ready_text``: the text of the stderr line that says the command is at work, with its
    SIGINT/SIGTERM handlers in place (e.g. ``"outbox running"``); :meth:`stop` waits for it, as
    a signal sent before then would end the process uncleanly. Without it, :meth:`stop` sends
    the signal at once.

    Every process is remembered until it has ended, so that :func:`end_outbox_processes` (run
    after each test) kills whatever a failing test left running. The reader threads are daemons:
    a pipe held open by something the process left behind never keeps the test run from ending.
    """

    _running: list[OutboxProcess] = []

    def __init__(
        self, *args: str, env: dict[str, str] | None = None, ready_text: str | None = None
    ) -> None:
        self.ready_text = ready_text
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "outbox", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=process_env(env),
        )
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        self._readers = [
            threading.Thread(target=_collect_lines, args=(stream, into), daemon=True)
            for stream, into in ((self.proc.stdout, self.stdout), (self.proc.stderr, self.stderr))
        ]
        OutboxProcess._running.append(self)
        for reader in self._readers:
            reader.start()

    def is_ready(self) -> bool:
        """Whether stderr has said ``ready_text`` (always true without one)."""
        ready_text = self.ready_text
        return ready_text is None or any(ready_text in line for line in self.stderr)

    def wait_ready(self) -> None:
        """Wait until the command says it is at work (see ``ready_text``)."""
        wait_until(self.is_ready, what=f"{self.ready_text!r} on the command's stderr")

    def stop(self, signum: int = signal.SIGTERM) -> int:
        """A clean stop: once the command is ready, send ``signum``; its exit code."""
        self.wait_ready()
        self.proc.send_signal(signum)
        return self._ended()

    def kill(self) -> int:
        """A crash: SIGKILL, unless the process has ended already; its exit code."""
        if self.proc.poll() is None:
            self.proc.kill()
        return self._ended()

    def _ended(self) -> int:
        code = self.proc.wait(timeout=60)
        for reader in self._readers:
            reader.join(10)
        if self in OutboxProcess._running:
            OutboxProcess._running.remove(self)
        return code


def _collect_lines(stream: IO[str], into: list[str]) -> None:
    with stream:
        for line in stream:
            into.append(line.rstrip("\n"))


def end_outbox_processes() -> None:
    """Kill every :class:`OutboxProcess` still running (after each test, whatever it asserted)."""
    while OutboxProcess._running:
        OutboxProcess._running[-1].kill()


def count_folder_listings(patch: pytest.MonkeyPatch) -> list[str]:
    """Record every folder listed from now on, by ``os.listdir`` or ``os.scandir`` (whoever
    lists it), in the list returned: what a test of "listed once" counts."""
    listings: list[str] = []
    real_listdir, real_scandir = os.listdir, os.scandir

    def counting_listdir(path: str | os.PathLike[str]) -> list[str]:
        listings.append(os.fspath(path))
        return real_listdir(path)

    def counting_scandir(path: str | os.PathLike[str]) -> Any:
        listings.append(os.fspath(path))
        return real_scandir(path)

    patch.setattr(os, "listdir", counting_listdir)
    patch.setattr(os, "scandir", counting_scandir)
    return listings


def process_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for a child process: ours (already free of outbox settings) + ``extra``."""
    return {**os.environ, **(extra or {})}


def sandbox_env(sb: Sandbox, db: Path, **extra: str) -> dict[str, str]:
    """Environment for a CLI command that talks to ``sb`` with the journal ``db``."""
    return {
        "OUTBOX_DB": str(db),
        "CRAFTKIT_API_KEY": sb.api_key,
        "CRAFTKIT_BASE_URL": sb.base_url,
        **extra,
    }


class FakeClock(Clock):
    """The injected :class:`~outbox.clock.Clock`, moved by the test instead of by time passing.

    ``advance`` moves the wall clock and the monotonic clock together; ``sleep`` and ``wait``
    return at once, as if ``seconds`` had passed (so code that waits out a delay runs without
    sleeping), ``wait`` only when its event is not set already. Calling the clock gives the wall time, which is what the sandbox
    takes as its clock. Wall-clock jumps of the device are freezegun's job, not this clock's.
    """

    def __init__(self, start: float = 1_780_000_000.0) -> None:
        self._lock = threading.Lock()
        self._wall = start
        self._monotonic = 1_000.0

    def now(self) -> float:
        return self._wall

    def monotonic(self) -> float:
        return self._monotonic

    def __call__(self) -> float:
        return self._wall

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._wall += seconds
            self._monotonic += seconds

    def sleep(self, seconds: float) -> None:
        self.advance(max(0.0, seconds))

    def wait(self, event: threading.Event, seconds: float) -> bool:
        if event.is_set():
            return True
        self.advance(max(0.0, seconds))
        return event.is_set()


def wait_until(condition: Callable[[], T | None], timeout: float = 30.0, what: str = "") -> T:
    """Poll ``condition`` until it returns something truthy, and return that.

    Only for what another thread or process does in real time; ``timeout`` is a generous
    safety net against a hang, never a claim about speed.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what or condition}")
        time.sleep(0.02)


def fill(db: Path, count: int, template: str = "inspection-report", **extra: Any) -> list[str]:
    """Enqueue ``count`` entries keyed ``job-0``, ``job-1``, ... in one transaction."""
    with Outbox(db) as ob:
        return [
            e.id
            for e in ob.enqueue_many(
                {
                    "template": template,
                    "data": {**INSPECTION, "site": f"S{i}"},
                    "key": f"job-{i}",
                    **extra,
                }
                for i in range(count)
            )
        ]


FAST = Settings(connect_timeout=2.0, read_timeout=5.0, schedule=Schedule(offline_grace=1.0))


def connected(db: Path, sb: Sandbox, **kwargs: Any) -> Outbox:
    """An Outbox on ``db`` that talks to the sandbox ``sb`` in-process (its transport)."""
    options: dict[str, Any] = {"settings": FAST, "transport": sb.transport(), **kwargs}
    return Outbox(db, api_key=sb.api_key, base_url=sb.base_url, **options)


def simulated(db: Path, sb: Sandbox, clock: FakeClock, **kwargs: Any) -> Outbox:
    """An Outbox on ``db`` that talks to ``sb``, both on the fake ``clock``: renders finish,
    backoffs pass and pauses end in fake time, so a whole flush runs without waiting."""
    return connected(db, sb, clock=clock, **kwargs)


def renders_per_entry_ok(sb: Sandbox, expected: int) -> None:
    """The sandbox created exactly one render per entry: never twice, never missing."""
    stats = sb.stats()
    assert stats["renders_created"] == expected, stats
    assert stats["renders_without_key"] == 0
    assert set(stats["renders_per_key"].values()) <= {1}
    assert set(stats["renders_per_payload"].values()) <= {1}
