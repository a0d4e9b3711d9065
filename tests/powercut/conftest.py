"""The power-cut file system, mounted in a temporary folder for one test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from disk import PowerCutDisk


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[PowerCutDisk]:
    """A mounted power-cut disk; ``disk.mountpoint`` is its root. Fails (never skips) if it
    cannot be mounted."""
    powercut = PowerCutDisk(tmp_path / "disk")
    powercut.mount()
    try:
        yield powercut
    finally:
        powercut.close()
