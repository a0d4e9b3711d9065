"""Benchmark: how many ``GET /v1/renders/:id`` the sandbox answers per second.

Eight client threads (by default), each with its own keep-alive ``http.client`` connection,
poll existing renders for a fixed time. By default the sandbox runs as its own process
(``python -m outbox.sandbox --port 0``), as it does under the demo and end-to-end tests, so
the clients do not compete with it for the interpreter lock; ``--in-process`` starts it in this
process instead.

    python bench/sandbox.py                  # 8 clients, 5 seconds
    python bench/sandbox.py --clients 16 --seconds 10 --in-process
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit

TARGET_PER_SECOND = 500

INSPECTION = {"inspector": "Bench", "site": "Loopback", "findings": [{"text": "ok"}]}


@contextmanager
def sandbox_process() -> Iterator[tuple[str, str]]:
    """Run the sandbox command in a child process; yield ``(base_url, api_key)``."""
    with tempfile.TemporaryDirectory(prefix="sandbox-bench-") as state:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "outbox.sandbox",
                "--port",
                "0",
                "--state",
                state,
                "--render-seconds",
                "0",
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert process.stdout is not None
            base_url = process.stdout.readline().strip().rsplit(" ", 1)[-1]
            api_key = process.stdout.readline().strip().rsplit(" ", 1)[-1]
            yield base_url, api_key
        finally:
            process.terminate()
            process.wait(10)


@contextmanager
def sandbox_in_process() -> Iterator[tuple[str, str]]:
    """Run the sandbox in this process; yield ``(base_url, api_key)``."""
    from outbox.sandbox import Sandbox

    with Sandbox(render_seconds=0) as sb:
        yield sb.base_url, sb.api_key


def create_renders(base_url: str, api_key: str, count: int) -> list[str]:
    """Make ``count`` renders to poll."""
    parts = urlsplit(base_url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port)
    headers = {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"}
    ids = []
    for n in range(count):
        body = json.dumps({"data": INSPECTION})
        conn.request(
            "POST",
            "/v1/templates/inspection-report/render",
            body,
            {**headers, "Idempotency-Key": f"bench-{n}"},
        )
        response = conn.getresponse()
        payload = json.loads(response.read())
        if response.status not in (200, 202):
            raise SystemExit(f"render POST failed: {response.status} {payload}")
        ids.append(payload["id"])
    conn.close()
    return ids


def poll(
    base_url: str, api_key: str, ids: list[str], seconds: float, clients: int
) -> tuple[int, int, list[float], float]:
    """Poll from ``clients`` threads for ``seconds``; return (ok, errors, latencies, elapsed)."""
    parts = urlsplit(base_url)
    headers = {"Authorization": f"Bearer {api_key}"}
    start = threading.Barrier(clients + 1)
    results: list[tuple[int, int, list[float]]] = []
    lock = threading.Lock()
    deadline = [0.0]

    def worker(offset: int) -> None:
        conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port)
        conn.connect()
        ok = errors = 0
        latencies: list[float] = []
        n = offset
        start.wait()
        while True:
            before = time.perf_counter()
            if before >= deadline[0]:
                break
            conn.request("GET", f"/v1/renders/{ids[n % len(ids)]}", headers=headers)
            response = conn.getresponse()
            body = response.read()
            latencies.append(time.perf_counter() - before)
            if response.status == 200 and b'"succeeded"' in body:
                ok += 1
            else:
                errors += 1
            n += 1
        conn.close()
        with lock:
            results.append((ok, errors, latencies))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    began = time.perf_counter()
    deadline[0] = began + seconds
    start.wait()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - began
    ok = sum(r[0] for r in results)
    errors = sum(r[1] for r in results)
    latencies = [lat for r in results for lat in r[2]]
    return ok, errors, latencies, elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--renders", type=int, default=200)
    parser.add_argument(
        "--in-process",
        action="store_true",
        help="run the sandbox in this process instead of a child process",
    )
    args = parser.parse_args()

    runner = sandbox_in_process if args.in_process else sandbox_process
    with runner() as (base_url, api_key):
        ids = create_renders(base_url, api_key, args.renders)
        poll(base_url, api_key, ids, 0.5, args.clients)  # warm up
        ok, errors, latencies, elapsed = poll(base_url, api_key, ids, args.seconds, args.clients)

    rate = ok / elapsed
    latencies.sort()
    q = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else [0.0] * 99
    mode = "in-process" if args.in_process else "separate process"
    print(
        f"sandbox GET /v1/renders/:id, {args.clients} keep-alive clients, {mode}, "
        f"{args.seconds:g} s"
    )
    print(f"  requests ok   : {ok}")
    print(f"  errors        : {errors}")
    print(
        f"  throughput    : {rate:,.0f} req/s (target {TARGET_PER_SECOND} req/s: "
        f"{'met' if rate >= TARGET_PER_SECOND else 'NOT met'})"
    )
    print(f"  latency p50   : {q[49] * 1000:.2f} ms")
    print(f"  latency p95   : {q[94] * 1000:.2f} ms")
    print(f"  latency p99   : {q[98] * 1000:.2f} ms")
    return 0 if rate >= TARGET_PER_SECOND and errors == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
