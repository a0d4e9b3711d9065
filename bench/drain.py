"""The engine's figures for a whole drain, in one run:

1. Drain time of N entries (default 200) against a sandbox adding 20 ms to every request, with
   renders of 0.5 s, at concurrency 4 to begin with, against the lower bound
   ``max(2·N·L/C, N·L/C + render)`` at C = 4 (L: the round trip measured against the same
   sandbox just before). Target <= 1.15x. The same drain with the limit held at 4 (no AIMD) is
   the baseline.
2. Time to the first PDF on disk in that drain (target <= 1.0 s), and whether it landed before
   the last entry was submitted (the pipeline: PDFs land while later entries are sent).
3. Requests per render on a fresh journal (nothing learned yet): the drain above, and 30 renders
   of 0.8 s (target <= 3.3; the minimum is 3: submit, one poll, download).
4. fsync/fdatasync calls per entry over a whole ``outbox flush`` of N entries, counted by
   ``strace -f -c`` from the flush process and its threads (target <= 3).

    python bench/drain.py [--entries 200] [--latency 0.02] [--render 0.5] [--concurrency 4]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
from common import SandboxProcess, sandbox_process, verdict

from outbox import Outbox, Settings
from outbox.models import Event, State

DATA = {"inspector": "Bench", "site": "Loopback"}


@dataclass(frozen=True)
class Drain:
    seconds: float
    first_pdf: float
    first_submit: float
    last_submit: float
    requests_per_render: float
    concurrency_reached: int


def api_requests(sandbox: SandboxProcess) -> int:
    """Requests the sandbox answered, its control routes aside (downloads included)."""
    return sum(
        sum(statuses.values())
        for route, statuses in sandbox.stats()["requests"].items()
        if " /_sandbox/" not in route
    )


def round_trip(sandbox: SandboxProcess, samples: int = 40) -> float:
    """Median seconds of one API request to this sandbox (its latency plus our overhead)."""
    headers = {"Authorization": f"Bearer {sandbox.api_key}"}
    with httpx.Client(base_url=sandbox.base_url, headers=headers, timeout=30) as client:
        times = []
        for _ in range(samples):
            start = time.perf_counter()
            client.get("/v1/renders/00000000-0000-0000-0000-000000000000")
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def drain(
    sandbox: SandboxProcess, folder: Path, entries: int, concurrency: int, maximum: int
) -> Drain:
    """Flush ``entries`` fresh entries on a new journal; time the drain and its first PDF."""
    marks: dict[str, float] = {}
    start = 0.0

    def mark(event: Event) -> None:
        now = time.perf_counter() - start
        if event.to_state is State.DONE:
            marks.setdefault("first_pdf", now)
        elif event.to_state is State.SUBMITTED and event.from_state is not State.SUBMITTED:
            marks.setdefault("first_submit", now)
            marks["last_submit"] = now

    before = api_requests(sandbox)
    with Outbox(
        folder / f"drain-{maximum}.db",
        api_key=sandbox.api_key,
        base_url=sandbox.base_url,
        downloads=folder / "renders",
        settings=Settings(concurrency=concurrency, max_concurrency=maximum),
    ) as ob:
        ob.enqueue_many(
            {
                "template": "inspection-report",
                "data": {**DATA, "n": i},
                "key": f"drain-{maximum}-{i}",
            }
            for i in range(entries)
        )
        ob.journal.add_listener(mark)
        start = time.perf_counter()
        report = ob.flush(timeout=120)
        seconds = time.perf_counter() - start
        if report.exit_code != 0 or ob.counts()[State.DONE] != entries:
            raise SystemExit(f"the drain did not finish: {report.problems}")
        reached = int(ob.status()["concurrency"]["current"])
    requests = api_requests(sandbox) - before
    return Drain(
        seconds,
        marks["first_pdf"],
        marks["first_submit"],
        marks["last_submit"],
        requests / entries,
        reached,
    )


def cold_requests_per_render(folder: Path, renders: int, render_seconds: float) -> float:
    """Requests per render for ``renders`` renders on a fresh journal."""
    with sandbox_process("--render-seconds", str(render_seconds), "--seed", "5") as sandbox:
        before = api_requests(sandbox)
        with Outbox(
            folder / "cold.db",
            api_key=sandbox.api_key,
            base_url=sandbox.base_url,
            downloads=folder / "cold-renders",
        ) as ob:
            ob.enqueue_many(
                {"template": "inspection-report", "data": {**DATA, "n": i}, "key": f"cold-{i}"}
                for i in range(renders)
            )
            report = ob.flush(timeout=120)
            if report.exit_code != 0:
                raise SystemExit(f"flush failed: {report.problems}")
        return (api_requests(sandbox) - before) / renders


def fsyncs_per_entry(sandbox: SandboxProcess, folder: Path, entries: int) -> tuple[float, int]:
    """fsync + fdatasync calls of one ``outbox flush`` draining ``entries`` entries, per entry."""
    db = folder / "fsync.db"
    with Outbox(db) as ob:
        ob.enqueue_many(
            {"template": "inspection-report", "data": {**DATA, "n": i}, "key": f"sync-{i}"}
            for i in range(entries)
        )
    summary = folder / "strace.txt"
    env = {
        **os.environ,
        "CRAFTKIT_API_KEY": sandbox.api_key,
        "CRAFTKIT_BASE_URL": sandbox.base_url,
        "OUTBOX_DB": str(db),
        "OUTBOX_DOWNLOADS": str(folder / "fsync-renders"),
    }
    command = [sys.executable, "-m", "outbox", "flush", "--timeout", "300"]
    strace = ["strace", "-f", "-c", "-e", "trace=fsync,fdatasync", "-o", str(summary)]
    subprocess.run([*strace, *command], env=env, check=True, stdout=subprocess.DEVNULL, cwd=folder)
    calls = 0
    for line in summary.read_text().splitlines():
        match = re.match(r"\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:\d+\s+)?(fsync|fdatasync)$", line)
        if match:
            calls += int(match.group(1))
    if not calls:
        raise SystemExit(f"strace counted no fsync at all:\n{summary.read_text()}")
    with Outbox(db) as ob:
        if ob.counts()[State.DONE] != entries:
            raise SystemExit("the flush under strace did not drain the journal")
    return calls / entries, calls


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=200)
    parser.add_argument("--latency", type=float, default=0.02)
    parser.add_argument("--render", type=float, default=0.5)
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args()
    n, c = args.entries, args.concurrency
    args_sandbox = ("--latency", str(args.latency), "--render-seconds", str(args.render))
    with tempfile.TemporaryDirectory(prefix="outbox-bench-drain-") as tmp:
        folder = Path(tmp)
        with sandbox_process(*args_sandbox, "--seed", "3") as sandbox:
            latency = round_trip(sandbox)
            fixed = drain(sandbox, folder, n, c, c)
            result = drain(sandbox, folder, n, c, Settings().max_concurrency)
            fsync_per_entry, fsync_calls = (
                fsyncs_per_entry(sandbox, folder, n) if shutil.which("strace") else (-1.0, 0)
            )
        cold_08 = cold_requests_per_render(folder, 30, 0.8)
    bound = max(2 * n * latency / c, n * latency / c + args.render)
    ratio = result.seconds / bound
    print(f"round trip L measured against the sandbox: {latency * 1000:.1f} ms")
    print(
        f"drain of {n} entries ({args.latency * 1000:.0f} ms latency, {args.render} s renders, "
        f"concurrency {c} at the start, {result.concurrency_reached} at the end): {result.seconds:.2f} s = "
        f"{ratio:.2f}x the bound {bound:.2f} s (target <= 1.15x: {verdict(ratio <= 1.15)})"
    )
    print(
        f"  the same drain with the limit held at {c}: {fixed.seconds:.2f} s = "
        f"{fixed.seconds / bound:.2f}x the bound; first PDF at {fixed.first_pdf:.2f} s, last "
        f"submit at {fixed.last_submit:.2f} s"
    )
    print(
        f"first PDF on disk: {result.first_pdf:.2f} s after the flush began (target <= 1.0 s: "
        f"{verdict(result.first_pdf <= 1.0)}), {result.first_pdf - result.first_submit:.2f} s "
        f"after the first render was accepted (at {result.first_submit:.2f} s); last submit at "
        f"{result.last_submit:.2f} s"
    )
    print(
        f"requests per render, fresh journal: {result.requests_per_render:.2f} in that drain; "
        f"{cold_08:.2f} for 30 renders of 0.8 s (target <= 3.3: "
        f"{verdict(max(cold_08, result.requests_per_render) <= 3.3)})"
    )
    if fsync_calls:
        print(
            f"fsync/fdatasync per entry, outbox flush of {n} entries under strace: "
            f"{fsync_per_entry:.2f} ({fsync_calls} calls; target <= 3: "
            f"{verdict(fsync_per_entry <= 3)})"
        )
    else:
        print("fsync/fdatasync per entry: not measured (strace is not installed)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
