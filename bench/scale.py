"""Costs that must not grow with the journal, and the CLI's start-up.

Every row is a ratio against a baseline measured in the same run, with the journal sizes used:

  single   durable ``enqueue`` vs a raw sqlite3 INSERT+COMMIT with the same pragmas (WAL,
           synchronous=FULL), one row per transaction on both sides            target <= 1.2x
  growth   ``enqueue_many`` (batches of 1,000) over the first 50k vs the last 50k entries of
           a 400k journal, with keys given and with keys made by outbox, and the pages each
           batch writes at both ends                                             target <= 1.2x
  flush    ``outbox flush`` with nothing to do (the sandbox answering) on a journal of 200k
           finished entries vs an empty one                                     target <= 1.1x
  list     peak RSS of ``outbox list`` (no flags, piped) on 200k entries, and on an empty
           journal for comparison                                               target <= 60 MB
  startup  ``outbox --help`` and ``outbox enqueue`` vs ``sqlite-utils --help``   target <= 1.3x

    python bench/scale.py [--only single,growth,flush,list,startup] [--growth 400000]
                          [--finished 200000] [--dir DIR]

Medians of interleaved runs, so a busy moment of the (shared) machine hits both sides alike.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import secrets
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from common import sandbox_process

from outbox import Outbox, store

DATA = {"inspector": "Ada", "site": "North", "findings": [{"item": "hull", "severity": 2}]}
TEMPLATE = "inspection-report"
BIN = Path(sys.executable).parent
#: The CLI as the journal-size benchmarks run it (start-up is timed with the installed script).
OUTBOX = [sys.executable, "-m", "outbox"]


def verdict(ratio: float, target: float) -> str:
    return f"target <= {target}x: {'met' if ratio <= target else 'MISSED'}"


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OUTBOX_", "CRAFTKIT_"))}
    return {**env, **extra}


class Run:
    """A command's wall time and the CPU time its process used (user + system).

    The CPU time hardly depends on what else the (shared) machine does, the wall time does;
    both are printed."""

    def __init__(self, wall: float, cpu: float) -> None:
        self.wall, self.cpu = wall, cpu


def _run(command: Sequence[str], env: dict[str, str]) -> Run:
    started = time.perf_counter()
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    assert process.returncode == 0, (command, process.returncode)
    return Run(time.perf_counter() - started, usage.ru_utime + usage.ru_stime)


def _interleaved(sides: dict[str, Callable[[], Run]], rounds: int) -> dict[str, Run]:
    """Each side's median wall and CPU time over ``rounds`` rounds that take the sides in
    turn, so a busy moment of the machine hits them alike."""
    runs: dict[str, list[Run]] = {name: [] for name in sides}
    for _ in range(rounds):
        for name, measure in sides.items():
            runs[name].append(measure())
    return {
        name: Run(statistics.median(r.wall for r in each), statistics.median(r.cpu for r in each))
        for name, each in runs.items()
    }


def _compare(what: str, side: Run, baseline: Run, baseline_is: str, rounds: int) -> str:
    wall, cpu = side.wall / baseline.wall, side.cpu / baseline.cpu
    return (
        f"{what} {side.wall * 1e3:,.0f} ms wall, {side.cpu * 1e3:,.0f} ms CPU vs {baseline_is}"
        f" {baseline.wall * 1e3:,.0f} ms, {baseline.cpu * 1e3:,.0f} ms (medians of {rounds});"
        f" ratio {wall:.2f}x wall, {cpu:.2f}x CPU"
    )


# -- single durable enqueue --------------------------------------------------------------


def _raw_connection(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute(
        "CREATE TABLE IF NOT EXISTS entries (seq INTEGER PRIMARY KEY, id TEXT UNIQUE,"
        " template TEXT, data TEXT, key TEXT UNIQUE, state TEXT, created_at TEXT)"
    )
    return conn


def _frames_per_commit(conn: sqlite3.Connection, wal: Path, commit: Callable[[], object]) -> float:
    """Write-ahead log frames (pages) that one commit writes, over 100 commits."""
    return _frames(conn, wal, lambda: [commit() for _ in range(100)]) / 100


def single(folder: Path, count: int) -> None:
    """One operation of each side in turn, ``count`` times: a busy moment of the disk or the
    machine hits the sides alike. Per-operation medians."""
    raw = _raw_connection(folder / "raw.db")
    ob = Outbox(folder / "single.db")
    made = iter(range(10**9))

    def raw_insert() -> None:
        raw.execute("BEGIN IMMEDIATE")
        raw.execute(
            "INSERT INTO entries (id, template, data, key, state, created_at)"
            " VALUES (?, ?, ?, ?, 'pending', ?)",
            (secrets.token_hex(8), TEMPLATE, json.dumps(DATA), f"raw-{next(made)}", "now"),
        )
        raw.execute("COMMIT")

    def enqueue() -> None:
        ob.enqueue(TEMPLATE, DATA, key=f"single-{next(made)}")

    # Prepared (checked) before the clock runs: this side times the journal's part alone.
    prepared = iter([ob.prepare(TEMPLATE, DATA, key=f"journal-{n}") for n in range(count)])
    data = json.dumps(DATA, separators=(",", ":"))

    def journal_only() -> None:
        ob.journal.enqueue(next(prepared))

    bare = Outbox(folder / "statements.db")
    conn = bare.journal._conn

    def statements_only() -> None:
        """The journal's own statements for one enqueue, run straight on a journal's connection
        (same schema, same pragmas): what the transaction costs without outbox's Python."""
        n = next(made)
        entry_id, stamp, key = f"{n:016x}", "2026-11-30T04:00:00.000Z", f"bare-{n}"
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(
            store._NEW_ENTRY,
            (entry_id, TEMPLATE, data, key, key, None, None, time.time(), None, stamp, stamp),
        )
        conn.execute(
            store._NEW_EVENT,
            (entry_id, stamp, None, "pending", 0, *[None] * 2, "enqueued", None, None),
        )
        conn.execute("COMMIT")

    sides: dict[str, Callable[[], None]] = {
        "raw": raw_insert,
        "enqueue": enqueue,
        "journal": journal_only,
        "statements": statements_only,
    }
    took: dict[str, list[float]] = {name: [] for name in sides}
    try:
        for _ in range(count):
            for name, operation in sides.items():
                started = time.perf_counter()
                operation()
                took[name].append(time.perf_counter() - started)
        frames = {
            "raw": _frames_per_commit(raw, folder / "raw.db-wal", raw_insert),
            "enqueue": _frames_per_commit(ob.journal._conn, folder / "single.db-wal", enqueue),
        }
    finally:
        raw.close()
        ob.close()
        bare.close()
    each = {name: statistics.median(values) for name, values in took.items()}
    ratio = each["enqueue"] / each["raw"]
    print(
        f"single: durable enqueue {each['enqueue'] * 1e6:,.0f} us vs raw INSERT+COMMIT"
        f" {each['raw'] * 1e6:,.0f} us (medians of {count:,} each, taken in turn); ratio"
        f" {ratio:.2f}x; {verdict(ratio, 1.2)}"
    )
    print(
        f"single: of which the journal's part (Journal.enqueue of a request checked before)"
        f" {each['journal'] * 1e6:,.0f} us = {each['journal'] / each['raw']:.2f}x raw; pages"
        f" written per commit {frames['enqueue']:.1f} vs raw {frames['raw']:.1f}"
    )
    print(
        f"single: of which the journal's SQL alone (its statements on a journal's connection)"
        f" {each['statements'] * 1e6:,.0f} us = {each['statements'] / each['raw']:.2f}x raw"
    )


