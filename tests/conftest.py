"""Shared fixtures: a clean environment, real journal files in a temporary folder, the fake
clock, and sandboxes on a real socket."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import API_KEY_IN_TESTS, FakeClock, end_outbox_processes

from outbox import Outbox, logs
from outbox.sandbox import Sandbox


@pytest.fixture(autouse=True)
def clean_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """No test sees the settings of the machine it runs on: no ``OUTBOX_*``/``CRAFTKIT_*``
    variable (a real key, another journal), and empty user data and config folders, so a
    command that falls back to the platform default never touches the developer's journal."""
    for name in list(os.environ):
        if name.startswith(("OUTBOX_", "CRAFTKIT_")):
            monkeypatch.delenv(name)
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("XDG_DATA_HOME", str(home / "data"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / "config"))


@pytest.fixture(autouse=True)
def no_cli_logging() -> Iterator[None]:
    """A CLI command called in-process sets up logging for its process; the next test starts
    without it, as a new process would."""
    yield
    logs.reset()


@pytest.fixture(autouse=True)
def no_outbox_process_left() -> Iterator[None]:
    """Whatever a test asserts, the ``outbox`` processes it started are gone when it ends."""
    yield
    end_outbox_processes()


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "journal.db"


@pytest.fixture
def ob(db_path: Path) -> Iterator[Outbox]:
    with Outbox(db_path, api_key=API_KEY_IN_TESTS) as outbox:
        yield outbox


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    """A Craftkit sandbox on a real loopback socket; renders finish after 0.2 s."""
    with Sandbox(render_seconds=0.2, seed=11) as sb:
        yield sb


@pytest.fixture
def sb() -> Iterator[Sandbox]:
    """A sandbox whose renders finish after 50 ms of real time."""
    with Sandbox(render_seconds=0.05, seed=7) as sandbox:
        yield sandbox


@pytest.fixture
def timed(clock: FakeClock) -> Iterator[Sandbox]:
    """A sandbox on the fake clock: renders take 10 s of fake time (2 s queued)."""
    with Sandbox(render_seconds=10.0, clock=clock, seed=7) as sandbox:
        yield sandbox
