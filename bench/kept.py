"""What a long-running outbox keeps per entry, looked for in one process.

Runs what ``outbox run --watch`` runs (the background worker, the drop-folder watcher, the
outcome log) in this process against the sandbox's in-process transport, with a producer
enqueueing through the library and the drop folder (a fifth as job files). After a warm-up it
notes the length of every dict, set, list and deque alive and the number of objects of each
type, lets ``--entries`` more finish, and prints the containers that grew by at least one item
per 50 entries (with who holds them), the types whose objects grew, and RSS. The sandbox's
own records (``RenderRecord``, one per render) grow by design. ``--trace N`` then also traces
N entries' allocations with tracemalloc and prints the biggest growths by traceback (slow: a
tenth of the rate or less).

    python bench/kept.py [--warmup 3000] [--entries 10000] [--trace 0] [--faults]
"""

from __future__ import annotations

import argparse
import collections
import gc
import inspect
import json
import os
import tempfile
import threading
import time
import tracemalloc
from pathlib import Path

from outbox import Outbox, State, logs
from outbox.sandbox import Sandbox
from outbox.sandbox.faults import Faults
from outbox.watcher import DropFolder

DATA = {"inspector": "Ada", "site": "North Pier", "findings": [{"text": "Rail", "severity": 2}]}


def finished(ob: Outbox) -> int:
    counts = ob.counts()
    return counts[State.DONE] + counts[State.FAILED] + counts[State.REJECTED]


def rss_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def container_sizes() -> dict[int, int]:
    """The length of every dict, set, list and deque alive, by id."""
    kinds = (dict, set, list, collections.deque)
    return {id(o): len(o) for o in gc.get_objects() if isinstance(o, kinds)}


def type_counts() -> collections.Counter[str]:
    return collections.Counter(type(o).__qualname__ for o in gc.get_objects())


def owner(container: object) -> str:
    """Who holds ``container``: an attribute of an object, or a module's global."""
    referrers = [
        r for r in gc.get_referrers(container) if r is not globals() and not inspect.isframe(r)
    ]
    for referrer in referrers:
        if isinstance(referrer, tuple):
            up = [r for r in gc.get_referrers(referrer) if not inspect.isframe(r)]
            return f"a tuple of {len(referrer)} held by " + "; ".join(
                f"{type(r).__qualname__} {str(r)[:150]}" for r in up[:3]
            )
        if not isinstance(referrer, dict):
            return f"a {type(referrer).__qualname__} {str(referrer)[:120]}"
    for referrer in referrers:
        if isinstance(referrer, dict):
            for name, value in referrer.items():
                if value is container:
                    holders = [
                        h
                        for h in gc.get_referrers(referrer)
                        if getattr(h, "__dict__", None) is referrer
                    ]
                    where = (
                        type(holders[0]).__qualname__ if holders else referrer.get("__name__", "?")
                    )
                    return f"{where}.{name}"
    return "?"


