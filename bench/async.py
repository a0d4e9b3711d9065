"""AsyncOutbox against Outbox, in the same run: enqueue rate, drain time, and the loop's stalls.

Rates: the sync API and the async API run alternately on fresh journals in one folder (chunks
of enqueues, whole enqueue_many calls and flushes), so that disk hiccups hit both alike;
medians are reported. Drains go to one sandbox in a child process. Stalls, in runs of their
own: while the async side works, a ticker task on the event loop measures how late each of
its 2 ms sleeps wakes up; the worst of those delays is the longest the loop was held up.
Python's garbage collector stops every thread, so the longest collection in the same window
is printed beside it, and the runs are repeated after ``gc.freeze()``. The same ticker beside
an idle loop shows the machine's own noise, and beside the sync API called straight from a
coroutine (what AsyncOutbox exists to avoid) shows a blocked loop. Targets: async within 1.2x
of sync; no stall above 50 ms.

    python bench/async.py [--single 2000] [--many 10000] [--drain 200] [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import statistics
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from common import sandbox_process, verdict

from outbox import AsyncOutbox, Outbox, Settings, State

TICK = 0.002
CHUNK = 100


def requests(count: int, prefix: str) -> list[dict[str, Any]]:
    return [
        {
            "template": "inspection-report",
            "data": {"inspector": "Ada", "site": f"Site {i}"},
            "key": f"{prefix}-{i}",
        }
        for i in range(count)
    ]


class Probe:
    """A ticker task on the loop, and the garbage collector's pauses, over one window.

    ``freeze`` first moves every object alive to the collector's permanent generation
    (``gc.freeze()``, as an app can do once after start-up), so that a full collection only
    walks what was made since.
    """

    def __init__(self, *, freeze: bool = False) -> None:
        self.freeze = freeze
        self.delays: list[float] = []
        self.gc_pauses: list[float] = []
        self._gc_started = 0.0

    def _on_gc(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._gc_started = time.perf_counter()
        else:
            self.gc_pauses.append(time.perf_counter() - self._gc_started)

    async def _tick(self) -> None:
        while True:
            before = time.perf_counter()
            await asyncio.sleep(TICK)
            self.delays.append(time.perf_counter() - before - TICK)

    @contextlib.asynccontextmanager
    async def watching(self) -> Any:
        if self.freeze:
            gc.collect()
            gc.freeze()
        task = asyncio.create_task(self._tick())
        await asyncio.sleep(TICK * 3)
        gc.callbacks.append(self._on_gc)
        try:
            yield self
        finally:
            gc.callbacks.remove(self._on_gc)
            if self.freeze:
                gc.unfreeze()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    @property
    def worst(self) -> float:
        return max(self.delays, default=0.0)

    @property
    def p99(self) -> float:
        ordered = sorted(self.delays)
        return ordered[int(len(ordered) * 0.99)] if ordered else 0.0

    def line(self, label: str, *, target: bool = True) -> str:
        text = (
            f"  {label:<36} worst {self.worst * 1000:6.1f} ms   p99 {self.p99 * 1000:5.1f} ms"
            f"   longest GC pause {max(self.gc_pauses, default=0.0) * 1000:5.1f} ms"
        )
        if target:
            text += f"   (target <= 50 ms: {verdict(self.worst <= 0.05)})"
        return text


# -- rates -------------------------------------------------------------------------------


async def single_enqueues(base: Path, count: int) -> tuple[list[float], ...]:
    """Seconds per enqueue, chunk by chunk, on three open journals in turn: the sync API, the
    async one awaited call after call, and the async one called by a chunk of tasks at once."""
    sync_times: list[float] = []
    async_times: list[float] = []
    gathered_times: list[float] = []
    data = {"inspector": "Ada", "site": "N"}
    async with (
        AsyncOutbox(base / "single-async.db") as aob,
        AsyncOutbox(base / "gathered.db") as gob,
    ):
        with Outbox(base / "single-sync.db") as ob:
            for chunk in range(count // CHUNK):
                keys = range(chunk * CHUNK, (chunk + 1) * CHUNK)
                start = time.perf_counter()
                for i in keys:
                    ob.enqueue("inspection-report", data, key=f"s{i}")
                sync_times.append((time.perf_counter() - start) / CHUNK)
                start = time.perf_counter()
                for i in keys:
                    await aob.enqueue("inspection-report", data, key=f"a{i}")
                async_times.append((time.perf_counter() - start) / CHUNK)
                start = time.perf_counter()
                await asyncio.gather(
                    *(gob.enqueue("inspection-report", data, key=f"g{i}") for i in keys)
                )
                gathered_times.append((time.perf_counter() - start) / CHUNK)
    return sync_times, async_times, gathered_times


def sync_many(db: Path, count: int) -> float:
    with Outbox(db) as ob:
        batch = requests(count, "s")
        start = time.perf_counter()
        ob.enqueue_many(batch)
        return time.perf_counter() - start


async def async_many(db: Path, count: int, probe: Probe | None = None) -> float:
    """Seconds for one awaited enqueue_many; with a ``probe``, the loop's stalls meanwhile (the
    probe's own ticks take the interpreter lock from the worker: rates are timed without it)."""
    async with AsyncOutbox(db) as aob:
        batch = requests(count, "a")
        async with probe.watching() if probe else contextlib.nullcontext():
            start = time.perf_counter()
            await aob.enqueue_many(batch)
            return time.perf_counter() - start


