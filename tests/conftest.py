"""Shared fixtures: real journal files in a temporary folder, a sandbox on a real socket."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from support import API_KEY_IN_TESTS

from outbox import Outbox
from outbox.sandbox import Sandbox


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "journal.db"


@pytest.fixture
def ob(db_path: Path) -> Iterator[Outbox]:
    with Outbox(db_path, api_key=API_KEY_IN_TESTS) as outbox:
        yield outbox


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    """A Craftkit sandbox on a real loopback socket; renders finish after 0.2 s."""
    with Sandbox(render_seconds=0.2, seed=11) as sb:
        yield sb
