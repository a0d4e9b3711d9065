"""Helpers shared by the tests: CLI subprocesses and sandbox checks."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from outbox import Outbox, Schedule, Settings
from outbox.sandbox import Sandbox

API_KEY_IN_TESTS = "ck_test_do_not_leak_1f2e3d4c5b6a"


def run_cli(
    *args: str,
    env: dict[str, str] | None = None,
    input: str | None = None,
    timeout: float = 60,
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m outbox ARGS`` in a real subprocess."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("OUTBOX_", "CRAFTKIT_"))}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "outbox", *args],
        capture_output=True,
        text=True,
        env=full_env,
        input=input,
        timeout=timeout,
    )


def sandbox_env(sb: Sandbox, db: Path, **extra: str) -> dict[str, str]:
    """Environment for a CLI subprocess that talks to ``sb`` with the journal ``db``."""
    return {
        "OUTBOX_DB": str(db),
        "CRAFTKIT_API_KEY": sb.api_key,
        "CRAFTKIT_BASE_URL": sb.base_url,
        **extra,
    }


FAST = Settings(connect_timeout=2.0, read_timeout=5.0, schedule=Schedule(offline_grace=1.0))


def connected(db: Path, sb: Sandbox, **kwargs: object) -> Outbox:
    """An Outbox on ``db`` that talks to the sandbox ``sb``."""
    options: dict[str, object] = {"settings": FAST, **kwargs}
    return Outbox(db, api_key=sb.api_key, base_url=sb.base_url, **options)  # type: ignore[arg-type]


def renders_per_entry_ok(sb: Sandbox, expected: int) -> None:
    """The sandbox created exactly one render per entry: never twice, never missing."""
    stats = sb.stats()
    assert stats["renders_created"] == expected, stats
    assert stats["renders_without_key"] == 0
    assert set(stats["renders_per_key"].values()) <= {1}
    assert set(stats["renders_per_payload"].values()) <= {1}
