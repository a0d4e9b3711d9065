"""What ``outbox`` commands print: tables, entry details, status and report lines, JSON.

Pure formatting: each function turns library values into text (lines without newlines, or one
JSON document) and prints nothing, so :mod:`outbox.cli` stays glue and the wording is in one
place.
"""

from __future__ import annotations

import itertools
import json
import re
import textwrap
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict
from datetime import datetime
from typing import TYPE_CHECKING, Any

from .clock import iso
from .deliveries import Delivery
from .errors import DataInvalid, JournalMissing, KeyConflict, NoPdf, OutboxError, RemoteError
from .exit_codes import exit_code_for
from .facts import concurrency_line, network_facts
from .models import Entry, Event, State
from .templates import CachedTemplate
from .worker import worker_facts

if TYPE_CHECKING:
    from .client import Share
    from .engine import FlushReport

#: How a sync changed each cached template, in the order the summary counts them.
TEMPLATE_CHANGES = ("new", "updated", "unchanged")


def dumps(value: Any) -> str:
    """``--json`` output: indented, non-ASCII kept as it is."""
    return json.dumps(value, indent=2, ensure_ascii=False)


def table(rows: Sequence[Sequence[str]]) -> list[str]:
    """Columns padded to the widest cell; the first row is the header."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]


# -- errors ----------------------------------------------------------------------------


def error_object(exc: OutboxError) -> dict[str, Any]:
    """The one shape of an error under ``--json``, whichever command it stops::

        {"error": {"code": "key_conflict", "message": "...", "exit_code": 65,
                   "field_errors": null, ...}}

    ``code`` is the error's class in snake case (``data_invalid``, ``key_conflict``,
    ``journal_missing``, ``entry_not_found``...), stable as the class names are; ``message``
    is what the command prints on stderr; ``field_errors`` has Craftkit's ``fieldErrors``
    shape (null when the error is not about fields). Errors that name more carry it too:
    ``entry_id``, ``state``, ``key`` and ``differences`` for a key conflict, ``template`` and
    ``version`` for refused data, ``path`` for a missing journal, ``craftkit_code`` and
    ``http_status`` for Craftkit's own answers.
    """
    body: dict[str, Any] = {
        "code": _snake(type(exc).__name__),
        "message": str(exc),
        "exit_code": int(exit_code_for(exc)),
        "field_errors": getattr(exc, "field_errors", None) or None,
    }
    if isinstance(exc, KeyConflict):
        body.update(
            entry_id=exc.entry_id, state=exc.state, key=exc.key, differences=exc.differences
        )
    elif isinstance(exc, DataInvalid):
        body.update(template=exc.template, version=exc.version)
    elif isinstance(exc, JournalMissing):
        body.update(path=exc.path)
    elif isinstance(exc, NoPdf):
        body.update(entry_id=exc.entry_id, state=exc.state)
    elif isinstance(exc, RemoteError):
        body.update(craftkit_code=exc.code, http_status=exc.status)
    return {"error": body}


def error_json(exc: OutboxError) -> str:
    """:func:`error_object` as ``--json`` prints it."""
    return dumps(error_object(exc))


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def dumps_line(value: Any) -> str:
    """One JSON document on one line (JSON Lines: ``outbox events --json``)."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def event_line(event: Event) -> str:
    """``outbox events``: one event on one line."""
    moved = f"{event.from_state.value if event.from_state else 'new'} -> {event.to_state.value}"
    parts = [str(event.id), event.at, event.entry_id, moved, f"attempt {event.attempt}"]
    if event.http_status:
        parts.append(str(event.http_status))
    if event.error_code:
        parts.append(event.error_code)
    line = "  ".join(parts)
    return line + (f"  {event.detail}" if event.detail else "")


# -- entries ---------------------------------------------------------------------------


