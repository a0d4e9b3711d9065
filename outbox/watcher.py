"""The drop folder: JSON job files dropped into a folder become journal entries.

Apps that only speak files write ``{"template": "slug", "data": {...}}`` into a folder, ideally
as ``NAME.json.tmp`` renamed to ``NAME.json`` once complete. :class:`DropFolder` enqueues every
complete job file and moves it to ``accepted/``; an invalid one goes to ``rejected/`` with
``NAME.error.txt`` saying what is wrong; and once an entry reaches a terminal state,
``results/NAME.result.json`` tells the app how it ended.

The pieces: :mod:`outbox.jobfiles` parses a job file and derives its key (pure),
:mod:`outbox.files` moves files without overwriting anything, :mod:`outbox.resultfiles` writes
the result files; this module finds the files, decides when each is complete, and runs the loop.

Crash safety comes from the order of the steps: the entries are committed first and the files
moved second, and a file without a ``key`` gets one derived from its content, so a file
processed again after a crash maps to the entry it already made. Moves never overwrite anything:
a hard link claims the destination name atomically, and the original goes only once the
destination holds the very file that was read.

Completeness: a file that parses as a complete JSON document and keeps its size and mtime over a
short re-check is complete; one that does not parse is declared invalid only after it has stayed
unchanged for ``settle`` seconds, so slow writers are never read half-way.

In a long-running process (this is what ``outbox watch`` does)::

    stop = threading.Event()
    drop = DropFolder(ob, "jobs/")
    threading.Thread(target=drop.run, args=(stop,), name="drop-folder").start()
    ...
    stop.set()  # run() returns within a fraction of a second
"""

from __future__ import annotations

import errno
import functools
import logging
import os
import stat
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import watchfiles

from . import platform
from .clock import Clock
from .errors import InvalidArgument, JournalError
from .files import (
    LinkedFolder,
    check_subfolder,
    claim,
    fsync_dir,
    identity,
    move_without_overwriting,
    release,
    write_atomically,
)
from .jobfiles import (
    derive_key,
    is_job_name,
    job_from_document,
    name_problem,
    numbered,
    parse,
    shown,
    side_name,
    size_problem,
)
from .logs import fields
from .models import Entry, RenderRequest
from .outbox import Outbox
from .resultfiles import RESULTS, ResultFiles, ResultWritten
from .worker import Supervisor, fact_name

log = logging.getLogger(__name__)

MiB = 1024 * 1024
DEFAULT_MAX_BYTES = 10 * MiB

ACCEPTED = "accepted"
REJECTED = "rejected"
#: Files per journal transaction, and bytes of job files held in memory at once.
BATCH_FILES = 1000
BATCH_BYTES = 64 * MiB

_ERROR_SUFFIX = ".error.txt"

#: device, inode, size, mtime in nanoseconds: what "unchanged" means for a file.
Signature = tuple[int, int, int, int]


# -- outcomes --------------------------------------------------------------------------


@dataclass(frozen=True)
class Accepted:
    """A job file that is an entry now; ``known`` when an earlier drop already made it."""

    file: str
    entry: Entry
    known: bool
    moved_to: Path

    def describe(self) -> str:
        note = " (already enqueued)" if self.known else ""
        return shown(f"accepted {self.file} -> entry {self.entry.id}{note}")


@dataclass(frozen=True)
class Rejected:
    """A job file moved to ``rejected/``; ``reason`` is what ``NAME.error.txt`` says.

    ``field_errors`` holds Craftkit's ``fieldErrors`` when the cached template refused the data.
    """

    file: str
    reason: str
    moved_to: Path
    field_errors: dict[str, list[str]] | None = None

    def describe(self) -> str:
        """One line: the reason's first line (data problems list their fields below it)."""
        return shown(f"rejected {self.file}: {self.reason.splitlines()[0]}")


Outcome = Accepted | Rejected | ResultWritten


@dataclass
class ScanReport:
    """What one :meth:`DropFolder.scan` did; ``waiting`` lists files not complete yet."""

    accepted: list[Accepted] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    waiting: list[str] = field(default_factory=list)


