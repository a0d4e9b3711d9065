"""The Craftkit HTTP client: the only module that knows httpx, URLs and status codes.

Every answer is classified here: success comes back as a :class:`Render` (its ``status`` as
Craftkit sent it, documented or not: see :class:`~outbox.models.RemoteStatus`); everything else
raises one of the :class:`~outbox.errors.RemoteError` subclasses. :mod:`outbox.outcomes` decides
what each means for the entry (the README's "What happens on each answer" table), without
looking at HTTP details. Short in-call retries (a dropped connection, one 5xx) use
tenacity; anything longer is scheduled in the journal by the caller.
"""

from __future__ import annotations

import email.utils
import importlib.metadata
import json
import logging
import math
import re
import threading
import time
import traceback
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpcore
import httpx
import tenacity

from .config import check_api_key
from .errors import (
    AuthError,
    ForeignAnswer,
    NotFound,
    Offline,
    OutcomeUnknown,
    PermanentError,
    PublicCopyBroken,
    RateLimited,
    RemoteError,
    ServerError,
    TransientError,
    UnusableAnswer,
)
from .schedule import Schedule

log = logging.getLogger(__name__)
#: Every request and answer, at DEBUG (``outbox -vv``).
HTTP_LOG = logging.getLogger("outbox.http")

USER_AGENT = f"outbox/{importlib.metadata.version('outbox')}"

#: The largest JSON answer read. A render is well under 1 KiB, a template's schema a few KiB.
MAX_JSON_BYTES = 1024 * 1024
#: The largest error answer read; only its envelope (code, message, field errors) matters.
MAX_ERROR_BYTES = 64 * 1024
#: Default cap on a PDF download (``Settings.max_pdf_bytes``).
DEFAULT_MAX_PDF_BYTES = 512 * 1024 * 1024
#: Render ids outbox accepts: Craftkit's are UUIDs; letters, digits, ``-`` and ``_`` are safe
#: in a URL path and on a terminal, whatever the id scheme.
RENDER_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$")
#: Longest render duration believed (a week); larger or negative values are ignored.
MAX_DURATION_MS = 7 * 24 * 3600 * 1000
#: The code of the error for a request cut at its deadline (or by a stop).
OUT_OF_TIME = "out_of_time"
#: Longest wait inside one socket call, so a deadline or a stop is noticed this quickly.
WAIT_SLICE = 0.25
CHUNK = 64 * 1024


@dataclass(frozen=True)
class Render:
    """A render as Craftkit reports it (``POST .../render`` or ``GET /v1/renders/:id``)."""

    id: str
    status: str
    download_url: str | None
    error_message: str | None
    duration_ms: int | None = None
    created_at: str | None = None
    completed_at: str | None = None


@dataclass(frozen=True)
class Share:
    """A share of a render as Craftkit reports it: a guest link, or an email-channel share.

    ``POST .../shares`` and ``GET .../shares`` give every field but ``email_message_id`` and
    ``sent_at``; ``POST .../email`` gives ``id``, ``token``, ``url``, ``email_message_id`` and
    ``sent_at`` only (the rest is what was asked for).
    """

    id: str
    token: str | None
    url: str | None
    channel: str
    recipient_email: str | None = None
    message: str | None = None
    expires_at: str | None = None
    revoked_at: str | None = None
    created_at: str | None = None
    click_count: int | None = None
    email_message_id: str | None = None
    sent_at: str | None = None


class NotReady(TransientError):
    """The PDF is not downloadable yet (the private stream's 404 with no code)."""


