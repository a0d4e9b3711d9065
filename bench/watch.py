"""Drop-folder speed: latency from a file's rename into the folder to its committed entry, and
the time to ingest a burst of files.

The watcher runs as ``outbox run --watch`` runs it: :meth:`DropFolder.run` in a thread, on a
journal with the default durability (``synchronous=FULL``). The commit time is taken from the
journal's change callback, which fires right after the commit. Targets: median latency under
300 ms; a burst of 1,000 files committed within a few seconds.

    python bench/watch.py [--samples 40] [--burst 1000] [--dir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import threading
import time
from pathlib import Path

from outbox import Event, Outbox
from outbox.watcher import DropFolder

JOB = {"template": "inspection-report", "data": {"inspector": "Ada", "site": "North"}}


class Commits:
    """When each entry's first event was committed, by entry id (monotonic seconds)."""

    def __init__(self) -> None:
        self.at: dict[str, float] = {}
        self.changed = threading.Condition()

    def __call__(self, event: Event) -> None:
        if event.from_state is None:
            with self.changed:
                self.at.setdefault(event.entry_id, time.monotonic())
                self.changed.notify_all()

    def wait_for(self, count: int, timeout: float) -> bool:
        with self.changed:
            return self.changed.wait_for(lambda: len(self.at) >= count, timeout)


def write_pending(folder: Path, name: str, job: dict[str, object]) -> Path:
    """Write ``NAME.tmp`` (not yet seen by the watcher); the caller renames it into place."""
    temporary = folder / f"{name}.tmp"
    temporary.write_text(json.dumps(job), encoding="utf-8")
    return temporary


def latencies(ob: Outbox, folder: Path, commits: Commits, samples: int) -> list[float]:
    results = []
    for i in range(samples):
        key = f"latency-{i}"
        temporary = write_pending(folder, f"{key}.json", {**JOB, "key": key})
        time.sleep(0.05 + (i % 5) * 0.02)  # let the watcher go idle, at varying phases
        renamed_at = time.monotonic()
        os.rename(temporary, folder / f"{key}.json")
        if not commits.wait_for(len(commits.at) + 1, timeout=30):
            raise SystemExit(f"{key}.json was not ingested within 30 s")
        entry = ob.journal.find_by_key(key)
        assert entry is not None
        results.append(commits.at[entry.id] - renamed_at)
    return results


def burst(folder: Path, commits: Commits, count: int) -> tuple[float, float]:
    """Seconds from the first rename until all entries are committed, and all files moved."""
    already = len(commits.at)
    pending = [
        write_pending(folder, f"burst-{i:05d}.json", {**JOB, "data": {"n": i}})
        for i in range(count)
    ]
    start = time.monotonic()
    for temporary in pending:
        os.rename(temporary, temporary.with_suffix(""))
    if not commits.wait_for(already + count, timeout=300):
        raise SystemExit("the burst was not ingested within 300 s")
    committed = max(commits.at.values()) - start
    while any(name.endswith(".json") for name in os.listdir(folder)):
        time.sleep(0.005)
    return committed, time.monotonic() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=40, help="single drops to time")
    parser.add_argument("--burst", type=int, default=1000, help="files in the burst")
    parser.add_argument("--dir", help="folder for the journal and drop folder (default: temp)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as base:
        folder = Path(base) / "drop"
        folder.mkdir()
        with Outbox(Path(base) / "bench.db") as ob:
            commits = Commits()
            ob.on_change(commits)
            stop = threading.Event()
            watcher = DropFolder(ob, folder)
            thread = threading.Thread(target=watcher.run, args=(stop,), daemon=True)
            thread.start()
            try:
                times = latencies(ob, folder, commits, args.samples)
                committed, moved = burst(folder, commits, args.burst)
            finally:
                stop.set()
                thread.join(30)
    median = statistics.median(times) * 1000
    p90 = statistics.quantiles(times, n=10)[-1] * 1000
    print(
        f"rename -> committed, median     {median:8.0f} ms   (target < 300 ms: "
        f"{'met' if median < 300 else 'MISSED'}); p90 {p90:.0f} ms, max {max(times) * 1000:.0f} ms"
    )
    print(
        f"burst of {args.burst:,} files: committed {committed:6.2f} s  "
        f"({args.burst / committed:,.0f} files/s); all moved to accepted/ {moved:.2f} s"
    )


if __name__ == "__main__":
    main()
