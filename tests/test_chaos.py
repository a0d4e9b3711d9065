"""The promise under fire: `outbox run` killed with SIGKILL again and again, against a sandbox
that drops answers, fails, rate-limits, truncates downloads and goes away and comes back.

At the end every entry is done, Craftkit made exactly one render per entry, every PDF is
complete and matches its recorded sha256, the journal passes SQLite's integrity check, and
every entry's history is a legal path through the states.
"""

from __future__ import annotations

import hashlib
import io
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pypdf
import pytest
from support import renders_per_entry_ok, sandbox_env, wait_until

from outbox import Outbox, State
from outbox.models import can_move
from outbox.sandbox import Sandbox

pytestmark = pytest.mark.e2e

ENTRIES = 200
KILLS = 30


def _run(env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "outbox", "run"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def test_kill_restart_and_faults_never_lose_or_duplicate(tmp_path: Path) -> None:
    rng = random.Random(20261129)
    db = tmp_path / "chaos.db"
    with Outbox(db) as ob:
        ob.enqueue_many(
            {
                "template": "inspection-report",
                "key": f"chaos-{i}",
                "filename": f"chaos-{i}.pdf",
                "data": {"inspector": "Chaos", "site": f"site-{i}"},
            }
            for i in range(ENTRIES)
        )
    with Sandbox(
        state_dir=tmp_path / "sandbox", render_seconds=(0.05, 0.6), seed=4, pdf_size=20_000
    ) as sb:
        sb.set_faults(
            drop_after=0.15,
            error_500_before=0.05,
            error_500_after=0.05,
            error_503_before=0.05,
            rate_limit=22,
            truncate_downloads=0.2,
            latency=0.005,
        )
        env = {**os.environ, **sandbox_env(sb, db)}
        for kill in range(KILLS):
            proc = _run(env)
            time.sleep(rng.uniform(0.3, 1.2))
            if kill % 6 == 3:  # the network goes away for a moment
                sb.stop()
                time.sleep(rng.uniform(0.2, 0.8))
                sb.start()
            assert proc.poll() is None, "outbox run must still be working when it is killed"
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
        with Outbox(db) as ob:
            counts = ob.counts()
            print(f"after {KILLS} kills: {dict(counts)}")
            assert counts[State.DONE] < ENTRIES, "the kills must have interrupted real work"
        sb.set_faults(rate_limit=60)  # the other faults stay on
        proc = _run(env)
        try:
            with Outbox(db) as ob:
                wait_until(
                    lambda: ob.counts()[State.DONE] == ENTRIES,
                    timeout=180,
                    what=f"every entry to be done (so far {dict(ob.counts())})",
                )
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
        renders_per_entry_ok(sb, ENTRIES)
        print("sandbox:", sb.stats()["faults_injected"], "429s:", sb.stats()["rate_limited"])

    with Outbox(db) as ob:
        assert ob.journal.integrity_check() == "ok"
        entries = ob.list()
        assert len(entries) == ENTRIES
        for entry in entries:
            assert entry.state is State.DONE
            data = Path(entry.pdf_path or "").read_bytes()
            assert len(data) == entry.pdf_bytes
            assert hashlib.sha256(data).hexdigest() == entry.pdf_sha256
            pypdf.PdfReader(io.BytesIO(data), strict=True)
            events = ob.history(entry.id)
            assert events[0].from_state is None and events[0].to_state is State.PENDING
            for previous, event in zip(events, events[1:], strict=False):
                assert event.from_state == previous.to_state, (entry.id, events)
                assert event.from_state is not None and can_move(event.from_state, event.to_state)
            assert events[-1].to_state is State.DONE
    leftovers = sorted(p.name for p in (tmp_path / "renders").iterdir())
    assert leftovers == sorted(f"chaos-{i}.pdf" for i in range(ENTRIES))
