"""Shared fixtures: real journal files in a temporary folder, real subprocesses."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from outbox import Outbox

API_KEY_IN_TESTS = "ck_test_do_not_leak_1f2e3d4c5b6a"


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "journal.db"


@pytest.fixture
def ob(db_path: Path) -> Iterator[Outbox]:
    with Outbox(db_path, api_key=API_KEY_IN_TESTS) as outbox:
        yield outbox


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
