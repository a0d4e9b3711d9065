"""Every request has an overall deadline: a server that sends one byte at a time cannot hold a
flush past its timeout or ``run`` past a SIGTERM. The slow entry carries the error.

Timing is not asserted here (``bench/hostile.py`` measures it); the proof is that the slow
answers below would take minutes to arrive, and the error names the deadline that cut them.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from support import process_env, run_cli_process, sandbox_env

from outbox import Outbox, Settings, State
from outbox.errors import ConfigError
from outbox.sandbox import Sandbox
from outbox.schedule import Schedule

DATA = {"inspector": "Ada", "site": "North"}
OUT_OF_TIME = "the request ran out of time"


def wait_until(condition: Callable[[], Any], timeout: float = 120.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        assert time.monotonic() < deadline, "timed out waiting for a condition"
        time.sleep(0.05)
    return value


def test_a_slow_drip_answer_is_cut_at_the_flush_deadline(tmp_path: Path) -> None:
    with Sandbox(render_seconds=0.05, seed=5) as sb:
        sb.set_faults(keys={"slow": {"slow_body": 5}})  # a render answer takes about a minute
        settings = Settings(connect_timeout=2.0, schedule=Schedule(offline_grace=1.0))
        with Outbox(
            tmp_path / "j.db", api_key=sb.api_key, base_url=sb.base_url, settings=settings
        ) as ob:
            slow = ob.enqueue("inspection-report", DATA, key="slow")
            report = ob.flush(timeout=6)  # a request may take 60 s: the flush allows 6
            assert not report.unexpected, report.unexpected
            assert report.exit_code == 75 and report.timed_out, report.problems
            entry = ob.get(slow.id)
            assert entry.state is State.PENDING
            assert entry.error is not None and OUT_OF_TIME in entry.error, entry.error
            assert not ob.journal.lease_owners()


@pytest.mark.e2e
def test_flush_timeout_returns_although_the_server_drips(tmp_path: Path) -> None:
    db = tmp_path / "j.db"
    with Sandbox(render_seconds=0.05, seed=5) as sb:
        sb.set_faults(keys={"slow": {"slow_body": 1}})  # a render answer takes minutes
        with Outbox(db) as ob:
            ob.enqueue("inspection-report", DATA, key="slow")
        # Without an overall deadline this flush lasts as long as the drip: over the timeout.
        result = run_cli_process("flush", "--timeout", "5", env=sandbox_env(sb, db), timeout=120)
    assert result.returncode == 75, result.stderr
    assert "Traceback" not in result.stderr
    # Waiting is not a problem for a person: the summary's waiting line says why, on stdout.
    assert OUT_OF_TIME in result.stdout, result.stdout


@pytest.mark.e2e
def test_sigterm_stops_run_in_the_middle_of_a_slow_download(tmp_path: Path) -> None:
    db = tmp_path / "j.db"
    with Sandbox(render_seconds=0.05, seed=5, pdf_size=20_000) as sb:
        sb.set_faults(keys={"slow": {"slow_pdf": 50}})  # 400 s for the whole PDF
        with Outbox(db) as ob:
            good = ob.enqueue("inspection-report", DATA, key="good")
            slow = ob.enqueue("inspection-report", DATA, key="slow")
        env = sandbox_env(sb, db, OUTBOX_DOWNLOADS=str(tmp_path / "pdfs"))
        proc = subprocess.Popen(
            [sys.executable, "-m", "outbox", "run"],
            env=process_env(env),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

        def downloads() -> int:
            return sum(
                sum(statuses.values())
                for route, statuses in sb.stats()["requests"].items()
                if route.endswith(("/download", ".pdf"))
            )

        def started() -> bool:
            assert proc.poll() is None, proc.communicate()
            with Outbox(db) as ob:
                states = ob.get(good.id).state, ob.get(slow.id).state
            return states == (State.DONE, State.DOWNLOADING) and downloads() >= 2

        try:
            wait_until(started)  # the good PDF is saved, and the slow one's download has begun
            proc.send_signal(signal.SIGTERM)
            # Far less than the 400 s the slow PDF needs: the stop cut its download.
            _, stderr = proc.communicate(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert proc.returncode == 0, stderr
    assert "Traceback" not in stderr
    with Outbox(db) as ob:
        assert ob.get(slow.id).state is State.DOWNLOADING  # it starts over next time
        assert ob.get(good.id).state is State.DONE
        assert not ob.journal.lease_owners()


def test_deadlines_and_the_pdf_cap_come_from_the_config_file(tmp_path: Path) -> None:
    from outbox.config import load_config

    config = tmp_path / "config.toml"
    config.write_text("request_timeout = 20\ndownload_timeout = 90.5\nmax_pdf_bytes = 1000000\n")
    settings = load_config(config_file=str(config), environ={}).settings
    assert (settings.request_timeout, settings.download_timeout) == (20, 90.5)
    assert settings.max_pdf_bytes == 1_000_000
    assert settings.lease_seconds >= settings.download_timeout  # a download never outlives it
    for bad, words in [
        ("max_pdf_bytes = 1.5", "max_pdf_bytes must be a number"),
        ("max_pdf_bytes = 0", "max_pdf_bytes must be at least 1"),
        ("request_timeout = nan", "timeouts must be positive numbers of seconds"),
        ("download_timeout = -1", "timeouts must be positive numbers of seconds"),
    ]:
        config.write_text(bad + "\n")
        with pytest.raises(ConfigError, match=words):
            load_config(config_file=str(config), environ={})


@pytest.mark.parametrize("own_stop", [False, True])
def test_a_flush_after_a_stop_gets_its_requests_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, own_stop: bool
) -> None:
    import outbox.outbox

    monkeypatch.setattr(outbox.outbox, "STOP_GRACE", 0.0)  # a stop cuts requests at once
    with (
        Sandbox(render_seconds=0.05, seed=5) as sb,
        Outbox(tmp_path / "j.db", api_key=sb.api_key, base_url=sb.base_url) as ob,
    ):
        ob.enqueue("inspection-report", DATA, key="first")
        assert ob.flush(timeout=30).exit_code == 0
        ob.stop()  # say, the app's previous run() ended this way
        ob.enqueue("inspection-report", DATA, key="second")
        report = ob.flush(timeout=30, stop=threading.Event() if own_stop else None)
        assert report.exit_code == 0, report.problems
        assert ob.counts()[State.DONE] == 2


def test_a_flush_told_to_stop_cuts_a_dripping_answer_short(tmp_path: Path) -> None:
    """The stop event an app (or ``AsyncOutbox`` on cancel) passes to ``flush``."""
    with (
        Sandbox(render_seconds=0.05, seed=5) as sb,
        Outbox(
            tmp_path / "j.db",
            api_key=sb.api_key,
            base_url=sb.base_url,
            settings=Settings(request_timeout=250.0),  # only the stop can end it sooner
        ) as ob,
    ):
        sb.set_faults(keys={"slow": {"slow_body": 1}})  # the render answer takes minutes
        slow = ob.enqueue("inspection-report", DATA, key="slow")
        stop = threading.Event()
        reports: list[Any] = []
        flushing = threading.Thread(
            target=lambda: reports.append(ob.flush(timeout=300, stop=stop)), daemon=True
        )
        flushing.start()
        wait_until(lambda: sb.stats()["requests"].get("POST /v1/templates/:slug/render"))
        stop.set()
        flushing.join(timeout=120)  # without the cut: until the answer ends, minutes away
        assert not flushing.is_alive()
        [report] = reports
        assert not report.unexpected, report.unexpected
        entry = ob.get(slow.id)
        assert entry.state is State.PENDING
        assert entry.error is not None and OUT_OF_TIME in entry.error, entry.error
        assert not ob.journal.lease_owners()
