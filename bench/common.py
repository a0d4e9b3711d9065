"""Shared by the benchmarks: the sandbox in a child process, and its statistics.

The sandbox runs as its own process (``python -m outbox.sandbox``), so that what a benchmark
measures is outbox, not the sandbox competing with it for the interpreter lock.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx


@dataclass(frozen=True)
class SandboxProcess:
    base_url: str
    api_key: str

    def stats(self) -> dict[str, Any]:
        stats: dict[str, Any] = httpx.get(f"{self.base_url}/_sandbox/stats", timeout=30).json()
        return stats

    def requests(self, route_prefix: str = "") -> int:
        """How many requests the sandbox answered, on routes starting with ``route_prefix``."""
        return sum(
            sum(statuses.values())
            for route, statuses in self.stats()["requests"].items()
            if route.startswith(route_prefix)
        )


@contextmanager
def sandbox_process(*args: str) -> Iterator[SandboxProcess]:
    """Run ``outbox sandbox --port 0 ARGS`` in a child process until the block ends."""
    with tempfile.TemporaryDirectory(prefix="outbox-bench-sandbox-") as state:
        process = subprocess.Popen(
            [sys.executable, "-m", "outbox.sandbox", "--port", "0", "--state", state, *args],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert process.stdout is not None
            base_url = process.stdout.readline().strip().rsplit(" ", 1)[-1]
            api_key = process.stdout.readline().strip().rsplit(" ", 1)[-1]
            yield SandboxProcess(base_url, api_key)
        finally:
            process.terminate()
            process.wait(10)


def verdict(met: bool) -> str:
    return "met" if met else "MISSED"