def sync_drain(db: Path, count: int, base_url: str, api_key: str) -> float:
    with Outbox(db, api_key=api_key, base_url=base_url, settings=Settings()) as ob:
        ob.enqueue_many(requests(count, f"sd-{db.stem}"))
        start = time.perf_counter()
        report = ob.flush(timeout=300)
        elapsed = time.perf_counter() - start
    if report.counts[State.DONE] != count:
        raise SystemExit(f"sync flush left work: {report.problems}")
    return elapsed


async def async_drain(
    db: Path, count: int, base_url: str, api_key: str, probe: Probe | None = None
) -> float:
    async with AsyncOutbox(db, api_key=api_key, base_url=base_url, settings=Settings()) as aob:
        await aob.enqueue_many(requests(count, f"ad-{db.stem}"))
        async with probe.watching() if probe else contextlib.nullcontext():
            start = time.perf_counter()
            report = await aob.flush(timeout=300)
            elapsed = time.perf_counter() - start
    if report.counts[State.DONE] != count:
        raise SystemExit(f"async flush left work: {report.problems}")
    return elapsed


# -- stalls only -------------------------------------------------------------------------


async def both_at_once(
    base: Path, many: int, drain: int, base_url: str, api_key: str, probe: Probe
) -> None:
    """A flush and an enqueue_many at the same time, on two journals (as the test does)."""
    base.mkdir()
    flushed = AsyncOutbox(base / "flush.db", api_key=api_key, base_url=base_url)
    filled = AsyncOutbox(base / "many.db")
    async with flushed, filled:
        await flushed.enqueue_many(requests(drain, "bf"))
        async with probe.watching():
            await asyncio.gather(
                flushed.flush(timeout=300), filled.enqueue_many(requests(many, "bm"))
            )


async def idle(seconds: float, probe: Probe) -> None:
    async with probe.watching():
        await asyncio.sleep(seconds)


async def blocked(db: Path, count: int, probe: Probe) -> None:
    with Outbox(db) as ob:
        batch = requests(count, "b")
        async with probe.watching():
            ob.enqueue_many(batch)
            await asyncio.sleep(TICK * 3)


