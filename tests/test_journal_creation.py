"""Only writers create a journal: a mistyped ``--db`` never leaves an empty one behind."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from support import API_KEY_IN_TESTS, INSPECTION, run_cli

from outbox import ExitCode, JournalError, JournalMissing, Outbox

#: Every command that reads the journal or acts on entries already in it.
READERS: list[list[str]] = [
    ["list"],
    ["list", "--json"],
    ["show", "0123456789abcdef"],
    ["status"],
    ["status", "--json"],
    ["templates", "list"],
    ["retry", "0123456789abcdef"],
    ["cancel", "0123456789abcdef"],
    ["amend", "0123456789abcdef", "--data", "{}"],
    ["purge", "--older-than", "30d"],
    ["flush"],
    ["run"],
]


def files_under(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.mark.parametrize("command", READERS, ids=lambda c: " ".join(c))
def test_read_commands_on_a_missing_journal_exit_78_and_create_nothing(
    tmp_path: Path, command: list[str]
) -> None:
    db = tmp_path / "nonexistent-dir" / "typo.db"
    result = run_cli("--db", str(db), *command, env={"CRAFTKIT_API_KEY": API_KEY_IN_TESTS})
    assert result.returncode == ExitCode.CONFIG_ERROR, result.stderr
    assert result.stderr == (
        f"outbox: no journal at {db}; `outbox enqueue` creates one (or `outbox init`). "
        "Nothing was created: check --db or OUTBOX_DB\n"
    )
    if "--json" in command:  # the error object, on stdout
        assert json.loads(result.stdout)["error"]["code"] == "journal_missing"
    else:
        assert result.stdout == ""
    assert files_under(tmp_path) == []


def test_the_default_journal_is_not_created_by_a_read_either(tmp_path: Path) -> None:
    # conftest points the user data folder into tmp: the default journal would land there.
    data_home = Path(os.environ["XDG_DATA_HOME"])
    listed = run_cli("list")
    assert listed.returncode == 78 and not data_home.exists()
    made = run_cli("enqueue", "invoice", "--data", "{}")
    assert made.returncode == 0 and (data_home / "outbox" / "outbox.db").exists()
    assert run_cli("list").returncode == 0


def test_writers_create_the_journal_and_its_folder(tmp_path: Path) -> None:
    by_enqueue = tmp_path / "a" / "field.db"
    made = run_cli("--db", str(by_enqueue), "enqueue", "inspection-report", "--data",
                   json.dumps(INSPECTION))  # fmt: skip
    assert made.returncode == 0 and by_enqueue.exists()
    assert oct(by_enqueue.stat().st_mode & 0o777) == "0o600"

    refused = run_cli("--db", str(tmp_path / "b" / "x.db"), "enqueue", "BAD", "--data", "{}")
    assert refused.returncode == 65 and not (tmp_path / "b").exists()  # refused: nothing made

    by_init = tmp_path / "c" / "field.db"
    first = run_cli("--db", str(by_init), "init")
    assert first.returncode == 0 and first.stdout.startswith(f"created journal {by_init} (schema ")
    assert by_init.exists()
    again = run_cli("--db", str(by_init), "init", "--json")
    assert again.returncode == 0
    shown = json.loads(again.stdout)
    assert (shown["journal"], shown["created"]) == (str(by_init), False)
    assert run_cli("--db", str(by_init), "list", "--json").stdout == "[]\n"


def test_init_refuses_a_file_that_is_not_a_journal(tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("not a journal")
    result = run_cli("--db", str(notes), "init")
    assert result.returncode == 78 and "not an outbox journal" in result.stderr
    assert notes.read_text() == "not a journal"


def test_run_without_a_watched_folder_only_works_on_an_existing_journal(tmp_path: Path) -> None:
    db = tmp_path / "j.db"
    env = {"CRAFTKIT_API_KEY": API_KEY_IN_TESTS}
    assert run_cli("--db", str(db), "run", env=env).returncode == 78 and not db.exists()


# -- the library -----------------------------------------------------------------------------


def test_library_create_false_opens_existing_journals_only(tmp_path: Path) -> None:
    db = tmp_path / "sub" / "j.db"
    with pytest.raises(JournalMissing) as caught:
        Outbox(db, create=False)
    assert isinstance(caught.value, JournalError) and caught.value.path == str(db)
    assert str(caught.value) == f"no journal at {db} (nothing was created)"
    assert files_under(tmp_path) == []
    with Outbox(db) as ob:  # the default creates it
        ob.enqueue("invoice", {}, key="k")
    with Outbox(db, create=False) as ob:
        assert [e.key for e in ob.list()] == ["k"]