def entries_table(entries: Iterable[Entry], *, sample: int = 500) -> Iterator[str]:
    """``outbox list``: one row per entry, each line made as its entry comes.

    Columns are as wide as the header and the first ``sample`` entries need; a wider cell
    further down pushes its own line only. So a list of any length is printed while it is
    read, in constant memory.
    """
    rows = (
        (e.id, e.state.value, e.template, clip(e.key, 32), e.updated_at, _detail(e))
        for e in entries
    )
    head = [
        ("ID", "STATE", "TEMPLATE", "KEY", "UPDATED", "DETAIL"),
        *itertools.islice(rows, sample),
    ]
    widths = [max(len(row[i]) for row in head) for i in range(len(head[0]))]
    for row in itertools.chain(head, rows):
        yield "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()


def json_array(items: Iterable[Any]) -> Iterator[str]:
    """A JSON array exactly as :func:`dumps` prints it, in pieces, one item at a time (join
    them, or write each as it comes), so a long array is never held whole."""
    opening = "[\n"
    for item in items:
        yield opening + textwrap.indent(dumps(item), "  ")
        opening = ",\n"
    yield "[]" if opening == "[\n" else "\n]"


def entry_lines(entry: Entry, events: Sequence[Event]) -> list[str]:
    """``outbox show``: every field that is set, the data, then the event journal."""
    lines: list[str] = []
    fields = entry.to_dict()
    fields.pop("data")
    fields.pop("deliveries")
    fields.pop("data_problem", None)
    width = max(len(name) for name in fields)
    for name, value in fields.items():
        if value is None:
            continue
        if name == "field_errors":
            for field_name, messages in value.items():
                lines.append(f"{'field error'.ljust(width)}  {field_name}: {'; '.join(messages)}")
            continue
        lines.append(f"{name.ljust(width)}  {value}")
    data = json.dumps(entry.data, ensure_ascii=False)
    if entry.data_problem is not None:
        data = f"(cannot be read back: {entry.data_problem})"
    lines.append(f"{'data'.ljust(width)}  {data}")
    for delivery in entry.deliveries:
        lines.append(f"{'delivery'.ljust(width)}  {delivery.id}  {delivery.status_line()}")
    lines.append("")
    rows = [("AT", "FROM", "TO", "ATTEMPT", "HTTP", "CODE", "DETAIL")]
    rows += [
        (
            e.at,
            e.from_state.value if e.from_state else "-",
            e.to_state.value if e.delivery_state is None else f"delivery {e.delivery_state}",
            str(e.attempt),
            str(e.http_status or ""),
            e.error_code or "",
            e.detail or "",
        )
        for e in events
    ]
    return lines + table(rows)


def entry_object(entry: Entry, events: Sequence[Event] | None = None) -> dict[str, Any]:
    """An entry as every ``--json`` command prints it (``show``, ``list``, ``enqueue``,
    ``cancel``, ``retry``, ``amend``, ``path``): all its fields, its deliveries (share links
    and emails) among them, so a script reads one shape whichever command printed the entry.
    ``show`` also gives the entry's event journal, as ``events``."""
    fields = entry.to_dict()
    if events is not None:
        fields["events"] = [event.to_dict() for event in events]
    return fields


def entry_json(entry: Entry, events: Sequence[Event] | None = None) -> str:
    """:func:`entry_object` as one JSON document."""
    return dumps(entry_object(entry, events))


def clip(text: str | None, width: int) -> str:
    if text is None:
        return ""
    return text if len(text) <= width else text[: width - 1] + "…"


def _detail(entry: Entry) -> str:
    if entry.error:
        return clip(entry.error, 60)
    if entry.pdf_path:
        return entry.pdf_path
    return entry.remote_status or ""


# -- status and flush ------------------------------------------------------------------


def status_lines(
    *,
    journal: str,
    schema: int,
    downloads: str,
    base_url: str,
    counts: Mapping[State, int],
    facts: Mapping[str, Any],
    next_due: float | None = None,
    now: float | None = None,
) -> list[str]:
    """``outbox status``: where things are, the counts, when the next unfinished entry is
    due, the last network facts (each with the time it was observed), and the running
    workers (alive as of their last heartbeat, with their next due time and last error)."""
    lines = [
        f"journal    {journal} (schema {schema})",
        f"downloads  {downloads}",
        f"api        {base_url}",
        "  ".join(f"{s.value} {n}" for s, n in counts.items()),
    ]
    if next_due is not None and now is not None:
        lines.append(f"next due   {when(next_due, now)}")
    workers = worker_facts(facts, now=now)
    lines += network_lines(facts)
    lines += filter(None, [concurrency_line(facts)])
    lines += [fact.line() for fact in workers]
    return lines


