"""Dashboard page times on big journals: every request the page makes, over HTTP, against
``outbox dashboard`` running in its own process.

Each size is compared with the same requests on a 1,000-entry journal in the same run (the
baseline), so the ratio shows whether a page costs more as the journal grows. Target: every
page request <= 100 ms (95th percentile) at 100k and at 1M entries. The counts per state are
kept by a background thread (no request waits for them); its recount is timed on its own.

The journals are filled with ``enqueue_many`` and then given a long-lived journal's mix of
states with one SQL UPDATE (moving a million entries through their transitions one by one would
take hours): 2% failed, 2% rejected, 200 pending, the rest done; every 50th entry uses one of two
rarer templates.

    python bench/dashboard.py [--sizes 100000,1000000] [--rounds 15] [--dir DIR]
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx
from common import verdict

from outbox import Outbox

DATA = {"inspector": "Ada", "site": "North", "findings": [{"item": "hull", "severity": 2}]}
TARGET_MS = 100.0
BASELINE = 1_000


def build(path: Path, size: int) -> None:
    started = time.perf_counter()
    templates = ("inspection-report", "invoice", "always-fails")
    with Outbox(path, durability="fast", validation="off") as ob:
        for offset in range(0, size, 10_000):
            ob.enqueue_many(
                {
                    "template": templates[i % 3] if i % 50 == 0 else templates[0],
                    "data": DATA,
                    "key": f"job-{i:07d}",
                }
                for i in range(offset, min(size, offset + 10_000))
            )
    # The state mix of a journal that has worked for a long time (see the module docstring).
    with sqlite3.connect(path) as conn:
        conn.execute(
            "UPDATE entries SET state = CASE WHEN seq % 50 = 7 THEN 'failed'"
            " WHEN seq % 50 = 9 THEN 'rejected' WHEN seq > ? THEN 'pending' ELSE 'done' END",
            (size - 200,),
        )
    conn.close()
    print(f"  built {size:,} entries in {time.perf_counter() - started:.0f} s", flush=True)


class Dashboard:
    """``outbox dashboard --port 0`` on a journal, in a child process."""

    def __init__(self, db: Path) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OUTBOX_", "CRAFTKIT_"))}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "outbox", "--db", str(db), "dashboard", "--port", "0"],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=env,
        )
        assert self.process.stdout is not None
        url = self.process.stdout.readline().strip()
        base, token = url.split("/?token=")
        self.http = httpx.Client(base_url=base, headers={"X-Outbox-Token": token}, timeout=60)

    def close(self) -> None:
        self.http.close()
        self.process.terminate()
        self.process.wait(30)

    def get(self, path: str, **params: str) -> httpx.Response:
        response = self.http.get(path, params=params)
        response.raise_for_status()
        return response


def requests_of_the_page(board: Dashboard, size: int) -> dict[str, Callable[[], object]]:
    """What the page asks for, named; deep pages start from a cursor halfway down."""
    middle = str(size // 2)
    first = board.get("/api/entries", limit="50").json()["entries"][0]["id"]
    return {
        "summary (counts, facts)": lambda: board.get("/api/summary"),
        "newest 50": lambda: board.get("/api/entries", limit="50"),
        "50, halfway down": lambda: board.get("/api/entries", limit="50", after=middle),
        "state=failed (2%)": lambda: board.get("/api/entries", state="failed"),
        "state=done, halfway": lambda: board.get("/api/entries", state="done", after=middle),
        "template=invoice (0.7%)": lambda: board.get("/api/entries", template="invoice"),
        "failed + invoice": lambda: board.get("/api/entries", state="failed", template="invoice"),
        "key prefix job-00": lambda: board.get("/api/entries", q="job-00"),
        "key prefix + state=rejected": lambda: board.get(
            "/api/entries", q="job-0", state="rejected"
        ),
        "one entry's detail": lambda: board.get(f"/api/entries/{first}"),
    }


def measure(board: Dashboard, size: int, rounds: int) -> dict[str, tuple[float, float]]:
    """Median and 95th percentile of each request, in milliseconds."""
    figures = {}
    for name, request in requests_of_the_page(board, size).items():
        request()  # warm the page cache, as a page left open would be
        times = []
        for _ in range(rounds):
            started = time.perf_counter()
            request()
            times.append((time.perf_counter() - started) * 1000)
        times.sort()
        figures[name] = (statistics.median(times), times[int(0.95 * (len(times) - 1))])
    return figures


def recount(path: Path, rounds: int) -> float:
    """Median time of the count the dashboard's background thread makes after changes."""
    with Outbox(path) as ob:
        times = []
        for _ in range(rounds):
            started = time.perf_counter()
            ob.counts()
            times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100000,1000000", help="journal sizes to measure")
    parser.add_argument("--rounds", type=int, default=15, help="timed requests of each kind")
    parser.add_argument("--dir", help="folder for the journals (default: a temporary folder)")
    args = parser.parse_args()
    sizes = [int(size) for size in args.sizes.split(",")]
    with tempfile.TemporaryDirectory(dir=args.dir) as folder:
        results: dict[int, dict[str, tuple[float, float]]] = {}
        recounts: dict[int, float] = {}
        for size in [BASELINE, *sizes]:
            path = Path(folder) / f"journal-{size}.db"
            print(f"{size:,} entries:", flush=True)
            build(path, size)
            board = Dashboard(path)
            try:
                results[size] = measure(board, size, args.rounds)
            finally:
                board.close()
            recounts[size] = recount(path, args.rounds)
            path.unlink()
    baseline = results[BASELINE]
    header = f"{'request (median / p95 ms)':30}{'1k baseline':>16}"
    header += "".join(f"{f'{size:,}':>24}" for size in sizes)
    print()
    print(header)
    worst = {size: 0.0 for size in sizes}
    for name, (base_median, base_p95) in baseline.items():
        line = f"{name:30}{base_median:8.1f} / {base_p95:5.1f}"
        for size in sizes:
            median, p95 = results[size][name]
            worst[size] = max(worst[size], p95)
            line += f"{median:8.1f} / {p95:5.1f} ({median / base_median:4.1f}x)"
        print(line)
    line = f"{'(background recount, no request)':30}{recounts[BASELINE]:8.1f} ms      "
    line += "".join(f"{recounts[size]:8.1f} ms{'':14}" for size in sizes)
    print(line)
    print()
    for size in sizes:
        met = worst[size] <= TARGET_MS
        print(
            f"slowest page request at {size:>9,} entries: {worst[size]:6.1f} ms p95"
            f"   (target <= {TARGET_MS:.0f} ms: {verdict(met)})"
        )


if __name__ == "__main__":
    main()
