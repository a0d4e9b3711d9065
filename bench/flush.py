"""Submit-phase throughput: 1,000 entries to a sandbox that adds 20 ms to every request.

Reports, in one run: outbox's wall time and requests per entry, the ideal
(entries x latency / concurrency), and a naive sequential loop in the style of the Craftkit
docs' examples (one POST after another, each with its Idempotency-Key). Targets: at most 1.3x
the ideal, and at least 3x faster than the naive loop at concurrency 4.

    python bench/flush.py [--entries 1000] [--latency 0.02] [--concurrency 4]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import httpx
from common import sandbox_process, verdict

from outbox import Outbox, Settings, State
from outbox.engine import Engine

DATA = {"inspector": "Bench", "site": "Loopback"}


def outbox_submit(base_url: str, api_key: str, entries: int, concurrency: int) -> float:
    with tempfile.TemporaryDirectory() as folder:
        db = Path(folder) / "bench.db"
        with Outbox(db) as ob:
            ob.enqueue_many(
                {"template": "inspection-report", "data": {**DATA, "n": i}, "key": f"ob-{i}"}
                for i in range(entries)
            )
            engine = Engine(
                ob.journal,
                api_key=api_key,
                base_url=base_url,
                downloads=Path(folder) / "renders",
                settings=Settings(concurrency=concurrency),
                clock=ob.clock,
            )
            try:
                start = time.perf_counter()
                engine.dispatcher.submit_due()
                elapsed = time.perf_counter() - start
            finally:
                engine.close()
            submitted = ob.counts()[State.SUBMITTED]
            if submitted != entries:
                raise SystemExit(f"only {submitted} of {entries} entries were submitted")
    return elapsed


def naive_loop(base_url: str, api_key: str, entries: int) -> float:
    headers = {"Authorization": f"Bearer {api_key}"}
    with httpx.Client(base_url=base_url, headers=headers, timeout=30) as client:
        start = time.perf_counter()
        for i in range(entries):
            response = client.post(
                "/v1/templates/inspection-report/render",
                json={"data": {**DATA, "n": i}},
                headers={"Idempotency-Key": f"naive-{i}"},
            )
            response.raise_for_status()
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=1000)
    parser.add_argument("--latency", type=float, default=0.02)
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args()
    with sandbox_process("--latency", str(args.latency), "--render-seconds", "3600") as sandbox:
        wall = outbox_submit(sandbox.base_url, sandbox.api_key, args.entries, args.concurrency)
        posts = sandbox.requests("POST")
        naive = naive_loop(sandbox.base_url, sandbox.api_key, args.entries)
    ideal = args.entries * args.latency / args.concurrency
    print(
        f"submit {args.entries} entries, {args.latency * 1000:.0f} ms latency, "
        f"concurrency {args.concurrency}"
    )
    print(f"  outbox wall time      {wall:8.2f} s   ({args.entries / wall:,.0f} entries/s)")
    print(f"  requests per entry    {posts / args.entries:8.2f}")
    print(
        f"  ideal                 {ideal:8.2f} s   ratio {wall / ideal:.2f}x "
        f"(target <= 1.3x: {verdict(wall / ideal <= 1.3)})"
    )
    print(
        f"  naive sequential loop {naive:8.2f} s   outbox is {naive / wall:.1f}x faster "
        f"(target >= 3x: {verdict(naive / wall >= 3)})"
    )


if __name__ == "__main__":
    main()