def status_json(
    *,
    journal: str,
    downloads: str,
    base_url: str,
    counts: Mapping[State, int],
    facts: Mapping[str, Any],
    next_due: float | None = None,
    now: float | None = None,
) -> str:
    return dumps(
        {
            "journal": journal,
            "downloads": downloads,
            "base_url": base_url,
            "counts": {s.value: n for s, n in counts.items()},
            "next_due": iso(next_due) if next_due is not None else None,
            "workers": [asdict(worker) for worker in worker_facts(facts, now=now)],
            "status": dict(facts),
        }
    )


def network_lines(facts: Mapping[str, Any]) -> list[str]:
    """The last known connectivity, key, server and rate-limit facts, for a person."""
    return [fact.line() for fact in network_facts(facts)]


def counts_line(counts: Mapping[State, int]) -> str:
    """Every state with its count, in the order of the states."""
    return "  ".join(f"{s.value} {counts.get(s, 0)}" for s in State)


def progress_line(counts: Mapping[State, int]) -> str:
    """The live line ``flush`` rewrites in place on a terminal."""
    return "\r" + counts_line(counts) + "   "


def delivery_line(delivery: Delivery) -> str:
    """One line about a delivery that finished, naming its entry (``run``, ``flush``)."""
    return f"{delivery.state.value} {delivery.entry_id} {delivery.status_line()}"


def delivery_summary(report: FlushReport) -> list[str]:
    """``outbox flush``: the links made and emails sent in this run (failures are problems)."""
    return [delivery_line(d) for d in report.deliveries if d not in report.failed_deliveries]


def flush_summary(report: FlushReport, *, now: float) -> list[str]:
    """``outbox flush``'s summary: this run's counts, the PDFs it wrote, what is still waiting
    (when it is next due, and why), notes that need nobody, and the whole journal's counts."""
    run = report.this_run
    lines = ["this run  " + ", ".join(f"{name} {count}" for name, count in run.items())]
    lines += [f"written   {entry.pdf_path}" for entry in report.written]
    lines += delivery_summary(report)
    for waiting in report.waiting:
        first = f" ({waiting.entry_id})" if waiting.entry_id else ""
        line = (
            f"waiting   {waiting.count} {waiting.state.value}: next "
            f"{when(waiting.next_due, now)}{first}"
        )
        lines.append(line + (f" — {waiting.reason}" if waiting.reason else ""))
    if report.deliveries_waiting:
        delivery = report.deliveries_waiting[0]
        lines.append(
            f"waiting   {len(report.deliveries_waiting)} deliveries of done entries: first "
            f"{delivery.describe()} of {delivery.entry_id} ({delivery.state.value})"
            + (f" — {delivery.error}" if delivery.error else "")
        )
    lines += [f"note      {note}" for note in report.notes]
    lines.append("journal   " + counts_line(report.counts))
    return lines


def when(moment: float | None, now: float) -> str:
    """A due time for a person: ``now``, ``at 14:02:10`` today, else with the date (local)."""
    if moment is None or moment <= now:
        return "now"
    local = datetime.fromtimestamp(moment).astimezone()
    if local.date() == datetime.fromtimestamp(now).astimezone().date():
        return f"at {local:%H:%M:%S}"
    return f"at {local:%Y-%m-%d %H:%M:%S}"


