"""Drop-folder result files: ``results/NAME.result.json`` once a job's entry is finished.

A finished entry's result is written again whenever one of its deliveries (a share link, an
email) changes, so the file ends up holding the link and whether the email went out.

A result file is written for every name a job was dropped under: the file that made the entry
(its ``source``) and, through alias marks, every later file with the same key. The marks are
empty files in ``results/.aliases/`` (``.alias-ENTRYID-NAME.json.alias``), so they survive
restarts and are shared by every watcher of the folder without a table of their own. They have
that folder to themselves because they are read whenever results are written: among the result
files, that read listed every result ever written, twice a second.

Which entries finished is read from the journal's change feed, from where the previous reader
(in any process) got to: the id of the last event handled is kept as a journal status fact.
"""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import platform
from .deliveries import Delivery
from .errors import EntryNotFound
from .files import folder_names, fsync_dir, own_subfolder, write_atomically
from .jobfiles import numbered, shown, side_name
from .models import Entry
from .outbox import Outbox

RESULTS = "results"
_RESULT_SUFFIX = ".result.json"
#: Marks in ``results/.aliases/`` that a job file maps to an entry made from another file (same
#: key): ``.alias-ENTRYID-NAME.json.alias``. Older versions kept them in ``results/`` itself.
ALIASES = ".aliases"
_ALIAS_PREFIX = ".alias-"
_ALIAS_SUFFIX = ".alias"
#: Status facts ``drop_folder:PATH`` hold how far each folder's results are written.
_FACT_PREFIX = "drop_folder:"


@dataclass(frozen=True)
class ResultWritten:
    """``results/NAME.result.json`` was written for a job file whose entry is terminal."""

    file: str
    entry: Entry
    path: Path

    def describe(self) -> str:
        return shown(f"result {self.file}: {self.entry.state.value}")


class ResultFiles:
    """The ``results/`` folder of the drop folder ``folder``, kept up to date from the journal.

    ``on_written`` is called with every :class:`ResultWritten`, in the thread doing the work.
    """

    def __init__(
        self, outbox: Outbox, folder: Path, on_written: Callable[[ResultWritten], None]
    ) -> None:
        self.outbox = outbox
        self.folder = folder
        self.on_written = on_written
        #: The id of the last journal event handled; None until read from the status fact.
        self._after: int | None = None
        self._marks_moved = False
        self._marked = False

    @property
    def status_name(self) -> str:
        """The journal status fact holding how far :meth:`catch_up` has read the changes."""
        return f"{_FACT_PREFIX}{self.folder}"

    def catch_up(self) -> list[ResultWritten]:
        """Write result files for entries that reached a terminal state since last time, and
        rewrite them (state ``pending``) for finished entries that were retried.

        Event ids only grow (the journal never hands one out twice, even after a purge deleted
        the newest events), so the id of the last event handled is all the reader must keep.
        """
        if not self._marks_moved:
            move_old_marks(self.folder)
            self._marks_moved = True
        after = self._read_up_to()
        written: list[ResultWritten] = []
        aliases: dict[str, list[str]] | None = None
        while True:
            events = self.outbox.events_after(after)
            if not events:
                break
            # Entries that finished, and finished entries that were retried: a result file
            # must never keep saying "failed" while the job is being rendered again.
            changed = dict.fromkeys(
                e.entry_id
                for e in events
                if e.to_state.is_terminal or (e.from_state is not None and e.from_state.is_terminal)
            )
            batch: list[ResultWritten] = []
            for entry_id in changed:
                try:
                    entry = self.outbox.get(entry_id)
                except EntryNotFound:
                    continue  # purged since
                if aliases is None:
                    aliases = self._aliases()
                for name in self._names_for(entry, aliases):
                    batch.append(self.write(name, entry))
            if batch:
                self.sync()
                written.extend(batch)
            after = self._after = events[-1].id
            self.outbox.set_status(self.status_name, {"results_after_event": after})
        return written

    def write(self, name: str, entry: Entry) -> ResultWritten:
        """Write (atomically) the result file for job file ``name``; :meth:`sync` makes it last."""
        path = self.path_for(name)
        payload = {
            "file": name,
            "entry_id": entry.id,
            "state": entry.state.value,
            "render_id": entry.render_id,
            "pdf_path": entry.pdf_path,
            "pdf_bytes": entry.pdf_bytes,
            "pdf_sha256": entry.pdf_sha256,
            "error": entry.error,
            "error_code": entry.error_code,
            "field_errors": entry.field_errors,
            "updated_at": entry.updated_at,
            "deliveries": [_delivery_result(d) for d in entry.deliveries],
        }
        names = folder_names(path.parent)
        with names.changed_by_us():
            write_atomically(path, json.dumps(payload, indent=2, ensure_ascii=False) + "\n")
        names.add(path.name)
        written = ResultWritten(name, entry, path)
        self.on_written(written)
        return written

    def path_for(self, name: str) -> Path:
        """Where the result of job file ``name`` goes: ``results/NAME.result.json``, with the
        name made valid on every system (``CON.json`` -> ``CON_.result.json``).

        Two job names can map to one result name (``a:b.json`` and ``a_b.json``, or
        ``Job.json`` and ``job.json``, one file on Windows and macOS): a result file already
        there for another job file (its ``"file"`` says which) keeps its name, and this one
        becomes ``NAME.2.result.json``, ``NAME.3.result.json``...
        """
        results = own_subfolder(self.folder, RESULTS)
        taken = folder_names(results)
        for attempt in itertools.count(1):
            candidate = side_name(numbered(name, attempt), _RESULT_SUFFIX)
            if taken.in_another_case(candidate):
                continue
            owner = _result_owner(results / candidate)
            if owner is None or owner == name:
                return results / candidate
        raise AssertionError("unreachable")  # pragma: no cover

    def mark_alias(self, entry_id: str, name: str) -> None:
        """Remember that ``name`` is answered by ``entry_id`` (made from another file)."""
        marks = own_subfolder(own_subfolder(self.folder, RESULTS), ALIASES)
        self._marked = True
        fd = os.open(
            marks / f"{_ALIAS_PREFIX}{entry_id}-{name}{_ALIAS_SUFFIX}",
            os.O_WRONLY | os.O_CREAT | platform.BINARY,
            0o666,
        )
        os.close(fd)

    def sync(self) -> None:
        """Make the result files and marks written so far durable."""
        fsync_dir(self.folder / RESULTS)
        if self._marked:
            fsync_dir(self.folder / RESULTS / ALIASES)
            self._marked = False

    def _read_up_to(self) -> int:
        if self._after is None:
            fact = self.outbox.status().get(self.status_name)
            self._after = int(fact.get("results_after_event", 0)) if isinstance(fact, dict) else 0
        return self._after

    def _aliases(self) -> dict[str, list[str]]:
        return aliases_in(self.folder)

    def _names_for(self, entry: Entry, aliases: dict[str, list[str]]) -> list[str]:
        names: list[str] = []
        if entry.source and os.path.dirname(entry.source) == str(self.folder):
            names.append(os.path.basename(entry.source))
        names.extend(name for name in aliases.get(entry.id, []) if name not in names)
        return names


