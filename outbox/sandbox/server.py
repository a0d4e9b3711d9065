"""The HTTP side of the sandbox: sockets, keep-alive, streaming, and request-wide faults.

Built on :class:`http.server.ThreadingHTTPServer` (one daemon thread per connection, HTTP/1.1
keep-alive, Nagle off). Every connection is tracked, so :meth:`SandboxHTTPServer.close` can
cut them all at once, the way a network going away would, and wait for their threads to end.
Each response is written with as few ``send`` calls as possible, and a PDF (or any padded
body) is streamed in chunks of at most 64 KiB, never held in memory whole. A body can also be
sent chunked (no ``Content-Length``) or dripped at a fixed number of bytes per second.
"""

from __future__ import annotations

import contextlib
import logging
import re
import selectors
import socket
import socketserver
import threading
import time
from collections.abc import Callable, Iterator
from email.utils import formatdate
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from outbox.sandbox.api import CraftkitAPI, Request, Response, error
from outbox.sandbox.counters import RequestCounters
from outbox.sandbox.faults import FaultInjector

logger = logging.getLogger(__name__)

#: Largest request body accepted (a 10,000-item loop is a few MB).
MAX_BODY_BYTES = 64 * 1024 * 1024

#: Seconds an idle keep-alive connection is kept open.
IDLE_TIMEOUT = 120.0

#: Writes per second of a dripped body (each carries rate / this many bytes, at least one).
DRIP_STEPS_PER_SECOND = 20

CAPTIVE_PORTAL_PAGE = b"""<!DOCTYPE html>
<html><head><title>Welcome to Harbour Hotel Wi-Fi</title></head>
<body><h1>Harbour Hotel Guest Wi-Fi</h1>
<p>Please sign in to continue to the internet.</p>
<form method="post" action="/login"><label>Room number <input name="room"></label>
<label>Last name <input name="name"></label><button>Connect</button></form>
</body></html>
"""

_HOST_HEADER = re.compile(r"[A-Za-z0-9.\-]+(:[0-9]{1,5})?|\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?")
_REASONS = {status.value: status.phrase for status in HTTPStatus}


def request_faults(api: CraftkitAPI, path: str, wait: Callable[[float], bool]) -> Response | None:
    """The faults that hit every request (control endpoints excepted), decided for one request.

    None lets the request through to its handler; otherwise the answer to give instead: a
    captive portal's page, a 429, or a ``drop`` when the sandbox stopped during an injected
    delay. ``wait(seconds)`` spends a delay and returns True if the sandbox stopped meanwhile.
    """
    injector = api.injector
    faults = injector.faults
    if faults.captive_portal:
        injector.note("captive_portal")
        page = Response(
            200, CAPTIVE_PORTAL_PAGE, "text/html; charset=utf-8", [("Cache-Control", "no-store")]
        )
        return api.shape(page)
    if faults.latency > 0 and wait(faults.latency):
        return Response(0, drop=True)
    if path.startswith("/v1/"):
        if injector.chance("hang") and wait(faults.hang_seconds):
            return Response(0, drop=True)
        retry_after = injector.rate_limited()
        if retry_after is not None:
            response = error(429, "rate_limited", "Too many requests; slow down.")
            response.headers.append(("Retry-After", faults.retry_after or str(retry_after)))
            return api.shape(response)
    return None


class _DateCache:
    """The ``Date`` header, formatted once per second rather than once per response."""

    def __init__(self) -> None:
        self._second = -1
        self._value = ""

    def get(self) -> str:
        now = int(time.time())
        if now != self._second:
            self._value = formatdate(now, usegmt=True)
            self._second = now
        return self._value


