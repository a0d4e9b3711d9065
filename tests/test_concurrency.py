"""Several real processes on one journal: no duplicates, no lost entries, no lock errors."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from outbox import Outbox, State

pytestmark = pytest.mark.e2e

ENQUEUE_LOOP = textwrap.dedent(
    """
    import sys, time
    from outbox import KeyConflict, Outbox
    db, start_at, prefix, count, key = sys.argv[1], float(sys.argv[2]), sys.argv[3], int(sys.argv[4]), sys.argv[5]
    ob = Outbox(db)
    while time.time() < start_at:
        time.sleep(0.001)
    for i in range(count):
        # Under a shared key, the request is the same unless the prefix says "differ".
        data = {"n": i, "by": prefix} if not key or prefix.startswith("differ") else {"n": i}
        try:
            entry = ob.enqueue("invoice", data, key=key or f"{prefix}-{i}")
        except KeyConflict as exc:
            print("conflict", exc.entry_id, flush=True)
            continue
        print(entry.id, flush=True)
    """
)


def _spawn(
    db: Path, start_at: float, prefix: str, count: int, key: str = ""
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", ENQUEUE_LOOP, str(db), str(start_at), prefix, str(count), key],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_enqueue_survives_sigkill_right_after_it_returns(db_path: Path) -> None:
    Outbox(db_path).close()
    proc = _spawn(db_path, 0, "killed", 1_000_000)
    acknowledged: list[str] = []
    assert proc.stdout is not None
    while len(acknowledged) < 25:
        acknowledged.append(proc.stdout.readline().strip())
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate()  # reaps it and closes the pipes
    with Outbox(db_path) as ob:
        for entry_id in acknowledged:
            assert ob.get(entry_id).state is State.PENDING
        assert ob.journal.integrity_check() == "ok"


def test_two_processes_enqueue_the_same_key_at_once(db_path: Path) -> None:
    Outbox(db_path).close()
    for round_ in range(5):
        start_at = time.time() + 0.5
        procs = [_spawn(db_path, start_at, f"p{i}", 1, key=f"race-{round_}") for i in range(2)]
        outputs = [p.communicate(timeout=60) for p in procs]
        assert all(p.returncode == 0 for p in procs), outputs
        ids = {out.strip() for out, _ in outputs}
        assert len(ids) == 1, f"both processes must get the same entry, got {ids}"
    with Outbox(db_path) as ob:
        assert ob.counts()[State.PENDING] == 5
        assert sorted(e.key for e in ob.list()) == [f"race-{r}" for r in range(5)]


def test_two_processes_enqueue_different_requests_under_one_key_at_once(db_path: Path) -> None:
    """One wins; the other gets a KeyConflict naming the winner's entry; nothing else."""
    Outbox(db_path).close()
    for round_ in range(5):
        start_at = time.time() + 0.5
        procs = [_spawn(db_path, start_at, f"differ{i}", 1, key=f"race-{round_}") for i in range(2)]
        outputs = sorted((p.communicate(timeout=60)[0].split() for p in procs), key=len)
        assert all(p.returncode == 0 for p in procs), outputs
        (winner,), (conflict, named) = outputs
        assert conflict == "conflict" and named == winner
    with Outbox(db_path) as ob:
        assert ob.counts()[State.PENDING] == 5


def test_eight_processes_enqueue_four_thousand_entries(db_path: Path) -> None:
    Outbox(db_path).close()
    start_at = time.time() + 1.0
    procs = [_spawn(db_path, start_at, f"w{i}", 500) for i in range(8)]
    results = [p.communicate(timeout=300) for p in procs]
    for proc, (out, err) in zip(procs, results, strict=True):
        assert proc.returncode == 0, err
        assert "locked" not in err and "Traceback" not in err
        assert len(out.split()) == 500
        # Each process's ids sort in the order it made them (they are time-ordered).
        assert out.split() == sorted(out.split())
    with Outbox(db_path) as ob:
        assert ob.counts()[State.PENDING] == 4000
        assert len({e.id for e in ob.list()}) == 4000  # unique across the processes
        assert len({e.key for e in ob.list()}) == 4000
        assert sum(len(ob.history(e.id)) for e in ob.list()) == 4000
        assert ob.journal.integrity_check() == "ok"
