"""What the dashboard page shows, as JSON-ready dicts: rows, an entry's detail in plain words,
and the journal-wide summary (the facts ``outbox status`` prints).

Pure functions of what was read from the journal; no I/O here.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import PurePath
from typing import Any

from ..facts import network_facts
from ..models import Entry, Event, State
from ..rules import derived_key

_ROW_FIELDS = ("id", "template", "key", "attempts", "created_at", "updated_at")


def row(entry: Entry) -> dict[str, Any]:
    """One line of the entries table."""
    return {
        **{name: getattr(entry, name) for name in _ROW_FIELDS},
        "state": entry.state.value,
        "note": note(entry),
    }


def note(entry: Entry) -> str:
    """A few words for the table: the error, the PDF's name, or Craftkit's status."""
    if entry.error:
        return entry.error
    if entry.pdf_path:
        return PurePath(entry.pdf_path).name
    return entry.remote_status or ""


def detail(
    entry: Entry,
    events: list[Event],
    facts: dict[str, Any],
    now: float,
    *,
    can_amend: bool,
) -> dict[str, Any]:
    """Everything the detail view shows about one entry."""
    fields = entry.to_dict()
    return {
        "entry": {**fields, "base_key": entry.base_key},
        "explanation": explain(entry, facts, now),
        "problems": problems(entry),
        "events": [event.to_dict() for event in events],
        "actions": {
            "retry": entry.state in (State.FAILED, State.REJECTED),
            "cancel": entry.state is State.PENDING,
            "amend": can_amend,
        },
        "pdf": entry.state is State.DONE and entry.pdf_path is not None,
    }


def problems(entry: Entry) -> list[str]:
    """The error and each field error, one sentence each."""
    lines = []
    if entry.error:
        code = entry.error_code
        lines.append(entry.error + (f" ({code})" if code and code not in entry.error else ""))
    for field, messages in (entry.field_errors or {}).items():
        lines.append(f"{field or 'the data'}: {'; '.join(messages)}")
    return lines


def explain(entry: Entry, facts: dict[str, Any], now: float) -> str:
    """Why the entry is where it is and what happens next, in one or two sentences."""
    state = entry.state
    if state is State.PENDING:
        return _explain_pending(entry, facts, now)
    if state is State.SUBMITTED:
        status = entry.remote_status or "queued"
        return (
            f"Craftkit accepted it as render {entry.render_id} and reports it {status}; "
            f"outbox checks again {_when(entry.due_at, now)} ({entry.polls} checks so far)."
        )
    if state is State.DOWNLOADING:
        return (
            "Craftkit rendered it; the PDF is being downloaded and verified "
            f"(next attempt {_when(entry.due_at, now)})."
        )
    if state is State.DONE:
        size = f"{entry.pdf_bytes:,} bytes, " if entry.pdf_bytes is not None else ""
        return f"The PDF is on disk ({size}verified): {entry.pdf_path}."
    if state is State.FAILED:
        return (
            f"Craftkit could not render it: {entry.error or 'no reason given'}. "
            f"Retry submits it again under a new key ({derived_key(entry.base_key, entry.generation + 1)})."
        )
    if state is State.REJECTED:
        return (
            "Craftkit refused the request for good; nothing was rendered. A retry sends the "
            "same request again under the same key, so fix the data or the template first."
        )
    return "Cancelled by a person before Craftkit accepted it; nothing more will happen."


def _explain_pending(entry: Entry, facts: dict[str, Any], now: float) -> str:
    if entry.attempts == 0 and entry.due_at <= now:
        text = "Saved locally; it is sent at the next flush or by a running worker."
    else:
        text = f"Waiting to be sent again {_when(entry.due_at, now)}"
        text += f" after {entry.attempts} attempt{'s' if entry.attempts != 1 else ''}"
        text += f": {entry.error}." if entry.error else "."
    for fact in network_facts(facts):
        if not fact.ok and fact.name in ("connectivity", "auth"):
            text += f" Last known {fact.label}: {fact.text} (as of {fact.at})."
    return text


def _when(at: float, now: float) -> str:
    if at <= now:
        return "now"
    return "at " + datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def summary(
    counts: dict[State, int],
    facts: dict[str, Any],
    next_due: float | None,
    *,
    counted_through: int,
    last_event: int,
    journal: str,
    downloads: str,
    base_url: str,
    templates: list[str],
) -> dict[str, Any]:
    """Counts per state and the facts that ``outbox status`` shows.

    The counts include every change up to event ``counted_through``; ``last_event`` is the
    newest event when the summary was made (a live stream started there misses nothing).
    """
    return {
        "counts": {state.value: counts.get(state, 0) for state in State},
        "total": sum(counts.values()),
        "facts": [
            {
                "name": fact.name,
                "label": fact.label,
                "ok": fact.ok,
                "text": fact.text,
                "at": fact.at,
            }
            for fact in network_facts(facts)
        ],
        "next_due": None
        if next_due is None
        else datetime.fromtimestamp(next_due, UTC).isoformat(timespec="seconds"),
        "counted_through": counted_through,
        "last_event": last_event,
        "journal": journal,
        "downloads": downloads,
        "base_url": base_url,
        "templates": templates,
    }
