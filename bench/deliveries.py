"""What exactly-once delivery costs: entries with a share link and an email each, against a
sandbox that adds 20 ms to every request.

Three flushes of the same number of entries, each on a fresh journal, in one run:

1. the baseline: no deliveries;
2. a link and an email per entry: the wall time against the baseline, requests per delivery
   (creates and share listings; 1.00 means no listing was needed) and the time from ``done``
   to ``delivered``;
3. the same while the sandbox loses 30 % of the answers after creating a render, share or
   email: requests per delivery, how many lost creates were adopted from the share list, and
   the duplicates Craftkit made (must be 0), with outbox's default schedule (an unanswered
   create is looked up 2 s after it was sent).

    python bench/deliveries.py [--entries 200] [--latency 0.02]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
from common import SandboxProcess, sandbox_process, verdict

from outbox import ExitCode, Outbox, State

DATA = {"inspector": "Bench", "site": "Loopback"}
DELIVERY_ROUTES = (
    "POST /v1/renders/:id/shares",
    "POST /v1/renders/:id/email",
    "GET /v1/renders/:id/shares",
)


def requests_by_route(sandbox: SandboxProcess) -> dict[str, int]:
    return {
        route: sum(statuses.values()) for route, statuses in sandbox.stats()["requests"].items()
    }


def difference(after: Mapping[str, int], before: Mapping[str, int]) -> dict[str, int]:
    return {route: count - before.get(route, 0) for route, count in after.items()}


def moment(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def flush_all(sandbox: SandboxProcess, entries: int, deliveries: bool, tag: str) -> dict[str, Any]:
    """Enqueue ``entries`` (with a link and an email each if ``deliveries``), flush until
    nothing is left, and say what it took."""
    with tempfile.TemporaryDirectory() as folder:
        db = Path(folder) / "bench.db"
        with Outbox(db) as ob:
            ob.enqueue_many(
                {
                    "template": "inspection-report",
                    "data": {**DATA, "n": i},
                    "key": f"{tag}-{i}",
                    **(
                        {"share": True, "email": {"to": f"owner-{i}@example.com"}}
                        if deliveries
                        else {}
                    ),
                }
                for i in range(entries)
            )
        before = requests_by_route(sandbox)
        shares_before = sandbox.stats()["shares_created"]
        flushes = 0
        start = time.perf_counter()
        with Outbox(
            db, api_key=sandbox.api_key, base_url=sandbox.base_url, downloads=Path(folder) / "pdf"
        ) as ob:
            while True:
                flushes += 1
                report = ob.flush(timeout=120)
                if report.exit_code is ExitCode.OK:
                    break
                if flushes == 20:
                    raise SystemExit(f"still not drained after 20 flushes: {report.problems}")
            wall = time.perf_counter() - start
            waits: list[float] = []
            adopted = 0
            for entry in ob.list():
                assert entry.state is State.DONE, entry
                history = ob.history(entry.id)
                done_at = next(
                    moment(e.at)
                    for e in history
                    if e.delivery_id is None and e.to_state is State.DONE
                )
                for delivery in entry.deliveries:
                    assert delivery.share_url, delivery
                    delivered_at = max(
                        moment(e.at) for e in history if e.delivery_id == delivery.id
                    )
                    waits.append(delivered_at - done_at)
                adopted += sum(1 for e in history if e.detail and "adopted share" in e.detail)
        used = difference(requests_by_route(sandbox), before)
    made = sandbox.stats()["shares_created"] - shares_before
    return {
        "wall": wall,
        "flushes": flushes,
        "requests": sum(used.values()),
        "delivery_requests": sum(used.get(route, 0) for route in DELIVERY_ROUTES),
        "listings": used.get("GET /v1/renders/:id/shares", 0),
        "made": made,
        "waits": sorted(waits),
        "adopted": adopted,
    }


def set_faults(sandbox: SandboxProcess, **faults: Any) -> None:
    httpx.post(f"{sandbox.base_url}/_sandbox/faults", json=faults, timeout=30).raise_for_status()


def percentile(values: list[float], fraction: float) -> float:
    return values[min(len(values) - 1, int(fraction * len(values)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=200)
    parser.add_argument("--latency", type=float, default=0.02)
    args = parser.parse_args()
    n = args.entries
    with sandbox_process(
        "--latency", str(args.latency), "--render-seconds", "0.2", "--seed", "20"
    ) as sandbox:
        baseline = flush_all(sandbox, n, deliveries=False, tag="plain")
        clean = flush_all(sandbox, n, deliveries=True, tag="clean")
        set_faults(sandbox, drop_after=0.3)
        lossy = flush_all(sandbox, n, deliveries=True, tag="lossy")
        emails = sandbox.stats()["emails_per_key"]
    print(f"{n} entries, {args.latency * 1000:.0f} ms added to every request")
    print(
        f"  no deliveries               {baseline['wall']:7.2f} s  "
        f"{baseline['requests'] / n:.2f} requests per entry"
    )
    ratio = clean["wall"] / baseline["wall"]
    print(
        f"  a link and an email each    {clean['wall']:7.2f} s  = {ratio:.2f}x the baseline; "
        f"{clean['delivery_requests'] / (2 * n):.2f} requests per delivery "
        f"({clean['listings']} listings)"
    )
    print(
        f"    done -> delivered         median {statistics.median(clean['waits']):.3f} s, "
        f"p95 {percentile(clean['waits'], 0.95):.3f} s"
    )
    duplicates = lossy["made"] - 2 * n
    doubled_emails = sum(
        1 for key, count in emails.items() if key.startswith("lossy") and count > 1
    )
    print(
        f"  30 % of answers lost        {lossy['wall']:7.2f} s in {lossy['flushes']} flush(es); "
        f"{lossy['delivery_requests'] / (2 * n):.2f} requests per delivery "
        f"({lossy['listings']} listings); {lossy['adopted']} lost creates adopted"
    )
    print(
        f"    done -> delivered         median {statistics.median(lossy['waits']):.3f} s, "
        f"p95 {percentile(lossy['waits'], 0.95):.3f} s"
    )
    print(
        f"    shares made beyond one per delivery: {duplicates}; entries emailed twice: "
        f"{doubled_emails} (target 0: {verdict(duplicates == 0 and doubled_emails == 0)})"
    )


if __name__ == "__main__":
    main()