class SandboxHTTPServer(ThreadingHTTPServer):
    """A threading HTTP server that knows its connections and the sandbox it serves."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(
        self,
        address: tuple[str, int],
        api: CraftkitAPI,
        injector: FaultInjector,
        counters: RequestCounters,
        base_url: str,
    ) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, SandboxRequestHandler)
        self.api = api
        self.injector = injector
        self.counters = counters
        self.base_url = base_url
        self.stopping = threading.Event()
        self.dates = _DateCache()
        self._connections: dict[socket.socket, threading.Thread] = {}
        self._connections_lock = threading.Lock()
        self._wakeup_read, self._wakeup_write = socket.socketpair()
        self._thread: threading.Thread | None = None

    def server_bind(self) -> None:
        """Bind without the reverse DNS lookup ``HTTPServer`` does (slow when offline)."""
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    @property
    def port(self) -> int:
        """The port the server listens on."""
        return int(self.server_address[1])

    def start(self) -> None:
        """Accept connections on a background thread (the socket already listens)."""
        self._thread = threading.Thread(
            target=self._accept_loop, name="craftkit-sandbox", daemon=True
        )
        self._thread.start()

    def _accept_loop(self) -> None:
        """Like ``serve_forever``, but woken at once by :meth:`close` instead of polling."""
        with selectors.DefaultSelector() as selector:
            selector.register(self.socket, selectors.EVENT_READ)
            selector.register(self._wakeup_read, selectors.EVENT_READ)
            while not self.stopping.is_set():
                for key, _ in selector.select():
                    if key.fileobj is self.socket and not self.stopping.is_set():
                        self._accept_one()

    def _accept_one(self) -> None:
        try:
            request, address = self.get_request()
        except OSError:
            return
        try:
            self.process_request(request, address)
        except Exception:
            self.handle_error(request, address)
            self.shutdown_request(request)

    def get_request(self) -> tuple[socket.socket, Any]:
        """Accept a connection with Nagle's algorithm off (small answers leave at once)."""
        conn, address = super().get_request()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return conn, address

    def process_request(self, request: Any, client_address: Any) -> None:
        """Serve each connection on its own daemon thread, and remember it."""
        thread = threading.Thread(
            target=self._serve_connection,
            args=(request, client_address),
            name="craftkit-sandbox-conn",
            daemon=True,
        )
        with self._connections_lock:
            self._connections[request] = thread
        thread.start()

    def _serve_connection(self, request: Any, client_address: Any) -> None:
        try:
            self.finish_request(request, client_address)
        except Exception:
            self.handle_error(request, client_address)
        finally:
            self.shutdown_request(request)
            with self._connections_lock:
                self._connections.pop(request, None)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Clients that vanish mid-answer are normal here; log at debug level only."""
        logger.debug("connection from %s ended with an error", client_address, exc_info=True)

    def close(self, timeout: float = 5.0) -> None:
        """Stop listening, cut every open connection, and wait for their threads."""
        self.stopping.set()
        with contextlib.suppress(OSError):
            self._wakeup_write.send(b"x")
        if self._thread is not None:
            self._thread.join(timeout)
        self.server_close()
        self._wakeup_read.close()
        self._wakeup_write.close()
        with self._connections_lock:
            connections = list(self._connections.items())
        for conn, _ in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        deadline = time.monotonic() + timeout
        for _, thread in connections:
            thread.join(max(0.0, deadline - time.monotonic()))


class SandboxRequestHandler(BaseHTTPRequestHandler):
    """Turns one HTTP request into a :class:`Request`, and a :class:`Response` into bytes."""

    protocol_version = "HTTP/1.1"
    server_version = "CraftkitSandbox/1.0"
    timeout = IDLE_TIMEOUT
    server: SandboxHTTPServer

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        """Request logs go to the module logger at debug level, not to stderr."""
        logger.debug("%s - %s", self.address_string(), format % args)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """Protocol errors (bad request line, unknown method) in the JSON error envelope."""
        self.close_connection = True
        status = HTTPStatus(code)
        codes = {501: "method_not_allowed", 400: "invalid_request"}
        self._send(error(code, codes.get(code, "invalid_request"), message or status.phrase))

    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
        self._handle()

    do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = do_GET

    # --- one request ----------------------------------------------------------------------

    def _handle(self) -> None:
        server = self.server
        path = self.path.partition("?")[0]
        route = server.api.route(self.command, path)
        body = self._read_body()
        if body is None:
            server.counters.record(route.pattern, 400)
            return
        response = None if route.control else request_faults(server.api, path, server.stopping.wait)
        if response is None:
            request = Request(self.command, path, self.headers, body, self._base_url())
            response = server.api.dispatch(route, request)
        if response.drop:
            self._drop(route.pattern)
            return
        server.counters.record(route.pattern, response.status)
        self._send(response)

    def _base_url(self) -> str:
        """Where the client reached us: the ``Host`` header, else the configured base URL."""
        host = self.headers.get("Host")
        if host and _HOST_HEADER.fullmatch(host):
            return f"http://{host}"
        return self.server.base_url

    def _read_body(self) -> bytes | None:
        """The request body (Content-Length or chunked); None after answering an error."""
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            return self._read_chunked()
        length_header = self.headers.get("Content-Length")
        if not length_header:
            return b""
        try:
            length = int(length_header)
        except ValueError:
            length = -1
        if length < 0:
            self._refuse_body(400, "invalid_request", "Invalid Content-Length.")
            return None
        if length > MAX_BODY_BYTES:
            self._refuse_body(413, "payload_too_large", "The request body is too large.")
            return None
        return self.rfile.read(length)

    def _read_chunked(self) -> bytes | None:
        parts: list[bytes] = []
        total = 0
        while True:
            line = self.rfile.readline(1024)
            try:
                size = int(line.split(b";")[0].strip(), 16)
            except ValueError:
                self._refuse_body(400, "invalid_request", "Malformed chunked body.")
                return None
            if size == 0:
                while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                    pass
                return b"".join(parts)
            total += size
            if total > MAX_BODY_BYTES:
                self._refuse_body(413, "payload_too_large", "The request body is too large.")
                return None
            parts.append(self.rfile.read(size))
            self.rfile.readline(1024)

    def _refuse_body(self, status: int, code: str, message: str) -> None:
        self.close_connection = True
        self._send(error(status, code, message))

    # --- writing --------------------------------------------------------------------------

    def _drop(self, pattern: str) -> None:
        """Close the connection without answering."""
        self.server.counters.record(pattern, "dropped")
        self.close_connection = True

    def _send(self, response: Response) -> None:
        """Write a response: headers and small bodies in one ``send``, big ones in chunks."""
        stream = response.stream
        length = stream.size if stream is not None else len(response.body)
        closing = self.close_connection or response.truncate
        head = [
            f"HTTP/1.1 {response.status} {_REASONS.get(response.status, 'Unknown')}\r\n"
            f"Date: {self.server.dates.get()}\r\n"
            f"Server: {self.server_version}\r\n"
        ]
        if response.content_type:
            head.append(f"Content-Type: {response.content_type}\r\n")
        if response.chunked:
            head.append("Transfer-Encoding: chunked\r\n")
        else:
            head.append(f"Content-Length: {length}\r\n")
        for name, value in response.headers:
            head.append(f"{name}: {value}\r\n")
        if closing:
            head.append("Connection: close\r\n")
            self.close_connection = True
        head.append("\r\n")
        header_bytes = "".join(head).encode("latin-1")
        try:
            if self.command == "HEAD":
                self.wfile.write(header_bytes)
                return
            if stream is None and not response.chunked and response.drip is None:
                self.wfile.write(header_bytes + response.body)
                return
            self.wfile.write(header_bytes)
            pieces = self._pieces(response, length)
            if response.chunked:
                pieces = _chunked(pieces, end=not response.truncate)
            if response.drip is None:
                for piece in pieces:
                    self.wfile.write(piece)
            elif not self._drip(pieces, response.drip):
                self.close_connection = True
        except OSError:  # the client went away, or the sandbox is stopping
            self.close_connection = True

    @staticmethod
    def _pieces(response: Response, length: int) -> Iterator[bytes]:
        """The body's bytes, cut at half when the download is to be truncated."""
        source = response.stream.chunks() if response.stream is not None else [response.body]
        limit = length // 2 if response.truncate else length
        sent = 0
        for chunk in source:
            if sent + len(chunk) > limit:
                chunk = chunk[: limit - sent]
            if chunk:
                yield chunk
            sent += len(chunk)
            if sent >= limit:
                return

    def _drip(self, pieces: Iterator[bytes], rate: float) -> bool:
        """Write ``pieces`` at ``rate`` bytes per second; False if the sandbox stopped."""
        step = max(1, int(rate / DRIP_STEPS_PER_SECOND))
        started = time.monotonic()
        sent = 0
        for piece in pieces:
            for start in range(0, len(piece), step):
                delay = started + sent / rate - time.monotonic()
                if delay > 0 and self.server.stopping.wait(delay):
                    return False
                bit = piece[start : start + step]
                self.wfile.write(bit)
                sent += len(bit)
        return True


def _chunked(pieces: Iterator[bytes], *, end: bool) -> Iterator[bytes]:
    """HTTP/1.1 chunked framing; ``end`` False leaves the body unfinished (a cut download)."""
    for piece in pieces:
        yield b"%x\r\n" % len(piece) + piece + b"\r\n"
    if end:
        yield b"0\r\n\r\n"
