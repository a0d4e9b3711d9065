"""A failure belongs to the entry that caused it: one hostile render among good ones, through the
CLI against the sandbox over a real socket.

Each test enqueues five good entries and one whose idempotency key the sandbox poisons (a broken
public ``downloadUrl``, a redirect on the POST, a poll answer that is not a render), runs
``outbox flush`` and checks that the good ones are all ``done``, the bad one ends ``done``
through the private stream or waits with a precise error, the exit code is the README's, no
traceback is printed, and the bad entry cost a bounded number of requests.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support import INSPECTION, CliResult, run_cli, sandbox_env

from outbox import Outbox, State
from outbox.sandbox import Sandbox

GOOD = 5
BAD_KEY = "bad-one"


@pytest.fixture
def sb() -> Iterator[Sandbox]:
    with Sandbox(render_seconds=0.05, seed=5) as sandbox:
        yield sandbox


def _flush_with_one_bad(
    tmp_path: Path, sb: Sandbox, faults: dict[str, Any], timeout: float = 20
) -> tuple[CliResult, Outbox]:
    """Five good entries and the poisoned one, flushed once by the CLI; the journal is returned
    open for the checks (the caller closes it)."""
    db = tmp_path / "j.db"
    with Outbox(db) as ob:
        for n in range(GOOD):
            ob.enqueue("inspection-report", {**INSPECTION, "site": f"S{n}"}, key=f"good-{n}")
        ob.enqueue("inspection-report", {**INSPECTION, "site": "bad"}, key=BAD_KEY)
    sb.set_faults(keys={BAD_KEY: faults})
    result = run_cli("flush", "--timeout", str(timeout), env=sandbox_env(sb, db))
    assert "Traceback" not in result.stderr, result.stderr
    return result, Outbox(db)


def _goods_done(ob: Outbox) -> None:
    for n in range(GOOD):
        entry = ob.find_by_key(f"good-{n}")
        assert entry is not None and entry.state is State.DONE, entry


def _bad(ob: Outbox) -> Any:
    entry = ob.find_by_key(BAD_KEY)
    assert entry is not None
    return entry


def _requests(sb: Sandbox, route_word: str) -> int:
    """Requests the sandbox served on routes whose name holds ``route_word``."""
    by_route = sb.stats()["requests"]
    return sum(
        count
        for route, statuses in by_route.items()
        if route_word in route
        for count in (statuses.values() if isinstance(statuses, dict) else [statuses])
    )


# -- a broken public downloadUrl -------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "words"),
    [
        ("refused", "Connection refused"),
        ("redirect", "answered 302 (a redirect to"),
        ("unauthorized", "answered 401"),
        ("wrong_body", "not a PDF"),
        ("not_found", "answered 404"),
        ("file", "file:///etc/passwd"),
    ],
)
def test_a_broken_public_copy_is_fetched_through_the_private_stream(
    tmp_path: Path, sb: Sandbox, mode: str, words: str
) -> None:
    result, ob = _flush_with_one_bad(tmp_path, sb, {"download_url": mode})
    with ob:
        assert result.returncode == 0, result.stdout + result.stderr
        _goods_done(ob)
        bad = _bad(ob)
        assert bad.state is State.DONE and Path(bad.pdf_path).read_bytes().startswith(b"%PDF-")
        history = " | ".join(event.detail or "" for event in ob.history(bad.id))
        if mode != "file":  # a file:// URL may be dropped before any download is tried
            assert "the public copy of render" in history and words in history, history
            assert "downloading through the private stream instead" in history
        assert "API key" not in history and "offline" not in history.lower()
        facts = ob.status()
        assert facts["auth"]["ok"] and facts["connectivity"]["online"]
    assert "refused the API key" not in result.stdout + result.stderr
    assert _requests(sb, "download") <= GOOD + 2, sb.stats()["requests"]


# -- a redirect on the POST ------------------------------------------------------------------


def test_a_redirected_post_waits_alone_with_a_precise_error_and_few_requests(
    tmp_path: Path, sb: Sandbox
) -> None:
    result, ob = _flush_with_one_bad(tmp_path, sb, {"redirect_post": 307}, timeout=5)
    with ob:
        assert result.returncode == 75, result.stdout + result.stderr
        _goods_done(ob)
        bad = _bad(ob)
        assert bad.state is State.PENDING and bad.error_code == "foreign_answer"
        assert "answered 307 (a redirect to http://" in bad.error
        assert "which outbox does not follow" in bad.error
        assert 1 <= bad.attempts <= 6
    stats = sb.stats()
    assert stats["renders_per_key"].get(BAD_KEY, 0) == 0, "a redirect creates nothing"
    assert 1 <= stats["faults_injected"]["redirect_post"] <= 6, stats["faults_injected"]
    assert "307" in result.stdout + result.stderr


# -- poll answers that are not a render ------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "words"),
    [
        ("garbage_json", "that are not valid JSON"),
        ("wrong_shape", "a JSON array"),
        ("empty", "an empty body"),
    ],
)
def test_a_poison_poll_answer_is_that_entrys_problem(
    tmp_path: Path, sb: Sandbox, mode: str, words: str
) -> None:
    result, ob = _flush_with_one_bad(tmp_path, sb, {"poll_answer": mode}, timeout=5)
    with ob:
        assert result.returncode == 75, result.stdout + result.stderr
        _goods_done(ob)
        bad = _bad(ob)
        assert bad.state is State.SUBMITTED and bad.error_code == "ForeignAnswer"
        assert f"checking render {bad.render_id} got an answer that is not Craftkit's" in bad.error
        assert words in bad.error and "only this entry waits" in bad.error
        assert bad.polls <= 10
        assert ob.status()["connectivity"]["online"]
    (waiting,) = [line for line in result.stdout.splitlines() if line.startswith("waiting ")]
    assert waiting.startswith("waiting   1 submitted: next ") and f"({bad.id})" in waiting


def test_a_render_with_non_finite_numbers_and_one_with_an_unknown_status_stop_no_one(
    tmp_path: Path, sb: Sandbox
) -> None:
    db = tmp_path / "j.db"
    with Outbox(db) as ob:
        for n in range(GOOD):
            ob.enqueue("inspection-report", {**INSPECTION, "site": f"S{n}"}, key=f"good-{n}")
        ob.enqueue("inspection-report", INSPECTION, key="nan")
        ob.enqueue("inspection-report", {**INSPECTION, "site": "x"}, key="unknown")
    sb.set_faults(
        keys={"nan": {"poll_answer": "non_finite"}, "unknown": {"poll_answer": "unknown_status"}}
    )
    result = run_cli("flush", "--timeout", "5", env=sandbox_env(sb, db))
    assert "Traceback" not in result.stderr
    assert result.returncode == 75, result.stdout + result.stderr  # the unknown one still renders
    with Outbox(db) as ob:
        _goods_done(ob)
        nan = ob.find_by_key("nan")
        assert nan is not None and nan.state is State.DONE
        unknown = ob.find_by_key("unknown")
        assert unknown is not None and unknown.state is State.SUBMITTED
        assert unknown.remote_status == "processing"


def test_flush_json_names_the_waiting_entry(tmp_path: Path, sb: Sandbox) -> None:
    result, ob = _flush_with_one_bad(tmp_path, sb, {"poll_answer": "garbage_json"}, timeout=3)
    ob.close()
    shown = run_cli("--db", str(tmp_path / "j.db"), "list", "--json")
    entries = {entry["key"]: entry for entry in json.loads(shown.stdout)}
    assert entries[BAD_KEY]["state"] == "submitted"
    assert "not valid JSON" in entries[BAD_KEY]["error"]
    assert all(entries[f"good-{n}"]["state"] == "done" for n in range(GOOD))