@contextlib.contextmanager
def folder() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="outbox-bench-async-") as name:
        yield Path(name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--single", type=int, default=2000, help="single enqueues per side")
    parser.add_argument("--many", type=int, default=10_000, help="entries in one enqueue_many")
    parser.add_argument("--drain", type=int, default=200, help="entries flushed per side")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    many_probe, drain_probe, both_probe, idle_probe, blocked_probe = (Probe() for _ in range(5))
    frozen_many, frozen_both = Probe(freeze=True), Probe(freeze=True)
    with folder() as base:
        single_sync, single_async, gathered = asyncio.run(single_enqueues(base, args.single))
        many_sync: list[float] = []
        many_async: list[float] = []
        for r in range(args.rounds):
            many_sync.append(sync_many(base / f"ms{r}.db", args.many))
            many_async.append(asyncio.run(async_many(base / f"ma{r}.db", args.many)))
            asyncio.run(async_many(base / f"mp{r}.db", args.many, many_probe))
            asyncio.run(async_many(base / f"mf{r}.db", args.many, frozen_many))
        asyncio.run(blocked(base / "blocked.db", args.many, blocked_probe))
        drain_sync: list[float] = []
        drain_async: list[float] = []
        with sandbox_process("--render-seconds", "0.05") as sandbox:
            url, key = sandbox.base_url, sandbox.api_key
            for r in range(args.rounds):
                drain_sync.append(sync_drain(base / f"ds{r}.db", args.drain, url, key))
                drain_async.append(
                    asyncio.run(async_drain(base / f"da{r}.db", args.drain, url, key))
                )
                asyncio.run(async_drain(base / f"dp{r}.db", args.drain, url, key, drain_probe))
            asyncio.run(both_at_once(base / "plain", args.many, args.drain, url, key, both_probe))
            asyncio.run(both_at_once(base / "frozen", args.many, args.drain, url, key, frozen_both))
        asyncio.run(idle(3.0, idle_probe))

    def ratio_line(label: str, sync: float, asyn: float, shown: str) -> None:
        print(
            f"  {label:<34} {shown}   ratio {asyn / sync:.2f}x "
            f"(target <= 1.2x: {verdict(asyn / sync <= 1.2)})"
        )

    s, a = statistics.median(single_sync), statistics.median(single_async)
    print(
        f"AsyncOutbox vs Outbox (medians of {args.single // CHUNK} alternating chunks of "
        f"{CHUNK} enqueues, and of {args.rounds} rounds of enqueue_many and of flush)"
    )
    ratio_line(
        "enqueue, one await after another",
        s,
        a,
        f"sync {1 / s:7,.0f}/s ({s * 1e6:4.0f} us)   async {1 / a:7,.0f}/s ({a * 1e6:4.0f} us)",
    )
    g = statistics.median(gathered)
    ratio_line(
        f"enqueue, {CHUNK} tasks at once",
        s,
        g,
        f"sync {1 / s:7,.0f}/s             async {1 / g:7,.0f}/s          ",
    )
    ms, ma = statistics.median(many_sync), statistics.median(many_async)
    ratio_line(
        f"enqueue_many({args.many:,})",
        ms,
        ma,
        f"sync {ms:7.3f} s              async {ma:7.3f} s           ",
    )
    ds, da = statistics.median(drain_sync), statistics.median(drain_async)
    ratio_line(
        f"flush of {args.drain} entries",
        ds,
        da,
        f"sync {ds:7.2f} s              async {da:7.2f} s           ",
    )
    print("Event-loop stalls (a ticker sleeping 2 ms at a time; how late it woke)")
    print(many_probe.line(f"during enqueue_many({args.many:,})"))
    print(drain_probe.line(f"during flush of {args.drain}"))
    print(both_probe.line("during both at once"))
    print(frozen_many.line("enqueue_many, after gc.freeze()"))
    print(frozen_both.line("both at once, after gc.freeze()"))
    print(idle_probe.line("idle loop (the machine's noise)", target=False))
    print(blocked_probe.line("sync enqueue_many on the loop", target=False))


if __name__ == "__main__":
    main()
