"""The dashboard as a WSGI application: one page, a small JSON API, a live event stream, PDFs.

Mount it in any WSGI host (or behind an ASGI adapter) with :class:`DashboardApp`; ``outbox
dashboard`` and :meth:`outbox.Outbox.dashboard` serve it with the standard library's server.
Every request passes the :class:`~outbox.dashboard.guard.Guard` first.

Routes (relative to where it is mounted)::

    GET  /                          the page (``?token=`` once: sets the cookie, redirects)
    GET  /static/NAME               the page's script, style sheet and icon
    GET  /api/summary               counts per state and the facts ``outbox status`` shows
    GET  /api/entries               one page: ?state= &template= &q=KEY-PREFIX &after= &limit=
    GET  /api/entries/ID            one entry with its history, in plain words
    GET  /api/rows?ids=A,B          table rows of a few entries (to update them in place)
    GET  /api/purge?older_than=S    how many entries a purge would delete
    GET  /api/events                Server-Sent Events: every change, from any process
    GET  /pdf/ID                    the entry's PDF, from the downloads folder only
    POST /api/entries/ID/retry      and /cancel, /amend, /check
    POST /api/purge                 {"older_than": seconds}
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import stat
import threading
from collections.abc import Callable, Iterable, Iterator
from http import HTTPStatus
from importlib import resources
from pathlib import Path, PurePath
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from .. import errors, platform
from ..models import UNFINISHED_STATES, Entry, Event, State
from . import views
from .guard import Guard, Refused
from .tally import Tally

if TYPE_CHECKING:
    from ..outbox import Outbox

log = logging.getLogger(__name__)

Headers = list[tuple[str, str]]
StartResponse = Callable[[str, Headers], Any]

#: Sent with every answer: nothing from elsewhere, no framing, no sniffing, no caching.
SECURITY_HEADERS: Headers = [
    (
        "Content-Security-Policy",
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self';"
        " connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
    ),
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "no-referrer"),
    ("Cache-Control", "no-store"),
]
_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
#: Entry ids in URLs: what the journal hands out, nothing path-like.
_ID = r"[A-Za-z0-9_-]{1,64}"
_ROUTES: list[tuple[str, re.Pattern[str], str]] = [
    ("GET", re.compile(r"/"), "index"),
    ("GET", re.compile(r"/static/([a-z0-9-]+\.[a-z]+)"), "static"),
    ("GET", re.compile(r"/api/summary"), "summary"),
    ("GET", re.compile(r"/api/entries"), "entries"),
    ("GET", re.compile(rf"/api/entries/({_ID})"), "entry"),
    ("GET", re.compile(r"/api/rows"), "rows"),
    ("GET", re.compile(r"/api/purge"), "purge_preview"),
    ("GET", re.compile(r"/api/events"), "events"),
    ("GET", re.compile(rf"/pdf/({_ID})"), "pdf"),
    ("POST", re.compile(rf"/api/entries/({_ID})/(retry|cancel|amend|check)"), "act"),
    ("POST", re.compile(r"/api/purge"), "purge"),
]
_ERROR_STATUS: tuple[tuple[type[errors.OutboxError], int], ...] = (
    (errors.EntryNotFound, 404),
    (errors.LostRace, 409),
    (errors.IllegalTransition, 409),
    (errors.InvalidArgument, 400),
    (errors.JournalBusy, 503),
    (errors.JournalFull, 507),
)
MAX_BODY = 1 << 20
MAX_STREAMS = 32
PDF_CHUNK = 64 * 1024


class Answer:
    """A response: status, headers and body chunks."""

    def __init__(self, status: int, headers: Headers, body: Iterable[bytes]) -> None:
        self.status, self.headers, self.body = status, headers, body

    @classmethod
    def json(cls, payload: Any, status: int = 200) -> Answer:
        data = json.dumps(payload, ensure_ascii=False).encode()
        return cls(status, [("Content-Type", "application/json; charset=utf-8")], [data])

    @classmethod
    def error(
        cls, status: int, message: str, field_errors: dict[str, list[str]] | None = None
    ) -> Answer:
        problem: dict[str, Any] = {"status": status, "message": message}
        if field_errors:
            problem["field_errors"] = field_errors
        return cls.json({"error": problem}, status)


class DashboardApp:
    """The dashboard for ``outbox`` as a WSGI application.

    ``token`` is the secret in the page's URL (a random one by default: :attr:`token`).
    ``allowed_hosts`` are the ``Host`` values it answers to (None: any; see
    :class:`~outbox.dashboard.guard.Guard`). Call :meth:`close` before closing the outbox:
    it ends the live streams.
    """

    def __init__(
        self,
        outbox: Outbox,
        *,
        token: str | None = None,
        allowed_hosts: Iterable[str] | None = None,
        keepalive: float = 15.0,
    ) -> None:
        self.outbox = outbox
        self.token = token if token is not None else secrets.token_urlsafe(24)
        self.guard = Guard(self.token, None if allowed_hosts is None else list(allowed_hosts))
        self.keepalive = keepalive
        self._closing = threading.Event()
        self._streams = 0
        self._streams_changed = threading.Condition()
        self._files = _load_static()
        self._tally: Tally | None = None
        self._tally_lock = threading.Lock()

    def close(self, timeout: float = 5.0) -> None:
        """End the live streams (each notices within a second) and wait for them."""
        self._closing.set()
        with self._streams_changed:
            self._streams_changed.wait_for(lambda: self._streams == 0, timeout)
        with self._tally_lock:
            if self._tally is not None:
                self._tally.close()
                self._tally = None

    # -- WSGI ----------------------------------------------------------------------------

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        try:
            answer = self._dispatch(environ)
        except Refused as exc:
            answer = self._refusal(exc, environ)
        except errors.OutboxError as exc:
            status = next((code for kind, code in _ERROR_STATUS if isinstance(exc, kind)), 500)
            answer = Answer.error(status, str(exc), getattr(exc, "field_errors", None))
        except ValueError as exc:  # a bad query value, e.g. an unknown state
            answer = Answer.error(400, str(exc))
        start_response(
            f"{answer.status} {HTTPStatus(answer.status).phrase}",
            answer.headers + SECURITY_HEADERS,
        )
        return answer.body

    def _dispatch(self, environ: dict[str, Any]) -> Answer:
        method = str(environ.get("REQUEST_METHOD", "GET")).upper()
        path = str(environ.get("PATH_INFO", "")) or "/"
        allowed = []
        for route_method, pattern, name in _ROUTES:
            match = pattern.fullmatch(path)
            if match is None:
                continue
            if route_method != method and not (method == "HEAD" and route_method == "GET"):
                allowed.append(route_method)
                continue
            if name == "index":
                return self._index(environ)
            if route_method == "POST":
                self.guard.check_write(environ)
            else:
                self.guard.check_read(environ)
            handler: Callable[..., Answer] = getattr(self, "_" + name)
            return handler(environ, *match.groups())
        if allowed:
            self.guard.check_host(environ)
            return Answer(
                405, [("Allow", ", ".join(allowed)), ("Content-Type", "text/plain")], [b""]
            )
        self.guard.check_read(environ)
        return Answer.error(404, f"nothing at {path}")

    def _refusal(self, exc: Refused, environ: dict[str, Any]) -> Answer:
        if str(environ.get("PATH_INFO", "/")).startswith("/api/"):
            return Answer.error(exc.status, exc.message)
        text = f"<!doctype html><title>outbox dashboard</title><p>{_escape(exc.message)}</p>"
        return Answer(exc.status, [("Content-Type", "text/html; charset=utf-8")], [text.encode()])

    # -- the page ------------------------------------------------------------------------

    def _index(self, environ: dict[str, Any]) -> Answer:
        self.guard.check_host(environ)
        query = parse_qs(str(environ.get("QUERY_STRING", "")))
        if "token" in query:
            if not self.guard.matches(query["token"][0]):
                raise Refused(403, "wrong dashboard token: open the URL that was printed")
            # Keep the token out of the address bar, history and bookmarks: it lives on in
            # the cookie, which page scripts cannot read.
            home = str(environ.get("SCRIPT_NAME", "")) + "/"
            return Answer(303, [("Location", home), ("Set-Cookie", self.guard.cookie(home))], [])
        self.guard.check_read(environ)
        return self._static_answer("index.html")

    def _static(self, environ: dict[str, Any], name: str) -> Answer:
        return self._static_answer(name)

    def _static_answer(self, name: str) -> Answer:
        if name not in self._files:
            return Answer.error(404, f"no file {name}")
        data, kind = self._files[name]
        return Answer(200, [("Content-Type", kind), ("Content-Length", str(len(data)))], [data])

    # -- reading -------------------------------------------------------------------------

    def _summary(self, environ: dict[str, Any]) -> Answer:
        ob = self.outbox
        journal = ob.journal
        counts, counted_through = self._counts()
        return Answer.json(
            views.summary(
                counts,
                ob.status(),
                journal.next_due_at(
                    sorted(UNFINISHED_STATES), horizon=ob.settings.schedule.horizon
                ),
                counted_through=counted_through,
                last_event=journal.last_event_id(),
                journal=str(ob.path),
                downloads=str(ob.downloads),
                base_url=ob.base_url,
                templates=journal.templates_in_use(),
            )
        )

    def _counts(self) -> tuple[dict[State, int], int]:
        """The latest counts per state (kept by a background thread) and their last event."""
        with self._tally_lock:
            if self._closing.is_set():
                raise Refused(503, "the dashboard is closing")
            if self._tally is None:
                self._tally = Tally(self.outbox.path, clock=self.outbox.clock)
            return self._tally.snapshot()

    def _entries(self, environ: dict[str, Any]) -> Answer:
        query = _query(environ)
        limit = query.get("limit", "50")
        if not limit.isascii() or not limit.isdigit():
            raise errors.InvalidArgument(f"limit must be a whole number, not {limit!r}")
        page = self.outbox.page(
            state=query.get("state") or None,
            template=query.get("template") or None,
            key_prefix=query.get("q") or None,
            after=query.get("after") or None,
            limit=int(limit),
        )
        return Answer.json({"entries": [views.row(e) for e in page.entries], "next": page.next})

    def _entry(self, environ: dict[str, Any], entry_id: str) -> Answer:
        entry = self.outbox.get(entry_id)
        return Answer.json(self._detail(entry))

    def _detail(self, entry: Entry) -> dict[str, Any]:
        ob = self.outbox
        return views.detail(
            entry,
            ob.history(entry.id),
            ob.status(),
            ob.clock.now(),
            can_amend=self._can_amend(entry),
        )

    def _can_amend(self, entry: Entry) -> bool:
        """What :meth:`Outbox.amend` takes: any request Craftkit has not accepted."""
        return entry.state not in (State.SUBMITTED, State.DOWNLOADING, State.DONE)

    def _rows(self, environ: dict[str, Any]) -> Answer:
        wanted = [i for i in _query(environ).get("ids", "").split(",") if i][:200]
        found = []
        for entry_id in wanted:
            try:
                found.append(views.row(self.outbox.get(entry_id)))
            except errors.EntryNotFound:
                found.append({"id": entry_id, "gone": True})  # purged meanwhile
        return Answer.json({"rows": found})

    def _purge_preview(self, environ: dict[str, Any]) -> Answer:
        seconds = _seconds(_query(environ).get("older_than"))
        return Answer.json(
            {"older_than": seconds, "count": self.outbox.purge(seconds, dry_run=True)}
        )

    # -- the live stream -----------------------------------------------------------------

    def _events(self, environ: dict[str, Any]) -> Answer:
        since_text = environ.get("HTTP_LAST_EVENT_ID") or _query(environ).get("since")
        journal = self.outbox.journal
        since = (
            int(since_text)
            if since_text and since_text.isascii() and since_text.isdigit()
            else journal.last_event_id()
        )
        with self._streams_changed:
            if self._streams >= MAX_STREAMS:
                return Answer.error(503, "too many open dashboard pages; close some")
            self._streams += 1
        headers = [("Content-Type", "text/event-stream; charset=utf-8")]
        return Answer(200, headers, self._stream(since))

    def _stream(self, since: int) -> Iterator[bytes]:
        """Every change after event ``since``, as it happens, until the client or we leave.

        Follows :meth:`Outbox.changes`, which also sees other processes' changes. A comment
        line every ``keepalive`` seconds finds closed connections.
        """
        try:
            yield b"retry: 2000\n: connected\n\n"
            last, quiet_since = since, self.outbox.clock.monotonic()
            while not self._closing.is_set():
                for event in self.outbox.changes(since=last, timeout=1.0, poll_interval=0.5):
                    last = event.id
                    quiet_since = self.outbox.clock.monotonic()
                    yield _sse(event)
                    if self._closing.is_set():
                        return
                if self.outbox.clock.monotonic() - quiet_since >= self.keepalive:
                    quiet_since = self.outbox.clock.monotonic()
                    yield b": still here\n\n"
        finally:
            with self._streams_changed:
                self._streams -= 1
                self._streams_changed.notify_all()

    # -- PDFs ----------------------------------------------------------------------------

    def _pdf(self, environ: dict[str, Any], entry_id: str) -> Answer:
        entry = self.outbox.get(entry_id)
        handle = self._open_pdf(entry)
        if handle is None:
            return Answer.error(404, f"entry {entry.id} has no PDF in the downloads folder")
        size = os.fstat(handle.fileno()).st_size
        name = PurePath(str(entry.pdf_path)).name
        ascii_name = "".join(
            c if c.isascii() and c.isprintable() and c not in '"\\' else "_" for c in name
        )
        return Answer(
            200,
            [
                ("Content-Type", "application/pdf"),
                ("Content-Length", str(size)),
                ("Content-Disposition", f'inline; filename="{ascii_name}"'),
            ],
            _chunks(handle),
        )

    def _open_pdf(self, entry: Entry) -> Any:
        """The entry's PDF, opened, if it is a regular file directly in the downloads folder.

        Found by the entry's id, never by a path from the request: the name recorded in the
        journal is looked up in the downloads folder, and refused if the journal's path points
        elsewhere, if it is (or leads through) a symlink, or if its size is not the verified one.
        """
        if entry.state is not State.DONE or not entry.pdf_path:
            return None
        root = os.path.realpath(self.outbox.downloads)
        recorded = Path(entry.pdf_path)
        name = recorded.name
        if name in ("", ".", "..") or os.sep in name:
            return None
        candidate = os.path.join(root, name)
        if os.path.realpath(candidate) != candidate:
            return None  # a symlink: it could point anywhere
        if recorded.is_absolute() and os.path.realpath(recorded) != candidate:
            return None  # the journal says the PDF is somewhere else
        try:
            fd = os.open(candidate, os.O_RDONLY | platform.BINARY | platform.NO_FOLLOW)
        except OSError:
            return None
        handle = os.fdopen(fd, "rb")
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or (
            entry.pdf_bytes is not None and info.st_size != entry.pdf_bytes
        ):
            handle.close()
            return None
        return handle

    # -- changes -------------------------------------------------------------------------

    def _act(self, environ: dict[str, Any], entry_id: str, action: str) -> Answer:
        body = _json_body(environ)
        ob = self.outbox
        if action == "retry":
            entry = ob.retry(entry_id)
        elif action == "cancel":
            entry = ob.cancel(entry_id)
        elif action == "check":
            entry = ob.get(entry_id)
            check = ob.check(entry.template, _data_of(body), version=entry.version)
            return Answer.json(
                {
                    "passed": check.passed,
                    "outcome": check.outcome.value,
                    "message": check.message(),
                    "field_errors": check.field_errors,
                }
            )
        else:
            entry = ob.amend(entry_id, data=_data_of(body))
        return Answer.json(self._detail(entry))

    def _purge(self, environ: dict[str, Any]) -> Answer:
        seconds = _seconds(_json_body(environ).get("older_than"))
        return Answer.json({"older_than": seconds, "purged": self.outbox.purge(seconds)})


def _load_static() -> dict[str, tuple[bytes, str]]:
    """The page's files, read once from the package (nothing is ever fetched from elsewhere)."""
    folder = resources.files(__package__).joinpath("static")
    files = {}
    for item in folder.iterdir():
        suffix = PurePath(item.name).suffix
        if suffix in _TYPES:
            files[item.name] = (item.read_bytes(), _TYPES[suffix])
    return files


