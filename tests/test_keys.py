"""One key rule for the library, the CLI and the drop folder.

The same key with the same request is the existing entry (idempotent, exit 0); the same key
with a different request is a ``KeyConflict`` (exit 65) naming the existing entry and its state,
with one wording wherever it is raised.
"""

from __future__ import annotations

import json
import os
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
from support import INSPECTION, run_cli, sandbox_env

from outbox import DropFolder, InvalidArgument, KeyConflict, Outbox, State
from outbox.models import RenderRequest, canonical_json, key_conflict, request_differences
from outbox.sandbox import Sandbox

README = Path(__file__).resolve().parent.parent / "README.md"


def conflict_message(entry_id: str, state: str, key: str = "inspection-42") -> str:
    """The start of the one conflict wording (the creation time follows)."""
    return f'the key "{key}" already belongs to entry {entry_id} ({state}; '


# -- what "the same request" means -----------------------------------------------------------


def test_the_same_request_is_compared_as_json_values(ob: Outbox) -> None:
    entry = ob.enqueue("invoice", {"a": 1, "b": {"c": [1.5, "x"]}}, key="k", filename="a.pdf")

    def differences(**changes: Any) -> list[str]:
        request: dict[str, Any] = {
            "template": "invoice",
            "data": {"b": {"c": [1.5, "x"]}, "a": 1.0},  # keys in another order, 1.0 for 1
            "key": "k",
            "filename": "a.pdf",
            "version": None,
            **changes,
        }
        return request_differences(entry, RenderRequest(**request))

    assert differences() == []
    assert differences(source="/drop/other.json") == []  # where it came from does not count
    assert differences(data={"a": True, "b": {"c": [1.5, "x"]}}) == ["data"]  # true is not 1
    assert differences(data={"a": "1", "b": {"c": [1.5, "x"]}}) == ["data"]  # nor "1"
    assert differences(data={"a": 1, "b": {"c": ["x", 1.5]}}) == ["data"]  # order of arrays
    assert differences(data={"a": 1, "b": {"c": [1.5, "x"]}, "extra": None}) == ["data"]
    assert differences(template="inspection-report") == ["template"]
    assert differences(filename=None) == ["filename"]
    assert differences(version=3, filename="b.pdf") == ["filename", "version"]
    assert canonical_json({"b": 2.0, "a": [True, None]}) == '{"a":[true,null],"b":2}'


# -- the library -----------------------------------------------------------------------------


def test_library_same_request_is_the_entry_and_another_is_a_conflict(ob: Outbox) -> None:
    first = ob.enqueue("inspection-report", INSPECTION, key="inspection-42")
    assert ob.enqueue("inspection-report", dict(INSPECTION), key="inspection-42").id == first.id
    with pytest.raises(KeyConflict) as caught:
        ob.enqueue("inspection-report", {**INSPECTION, "site": "South"}, key="inspection-42")
    error = caught.value
    assert isinstance(error, InvalidArgument)  # exit 65 in the CLI
    assert (error.key, error.entry_id, error.state, error.differences) == (
        "inspection-42",
        first.id,
        "pending",
        ["data"],
    )
    assert str(error).startswith(conflict_message(first.id, "pending"))
    assert "(data differs); nothing was queued" in str(error)
    assert f"`outbox amend {first.id}`" in str(error)
    with pytest.raises(KeyConflict, match="filename differs"):
        ob.enqueue("inspection-report", INSPECTION, key="inspection-42", filename="x.pdf")
    assert [e.id for e in ob.list()] == [first.id]
    assert ob.get(first.id).data == INSPECTION and len(ob.history(first.id)) == 1


def test_enqueue_many_saves_nothing_when_one_key_conflicts(ob: Outbox) -> None:
    kept = ob.enqueue("invoice", {"n": 0}, key="inv-0")
    batch = [{"template": "invoice", "data": {"n": i}, "key": f"inv-{i}"} for i in range(1, 4)]
    # Repeating a request (in the batch or from before) is fine ...
    again = ob.enqueue_many([*batch, batch[0], {"template": "invoice", "data": {"n": 0},
                                                "key": "inv-0"}])  # fmt: skip
    assert again[0].id == again[3].id and again[4].id == kept.id
    # ... another request under a key in use, in the batch or from before, saves none of it.
    for clash in ({"template": "invoice", "data": {"n": 9}, "key": "inv-0"},
                  {"template": "invoice", "data": {"n": 9}, "key": "inv-new"}):  # fmt: skip
        fresh = [{"template": "invoice", "data": {"n": 1}, "key": "inv-new"}, clash]
        with pytest.raises(KeyConflict, match="already belongs to entry"):
            ob.enqueue_many(fresh)
    assert ob.find_by_key("inv-new") is None and len(ob.list()) == 4