class CraftkitClient:
    """A thread-safe client for the parts of the Craftkit API that outbox needs.

    ``api_key`` is sent only to ``base_url`` (never to a ``downloadUrl`` on another host) and
    never appears in logs or error messages; a key that no HTTP header can carry (a line break,
    a non-ASCII character...) is refused at once with :class:`ConfigError` naming the problem,
    not the key. ``deadline`` arguments (monotonic seconds) cap a
    call's total time, so a hanging server cannot hold a flush beyond its timeout. Quick
    retries inside a call wait as ``schedule.quick_retry`` says.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        connect_timeout: float = 5.0,
        read_timeout: float = 30.0,
        request_timeout: float = 60.0,
        download_timeout: float = 600.0,
        max_pdf_bytes: int = DEFAULT_MAX_PDF_BYTES,
        max_connections: int = 8,
        retries: int = 2,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
        monotonic: Callable[[], float] = time.monotonic,
        schedule: Schedule | None = None,
    ) -> None:
        check_api_key(api_key, "the API key")
        self.base_url = base_url.rstrip("/")
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.request_timeout = request_timeout
        self.download_timeout = download_timeout
        self.max_pdf_bytes = max_pdf_bytes
        self.retries = retries
        self.schedule = schedule or Schedule()
        self._monotonic = monotonic
        self._auth = {"Authorization": f"Bearer {api_key}"}
        # Ways the key could appear in an HTTP library's message, to cut them out.
        self._secrets = sorted({api_key, repr(api_key)[1:-1], repr(api_key.encode())[2:-1]})
        self._budget = _Budget(monotonic)
        limits = httpx.Limits(
            max_connections=max_connections, max_keepalive_connections=max_connections
        )
        self._http = httpx.Client(
            timeout=httpx.Timeout(read_timeout, connect=connect_timeout),
            limits=limits,
            transport=transport,
            headers={"User-Agent": USER_AGENT, "Accept-Encoding": "identity"},
            follow_redirects=False,
            event_hooks={"request": [self._log_request], "response": [self._log_response]},
        )
        _bound_pools(self._http, self._budget)
        # One retrying controller for every call, on every thread: tenacity keeps the state of
        # a call per thread, and one made per call would leave a reference cycle (the
        # controller and its per-thread state) for the cyclic garbage collector each time.
        self._retryer = tenacity.Retrying(
            # A request that used up its own deadline is not repeated at once: the server is
            # that slow now, and the entry's backoff decides when to ask again.
            retry=tenacity.retry_if_exception(_worth_repeating_at_once),
            stop=tenacity.stop_after_attempt(retries + 1)
            | _OutOfTime(self._budget, self.schedule.quick_retry_margin),
            wait=self._quick_retry_delay,
            sleep=sleep,
            reraise=True,
        )

    def interrupt(self, grace: float = 2.0) -> None:
        """End every request in flight after ``grace`` seconds (a stop was asked for).

        A request cut short fails like a lost answer (outcome unknown), which is always safe to
        repeat. :meth:`resume` lets requests run to their own deadlines again.
        """
        self._budget.interrupt(grace)

    def resume(self) -> None:
        """Undo :meth:`interrupt`."""
        self._budget.resume()

    @contextmanager
    def cut_when(self, stop: threading.Event | None, grace: float = 2.0) -> Iterator[None]:
        """Requests made on this thread inside the block end ``grace`` seconds after ``stop``
        is set (as :meth:`interrupt` ends every thread's), so a flush told to stop returns
        soon even while a server drips its answer."""
        with self._budget.stopped_by(stop, grace):
            yield

    def close(self) -> None:
        self._http.close()

    def _shown(self, url: httpx.URL) -> str:
        """A URL fit for the log: the API's own paths in full (no query); anything else (a
        public ``downloadUrl``, whose path may be its secret) by host only."""
        text = str(url.copy_with(query=None, fragment=None))
        path = text[len(self.base_url) :] if text.startswith(self.base_url + "/") else ""
        if path.startswith("/v1/") or path == "/health":
            return path
        return f"{url.scheme}://{url.host}/…"

    def _log_request(self, request: httpx.Request) -> None:
        if HTTP_LOG.isEnabledFor(logging.DEBUG):
            HTTP_LOG.debug("-> %s %s", request.method, self._shown(request.url))

    def _log_response(self, response: httpx.Response) -> None:
        if HTTP_LOG.isEnabledFor(logging.DEBUG):
            request = response.request
            HTTP_LOG.debug(
                "<- %d %s %s", response.status_code, request.method, self._shown(request.url)
            )

    def __repr__(self) -> str:
        return f"<CraftkitClient {self.base_url!r}>"

    # -- endpoints -----------------------------------------------------------------------

    def health(self, *, deadline: float | None = None) -> None:
        """Return if the API answers like the real API (``{"status": "ok"}``); else raise."""
        answer = self._request("GET", "/health", deadline=deadline, authenticate=False)
        body = answer.json()
        if answer.status != 200 or not (isinstance(body, dict) and body.get("status") == "ok"):
            raise Offline(
                f"{self.base_url}/health answered {answer.status} "
                f"{answer.content_type}, not Craftkit's health check "
                "(a captive portal or proxy in the way?)",
                status=answer.status,
            )

    def submit(
        self,
        template: str,
        data: dict[str, Any],
        *,
        key: str,
        filename: str | None = None,
        version: int | None = None,
        deadline: float | None = None,
    ) -> tuple[Render, bool]:
        """Queue a render with ``key`` as the ``Idempotency-Key``.

        Returns the render and whether the answer was a replay (200: the key was known, and
        the render's current state came back). Retrying with the same key is always safe.
        """
        body: dict[str, Any] = {"data": data}
        options: dict[str, Any] = {}
        if version is not None:
            options["versionNumber"] = version
        if filename is not None:
            options["filename"] = filename
        if options:
            body["options"] = options
        if not (key and all(" " <= char <= "~" for char in key) and key == key.strip(" ")):
            raise PermanentError(
                "the idempotency key cannot be sent as an HTTP header (printable ASCII without "
                "spaces at its ends); nothing was sent",
                code="invalid_key",
            )
        answer = self._retrying(
            lambda: self._request(
                "POST",
                f"/v1/templates/{_segment(template)}/render",
                deadline=deadline,
                json=body,
                headers={"Idempotency-Key": key},
            ),
            deadline,
        )
        return self._render(answer), answer.status == 200

    def get_render(self, render_id: str, *, deadline: float | None = None) -> Render:
        """The render's current state. Valid forever for the project that owns it."""
        path = f"/v1/renders/{_render_id_segment(render_id)}"
        answer = self._retrying(lambda: self._request("GET", path, deadline=deadline), deadline)
        return self._render(answer)

    def get_template(self, slug: str, *, deadline: float | None = None) -> dict[str, Any]:
        """One template with its published ``manifest`` and ``jsonSchema``."""
        path = f"/v1/templates/{_segment(slug)}"
        answer = self._retrying(lambda: self._request("GET", path, deadline=deadline), deadline)
        return self._json_object(answer)

    def list_templates(self, *, deadline: float | None = None) -> list[dict[str, Any]]:
        """The project's templates (without manifests), newest-updated first."""
        answer = self._retrying(
            lambda: self._request("GET", "/v1/templates", deadline=deadline), deadline
        )
        templates = self._json_object(answer).get("templates")
        if not isinstance(templates, list):
            raise Offline(f"{self.base_url}/v1/templates did not answer with a template list")
        return templates

    def create_share(
        self,
        render_id: str,
        *,
        message: str | None = None,
        expires_at: str | None = None,
        deadline: float | None = None,
    ) -> Share:
        """Make a guest link to a succeeded render (``POST /v1/renders/:id/shares``).

        Craftkit takes no idempotency key here, so a lost answer is never retried inside the
        call: the caller must look for the share (:meth:`list_shares`) before asking again.
        """
        body: dict[str, Any] = {"channel": "link"}
        if message is not None:
            body["message"] = message
        if expires_at is not None:
            body["expiresAt"] = expires_at
        path = f"/v1/renders/{_render_id_segment(render_id)}/shares"
        return self._share(self._request("POST", path, deadline=deadline, json=body))

    def send_email(
        self,
        render_id: str,
        *,
        to: str,
        recipient_name: str | None = None,
        message: str | None = None,
        expires_at: str | None = None,
        deadline: float | None = None,
    ) -> Share:
        """Email a succeeded render to ``to`` (``POST /v1/renders/:id/email``).

        Not retried inside the call, for the same reason as :meth:`create_share`. The share
        that comes back carries what was asked for plus Craftkit's message id and time.
        """
        body: dict[str, Any] = {"to": to}
        if recipient_name is not None:
            body["recipientName"] = recipient_name
        if message is not None:
            body["message"] = message
        if expires_at is not None:
            body["expiresAt"] = expires_at
        path = f"/v1/renders/{_render_id_segment(render_id)}/email"
        share = self._share(self._request("POST", path, deadline=deadline, json=body), "email")
        return Share(
            id=share.id,
            token=share.token,
            url=share.url,
            channel="email",
            recipient_email=to,
            message=message,
            expires_at=expires_at,
            email_message_id=share.email_message_id,
            sent_at=share.sent_at,
        )

    def list_shares(self, render_id: str, *, deadline: float | None = None) -> list[Share]:
        """The render's shares, newest first, revoked ones included, with click counts."""
        path = f"/v1/renders/{_render_id_segment(render_id)}/shares"
        answer = self._retrying(lambda: self._request("GET", path, deadline=deadline), deadline)
        rows = self._json_object(answer).get("shares")
        if not isinstance(rows, list):
            raise Offline(f"{self.base_url} did not answer with a list of shares")
        return [self._share_from(row) for row in rows]

    def revoke_share(
        self, render_id: str, share_id: str, *, deadline: float | None = None
    ) -> str | None:
        """Revoke a share (``DELETE /v1/renders/:id/shares/:shareId``); returns ``revokedAt``.

        A share that is unknown or already revoked raises :class:`~outbox.errors.NotFound`.
        """
        path = f"/v1/renders/{_render_id_segment(render_id)}/shares/{_segment(share_id)}"
        answer = self._retrying(lambda: self._request("DELETE", path, deadline=deadline), deadline)
        return _string(self._json_object(answer).get("revokedAt"))

    @contextmanager
    def open_pdf(
        self, render: Render, *, deadline: float | None = None
    ) -> Iterator[tuple[int | None, Iterator[bytes]]]:
        """Open the render's PDF as a stream: ``(Content-Length or None, chunks)``.

        Uses the public ``downloadUrl`` (without credentials) when there is one, and the private
        stream ``GET /v1/embed/renders/:id/download`` (with the key) when it is null. Raises
        :class:`NotReady` while the private stream has no asset yet. Anything that goes wrong
        with the public copy raises :class:`PublicCopyBroken`, never an error that would judge
        the network or the key: the bucket is not the API (the caller then uses the private
        stream, see :func:`outbox.outcomes.download_failed`). The whole download, body
        included, ends by ``deadline`` (and by the client's download timeout); a PDF larger
        than ``max_pdf_bytes`` is refused without being kept.
        """
        ends = self._ends(deadline, self.download_timeout)
        with self._budget.until(ends):
            if render.download_url:
                with self._open_public(render.download_url, ends) as opened:
                    yield opened
                return
            private = f"{self.base_url}/v1/embed/renders/{_render_id_segment(render.id)}/download"
            try:
                request = self._http.build_request(
                    "GET", private, headers=self._auth, timeout=self._timeout(ends)
                )
                response = self._http.send(request, stream=True)
            except (httpx.HTTPError, httpx.InvalidURL, ValueError) as exc:
                raise self._transport_error(exc, what="the PDF download") from None
            try:
                if response.status_code == 200:
                    yield self._pdf_stream(response, self._transport_error)
                    return
                answer = self._answer(response, MAX_ERROR_BYTES, what="the PDF download")
                if response.status_code == 404:
                    raise NotReady(f"render {render.id} has no PDF to download yet", status=404)
                self._raise_for(answer)
                raise self._foreign(answer, "a PDF")  # a 2xx other than 200
            finally:
                _release(response)

    @contextmanager
    def _open_public(self, url: str, ends: float) -> Iterator[tuple[int | None, Iterator[bytes]]]:
        """Open the public copy; every failure is :class:`PublicCopyBroken`, in plain words."""
        if not _usable_url(url):
            raise PublicCopyBroken(
                f"the downloadUrl {printable(url, 80)!r} is not a plain http(s) URL"
            )
        host = httpx.URL(url).host

        def broken(exc: Exception, what: str = "") -> PublicCopyBroken:
            return PublicCopyBroken(f"{host}: {self._reason(exc)}")

        try:
            request = self._http.build_request("GET", url, timeout=self._timeout(ends))
            response = self._http.send(request, stream=True)
        except (httpx.HTTPError, httpx.InvalidURL, ValueError) as exc:
            raise broken(exc) from None
        try:
            if response.status_code != 200:
                where = response.headers.get("Location")
                raise PublicCopyBroken(
                    f"{host} answered {response.status_code}"
                    + (f" (a redirect to {printable(where, 200)})" if where else ""),
                    status=response.status_code,
                )
            yield self._pdf_stream(response, broken)
        finally:
            _release(response)

    def _pdf_stream(
        self, response: httpx.Response, translate: Callable[..., RemoteError]
    ) -> tuple[int | None, Iterator[bytes]]:
        """The announced size (None if unknown or encoded) and the capped chunks of a PDF;
        ``translate`` turns a transport error while reading into the error to raise."""
        declared = _content_length(response)
        encoded = _content_encoding(response) not in ("", "identity")
        if declared is not None and not encoded and declared > self.max_pdf_bytes:
            raise UnusableAnswer(
                f"the PDF is {declared:,} bytes, more than the {self.max_pdf_bytes:,} bytes "
                "allowed (max_pdf_bytes); it was not downloaded",
                code="pdf_too_large",
            )

        def chunks() -> Iterator[bytes]:
            size = 0
            try:
                for chunk in _decoded(response):
                    size += len(chunk)
                    if size > self.max_pdf_bytes:
                        raise UnusableAnswer(
                            f"the PDF is larger than the {self.max_pdf_bytes:,} bytes allowed "
                            "(max_pdf_bytes); the download was stopped and nothing kept",
                            code="pdf_too_large",
                        )
                    yield chunk
            except httpx.HTTPError as exc:
                raise translate(exc, what="the PDF download") from None

        return (None if encoded else declared), chunks()

    # -- plumbing ------------------------------------------------------------------------

    def _ends(self, deadline: float | None, budget: float) -> float:
        """When a call must be over: its caller's deadline or its own budget, if sooner."""
        own = self._monotonic() + budget
        return own if deadline is None else min(deadline, own)

    def _timeout(self, deadline: float | None) -> httpx.Timeout:
        read = self.read_timeout
        connect = self.connect_timeout
        if deadline is not None:
            remaining = max(self.schedule.min_request_timeout, deadline - self._monotonic())
            read, connect = min(read, remaining), min(connect, remaining)
        return httpx.Timeout(read, connect=connect)

    def _request(
        self,
        method: str,
        path: str,
        *,
        deadline: float | None,
        authenticate: bool = True,
        json: Any = None,
        headers: dict[str, str] | None = None,
    ) -> _Answer:
        """Send one request and read its answer, capped in size and time; raise for non-2xx."""
        all_headers = {**(self._auth if authenticate else {}), **(headers or {})}
        what = f"{method} {path}"
        ends = self._ends(deadline, self.request_timeout)
        with self._budget.until(ends):
            try:
                request = self._http.build_request(
                    method,
                    self.base_url + path,
                    json=json,
                    headers=all_headers,
                    timeout=self._timeout(ends),
                )
                response = self._http.send(request, stream=True)
            except httpx.HTTPError as exc:
                raise self._transport_error(exc, what=what) from None
            try:
                cap = MAX_JSON_BYTES if response.status_code < 300 else MAX_ERROR_BYTES
                answer = self._answer(response, cap, what=what)
            finally:
                _release(response)
        if answer.status >= 300:
            self._raise_for(answer)
        if answer.body is None:
            raise UnusableAnswer(
                f"{what}: {answer.host} answered {answer.status} with more than "
                f"{MAX_JSON_BYTES:,} bytes; the answer was not read",
                status=answer.status,
                code="answer_too_large",
            )
        return answer

    def _answer(self, response: httpx.Response, cap: int, *, what: str) -> _Answer:
        """Read an answer's body, at most ``cap`` bytes of it (``body`` None beyond that)."""
        location = response.headers.get("Location")
        try:
            body = _read_capped(response, cap)
        except httpx.HTTPError as exc:
            raise self._transport_error(exc, what=what) from None
        return _Answer(
            status=response.status_code,
            body=body,
            host=response.request.url.host,
            content_type=printable(_content_type(response), 100),
            retry_after=_retry_after(
                response.headers.get("Retry-After"), self.schedule.pacing.max_retry_after
            ),
            what=what,
            location=printable(location, 200) if location else None,
        )

    def _retrying(self, call: Callable[[], _Answer], deadline: float | None) -> _Answer:
        """Retry a call a few times, quickly, when the answer was lost or a 5xx came back."""
        with self._budget.until(deadline):
            try:
                return self._retryer(call)
            except Exception as exc:
                # The finished frames of the attempts still hold what they used: tenacity's
                # record of the outcome (which holds the exception), the request's httpx
                # objects. Kept, they would make a reference cycle of every failed call, freed
                # only when the cyclic garbage collector next ran.
                traceback.clear_frames(exc.__traceback__)
                raise

    def _quick_retry_delay(self, retry_state: tenacity.RetryCallState) -> float:
        return self.schedule.quick_retry.delay(retry_state.attempt_number)

    def _transport_error(self, exc: Exception, *, what: str) -> RemoteError:
        if self._budget.spent():  # cut at the deadline: slow, not unreachable
            return OutcomeUnknown(
                f"{what}: no complete answer from {self.base_url} (the request ran out of time)",
                code=OUT_OF_TIME,
            )
        if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout):
            return Offline(f"cannot reach {self.base_url}: {self._reason(exc)}")
        if isinstance(exc, httpx.UnsupportedProtocol | httpx.InvalidURL | ValueError):
            return Offline(f"cannot use {self.base_url}: {self._reason(exc)}")
        return OutcomeUnknown(
            f"{what}: no complete answer from {self.base_url} ({self._reason(exc)})"
        )

    def _reason(self, exc: Exception) -> str:
        """The HTTP library's words for a failure, safe to keep: no header value, no key.

        Messages about the request we sent (a refused header, say) can quote the header, so
        they are replaced by a fixed text; any other message is stripped of the key.
        """
        if isinstance(exc, httpx.LocalProtocolError):
            return "the request could not be sent: the HTTP library refused it"
        text = str(exc).splitlines()[0] if str(exc).strip() else type(exc).__name__
        for secret in self._secrets:
            text = text.replace(secret, "[redacted]")
        text = _BEARER.sub(r"\1[redacted]", text)
        return printable(text, 200)

    def _raise_for(self, answer: _Answer) -> None:
        """Raise the error that this non-2xx answer means."""
        status = answer.status
        envelope = _error_envelope(answer.json())
        code = envelope.get("code") if envelope else None
        message = envelope.get("message") if envelope else None
        detail = f"{status} {code}" if code else str(status)
        if message:
            detail += f": {message}"
        if status in (401, 403):
            raise AuthError(f"Craftkit refused the API key ({detail})", status=status, code=code)
        if status == 429 or code == "rate_limited":
            raise RateLimited(
                f"rate limited by Craftkit ({detail})",
                status=status,
                code=code or "rate_limited",
                retry_after=answer.retry_after,
            )
        if status >= 500:
            raise ServerError(f"Craftkit server error ({detail})", status=status, code=code)
        if answer.body is None and status >= 400:
            raise UnusableAnswer(
                f"{answer.host} answered {status} with more than {MAX_ERROR_BYTES:,} bytes; "
                "the answer was not read",
                status=status,
                code="answer_too_large",
            )
        if 300 <= status < 400 or envelope is None:
            raise self._foreign(answer)
        error_class = NotFound if code == "not_found" else PermanentError
        raise error_class(
            detail,
            status=status,
            code=code or f"http_{status}",
            field_errors=envelope.get("fieldErrors"),
        )

    def _render(self, answer: _Answer) -> Render:
        body = answer.json()
        if not (
            isinstance(body, dict)
            and isinstance(body.get("id"), str)
            and isinstance(body.get("status"), str)
        ):
            raise self._foreign(answer, "a render")
        render_id = body["id"]
        if not RENDER_ID.match(render_id):
            raise UnusableAnswer(
                f"Craftkit answered with a render id outbox cannot use ({printable(render_id, 80)!r}:"
                " ids are letters, digits, '-' and '_'); this entry will be tried again",
                status=answer.status,
                code="bad_render_id",
            )
        download_url = body.get("downloadUrl")
        if download_url and not _usable_url(download_url):
            log.warning("render %s: ignoring an unusable downloadUrl", render_id)
            download_url = None
        error_message = body.get("errorMessage")
        return Render(
            id=render_id,
            status=printable(body["status"], 64),
            download_url=download_url or None,
            error_message=printable(error_message, 1000)
            if isinstance(error_message, str)
            else None,
            duration_ms=_duration_ms(body.get("durationMs")),
            created_at=_timestamp(body.get("createdAt")),
            completed_at=_timestamp(body.get("completedAt")),
        )

    def _share(self, answer: _Answer, channel: str = "link") -> Share:
        return self._share_from(answer.json(), channel, answer)

    def _share_from(self, body: Any, channel: str = "link", answer: _Answer | None = None) -> Share:
        """A share from an answer's JSON (its text made printable); anything else is not
        Craftkit's answer."""
        if not (isinstance(body, dict) and isinstance(body.get("id"), str) and body["id"]):
            where = answer.host if answer is not None else self.base_url
            raise Offline(
                f"{where} answered with something that is not a Craftkit share "
                "(a captive portal or proxy in the way?)"
            )
        clicks = body.get("clickCount")
        return Share(
            id=printable(body["id"], 200),
            token=_string(body.get("shareToken")),
            url=_string(body.get("shareUrl")),
            channel=_string(body.get("channel")) or channel,
            recipient_email=_string(body.get("recipientEmail")),
            message=_string(body.get("message")),
            expires_at=_string(body.get("expiresAt")),
            revoked_at=_string(body.get("revokedAt")),
            created_at=_string(body.get("createdAt")),
            click_count=clicks
            if isinstance(clicks, int) and not isinstance(clicks, bool)
            else None,
            email_message_id=_string(body.get("emailMessageId")),
            sent_at=_string(body.get("sentAt")),
        )

    def _json_object(self, answer: _Answer) -> dict[str, Any]:
        body = answer.json()
        if not isinstance(body, dict):
            raise self._foreign(answer, "a JSON object")
        return body

    def _foreign(self, answer: _Answer, expected: str = "Craftkit's answer") -> ForeignAnswer:
        """The error for an answer that is not the API's: it says exactly what came instead."""
        status = answer.status
        what = f"{answer.what}: " if answer.what else ""
        if 300 <= status < 400:
            got = (
                f"a redirect to {answer.location}"
                if answer.location
                else "a redirect without a Location"
            )
            return ForeignAnswer(
                f"{what}{answer.host} answered {status} ({got}), which outbox does not follow",
                status=status,
            )
        return ForeignAnswer(
            f"{what}{answer.host} answered {status} with {_describe_body(answer)}, not "
            f"{expected} (a captive portal, a proxy or a wrong base URL?)",
            status=status,
        )


