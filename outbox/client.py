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
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import tenacity

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
)
from .schedule import Schedule

log = logging.getLogger(__name__)

USER_AGENT = f"outbox/{importlib.metadata.version('outbox')}"


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
    never appears in logs or error messages. ``deadline`` arguments (monotonic seconds) cap a
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
        max_connections: int = 8,
        retries: int = 2,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
        monotonic: Callable[[], float] = time.monotonic,
        schedule: Schedule | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.retries = retries
        self.schedule = schedule or Schedule()
        self._sleep = sleep
        self._monotonic = monotonic
        self._auth = {"Authorization": f"Bearer {api_key}"}
        limits = httpx.Limits(
            max_connections=max_connections, max_keepalive_connections=max_connections
        )
        self._http = httpx.Client(
            timeout=httpx.Timeout(read_timeout, connect=connect_timeout),
            limits=limits,
            transport=transport,
            headers={"User-Agent": USER_AGENT},
            follow_redirects=False,
        )

    def close(self) -> None:
        self._http.close()

    def __repr__(self) -> str:
        return f"<CraftkitClient {self.base_url!r}>"

    # -- endpoints -----------------------------------------------------------------------

    def health(self, *, deadline: float | None = None) -> None:
        """Return if the API answers like the real API (``{"status": "ok"}``); else raise."""
        response = self._request("GET", "/health", deadline=deadline, authenticate=False)
        body = _json_or_none(response)
        if response.status_code != 200 or not (
            isinstance(body, dict) and body.get("status") == "ok"
        ):
            raise Offline(
                f"{self.base_url}/health answered {response.status_code} "
                f"{_content_type(response)}, not Craftkit's health check "
                "(a captive portal or proxy in the way?)",
                status=response.status_code,
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
        response = self._retrying(
            lambda: self._request(
                "POST",
                f"/v1/templates/{template}/render",
                deadline=deadline,
                json=body,
                headers={"Idempotency-Key": key},
            ),
            deadline,
        )
        return self._render(response), response.status_code == 200

    def get_render(self, render_id: str, *, deadline: float | None = None) -> Render:
        """The render's current state. Valid forever for the project that owns it."""
        response = self._retrying(
            lambda: self._request("GET", f"/v1/renders/{render_id}", deadline=deadline), deadline
        )
        return self._render(response)

    def get_template(self, slug: str, *, deadline: float | None = None) -> dict[str, Any]:
        """One template with its published ``manifest`` and ``jsonSchema``."""
        response = self._retrying(
            lambda: self._request("GET", f"/v1/templates/{slug}", deadline=deadline), deadline
        )
        return self._json_object(response)

    def list_templates(self, *, deadline: float | None = None) -> list[dict[str, Any]]:
        """The project's templates (without manifests), newest-updated first."""
        response = self._retrying(
            lambda: self._request("GET", "/v1/templates", deadline=deadline), deadline
        )
        templates = self._json_object(response).get("templates")
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
        response = self._request(
            "POST", f"/v1/renders/{render_id}/shares", deadline=deadline, json=body
        )
        return self._share(response)

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
        response = self._request(
            "POST", f"/v1/renders/{render_id}/email", deadline=deadline, json=body
        )
        share = self._share(response, channel="email")
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
        response = self._retrying(
            lambda: self._request("GET", f"/v1/renders/{render_id}/shares", deadline=deadline),
            deadline,
        )
        rows = self._json_object(response).get("shares")
        if not isinstance(rows, list):
            raise Offline(f"{self.base_url} did not answer with a list of shares")
        return [self._share_from(row) for row in rows]

    def revoke_share(
        self, render_id: str, share_id: str, *, deadline: float | None = None
    ) -> str | None:
        """Revoke a share (``DELETE /v1/renders/:id/shares/:shareId``); returns ``revokedAt``.

        A share that is unknown or already revoked raises :class:`~outbox.errors.NotFound`.
        """
        response = self._retrying(
            lambda: self._request(
                "DELETE", f"/v1/renders/{render_id}/shares/{share_id}", deadline=deadline
            ),
            deadline,
        )
        return _string(self._json_object(response).get("revokedAt"))

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
        stream, see :func:`outbox.outcomes.download_failed`).
        """
        if render.download_url:
            with self._open_public(render.download_url, deadline) as opened:
                yield opened
            return
        url = f"{self.base_url}/v1/embed/renders/{render.id}/download"
        request = self._http.build_request(
            "GET", url, headers=self._auth, timeout=self._timeout(deadline)
        )
        try:
            response = self._http.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise self._transport_error(exc, what="the PDF download") from exc
        try:
            if response.status_code == 200:
                yield _stream(response, self._transport_error)
                return
            response.read()
            if response.status_code == 404:
                raise NotReady(f"render {render.id} has no PDF to download yet", status=404)
            self._raise_for(response)
            raise self._foreign(response, "the PDF download")  # a 2xx other than 200
        finally:
            response.close()

    @contextmanager
    def _open_public(
        self, url: str, deadline: float | None
    ) -> Iterator[tuple[int | None, Iterator[bytes]]]:
        """Open the public copy; every failure is :class:`PublicCopyBroken`, in plain words."""
        host = httpx.URL(url).host if url.startswith(("http://", "https://")) else None
        if not host:
            raise PublicCopyBroken(f"the downloadUrl {url[:80]!r} is not a plain http(s) URL")

        def broken(exc: httpx.HTTPError) -> PublicCopyBroken:
            return PublicCopyBroken(f"{host}: {_reason(exc)}")

        try:
            request = self._http.build_request("GET", url, timeout=self._timeout(deadline))
            response = self._http.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise broken(exc) from exc
        try:
            if response.status_code != 200:
                where = response.headers.get("Location")
                raise PublicCopyBroken(
                    f"{host} answered {response.status_code}"
                    + (f" (a redirect to {where[:200]})" if where else ""),
                    status=response.status_code,
                )
            yield _stream(response, lambda exc, what: broken(exc))
        finally:
            response.close()

    # -- plumbing ------------------------------------------------------------------------

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
    ) -> httpx.Response:
        all_headers = {**(self._auth if authenticate else {}), **(headers or {})}
        try:
            response = self._http.request(
                method,
                self.base_url + path,
                json=json,
                headers=all_headers,
                timeout=self._timeout(deadline),
            )
        except httpx.HTTPError as exc:
            raise self._transport_error(exc, what=f"{method} {path}") from exc
        if response.status_code >= 300:
            self._raise_for(response)
        return response

    def _retrying(
        self, call: Callable[[], httpx.Response], deadline: float | None
    ) -> httpx.Response:
        """Retry a call a few times, quickly, when the answer was lost or a 5xx came back."""

        margin = self.schedule.quick_retry_margin
        backoff = self.schedule.quick_retry

        class OutOfTime(tenacity.stop.stop_base):
            def __call__(inner, retry_state: tenacity.RetryCallState) -> bool:  # noqa: N805
                return deadline is not None and deadline - self._monotonic() < margin

        retryer = tenacity.Retrying(
            retry=tenacity.retry_if_exception_type((OutcomeUnknown, ServerError)),
            stop=tenacity.stop_after_attempt(self.retries + 1) | OutOfTime(),
            wait=lambda retry_state: backoff.delay(retry_state.attempt_number),
            sleep=self._sleep,
            reraise=True,
        )
        return retryer(call)

    def _transport_error(self, exc: httpx.HTTPError, *, what: str) -> RemoteError:
        if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout):
            return Offline(f"cannot reach {self.base_url}: {_reason(exc)}")
        if isinstance(exc, httpx.UnsupportedProtocol | httpx.InvalidURL):
            return Offline(f"cannot use {self.base_url}: {_reason(exc)}")
        return OutcomeUnknown(f"{what}: no complete answer from {self.base_url} ({_reason(exc)})")

    def _raise_for(self, response: httpx.Response) -> None:
        """Raise the error that this non-2xx answer means."""
        status = response.status_code
        envelope = _error_envelope(response)
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
                retry_after=_retry_after(response, self.schedule.pacing.max_retry_after),
            )
        if status >= 500:
            raise ServerError(f"Craftkit server error ({detail})", status=status, code=code)
        if 300 <= status < 400 or envelope is None:
            raise self._foreign(response, f"{response.request.method} {response.request.url.path}")
        issues = envelope.get("issues")
        field_errors = issues.get("fieldErrors") if isinstance(issues, dict) else None
        error_class = NotFound if code == "not_found" else PermanentError
        raise error_class(
            detail,
            status=status,
            code=code or f"http_{status}",
            field_errors=field_errors if isinstance(field_errors, dict) and field_errors else None,
        )

    def _render(self, response: httpx.Response) -> Render:
        body = _json_or_none(response)
        if not (
            isinstance(body, dict)
            and isinstance(body.get("id"), str)
            and isinstance(body.get("status"), str)
        ):
            raise self._foreign(
                response, f"{response.request.method} {response.request.url.path}", "a render"
            )
        duration = body.get("durationMs")
        if not (isinstance(duration, int | float) and math.isfinite(duration)):
            duration = None
        return Render(
            id=_storable(body["id"]),
            status=_storable(body["status"]),
            download_url=_string(body.get("downloadUrl")) or None,
            error_message=_string(body.get("errorMessage")),
            duration_ms=int(duration) if duration is not None else None,
            created_at=_string(body.get("createdAt")),
            completed_at=_string(body.get("completedAt")),
        )

    def _share(self, response: httpx.Response, channel: str = "link") -> Share:
        return self._share_from(_json_or_none(response), channel, response)

    def _share_from(
        self, body: Any, channel: str = "link", response: httpx.Response | None = None
    ) -> Share:
        """A share from an answer's JSON; anything else is not Craftkit's answer."""
        if not (isinstance(body, dict) and isinstance(body.get("id"), str) and body["id"]):
            where = response.request.url.host if response is not None else self.base_url
            raise Offline(
                f"{where} answered with something that is not a Craftkit share "
                "(a captive portal or proxy in the way?)"
            )
        clicks = body.get("clickCount")
        return Share(
            id=body["id"],
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

    def _json_object(self, response: httpx.Response) -> dict[str, Any]:
        body = _json_or_none(response)
        if not isinstance(body, dict):
            raise self._foreign(
                response, f"{response.request.method} {response.request.url.path}", "a JSON object"
            )
        return body

    def _foreign(
        self, response: httpx.Response, what: str, expected: str = "Craftkit's answer"
    ) -> ForeignAnswer:
        """The error for an answer that is not the API's: it says exactly what came instead."""
        status = response.status_code
        host = response.request.url.host
        if 300 <= status < 400:
            where = response.headers.get("Location")
            got = f"a redirect to {where[:200]}" if where else "a redirect without a Location"
            return ForeignAnswer(
                f"{what}: {host} answered {status} ({got}), which outbox does not follow",
                status=status,
            )
        return ForeignAnswer(
            f"{what}: {host} answered {status} with {_describe_body(response)}, not {expected} "
            "(a captive portal, a proxy or a wrong base URL?)",
            status=status,
        )


