"""The journal commands of the CLI, called in-process as the console entry point calls them."""

from __future__ import annotations

import json
from pathlib import Path

from freezegun import freeze_time
from support import run_cli

from outbox import Outbox


def test_enqueue_list_show_status_cancel(tmp_path: Path) -> None:
    db = str(tmp_path / "field.db")
    first = run_cli(
        "--db",
        db,
        "enqueue",
        "inspection-report",
        "--data",
        '{"inspector": "Ada"}',
        "--key",
        "inspection-42",
        "--filename",
        "north-42.pdf",
    )
    assert first.returncode == 0, first.stderr
    entry_id = first.stdout.strip()
    again = run_cli(
        "--db",
        db,
        "enqueue",
        "inspection-report",
        "--data",
        '{"inspector": "Ada"}',
        "--key",
        "inspection-42",
        "--filename",
        "north-42.pdf",
    )
    assert again.returncode == 0 and again.stdout.strip() == entry_id
    assert f"note: key 'inspection-42' was already enqueued as entry {entry_id}" in again.stderr
    assert "is not cached" in first.stderr and "is not cached" not in again.stderr  # not re-noted

    (tmp_path / "job.json").write_text('{"customer": {"name": "Bo"}}')
    from_file = run_cli("--db", db, "enqueue", "invoice", "--data", f"@{tmp_path / 'job.json'}")
    from_stdin = run_cli("--db", db, "enqueue", "invoice", "--data", "-", input='{"x": 1}')
    assert from_file.returncode == 0 and from_stdin.returncode == 0

    listed = json.loads(run_cli("--db", db, "list", "--json").stdout)
    assert [e["id"] for e in listed] == [
        from_stdin.stdout.strip(),
        from_file.stdout.strip(),
        entry_id,
    ]
    assert len(json.loads(run_cli("--db", db, "list", "--json", "--limit", "1").stdout)) == 1

    shown = json.loads(run_cli("--db", db, "show", entry_id, "--json").stdout)
    assert shown["data"] == {"inspector": "Ada"} and shown["filename"] == "north-42.pdf"
    assert [e["to_state"] for e in shown["events"]] == ["pending"]
    assert listed[-1] == {name: value for name, value in shown.items() if name != "events"}
    assert "inspection-42" in run_cli("--db", db, "show", entry_id).stdout

    assert run_cli("--db", db, "cancel", entry_id).returncode == 0
    refused = run_cli("--db", db, "cancel", entry_id)
    assert refused.returncode == 65 and "only pending entries" in refused.stderr

    status = json.loads(run_cli("--db", db, "status", "--json").stdout)
    assert status["counts"] == {
        "pending": 2,
        "submitted": 0,
        "downloading": 0,
        "done": 0,
        "failed": 0,
        "rejected": 0,
        "cancelled": 1,
    }
    assert "pending 2" in run_cli("--db", db, "status").stdout
    assert (
        json.loads(run_cli("--db", db, "list", "--state", "cancelled", "--json").stdout)[0]["id"]
        == entry_id
    )


def test_bad_input_gets_a_specific_error_and_writes_nothing(tmp_path: Path) -> None:
    db = str(tmp_path / "field.db")
    cases = [
        (["--data", "{not json"], "--data is not valid JSON"),
        (["--data", "[1, 2]"], "data must be a JSON object"),
        (["--data", "@/nonexistent/job.json"], "cannot read --data file"),
        (["--data", "{}", "--filename", "../escape.pdf"], "must be a plain name"),
        (["--data", "{}", "--key", ""], "1-200 characters"),
    ]
    for args, message in cases:
        result = run_cli("--db", db, "enqueue", "invoice", *args)
        assert result.returncode == 65, (args, result.stderr)
        assert message in result.stderr and "Traceback" not in result.stderr
    assert not Path(db).exists()  # refused requests create no journal either
    assert run_cli("--db", db, "init").returncode == 0
    missing = run_cli("--db", db, "show", "0000000000000000")
    assert missing.returncode == 65 and "no entry with id" in missing.stderr
    assert json.loads(run_cli("--db", db, "list", "--json").stdout) == []