# -- answers -------------------------------------------------------------------------------


def _describe_body(answer: _Answer) -> str:
    """A few words on what a body that is not the expected JSON holds."""
    content = answer.body
    kind = answer.content_type  # "text/html", or "with no content type"
    kind = kind if kind.startswith("with ") else f"of {kind}"
    if content is None:
        return f"more than {MAX_ERROR_BYTES:,} bytes {kind}"
    if not content.strip():
        return f"an empty body {kind}"
    body = answer.json()
    if body is None:
        return f"{len(content):,} bytes {kind} that are not valid JSON (starting {content[:24]!r})"
    if isinstance(body, dict):
        return "a JSON object without a render's id and status"
    if isinstance(body, list):
        return "a JSON array"
    return f"a JSON {type(body).__name__}"


@dataclass(frozen=True)
class _Answer:
    """An HTTP answer, read: ``body`` is None when it was larger than allowed (not read).

    ``what`` is the request it answers (``GET /v1/renders/r1``); ``location`` the
    ``Location`` header of a redirect.
    """

    status: int
    body: bytes | None
    host: str
    content_type: str
    retry_after: float | None
    what: str = ""
    location: str | None = None

    def json(self) -> Any:
        """The body as JSON, or None if it is not JSON (or too large, or too deep).

        ``NaN`` and ``Infinity`` become None, and a ``\\u`` escape for half a surrogate pair
        becomes U+FFFD, so every string can be stored and every number is finite.
        """
        if self.body is None:
            return None
        try:
            text = self.body.decode("utf-8")
            if "\\u" in text:
                text = _LONE_SURROGATE.sub(_keep_pairs, text)
            return json.loads(text, parse_constant=lambda _name: None)
        except (ValueError, RecursionError):
            return None


