"""An in-process Craftkit: an httpx transport that hands each request to a sandbox's API.

::

    with Sandbox() as sb:
        http = httpx.Client(base_url=sb.base_url, transport=sb.transport())
        ob = Outbox("app.db", api_key=sb.api_key, base_url=sb.base_url, transport=sb.transport())

No socket is involved: each request is answered in the calling thread by the same
:class:`~outbox.sandbox.api.CraftkitAPI` that serves HTTP, so routes, state, idempotency,
faults and counters are the sandbox's own. What the network would do is done the way httpx
reports it: a stopped sandbox refuses the connection (:class:`httpx.ConnectError`), a dropped
answer is :class:`httpx.RemoteProtocolError`, a truncated download ends with one after half of
its body, an injected delay longer than the request's read timeout is :class:`httpx.ReadTimeout`
once that timeout has passed, and a dripped body arrives at its rate, in real time.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from email.utils import formatdate

import httpx

from outbox.sandbox.api import CraftkitAPI, Request, Response, error
from outbox.sandbox.server import (
    DRIP_STEPS_PER_SECOND,
    MAX_BODY_BYTES,
    SandboxRequestHandler,
    request_faults,
)

#: What :meth:`Sandbox.transport` hands over per request: the running API and the event that is
#: set when the sandbox stops, or None while it is stopped.
Connect = Callable[[], "tuple[CraftkitAPI, threading.Event] | None"]


class SandboxTransport(httpx.BaseTransport):
    """Answers httpx requests from a running sandbox, in this process (see the module doc)."""

    def __init__(self, connect: Connect) -> None:
        self._connect = connect

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        live = self._connect()
        if live is None:
            raise httpx.ConnectError("connection refused: the sandbox is stopped", request=request)
        api, stopping = live
        path = request.url.raw_path.decode("ascii").partition("?")[0]
        route = api.route(request.method, path)
        body = request.read()
        response: Response | None
        if len(body) > MAX_BODY_BYTES:
            response = error(413, "payload_too_large", "The request body is too large.")
        elif route.control:
            response = None
        else:
            response = request_faults(api, path, _waiter(request, stopping))
        if response is None:
            base_url = f"{request.url.scheme}://{request.url.netloc.decode('ascii')}"
            response = api.dispatch(
                route, Request(request.method, path, request.headers, body, base_url)
            )
        if response.drop:
            api.counters.record(route.pattern, "dropped")
            raise httpx.RemoteProtocolError(
                "Server disconnected without sending a response.", request=request
            )
        api.counters.record(route.pattern, response.status)
        return _to_httpx(response, request, stopping)


def _waiter(request: httpx.Request, stopping: threading.Event) -> Callable[[float], bool]:
    """An injected delay as the client sees it: cut short by its read timeout."""
    timeouts = request.extensions.get("timeout", {})
    read_timeout = timeouts.get("read") if isinstance(timeouts, dict) else None

    def wait(seconds: float) -> bool:
        if read_timeout is not None and seconds > read_timeout:
            stopping.wait(read_timeout)
            raise httpx.ReadTimeout("timed out waiting for the answer", request=request)
        return stopping.wait(seconds)

    return wait


def _to_httpx(
    response: Response, request: httpx.Request, stopping: threading.Event
) -> httpx.Response:
    """The httpx form of an answer, with the headers the HTTP server would send."""
    length = response.stream.size if response.stream is not None else len(response.body)
    headers = [
        ("Date", formatdate(usegmt=True)),
        ("Server", SandboxRequestHandler.server_version),
    ]
    if response.content_type:
        headers.append(("Content-Type", response.content_type))
    if response.chunked:
        headers.append(("Transfer-Encoding", "chunked"))
    else:
        headers.append(("Content-Length", str(length)))
    headers.extend(response.headers)
    if response.truncate:
        headers.append(("Connection", "close"))
    if request.method == "HEAD":
        return httpx.Response(response.status, headers=headers, content=b"", request=request)
    chunks = response.stream.chunks() if response.stream is not None else iter([response.body])
    limit = length // 2 if response.truncate else length
    body = _Body(chunks, limit, length, request)
    stream: httpx.SyncByteStream = (
        body if response.drip is None else _Drip(body, response.drip, stopping, request)
    )
    return httpx.Response(response.status, headers=headers, stream=stream, request=request)


def _cut(request: httpx.Request, received: int, length: int) -> httpx.RemoteProtocolError:
    return httpx.RemoteProtocolError(
        "peer closed connection without sending complete message body: "
        f"received {received} bytes, expected {length}",
        request=request,
    )


class _Body(httpx.SyncByteStream):
    """A body sent in chunks; cut off after ``limit`` bytes when that is less than its length."""

    def __init__(
        self, chunks: Iterator[bytes], limit: int, length: int, request: httpx.Request
    ) -> None:
        self._chunks = chunks
        self._limit = limit
        self.length = length
        self._request = request

    def __iter__(self) -> Iterator[bytes]:
        sent = 0
        for chunk in self._chunks:
            if sent + len(chunk) > self._limit:
                chunk = chunk[: self._limit - sent]
            if chunk:
                sent += len(chunk)
                yield chunk
            if sent >= self._limit:
                break
        if sent < self.length:
            raise _cut(self._request, sent, self.length)


class _Drip(httpx.SyncByteStream):
    """A body let out at ``rate`` bytes per second, in real time, as the server drips it."""

    def __init__(
        self, body: _Body, rate: float, stopping: threading.Event, request: httpx.Request
    ) -> None:
        self._body = body
        self._rate = rate
        self._stopping = stopping
        self._request = request

    def __iter__(self) -> Iterator[bytes]:
        step = max(1, int(self._rate / DRIP_STEPS_PER_SECOND))
        started = time.monotonic()
        sent = 0
        for piece in self._body:
            for start in range(0, len(piece), step):
                delay = started + sent / self._rate - time.monotonic()
                if delay > 0 and self._stopping.wait(delay):
                    raise _cut(self._request, sent, self._body.length)
                bit = piece[start : start + step]
                sent += len(bit)
                yield bit
