"""Serving the dashboard with the standard library: a threaded WSGI server, one thread per
request (the live streams each keep one), on 127.0.0.1 unless told otherwise."""

from __future__ import annotations

import ipaddress
import logging
import threading
from socketserver import ThreadingMixIn
from types import TracebackType
from typing import TYPE_CHECKING, Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from ..errors import ConfigError
from .app import DashboardApp

if TYPE_CHECKING:
    from ..outbox import Outbox

log = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True  # a page left open must not keep the process alive


class _Handler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base's name
        log.debug("%s %s", self.address_string(), format % args)


def is_loopback(host: str) -> bool:
    """Whether ``host`` is reachable from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class DashboardServer:
    """The dashboard served on ``host:port`` (port 0: any free port) in a background thread.

    On a loopback address it answers only to requests naming this machine (``127.0.0.1``,
    ``localhost``), which defeats DNS rebinding. Any other address exposes the queue and its
    actions to the network (still behind the token), so it logs a warning.
    """

    def __init__(
        self,
        outbox: Outbox,
        *,
        host: str = LOOPBACK,
        port: int = 8800,
        token: str | None = None,
    ) -> None:
        try:
            self._server = make_server(
                host, port, _no_app, server_class=_Server, handler_class=_Handler
            )
        except OSError as exc:
            raise ConfigError(
                f"cannot serve the dashboard on {host}:{port}: {exc.strerror or exc}"
                + ("; choose another --port" if port else "")
            ) from exc
        self.host = host
        self.port = int(self._server.server_port)
        self.loopback = is_loopback(host)
        allowed = None
        if self.loopback:
            allowed = [f"{name}:{self.port}" for name in (LOOPBACK, "localhost", host)]
        else:
            log.warning(
                "the dashboard listens on %s, not only on this machine: anyone who can reach "
                "it and learns the token can see and change the queue",
                host,
            )
        self.app = DashboardApp(outbox, token=token, allowed_hosts=allowed)
        self._server.set_app(self.app)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """The page's address, token included: give it only to whoever may use the queue."""
        shown = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{shown}:{self.port}/?token={self.app.token}"

    def start(self) -> DashboardServer:
        """Serve in a background thread; returns self."""
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._server.serve_forever, name="outbox-dashboard", daemon=True
            )
            self._thread.start()
        return self

    def close(self) -> None:
        """Stop serving: end the live streams, stop accepting, release the port."""
        self.app.close()
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join()
            self._thread = None
        self._server.server_close()

    def __enter__(self) -> DashboardServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _no_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    start_response("503 Service Unavailable", [("Content-Type", "text/plain")])
    return [b"starting"]