_LONE_SURROGATE = re.compile(
    r"(?<!\\)((?:\\\\)*)(\\u[dD][89abAB][0-9a-fA-F]{2}\\u[dD][c-fC-F][0-9a-fA-F]{2}"
    r"|\\u[dD][89a-fA-F][0-9a-fA-F]{2})"
)


def _keep_pairs(match: re.Match[str]) -> str:
    escape = match.group(2)
    return match.group(1) + (escape if len(escape) == 12 else "\\ufffd")


#: What stands in for the stream of a response once it is closed (see :func:`_release`).
_SPENT = httpx.ByteStream(b"")


def _release(response: httpx.Response) -> None:
    """Close a response and cut its stream's link back to it.

    httpx binds a response and its stream in a reference cycle, which holds the request, the
    headers and the connection pool's records of the exchange until the cyclic garbage
    collector runs: at about 240 answers a second, thousands of them at a time.
    """
    response.close()
    response.stream = _SPENT


def _read_capped(response: httpx.Response, cap: int) -> bytes | None:
    """At most ``cap`` bytes of the body; None (and the rest left unread) if it is larger."""
    declared = _content_length(response)
    if declared is not None and declared > cap and _content_encoding(response) in ("", "identity"):
        return None
    body = bytearray()
    for chunk in _decoded(response):
        body += chunk
        if len(body) > cap:
            return None
    return bytes(body)