def report_json(report: FlushReport) -> str:
    """``outbox flush --json``."""
    return dumps(
        {
            "deliveries": [{"entry_id": d.entry_id, **d.to_public()} for d in report.deliveries],
            "deliveries_waiting": len(report.deliveries_waiting),
            "exit_code": report.exit_code,
            "drained": report.drained,
            "this_run": report.this_run,
            "written": [entry.pdf_path for entry in report.written],
            "waiting": [
                {
                    "state": waiting.state.value,
                    "count": waiting.count,
                    "next_due": iso(waiting.next_due) if waiting.next_due is not None else None,
                    "reason": waiting.reason,
                    "entry_id": waiting.entry_id,
                }
                for waiting in report.waiting
            ],
            "counts": {s.value: n for s, n in report.counts.items()},
            "moved": {s.value: n for s, n in report.moved.items()},
            "failed": [e.to_public() for e in report.failed],
            "rejected": [e.to_public() for e in report.rejected],
            "offline": report.offline,
            "auth_error": report.auth_error,
            "rate_limited": report.rate_limited,
            "timed_out": report.timed_out,
            "notes": report.notes,
            "problems": report.problems,
        }
    )


# -- shares ----------------------------------------------------------------------------


def shares_table(shares: Sequence[Share], deliveries: Sequence[Delivery]) -> list[str]:
    """``outbox shares``: one row per share at Craftkit, and which delivery recorded it."""
    recorded = {d.share_id: d for d in deliveries if d.share_id}
    rows = [("SHARE ID", "CHANNEL", "TO", "CLICKS", "CREATED", "EXPIRES", "REVOKED", "URL", "BY")]
    for share in shares:
        delivery = recorded.get(share.id)
        rows.append(
            (
                share.id,
                share.channel,
                share.recipient_email or "",
                "" if share.click_count is None else str(share.click_count),
                share.created_at or "",
                share.expires_at or "never",
                share.revoked_at or "",
                share.url or "",
                f"delivery {delivery.id}" if delivery else "",
            )
        )
    return table(rows)


def shares_json(shares: Sequence[Share], deliveries: Sequence[Delivery]) -> str:
    recorded = {d.share_id: d.id for d in deliveries if d.share_id}
    return dumps(
        [
            {
                "id": share.id,
                "channel": share.channel,
                "recipient_email": share.recipient_email,
                "message": share.message,
                "url": share.url,
                "click_count": share.click_count,
                "created_at": share.created_at,
                "expires_at": share.expires_at,
                "revoked_at": share.revoked_at,
                "delivery_id": recorded.get(share.id),
            }
            for share in shares
        ]
    )


# -- templates -------------------------------------------------------------------------


def template_change(old: CachedTemplate | None, new: CachedTemplate) -> str:
    """What a sync did to one template: one of :data:`TEMPLATE_CHANGES`."""
    if old is None:
        return "new"
    same = (old.version, old.published, old.json_schema) == (
        new.version,
        new.published,
        new.json_schema,
    )
    return "unchanged" if same else "updated"


def templates_table(cached: Sequence[CachedTemplate], changes: Mapping[str, str]) -> list[str]:
    """``outbox templates list`` and ``sync``: one row per cached template."""
    rows = [("SLUG", "VERSION", "VARIABLES", "LOOPS", "SYNCED", "CHANGE")]
    for template in cached:
        variables, loops = template.field_count()
        change = changes.get(template.slug, "")
        if not change and template.previous_version is not None:
            change = f"was version {template.previous_version} until {template.changed_at}"
        rows.append(
            (
                template.slug,
                str(template.version) if template.has_published_version else "unpublished",
                str(variables),
                str(loops),
                template.synced_at,
                change,
            )
        )
    return table(rows)


def sync_summary(synced: int, changes: Mapping[str, str], removed: int) -> str:
    counted = [
        f"{sum(1 for c in changes.values() if c == kind)} {kind}" for kind in TEMPLATE_CHANGES
    ]
    return f"synced {synced} templates ({', '.join(counted)}, {removed} removed)"


def sync_json(
    after: Sequence[CachedTemplate], changes: Mapping[str, str], removed: Sequence[str]
) -> str:
    return dumps(
        {
            "templates": [
                {**cached.to_public(), "change": changes[cached.slug]} for cached in after
            ],
            "removed": list(removed),
        }
    )
