"""Benchmark: what one hostile render costs a flush, in memory, time and requests.

Each scenario runs ``outbox flush --timeout 5`` in a child process (which reports its own peak
RSS) against the sandbox in another child process, over five good entries plus one entry whose
idempotency key the sandbox poisons (``--key-fault``). The baseline is the same flush over the
five good entries alone, in the same run. Requests are counted by the sandbox; the hostile
entry's share is the run's count minus the baseline's.

Targets (issue 11): peak RSS < 100 MB, the flush back within 10 s, at most 10 requests for the
hostile entry, and the five good entries all ``done``.

    python bench/hostile.py
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
from common import SandboxProcess, sandbox_process, verdict

from outbox import Outbox, State

GOOD = 5
HOSTILE_KEY = "hostile"
#: Runs ``python -m outbox ARGS`` and prints its own peak RSS (KiB) as the last stderr line.
MEASURED = (
    "import resource, runpy, sys\n"
    "try:\n"
    "    runpy.run_module('outbox', run_name='__main__')\n"
    "finally:\n"
    "    print('maxrss', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)\n"
)
#: A flush that has not returned after this long is stopped and reported as such.
KILL_AFTER = 120.0


@dataclass(frozen=True)
class Run:
    seconds: float
    rss_mb: float | None  # None: killed before it could say
    exit_code: int | None
    requests: int
    good_done: int
    hostile_state: str
    hostile_error: str | None


def flush(faults: dict[str, object] | None) -> Run:
    """Five good entries (and the hostile one when ``faults`` is given), one flush."""
    with tempfile.TemporaryDirectory(prefix="outbox-bench-hostile-") as tmp:
        db = Path(tmp) / "j.db"
        with Outbox(db) as ob:
            for n in range(GOOD):
                ob.enqueue("inspection-report", {"inspector": "B", "site": f"S{n}"}, key=f"g{n}")
            if faults is not None:
                ob.enqueue("inspection-report", {"inspector": "B", "site": "X"}, key=HOSTILE_KEY)
        with sandbox_process("--render-seconds", "0.2") as sandbox:
            if faults is not None:
                _poison(sandbox, faults)
            before = sandbox.requests()
            env = {
                k: v for k, v in os.environ.items() if not k.startswith(("OUTBOX_", "CRAFTKIT_"))
            }
            env.update(
                OUTBOX_DB=str(db),
                CRAFTKIT_API_KEY=sandbox.api_key,
                CRAFTKIT_BASE_URL=sandbox.base_url,
            )
            started = time.monotonic()
            child = subprocess.Popen(
                [sys.executable, "-c", MEASURED, "flush", "--timeout", "5"],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
            try:
                _, stderr = child.communicate(timeout=KILL_AFTER)
                exit_code: int | None = child.returncode
            except subprocess.TimeoutExpired:
                child.kill()
                _, stderr = child.communicate()
                exit_code = None
            seconds = time.monotonic() - started
            requests = sandbox.requests() - before
        with Outbox(db) as ob:
            good_done = sum(
                1 for n in range(GOOD) if (e := ob.find_by_key(f"g{n}")) and e.state is State.DONE
            )
            hostile = ob.find_by_key(HOSTILE_KEY)
        return Run(
            seconds,
            _rss_mb(stderr),
            exit_code,
            requests,
            good_done,
            hostile.state.value if hostile else "-",
            hostile.error if hostile else None,
        )


def _poison(sandbox: SandboxProcess, faults: dict[str, object]) -> None:
    answer = httpx.post(
        f"{sandbox.base_url}/_sandbox/faults", json={"keys": {HOSTILE_KEY: faults}}, timeout=30
    )
    answer.raise_for_status()


def _rss_mb(stderr: str) -> float | None:
    for line in reversed(stderr.splitlines()):
        if line.startswith("maxrss "):
            return int(line.split()[1]) / 1024
    return None


SCENARIOS: list[tuple[str, dict[str, object]]] = [
    ("a 300 MB poll answer", {"huge_poll": "300MB"}),
    ("a PDF sent at 1 byte/s", {"slow_pdf": 1.0}),
    ("downloadUrl refused", {"download_url": "refused"}),
    ("downloadUrl redirects to itself", {"download_url": "redirect"}),
    ("downloadUrl answers 401", {"download_url": "unauthorized"}),
    ("downloadUrl sends HTML as a PDF", {"download_url": "wrong_body"}),
    ("307 on the POST", {"redirect_post": 307}),
    ("poll answers of garbage JSON", {"poll_answer": "garbage_json"}),
]


def main() -> None:
    base = flush(None)
    print(
        f"baseline, {GOOD} good entries: flush {base.seconds:.2f} s, peak RSS "
        f"{base.rss_mb or 0:.1f} MB, {base.requests} requests ({base.requests / GOOD:.1f} per "
        f"entry), {base.good_done}/{GOOD} done, exit {base.exit_code}"
    )
    print(
        f"{'+ one hostile entry':<34} {'flush':>8} {'peak RSS':>9} {'requests':>9} "
        f"{'hostile':>8}  {'good done':<9} {'exit':<5} hostile entry ends"
    )
    for name, faults in SCENARIOS:
        run = flush(faults)
        hostile_requests = run.requests - base.requests
        rss = f"{run.rss_mb:6.1f} MB" if run.rss_mb is not None else "  killed "
        took = f"{run.seconds:6.2f} s" if run.exit_code is not None else f">{KILL_AFTER:.0f} s"
        met = (
            run.rss_mb is not None
            and run.rss_mb < 100
            and run.exit_code is not None
            and run.seconds < 10
            and hostile_requests <= 10
            and run.good_done == GOOD
        )
        error = (run.hostile_error or "")[:90]
        print(
            f"{name:<34} {took:>8} {rss:>9} {run.requests:>9} {hostile_requests:>8}  "
            f"{run.good_done}/{GOOD:<7} {str(run.exit_code):<5} {run.hostile_state}"
            f"{': ' + error if error else ''}  [{verdict(met)}]"
        )


if __name__ == "__main__":
    main()