def _decoded(response: httpx.Response) -> Iterator[bytes]:
    """The body's bytes as sent, or decompressed chunk by chunk (never more than 64 KiB at once).

    outbox asks for no compression; a server that compresses anyway cannot make one small
    chunk expand into a large allocation.
    """
    encoding = _content_encoding(response)
    if response.is_stream_consumed:  # built in memory (a test's MockTransport): already read
        yield response.content
        return
    if encoding in ("", "identity"):
        yield from response.iter_raw(CHUNK)
        return
    if encoding not in ("gzip", "x-gzip", "deflate"):
        raise UnusableAnswer(f"the answer uses the unsupported Content-Encoding {encoding!r}")
    decoder = zlib.decompressobj(32 + zlib.MAX_WBITS)  # gzip or zlib, told by the header
    try:
        for raw in response.iter_raw(CHUNK):
            data = raw
            while data:
                out = decoder.decompress(data, CHUNK)
                if out:
                    yield out
                if decoder.unconsumed_tail == data:
                    break
                data = decoder.unconsumed_tail
        rest = decoder.flush()
        if rest:
            yield rest
    except zlib.error as exc:
        raise UnusableAnswer(f"the answer's {encoding} body is corrupt ({exc})") from None


def _content_length(response: httpx.Response) -> int | None:
    value = response.headers.get("Content-Length", "").strip()
    return int(value) if value.isdigit() and len(value) < 20 else None


