"""The API key is checked when the configuration is read, and named, never shown.

A key that an HTTP header cannot carry (a carriage return from a file saved with Windows line
endings, a line break, a space, a non-ASCII or control character) used to be retried forever
as "outcome unknown". Now the commands that need the network exit 78 naming the problem, the
offline ones carry on, and the library refuses such a key before any request.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from support import INSPECTION, run_cli

from outbox import Outbox, State
from outbox.client import CraftkitClient
from outbox.config import ENV_API_KEY, load_config
from outbox.errors import ConfigError

SECRET = "ck_live_0123456789abcdef"

BROKEN_KEYS = [
    (SECRET + "\r", "contains a carriage return at its end (saved with Windows line endings?)"),
    (SECRET + "\n", "contains a line break at its end"),
    ("ck_live\r\nabc", "contains a carriage return at position 8 of 12"),
    (" " + SECRET, "contains a space at its start"),
    ("ck_live\tabc", "contains a tab at position 8 of 11"),
    (SECRET + "é", "contains a non-ASCII character at its end"),
    ("ck_\x00live", "contains a control character (0x00) at position 4 of 8"),
    ("ck_live\x7f", "contains a control character (0x7f) at its end"),
    ("", "is empty"),
    ("   ", "holds only whitespace"),
]


def _not_shown(key: str, text: str) -> bool:
    """Neither the key nor any recognisable part of it is in ``text``."""
    core = key.strip(" \r\n\t\x00\x7fé")
    return not core or core not in text


@pytest.mark.parametrize(("key", "problem"), BROKEN_KEYS)
def test_reading_the_configuration_names_what_is_wrong_with_the_key(key: str, problem: str) -> None:
    config = load_config(environ={ENV_API_KEY: key})
    assert config.api_key is None
    assert config.api_key_problem is not None
    assert config.api_key_problem.startswith(f"{ENV_API_KEY} {problem}")
    assert _not_shown(key, config.api_key_problem)


def test_a_usable_key_is_kept_and_has_no_problem() -> None:
    config = load_config(environ={ENV_API_KEY: SECRET})
    assert (config.api_key, config.api_key_problem) == (SECRET, None)
    unset = load_config(environ={})
    assert (unset.api_key, unset.api_key_problem) == (None, None)


@pytest.mark.parametrize(("key", "problem"), BROKEN_KEYS)
def test_the_library_refuses_such_a_key_before_any_request(key: str, problem: str) -> None:
    with pytest.raises(ConfigError) as raised:
        CraftkitClient("https://api.craftkit.test", key)
    assert f"the API key {problem}" in str(raised.value)
    assert _not_shown(key, str(raised.value))


def test_an_outbox_given_such_a_key_keeps_the_entry_and_says_why(tmp_path: Path) -> None:
    with Outbox(tmp_path / "j.db", api_key=SECRET + "\r") as ob:
        entry = ob.enqueue("inspection-report", INSPECTION, key="kept")
        with pytest.raises(ConfigError, match="the API key contains a carriage return"):
            ob.flush(timeout=1)
        kept = ob.get(entry.id)
        assert kept.state is State.PENDING and kept.attempts == 0


def test_cli_exits_78_naming_the_problem_and_works_offline(tmp_path: Path) -> None:
    env = {"OUTBOX_DB": str(tmp_path / "j.db"), ENV_API_KEY: SECRET + "\r"}
    flushed = run_cli("flush", "--timeout", "1", env=env)
    assert flushed.returncode == 78, flushed.stderr
    assert f"{ENV_API_KEY} contains a carriage return at its end" in flushed.stderr
    assert "the key is never shown" in flushed.stderr
    enqueued = run_cli("enqueue", "inspection-report", "--data", "{}", env=env)
    assert enqueued.returncode == 0, enqueued.stderr
    listed = run_cli("list", env=env)
    assert listed.returncode == 0 and "pending" in listed.stdout
    status = run_cli("status", env=env)
    assert status.returncode == 0
    assert f"api key    unusable: {ENV_API_KEY} contains a carriage return" in status.stdout
    for result in (flushed, enqueued, listed, status):
        assert SECRET not in result.stdout + result.stderr
        assert "Traceback" not in result.stderr
    non_ascii = run_cli("run", env={**env, ENV_API_KEY: "ck_live_clé"})
    assert non_ascii.returncode == 78, non_ascii.stderr
    assert f"{ENV_API_KEY} contains a non-ASCII character at its end" in non_ascii.stderr
    assert "ck_live_cl" not in non_ascii.stderr and "Traceback" not in non_ascii.stderr
