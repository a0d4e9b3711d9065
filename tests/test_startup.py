"""A command loads only what it uses: each case runs the CLI in a fresh interpreter (a
subprocess) and lists the modules it imported."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import click
import pytest

from outbox.cli import cli

#: Libraries (and our own heavy parts) that a command must not load unless it uses them.
HEAVY = ("httpx", "tenacity", "jsonschema", "watchfiles", "sqlite_utils", "outbox.sandbox")

_PROBE = """
import json, sys
from outbox.cli import main
sys.argv = ["outbox", *json.loads(sys.argv[1])]
try:
    main()
except SystemExit:
    pass
print(json.dumps(sorted(sys.modules)), file=sys.stderr)
"""


def loaded_by(*args: str, cwd: Path, env: dict[str, str] | None = None) -> set[str]:
    """The heavy modules that ``outbox ARGS`` imported."""
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, json.dumps(args)],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        check=True,
    )
    modules = json.loads(done.stderr.strip().splitlines()[-1])
    return {name for name in modules if any(name == h or name.startswith(h + ".") for h in HEAVY)}


@pytest.mark.e2e
def test_help_loads_no_network_stack_nor_sandbox(tmp_path: Path) -> None:
    assert loaded_by("--help", cwd=tmp_path) == set()


@pytest.mark.e2e
def test_enqueue_on_an_existing_journal_loads_nothing_heavy(tmp_path: Path) -> None:
    db = str(tmp_path / "journal.db")
    args = ("--db", db, "enqueue", "invoice", "--data", '{"n": 1}')
    subprocess.run([sys.executable, "-m", "outbox", *args], check=True, capture_output=True)
    assert loaded_by(*args, cwd=tmp_path) == set()
    assert loaded_by("--db", db, "list", cwd=tmp_path) == set()


@pytest.mark.e2e
def test_the_sandbox_and_the_network_load_when_used(tmp_path: Path) -> None:
    """The probe sees imports: the commands that need the heavy parts do load them."""
    assert {"outbox.sandbox", "outbox.sandbox.cli"} <= loaded_by("sandbox", "--help", cwd=tmp_path)
    db = str(tmp_path / "journal.db")
    subprocess.run([sys.executable, "-m", "outbox", "--db", db, "init"], check=True)
    flushed = loaded_by("--db", db, "flush", cwd=tmp_path, env={"CRAFTKIT_API_KEY": "ck_test"})
    assert {"httpx", "tenacity"} <= flushed


def test_the_sandbox_command_is_listed_with_its_own_summary() -> None:
    from outbox.sandbox.cli import sandbox

    listed = cli.commands["sandbox"]
    assert listed.get_short_help_str() == (sandbox.help or "").split("\n\n")[0].strip()
    with click.Context(cli) as ctx:
        assert cli.resolve_command(ctx, ["sandbox"])[1] is sandbox