def _content_encoding(response: httpx.Response) -> str:
    return str(response.headers.get("Content-Encoding", "")).strip().lower()


def _error_envelope(body: Any) -> dict[str, Any] | None:
    """Craftkit's error envelope, its text made printable; None if the body is not one."""
    if not isinstance(body, dict) or "error" not in body:
        return None
    error = body["error"]
    if isinstance(error, str):  # the flatter form some endpoints use: {"error": "code"}
        return {"code": printable(error, 64)}
    if not isinstance(error, dict):
        return None
    code, message = error.get("code"), error.get("message")
    envelope: dict[str, Any] = {
        "code": printable(code, 64) if isinstance(code, str) else None,
        "message": printable(message, 500) if isinstance(message, str) else None,
    }
    issues = error.get("issues")
    field_errors = issues.get("fieldErrors") if isinstance(issues, dict) else None
    if isinstance(field_errors, dict) and field_errors:
        envelope["fieldErrors"] = {
            printable(str(name), 200): [
                printable(str(text), 300) for text in (texts if isinstance(texts, list) else [])
            ][:20]
            for name, texts in list(field_errors.items())[:200]
        }
    return envelope


def _content_type(response: httpx.Response) -> str:
    content_type: str = response.headers.get("Content-Type", "with no content type")
    return content_type.split(";")[0]


