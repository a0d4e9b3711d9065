"""Soak: ``outbox run --watch`` for minutes against the sandbox with light faults.

A producer in this process enqueues at a fixed rate, part through the library (``enqueue_many``
in small batches, a long-lived reader and writer of the journal) and part as job files renamed
into the drop folder. The sandbox runs as its own process and answers 2% of render creates with
503, loses 2% of answers after creating, answers 2% of polls and downloads with 500 after the
fact, and cuts 2% of downloads short.

Every ``--interval`` seconds it samples the ``outbox run`` process (resident memory, open file
descriptors, threads) and the journal (main file and WAL), and the number of entries finished.
The first sample after ``--warmup`` seconds is the baseline: the report gives the growth of
each figure per 10,000 entries finished since then (for resident memory also the trend, the
least-squares slope over every sample since, and the growth of its lowest value in three
samples in a row, which leaves out buffers in flight), and the rate the run held. At the end the
producer stops, the run drains the queue (for as long as entries keep finishing: a machine that
could not keep up leaves a backlog), and the end state is checked: every entry done,
exactly one render per key.

It exits 1 if the end state is wrong, if the run's threads or the file descriptors it keeps
open (the journal, pipes, the watcher's) ever went above the baseline's, if its sockets or the
files it has open in the downloads and drop folders went above what its connection pool and
its workers allow, or if the WAL passed its bound. Resident memory is printed with the issue's target
(< 50 KB per 10,000 entries after warm-up) but not enforced: a one-minute run (CI's) is too
short for it to be more than noise.

``--prefill N`` puts N empty PDF-named files into the downloads folder first, so a soak of a
few minutes runs against a folder as full as the one hours of saving would leave.

    python bench/soak.py [--minutes 10] [--rate 80] [--drop-share 0.2] [--interval 10]
                         [--prefill 0]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from common import sandbox_process, verdict

from outbox import Outbox, State
from outbox.config import Settings

FAULTS = (
    "--error-503-before",
    "0.02",
    "--drop-after",
    "0.02",
    "--error-500-after",
    "0.02",
    "--truncate-downloads",
    "0.02",
)
DATA = {
    "inspector": "Ada Lovelace",
    "site": "North Pier",
    "findings": [{"text": "Loose railing", "severity": 2}],
}
#: What the issue asks of a soak after warm-up: noise-level memory growth, a bounded WAL.
RSS_KB_PER_10K = 50
#: Samples whose lowest resident memory is taken at each end of the run (see ``report``).
FLOOR_OF = 3
WAL_BOUND = 64 * 1024 * 1024
#: Seconds without an entry finishing after which the drain at the end gives up.
STALLED = 120
#: Sockets the run may hold: its HTTP connection pool's size (twice the concurrency ceiling),
#: plus the watcher's and the journal's own.
SOCKET_BOUND = Settings().concurrency_ceiling * 2 + 4
#: Files open in the downloads and drop folders at once: one per worker (a PDF being written,
#: with its folder for the fsync) plus the watcher's (a job file, its folders).
AT_WORK_BOUND = Settings().concurrency_ceiling * 2 + 4


@dataclass(frozen=True)
class Sample:
    seconds: float
    enqueued: int
    finished: int
    rss_kb: int
    fds: int
    sockets: int
    at_work: int
    threads: int
    journal: int
    wal: int


def proc_figures(pid: int, working: tuple[Path, ...]) -> tuple[int, int, int, int, int]:
    """Resident kB, open file descriptors (all, sockets, and files in the ``working`` folders:
    PDFs being written, job files being read, folders being fsynced) and threads of a process."""
    rss = threads = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1])
        elif line.startswith("Threads:"):
            threads = int(line.split()[1])
    targets = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(FileNotFoundError):  # closed meanwhile
            targets.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
    sockets = sum(target.startswith("socket:") for target in targets)
    at_work = sum(any(target.startswith(str(folder)) for folder in working) for target in targets)
    return rss, len(targets), sockets, at_work, threads


def size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


class Producer:
    """Enqueues ``rate`` entries a second: ``drop_share`` of them as drop-folder files."""

    def __init__(self, ob: Outbox, folder: Path, rate: float, drop_share: float) -> None:
        self.ob, self.folder, self.rate, self.drop_share = ob, folder, rate, drop_share
        self.enqueued = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="producer", daemon=True)

    def _run(self) -> None:
        tick = 0.25
        started = time.monotonic()
        dropped = 0.0
        while not self.stop.is_set():
            due = int((time.monotonic() - started) * self.rate)
            count = due - self.enqueued
            if count > 0:
                files = int(dropped + count * self.drop_share) - int(dropped)
                dropped += count * self.drop_share
                n = self.enqueued
                for i in range(n, n + files):
                    job = {"template": "inspection-report", "key": f"soak-{i}", "data": DATA}
                    temporary = self.folder / f"job-{i}.json.tmp"
                    temporary.write_text(json.dumps({**job, "data": {**DATA, "site": f"S{i}"}}))
                    os.rename(temporary, self.folder / f"job-{i}.json")
                self.ob.enqueue_many(
                    {
                        "template": "inspection-report",
                        "data": {**DATA, "site": f"S{i}"},
                        "key": f"soak-{i}",
                    }
                    for i in range(n + files, n + count)
                )
                self.enqueued += count
            self.stop.wait(tick)


def tidy(folder: Path) -> None:
    """What an app does with the drop folder: take its results, clear accepted files."""
    for sub in ("accepted", "results"):
        try:
            names = os.listdir(folder / sub)
        except FileNotFoundError:
            continue
        for name in names:
            if not name.startswith("."):
                os.unlink(folder / sub / name)


def prefill(downloads: Path, count: int) -> None:
    """Put ``count`` empty files named as saved PDFs are into ``downloads`` (made here)."""
    downloads.mkdir()
    for n in range(count):
        os.close(os.open(downloads / f"earlier-{n:07d}.pdf", os.O_CREAT | os.O_WRONLY, 0o644))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=80.0, help="entries per second")
    parser.add_argument("--drop-share", type=float, default=0.2)
    parser.add_argument("--interval", type=float, default=10.0, help="seconds between samples")
    parser.add_argument("--warmup", type=float, default=None, help="seconds (default: 20%%)")
    parser.add_argument("--render-seconds", default="0.2-1.0")
    parser.add_argument(
        "--prefill", type=int, default=0, help="PDF-named files in the downloads folder at start"
    )
    args = parser.parse_args()
    warmup = args.minutes * 60 * 0.2 if args.warmup is None else args.warmup

    with (
        tempfile.TemporaryDirectory(prefix="outbox-soak-") as tmp,
        sandbox_process("--render-seconds", args.render_seconds, "--seed", "5", *FAULTS) as sb,
    ):
        root = Path(tmp)
        db, folder, downloads = root / "journal.db", root / "drop", root / "pdfs"
        folder.mkdir()
        prefill(downloads, args.prefill)
        env = {
            **os.environ,
            "OUTBOX_DB": str(db),
            "OUTBOX_DOWNLOADS": str(downloads),
            "CRAFTKIT_API_KEY": sb.api_key,
            "CRAFTKIT_BASE_URL": sb.base_url,
        }
        ob = Outbox(db)
        run = subprocess.Popen(
            [sys.executable, "-m", "outbox", "run", "--watch", str(folder)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        producer = Producer(ob, folder, args.rate, args.drop_share)
        samples: list[Sample] = []
        started = time.monotonic()

        def sample() -> Sample:
            counts = ob.counts()
            finished = counts[State.DONE] + counts[State.FAILED] + counts[State.REJECTED]
            rss, fds, sockets, at_work, threads = proc_figures(run.pid, (folder, downloads))
            wal = size(db.with_name(db.name + "-wal"))
            s = Sample(
                time.monotonic() - started,
                producer.enqueued,
                finished,
                rss,
                fds,
                sockets,
                at_work,
                threads,
                size(db),
                wal,
            )
            samples.append(s)
            print(
                f"{s.seconds:7.0f} s  enqueued {s.enqueued:7d}  finished {s.finished:7d}  "
                f"rss {s.rss_kb / 1024:6.1f} MB  fds {s.fds:3d} ({s.sockets:2d} sockets, "
                f"{s.at_work:2d} files at work)  "
                f"threads {s.threads:3d}  "
                f"journal {s.journal / 1e6:7.2f} MB  wal {s.wal / 1e6:6.2f} MB",
                flush=True,
            )
            return s

        try:
            time.sleep(2)  # the run process starts
            producer.thread.start()
            end = started + args.minutes * 60
            while time.monotonic() < end:
                time.sleep(min(args.interval, max(0.0, end - time.monotonic())))
                tidy(folder)
                sample()
                if run.poll() is not None:
                    raise SystemExit(f"outbox run exited with {run.returncode}")
            producer.stop.set()
            producer.thread.join()
            # The backlog a busy machine left drains as long as entries keep finishing.
            progress_at, finished = time.monotonic(), -1
            while time.monotonic() - progress_at < STALLED:
                now = sample()
                if now.finished >= producer.enqueued:
                    break
                if now.finished > finished:
                    progress_at, finished = time.monotonic(), now.finished
                time.sleep(args.interval / 2)
        finally:
            producer.stop.set()
            run.send_signal(signal.SIGTERM)
            run.wait(60)
        tidy(folder)
        produced_for = end - started
        ok = report(samples, warmup, produced_for, ob, sb.stats(), producer.enqueued, args)
        ob.close()
    if not ok:
        raise SystemExit(1)


def trend_per_10k(points: list[tuple[int, int]]) -> float:
    """The least-squares slope of ``(entries finished, KB)`` points, per 10,000 entries (0
    when the entries did not change). Resident memory moves in steps of about 1 MB (the
    allocators take memory from the system and give it back in large blocks), so the end minus
    the baseline says as much about where the last step fell as about growth; the slope weighs
    every sample."""
    count = len(points)
    mean_x = sum(x for x, _ in points) / count
    mean_y = sum(y for _, y in points) / count
    spread = sum((x - mean_x) ** 2 for x, _ in points)
    if spread == 0:
        return 0.0
    return sum((x - mean_x) * (y - mean_y) for x, y in points) / spread * 10_000


def report(
    samples: list[Sample],
    warmup: float,
    produced_for: float,
    ob: Outbox,
    stats: dict[str, object],
    enqueued: int,
    args: argparse.Namespace,
) -> bool:
    """Print the figures and the verdicts; whether every enforced check passed."""
    base = next((s for s in samples if s.seconds >= warmup), samples[0])
    after = [s for s in samples if s.seconds >= base.seconds]
    producing = [s for s in after if s.seconds <= produced_for + 1]
    last = after[-1]
    end_of_production = producing[-1] if producing else last
    entries = max(1, last.finished - base.finished)

    def per_10k(grown: float) -> float:
        return grown * 10_000 / entries

    held = (end_of_production.finished - base.finished) / max(
        1e-9, end_of_production.seconds - base.seconds
    )
    print()
    print(
        f"soak: {args.minutes:g} min at {args.rate:g} entries/s "
        f"({args.drop_share:.0%} through the drop folder), warm-up {warmup:.0f} s, "
        f"{args.prefill} PDFs in the downloads folder at start"
    )
    print(
        f"baseline at {base.seconds:.0f} s ({base.finished} finished); end at "
        f"{last.seconds:.0f} s: {last.finished} finished, {entries} since the baseline; held "
        f"{held:.1f} entries/s while the producer ran (asked: {args.rate:g})"
    )
    rss_per_10k = per_10k(last.rss_kb - base.rss_kb)
    rss_trend = trend_per_10k([(s.finished, s.rss_kb) for s in after])
    # A buffer in flight (a download, a socket's read) adds to one sample and is gone by the
    # next: what stays is the lowest of a few samples in a row, taken while the producer ran
    # (once it stops, nothing is in flight).
    ran = producing if len(producing) >= 2 * FLOOR_OF else after
    floor_from = min(s.rss_kb for s in ran[:FLOOR_OF])
    floor_to = min(s.rss_kb for s in ran[-FLOOR_OF:])
    rss_floor = (floor_to - floor_from) * 10_000 / max(1, ran[-1].finished - ran[0].finished)
    print(
        f"rss      {base.rss_kb / 1024:.1f} -> {last.rss_kb / 1024:.1f} MB: "
        f"{rss_per_10k:+.0f} KB per 10,000 entries (max {max(s.rss_kb for s in after) / 1024:.1f} "
        f"MB after the baseline, {max(s.rss_kb for s in samples) / 1024:.1f} MB in all); "
        f"trend over the {len(after)} samples since the baseline {rss_trend:+.0f} KB per 10,000; "
        f"lowest of the first and of the last {FLOOR_OF} samples {floor_from / 1024:.1f} -> "
        f"{floor_to / 1024:.1f} MB: {rss_floor:+.0f} KB per 10,000"
    )
    files = [s.fds - s.sockets - s.at_work for s in after]
    print(
        f"fds      {base.fds} -> {last.fds}: {per_10k(last.fds - base.fds):+.1f} per 10,000 "
        f"entries; kept open (the journal, pipes, the watcher's) {files[0]} -> {files[-1]} "
        f"(max {max(files)}); sockets {base.sockets} -> {last.sockets} (max "
        f"{max(s.sockets for s in after)}, bound {SOCKET_BOUND}); files at work in the "
        f"downloads and drop folders max {max(s.at_work for s in after)} (bound {AT_WORK_BOUND})"
    )
    print(
        f"threads  {base.threads} -> {last.threads}: {per_10k(last.threads - base.threads):+.1f} "
        f"per 10,000 entries (max {max(s.threads for s in after)})"
    )
    print(
        f"journal  {base.journal / 1e6:.2f} -> {last.journal / 1e6:.2f} MB: "
        f"{per_10k(last.journal - base.journal) / 1024:+.0f} KB per 10,000 entries "
        "(no retention set)"
    )
    max_wal = max(s.wal for s in samples)
    print(
        f"wal      {base.wal / 1e6:.2f} -> {last.wal / 1e6:.2f} MB: "
        f"{per_10k(last.wal - base.wal) / 1024:+.0f} KB per 10,000 entries; max "
        f"{max_wal / 1e6:.2f} MB (bound {WAL_BOUND / 2**20:.0f} MiB)"
    )
    counts = ob.counts()
    per_key = stats["renders_per_key"]
    assert isinstance(per_key, dict)
    all_done = counts[State.DONE] == enqueued == sum(counts.values())
    one_each = set(per_key.values()) <= {1} and stats["renders_created"] == enqueued
    print(f"entries  {enqueued} enqueued; {dict((k.value, v) for k, v in counts.items() if v)}")
    print(f"renders  {stats['renders_created']} created, at most one per key: {one_each}")
    checks = {
        "fds kept open steady": max(files) <= files[0],
        f"sockets within the pool's bound ({SOCKET_BOUND})": max(s.sockets for s in after)
        <= SOCKET_BOUND,
        f"files at work within the workers' bound ({AT_WORK_BOUND})": max(s.at_work for s in after)
        <= AT_WORK_BOUND,
        "threads steady": max(s.threads for s in after) <= base.threads,
        "wal bounded": max_wal < WAL_BOUND,
        "all done, one render per key": all_done and one_each,
    }
    print()
    print(
        f"rss growth < {RSS_KB_PER_10K} KB / 10,000 entries (printed, not enforced): "
        f"end - baseline {verdict(rss_per_10k < RSS_KB_PER_10K)}, "
        f"trend {verdict(rss_trend < RSS_KB_PER_10K)}, lowest {verdict(rss_floor < RSS_KB_PER_10K)}"
    )
    for what, passed in checks.items():
        print(f"{what}: {verdict(passed)}")
    return all(checks.values())


if __name__ == "__main__":
    main()