# -- enqueue_many as the journal grows ---------------------------------------------------


def _fill(ob: Outbox, total: int, batch: int = 1000, prefix: str | None = "e") -> list[Run]:
    """Enqueue ``total`` entries in batches; the wall and CPU time of each batch. Keys are
    ``prefix-N``, or made by outbox if ``prefix`` is None."""
    took = []
    for offset in range(0, total, batch):
        requests = [
            {"template": TEMPLATE, "data": DATA}
            if prefix is None
            else {"template": TEMPLATE, "data": DATA, "key": f"{prefix}-{i}"}
            for i in range(offset, min(total, offset + batch))
        ]
        wall, cpu = time.perf_counter(), time.thread_time()
        ob.enqueue_many(requests)
        took.append(Run(time.perf_counter() - wall, time.thread_time() - cpu))
    return took


def _pages_per_batch(ob: Outbox, batch: int, keyed: bool, batches: int = 3) -> float:
    """Write-ahead log frames (pages) one more ``enqueue_many`` of ``batch`` entries writes."""
    wal = ob.path.with_name(ob.path.name + "-wal")
    pages = []
    for n in range(batches):
        probe = functools.partial(_fill, ob, batch, batch, f"probe-{n}" if keyed else None)
        pages.append(_frames(ob.journal._conn, wal, probe))
    return statistics.median(pages)