def _retry_after(value: str | None, longest: float) -> float | None:
    """``Retry-After`` in seconds, within 0 and ``longest``; None if unusable.

    Non-finite (``nan``, ``inf``), negative or unparseable values are ignored (the caller's
    own backoff applies); a date in the past means now.
    """
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = email.utils.parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
        seconds = max(seconds, 0.0)
    if not math.isfinite(seconds) or seconds < 0:
        log.warning("ignoring an unusable Retry-After (%s)", printable(value, 40))
        return None
    if seconds > longest:
        log.warning("Retry-After of %.0f s clamped to %.0f s", seconds, longest)
    return min(seconds, longest)


def _duration_ms(value: Any) -> int | None:
    """``durationMs`` if it is a believable number of milliseconds, else None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if not (math.isfinite(value) and 0 <= value <= MAX_DURATION_MS):
        return None
    return int(value)


def _string(value: Any) -> str | None:
    """``value`` made printable if it is a string (see :func:`printable`), else None."""
    return printable(value, 2000) if isinstance(value, str) else None


def _timestamp(value: Any) -> str | None:
    return printable(value, 40) if isinstance(value, str) else None


def _usable_url(value: Any) -> bool:
    """Whether a ``downloadUrl`` is a plain http(s) URL that can be requested and stored."""
    return (
        isinstance(value, str)
        and len(value) <= 8192
        and value.startswith(("https://", "http://"))
        and all("!" <= char <= "~" for char in value)
    )


def _segment(value: str) -> str:
    """``value`` as one URL path segment: every character that could mean more is escaped."""
    return quote(value, safe="")


def _render_id_segment(render_id: str) -> str:
    """A render id for a URL path; an id outbox cannot use is that entry's error."""
    if not RENDER_ID.match(render_id):
        raise UnusableAnswer(
            f"the render id {printable(render_id, 80)!r} is not one outbox can use (ids are "
            "letters, digits, '-' and '_'); nothing was requested",
            code="bad_render_id",
        )
    return _segment(render_id)


# -- text from the server ------------------------------------------------------------------

_ESCAPES = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]"  # CSI: colours, cursor moves, erase...
    r"|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?"  # OSC: window titles, hyperlinks
    r"|\x1b[@-_]?"  # any other escape
    r"|\x9b[0-?]*[ -/]*[@-~]"  # CSI in its one-character form
)
_UNPRINTABLE = re.compile(
    "[\x00-\x1f\x7f-\x9f\u200b-\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff]+"
)
_BEARER = re.compile(r"(?i)(bearer\s+)\S+")


def printable(text: str, limit: int = 500) -> str:
    """Text from the server made safe to store and to print on a terminal, on one line.

    Terminal escape sequences (colours, cursor moves, window titles) are removed; other
    control characters, line breaks and carriage returns, bidirectional overrides and lone
    surrogates become a space; the result is cut to ``limit`` characters.
    """
    text = _ESCAPES.sub("", text)
    text = _UNPRINTABLE.sub(" ", text).strip()
    return text if len(text) <= limit else text[: limit - 1] + "…"


# -- deadlines for every request -----------------------------------------------------------


class _OutOfTime(tenacity.stop.stop_base):
    """Stop retrying once less than ``margin`` seconds are left of the deadline of the call
    running on this thread (see :meth:`_Budget.until`)."""

    def __init__(self, budget: _Budget, margin: float) -> None:
        self.budget = budget
        self.margin = margin

    def __call__(self, retry_state: tenacity.RetryCallState) -> bool:
        remaining = self.budget.remaining()
        return remaining is not None and remaining < self.margin


def _worth_repeating_at_once(exc: BaseException) -> bool:
    """A lost answer or a 5xx, but not a request that ran out of its own time."""
    return (
        isinstance(exc, OutcomeUnknown | ServerError) and getattr(exc, "code", None) != OUT_OF_TIME
    )