def test_the_key_decides_before_the_data_check(tmp_path: Path, sb: Sandbox) -> None:
    """A rejected entry's key with corrected data is a conflict pointing at ``amend``; the
    same bad request again is simply the entry (it is not checked again)."""
    with Outbox(tmp_path / "j.db", api_key=sb.api_key, transport=sb.transport(),
                base_url=sb.base_url) as ob:  # fmt: skip
        bad = ob.enqueue("inspection-report", {"inspector": "Ada"}, key="inspection-42")
        ob.flush(timeout=30)
        assert ob.get(bad.id).state is State.REJECTED
        ob.sync_templates()
        assert ob.enqueue("inspection-report", {"inspector": "Ada"}, key="inspection-42").id == (
            bad.id
        )
        for data in (INSPECTION, {"inspector": 5}):  # corrected, or wrong in another way
            with pytest.raises(KeyConflict) as caught:
                ob.enqueue("inspection-report", data, key="inspection-42")
            assert str(caught.value).startswith(conflict_message(bad.id, "rejected"))


# -- the CLI ---------------------------------------------------------------------------------


def test_cli_same_request_exits_0_and_another_exits_65_naming_the_entry(tmp_path: Path) -> None:
    db = str(tmp_path / "j.db")
    args = ["--db", db, "enqueue", "inspection-report", "--key", "inspection-42"]
    first = run_cli(*args, "--data", json.dumps(INSPECTION))
    assert first.returncode == 0, first.stderr
    entry_id = first.stdout.strip()
    same = run_cli(*args, "--data", '{"site": "North", "inspector": "Ada"}')
    assert (same.returncode, same.stdout.strip()) == (0, entry_id)
    other = run_cli(*args, "--data", '{"inspector": "Ada", "site": "South"}')
    assert other.returncode == 65 and other.stdout == ""
    assert other.stderr.startswith("outbox: " + conflict_message(entry_id, "pending"))
    assert "Traceback" not in other.stderr
    listed = json.loads(run_cli("--db", db, "list", "--json").stdout)
    assert [e["id"] for e in listed] == [entry_id]


def test_the_readme_cli_example_runs_as_written_against_a_synced_cache(
    tmp_path: Path, sandbox: Sandbox
) -> None:
    """The README's first CLI line is accepted by the offline check, and running it twice is
    the same entry."""
    text = README.read_text(encoding="utf-8")
    block = text.split("## Command line", 1)[1].split("```sh\n", 1)[1].split("```", 1)[0]
    line = next(row for row in block.splitlines() if row.startswith("outbox enqueue "))
    command = line.split("   #", 1)[0].strip()
    argv = shlex.split(command)[1:]
    env = sandbox_env(sandbox, tmp_path / "j.db")
    assert run_cli("templates", "sync", env=env).returncode == 0
    first = run_cli(*argv, env=env)
    assert first.returncode == 0, first.stderr
    assert run_cli(*argv, env=env).stdout == first.stdout
    flushed = run_cli("flush", "--timeout", "30", env=env)
    assert flushed.returncode == 0, flushed.stdout + flushed.stderr


# -- the drop folder -------------------------------------------------------------------------


def test_drop_folder_rejects_a_conflict_with_the_same_wording(ob: Outbox, tmp_path: Path) -> None:
    folder = tmp_path / "drop"
    folder.mkdir()
    entry = ob.enqueue("inspection-report", INSPECTION, key="inspection-42")
    job = {"template": "inspection-report", "data": INSPECTION, "key": "inspection-42"}
    for name, content in (
        ("same.json", job),
        ("other.json", {**job, "data": {**INSPECTION, "site": "South"}}),
        ("fresh.json", {**job, "key": "inspection-43"}),
    ):
        (folder / name).write_text(json.dumps(content))
    report = DropFolder(ob, folder).scan()
    assert sorted(a.file for a in report.accepted) == ["fresh.json", "same.json"]
    assert [r.file for r in report.rejected] == ["other.json"]
    assert next(a.entry.id for a in report.accepted if a.file == "same.json") == entry.id
    error_text = (folder / "rejected" / "other.error.txt").read_text()
    # The same words as the library's error: "other.json: " + str(KeyConflict).
    with pytest.raises(KeyConflict) as caught:
        ob.enqueue("inspection-report", {**INSPECTION, "site": "South"}, key="inspection-42")
    assert error_text == f"other.json: {caught.value}\n"
    assert re.search(r"\(pending; enqueued at [0-9T:.\-]+Z\)", error_text)
    assert sorted(os.listdir(folder / "accepted")) == ["fresh.json", "same.json"]
    assert len(ob.list()) == 2


def test_key_conflict_is_none_for_the_same_request(ob: Outbox) -> None:
    entry = ob.enqueue("invoice", {"n": 1}, key="k-1", version=2)
    assert key_conflict(entry, RenderRequest("invoice", {"n": 1.0}, "k-1", None, 2)) is None
    error = key_conflict(entry, RenderRequest("invoice", {"n": 1}, "k-1", None, 3))
    assert error is not None and error.differences == ["version"]
    assert "(version differs)" in str(error)