def _frames(conn: sqlite3.Connection, wal: Path, work: Callable[[], object]) -> float:
    """Write-ahead log frames that ``work`` writes."""
    conn.execute("PRAGMA wal_autocheckpoint=0")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    work()
    frames = (wal.stat().st_size - 32) / (4096 + 24)
    conn.execute("PRAGMA wal_autocheckpoint=1000")
    return frames


def growth(folder: Path, total: int, keyed: bool, window: int = 50_000, batch: int = 1000) -> None:
    keys = "keys like e-17" if keyed else "keys made by outbox"
    with Outbox(folder / "growth-empty.db") as ob:
        pages_empty = _pages_per_batch(ob, batch, keyed)
    path = folder / "growth.db"
    with Outbox(path) as ob:
        took = _fill(ob, total, batch, "e" if keyed else None)
        pages_full = _pages_per_batch(ob, batch, keyed)
    per_window = window // batch
    first, last = took[:per_window], took[-per_window:]
    rate = {
        name: (window / sum(r.wall for r in runs), window / sum(r.cpu for r in runs))
        for name, runs in (("first", first), ("last", last))
    }
    wall, cpu = rate["first"][0] / rate["last"][0], rate["first"][1] / rate["last"][1]
    print(
        f"growth ({keys}): enqueue_many (batches of {batch:,}) first {window:,}"
        f" {rate['first'][0]:,.0f}/s wall, {rate['first'][1]:,.0f}/s CPU; last {window:,} of"
        f" {total:,} {rate['last'][0]:,.0f}/s wall, {rate['last'][1]:,.0f}/s CPU; slowdown"
        f" {wall:.2f}x wall, {cpu:.2f}x CPU; {verdict(max(wall, cpu), 1.2)} (the larger)"
    )
    print(
        f"growth ({keys}): pages written per batch of {batch:,}: {pages_full:,.0f} at"
        f" {total:,} entries vs {pages_empty:,.0f} on an empty journal"
        f" (journal {path.stat().st_size / 1e6:,.0f} MB)"
    )
    for journal in folder.glob("growth*"):
        journal.unlink()


# -- a journal of finished entries -------------------------------------------------------


def finished_journal(path: Path, count: int) -> None:
    """A journal of ``count`` entries that were all rendered and downloaded."""
    with Outbox(path) as ob:
        _fill(ob, count, 5000, prefix="done")
    conn = sqlite3.connect(path)
    with conn:
        conn.execute(
            "UPDATE entries SET state = 'done', remote_status = 'completed',"
            " render_id = 'r' || id, pdf_path = '/srv/pdf/' || id || '.pdf', pdf_bytes = 31000,"
            " attempts = 1"
        )
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()


def flush(folder: Path, big: Path, count: int, rounds: int) -> None:
    empty = folder / "empty.db"
    Outbox(empty).close()
    with sandbox_process() as sandbox:
        base = {"CRAFTKIT_API_KEY": sandbox.api_key, "CRAFTKIT_BASE_URL": sandbox.base_url}
        command = [*OUTBOX, "flush", "--timeout", "30"]
        cli = _interleaved(
            {
                "empty": lambda: _run(command, _clean_env(OUTBOX_DB=str(empty), **base)),
                "big": lambda: _run(command, _clean_env(OUTBOX_DB=str(big), **base)),
            },
            rounds,
        )
        opened = {
            name: Outbox(path, api_key=sandbox.api_key, base_url=sandbox.base_url)
            for name, path in (("empty", empty), ("big", big))
        }
        try:

            def in_process(name: str) -> Callable[[], Run]:
                def measure() -> Run:
                    wall, cpu = time.perf_counter(), time.thread_time()
                    opened[name].flush(timeout=30)
                    return Run(time.perf_counter() - wall, time.thread_time() - cpu)

                return measure

            library = _interleaved({name: in_process(name) for name in opened}, rounds * 5)
        finally:
            for ob in opened.values():
                ob.close()
    ratio = max(cli["big"].wall / cli["empty"].wall, cli["big"].cpu / cli["empty"].cpu)
    described = _compare(
        f"`outbox flush` with nothing to do, {count:,} finished entries",
        cli["big"],
        cli["empty"],
        "an empty journal",
        rounds,
    )
    print(f"flush: {described}; {verdict(ratio, 1.1)} (the larger ratio)")
    in_ratio = library["big"].wall / library["empty"].wall
    print(
        f"flush: Outbox.flush() in process, same journals {library['big'].wall * 1e3:,.2f} ms vs"
        f" {library['empty'].wall * 1e3:,.2f} ms (medians of {rounds * 5}); ratio {in_ratio:.2f}x"
    )


