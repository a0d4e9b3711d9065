"""What outbox tells a log: one line per outcome, from the journal's change events.

The library logs through :mod:`logging` under ``outbox.*`` and prints nothing itself (the
package installs a ``NullHandler``, so an app that configures no logging sees nothing, not
even warnings). Levels follow who needs to read a line:

- ``INFO`` on ``outbox.activity``: one line per outcome (``done``, ``rejected``, ``failed``,
  ``cancelled``), and on ``outbox.gate`` the network's transitions (offline, online, key
  refused, server trouble, rate limit): what an operator's log holds by default.
- ``DEBUG``: outbox's own decisions — claims, schedules, retries, every other state change.
- ``DEBUG`` on ``outbox.http``: each request and answer (paths only: never a key, never a
  public download URL's secret part).

Each record carries its facts as ``record.outbox`` (a dict), which :class:`JsonFormatter`
puts beside the message for log collectors (journald, Loki). :func:`configure` is for
command-line programs; libraries and apps keep their own logging set-up.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal, TextIO

from .errors import EntryNotFound
from .models import Event, State

if TYPE_CHECKING:
    from .store import Journal

#: Outcome lines: one per entry that finished (or changed state, at DEBUG).
ACTIVITY = logging.getLogger("outbox.activity")
#: Requests and answers, at DEBUG.
HTTP = logging.getLogger("outbox.http")
#: The network's transitions (offline, online again, key refused, rate limited, server trouble).
GATE = logging.getLogger("outbox.gate")

LogFormat = Literal["text", "json"]
LOG_FORMATS: tuple[LogFormat, ...] = ("text", "json")

#: The outcome word and level of each state an entry can finish in.
_FINISHED = {
    State.DONE: logging.INFO,
    State.REJECTED: logging.WARNING,
    State.FAILED: logging.WARNING,
    State.CANCELLED: logging.INFO,
}


def fields(**facts: Any) -> dict[str, Any]:
    """``extra=`` for a log call: the facts a JSON log shows beside the message."""
    return {"outbox": {name: value for name, value in facts.items() if value is not None}}


class ActivityLog:
    """A change listener (:meth:`Journal.add_listener`) that logs every outcome.

    It runs in the thread that made the change, so its lines are right whoever made the change
    in this process: ``flush``, a background worker, a drop folder, a person's ``retry``. It
    reads the entry only when a line will be written.
    """

    def __init__(self, journal: Journal) -> None:
        self.journal = journal

    def __call__(self, event: Event) -> None:
        level = _FINISHED.get(event.to_state, logging.DEBUG)
        if event.from_state == event.to_state and event.detail is None:
            return
        if not ACTIVITY.isEnabledFor(level):
            return
        try:
            entry = self.journal.get(event.entry_id)
        except EntryNotFound:
            return
        facts: dict[str, Any] = {
            "event": event.to_state.value if level != logging.DEBUG else "change",
            "entry_id": entry.id,
            "template": entry.template,
            "key": entry.key,
            "state": event.to_state.value,
            "event_id": event.id,
        }
        if event.to_state is State.DONE:
            facts |= {"pdf_path": entry.pdf_path, "pdf_bytes": entry.pdf_bytes}
            ACTIVITY.log(
                level,
                "done      %s  %s  %s  %s bytes",
                entry.id,
                entry.template,
                entry.pdf_path,
                entry.pdf_bytes,
                extra=fields(**facts),
            )
        elif event.to_state in (State.REJECTED, State.FAILED):
            code = entry.error_code or event.error_code or "error"
            facts |= {
                "error_code": code,
                "error": entry.error,
                "field_errors": entry.field_errors,
                "http_status": event.http_status,
            }
            where = "".join(
                f"; {name}: {'; '.join(messages)}"
                for name, messages in (entry.field_errors or {}).items()
            )
            ACTIVITY.log(
                level,
                "%-9s %s  %s  %s: %s%s",
                event.to_state.value,
                entry.id,
                entry.template,
                code,
                entry.error,
                where,
                extra=fields(**facts),
            )
        elif event.to_state is State.CANCELLED:
            ACTIVITY.log(level, "cancelled %s  %s", entry.id, entry.template, extra=fields(**facts))
        else:
            was = event.from_state.value if event.from_state else "new"
            facts |= {"from_state": was, "detail": event.detail}
            ACTIVITY.debug(
                "%s  %s  %s -> %s%s",
                entry.id,
                entry.template,
                was,
                event.to_state.value,
                f": {event.detail}" if event.detail else "",
                extra=fields(**facts),
            )


# -- formatting, for programs --------------------------------------------------------------


class TextFormatter(logging.Formatter):
    """One line a person reads: the message, with ``warning:``/``error:`` before problems
    that are not outcome lines (an outcome line starts with its own word: ``rejected``,
    ``offline``...), no timestamp (journald and terminals have their own), and a traceback
    only for unexpected errors."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        facts = getattr(record, "outbox", None)
        outcome = isinstance(facts, Mapping) and "event" in facts
        if record.levelno >= logging.WARNING and not outcome:
            message = f"{record.levelname.lower()}: {message}"
        if record.exc_info:
            message += "\n" + self.formatException(record.exc_info)
        return message


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``time`` (UTC), ``level``, ``logger``, ``message`` and the
    record's facts (``entry_id``, ``pdf_path``, ``error_code``...)."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")
        document: dict[str, Any] = {
            "time": stamp.replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        facts = getattr(record, "outbox", None)
        if isinstance(facts, Mapping):
            document.update(facts)
        if record.exc_info:
            document["exception"] = self.formatException(record.exc_info)
        return json.dumps(document, ensure_ascii=False, default=str)


class _StderrHandler(logging.StreamHandler[TextIO]):
    """Writes to whatever ``sys.stderr`` is when a record comes (a test runner may swap it)."""

    def __init__(self) -> None:
        super().__init__()

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, value: TextIO) -> None:
        pass

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        # On a terminal, a line replaces the live progress line that ``flush`` draws.
        return "\r\033[K" + text if self.stream.isatty() else text