def test_configuration_precedence_flag_env_file_default(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(f'db = "{tmp_path / "from-file.db"}"\nbase_url = "http://file.example"\n')
    env = {
        "OUTBOX_CONFIG": str(config),
        "HOME": str(tmp_path / "home"),
        "XDG_DATA_HOME": str(tmp_path / "data"),
        "XDG_CONFIG_HOME": str(tmp_path / "cfg"),
    }

    def journal(extra_env: dict[str, str], *flags: str) -> dict[str, str]:
        created = run_cli(*flags, "init", env={**env, **extra_env})
        assert created.returncode == 0, created.stderr
        out = run_cli(*flags, "status", "--json", env={**env, **extra_env})
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)  # type: ignore[no-any-return]

    assert journal({})["journal"] == str(tmp_path / "from-file.db")
    assert journal({})["base_url"] == "http://file.example"
    from_env = journal({"OUTBOX_DB": str(tmp_path / "from-env.db")})
    assert from_env["journal"] == str(tmp_path / "from-env.db")
    assert from_env["downloads"] == str(tmp_path / "renders")
    from_flag = journal(
        {"OUTBOX_DB": str(tmp_path / "from-env.db")}, "--db", str(tmp_path / "flag.db")
    )
    assert from_flag["journal"] == str(tmp_path / "flag.db")

    # No flag, no environment, no file: the platform's user data folder.
    del env["OUTBOX_CONFIG"]
    default = journal({})
    assert default["journal"] == str(tmp_path / "data" / "outbox" / "outbox.db")
    assert default["base_url"] == "https://api.craftkit.dev"


def test_config_file_must_not_hold_the_api_key(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text('api_key = "ck_live_secret"\n')
    result = run_cli("--config", str(config), "status")
    assert result.returncode == 78
    assert "CRAFTKIT_API_KEY" in result.stderr and "ck_live_secret" not in result.stderr


def test_config_file_tunes_the_network_side_and_checks_its_values(tmp_path: Path) -> None:
    from outbox.config import load_config

    config = tmp_path / "config.toml"
    config.write_text("concurrency = 8\nread_timeout = 12.5\n")
    settings = load_config(config_file=str(config), environ={}).settings
    assert (settings.concurrency, settings.read_timeout, settings.connect_timeout) == (8, 12.5, 5.0)
    config.write_text('concurrency = "lots"\n')
    result = run_cli("--config", str(config), "status")
    assert result.returncode == 78 and "concurrency must be a number" in result.stderr
    config.write_text("concurrency = 0\n")
    result = run_cli("--config", str(config), "status")
    assert result.returncode == 78 and "concurrency must be at least 1" in result.stderr


def test_status_and_lists_say_when_things_happened_in_utc(tmp_path: Path) -> None:
    db = tmp_path / "field.db"
    with Outbox(db) as ob:
        with freeze_time("2027-01-15 10:00:00.125"):
            ob.set_status("connectivity", {"online": False, "reason": "cannot reach the API"})
            entry = ob.enqueue("invoice", {"n": 1})
        with freeze_time("2027-01-15 10:05:00"):
            ob.set_status("connectivity", {"online": True, "reason": None})
            ob.cancel(entry.id)
    status = run_cli("--db", str(db), "status")
    assert "network    online (as of 2027-01-15T10:05:00.000Z)" in status.stdout
    [listed] = json.loads(run_cli("--db", str(db), "list", "--json").stdout)
    assert (listed["created_at"], listed["updated_at"]) == (
        "2027-01-15T10:00:00.125Z",
        "2027-01-15T10:05:00.000Z",
    )
    assert "2027-01-15T10:05:00.000Z" in run_cli("--db", str(db), "list").stdout