def _stream(
    response: httpx.Response, translate: Callable[..., RemoteError]
) -> tuple[int | None, Iterator[bytes]]:
    length = response.headers.get("Content-Length")
    return int(length) if length and length.isdigit() else None, _chunks(response, translate)


def _chunks(response: httpx.Response, translate: Callable[..., RemoteError]) -> Iterator[bytes]:
    try:
        yield from response.iter_bytes(64 * 1024)
    except httpx.HTTPError as exc:
        raise translate(exc, what="the PDF download") from exc


def _describe_body(response: httpx.Response) -> str:
    """A few words on what a body that is not the expected JSON holds."""
    content = response.content
    kind = _content_type(response)  # "text/html", or "with no content type"
    kind = kind if kind.startswith("with ") else f"of {kind}"
    if not content.strip():
        return f"an empty body {kind}"
    body = _json_or_none(response)
    if body is None:
        return f"{len(content):,} bytes {kind} that are not valid JSON (starting {content[:24]!r})"
    if isinstance(body, dict):
        return "a JSON object without a render's id and status"
    if isinstance(body, list):
        return "a JSON array"
    return f"a JSON {type(body).__name__}"


def _string(value: Any) -> str | None:
    """``value`` if it is a string (lone surrogates replaced, see :func:`_storable`)."""
    return _storable(value) if isinstance(value, str) else None