def reset() -> None:
    """Undo :func:`configure`: outbox's loggers back to their defaults, its handler gone."""
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, _StderrHandler)]:
        root.removeHandler(handler)
    for name in ("outbox", ACTIVITY.name, HTTP.name, GATE.name, "httpx", "httpcore"):
        logging.getLogger(name).setLevel(logging.NOTSET)


def configure(
    verbosity: int = 0,
    log_format: LogFormat = "text",
    *,
    outcomes: bool = True,
    quiet: bool = False,
) -> None:
    """Send outbox's log to stderr, for a command-line program.

    ``verbosity`` 0: outcomes and network transitions (warnings and errors only unless
    ``outcomes``); 1: also outbox's decisions; 2: also every HTTP request. ``quiet``:
    warnings and errors only. Configuring again replaces the earlier set-up (so a program
    may call this once per command).
    """
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, _StderrHandler)]:
        root.removeHandler(handler)
    handler = _StderrHandler()
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    root.addHandler(handler)
    root.setLevel(logging.WARNING)
    if quiet or (verbosity < 1 and not outcomes):
        outbox_level = logging.WARNING
    else:
        outbox_level = logging.INFO if verbosity < 1 else logging.DEBUG
    logging.getLogger("outbox").setLevel(outbox_level)
    # Quiet: a rejected or failed entry is a problem the program lists itself, not a log line.
    ACTIVITY.setLevel(logging.ERROR if quiet else logging.NOTSET)
    # The network's transitions belong to the outcome log: a one-shot command (share, templates
    # sync) says what went wrong in its own error, and a quiet flush lists only problems.
    shown = (outcomes and not quiet) or verbosity >= 1
    GATE.setLevel(logging.NOTSET if shown else logging.CRITICAL + 1)
    HTTP.setLevel(logging.DEBUG if verbosity >= 2 and not quiet else logging.WARNING)
    # httpx logs every URL at INFO, and a PDF's public downloadUrl is not for the logs.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)