# -- internal records ------------------------------------------------------------------

_Kind = Literal["job", "invalid", "unparsed", "bad", "changing", "gone"]


@dataclass
class _Look:
    """One file as a scan found it.

    ``job``: complete-looking and valid; ``invalid``: parses but is not a valid job;
    ``unparsed``: does not parse (yet); ``bad``: rejected at once (wrong kind of file, too
    large, bad name); ``changing``: changed while being read; ``gone``: vanished.
    """

    name: str
    signature: Signature
    kind: _Kind
    problem: str | None = None
    request: RenderRequest | None = None
    field_errors: dict[str, list[str]] | None = None


@dataclass
class _Sighting:
    signature: Signature
    #: Monotonic time this signature was first seen.
    since: float
    #: Why the content did not parse, kept so an unchanged file is not read again.
    problem: str | None = None


class DropFolder:
    """Turns the JSON job files in ``folder`` into entries of ``outbox``'s journal.

    Use :meth:`run` in a thread (or the ``outbox watch`` command), or call :meth:`scan` and
    :meth:`write_results` yourself. One instance is meant for one thread; several instances, in
    one process or many, may work on the same folder at once without double entries.

    ``on_outcome`` is called with every :class:`Accepted`, :class:`Rejected` and
    :class:`ResultWritten`, in the thread doing the work. ``after_enqueue`` is called with the
    entries of each batch after they are committed and before their files are moved; it exists
    for instrumentation and for crash tests, which stop the process exactly there.

    ``settle``, ``recheck``, ``rescan_interval`` and ``tick`` (seconds) override the outbox's
    :class:`~outbox.schedule.Schedule` (``drop_settle`` ...) for this folder.
    """

    def __init__(
        self,
        outbox: Outbox,
        folder: str | os.PathLike[str],
        *,
        max_bytes: int = DEFAULT_MAX_BYTES,
        settle: float | None = None,
        recheck: float | None = None,
        rescan_interval: float | None = None,
        tick: float | None = None,
        clock: Clock | None = None,
        on_outcome: Callable[[Outcome], None] | None = None,
        after_enqueue: Callable[[list[Entry]], None] | None = None,
    ) -> None:
        path = Path(folder).expanduser().resolve()
        if not path.is_dir():
            raise InvalidArgument(f"the drop folder {path} does not exist or is not a folder")
        try:
            _check_subfolders(path)
        except LinkedFolder as exc:
            raise InvalidArgument(f"the drop folder cannot be used: {exc}") from None
        self.outbox = outbox
        self.folder = path
        self.max_bytes = max_bytes
        self.schedule = schedule = outbox.settings.schedule
        self._beat: Callable[[], None] = _nothing
        self.settle = schedule.drop_settle if settle is None else settle
        self.recheck = schedule.drop_recheck if recheck is None else recheck
        self.rescan_interval = schedule.drop_rescan if rescan_interval is None else rescan_interval
        self.tick = schedule.drop_tick if tick is None else tick
        self.clock = clock or outbox.clock
        self.on_outcome = on_outcome
        self.after_enqueue = after_enqueue
        self._sightings: dict[str, _Sighting] = {}
        #: Monotonic time at which a waiting file may be decidable; None if nothing waits.
        self._wake_at: float | None = None
        self._stop = threading.Event()
        self._results = ResultFiles(outbox, path, self._tell)
        #: The problem last logged per activity, so a lasting one is logged once.
        self._complaints: dict[str, str] = {}

    def __repr__(self) -> str:
        return f"<DropFolder {str(self.folder)!r}>"

    @property
    def status_name(self) -> str:
        """The journal status fact holding how far :meth:`write_results` has read the changes."""
        return self._results.status_name

    # -- scanning ------------------------------------------------------------------------

    def scan(self) -> ScanReport:
        """Process every complete job file in the folder now; leave the others for later.

        Raises :class:`~outbox.errors.JournalError` if the journal cannot take the entries;
        the files then stay where they are for the next scan.
        """
        report = ScanReport()
        self._wake_at = None
        _check_subfolders(self.folder)  # before anything is enqueued: files then wait in place
        found: list[tuple[str, os.stat_result]] = []
        with os.scandir(self.folder) as listing:
            for item in listing:
                if is_job_name(item.name):
                    try:
                        found.append((item.name, item.stat(follow_symlinks=False)))
                    except FileNotFoundError:
                        continue
        present = {name for name, _ in found}
        for name in list(self._sightings):
            if name not in present:
                del self._sightings[name]
        found.sort(key=lambda pair: (pair[1].st_mtime_ns, pair[0]))
        for batch in _batches(found):
            if self._stop.is_set():
                break
            self._process(batch, report)
        return report

    def _process(self, batch: Sequence[tuple[str, os.stat_result]], report: ScanReport) -> None:
        looks = [self._inspect(name, st) for name, st in batch]
        now = self.clock.monotonic()
        ready: list[_Look] = []
        unconfirmed: list[_Look] = []
        for look in looks:
            if look.kind == "gone":
                continue
            quiet = self._sighted(look, now)
            if look.kind == "bad":
                ready.append(look)
            elif look.kind == "changing":
                self._wait_for(look.name, now + self.recheck, report)
            elif look.kind == "unparsed":
                if quiet >= self.settle:
                    ready.append(look)
                else:
                    self._wait_for(look.name, now - quiet + self.settle, report)
            elif quiet >= self.recheck:
                ready.append(look)
            else:
                unconfirmed.append(look)
        if unconfirmed:
            if self.clock.wait(self._stop, self.recheck):
                return
            for look in unconfirmed:
                if _signature_at(self.folder / look.name) == look.signature:
                    ready.append(look)
                else:
                    self._wait_for(look.name, self.clock.monotonic() + self.recheck, report)
        # Rejections first: they need no journal, so a busy journal does not hold them up.
        for look in ready:
            if look.kind != "job":
                self._reject(look, report)
        self._accept([look for look in ready if look.kind == "job"], report)

    def _sighted(self, look: _Look, now: float) -> float:
        """Record seeing the file; return for how long it has looked exactly like this."""
        sighting = self._sightings.get(look.name)
        if sighting is None or sighting.signature != look.signature:
            sighting = self._sightings[look.name] = _Sighting(look.signature, now)
        sighting.problem = look.problem if look.kind == "unparsed" else None
        return now - sighting.since

    def _wait_for(self, name: str, when: float, report: ScanReport) -> None:
        report.waiting.append(name)
        self._wake_at = when if self._wake_at is None else min(self._wake_at, when)
        log.debug("%s is not complete yet", shown(name))

    def _inspect(self, name: str, st: os.stat_result) -> _Look:
        signature = _signature(st)
        path = self.folder / name
        problem = name_problem(name)
        if problem is None:
            problem = _kind_problem(path, st)
        if problem is None and st.st_size > self.max_bytes:
            problem = size_problem(st.st_size, self.max_bytes)
        if problem is not None:
            return _Look(name, signature, "bad", problem)
        sighting = self._sightings.get(name)
        if sighting is not None and sighting.signature == signature and sighting.problem:
            return _Look(name, signature, "unparsed", sighting.problem)
        try:
            content, signature = self._read(path)
        except FileNotFoundError:
            return _Look(name, signature, "gone")
        except _Unstable:
            return _Look(name, signature, "changing")
        except OSError as exc:
            return _Look(name, signature, "unparsed", f"the file cannot be read: {exc.strerror}")
        if signature[2] > self.max_bytes:
            return _Look(name, signature, "bad", size_problem(signature[2], self.max_bytes))
        problem, document = parse(content)
        if problem is not None:
            return _Look(name, signature, "unparsed", problem)
        try:
            request = self._request(name, document)
        except InvalidArgument as exc:
            field_errors = getattr(exc, "field_errors", None)
            return _Look(name, signature, "invalid", str(exc), field_errors=field_errors)
        return _Look(name, signature, "job", request=request)

    def _read(self, path: Path) -> tuple[bytes, Signature]:
        """The file's bytes and its signature as read; never follows a link, never blocks."""
        flags = os.O_RDONLY | platform.BINARY | platform.NO_FOLLOW | platform.NO_BLOCK
        try:
            fd = os.open(path, flags | platform.CLOSE_ON_EXEC)
        except OSError as exc:
            if exc.errno == errno.ELOOP:  # swapped for a link since it was listed
                raise _Unstable from exc
            raise
        try:
            before = os.fstat(fd)
            if not stat.S_ISREG(before.st_mode):
                raise _Unstable
            chunks: list[bytes] = []
            size = 0
            while size <= self.max_bytes:
                chunk = os.read(fd, min(MiB, self.max_bytes + 1 - size))
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
            after = _signature(os.fstat(fd))
        finally:
            os.close(fd)
        if size > self.max_bytes:
            return b"", (after[0], after[1], max(size, after[2]), after[3])
        if after != _signature(before) or size != after[2]:
            raise _Unstable
        return b"".join(chunks), after

    def _request(self, name: str, document: object) -> RenderRequest:
        """The render request a parsed job file asks for; InvalidArgument says what is wrong."""
        job = job_from_document(document)
        return self.outbox.prepare(
            job.template,
            job.data,
            key=job.key,
            filename=job.filename,
            version=job.version,
            source=str(self.folder / name),
            share=job.share,
            email=job.email,
        )

    # -- accepting and rejecting ---------------------------------------------------------

    def _accept(self, looks: list[_Look], report: ScanReport) -> None:
        if not looks:
            return
        requests = [look.request for look in looks if look.request is not None]
        known = {r.key for r in requests if r.key and self.outbox.find_by_key(r.key) is not None}
        outcomes = self._enqueue(requests)
        if self.after_enqueue is not None:
            self.after_enqueue([o for o in outcomes if isinstance(o, Entry)])
        # Power-cut order: the entries are committed (durably) above; every file gets its name in
        # accepted/ (and its result or alias mark, if any), those names are fsynced, and only
        # then are the originals removed. One fsync per folder covers the whole batch.
        claimed: list[tuple[_Look, RenderRequest, Entry, Path]] = []
        marked = False
        for look, request, outcome in zip(looks, requests, outcomes, strict=True):
            if isinstance(outcome, str):
                self._reject(look, report, outcome)
                continue
            if outcome.source != request.source:
                self._results.mark_alias(outcome.id, look.name)
                marked = True
            target = claim(
                self.folder / look.name,
                look.signature[:2],
                self.folder / ACCEPTED,
                functools.partial(numbered, look.name),
            )
            self._sightings.pop(look.name, None)
            if target is None:
                log.debug("%s was moved or replaced by someone else", shown(look.name))
                continue
            if outcome.state.is_terminal:
                self._results.write(look.name, outcome)
                marked = True
            claimed.append((look, request, outcome, target))
        if marked:
            self._results.sync()
        if claimed:
            fsync_dir(self.folder / ACCEPTED)
        for look, request, outcome, target in claimed:
            release(self.folder / look.name, look.signature[:2])
            again = request.key in known or outcome.source != request.source
            accepted = Accepted(look.name, outcome, again, target)
            report.accepted.append(accepted)
            self._tell(accepted)

    def _enqueue(self, requests: list[RenderRequest]) -> list[Entry | str]:
        """Enqueue in one transaction; if one request breaks it, enqueue one by one.

        A journal that cannot be written (busy, full) raises: every file waits for next time.
        Any other error belongs to one request, which is then rejected with it: a key that
        already holds another request (:class:`~outbox.errors.KeyConflict`), say.
        """
        try:
            return list(self.outbox.enqueue_many(requests))
        except JournalError:
            raise
        except Exception:
            log.debug("a batch failed to enqueue; enqueueing one by one", exc_info=True)
        results: list[Entry | str] = []
        for request in requests:
            try:
                results.append(self.outbox.enqueue_many([request])[0])
            except JournalError:
                raise
            except InvalidArgument as exc:
                results.append(str(exc))
            except Exception as exc:
                results.append(f"the request cannot be saved in the journal: {exc}")
        return results

    def _reject(self, look: _Look, report: ScanReport, reason: str | None = None) -> None:
        problem = reason or look.problem or "it is not a valid job file"
        field_errors = None if reason else look.field_errors

        def explain(destination: Path) -> None:
            write_atomically(
                destination.with_name(side_name(destination.name, _ERROR_SUFFIX)),
                f"{look.name}: {problem}\n",
            )

        moved = self._move(look, REJECTED, explain)
        self._sightings.pop(look.name, None)
        if moved is None:
            return
        rejected = Rejected(look.name, problem, moved, field_errors)
        report.rejected.append(rejected)
        self._tell(rejected)

    def _move(
        self,
        look: _Look,
        subfolder: str,
        before_release: Callable[[Path], None] | None = None,
    ) -> Path | None:
        """Move the file that was read to ``subfolder`` under a free name; never overwrite.

        Returns None if the file vanished or was replaced by another one since it was read.
        ``before_release`` runs once the destination holds the file and before the original
        name is freed (see :func:`~outbox.files.move_without_overwriting`).
        """
        return move_without_overwriting(
            self.folder / look.name,
            look.signature[:2],
            self.folder / subfolder,
            lambda attempt: numbered(look.name, attempt),
            before_release,
        )

    # -- results -------------------------------------------------------------------------

    def write_results(self) -> list[ResultWritten]:
        """Write result files for folder entries that reached a terminal state since last time,
        and rewrite them (state ``pending``) for finished entries that were retried.

        Reads the journal's change feed from where the previous call (in any process) got to,
        so changes made by other processes and while no watcher ran are picked up too.
        """
        return self._results.catch_up()

    # -- running -------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Scan, write results and watch the folder until ``stop`` is set.

        Files already present are processed first. Then every change in the folder triggers a
        scan, a full rescan runs every ``rescan_interval`` seconds as a safety net, and finished
        entries are looked for every ``tick`` seconds. Errors are logged and never end the loop.
        While it runs, the journal holds its worker fact (``watch FOLDER``, renewed every
        ``Schedule.heartbeat`` seconds), so ``outbox status`` and ``doctor`` see it.
        """
        name = fact_name()
        journal = self.outbox.journal

        def record(fact: dict[str, Any] | None) -> None:
            if fact is None:
                journal.forget_status(name)
            else:
                journal.set_status(name, fact)

        supervisor = Supervisor(
            self._run,
            clock=self.clock,
            backoff=self.schedule.worker_restart,
            record=record,
            kind=f"watch {self.folder}",
            heartbeat=self.schedule.heartbeat,
        )
        self._beat = supervisor.beat
        try:
            supervisor.run(stop)
        finally:
            self._beat = _nothing

    def _run(self, stop: threading.Event) -> None:
        self._stop = stop
        log.info("watching the drop folder %s", self.folder)
        self._guarded("scan", self.scan)
        self._guarded("results", self.write_results)
        while not stop.is_set():
            try:
                self._watch(stop)
            except Exception as exc:
                self._complain(
                    "watch",
                    f"cannot watch {self.folder} ({exc}); trying again every {self.tick:g} s",
                )
                self.clock.wait(stop, self.tick)
                self._guarded("scan", self.scan)
                self._guarded("results", self.write_results)
            else:
                self._complaints.pop("watch", None)
        log.info("stopped watching the drop folder %s", self.folder)

    def _watch(self, stop: threading.Event) -> None:
        """Scan on changes until ``stop``; return early if the folder is replaced or removed."""
        folder_identity = identity(self.folder)
        # Rescan once the watcher listens: a file dropped just before would be missed otherwise.
        next_scan = self.clock.monotonic()
        for changes in watchfiles.watch(
            self.folder,
            watch_filter=_is_job_change,
            stop_event=stop,
            recursive=False,
            debounce=self.schedule.drop_debounce_ms,
            step=self.schedule.drop_step_ms,
            rust_timeout=max(1, int(self.tick * 1000)),
            yield_on_timeout=True,
            raise_interrupt=False,
        ):
            if stop.is_set():
                return
            self._beat()
            if identity(self.folder) != folder_identity:
                # Deleted or replaced: the file-system watch on the old folder hears nothing.
                log.info("the drop folder %s was replaced; watching it anew", self.folder)
                return
            now = self.clock.monotonic()
            due = self._wake_at is not None and now >= self._wake_at
            if changes or due or now >= next_scan:
                self._guarded("scan", self.scan)
                next_scan = self.clock.monotonic() + self.rescan_interval
            self._guarded("results", self.write_results)

    def _guarded(self, activity: str, action: Callable[[], object]) -> None:
        """Run ``action``; log what goes wrong and carry on, whatever it was."""
        try:
            action()
        except JournalError as exc:
            self._complain(activity, f"{exc}; files wait in {self.folder} until it works again")
        except OSError as exc:
            self._complain(activity, f"drop folder {self.folder}: {exc}")
        except Exception:
            log.exception("drop folder %s: unexpected error; carrying on", self.folder)
        else:
            self._complaints.pop(activity, None)

    def _complain(self, activity: str, message: str) -> None:
        """Log a problem once, not on every tick while it lasts."""
        if self._complaints.get(activity) != message:
            log.warning("%s", message)
        self._complaints[activity] = message

    def _tell(self, outcome: Outcome) -> None:
        if isinstance(outcome, Accepted):
            facts = fields(event="accepted", file=outcome.file, entry_id=outcome.entry.id)
        elif isinstance(outcome, Rejected):
            facts = fields(event="file_rejected", file=outcome.file, reason=outcome.reason)
        else:
            facts = fields(
                event="result_written",
                file=outcome.file,
                entry_id=outcome.entry.id,
                state=outcome.entry.state.value,
            )
        log.info("%s", outcome.describe(), extra=facts)
        if self.on_outcome is not None:
            self.on_outcome(outcome)


# -- reading files ---------------------------------------------------------------------


def _check_subfolders(folder: Path) -> None:
    """Refuse (:class:`~outbox.files.LinkedFolder`) if ``accepted/``, ``rejected/`` or
    ``results/`` is a symbolic link or not a folder: nothing is written through a link."""
    for name in (ACCEPTED, REJECTED, RESULTS):
        check_subfolder(folder, name)


class _Unstable(Exception):
    """The file changed (or changed kind) while it was being read."""


def _kind_problem(path: Path, st: os.stat_result) -> str | None:
    mode = st.st_mode
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISLNK(mode):
        try:
            target = os.readlink(path)
        except OSError:
            target = "?"
        return (
            f"it is a symbolic link (to {target}); a job file must be a regular file, and links "
            "are never followed"
        )
    if stat.S_ISDIR(mode):
        return "it is a folder, not a job file"
    return "it is not a regular file (a pipe, socket or device); a job file must be a regular file"


# -- file-system helpers ---------------------------------------------------------------


def _is_job_change(change: watchfiles.Change, path: str) -> bool:
    return change is not watchfiles.Change.deleted and is_job_name(os.path.basename(path))


def _batches(
    found: list[tuple[str, os.stat_result]],
) -> list[list[tuple[str, os.stat_result]]]:
    """Split the files into batches that bound the transaction and the memory held."""
    batches: list[list[tuple[str, os.stat_result]]] = []
    current: list[tuple[str, os.stat_result]] = []
    size = 0
    for name, st in found:
        if current and (len(current) >= BATCH_FILES or size + st.st_size > BATCH_BYTES):
            batches.append(current)
            current, size = [], 0
        current.append((name, st))
        size += st.st_size
    if current:
        batches.append(current)
    return batches


def _signature(st: os.stat_result) -> Signature:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def _signature_at(path: Path) -> Signature | None:
    try:
        return _signature(os.lstat(path))
    except OSError:
        return None


__all__ = [
    "ACCEPTED",
    "DEFAULT_MAX_BYTES",
    "REJECTED",
    "RESULTS",
    "Accepted",
    "DropFolder",
    "Outcome",
    "Rejected",
    "ResultWritten",
    "ScanReport",
    "derive_key",
]


def _nothing() -> None:
    pass