def report_containers(before: dict[int, int], entries: int, top: int) -> None:
    grown = []
    for o in gc.get_objects():
        if isinstance(o, (dict, set, list, collections.deque)):
            old = before.get(id(o), 0)
            if len(o) - old >= max(20, entries // 50):
                grown.append((len(o) - old, o))
    grown.sort(key=lambda pair: -pair[0])
    print(f"containers that grew by at least {max(20, entries // 50)} items:")
    shown = grown[:top]
    del grown
    while shown:
        growth, o = shown.pop(0)
        sample = list(o)[:3] if not isinstance(o, dict) else list(o.items())[:2]
        print(f"  +{growth} {type(o).__name__} held by {owner(o)}: {str(sample)[:160]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--warmup", type=int, default=3000)
    parser.add_argument("--entries", type=int, default=10000)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--faults", action="store_true")
    parser.add_argument("--trace", type=int, default=0, help="entries to trace allocations of")
    args = parser.parse_args()
    faults = (
        Faults(
            error_503_before=0.02, drop_after=0.02, error_500_after=0.02, truncate_downloads=0.02
        )
        if args.faults
        else None
    )
    with tempfile.TemporaryDirectory(prefix="outbox-kept-") as tmp:
        root = Path(tmp)
        drop = root / "drop"
        drop.mkdir()
        sb = Sandbox(render_seconds=0.05, faults=faults, seed=5).start()
        ob = Outbox(
            root / "journal.db",
            api_key=sb.api_key,
            base_url=sb.base_url,
            downloads=root / "pdfs",
            transport=sb.transport(),
        )
        logs.configure()  # the outcome log, as outbox run has it (stderr)
        ob.on_change(lambda event: None)
        stop = threading.Event()
        watcher = DropFolder(ob, drop)
        watching = threading.Thread(target=watcher.run, args=(stop,), daemon=True)
        watching.start()
        ob.start()
        enqueued = 0

        def produce(count: int) -> None:
            nonlocal enqueued
            target = enqueued + count
            while enqueued < target:
                batch = min(100, target - enqueued)
                files = batch // 5
                for i in range(enqueued, enqueued + files):
                    job = {"template": "inspection-report", "key": f"k{i}", "data": DATA}
                    (drop / f"job-{i}.json.tmp").write_text(json.dumps(job))
                    os.rename(drop / f"job-{i}.json.tmp", drop / f"job-{i}.json")
                ob.enqueue_many(
                    {"template": "inspection-report", "data": {**DATA, "n": i}, "key": f"k{i}"}
                    for i in range(enqueued + files, enqueued + batch)
                )
                enqueued += batch
                while enqueued - finished(ob) > 400:
                    time.sleep(0.05)
            while finished(ob) < enqueued:
                time.sleep(0.1)
            for sub in ("accepted", "results"):
                for name in os.listdir(drop / sub) if (drop / sub).exists() else []:
                    if not name.startswith("."):
                        os.unlink(drop / sub / name)

        started = time.monotonic()
        produce(args.warmup)
        print(f"warm-up: {args.warmup} entries in {time.monotonic() - started:.0f} s", flush=True)
        gc.collect()
        rss_before = rss_kb()
        sizes_before = container_sizes()
        types_before = type_counts()
        mark = finished(ob)
        produce(args.entries)
        gc.collect()
        entries = finished(ob) - mark
        rss_after = rss_kb()
        print(
            f"then {entries} entries in {time.monotonic() - started:.0f} s; RSS "
            f"{rss_before / 1024:.1f} -> {rss_after / 1024:.1f} MB: "
            f"{(rss_after - rss_before) * 10_000 / entries:+.0f} KB per 10,000 entries"
        )
        report_containers(sizes_before, entries, args.top)
        types_after = type_counts()
        grown = sorted(
            ((types_after[t] - types_before.get(t, 0), t) for t in types_after), reverse=True
        )
        print("objects by type, growth:", [(t, n) for n, t in grown[: args.top] if n > 0])
        print(f"threads {threading.active_count()}, fds {len(os.listdir('/proc/self/fd'))}")
        if args.trace:
            tracemalloc.start(args.frames)
            produce(200)
            gc.collect()
            before = tracemalloc.take_snapshot()
            mark = finished(ob)
            produce(args.trace)
            gc.collect()
            after = tracemalloc.take_snapshot()
            entries = finished(ob) - mark
            tracemalloc.stop()
            ours = [tracemalloc.Filter(False, "*/outbox/sandbox/*", all_frames=True)]
            growth = after.filter_traces(ours).compare_to(before.filter_traces(ours), "traceback")
            total = sum(s.size_diff for s in growth)
            print(
                f"traced over {entries} entries: {total / 1024:+.1f} KB kept, "
                f"{total / entries * 10_000 / 1024:+.1f} KB per 10,000"
            )
            for stat in growth[: args.top]:
                if stat.size_diff <= 0:
                    continue
                print(f"\n{stat.size_diff / 1024:+.1f} KB, {stat.count_diff:+d} blocks")
                for line in stat.traceback.format()[-2 * args.frames :]:
                    print("   ", line)
        stop.set()
        watching.join()  # it clears its status in the journal as it ends
        ob.stop()
        ob.close()
        sb.close()


if __name__ == "__main__":
    main()