def _storable(text: str) -> str:
    """``text`` with lone surrogates (a ``\\ud800`` escape in JSON) replaced, so that it can be
    stored and printed as UTF-8."""
    return text.encode("utf-8", "replace").decode("utf-8")


def _json_or_none(response: httpx.Response) -> Any:
    try:
        return json.loads(response.content)
    except (ValueError, UnicodeDecodeError):
        return None


def _error_envelope(response: httpx.Response) -> dict[str, Any] | None:
    body = _json_or_none(response)
    if not isinstance(body, dict) or "error" not in body:
        return None
    error = body["error"]
    if isinstance(error, dict):
        return error
    if isinstance(error, str):  # the flatter form some endpoints use: {"error": "code"}
        return {"code": error}
    return None


def _content_type(response: httpx.Response) -> str:
    content_type: str = response.headers.get("Content-Type", "with no content type")
    return content_type.split(";")[0]


def _retry_after(response: httpx.Response, longest: float) -> float | None:
    value = response.headers.get("Retry-After")
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            moment = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = moment.timestamp() - time.time()
    if seconds > longest:
        log.warning("Retry-After of %.0f s clamped to %.0f s", seconds, longest)
    return min(max(seconds, 0.0), longest)


def _reason(exc: httpx.HTTPError) -> str:
    text = str(exc) or type(exc).__name__
    return text.splitlines()[0][:200]
