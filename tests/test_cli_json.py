"""``--json`` on the commands that change entries, and one error-object shape for all."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from support import INSPECTION, run_cli, sandbox_env

from outbox.sandbox import Sandbox


def error_of(stdout: str) -> dict[str, Any]:
    """The ``error`` object a ``--json`` command printed, checked for the common fields."""
    document = json.loads(stdout)
    assert list(document) == ["error"]
    error: dict[str, Any] = document["error"]
    assert {"code", "message", "exit_code", "field_errors"} <= set(error)
    return error


def test_enqueue_json_prints_the_error_object_on_refused_data(
    tmp_path: Path, sandbox: Sandbox
) -> None:
    env = sandbox_env(sandbox, tmp_path / "j.db")
    assert run_cli("templates", "sync", env=env).returncode == 0
    bad = run_cli("enqueue", "invoice", "--json", "--data", '{"amount": "lots"}', env=env)
    assert bad.returncode == 65
    error = error_of(bad.stdout)
    assert error["code"] == "data_invalid" and error["exit_code"] == 65
    assert error["field_errors"] == {
        "customer.name": ["Required"],
        "amount": ["Expected number, received string"],
    }
    assert (error["template"], error["version"]) == ("invoice", 1)
    assert bad.stderr == f"outbox: {error['message']}\n"  # the same words for people

    malformed = run_cli("enqueue", "invoice", "--json", "--data", "{oops", env=env)
    assert malformed.returncode == 65
    assert error_of(malformed.stdout)["code"] == "invalid_argument"
    assert error_of(malformed.stdout)["field_errors"] is None

    # Without --json, stdout stays empty.
    plain = run_cli("enqueue", "invoice", "--data", '{"amount": "lots"}', env=env)
    assert plain.returncode == 65 and plain.stdout == ""


def test_enqueue_json_names_the_entry_of_a_key_conflict(tmp_path: Path) -> None:
    db = str(tmp_path / "j.db")
    first = run_cli("--db", db, "enqueue", "inspection-report", "--key", "k-1", "--json",
                    "--data", json.dumps(INSPECTION))  # fmt: skip
    entry = json.loads(first.stdout)
    clash = run_cli("--db", db, "enqueue", "inspection-report", "--key", "k-1", "--json",
                    "--data", "{}", "--filename", "x.pdf")  # fmt: skip
    assert clash.returncode == 65
    error = error_of(clash.stdout)
    assert error["code"] == "key_conflict"
    assert (error["entry_id"], error["state"], error["key"]) == (entry["id"], "pending", "k-1")
    assert error["differences"] == ["data", "filename"]


def test_every_command_prints_an_entry_as_show_does_deliveries_included(tmp_path: Path) -> None:
    """``enqueue``, ``list``, ``amend`` and ``cancel`` print the entry in ``show --json``'s
    shape (without the event journal, which only ``show`` adds): every field, and the share
    links and emails that go with it."""
    db = str(tmp_path / "j.db")

    def shown_without_events(entry_id: str) -> dict[str, Any]:
        shown = json.loads(run_cli("--db", db, "show", entry_id, "--json").stdout)
        assert [event["to_state"] for event in shown.pop("events")][0] == "pending"
        return dict(shown)

    enqueued = run_cli("--db", db, "enqueue", "inspection-report", "--data", json.dumps(INSPECTION),
                       "--key", "visit-7", "--share", "--email-to", "ada@example.com",
                       "--email-message", "Your report", "--json")  # fmt: skip
    assert enqueued.returncode == 0, enqueued.stderr
    entry = json.loads(enqueued.stdout)
    assert entry == shown_without_events(entry["id"])
    assert entry["data"] == INSPECTION and entry["base_key"] == "visit-7"
    assert [(d["channel"], d["to"], d["message"], d["state"]) for d in entry["deliveries"]] == [
        ("link", None, None, "pending"),
        ("email", "ada@example.com", "Your report", "pending"),
    ]
    assert json.loads(run_cli("--db", db, "list", "--json").stdout) == [entry]

    amended = run_cli("--db", db, "amend", entry["id"], "--data", '{"site": "South"}', "--json")
    assert amended.returncode == 0, amended.stderr
    assert json.loads(amended.stdout) == shown_without_events(entry["id"])
    assert json.loads(amended.stdout)["deliveries"] == entry["deliveries"]

    cancelled = run_cli("--db", db, "cancel", entry["id"], "--json")
    assert cancelled.returncode == 0, cancelled.stderr
    assert json.loads(cancelled.stdout) == shown_without_events(entry["id"])
    assert [d["channel"] for d in json.loads(cancelled.stdout)["deliveries"]] == ["link", "email"]


def test_retry_cancel_purge_and_amend_speak_json(tmp_path: Path) -> None:
    db = str(tmp_path / "j.db")
    entry_id = run_cli("--db", db, "enqueue", "invoice", "--data", "{}").stdout.strip()

    amended = run_cli("--db", db, "amend", entry_id, "--data", '{"n": 1}', "--json")
    assert amended.returncode == 0 and json.loads(amended.stdout)["key"] is not None
    cancelled = json.loads(run_cli("--db", db, "cancel", entry_id, "--json").stdout)
    assert cancelled["state"] == "cancelled"

    again = run_cli("--db", db, "cancel", entry_id, "--json")
    assert again.returncode == 65
    assert error_of(again.stdout)["code"] == "illegal_transition"
    refused = run_cli("--db", db, "retry", entry_id, "--json")
    assert refused.returncode == 65
    assert "only failed or rejected entries" in error_of(refused.stdout)["message"]
    unknown = run_cli("--db", db, "retry", "0123456789abcdef", "--json")
    assert error_of(unknown.stdout)["code"] == "entry_not_found"

    purged = run_cli("--db", db, "purge", "--older-than", "0s", "--json")
    assert purged.returncode == 0, purged.stderr
    assert json.loads(purged.stdout) == {"purged": 1, "older_than": "0s"}
    bad_age = run_cli("--db", db, "purge", "--older-than", "soon", "--json")
    assert bad_age.returncode == 65 and error_of(bad_age.stdout)["code"] == "invalid_argument"


def test_every_command_reports_a_missing_journal_in_the_same_shape(tmp_path: Path) -> None:
    db = tmp_path / "missing.db"
    for command in (["list"], ["status"], ["show", "x" * 16], ["templates", "list"]):
        result = run_cli("--db", str(db), *command, "--json")
        assert result.returncode == 78
        error = error_of(result.stdout)
        assert (error["code"], error["exit_code"], error["path"]) == (
            "journal_missing",
            78,
            str(db),
        )


def test_templates_sync_json_reports_offline_as_an_error_object(
    tmp_path: Path, sandbox: Sandbox
) -> None:
    env = sandbox_env(sandbox, tmp_path / "j.db")
    sandbox.stop()
    offline = run_cli("templates", "sync", "--json", env=env)
    assert offline.returncode == 75
    error = error_of(offline.stdout)
    assert error["code"] == "offline" and error["exit_code"] == 75
    assert error["message"].endswith("; the template cache was left as it was (try again online)")
    assert offline.stderr == f"outbox: {error['message']}\n"