# -- outbox list -------------------------------------------------------------------------


def _list_peak(db: Path) -> tuple[float, int, float]:
    """Peak RSS (MB), lines printed and seconds of ``outbox list`` piped to this process."""
    started = time.perf_counter()
    process = subprocess.Popen(
        [*OUTBOX, "list"],
        env=_clean_env(OUTBOX_DB=str(db)),
        stdout=subprocess.PIPE,
    )
    assert process.stdout is not None
    lines = 0
    while chunk := process.stdout.read(1 << 16):
        lines += chunk.count(b"\n")
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    assert process.returncode == 0, process.returncode
    return usage.ru_maxrss / 1024, lines, time.perf_counter() - started


def listing(folder: Path, big: Path, count: int) -> None:
    empty = folder / "empty.db"
    Outbox(empty).close()
    small_peak, _, _ = _list_peak(empty)
    peak, lines, took = _list_peak(big)
    print(
        f"list: `outbox list` piped, {count:,} entries: peak RSS {peak:.1f} MB ({lines - 1:,}"
        f" rows in {took:.1f} s); empty journal {small_peak:.1f} MB; ratio"
        f" {peak / small_peak:.2f}x; target <= 60 MB: {'met' if peak <= 60 else 'MISSED'}"
    )


# -- start-up ----------------------------------------------------------------------------


def startup(folder: Path, rounds: int) -> None:
    db = folder / "startup.db"
    Outbox(db).close()
    env = _clean_env(OUTBOX_DB=str(db))
    made = iter(range(10**9))
    enqueue = [str(BIN / "outbox"), "enqueue", TEMPLATE, "--data", json.dumps(DATA), "--key"]
    medians = _interleaved(
        {
            "sqlite-utils --help": lambda: _run([str(BIN / "sqlite-utils"), "--help"], env),
            "outbox --help": lambda: _run([str(BIN / "outbox"), "--help"], env),
            "outbox enqueue": lambda: _run([*enqueue, f"startup-{next(made)}"], env),
        },
        rounds,
    )
    baseline = medians["sqlite-utils --help"]
    for name in ("outbox --help", "outbox enqueue"):
        ratio = max(medians[name].wall / baseline.wall, medians[name].cpu / baseline.cpu)
        described = _compare(name, medians[name], baseline, "sqlite-utils --help", rounds)
        print(f"startup: {described}; {verdict(ratio, 1.3)} (the larger ratio)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="single,growth,flush,list,startup")
    parser.add_argument("--growth", type=int, default=400_000, help="entries in the growth run")
    parser.add_argument("--finished", type=int, default=200_000, help="for flush and list")
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--dir", help="folder for the journals (default: a temporary folder)")
    args = parser.parse_args()
    wanted = set(args.only.split(","))
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="outbox-scale-") as name:
        folder = Path(name)
        if "startup" in wanted:
            startup(folder, args.rounds * 2)
        if "single" in wanted:
            single(folder, args.rounds * 300)
        if "growth" in wanted:
            growth(folder, args.growth, keyed=True)
            growth(folder, args.growth, keyed=False)
        if wanted & {"flush", "list"}:
            big = folder / "finished.db"
            finished_journal(big, args.finished)
            if "flush" in wanted:
                flush(folder, big, args.finished, args.rounds)
            if "list" in wanted:
                listing(folder, big, args.finished)
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
