"""``outbox list`` prints entries as it reads them, a batch at a time, and stops after a
screenful on a terminal."""

from __future__ import annotations

import asyncio
import json
import os
import pty
import re
import subprocess
import sys
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import pytest
from support import process_env, run_cli

from outbox import AsyncOutbox, Entry, Outbox, State
from outbox import cli_output as output
from outbox.cli import TERMINAL_LIST
from outbox.store import MAX_PAGE

#: Enough entries for three batches, the last one partial.
MANY = 2 * MAX_PAGE + 137


@pytest.fixture
def many(db_path: Path) -> list[str]:
    """The ids of MANY entries, newest first; every third one cancelled."""
    with Outbox(db_path) as ob:
        ids = [e.id for e in ob.enqueue_many({"template": "t", "data": {}} for _ in range(MANY))]
        for entry_id in ids[::3]:
            ob.cancel(entry_id)
    return ids[::-1]


def test_stream_gives_what_list_gives_across_batches(db_path: Path, many: list[str]) -> None:
    with Outbox(db_path) as ob:
        assert [e.id for e in ob.stream()] == many == [e.id for e in ob.list()]
        cancelled = [e.id for e in ob.stream(state="cancelled")]
        assert cancelled == [e.id for e in ob.list(state=State.CANCELLED)]
        assert len(cancelled) == len(many[::3]) and set(cancelled) == set(many[-1::-3])
        assert [e.id for e in ob.stream(limit=MAX_PAGE + 1)] == many[: MAX_PAGE + 1]
        assert [e.id for e in ob.stream(state="pending", limit=3)] == [
            entry_id for entry_id in many if entry_id not in set(cancelled)
        ][:3]


def test_the_async_twin_streams_the_same_entries(db_path: Path, many: list[str]) -> None:
    async def main() -> None:
        async with AsyncOutbox(db_path) as ob:
            assert [e.id async for e in ob.stream()] == many
            assert [e.id async for e in ob.stream(limit=MAX_PAGE + 2)] == many[: MAX_PAGE + 2]
            cancelled = [e.id async for e in ob.stream(state=State.CANCELLED)]
            assert cancelled == [e.id for e in await ob.list(state=State.CANCELLED)]

    asyncio.run(main())


def test_the_first_entry_comes_after_one_batch_is_read(db_path: Path, many: list[str]) -> None:
    with Outbox(db_path) as ob:
        statements: list[str] = []
        ob.journal._conn.set_trace_callback(statements.append)
        entries = ob.stream()
        first = next(entries)
        read = [sql for sql in statements if "FROM entries" in sql]
        assert first.id == many[0]
        assert len(read) == 1 and read[0].endswith(f"LIMIT {MAX_PAGE}")
        assert len(list(entries)) == len(many) - 1
        assert len([sql for sql in statements if "FROM entries" in sql]) == 3


def test_streaming_a_journal_holds_a_batch_not_the_journal(db_path: Path) -> None:
    """The peak memory of going through every entry, deliveries included, is a fraction of
    what holding them all takes (measured in the same test, so the bound does not depend on
    the machine)."""
    bulky = {"notes": "x" * 2000}
    email = {"to": "ada@example.com", "message": "m" * 2000}
    with Outbox(db_path) as ob:
        for _ in range(20):
            ob.enqueue_many(
                {"template": "t", "data": bulky, "email": email} for _ in range(MAX_PAGE)
            )

        def peak(read: Callable[[], int]) -> int:
            tracemalloc.start()
            try:
                assert read() == 20 * MAX_PAGE
                return tracemalloc.get_traced_memory()[1]
            finally:
                tracemalloc.stop()

        whole = peak(lambda: len(ob.list()))
        streamed = peak(lambda: sum(1 for _ in ob.stream()))
    assert streamed < whole / 4


def test_list_json_is_the_documented_array_written_piece_by_piece(
    db_path: Path, many: list[str]
) -> None:
    with Outbox(db_path) as ob:
        expected = output.dumps([output.entry_object(e) for e in ob.list()]) + "\n"
    printed = run_cli("--db", str(db_path), "list", "--json")
    assert printed.returncode == 0 and printed.stdout == expected
    assert [e["id"] for e in json.loads(printed.stdout)] == many


