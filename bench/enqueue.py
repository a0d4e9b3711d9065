"""Enqueue throughput: outbox's durable enqueue against a raw sqlite3 INSERT+COMMIT.

Both sides use the same file system, WAL and synchronous=FULL, and commit every row, so the
ratio shows what the journal adds on top of SQLite itself (targets: <= 1.5x per enqueue;
enqueue_many >= 20,000 entries/s).

    python bench/enqueue.py [--count 2000] [--many 50000] [--dir DIR]
"""

from __future__ import annotations

import argparse
import json
import secrets
import sqlite3
import tempfile
import time
from pathlib import Path

from outbox import Outbox

DATA = {"inspector": "Ada", "site": "North", "findings": [{"item": "hull", "severity": 2}]}


def raw_inserts(path: Path, count: int) -> float:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute(
        "CREATE TABLE entries (seq INTEGER PRIMARY KEY, id TEXT UNIQUE, template TEXT,"
        " data TEXT, key TEXT UNIQUE, state TEXT, created_at TEXT)"
    )
    start = time.perf_counter()
    for i in range(count):
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(
            "INSERT INTO entries (id, template, data, key, state, created_at)"
            " VALUES (?, ?, ?, ?, 'pending', ?)",
            (secrets.token_hex(8), "inspection-report", json.dumps(DATA), f"raw-{i}", "now"),
        )
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - start
    conn.close()
    return count / elapsed


def outbox_enqueues(path: Path, count: int) -> float:
    with Outbox(path) as ob:
        start = time.perf_counter()
        for i in range(count):
            ob.enqueue("inspection-report", DATA, key=f"single-{i}")
        elapsed = time.perf_counter() - start
    return count / elapsed


def outbox_enqueue_many(path: Path, count: int, batch: int) -> float:
    with Outbox(path) as ob:
        start = time.perf_counter()
        for offset in range(0, count, batch):
            ob.enqueue_many(
                {"template": "inspection-report", "data": DATA, "key": f"many-{i}"}
                for i in range(offset, min(count, offset + batch))
            )
        elapsed = time.perf_counter() - start
    return count / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=2000, help="single enqueues per side")
    parser.add_argument("--many", type=int, default=50_000, help="entries via enqueue_many")
    parser.add_argument("--batch", type=int, default=5_000, help="entries per enqueue_many call")
    parser.add_argument("--dir", help="folder for the journals (default: a temporary folder)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as folder:
        base = Path(folder)
        # Interleave the two sides so disk hiccups hit both alike.
        raw, lib = [], []
        for round_ in range(3):
            raw.append(raw_inserts(base / f"raw-{round_}.db", args.count // 3))
            lib.append(outbox_enqueues(base / f"outbox-{round_}.db", args.count // 3))
        raw_rate, lib_rate = max(raw), max(lib)
        many_rate = outbox_enqueue_many(base / "many.db", args.many, args.batch)
    ratio = raw_rate / lib_rate
    print(f"raw sqlite3 INSERT+COMMIT     {raw_rate:10,.0f} rows/s")
    print(f"outbox enqueue (durable)      {lib_rate:10,.0f} entries/s")
    print(
        f"cost ratio enqueue / raw      {ratio:10.2f}x   (target <= 1.5x: "
        f"{'met' if ratio <= 1.5 else 'MISSED'})"
    )
    print(
        f"outbox enqueue_many           {many_rate:10,.0f} entries/s   (target >= 20,000: "
        f"{'met' if many_rate >= 20_000 else 'MISSED'})"
    )


if __name__ == "__main__":
    main()