class _Budget:
    """When the request running on each thread must be over: its deadline, or a stop.

    httpx's timeouts bound each socket operation, so a server that sends one byte a second
    keeps a request alive forever. The network streams below ask the budget before and during
    every socket call instead, and give up once it is spent.
    """

    def __init__(self, monotonic: Callable[[], float]) -> None:
        self._monotonic = monotonic
        self._local = threading.local()
        self._interrupt_at: float | None = None

    @contextmanager
    def until(self, deadline: float | None) -> Iterator[None]:
        """Requests made on this thread inside the block end by ``deadline``."""
        previous = getattr(self._local, "deadline", None)
        self._local.deadline = deadline
        try:
            yield
        finally:
            self._local.deadline = previous

    @contextmanager
    def stopped_by(self, stop: threading.Event | None, grace: float) -> Iterator[None]:
        """Requests made on this thread inside the block end ``grace`` seconds after ``stop``
        is first seen set."""
        previous = getattr(self._local, "stop", None)
        self._local.stop = None if stop is None else _Stop(stop, grace)
        try:
            yield
        finally:
            self._local.stop = previous

    def spent(self) -> bool:
        """Whether the request running on this thread is out of time (or stopped)."""
        remaining = self.remaining()
        return remaining is not None and remaining <= 0

    def remaining(self, deadline: float | None = None) -> float | None:
        """Seconds left for this thread's request (None: no limit); negative once spent."""
        now = self._monotonic()
        stop: _Stop | None = getattr(self._local, "stop", None)
        ends = [
            moment
            for moment in (
                getattr(self._local, "deadline", None),
                deadline,
                self._interrupt_at,
                stop.ends(now) if stop is not None else None,
            )
            if moment is not None
        ]
        return None if not ends else min(ends) - now

    def cap(self, timeout: float | None) -> float | None:
        """A socket timeout shortened to what is left of the budget."""
        remaining = self.remaining()
        if remaining is None:
            return timeout
        remaining = max(remaining, 0.001)
        return remaining if timeout is None else min(timeout, remaining)

    def interrupt(self, grace: float) -> None:
        self._interrupt_at = self._monotonic() + grace

    def resume(self) -> None:
        self._interrupt_at = None


class _Stop:
    """A stop event and the grace requests get once it is seen set (reads look every slice)."""

    def __init__(self, event: threading.Event, grace: float) -> None:
        self.event = event
        self.grace = grace
        self.seen_at: float | None = None

    def ends(self, now: float) -> float | None:
        """When requests must be over because of this stop; None while it is not set."""
        if self.seen_at is None:
            if not self.event.is_set():
                return None
            self.seen_at = now
        return self.seen_at + self.grace


class _BoundedStream(httpcore.NetworkStream):
    """A network stream whose reads and writes end when the request's budget is spent."""

    def __init__(self, inner: httpcore.NetworkStream, budget: _Budget) -> None:
        self._inner = inner
        self._budget = budget

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        # Wait in short slices, so that a spent budget or a stop ends even a silent wait.
        started = time.monotonic()
        while True:
            remaining = self._budget.remaining()
            if remaining is not None and remaining <= 0:
                raise httpcore.ReadTimeout("the request ran out of time")
            wait = WAIT_SLICE if remaining is None else min(WAIT_SLICE, remaining)
            if timeout is not None:
                left = timeout - (time.monotonic() - started)
                if left <= 0:
                    raise httpcore.ReadTimeout("timed out")
                wait = min(wait, left)
            try:
                return self._inner.read(max_bytes, max(wait, 0.001))
            except httpcore.ReadTimeout:
                continue

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        remaining = self._budget.remaining()
        if remaining is not None and remaining <= 0:
            raise httpcore.WriteTimeout("the request ran out of time")
        self._inner.write(buffer, self._budget.cap(timeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self,
        ssl_context: Any,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        inner = self._inner.start_tls(ssl_context, server_hostname, self._budget.cap(timeout))
        return _BoundedStream(inner, self._budget)

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class _BoundedBackend(httpcore.NetworkBackend):
    """Opens :class:`_BoundedStream` connections through the backend it wraps."""

    def __init__(self, inner: httpcore.NetworkBackend, budget: _Budget) -> None:
        self._inner = inner
        self._budget = budget

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Any = None,
    ) -> httpcore.NetworkStream:
        stream = self._inner.connect_tcp(
            host, port, self._budget.cap(timeout), local_address, socket_options
        )
        return _BoundedStream(stream, self._budget)

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Any = None
    ) -> httpcore.NetworkStream:
        stream = self._inner.connect_unix_socket(path, self._budget.cap(timeout), socket_options)
        return _BoundedStream(stream, self._budget)

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


def _bound_pools(client: httpx.Client, budget: _Budget) -> None:
    """Route every connection ``client`` opens (direct or through a proxy) through the budget.

    httpx does not let a network backend be passed in, so the pools it made are given one
    here; a transport without such a pool (a test's ``MockTransport``) is left as it is.
    """
    transports = [client._transport, *client._mounts.values()]
    for transport in transports:
        pool = getattr(transport, "_pool", None)
        backend = getattr(pool, "_network_backend", None)
        if isinstance(backend, httpcore.NetworkBackend) and not isinstance(
            backend, _BoundedBackend
        ):
            pool._network_backend = _BoundedBackend(backend, budget)  # type: ignore[union-attr]
