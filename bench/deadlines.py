"""Benchmark: how long the things that must end promptly really take.

The tests check that each of these ends at all (a regression would hang them for minutes or an
hour); this script measures how soon, each against its baseline in the same run:

- ``outbox flush --timeout 600`` with nothing listening, against the offline grace it is meant
  to wait (``Schedule().offline_grace``) plus the same command's start-up (``outbox --version``);
- ``outbox flush --timeout 3`` against a sandbox whose requests hang for an hour, against
  ``--timeout`` plus start-up;
- ``Sandbox.stop()`` while a 30 MB download is stalled mid-way, against stopping an idle sandbox;
- a control request (``GET /_sandbox/stats``) while every other request gets 1 s of latency,
  against ``GET /health`` under that latency.

    python bench/deadlines.py
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from outbox import Outbox, Schedule
from outbox.sandbox import Sandbox


def _seconds(action: Callable[[], object]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("OUTBOX_", "CRAFTKIT_"))}
    return subprocess.run(
        [sys.executable, "-m", "outbox", *args],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=900,
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _journal(folder: Path) -> Path:
    db = folder / "bench.db"
    with Outbox(db) as ob:
        ob.enqueue("inspection-report", {"inspector": "Bench", "site": "S"}, key="bench-1")
    return db


def _report(what: str, took: float, baseline: float, baseline_is: str) -> None:
    print(f"{what}: {took:.2f} s; {baseline_is} {baseline:.2f} s; ratio {took / baseline:.2f}x")


def offline_flush(folder: Path, startup: float) -> None:
    env = {
        "OUTBOX_DB": str(_journal(folder)),
        "CRAFTKIT_API_KEY": "ck_test_bench",
        "CRAFTKIT_BASE_URL": f"http://127.0.0.1:{_free_port()}",
    }
    took = _seconds(lambda: _cli(env, "flush", "--timeout", "600"))
    grace = Schedule().offline_grace
    _report("offline flush --timeout 600", took, grace + startup, "grace + start-up")


def hanging_flush(folder: Path, startup: float) -> None:
    with Sandbox(render_seconds=0.1) as sb:
        sb.set_faults(hang=1.0, hang_seconds=3600)
        env = {
            "OUTBOX_DB": str(_journal(folder)),
            "CRAFTKIT_API_KEY": sb.api_key,
            "CRAFTKIT_BASE_URL": sb.base_url,
        }
        took = _seconds(lambda: _cli(env, "flush", "--timeout", "3"))
    _report("flush --timeout 3, requests hanging", took, 3 + startup, "timeout + start-up")


def stop_during_download() -> None:
    idle = Sandbox(render_seconds=0.0).start()
    try:
        baseline = _seconds(idle.stop)
    finally:
        idle.close()
    sandbox = Sandbox(render_seconds=0.0, pdf_size=30 * 1024 * 1024).start()
    reading, stopped = threading.Event(), threading.Event()
    try:
        headers = {"Authorization": f"Bearer {sandbox.api_key}"}
        with httpx.Client(base_url=sandbox.base_url, headers=headers) as http:
            data = {"inspector": "Bench", "site": "S"}
            render_id = http.post("/v1/templates/inspection-report/render", json={"data": data})
            poll = f"/v1/renders/{render_id.json()['id']}"
            while (render := http.get(poll).json())["status"] != "succeeded":
                time.sleep(0.01)

        def stalled_reader() -> None:
            try:
                with httpx.stream("GET", render["downloadUrl"], timeout=60) as response:
                    for _ in response.iter_raw(64 * 1024):
                        reading.set()
                        stopped.wait(60)
            except httpx.HTTPError:
                pass

        reader = threading.Thread(target=stalled_reader)
        reader.start()
        reading.wait(30)
        took = _seconds(sandbox.stop)
        stopped.set()
        reader.join(60)
    finally:
        sandbox.close()
    _report("sandbox stop, 30 MB download stalled", took, baseline, "idle stop")


def control_under_latency() -> None:
    with Sandbox(render_seconds=0.0) as sb:
        sb.set_faults(latency=1.0)
        with httpx.Client(base_url=sb.base_url, timeout=30) as http:
            health = _seconds(lambda: http.get("/health"))
            control = _seconds(lambda: http.get("/_sandbox/stats"))
    _report("control request, 1 s latency on the rest", control, health, "/health")


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="outbox-bench-deadlines-") as tmp:
        folder = Path(tmp)
        startup = _seconds(lambda: _cli({}, "--version"))
        print(f"outbox start-up (outbox --version): {startup:.2f} s")
        (folder / "offline").mkdir()
        offline_flush(folder / "offline", startup)
        (folder / "hanging").mkdir()
        hanging_flush(folder / "hanging", startup)
    stop_during_download()
    control_under_latency()


if __name__ == "__main__":
    main()