def test_deliveries_are_read_a_batch_of_entries_at_a_time(db_path: Path) -> None:
    """``outbox list`` (``--json`` prints each entry's deliveries) reads the deliveries of a
    batch of entries in one indexed query: never one query per entry, never all at once."""
    with Outbox(db_path) as ob:
        made = ob.enqueue_many(
            {"template": "t", "data": {}, "share": True, "email": f"n{i}@example.com"}
            for i in range(MANY)
        )
        statements: list[str] = []
        ob.journal._conn.set_trace_callback(statements.append)
        streamed = list(ob.stream())
        ob.journal._conn.set_trace_callback(None)
        plan = ob.journal._conn.execute(
            "EXPLAIN QUERY PLAN SELECT * FROM deliveries WHERE entry_id IN (?, ?)", ("a", "b")
        ).fetchall()
    assert [e.deliveries for e in streamed] == [e.deliveries for e in made[::-1]]
    assert all(len(e.deliveries) == 2 for e in streamed)
    reads = [sql for sql in statements if "FROM deliveries WHERE entry_id IN" in sql]
    assert len(reads) == len([sql for sql in statements if "FROM entries" in sql]) == 3
    assert [len(re.findall(r"'[0-9a-f]{16}'", sql)) for sql in reads] == [
        MAX_PAGE,
        MAX_PAGE,
        MANY - 2 * MAX_PAGE,
    ]
    assert any("USING INDEX" in str(tuple(row)) for row in plan), plan


@pytest.mark.parametrize("count", [0, 1, 2])
def test_short_json_arrays_print_as_before(count: int) -> None:
    items = [{"id": str(n), "nested": {"a": [1, 2]}} for n in range(count)]
    assert "".join(output.json_array(items)) == output.dumps(items)


def test_piped_list_prints_every_entry(db_path: Path, many: list[str]) -> None:
    printed = run_cli("--db", str(db_path), "list")
    lines = printed.stdout.splitlines()
    assert lines[0].split() == ["ID", "STATE", "TEMPLATE", "KEY", "UPDATED", "DETAIL"]
    assert [line.split()[0] for line in lines[1:]] == many
    assert "more" not in printed.stderr


def test_columns_are_set_by_the_first_rows_and_a_wider_cell_pushes_only_its_line() -> None:
    with_long = [_entry("short"), _entry("a-much-longer-template-name")]
    lines = list(output.entries_table(with_long, sample=1))
    assert lines[1].index("key-") == lines[0].index("KEY")
    assert lines[2].index("key-") > lines[0].index("KEY")


def _entry(template: str) -> Entry:
    return Entry(
        id="0" * 16,
        template=template,
        data={},
        key="key-1",
        base_key="key-1",
        state=State.PENDING,
        remote_status=None,
        render_id=None,
        attempts=0,
        error=None,
        error_code=None,
        field_errors=None,
        filename=None,
        version=None,
        pdf_path=None,
        pdf_bytes=None,
        pdf_sha256=None,
        source=None,
        created_at="2026-01-01T00:00:00.000Z",
        updated_at="2026-01-01T00:00:00.000Z",
    )


def _on_a_terminal(*args: str) -> tuple[str, str, int]:
    """Run ``outbox ARGS`` with its stdout on a pseudo-terminal; its output and stderr."""
    leader, follower = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "outbox", *args],
        stdout=follower,
        stderr=subprocess.PIPE,
        env=process_env({"COLUMNS": "200"}),
    )
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the terminal closed: the command is done
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(leader)
    _, stderr = process.communicate(timeout=60)
    code = process.returncode
    return b"".join(chunks).decode().replace("\r\n", "\n"), stderr.decode(), code


@pytest.mark.e2e
def test_on_a_terminal_the_list_stops_after_a_screenful_and_says_how_many_more(
    db_path: Path, many: list[str]
) -> None:
    shown, note, code = _on_a_terminal("--db", str(db_path), "list")
    assert code == 0
    rows = shown.splitlines()[1:]
    assert [row.split()[0] for row in rows] == many[:TERMINAL_LIST]
    assert f"{MANY - TERMINAL_LIST:,} more; use --limit N or --all" in note

    shown, note, code = _on_a_terminal("--db", str(db_path), "list", "--all")
    assert [row.split()[0] for row in shown.splitlines()[1:]] == many and "more" not in note

    shown, note, _ = _on_a_terminal("--db", str(db_path), "list", "--state", "cancelled")
    cancelled = len(many[::3])
    assert len(shown.splitlines()) == TERMINAL_LIST + 1
    assert f"{cancelled - TERMINAL_LIST:,} more" in note

    shown, note, _ = _on_a_terminal("--db", str(db_path), "list", "--limit", "3")
    assert len(shown.splitlines()) == 4 and "more" not in note


@pytest.mark.e2e
def test_a_reader_that_stops_early_ends_the_list_quietly(db_path: Path, many: list[str]) -> None:
    with subprocess.Popen(
        [sys.executable, "-m", "outbox", "--db", str(db_path), "list"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=process_env(),
    ) as listing:
        assert listing.stdout is not None and listing.stderr is not None
        first = listing.stdout.readline()
        listing.stdout.close()  # as `outbox list | head -1` does
        listing.wait(timeout=60)
        assert first.split()[0] == b"ID"
        assert b"Traceback" not in listing.stderr.read()