def _query(environ: dict[str, Any]) -> dict[str, str]:
    return {
        name: values[0] for name, values in parse_qs(str(environ.get("QUERY_STRING", ""))).items()
    }


def _json_body(environ: dict[str, Any]) -> dict[str, Any]:
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        raise errors.InvalidArgument("bad Content-Length") from None
    if length > MAX_BODY:
        raise errors.InvalidArgument(f"the request body is over {MAX_BODY} bytes")
    raw = environ["wsgi.input"].read(length) if length else b"{}"
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise errors.InvalidArgument(f"the request body is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise errors.InvalidArgument("the request body must be a JSON object")
    return body


def _data_of(body: dict[str, Any]) -> dict[str, Any]:
    data = body.get("data")
    if not isinstance(data, dict):
        raise errors.InvalidArgument('the request body needs "data": a JSON object')
    return data


def _seconds(value: object) -> float:
    try:
        seconds = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise errors.InvalidArgument(
            f"older_than must be a number of seconds, not {value!r}"
        ) from None
    if not 0 <= seconds < float("inf"):
        raise errors.InvalidArgument("older_than must be zero or more seconds")
    return seconds


def _sse(event: Event) -> bytes:
    payload = {
        "id": event.id,
        "entry": event.entry_id,
        "from": event.from_state.value if event.from_state else None,
        "to": event.to_state.value,
        "at": event.at,
    }
    return f"id: {event.id}\ndata: {json.dumps(payload)}\n\n".encode()


def _chunks(handle: Any) -> Iterator[bytes]:
    with handle:
        while chunk := handle.read(PDF_CHUNK):
            yield chunk


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
