"""What the commands print, formatted in-process from real entries in a real journal."""

from __future__ import annotations

import json

from outbox import Outbox, State
from outbox import cli_output as output
from outbox.engine import FlushReport


def test_tables_pad_every_column_to_its_widest_cell_and_trim_the_end() -> None:
    assert output.table([("A", "LONG HEADER"), ("wide cell", "x")]) == [
        "A          LONG HEADER",
        "wide cell  x",
    ]


def test_long_text_is_clipped_with_an_ellipsis() -> None:
    assert output.clip("abcdef", 4) == "abc…"
    assert output.clip("abc", 4) == "abc" and output.clip(None, 4) == ""


def test_an_entry_shows_its_set_fields_field_errors_data_and_history(ob: Outbox) -> None:
    entry = ob.enqueue("invoice", {"amount": 1, "note": "Grüße"}, key="inv-1")
    entry = ob.journal.transition(
        entry.id,
        State.PENDING,
        State.REJECTED,
        error="invalid_input_data: bad",
        field_errors={"amount": ["Expected string", "Too small"]},
    )
    lines = output.entry_lines(entry, ob.history(entry.id))
    assert any(line.startswith("key ") and line.endswith("  inv-1") for line in lines)
    assert any(
        "field error" in line and "amount: Expected string; Too small" in line for line in lines
    )
    assert not any(line.startswith("render_id") for line in lines)  # None fields are left out
    assert any(line.endswith('{"amount": 1, "note": "Grüße"}') for line in lines)
    history = lines[lines.index("") + 1 :]
    assert history[0].split() == ["AT", "FROM", "TO", "ATTEMPT", "HTTP", "CODE", "DETAIL"]
    assert [row.split()[1:3] for row in history[1:]] == [["-", "pending"], ["pending", "rejected"]]
    listed = list(output.entries_table([entry]))
    assert listed[1].split()[:3] == [entry.id, "rejected", "invoice"]
    assert listed[1].endswith("invalid_input_data: bad")


def test_network_facts_say_what_to_fix() -> None:
    facts = {
        "connectivity": {"online": False, "reason": "cannot reach the API"},
        "connectivity_at": "2026-01-01T00:00:00.000Z",
        "auth": {"ok": False},
        "auth_at": "2026-01-01T00:00:01.000Z",
        "rate_limit": {"limited": False},
        "rate_limit_at": "2026-01-01T00:00:02.000Z",
        "pause": "not a fact about the network",
    }
    assert output.network_lines(facts) == [
        "network    offline: cannot reach the API (as of 2026-01-01T00:00:00.000Z)",
        "api key    refused — fix CRAFTKIT_API_KEY (as of 2026-01-01T00:00:01.000Z)",
        "rate limit none (as of 2026-01-01T00:00:02.000Z)",
    ]


def test_counts_and_reports() -> None:
    counts = {State.PENDING: 2, State.DONE: 5}
    line = output.counts_line(counts)
    assert line.startswith("pending 2  submitted 0") and "done 5" in line
    assert output.progress_line(counts) == "\r" + line + "   "
    report = json.loads(output.report_json(FlushReport(counts=counts, timed_out=True)))
    assert report["counts"]["pending"] == 2 and report["timed_out"] is True
    assert report["exit_code"] == 75 and report["drained"] is False
    assert report["problems"] == []  # nothing for a person to do: the work carries on
    assert report["notes"] == [
        "the --timeout ended this run with work due; it carries on next time"
    ]
