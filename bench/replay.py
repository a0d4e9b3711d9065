"""Replay loop figures, in one run:

1. Requests per render from enqueue to PDF, for renders taking 0.2-1.0 s (target <= 4), with
   the render-time estimate cold (first flush on a new journal) and warm (learned from the
   renders before).
2. Cost of one replay tick with 100,000 finished entries in the journal against none
   (target <= 1.2x): a tick must cost in proportion to what is due, not to the journal's size.
3. Peak memory (RSS) of a process downloading a 100 MB PDF, against the same process
   downloading a 1 KB one (target under 60 MB).

    python bench/replay.py [--renders 200]
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

from common import SandboxProcess, sandbox_process, verdict

from outbox import Outbox, Settings, State
from outbox.engine import Engine

DATA = {"inspector": "Bench", "site": "Loopback"}


def requests_per_render(sandbox: SandboxProcess, folder: Path, renders: int) -> tuple[float, float]:
    db = folder / "rpr.db"
    figures = []
    for phase in ("cold", "warm"):
        before = sandbox.requests("")
        with Outbox(
            db, api_key=sandbox.api_key, base_url=sandbox.base_url, downloads=folder / "renders"
        ) as ob:
            ob.enqueue_many(
                {"template": "inspection-report", "data": {**DATA, "n": i}, "key": f"{phase}-{i}"}
                for i in range(renders)
            )
            report = ob.flush(timeout=120)
            if report.exit_code != 0:
                raise SystemExit(f"flush failed: {report.problems}")
        figures.append((sandbox.requests("") - before) / renders)
    return figures[0], figures[1]


def tick_cost(folder: Path, finished: int, ticks: int = 300) -> float:
    """Mean seconds per replay tick (poll + download phases) with nothing due."""
    db = folder / f"tick-{finished}.db"
    with Outbox(db, durability="fast") as ob:
        ob.enqueue_many(
            {"template": "inspection-report", "data": DATA, "key": f"done-{i}"}
            for i in range(finished)
        )
        ob.enqueue_many(
            {"template": "inspection-report", "data": DATA, "key": f"open-{i}"} for i in range(100)
        )
    conn = sqlite3.connect(db)
    conn.execute("UPDATE entries SET state = 'done' WHERE key LIKE 'done-%'")
    conn.execute(
        "UPDATE entries SET state = 'submitted', render_id = 'r', due_at = ?"
        " WHERE key LIKE 'open-%'",
        (time.time() + 1800,),
    )
    conn.commit()
    conn.close()
    with Outbox(db, durability="fast") as ob:
        engine = Engine(
            ob.journal,
            api_key="unused",
            base_url="http://127.0.0.1:9",
            downloads=folder,
            settings=Settings(),
            clock=ob.clock,
        )
        try:
            samples = []
            assert not engine.gate.blocked
            for _ in range(ticks):
                start = time.perf_counter()
                engine.replay.poll_due()
                engine.replay.download_due()
                engine.journal.next_due_at([State.SUBMITTED, State.DOWNLOADING], horizon=3600)
                samples.append(time.perf_counter() - start)
            assert not engine.gate.blocked, "nothing was due, so nothing may have been sent"
        finally:
            engine.close()
    return statistics.median(samples)


DOWNLOADER = textwrap.dedent(
    """
    import json, sys
    from outbox import Outbox
    db, base_url, api_key, downloads = sys.argv[1:5]
    with Outbox(db, api_key=api_key, base_url=base_url, downloads=downloads) as ob:
        ob.enqueue("inspection-report", {"inspector": "Bench", "site": "Loopback"})
        report = ob.flush(timeout=300)
        entry = ob.list()[0]
    # VmHWM is this process's own peak; ru_maxrss would include the parent's before exec.
    with open("/proc/self/status") as status:
        peak_kb = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
    print(json.dumps({"exit": report.exit_code, "bytes": entry.pdf_bytes, "peak_kb": peak_kb}))
    """
)


def download_peak_rss(folder: Path, pdf_size: str) -> tuple[int, float]:
    with sandbox_process("--render-seconds", "0.1", "--pdf-size", pdf_size) as sandbox:
        sub = folder / f"dl-{pdf_size}"
        sub.mkdir()
        out = subprocess.run(
            [
                sys.executable,
                "-c",
                DOWNLOADER,
                str(sub / "j.db"),
                sandbox.base_url,
                sandbox.api_key,
                str(sub / "renders"),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
    result = json.loads(out.stdout)
    if result["exit"] != 0:
        raise SystemExit(f"download flush failed: {out.stderr}")
    return int(result["bytes"]), result["peak_kb"] / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--renders", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="outbox-bench-") as name:
        folder = Path(name)
        with sandbox_process("--render-seconds", "0.2-1.0") as sandbox:
            cold, warm = requests_per_render(sandbox, folder, args.renders)
        empty = tick_cost(folder, 0)
        full = tick_cost(folder, 100_000)
        small_bytes, small_rss = download_peak_rss(folder, "1KB")
        big_bytes, big_rss = download_peak_rss(folder, "100MB")
    print(f"requests per render, enqueue to PDF ({args.renders} renders of 0.2-1.0 s)")
    print(f"  cold estimate      {cold:5.2f}")
    print(f"  warm estimate      {warm:5.2f}   (target <= 4: {verdict(warm <= 4)})")
    print("replay tick with nothing due (median)")
    print(f"  0 finished entries       {empty * 1000:7.3f} ms")
    print(
        f"  100,000 finished entries {full * 1000:7.3f} ms   ratio {full / empty:.2f}x "
        f"(target <= 1.2x: {verdict(full / empty <= 1.2)})"
    )
    print("peak RSS of a process that downloads one PDF")
    print(f"  {small_bytes / 1e3:9,.0f} KB PDF   {small_rss:6.1f} MB")
    print(
        f"  {big_bytes / 1e6:9,.1f} MB PDF   {big_rss:6.1f} MB   (target < 60 MB: "
        f"{verdict(big_rss < 60)})"
    )


if __name__ == "__main__":
    main()