def _delivery_result(delivery: Delivery) -> dict[str, Any]:
    """A delivery as a result file shows it: what it is, how it stands, the link."""
    return {
        "id": delivery.id,
        "channel": delivery.channel,
        "to": delivery.to,
        "state": delivery.state.value,
        "share_url": delivery.share_url,
        "share_id": delivery.share_id,
        "email_message_id": delivery.email_message_id,
        "sent_at": delivery.sent_at,
        "expires_at": delivery.expires_at,
        "revoked_at": delivery.revoked_at,
        "error": delivery.error,
        "error_code": delivery.error_code,
    }


def _result_owner(path: Path) -> str | None:
    """The job file name a result file at ``path`` answers; None if there is no file there, and
    ``""`` if it is not a result file outbox wrote (so it is never overwritten)."""
    try:
        content = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError:
        return ""
    try:
        document = json.loads(content)
    except ValueError:
        return ""
    owner = document.get("file") if isinstance(document, dict) else None
    return owner if isinstance(owner, str) else ""


def aliases_in(folder: Path) -> dict[str, list[str]]:
    """The alias marks of the drop folder ``folder``: entry id -> job file names."""
    found: dict[str, list[str]] = {}
    try:
        names = os.listdir(folder / RESULTS / ALIASES)
    except (FileNotFoundError, NotADirectoryError):
        return found
    for marker in sorted(names):
        if marker.startswith(_ALIAS_PREFIX) and marker.endswith(_ALIAS_SUFFIX):
            middle = marker[len(_ALIAS_PREFIX) : -len(_ALIAS_SUFFIX)]
            entry_id, _, name = middle.partition("-")
            found.setdefault(entry_id, []).append(name)
    return found


def move_old_marks(folder: Path) -> None:
    """Move the alias marks an older version left in ``folder/results/`` into
    ``results/.aliases/``, where they are read from now. Each is renamed on its own,
    so a crash halfway leaves every mark in one place or the other, and the next call moves the
    rest (a mark is an empty file: one in both places is one mark)."""
    results = folder / RESULTS
    try:
        old = [
            name
            for name in os.listdir(results)
            if name.startswith(_ALIAS_PREFIX) and name.endswith(_ALIAS_SUFFIX)
        ]
    except (FileNotFoundError, NotADirectoryError):
        return
    if not old:
        return
    marks = own_subfolder(results, ALIASES)
    names = folder_names(results)
    for name in old:
        with names.changed_by_us():
            platform.replace(results / name, marks / name)
        names.remove(name)
    fsync_dir(marks)
    fsync_dir(results)


def results_owed(outbox: Outbox) -> tuple[Callable[[str, str | None, int], bool], list[str]]:
    """What ``purge`` must keep: ``(owed, aliased_ids)``, where ``owed(entry_id, source,
    last_event_id)`` says whether a drop folder still owes that entry's job a result file.

    A folder's results are written up to the last event its reader handled (the status fact
    ``drop_folder:PATH``); an entry whose last change is beyond that — or made from a folder
    whose results were never written — keeps its row until the result file is written.
    """
    facts = outbox.status()
    handled: dict[str, int] = {}
    for name, value in facts.items():
        if name.startswith(_FACT_PREFIX) and isinstance(value, dict):
            after = value.get("results_after_event")
            handled[name[len(_FACT_PREFIX) :]] = after if isinstance(after, int) else 0
    aliased: dict[str, list[str]] = {}
    for folder in handled:
        move_old_marks(Path(folder))
        for entry_id in aliases_in(Path(folder)):
            aliased.setdefault(entry_id, []).append(folder)

    def owed(entry_id: str, source: str | None, last_event: int) -> bool:
        folders = list(aliased.get(entry_id, []))
        if source:
            folders.append(os.path.dirname(source))
        return any(last_event > handled.get(folder, 0) for folder in folders)

    return owed, list(aliased)
